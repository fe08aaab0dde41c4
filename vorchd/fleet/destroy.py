"""
The destroy path: stop and undefine the domain, delete its disk, free its room.
"""

from __future__ import annotations

import time

from twisted.logger import Logger

from vorchd.fleet.parts import Parts, Refused
from vorchd.fleet.running import not_changing, visible_vm
from vorchd.hypervisor.interface import HypervisorError
from vorchd.store.client import NotReplicated

log = Logger()


async def destroy(parts: Parts, vmid: int) -> None:
    """
    Stop and undefine VM C{vmid}'s domain, delete its disk, free its room.

    A VM whose domain has vanished from its PM is destroyed all the same.

    Each destroy logs one event, C{vm_destroy}: its outcome (C{destroyed} or
    C{refused}), vmid, PM, the reason of a refusal, and its C{duration} in seconds.

    With C{min_replicas_acked} set, the destroy succeeds only once that many replicas
    have its release. If they do not confirm it in time, the domain and disk are gone all
    the same (a destroy done on the hypervisor is done) and the VM is gone from the
    master's records, but the destroy is refused: a failover could still bring the
    record back (as a missing VM, which a second destroy removes). A C{vm/query} says
    which: 0 once the VM is gone.

    @raise Refused: no such VM, or its PM cannot be reached (nothing changed), or the
        release was not confirmed by enough replicas (the VM is gone from its PM).
    """
    started = time.monotonic()
    where = {"pmid": 0}
    try:
        await _destroy(parts, vmid, where)
    except Exception as e:
        log.info(
            "vm {vmid} not destroyed in {duration:.3f} s: {reason}",
            event="vm_destroy",
            outcome="refused",
            vmid=vmid,
            reason=str(e) or e.__class__.__name__,
            duration=time.monotonic() - started,
            **where,
        )
        raise
    log.info(
        "vm {vmid} destroyed on PM {pmid} in {duration:.3f} s",
        event="vm_destroy",
        outcome="destroyed",
        vmid=vmid,
        duration=time.monotonic() - started,
        **where,
    )


async def _destroy(parts: Parts, vmid: int, where: dict) -> None:
    rec = visible_vm(parts, vmid)
    pmid = where["pmid"] = rec.pmid
    not_changing(rec)
    try:
        await parts.hypervisors.on(pmid).destroy_vm(rec.domain, rec.volume)
    except HypervisorError as e:
        raise Refused(f"PM {pmid}: {e}") from None
    try:
        released = await parts.store.release(vmid, acked=True)
    except NotReplicated as e:
        raise Refused(
            f"VM {vmid} is destroyed on PM {pmid}, but its release is not yet safe"
            f" from a failover ({e}); query it to see whether it is gone"
        ) from None
    if not released:
        raise Refused(f"VM {vmid} was destroyed by another request")
