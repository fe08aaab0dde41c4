"""
The OpenAPI 3.1 document of the seed REST API, exactly as L{vorchd.rest} implements it;
the daemon serves it at C{GET /openapi.json}.

Every answer is HTTP 200 with a JSON body. A call that fails answers its own failure value;
anything that is not a call (unknown path, another method, a missing, repeated or
non-integer argument) answers C{0}. So each operation's 200 response is one of its success
shape, its failure value, or C{0}.
"""

from __future__ import annotations

import copy
import json

_REF = "#/components/schemas/"


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
    "decimal point or exponent). Anything else, a missing argument, or the argument given more "
    "than once, is not a call of the API and answers 0."
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


def _int_param(name: str, description: str) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": True,
        "description": f"{description} {_INTEGER_ARGUMENT}",
        "schema": {"type": "integer"},
    }


def _operation(
    operation_id: str,
    summary: str,
    description: str,
    success: str,
    failure: str | None,
    parameters: list | None = None,
) -> dict:
    """
    A GET operation whose 200 answer is C{success}, C{failure} (if any) or C{NotACall}.
    """
    shapes = [_ref(success)]
    if failure is not None:
        shapes.append(_ref(failure))
    shapes.append(_ref("NotACall"))
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "description": description
            + " HEAD is answered like GET without a body, except for calls that change "
            "state (vm/create, vm/destroy), which do nothing on HEAD and answer 0.",
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

SCHEMAS = {
    "NotACall": {
        **_const(0),
        "description": (
            "Not a call of the API: unknown path, a method other than GET (or HEAD), a "
            "missing, repeated or non-integer argument. Also vm/query's and pm/query's own "
            "failure value."
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
        "Nothing was made: unknown or non-positive instance_type or image_id, an empty, "
        "missing or non-UTF-8 name, or no PM has room.",
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
    "DestroyFailed": _obj({"status": _const(0)}, "No such VM, or its PM cannot be reached."),
    "Types": _obj({"types": {"type": "array", "items": _ref("Flavor")}}),
    "PmList": _obj({"pmids": {"type": "array", "items": _ID}}),
    "PmVms": _obj({"vmids": {"type": "array", "items": _ID}}),
    "PmVmsFailed": _obj({"vmids": _const(0)}, "No such PM."),
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
    "OpenAPIDocument": {
        "type": "object",
        "description": "This document.",
        "required": ["openapi", "info", "paths"],
    },
}

_VMID = _int_param("vmid", "The VM's id.")
_PMID = _int_param("pmid", "The PM's id.")

PATHS = {
    "/vm/create": _operation(
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
                    'share a name. Missing, empty or not UTF-8: answers {"vmid": 0}. Given '
                    "more than once: answers 0."
                ),
                "schema": {"type": "string", "minLength": 1},
            },
            _int_param("instance_type", "A flavor's tid from vm/types."),
            _int_param("image_id", "An image's id from image/list."),
        ],
    ),
    "/vm/query": _operation(
        "vmQuery",
        "Describe a VM",
        "The VM's name, flavor and PM; 0 if there is no such VM.",
        "Vm",
        None,
        [_VMID],
    ),
    "/vm/destroy": _operation(
        "vmDestroy",
        "Destroy a VM",
        "Stops and undefines its domain, deletes its disk, frees its room.",
        "Destroyed",
        "DestroyFailed",
        [_VMID],
    ),
    "/vm/types": _operation("vmTypes", "List the instance types", "Every flavor.", "Types", None),
    "/pm/list": _operation("pmList", "List the PMs", "Every PM's id.", "PmList", None),
    "/pm/listvms": _operation(
        "pmListVms",
        "List a PM's VMs",
        "The ids of the VMs placed on the PM.",
        "PmVms",
        "PmVmsFailed",
        [_PMID],
    ),
    "/pm/query": _operation(
        "pmQuery",
        "Describe a PM",
        "Its capacity, what is free, and how many VMs it has; 0 if there is no such PM.",
        "Pm",
        None,
        [_PMID],
    ),
    "/image/list": _operation(
        "imageList", "List the images", "Every image VMs can be made from.", "Images", None
    ),
    "/v1/fleet": _operation(
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
    "/openapi.json": _operation(
        "openapi",
        "This document",
        "The OpenAPI document of the seed API.",
        "OpenAPIDocument",
        None,
    ),
}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "vorchd seed API",
        "version": "1.0.0",
        "description": (
            "The seed REST API of vorchd, a virtualization orchestration daemon. Every "
            "answer is HTTP 200 with a JSON body. A call that fails answers its own failure "
            "value; anything that is not a call of the API (an unknown path, a method other "
            "than GET or HEAD, a missing, repeated or non-integer argument) answers 0. "
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
