"""
The OpenAPI 3.1 document of vorchd's REST API (the seed API and the calls beside it),
exactly as L{vorchd.rest} implements it; the daemon serves it at C{GET /openapi.json}.

Every answer is HTTP 200 with a JSON body. A GET of a call that fails, for whatever reason
(a missing, empty, repeated, non-integer or out-of-range argument included), answers that
call's own failure value (L{FAILURES}); what is not a call at all (an unknown path, a method
other than GET or HEAD, a HEAD of a call that changes state) answers C{0}. So each
operation's 200 response is one of its success shape, its failure value, or C{0}.
"""

from __future__ import annotations

import copy
import json

# ACTIONS and CHANGING are read from here too.
from vorchd.openapi_schemas import ACTIONS, CHANGING, REF, SCHEMAS, int_param, operation
from vorchd.openapi_volumes import VOLUME_PATHS, VOLUME_SCHEMAS

__all__ = [
    "ACTIONS",
    "CHANGING",
    "DOCUMENT",
    "FAILURES",
    "PATHS",
    "SCHEMAS",
    "STREAMS",
    "document",
    "document_bytes",
]

_VMID = int_param("vmid", "The VM's id.")
_PMID = int_param("pmid", "The PM's id.")
_POSITIVE_VMID = int_param("vmid", "The VM's id; a non-positive one fails at once.")


def _action(action: str, summary: str, description: str) -> dict:
    """
    The operation of C{/vm/<action>}, one of L{ACTIONS}.
    """
    return operation(
        f"/vm/{action}",
        "vm" + action.capitalize(),
        summary,
        description + ' Answers {"status": 1} once done, {"status": 0} (nothing changed) '
        "when it cannot be done.",
        "Done",
        "NotDone",
        [_POSITIVE_VMID],
    )


_RUNNING_PATHS = {
    "/vm/info": operation(
        "/vm/info",
        "vmInfo",
        "A VM as its hypervisor has it now",
        "Its record (as vm/query, with its image) and its domain's name and state, asked "
        "of its hypervisor; 0 (as vm/query) if there is no such VM.",
        "VmInfo",
        None,
        [_POSITIVE_VMID],
    ),
    "/vm/stop": _action("stop", "Stop a VM", "Powers the VM off; its domain, disk and room stay."),
    "/vm/start": _action("start", "Start a VM", "Boots a stopped VM again."),
    "/vm/reboot": _action("reboot", "Reboot a VM", "Restarts a running VM."),
    "/vm/suspend": _action("suspend", "Suspend a VM", "Pauses a running VM, in memory."),
    "/vm/resume": _action("resume", "Resume a VM", "Lets a suspended VM run on."),
    "/vm/resize": operation(
        "/vm/resize",
        "vmResize",
        "Give a VM another flavor",
        "Gives the VM the flavor instance_type on its PM, if the PM has room for it. "
        'Answers {"status": 1} once done, {"status": 0} (nothing changed) when it cannot '
        "be done.",
        "Done",
        "NotDone",
        [_POSITIVE_VMID, int_param("instance_type", "A flavor's tid from vm/types.")],
    ),
    "/vm/migrate": operation(
        "/vm/migrate",
        "vmMigrate",
        "Move a VM to another PM",
        "Moves the VM (live if it runs) to PM pmid, or without pmid to the PM the active "
        'placement policy picks. Answers {"status": 1} once done, {"status": 0} (the VM '
        "where it was) when it cannot be done.",
        "Done",
        "NotDone",
        [
            _POSITIVE_VMID,
            int_param(
                "pmid",
                "The PM to move it to; without it, the active policy picks one.",
                required=False,
            ),
        ],
    ),
}

