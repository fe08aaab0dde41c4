"""
The one place that acts: it reads state, asks the policy, claims, acts on the
hypervisor, records, and undoes its claim when the act fails.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence

from attrs import frozen
from twisted.internet import defer
from twisted.logger import Logger

from vorchd import placement, room
from vorchd.domain import VMSpec, domain_name, fleet_prefix, volume_name
from vorchd.hypervisor.host import HypervisorError, LibvirtHost
from vorchd.hypervisor.service import Hypervisors
from vorchd.images import ImageCache, ImageUnavailable
from vorchd.inventory import InputFileError, parse_image_text
from vorchd.metrics import Metrics, placement_reason
from vorchd.model import RESOURCES, Flavor, ImageEntry, PMEntry, Resources
from vorchd.policies import IAllocationPolicy, Request, UnknownPolicy, policy_named
from vorchd.state import views
from vorchd.state.feed import ChangeFeed
from vorchd.state.model import VISIBLE, FleetState
from vorchd.store import Store, StoreUnavailable


class Refused(Exception):
    """
    A request vorchd answers with the seed API's failure value; the message says why,
    C{kind} which class of reason it is (a L{vorchd.metrics.PLACEMENT_REASONS} label).
    """

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind


@frozen
class HostSettings:
    """
    How each PM's libvirt side is set up (from the ini's [libvirt] section).
    """

    pool_name: str = "vorchd"
    pool_path: str = "/var/lib/vorchd/pool"
    domain_type: str = "auto"
    console_log_dir: str | None = None


class Fleet:
    """
    The fleet as users see it through the seed API, and the acts that change it.
    """

    log = Logger()

    def __init__(
        self,
        store: Store,
        hypervisors: Hypervisors,
        policy: str,
        ratios: Mapping[str, float],
        host_settings: HostSettings = HostSettings(),
        max_attempts: int = 3,
        is_local: Callable[[str], bool] = lambda host: False,
        policy_options: Mapping[str, str] | None = None,
        images: ImageCache | None = None,
    ):
        self.store = store
        self.hypervisors = hypervisors
        # What the ini says; the live values are in Redis (an admin may change them).
        self.ini_settings = {
            "policy": policy,
            **{f"{r}_ratio": repr(float(v)) for r, v in ratios.items()},
        }
        self.policy_options = dict(policy_options or {})
        self.images = images
        self._policy: IAllocationPolicy = policy_named(policy, self.policy_options)
        # The name the policy was last asked for by (a dotted path, say, is not the
        # policy's own name): it is loaded again only when that changes.
        self._policy_asked = policy
        self.host_settings = host_settings
        self.max_attempts = max_attempts
        self.is_local = is_local
        self.fleet_id: str | None = None
        # Stamps this daemon's in-flight claims, so that another daemon (or this one,
        # restarted) can tell a claim whose creator died from one still being made.
        self.daemon_id = secrets.token_hex(6)
        self.last_reconcile: dict[str, list[int]] = {"rolled_back": [], "adopted": []}
        # PMs out of the pm_file that still have VMs: (pmid, uri); see load().
        self.retired: list[tuple[int, str]] = []
        # vmids this daemon is creating now, and failed creates still to undo (vmid ->
        # pmid) because Redis did not answer when they failed.
        # Each create's own token ("op" in its record), from before its claim is sent
        # until it answers, so that no round of undo or reconcile takes its claim for
        # one left behind.
        self._in_flight: set[str] = set()
        self._undoing: dict[int, int] = {}
        # Claims whose outcome Redis never told (so whose vmid is unknown), by token ->
        # PM: looked for in the model once it follows Redis again, and undone if found.
        self._lost_claims: dict[str, int] = {}
        self._base_locks: dict[tuple[int, int], defer.DeferredLock] = {}
        self._hosts: list[tuple[int, str]] = []
        # This daemon's counters, served at /metrics.
        self.metrics = Metrics()
        # The fleet in memory, fed from Redis' change stream: every read answers from it.
        self.state = FleetState()
        self.feed = ChangeFeed(store, self.state, store._reactor, settle_timeout=store._timeout)
        hypervisors.on_up = self._discovered
        hypervisors.on_state = self.state.set_up

    # -- start-up -------------------------------------------------------------------------

    async def load(
        self, pms: Sequence[PMEntry], images: Sequence[ImageEntry], flavors: Sequence[Flavor]
    ) -> None:
        """
        Make the parsed input files the fleet's inventory (ids kept by line), and make
        each PM's connection (L{discover} connects them).

        A PM whose line left the pm_file while it still has VMs is I{retired}: it takes no
        new VMs and is out of C{pm/list}, but stays connected, so that its VMs can still
        be destroyed and reconciled, until the daemon next starts without VMs there.
        """
        self.fleet_id = await self.store.fleet_id()
        await self.store.adopt_settings(self.ini_settings)
        pmids = await self.store.register_pms((e.line, e.uri) for e in pms)
        await self.store.register_images((e.line, e.name) for e in images)
        await self.store.set_flavors(flavors)
        self.retired = [(p, self.state.pms[p].uri) for p in self.state.retired()]
        in_file = list(zip(pmids, (e.uri for e in pms), strict=True))
        current = {uri: pmid for pmid, uri in in_file}
        hosts = [*in_file, *self.retired]
        for pmid, uri in self.retired:
            self.log.warn(
                "PM {pmid} ({uri}) is no longer in the pm_file but still has VMs: kept"
                " connected so that they can be destroyed; it takes no new VMs",
                pmid=pmid,
                uri=uri,
            )
            if uri in current:
                self.log.warn(
                    "PM {pmid} and PM {now} are the same hypervisor ({uri}), its line having"
                    " changed: PM {now} does not count PM {pmid}'s VMs, so destroy or"
                    " drain them before filling it",
                    pmid=pmid,
                    now=current[uri],
                    uri=uri,
                )
        s = self.host_settings
        for pmid, uri in hosts:
            if self.hypervisors.host(pmid) is None:
                self.hypervisors.add(
                    pmid,
                    LibvirtHost(uri, s.pool_name, s.pool_path, s.domain_type, s.console_log_dir),
                )
        self._hosts = hosts

    async def discover(self) -> None:
        """
        Connect to and discover every PM L{load} named, at once; returns when each has
        been reached or failed (and is retried in the background).
        """
        await defer.DeferredList(
            [defer.ensureDeferred(self.hypervisors.connect(p)) for p, _ in self._hosts],
            consumeErrors=True,
        )

    async def _discovered(self, pmid: int, capacity: Resources) -> None:
        try:
            await self.store.set_capacity(pmid, capacity)
            await self.check_domains(pmid)
        except (StoreUnavailable, HypervisorError) as e:
            self.log.warn("PM {pmid}: discovery not recorded: {e}", pmid=pmid, e=e)

    async def check_domains(self, pmid: int, present: set[str] | None = None) -> list[int]:
        """
        Compare PM C{pmid}'s VMs with the domains it really has: a VM whose domain is
        gone is marked missing (it stays in every answer until destroyed), one whose
        domain is back is active again.

        @param present: the PM's domain names, if the caller has just listed them.
        @return: the vmids now missing on that PM.
        """
        if present is None:
            present = await self.hypervisors.call(pmid, "domain_names")
        missing = []
        pm = self.state.pms.get(pmid)
        for vmid in sorted(pm.vmids if pm is not None else ()):
            rec = self.state.vms.get(vmid)
            if rec is None:
                continue
            if rec.domain not in present:
                missing.append(vmid)
                if rec.state != "missing":
                    await self.store.set_vm_state(vmid, "missing")
                    self.log.warn(
                        "vm {vmid} missing: domain {domain} is gone from PM {pmid}",
                        vmid=vmid,
                        domain=rec.domain,
                        pmid=pmid,
                    )
            elif rec.state == "missing":
                await self.store.set_vm_state(vmid, "active")
                self.log.info("vm {vmid} found again on PM {pmid}", vmid=vmid, pmid=pmid)
        return missing

    # -- live settings ------------------------------------------------------------------

    async def live(self) -> tuple[IAllocationPolicy, dict[str, float]]:
        """
        The policy and overcommit ratios in force now (see L{current}).
        """
        return self.current()

    def current(self) -> tuple[IAllocationPolicy, dict[str, float]]:
        """
        The policy and overcommit ratios in force now, as the live settings in Redis say
        (the admin port of any daemon sharing it changes them), read from the model.
        """
        stored = self.state.settings
        name = stored.get("policy") or self.ini_settings["policy"]
        if name != self._policy_asked:
            self._policy_asked = name
            try:
                self._policy = policy_named(name, self.policy_options)
            except (UnknownPolicy, ValueError) as e:
                # Set by a daemon that knows a policy this one does not: keep ours.
                self.log.warn(
                    "policy {name!r} unusable here, keeping {ours}: {e}",
                    name=name,
                    ours=self._policy.name,
                    e=e,
                )
        ratios = {}
        for r in RESOURCES:
            key = f"{r}_ratio"
            try:
                ratios[r] = float(stored.get(key) or self.ini_settings[key])
            except ValueError:
                ratios[r] = float(self.ini_settings[key])
        return self._policy, ratios

    # -- reading (from the model: no Redis round trip) -----------------------------

    def _ready(self) -> FleetState:
        """
        The read model, if it is following Redis now: before its first snapshot, and
        from a lost change stream until a fresh snapshot, reads fail as they would with
        Redis down, rather than answer what may be stale.
        """
        if not self.state.ready:
            raise StoreUnavailable("the read model has no snapshot of the fleet yet")
        if not self.feed.connected:
            raise StoreUnavailable("the read model lost Redis' change stream; resyncing")
        return self.state

    def connected_pmids(self) -> list[int]:
        """
        Every PM this daemon keeps connected: the pm_file's, in its order, then the retired.
        """
        return [*self.state.pm_ids, *(pmid for pmid, _ in self.retired)]

    def vm(self, vmid: int) -> dict[str, object] | None:
        """
        The seed API's view of VM C{vmid}, or C{None} if there is no such VM.
        """
        return views.vm_answer(self._ready(), vmid)

    def pm(self, pmid: int) -> dict[str, object] | None:
        """
        The seed API's view of PM C{pmid}, or C{None} if the fleet never had it.
        """
        return views.pm_answer(self._ready(), pmid, self.current()[1])

    def pm_vmids(self, pmid: int) -> list[int] | None:
        """
        The VMs on PM C{pmid}, or C{None} if the fleet never had it.
        """
        return views.pm_vmids(self._ready(), pmid)

    def pm_ids(self) -> list[int]:
        return list(self._ready().pm_ids)

    def flavors(self) -> list[Flavor]:
        return list(self._ready().flavors)

    def images_list(self):
        return list(self._ready().images)

    def view(self) -> dict:
        """
        The whole fleet (C{/v1/fleet}).
        """
        policy, ratios = self.current()
        return views.fleet(self._ready(), policy.name, ratios)

    # -- acting -----------------------------------------------------------------------------

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
            self.metrics.placement_failed(kind)
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
        if not name:
            raise Refused("name is empty", "bad_request")
        state = self._ready()
        flavor = state.flavor(instance_type)
        if flavor is None:
            raise Refused(f"no instance_type {instance_type}", "bad_request")
        image = state.image(image_id)
        if image is None:
            raise Refused(f"no image {image_id}", "bad_request")
        source = await self._local_source(image.source)
        request = Request(flavor, image_id, name)
        policy, ratios = self.current()
        facts["policy"] = policy.name
        op = secrets.token_hex(6)
        record = {
            "owner": self.daemon_id,
            "op": op,
            "name": name,
            "instance_type": flavor.tid,
            "image_id": image_id,
        }
        prefix = fleet_prefix(self.fleet_id)
        refused: dict[int, room.Refusal] = {}
        vmid = 0
        attempts = 0
        self._in_flight.add(op)
        try:
            for pmid in placement.ranked(policy, request, state, ratios):
                if attempts >= self.max_attempts:
                    break
                try:
                    vmid, why = await self.store.claim(
                        vmid, pmid, flavor.resources, ratios, record, prefix
                    )
                except StoreUnavailable:
                    # The claim may or may not have been written: undo it when Redis is back.
                    if vmid:
                        self._undo_later(vmid, pmid)
                    else:
                        self._lost_claims[op] = pmid
                    raise
                if why is not None:
                    # Another request took the room since the model saw it: the next PM.
                    refused[pmid] = why
                    continue
                attempts += 1
                try:
                    kind = await self._build(vmid, name, flavor, image_id, pmid, source)
                except HypervisorError as e:
                    refused[pmid] = room.Refusal(room.FAILED, str(e))
                    self.log.warn("vm {vmid} on PM {pmid} failed: {e}", vmid=vmid, pmid=pmid, e=e)
                    await self._release(vmid, pmid)
                    continue
                if not await self._commit(vmid, pmid):
                    raise Refused(
                        "state store unavailable; nothing was created", "store_unavailable"
                    )
                facts.update(vmid=vmid, pmid=pmid, kind=kind)
                return vmid
        finally:
            self._in_flight.discard(op)
        for pmid, why in placement.refusals(state, request, ratios).items():
            refused.setdefault(pmid, why)
        raise Refused(
            f"no PM could take it: {_summary(refused)}", placement_reason(refused.values())
        )

    async def _local_source(self, line: str) -> str:
        """
        A local file with the image of source line C{line}: the file itself, or a copy
        fetched once over ssh into the image cache.
        """
        try:
            [entry] = parse_image_text(line)
        except (InputFileError, ValueError) as e:
            raise Refused(f"image source {line!r} unusable: {e}", "image_unavailable") from None
        if not entry.is_remote or self.is_local(entry.host):
            return entry.path
        if self.images is None:
            raise Refused(
                f"image source {line!r} is remote and this daemon has no image cache",
                "image_unavailable",
            )
        try:
            return await self.images.local_path(entry)
        except ImageUnavailable as e:
            raise Refused(str(e), "image_unavailable") from None

    async def _build(self, vmid, name, flavor, image_id, pmid, source) -> str:
        lock = self._base_locks.setdefault((pmid, image_id), defer.DeferredLock())
        # One upload per image and PM, however many creates wait for it.
        base_path, base_format = await lock.run(
            self.hypervisors.call,
            pmid,
            "ensure_base",
            self.fleet_id,
            image_id,
            source,
        )
        spec = VMSpec(self.fleet_id, vmid, name, flavor, image_id, pmid, "auto", "")
        return await self.hypervisors.call(
            pmid,
            "create_vm",
            spec,
            base_path,
            base_format,
            # Answered as failed already: a domain that starts anyway must not stay.
            undo=lambda _kind: self.hypervisors.call(
                pmid, "destroy_vm", spec.domain_name, spec.volume_name
            ),
        )

    async def _commit(self, vmid: int, pmid: int) -> bool:
        try:
            if await self.store.commit(vmid, pmid):
                return True
        except StoreUnavailable as e:
            # The commit may have been written or not: either way the user is told no,
            # so the VM must go, now on the PM and in Redis once it answers.
            self.log.warn("vm {vmid}: not recorded, undoing: {e}", vmid=vmid, e=e)
            self._undo_later(vmid, pmid)
            await self._undo(vmid, pmid)
            return False
        await self._release(vmid, pmid)
        return False

    async def _release(self, vmid: int, pmid: int) -> None:
        """
        Give back a claim whose create failed, now or (Redis down) as soon as it answers.
        """
        try:
            await self.store.release(vmid)
        except StoreUnavailable:
            self._undo_later(vmid, pmid)

    def _undo_later(self, vmid: int, pmid: int) -> None:
        self._undoing[vmid] = pmid

    async def retry_undos(self) -> list[int]:
        """
        Undo the creates whose outcome Redis could not record: remove their domain and
        disk (if any) from the PM, then their claim and record from Redis. What cannot be
        done yet stays for the next try.

        @return: the vmids fully undone now.
        """
        if self._lost_claims and self.state.ready and self.feed.connected:
            # The model follows Redis again: a lost claim is there now, or never landed.
            lost = {
                rec.op: vmid
                for vmid, rec in self.state.vms.items()
                if rec.state == "creating" and rec.op in self._lost_claims
            }
            for op, pmid in list(self._lost_claims.items()):
                del self._lost_claims[op]
                if op in lost:
                    self._undo_later(lost[op], pmid)
        return [vmid for vmid, pmid in list(self._undoing.items()) if await self._undo(vmid, pmid)]

    async def _undo(self, vmid: int, pmid: int) -> bool:
        """
        One step of L{retry_undos}, for VM C{vmid} on PM C{pmid}: whether it is now undone.
        """
        try:
            await self.hypervisors.call(
                pmid,
                "destroy_vm",
                domain_name(self.fleet_id, vmid),
                volume_name(self.fleet_id, vmid),
            )
            await self.store.release(vmid)
        except (HypervisorError, StoreUnavailable):
            return False
        # Another round (the periodic one, say) may have finished it meanwhile.
        if self._undoing.pop(vmid, None) is None:
            return False
        self.log.info("vm {vmid}: failed create undone on PM {pmid}", vmid=vmid, pmid=pmid)
        return True

    async def reconcile(self) -> dict[str, list[int]]:
        """
        Make Redis and the hypervisors agree again after a crash:

          - a claim left C{creating} by a daemon that died (its lease expired) is rolled
            back: its domain and disk, if they were made, are removed, its room freed;
          - a domain of this fleet that a PM runs but Redis does not know (Redis lost
            its last second, say) is adopted back with its own ids;
          - a VM whose domain is gone is marked missing (L{check_domains}).

        PMs that cannot be reached now are left for the next round.

        @return: the vmids rolled back and adopted.
        """
        report: dict[str, list[int]] = {"rolled_back": [], "adopted": []}
        owners: dict[str, bool] = {}
        for vmid, rec in sorted(self.state.vms.items()):
            if rec.state != "creating":
                continue
            owner = rec.owner
            if owner == self.daemon_id and rec.op in self._in_flight:
                continue
            if owner not in owners:
                owners[owner] = bool(owner) and await self.store.alive(owner)
            if owners[owner] and owner != self.daemon_id:
                continue
            pmid = rec.pmid
            if not self.hypervisors.is_up(pmid):
                continue
            try:
                await self.hypervisors.call(pmid, "destroy_vm", rec.domain, rec.volume)
            except HypervisorError as e:
                self.log.warn("vm {vmid}: stale claim not rolled back yet: {e}", vmid=vmid, e=e)
                continue
            if await self.store.release(vmid):
                report["rolled_back"].append(vmid)
                self.log.warn(
                    "vm {vmid}: rolled back a claim on PM {pmid} left by daemon"
                    " {owner}, which died mid-create",
                    vmid=vmid,
                    pmid=pmid,
                    owner=owner or "(unknown)",
                )
        for pmid in self.connected_pmids():
            if not self.hypervisors.is_up(pmid):
                continue
            try:
                found = await self.hypervisors.call(pmid, "fleet_domains", self.fleet_id)
                for meta in found:
                    if await self._adopt(pmid, meta):
                        report["adopted"].append(meta["vmid"])
                # This fleet's domains are the only ones its VMs can have: no second listing.
                await self.check_domains(pmid, {meta["domain"] for meta in found})
            except HypervisorError as e:
                self.log.warn("PM {pmid}: not reconciled yet: {e}", pmid=pmid, e=e)
        self.last_reconcile = report
        return report

    async def _adopt(self, pmid: int, meta: dict) -> bool:
        vmid, flavor = meta.get("vmid"), meta.get("flavor")
        if not vmid or flavor is None or meta.get("pmid") != pmid:
            return False
        adopted = await self.store.adopt(
            vmid,
            pmid,
            flavor,
            {
                "name": meta.get("name", ""),
                "image_id": meta.get("image_id", 0),
                "domain": domain_name(self.fleet_id, vmid),
                "volume": volume_name(self.fleet_id, vmid),
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

    async def destroy(self, vmid: int) -> None:
        """
        Stop and undefine VM C{vmid}'s domain, delete its disk, free its room.

        A VM whose domain has vanished from its PM is destroyed all the same.

        Each destroy logs one event, C{vm_destroy}: its outcome (C{destroyed} or
        C{refused}), vmid, PM, the reason of a refusal, and its C{duration} in seconds.

        @raise Refused: no such VM, or its PM cannot be reached (nothing changed).
        """
        started = time.monotonic()
        where = {"pmid": 0}
        try:
            await self._destroy(vmid, where)
        except Exception as e:
            self.log.info(
                "vm {vmid} not destroyed in {duration:.3f} s: {reason}",
                event="vm_destroy",
                outcome="refused",
                vmid=vmid,
                reason=str(e) or e.__class__.__name__,
                duration=time.monotonic() - started,
                **where,
            )
            raise
        self.log.info(
            "vm {vmid} destroyed on PM {pmid} in {duration:.3f} s",
            event="vm_destroy",
            outcome="destroyed",
            vmid=vmid,
            duration=time.monotonic() - started,
            **where,
        )

    async def _destroy(self, vmid: int, where: dict) -> None:
        rec = self._ready().vms.get(vmid)
        if rec is None or rec.state not in VISIBLE:
            raise Refused(f"no VM {vmid}")
        pmid = where["pmid"] = rec.pmid
        try:
            await self.hypervisors.call(pmid, "destroy_vm", rec.domain, rec.volume)
        except HypervisorError as e:
            raise Refused(f"PM {pmid}: {e}") from None
        if not await self.store.release(vmid):
            raise Refused(f"VM {vmid} was destroyed by another request")


def _summary(refused: dict[int, room.Refusal], shown: int = 20) -> str:
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
