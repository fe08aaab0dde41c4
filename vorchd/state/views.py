"""
What the API answers, made from the read model: the seed API's objects (exactly their
keys) and the fleet view's (C{/v1/fleet}, C{/v1/events}).
"""

from __future__ import annotations

from collections.abc import Mapping

from vorchd import room
from vorchd.state.model import FleetState, VMRecord, VolumeRecord


def vm_answer(state: FleetState, vmid: int) -> dict | None:
    """
    C{/vm/query}'s answer for C{vmid}, or C{None} if there is no such VM.
    """
    vm = state.vms.get(vmid)
    if vm is None or not vm.visible:
        return None
    return {"vmid": vmid, "name": vm.name, "instance_type": vm.instance_type, "pmid": vm.pmid}


def pm_answer(state: FleetState, pmid: int, ratios: Mapping[str, float]) -> dict | None:
    """
    C{/pm/query}'s answer for C{pmid}, or C{None} if the fleet never had it.
    """
    pm = state.pms.get(pmid)
    if pm is None:
        return None
    return {
        "pmid": pmid,
        "capacity": pm.capacity.as_dict(),
        "free": room.free(pm.capacity, pm.used, ratios).as_dict(),
        "vms": len(pm.vmids),
    }


def pm_vmids(state: FleetState, pmid: int) -> list[int] | None:
    """
    C{/pm/listvms}'s vmids for C{pmid}, or C{None} if the fleet never had it.
    """
    pm = state.pms.get(pmid)
    return None if pm is None else sorted(pm.vmids)


def pm_state(state: FleetState, pmid: int) -> str:
    """
    C{retired}, C{down}, C{drained} or C{up}, the first that holds.
    """
    if pmid not in state.table.row:
        return "retired"
    if not state.is_up(pmid):
        return "down"
    if state.pms[pmid].drained:
        return "drained"
    return "up"


def pm_view(state: FleetState, pmid: int, ratios: Mapping[str, float]) -> dict:
    """
    One PM of the fleet view.
    """
    pm = state.pms[pmid]
    return {
        "pmid": pmid,
        "state": pm_state(state, pmid),
        "capacity": pm.capacity.as_dict(),
        "free": room.free(pm.capacity, pm.used, ratios).as_dict(),
        "vmids": sorted(pm.vmids),
    }


def vm_view(vm: VMRecord) -> dict:
    """
    One VM of the fleet view.
    """
    return {
        "vmid": vm.vmid,
        "name": vm.name,
        "instance_type": vm.instance_type,
        "pmid": vm.pmid,
        "image_id": vm.image_id,
        "state": vm.state,
        "mac": vm.mac,
    }


def catalog(state: FleetState) -> dict:
    """
    The flavors and images, as C{/vm/types} and C{/image/list} answer them.
    """
    return {
        "types": [f.as_dict() for f in state.flavors],
        "images": [{"id": i.id, "name": i.name} for i in state.images],
    }


def fleet(state: FleetState, policy: str, ratios: Mapping[str, float]) -> dict:
    """
    C{/v1/fleet}: every PM (the pm_file's in order, then the retired) and every VM.
    """
    pmids = [p for p in state.pm_ids if p in state.pms] + state.retired()
    return {
        "seq": state.seq,
        "policy": policy,
        "ratios": dict(ratios),
        **catalog(state),
        "pms": [pm_view(state, p, ratios) for p in pmids],
        "vms": [vm_view(vm) for _, vm in sorted(state.vms.items()) if vm.visible],
        "volumes": [volume_view(v) for _, v in sorted(state.volumes.items())],
    }


def volume_view(vol: VolumeRecord) -> dict:
    """
    C{volume/query}'s answer for C{vol}: C{volumeid, name, size, status} (C{available} or
    C{attached}), and the C{vmid} it is attached to. A volume whose attach has not answered
    yet is still available; one whose detach has not answered is still attached.
    """
    answer = {"volumeid": vol.volumeid, "name": vol.name, "size": vol.size}
    if vol.attached:
        return {**answer, "status": "attached", "vmid": vol.vmid}
    return {**answer, "status": "available"}