PATHS = {
    "/vm/create": operation(
        "/vm/create",
        "vmCreate",
        "Create a VM",
        "Places, builds and starts a VM; answers once its domain runs on the chosen PM.",
        "VmCreated",
        "VmCreateFailed",
        [
            {
                "name": "name",
                "in": "query",
                "required": True,
                "description": (
                    "Free text (any UTF-8), stored and answered exactly as given; two VMs may "
                    "share a name. Missing, empty, not UTF-8 or given more than once: answers "
                    '{"vmid": 0}.'
                ),
                "schema": {"type": "string", "minLength": 1},
            },
            int_param("instance_type", "A flavor's tid from vm/types."),
            int_param("image_id", "An image's id from image/list."),
        ],
    ),
    "/vm/query": operation(
        "/vm/query",
        "vmQuery",
        "Describe a VM",
        "The VM's name, flavor and PM; 0 if there is no such VM.",
        "Vm",
        None,
        [_VMID],
    ),
    "/vm/destroy": operation(
        "/vm/destroy",
        "vmDestroy",
        "Destroy a VM",
        "Stops and undefines its domain, deletes its disk, frees its room.",
        "Destroyed",
        "DestroyFailed",
        [_VMID],
    ),
    "/vm/types": operation(
        "/vm/types", "vmTypes", "List the instance types", "Every flavor.", "Types", None
    ),
    "/pm/list": operation("/pm/list", "pmList", "List the PMs", "Every PM's id.", "PmList", None),
    "/pm/listvms": operation(
        "/pm/listvms",
        "pmListVms",
        "List a PM's VMs",
        "The ids of the VMs placed on the PM.",
        "PmVms",
        "PmVmsFailed",
        [_PMID],
    ),
    "/pm/query": operation(
        "/pm/query",
        "pmQuery",
        "Describe a PM",
        "Its capacity, what is free, and how many VMs it has; 0 if there is no such PM.",
        "Pm",
        None,
        [_PMID],
    ),
    "/image/list": operation(
        "/image/list",
        "imageList",
        "List the images",
        "Every image VMs can be made from.",
        "Images",
        None,
    ),
    "/v1/fleet": operation(
        "/v1/fleet",
        "fleet",
        "The whole fleet",
        "Every PM (state, capacity, free room, VM ids) and every VM, the flavors and "
        "images, the policy and ratios, in one document, answered from the daemon's read "
        "model; 0 until it has its first snapshot.",
        "Fleet",
        None,
    ),
    "/v1/events": {
        "get": {
            "operationId": "events",
            "summary": "The fleet's changes, as they happen",
            "description": (
                "Server-Sent Events (text/event-stream), never ending by itself: first "
                "'hello' with {seq}, then, with 'id: <seq>', 'pm' (a FleetPm), 'vm' (a "
                "FleetVm), 'vm_gone' ({vmid, pmid}), 'volume' (a Volume), 'volume_gone' "
                "({volumeid}), 'catalog' ({types, images}), "
                "'settings' ({policy, ratios}) and 'resync' ({seq}: reload /v1/fleet). "
                "A ': keepalive' comment every 15 s. A method other than GET answers 0."
            ),
            "parameters": [],
            "responses": {
                "200": {
                    "description": "The event stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    **_RUNNING_PATHS,
    **VOLUME_PATHS,
    "/openapi.json": operation(
        "/openapi.json",
        "openapi",
        "This document",
        "The OpenAPI document of the API.",
        "OpenAPIDocument",
        None,
    ),
}

ALL_SCHEMAS = {**SCHEMAS, **VOLUME_SCHEMAS}

# Answered as a stream of events, not one JSON document.
STREAMS = ("/v1/events",)


def _failure_value(operation: dict) -> object:
    """
    What a GET of C{operation} answers when it fails: its failure schema's value, or 0.
    """
    content = operation["get"]["responses"]["200"]["content"]["application/json"]
    shapes = content["schema"]["anyOf"]
    if len(shapes) == 2:  # success or NotACall
        return 0
    schema = ALL_SCHEMAS[shapes[1]["$ref"].removeprefix(REF)]
    # A value that is not one constant (volume/query's error) has its default here.
    return {
        key: value.get("const", value.get("default"))
        for key, value in schema["properties"].items()
    }


#: What a GET of each call (but the streams) answers when it fails, for whatever reason.
FAILURES = {path: _failure_value(op) for path, op in PATHS.items() if path not in STREAMS}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "vorchd REST API",
        "version": "1.1.0",
        "description": (
            "The REST API of vorchd, a virtualization orchestration daemon: the seed API "
            "(vm/create, vm/query, vm/destroy, vm/types, pm/list, pm/listvms, pm/query, "
            "image/list) and the calls beside it (the fleet view, running VMs, block "
            "volumes), which never add a key to a seed answer. "
            "Every answer is HTTP 200 with a JSON body. A GET of a call that fails, for "
            "whatever reason (a missing, empty, repeated, non-integer or out-of-range "
            "argument included), answers that call's own failure value; what is not a call "
            "of the API (an unknown path, a method other than GET or HEAD, a HEAD of a call "
            "that changes state) answers 0. "
            "Paths are matched exactly as sent (no percent-decoding, no merging of slashes). "
            "Query strings are parsed as application/x-www-form-urlencoded: '&' separates "
            "arguments (';' is an ordinary character), '+' is a space, %XX escapes any byte. "
            "A failure carries its reason in the X-Vorchd-Reason header."
        ),
    },
    "paths": PATHS,
    "components": {"schemas": ALL_SCHEMAS},
}


def document() -> dict:
    """
    A copy of the document, to change at will.
    """
    return copy.deepcopy(DOCUMENT)


def document_bytes() -> bytes:
    """
    The document as served: JSON, ASCII only.
    """
    return json.dumps(DOCUMENT).encode("ascii")
