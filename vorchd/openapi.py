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

_REF = "#/components/schemas/"

#: The state changes of a running VM, each a call of its own (C{/vm/stop}, ...): the fleet's
#: L{vorchd.fleet.running.ACTIONS}, written out again here because this module may not import
#: the fleet (L{vorchd.metrics} imports it, and the fleet imports the metrics).
ACTIONS = ("stop", "start", "reboot", "suspend", "resume")

#: The calls that change state: a HEAD of one does nothing and answers 0 (its answer would
#: never be seen).
CHANGING = (
    "/vm/create",
    "/vm/destroy",
    *(f"/vm/{action}" for action in ACTIONS),
    "/vm/resize",
    "/vm/migrate",
)


def _ref(name: str) -> dict:
    return {"$ref": _REF + name}


def _const(value) -> dict:
    return {"const": value}


def _obj(properties: dict, description: str | None = None) -> dict:
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


_ID = {"type": "integer", "minimum": 1}
_COUNT = {"type": "integer", "minimum": 0}

_INTEGER_ARGUMENT = (
    "A decimal integer: an optional '-' and 1 to 1000 digits, nothing else (no '+', spaces, "
    "decimal point or exponent). Anything else, a missing or empty argument, or the argument "
    "given more than once, makes the call fail: it answers its own failure value."
)

_REASON_HEADER = {
    "X-Vorchd-Reason": {
        "description": (
            "Present on every failure (and on every answer 0): why, in one line of "
            "printable ASCII, at most 300 characters, for people reading with curl. "
            "Absent on success."
        ),
        "schema": {"type": "string", "maxLength": 300},
    }
}


def _int_param(name: str, description: str, required: bool = True) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": f"{description} {_INTEGER_ARGUMENT}",
        "schema": {"type": "integer"},
    }


_HEAD_READS = " HEAD is answered like GET, without a body."
_HEAD_CHANGES = " The call changes state: a HEAD of it does nothing and answers 0."


def _operation(
    path: str,
    operation_id: str,
    summary: str,
    description: str,
    success: str,
    failure: str | None,
    parameters: list | None = None,
) -> dict:
    """
    The GET operation of C{path}, whose 200 answer is C{success}, C{failure} (if any) or
    C{NotACall}.
    """
    shapes = [_ref(success)]
    if failure is not None:
        shapes.append(_ref(failure))
    shapes.append(_ref("NotACall"))
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "description": description + (_HEAD_CHANGES if path in CHANGING else _HEAD_READS),
            "parameters": parameters or [],
            "responses": {
                "200": {
                    "description": "Always 200, whatever happened; the body says what.",
                    "headers": _REASON_HEADER,
                    "content": {"application/json": {"schema": {"anyOf": shapes}}},
                }
            },
        }
    }


_RESOURCES = {"cpu": _COUNT, "ram": _COUNT, "disk": _COUNT}

_MAC = {
    "type": "string",
    "description": (
        "Its NIC's MAC address (locally administered, 02:...), stored with it and kept "
        'across restarts and moves; "" for a VM recorded before VMs had one. With the '
        "ini's [network] none it has no NIC."
    ),
}

