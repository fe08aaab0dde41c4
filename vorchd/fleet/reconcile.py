"""
Reconciliation: Redis and the hypervisors made to agree again after a crash.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from twisted.logger import Logger

from vorchd.domain import domain_name, volume_name
from vorchd.fleet.discovery import check_domains
from vorchd.fleet.parts import Parts
from vorchd.hypervisor.interface import HypervisorError
from vorchd.network import mac_of
from vorchd.state.model import VMRecord, VolumeRecord


class Reconciler:
    """
    Rolls back dead daemons' claims, adopts forgotten domains, marks vanished ones.

    @ivar last: the last round's report.
    """

    log = Logger()

    def __init__(
        self,
        parts: Parts,
        in_flight: set[str],
        connected_pmids: Callable[[], Iterable[int]],
        settle: Callable[[VMRecord], Awaitable[str | None]] | None = None,
        settle_volume: Callable[[VolumeRecord], Awaitable[str | None]] | None = None,
    ):
        self.parts = parts
        self.in_flight = in_flight
        self.connected_pmids = connected_pmids
        self.settle = settle
        self.settle_volume = settle_volume
        self.last: dict[str, list[int]] = {"rolled_back": [], "adopted": [], "settled": []}

    async def reconcile(self) -> dict[str, list[int]]:
        """
        Make Redis and the hypervisors agree again after a crash:

          - a claim left C{creating} by a daemon that died (its lease expired) is rolled
            back: its domain and disk, if they were made, are removed, its room freed;
          - a change of a VM (a resize, a move) left under way by a daemon that died, or
            not recorded as ended while Redis was down, is settled by what the
            hypervisors say (L{vorchd.fleet.move.Mover.settle});
          - a domain of this fleet that a PM runs but Redis does not know (Redis lost
            its last second, say) is adopted back with its own ids;
          - a VM whose domain is gone is marked missing (L{check_domains});
          - a volume's change left under way by a daemon that died is ended
            (L{vorchd.fleet.volumes.Volumes.settle}: an attach undone, a detach or a
            destroy done); the volumes' ids are reported under C{volumes}.

        PMs that cannot be reached now are left for the next round.

        @return: the vmids rolled back, settled and adopted, and the volumes settled.
        """
        parts = self.parts
        store, hypervisors = parts.store, parts.hypervisors
        report: dict[str, list[int]] = {
            "rolled_back": [],
            "adopted": [],
            "settled": [],
            "volumes": [],
        }
        owners: dict[str, bool] = {}

        async def orphaned(owner: str, op: str) -> bool:
            # Whether no daemon is making the create or change C{op} any more.
            if owner == parts.daemon_id:
                return op not in self.in_flight
            if owner not in owners:
                owners[owner] = bool(owner) and await store.alive(owner)
            return not owners[owner]

        changes = [rec for rec in parts.state.vms.values() if rec.change_op]
        for rec in sorted(changes, key=lambda r: r.vmid):
            if self.settle is None or not await orphaned(rec.change_owner, rec.change_op):
                continue
            try:
                outcome = await self.settle(rec)
            except HypervisorError as e:
                self.log.warn("vm {vmid}: change not settled yet: {e}", vmid=rec.vmid, e=e)
                continue
            if outcome is not None:
                report["settled"].append(rec.vmid)
                self.log.warn(
                    "vm {vmid}: its {kind} to PM {target}, left by daemon {owner}, {outcome}",
                    vmid=rec.vmid,
                    kind=rec.change_kind,
                    target=rec.change_pmid,
                    owner=rec.change_owner or "(unknown)",
                    outcome=outcome,
                )
        volumes = [v for v in parts.state.volumes.values() if v.op]
        for vol in sorted(volumes, key=lambda v: v.volumeid):
            if self.settle_volume is None or not await orphaned(vol.owner, vol.op):
                continue
            try:
                outcome = await self.settle_volume(vol)
            except HypervisorError as e:
                self.log.warn("volume {v}: not settled yet: {e}", v=vol.volumeid, e=e)
                continue
            if outcome is not None:
                report["volumes"].append(vol.volumeid)
                self.log.warn(
                    "volume {v}: {outcome}, left by daemon {owner}",
                    v=vol.volumeid,
                    outcome=outcome,
                    owner=vol.owner or "(unknown)",
                )
        claims = [(v, rec) for v, rec in parts.state.vms.items() if rec.state == "creating"]
        for vmid, rec in sorted(claims, key=lambda item: item[0]):
            owner = rec.owner
            if not await orphaned(owner, rec.op):
                continue
            # The list is as old as the round: a create of this daemon it holds may have
            # finished (committed and answered) while earlier claims were rolled back.
            now = parts.state.vms.get(vmid)
            if now is None or now.state != "creating" or now.op != rec.op:
                continue
            pmid = rec.pmid
            if not hypervisors.is_up(pmid):
                continue
            try:
                await hypervisors.on(pmid).destroy_vm(rec.domain, rec.volume)
            except HypervisorError as e:
                self.log.warn("vm {vmid}: stale claim not rolled back yet: {e}", vmid=vmid, e=e)
                continue
            if await store.release(vmid):
                report["rolled_back"].append(vmid)
                self.log.warn(
                    "vm {vmid}: rolled back a claim on PM {pmid} left by daemon"
                    " {owner}, which died mid-create",
                    vmid=vmid,
                    pmid=pmid,
                    owner=owner or "(unknown)",
                )
        # Only domains the model has no record of can need adopting: their metadata
        # alone is read, so a round costs one listing per PM however many VMs run.
        known = frozenset(rec.domain for rec in parts.state.vms.values())
        for pmid in self.connected_pmids():
            if not hypervisors.is_up(pmid):
                continue
            try:
                found = await hypervisors.on(pmid).fleet_domains(parts.fleet_id, known)
                for meta in found:
                    if await self._adopt(pmid, meta):
                        report["adopted"].append(meta["vmid"])
                # This fleet's domains are the only ones its VMs can have: no second listing.
                await check_domains(parts, pmid, {meta["domain"] for meta in found})
            except HypervisorError as e:
                self.log.warn("PM {pmid}: not reconciled yet: {e}", pmid=pmid, e=e)
        self.last = report
        return report

    async def _adopt(self, pmid: int, meta: dict) -> bool:
        vmid, flavor = meta.get("vmid"), meta.get("flavor")
        if not vmid or flavor is None or meta.get("pmid") != pmid:
            return False
        fleet = self.parts.fleet_id
        adopted = await self.parts.store.adopt(
            vmid,
            pmid,
            flavor,
            {
                "name": meta.get("name", ""),
                "image_id": meta.get("image_id", 0),
                "domain": domain_name(fleet, vmid),
                "volume": volume_name(fleet, vmid),
                "mac": meta.get("mac") or mac_of(domain_name(fleet, vmid)),
            },
        )
        if adopted:
            self.log.warn(
                "vm {vmid}: adopted back from PM {pmid}, where it runs though"
                " Redis had no record of it",
                vmid=vmid,
                pmid=pmid,
            )
        return adopted
