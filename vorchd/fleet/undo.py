"""
Undoing creates that failed where Redis could not record the failure: their domain and
disk removed from the PM, then their claim from Redis, retried until both are done.
"""

from __future__ import annotations

from twisted.logger import Logger

from vorchd.domain import domain_name, volume_name
from vorchd.fleet.parts import Parts
from vorchd.hypervisor.interface import HypervisorError
from vorchd.store import StoreUnavailable


class Undo:
    """
    The creates still to undo: by vmid (-> PM), and the claims whose outcome Redis never
    told, by their create's token (-> PM), whose vmid is learnt from the model once it
    follows Redis again.
    """

    log = Logger()

    def __init__(self, parts: Parts):
        self.parts = parts
        self.pending: dict[int, int] = {}
        self.lost_claims: dict[str, int] = {}
        # What a failed move left on a PM it could not clean then (its libvirtd died,
        # say): (pmid, domain) -> the disk to delete with it, or None to keep it.
        self.leftovers: dict[tuple[int, str], str | None] = {}

    def later(self, vmid: int, pmid: int) -> None:
        self.pending[vmid] = pmid

    def lost(self, op: str, pmid: int) -> None:
        self.lost_claims[op] = pmid

    async def release(self, vmid: int, pmid: int) -> None:
        """
        Give back a claim whose create failed, now or (Redis down) as soon as it answers.
        """
        try:
            await self.parts.store.release(vmid)
        except StoreUnavailable:
            self.later(vmid, pmid)

    async def retry(self) -> list[int]:
        """
        Undo what is pending; what cannot be done yet stays for the next try.

        @return: the vmids fully undone now.
        """
        state, feed = self.parts.state, self.parts.feed
        if self.lost_claims and state.ready and feed.connected:
            # The model follows Redis again: a lost claim is there now, or never landed.
            found = {
                rec.op: vmid
                for vmid, rec in state.vms.items()
                if rec.state == "creating" and rec.op in self.lost_claims
            }
            for op, pmid in list(self.lost_claims.items()):
                del self.lost_claims[op]
                if op in found:
                    self.later(found[op], pmid)
        for (pmid, domain), volume in list(self.leftovers.items()):
            await self.remove_leftover(pmid, domain, volume)
        return [vmid for vmid, pmid in list(self.pending.items()) if await self.undo(vmid, pmid)]

    async def remove_leftover(self, pmid: int, domain: str, volume: str | None) -> bool:
        """
        Remove what a failed move left on PM C{pmid} (the domain C{domain}, if there,
        and the disk C{volume}); if the PM cannot do it now, try again at the next
        round. A domain that runs there (the move went through after all) is kept.

        @return: whether it is removed.
        """
        host = self.parts.hypervisors.on(pmid)
        try:
            if await host.vm_state(domain) in ("missing", "shutoff"):
                await host.destroy_vm(domain, volume)
            self.leftovers.pop((pmid, domain), None)
            return True
        except HypervisorError as e:
            if (pmid, domain) not in self.leftovers:
                self.log.warn(
                    "{domain}: left-overs on PM {pmid} not removed yet: {e}",
                    domain=domain,
                    pmid=pmid,
                    e=e,
                )
            self.leftovers[(pmid, domain)] = volume
            return False

    async def undo(self, vmid: int, pmid: int) -> bool:
        """
        Undo VM C{vmid} on PM C{pmid}: whether it is now undone.
        """
        fleet = self.parts.fleet_id
        try:
            await self.parts.hypervisors.on(pmid).destroy_vm(
                domain_name(fleet, vmid), volume_name(fleet, vmid)
            )
            await self.parts.store.release(vmid)
        except (HypervisorError, StoreUnavailable):
            return False
        # Another round (the periodic one, say) may have finished it meanwhile.
        if self.pending.pop(vmid, None) is None:
            return False
        self.log.info("vm {vmid}: failed create undone on PM {pmid}", vmid=vmid, pmid=pmid)
        return True
