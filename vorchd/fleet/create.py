"""
The create path, top to bottom: check the request against the model, rank the PMs in
memory, claim room at the authority (which hands out the vmid), build the domain on the
PM, commit; undo what was made when a step fails.
"""

from __future__ import annotations

import secrets
import time

from attrs import evolve
from twisted.logger import Logger

from vorchd import placement, room
from vorchd.domain import VM, domain_name, fleet_prefix, volume_name
from vorchd.fleet.parts import Parts, Refused
from vorchd.fleet.settings import LiveSettings
from vorchd.fleet.undo import Undo
from vorchd.hypervisor.interface import HypervisorError
from vorchd.images import ImageUnavailable
from vorchd.images.bases import BaseCopies
from vorchd.images.sources import Sources
from vorchd.metrics import placement_reason
from vorchd.model import Flavor
from vorchd.policies import Request
from vorchd.store import StoreUnavailable
from vorchd.store.client import NotReplicated


class Creator:
    """
    Makes VMs.

    @ivar in_flight: each create's own token ("op" in its record), from before its claim
        is sent until it answers, so that no round of undo or reconcile takes its claim
        for one left behind.
    """

    log = Logger()

    def __init__(self, parts: Parts, settings: LiveSettings, undo: Undo):
        self.parts = parts
        self.settings = settings
        self.undo = undo
        self.in_flight: set[str] = set()
        self.sources = Sources(parts.is_local, parts.images)
        self.bases = BaseCopies(parts.hypervisors, parts.store._reactor)

    async def create(self, name: str, instance_type: int, image_id: int) -> int:
        """
        Place, claim, build and start a VM; answer only once its domain runs.

        Each create logs one event, C{vm_create}: its outcome (C{created} or C{refused}),
        vmid, PM, domain type, flavor, image, policy, the reason of a refusal, and its
        C{duration} in seconds.

        @return: the new vmid.
        @raise Refused: nothing was made (or everything made was removed again).
        """
        started = time.monotonic()
        facts = {"vmid": 0, "pmid": 0, "kind": None, "policy": None}
        try:
            vmid = await self._create(name, instance_type, image_id, facts)
        except Exception as e:
            kind = e.kind if isinstance(e, Refused) else "other"
            if isinstance(e, StoreUnavailable):
                kind = "store_unavailable"
            self.parts.metrics.placement_failed(kind)
            self.log.info(
                "vm not created (flavor {tid}, image {image_id}, policy {policy})"
                " in {duration:.3f} s: {reason}",
                event="vm_create",
                outcome="refused",
                tid=instance_type,
                image_id=image_id,
                reason=str(e) or e.__class__.__name__,
                reason_class=kind,
                duration=time.monotonic() - started,
                **{**facts, "vmid": 0},
            )
            raise
        self.log.info(
            "vm {vmid} created on PM {pmid} ({kind}), flavor {tid}, image {image_id},"
            " policy {policy}, in {duration:.3f} s",
            event="vm_create",
            outcome="created",
            tid=instance_type,
            image_id=image_id,
            duration=time.monotonic() - started,
            **facts,
        )
        return vmid

    async def _create(self, name: str, instance_type: int, image_id: int, facts: dict) -> int:
        """
        L{create}'s work; what it learns for the log (policy, vmid, PM, domain type) goes
        into C{facts}.
        """
        parts = self.parts
        if not name:
            raise Refused("name is empty", "bad_request")
        state = parts.ready()
        flavor = state.flavor(instance_type)
        if flavor is None:
            raise Refused(f"no instance_type {instance_type}", "bad_request")
        image = state.image(image_id)
        if image is None:
            raise Refused(f"no image {image_id}", "bad_request")
        source = await self._local_source(image.source)
        request = Request(flavor, image_id, name)
        policy, ratios = self.settings.current(state)
        facts["policy"] = policy.name
        op = secrets.token_hex(6)
        record = {
            "owner": parts.daemon_id,
            "op": op,
            "name": name,
            "instance_type": flavor.tid,
            "image_id": image_id,
        }
        prefix = fleet_prefix(parts.fleet_id)
        refused: dict[int, room.Refusal] = {}
        vmid = 0
        attempts = 0
        self.in_flight.add(op)
        try:
            for pmid in placement.ranked(policy, request, state, ratios):
                if attempts >= parts.max_attempts:
                    break
                try:
                    claimed = await parts.store.claim(
                        vmid, pmid, flavor.resources, ratios, record, prefix
                    )
                    vmid, why = claimed
                except StoreUnavailable:
                    # The claim may or may not have been written: undo it when Redis is back.
                    if vmid:
                        self.undo.later(vmid, pmid)
                    else:
                        self.undo.lost(op, pmid)
                    raise
                if why is not None:
                    # Another request took the room since the model saw it: the next PM.
                    refused[pmid] = why
                    continue
                attempts += 1
                try:
                    kind = await self._build(
                        vmid, name, flavor, image_id, pmid, source, claimed.mac
                    )
                except HypervisorError as e:
                    refused[pmid] = room.Refusal(room.FAILED, str(e))
                    self.log.warn("vm {vmid} on PM {pmid} failed: {e}", vmid=vmid, pmid=pmid, e=e)
                    await self.undo.release(vmid, pmid)
                    continue
                failed = await self._commit(vmid, pmid, op)
                if failed:
                    raise Refused(f"{failed}; nothing was created", "store_unavailable")
                facts.update(vmid=vmid, pmid=pmid, kind=kind)
                return vmid
        finally:
            self.in_flight.discard(op)
        for pmid, why in placement.refusals(state, request, ratios).items():
            if why.kind == room.DOWN and parts.hypervisors.down_reason(pmid):
                # Say why: unreachable, or its network missing or down.
                why = room.Refusal(room.DOWN, parts.hypervisors.down_reason(pmid))
            refused.setdefault(pmid, why)
        raise Refused(
            f"no PM could take it: {summary(refused)}", placement_reason(refused.values())
        )

    async def _local_source(self, line: str) -> str:
        try:
            return await self.sources.local_path(line)
        except ImageUnavailable as e:
            raise Refused(str(e), "image_unavailable") from None

    def forget_bases(self, pmid: int | None = None) -> None:
        """
        Ask the PM (every PM) again before trusting its base copies (they were pruned).
        """
        self.bases.forget(pmid)

    async def _build(
        self,
        vmid: int,
        name: str,
        flavor: Flavor,
        image_id: int,
        pmid: int,
        source: str,
        mac: str,
    ) -> str:
        hypervisors, fleet = self.parts.hypervisors, self.parts.fleet_id
        base_path, base_format = await self.bases.ensure(fleet, pmid, image_id, source)
        # The MAC the claim gave it (its name's unless another VM of the fleet has that).
        vm = VM(fleet, vmid, name, flavor, image_id, pmid)
        if mac:
            vm = evolve(vm, mac=mac)
        try:
            return await hypervisors.on(
                pmid,
                # Answered as failed already: a domain that starts anyway must not stay.
                undo=lambda _kind: hypervisors.on(pmid).destroy_vm(vm.domain_name, vm.volume_name),
            ).create_vm(vm, base_path, base_format)
        except HypervisorError:
            # Its base copy may be what failed: ask the PM again next time.
            self.forget_bases(pmid)
            raise

    async def _commit(self, vmid: int, pmid: int, op: str) -> str | None:
        """
        Record the create as done: None once it is, else why not (and the create is
        undone, or will be once Redis answers).
        """
        try:
            if await self.parts.store.commit(vmid, pmid, op):
                return None
        except NotReplicated as e:
            # Made on the master, but a failover could still lose it: never acknowledged.
            self.log.warn("vm {vmid}: not confirmed by a replica, undoing: {e}", vmid=vmid, e=e)
            self.undo.later(vmid, pmid)
            await self.undo.undo(vmid, pmid)
            return "state store: too few replicas confirmed the create"
        except StoreUnavailable as e:
            # The commit may have been written or not: either way the user is told no,
            # so the VM must go, now on the PM and in Redis once it answers.
            self.log.warn("vm {vmid}: not recorded, undoing: {e}", vmid=vmid, e=e)
            self.undo.later(vmid, pmid)
            await self.undo.undo(vmid, pmid)
            return "state store unavailable"
        # The claim is gone, or is another create's: Redis failed over and lost it (a
        # reconciler rolling it back would have removed the domain already). The domain
        # made for it must go; the record, if any, is not this create's to release.
        self.log.warn("vm {vmid}: its claim is gone; removing its domain", vmid=vmid)
        vm_domain, vm_volume = (
            domain_name(self.parts.fleet_id, vmid),
            volume_name(self.parts.fleet_id, vmid),
        )
        try:
            await self.parts.hypervisors.on(pmid).destroy_vm(vm_domain, vm_volume)
        except HypervisorError as e:
            self.log.warn("vm {vmid}: domain not removed yet: {e}", vmid=vmid, e=e)
            self.undo.leftovers[(pmid, vm_domain)] = vm_volume
        return "its claim is gone from the state store (a failover lost it)"


def summary(refused: dict[int, room.Refusal], shown: int = 20) -> str:
    """
    Why each PM refused, for the failure's message: each PM's reason in a small fleet,
    counts of each kind (and the first few PMs) in a large one.
    """
    if not refused:
        return "no PMs"
    if len(refused) <= shown:
        return "; ".join(f"PM {p}: {why}" for p, why in sorted(refused.items()))
    kinds: dict[str, list[int]] = {}
    for pmid, why in sorted(refused.items()):
        kinds.setdefault(why.kind, []).append(pmid)
    return "; ".join(
        f"{len(pmids)} PMs {kind} (PM {', '.join(map(str, pmids[:3]))}"
        f"{', ...' if len(pmids) > 3 else ''})"
        for kind, pmids in kinds.items()
    )