SCHEMAS = {
    "NotACall": {
        **_const(0),
        "description": (
            "Not a call of the API: an unknown path, a method other than GET or HEAD, a HEAD "
            "of a call that changes state. Also the own failure value of the calls that have "
            "no other (vm/query, pm/query, vm/info, v1/fleet)."
        ),
    },
    "Flavor": _obj(
        {"tid": _ID, "cpu": _ID, "ram": _ID, "disk": _ID},
        "An instance type: vCPUs, RAM in MiB, disk in GiB.",
    ),
    "Image": _obj({"id": _ID, "name": {"type": "string"}}),
    "Resources": _obj(
        _RESOURCES, "cpu = host CPUs, ram = MiB, disk = GiB of vorchd's storage pool."
    ),
    "FreeResources": {
        "type": "object",
        "description": (
            "capacity times the overcommit ratio minus the flavors of the VMs placed there. "
            "May go below zero when an administrator lowers a ratio under what is placed."
        ),
        "properties": {
            "cpu": {"type": "integer"},
            "ram": {"type": "integer"},
            "disk": {"type": "integer"},
        },
        "required": ["cpu", "ram", "disk"],
        "additionalProperties": False,
    },
    "VmCreated": _obj({"vmid": _ID}, "The new VM's id: positive, unique, never reused."),
    "VmCreateFailed": _obj(
        {"vmid": _const(0)},
        "Nothing was made: an instance_type or image_id unknown, non-positive, missing, "
        "repeated or not an integer, an empty, missing, repeated or non-UTF-8 name, or no "
        "PM has room.",
    ),
    "Vm": _obj(
        {
            "vmid": _ID,
            "name": {"type": "string", "description": "Exactly as given at vm/create."},
            "instance_type": _ID,
            "pmid": _ID,
        }
    ),
    "Destroyed": _obj({"status": _const(1)}),
    "DestroyFailed": _obj(
        {"status": _const(0)},
        "No such VM, its PM cannot be reached, or vmid is missing, repeated or not an integer.",
    ),
    "Types": _obj({"types": {"type": "array", "items": _ref("Flavor")}}),
    "PmList": _obj({"pmids": {"type": "array", "items": _ID}}),
    "PmVms": _obj({"vmids": {"type": "array", "items": _ID}}),
    "PmVmsFailed": _obj(
        {"vmids": _const(0)}, "No such PM, or pmid is missing, repeated or not an integer."
    ),
    "Pm": _obj(
        {
            "pmid": _ID,
            "capacity": _ref("Resources"),
            "free": _ref("FreeResources"),
            "vms": _COUNT,
        }
    ),
    "Images": _obj({"images": {"type": "array", "items": _ref("Image")}}),
    "FleetPm": _obj(
        {
            "pmid": _ID,
            "state": {"enum": ["up", "down", "drained", "retired"]},
            "capacity": _ref("Resources"),
            "free": _ref("FreeResources"),
            "vmids": {"type": "array", "items": _ID},
        },
        "A PM: retired (out of the pm_file, still holding VMs), else down (this daemon "
        "cannot reach it), else drained (closed to new VMs), else up.",
    ),
    "FleetVm": _obj(
        {
            "vmid": _ID,
            "name": {"type": "string"},
            "instance_type": _ID,
            "pmid": _ID,
            "image_id": {"type": "integer", "minimum": 0},
            "state": {"enum": ["active", "missing"]},
            "mac": _MAC,
        }
    ),
    "Fleet": _obj(
        {
            "seq": _COUNT,
            "policy": {"type": "string"},
            "ratios": _obj({r: {"type": "number"} for r in ("cpu", "ram", "disk")}),
            "types": {"type": "array", "items": _ref("Flavor")},
            "images": {"type": "array", "items": _ref("Image")},
            "pms": {"type": "array", "items": _ref("FleetPm")},
            "vms": {"type": "array", "items": _ref("FleetVm")},
        },
        "The whole fleet at change seq of the daemon's read model: the pm_file's PMs in "
        "order then the retired ones, and every VM by vmid.",
    ),
    "Done": _obj({"status": _const(1)}, "Done."),
    "NotDone": _obj(
        {"status": _const(0)},
        "Not done, and nothing changed: no such VM (or PM, or instance type), the VM in a "
        "state that does not allow it, no room, its PM unreachable, or an argument missing, "
        "repeated, not an integer or not positive. X-Vorchd-Reason says which.",
    ),
    "VmInfo": _obj(
        {
            "vmid": _ID,
            "name": {"type": "string", "description": "Exactly as given at vm/create."},
            "instance_type": _ID,
            "pmid": _ID,
            "image_id": {
                "type": "integer",
                "minimum": 0,
                "description": "0 for a VM adopted back without a record of its image.",
            },
            "state": {
                "type": "string",
                "description": (
                    "What the VM's hypervisor says now: running, paused, shutoff, ..., "
                    "missing (its domain is gone from its PM) or unknown (its PM cannot "
                    "be asked)."
                ),
            },
            "domain": {"type": "string", "description": "The libvirt domain's name."},
            "mac": _MAC,
            "ips": {
                "type": "array",
                "items": {"type": "string"},
                "description": (
                    "The addresses its guest has now, IPv4 first: from its PM's DHCP leases "
                    "or its guest agent. Empty while it has none, or without a NIC."
                ),
            },
        },
        "A VM as its hypervisor has it now.",
    ),
    "OpenAPIDocument": {
        "type": "object",
        "description": "This document.",
        "required": ["openapi", "info", "paths"],
    },
}

