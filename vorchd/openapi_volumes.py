"""
The block volume calls of L{vorchd.openapi}'s document (the course's phase 2):
C{/volume/create}, C{query}, C{destroy}, C{attach}, C{detach} and C{list}, and their
answers' schemas.
"""

from __future__ import annotations

from vorchd.openapi_schemas import REF, int_param, operation

_ID = {"type": "integer", "minimum": 1}
_VOLUMEID = int_param("volumeid", "The volume's id.")


def _obj(properties: dict, description: str, required: list | None = None) -> dict:
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required if required is not None else list(properties),
        "additionalProperties": False,
    }


VOLUME_SCHEMAS = {
    "VolumeCreated": _obj({"volumeid": _ID}, "The new volume's id: positive, never reused."),
    "VolumeCreateFailed": _obj(
        {"volumeid": {"const": 0}},
        "Nothing was made: a name empty, missing, repeated or not UTF-8, a size not a "
        "positive integer, or no PM with that much disk room free (local backend), or "
        "less than that available in Ceph or Ceph unreachable (rbd backend).",
    ),
    "Volume": _obj(
        {
            "volumeid": _ID,
            "name": {"type": "string", "description": "Exactly as given at volume/create."},
            "size": {**_ID, "description": "GiB."},
            "status": {"enum": ["available", "attached"]},
            "vmid": {**_ID, "description": "The VM it is attached to (only when attached)."},
        },
        "A volume; vmid only when attached.",
        required=["volumeid", "name", "size", "status"],
    ),
    "VolumeQueryFailed": _obj(
        {
            "error": {
                "type": "string",
                "pattern": "^volumeid : .* does not exist$",
                "default": "volumeid :  does not exist",
                "description": "'volumeid : V does not exist', V the argument as given.",
            }
        },
        "No such volume, or volumeid missing, repeated or not an integer.",
    ),
    "Volumes": _obj(
        {"volumes": {"type": "array", "items": {"$ref": REF + "Volume"}}},
        "Every volume, by id.",
    ),
}


def _change(path: str, operation_id: str, summary: str, description: str, params) -> dict:
    return operation(
        path,
        operation_id,
        summary,
        description + ' Answers {"status": 1} once done, {"status": 0} (nothing changed) '
        "when it cannot be done.",
        "Done",
        "NotDone",
        params,
    )


VOLUME_PATHS = {
    "/volume/create": operation(
        "/volume/create",
        "volumeCreate",
        "Create a block volume",
        "Records a volume of size GiB, available; its data is made on the PM of the first "
        "VM it is attached to (local backend), or an RBD image is made in Ceph now (rbd "
        "backend).",
        "VolumeCreated",
        "VolumeCreateFailed",
        [
            {
                "name": "name",
                "in": "query",
                "required": True,
                "description": "Free text (any UTF-8), stored and answered exactly as given.",
                "schema": {"type": "string", "minLength": 1},
            },
            int_param("size", "The size in GiB, positive."),
        ],
    ),
    "/volume/query": operation(
        "/volume/query",
        "volumeQuery",
        "Describe a volume",
        "Its name, size, status, and the VM it is attached to.",
        "Volume",
        "VolumeQueryFailed",
        [_VOLUMEID],
    ),
    "/volume/destroy": _change(
        "/volume/destroy",
        "volumeDestroy",
        "Destroy a volume",
        "Deletes an available volume's data and frees its room; an attached one is kept.",
        [_VOLUMEID],
    ),
    "/volume/attach": _change(
        "/volume/attach",
        "volumeAttach",
        "Attach a volume to a VM",
        "The guest sees a new SCSI disk; the volume's data moves to the VM's PM first "
        "if it is elsewhere.",
        [int_param("vmid", "The VM's id."), _VOLUMEID],
    ),
    "/volume/detach": _change(
        "/volume/detach",
        "volumeDetach",
        "Detach a volume from its VM",
        "The disk leaves the guest; the volume stays, available.",
        [_VOLUMEID],
    ),
    "/volume/list": operation(
        "/volume/list", "volumeList", "List the volumes", "Every volume.", "Volumes", None
    ),
}
