"""
What a PM has: its capacity recorded when it is (re)discovered, and its VMs compared
with the domains it really runs.
"""

from __future__ import annotations

from twisted.logger import Logger

from vorchd.fleet.parts import Parts
from vorchd.hypervisor.interface import HypervisorError
from vorchd.model import Resources
from vorchd.store import StoreUnavailable

log = Logger()


async def discovered(parts: Parts, pmid: int, capacity: Resources) -> None:
    """
    PM C{pmid} was (re)connected and read: record its capacity and check its VMs.
    """
    try:
        await parts.store.set_capacity(pmid, capacity)
        await check_domains(parts, pmid)
    except (StoreUnavailable, HypervisorError) as e:
        log.warn("PM {pmid}: discovery not recorded: {e}", pmid=pmid, e=e)


async def check_domains(parts: Parts, pmid: int, present: set[str] | None = None) -> list[int]:
    """
    Compare PM C{pmid}'s VMs with the domains it really has: a VM whose domain is gone
    is marked missing (it stays in every answer until destroyed), one whose domain is
    back is active again.

    @param present: the PM's domain names, if the caller has just listed them.
    @return: the vmids now missing on that PM.
    """
    if present is None:
        present = await parts.hypervisors.on(pmid).domain_names()
    state = parts.state
    missing = []
    pm = state.pms.get(pmid)
    for vmid in sorted(pm.vmids if pm is not None else ()):
        rec = state.vms.get(vmid)
        if rec is None or rec.change_op:
            # A VM being moved may be on either PM: the change's end (or the
            # reconciler) says where.
            continue
        if rec.domain not in present:
            missing.append(vmid)
            if rec.state != "missing":
                await parts.store.set_vm_state(vmid, "missing")
                log.warn(
                    "vm {vmid} missing: domain {domain} is gone from PM {pmid}",
                    vmid=vmid,
                    domain=rec.domain,
                    pmid=pmid,
                )
        elif rec.state == "missing":
            await parts.store.set_vm_state(vmid, "active")
            log.info("vm {vmid} found again on PM {pmid}", vmid=vmid, pmid=pmid)
    return missing
