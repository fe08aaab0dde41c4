"""
A block volume's change left half-done by a daemon that died (its lease ran out), ended
by the reconciler (L{vorchd.fleet.reconcile}) as the hypervisors allow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vorchd.fleet.parts import Parts, Refused
from vorchd.hypervisor.interface import NoSuchVM
from vorchd.state.model import VolumeRecord
from vorchd.volume_xml import CephPool

if TYPE_CHECKING:
    from vorchd.fleet.volumes import Volumes


async def settle(volumes: Volumes, vol: VolumeRecord) -> str | None:
    """
    End volume C{vol}'s change, left under way by a daemon that died: an attach is
    undone (its data is still where it was: a copy made on the VM's PM is deleted, the
    disk taken out of the guest, the claim given back); a detach or a destroy is done.

    @return: what was done, or C{None} when it must wait (a PM it needs is down).
    @raise HypervisorError: a PM failed; try again later.
    """
    parts, name = volumes.parts, volumes._name(vol.volumeid)
    hypervisors = parts.hypervisors
    vm = parts.ready().vms.get(vol.vmid)
    domain = vm.domain if vm is not None else None
    try:
        ceph = volumes._ceph(vol)
    except Refused:
        return None
    # An RBD image is reached from the PM its guest runs on.
    guest = vm.pmid if ceph is not None and vm is not None else 0
    if vol.status == "attaching":
        target = guest or vol.to_pmid
        if not hypervisors.is_up(target) or (vol.pmid and not hypervisors.is_up(vol.pmid)):
            return None
        if domain is not None:
            await _detach_quietly(parts, target, domain, name, ceph)
        local_copy = ceph is None and vol.pmid != target
        if local_copy and not await volumes._shared(vol.pmid, target):
            await hypervisors.on(target).delete_volume(name)
        done, outcome = False, "attach undone"
    elif vol.status == "detaching":
        where = guest or vol.pmid
        if not hypervisors.is_up(where):
            return None
        if domain is not None:
            await _detach_quietly(parts, where, domain, name, ceph)
        done, outcome = True, "detach done"
    elif vol.status == "destroying":
        try:
            where = volumes._any_up() if ceph is not None else vol.pmid
        except Refused:
            return None
        if where:
            if not hypervisors.is_up(where):
                return None
            await hypervisors.on(where).delete_volume(name, ceph)
        done, outcome = True, "destroy done"
    else:
        return None
    if not await parts.store.end_volume(vol.volumeid, vol.op, done):
        return None
    return outcome


async def _detach_quietly(
    parts: Parts, pmid: int, domain: str, name: str, ceph: CephPool | None = None
) -> None:
    try:
        await parts.hypervisors.on(pmid).detach_volume(domain, name, ceph)
    except NoSuchVM:
        pass
