"""
The parts L{vorchd.openapi}'s document is made of: the response schemas (L{SCHEMAS}),
the argument and operation builders, and which calls change state (L{CHANGING}).
"""

from __future__ import annotations

REF = "#/components/schemas/"

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
    "/volume/create",
    "/volume/destroy",
    "/volume/attach",
    "/volume/detach",
)


def _ref(name: str) -> dict:
    return {"$ref": REF + name}


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


def int_param(name: str, description: str, required: bool = True) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": f"{description} {_INTEGER_ARGUMENT}",
        "schema": {"type": "integer"},
    }


_HEAD_READS = " HEAD is answered like GET, without a body."
_HEAD_CHANGES = " The call changes state: a HEAD of it does nothing and answers 0."


def operation(
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
            "volumes": {"type": "array", "items": _ref("Volume")},
        },
        "The whole fleet at change seq of the daemon's read model: the pm_file's PMs in "
        "order then the retired ones, every VM by vmid, every volume by volumeid.",
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