_VMID = _int_param("vmid", "The VM's id.")
_PMID = _int_param("pmid", "The PM's id.")
_POSITIVE_VMID = _int_param("vmid", "The VM's id; a non-positive one fails at once.")


def _action(action: str, summary: str, description: str) -> dict:
    """
    The operation of C{/vm/<action>}, one of L{ACTIONS}.
    """
    return _operation(
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
    "/vm/info": _operation(
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
    "/vm/resize": _operation(
        "/vm/resize",
        "vmResize",
        "Give a VM another flavor",
        "Gives the VM the flavor instance_type on its PM, if the PM has room for it. "
        'Answers {"status": 1} once done, {"status": 0} (nothing changed) when it cannot '
        "be done.",
        "Done",
        "NotDone",
        [_POSITIVE_VMID, _int_param("instance_type", "A flavor's tid from vm/types.")],
    ),
    "/vm/migrate": _operation(
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
            _int_param(
                "pmid",
                "The PM to move it to; without it, the active policy picks one.",
                required=False,
            ),
        ],
    ),
}

PATHS = {
    "/vm/create": _operation(
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
            _int_param("instance_type", "A flavor's tid from vm/types."),
            _int_param("image_id", "An image's id from image/list."),
        ],
    ),
    "/vm/query": _operation(
        "/vm/query",
        "vmQuery",
        "Describe a VM",
        "The VM's name, flavor and PM; 0 if there is no such VM.",
        "Vm",
        None,
        [_VMID],
    ),
    "/vm/destroy": _operation(
        "/vm/destroy",
        "vmDestroy",
        "Destroy a VM",
        "Stops and undefines its domain, deletes its disk, frees its room.",
        "Destroyed",
        "DestroyFailed",
        [_VMID],
    ),
    "/vm/types": _operation(
        "/vm/types", "vmTypes", "List the instance types", "Every flavor.", "Types", None
    ),
    "/pm/list": _operation("/pm/list", "pmList", "List the PMs", "Every PM's id.", "PmList", None),
    "/pm/listvms": _operation(
        "/pm/listvms",
        "pmListVms",
        "List a PM's VMs",
        "The ids of the VMs placed on the PM.",
        "PmVms",
        "PmVmsFailed",
        [_PMID],
    ),
    "/pm/query": _operation(
        "/pm/query",
        "pmQuery",
        "Describe a PM",
        "Its capacity, what is free, and how many VMs it has; 0 if there is no such PM.",
        "Pm",
        None,
        [_PMID],
    ),
    "/image/list": _operation(
        "/image/list",
        "imageList",
        "List the images",
        "Every image VMs can be made from.",
        "Images",
        None,
    ),
    "/v1/fleet": _operation(
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
                "FleetVm), 'vm_gone' ({vmid, pmid}), 'catalog' ({types, images}), "
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
    "/openapi.json": _operation(
        "/openapi.json",
        "openapi",
        "This document",
        "The OpenAPI document of the API.",
        "OpenAPIDocument",
        None,
    ),
}

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
    schema = SCHEMAS[shapes[1]["$ref"].removeprefix(_REF)]
    return {key: value["const"] for key, value in schema["properties"].items()}


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
            "image/list) and the calls beside it, which never add a key to a seed answer. "
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
    "components": {"schemas": SCHEMAS},
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
