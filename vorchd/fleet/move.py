"""
Changes of a running VM that need room: a new flavor on its PM (L{Mover.resize}) and a
new PM (L{Mover.migrate}, live when it runs; and L{Mover.evacuate}, every VM off a PM).

Each is a change of the store (L{vorchd.room.Change}): the room it needs is held at the
authority before anything changes on a hypervisor, and the change is made the VM's only
once the hypervisor has done it (or undone, its room given back, when it failed). A
daemon that dies in between leaves the change to the reconciler (L{Mover.settle}), which
finds the guest wherever it runs.
"""

from __future__ import annotations

import itertools
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable

from attrs import evolve
from twisted.logger import Logger

from vorchd import placement, room
from vorchd.domain import VM
from vorchd.fleet.create import Creator, summary
from vorchd.fleet.parts import Parts, Refused
from vorchd.fleet.running import not_changing, visible_vm
from vorchd.fleet.settings import LiveSettings
from vorchd.hypervisor.interface import CallTimedOut, HypervisorError
from vorchd.images import ImageUnavailable
from vorchd.model import Flavor
from vorchd.policies import Request
from vorchd.state.model import VMRecord
from vorchd.store import StoreUnavailable

#: Hypervisor states of a guest that moves live (a running QEMU); others move cold.
LIVE_STATES = ("running", "paused", "blocked")


class Mover:
    """
    Resizes and moves VMs.

    @ivar in_flight: the tokens of the changes (and creates) this daemon is making now:
        the reconciler leaves their holds alone.
    @ivar evacuating: the PMs being evacuated now.
    """

    log = Logger()

    def __init__(self, parts: Parts, settings: LiveSettings, creator: Creator):
        self.parts = parts
        self.settings = settings
        self.creator = creator
        self.in_flight = creator.in_flight
        self.evacuating: set[int] = set()
        # Called with the VM, the PM it is about to move to and whether live: its volumes
        # made reachable there, or Refused (vorchd.fleet.volumes.Volumes.before_move).
        self.before_move: Callable[[VMRecord, int, bool], Awaitable[None]] | None = None

    # -- resize ------------------------------------------------------------------------

    async def resize(self, vmid: int, instance_type: int) -> None:
        """
        Give VM C{vmid} flavor C{instance_type} on its PM: the growth is held first (no
        room: nothing changes), then the domain is redefined with the new CPUs and
        memory and its disk grown (a running guest is shut down and started again).

        @raise Refused: no such VM or flavor, a smaller disk (disks are never shrunk), no
            room on its PM, or the hypervisor failed (the VM keeps its flavor).
        """
        parts = self.parts
        state = parts.ready()
        rec = visible_vm(parts, vmid)
        flavor = state.flavor(instance_type)
        if flavor is None:
            raise Refused(f"no instance_type {instance_type}")
        if flavor.disk < rec.resources.disk:
            raise Refused(
                f"VM {vmid} has a {rec.resources.disk} GiB disk; instance_type"
                f" {instance_type}'s {flavor.disk} GiB would shrink it (disks only grow)"
            )
        if flavor.tid == rec.instance_type and flavor.resources == rec.resources:
            return
        _policy, ratios = self.settings.current(state)
        pmid = rec.pmid
        change = room.Change.resize(pmid, rec.resources, flavor, _token(), parts.daemon_id)
        started = time.monotonic()
        op = change.op
        # A resize that outlives its timeout may still happen at the PM: its change stays
        # in flight (held) until the call's thread ends, and the reconciler then settles
        # it by the flavor the domain has (L{settle}), so the record follows the domain.
        late: list[bool] = []
        self.in_flight.add(op)
        try:
            why = await parts.store.begin_change(vmid, change, ratios)
            if why is not None:
                raise Refused(f"VM {vmid} not resized on PM {pmid}: {why}")
            vm = _vm(parts.fleet_id, rec, flavor, pmid)
            call = parts.stopping(pmid, finished=lambda: late and self.in_flight.discard(op))
            try:
                await call.resize_vm(vm, parts.host_settings.stop_timeout)
            except CallTimedOut as e:
                late.append(True)
                raise Refused(
                    f"VM {vmid}: {e}; the resize may still finish there: its room stays"
                    " held until it does, then the VM has the flavor its domain has"
                ) from None
            except HypervisorError as e:
                await self._end(vmid, op, False)
                raise Refused(f"VM {vmid} not resized: {e}") from None
            await self._end(vmid, op, True)
        finally:
            if not late:
                self.in_flight.discard(op)
        self.log.info(
            "vm {vmid} on PM {pmid} resized from flavor {old} to {tid} in {duration:.3f} s",
            event="vm_resize",
            vmid=vmid,
            pmid=pmid,
            old=rec.instance_type,
            tid=flavor.tid,
            duration=time.monotonic() - started,
        )

    # -- migrate -----------------------------------------------------------------------

    async def migrate(self, vmid: int, pmid: int | None = None) -> int:
        """
        Move VM C{vmid} to PM C{pmid}, or to the PMs the active policy ranks first (at
        most C{max_attempts} tried) when C{pmid} is None. A running guest moves live,
        its disk copied incrementally (no copy when the two PMs share their pool); a
        stopped one moves cold.

        The target's room is held before anything moves and the source's given back
        only once the guest is on the target: a failed move leaves the guest where it
        was, running if it ran, and nothing held on the target.

        @return: the PM it is on now.
        @raise Refused: it could not be moved (why, per PM tried).
        """
        parts = self.parts
        state = parts.ready()
        rec = visible_vm(parts, vmid)
        source = rec.pmid
        not_changing(rec)
        if pmid == source:
            raise Refused(f"VM {vmid} is on PM {pmid} already")
        if pmid is not None and pmid not in state.pm_ids:
            raise Refused(f"no PM {pmid}")
        if not parts.hypervisors.is_up(source):
            raise Refused(f"VM {vmid}: its PM {source} is down")
        policy, ratios = self.settings.current(state)
        flavor = _flavor(rec)
        if pmid is None:
            request = Request(flavor, rec.image_id, rec.name)
            ranked = (p for p in placement.ranked(policy, request, state, ratios) if p != source)
            targets = list(itertools.islice(ranked, parts.max_attempts))
        else:
            targets = [pmid]
        try:
            where = await parts.hypervisors.on(source).vm_state(rec.domain)
        except HypervisorError as e:
            raise Refused(f"VM {vmid}: {e}") from None
        if where == "missing":
            raise Refused(f"VM {vmid}: its domain is gone from PM {source}")
        refused: dict[int, room.Refusal] = {}
        for target in targets:
            if not parts.hypervisors.is_up(target):
                refused[target] = room.Refusal(room.DOWN)
                continue
            change = room.Change.move(target, flavor, _token(), parts.daemon_id)
            started = time.monotonic()
            self.in_flight.add(change.op)
            try:
                why = await parts.store.begin_change(vmid, change, ratios)
                if why is not None and why.kind in (room.NO_VM, room.BUSY):
                    raise Refused(f"VM {vmid} not moved: {why}")
                if why is not None:
                    refused[target] = why
                    continue
                try:
                    if self.before_move is not None:
                        await self.before_move(rec, target, where in LIVE_STATES)
                    await self._move(rec, target, where in LIVE_STATES)
                except Unsettled as e:
                    # The change stays on the VM, with its hold: the reconciler settles it
                    # by where the guest is once libvirt is done.
                    self.log.warn(
                        "vm {vmid}: move to PM {target}: {e}", vmid=vmid, target=target, e=e
                    )
                    raise Refused(f"VM {vmid}: move to PM {target} not confirmed: {e}") from None
                except (HypervisorError, Refused) as e:
                    await self._end(vmid, change.op, False)
                    refused[target] = room.Refusal(room.FAILED, str(e))
                    self.log.warn(
                        "vm {vmid}: not moved to PM {target}: {e}", vmid=vmid, target=target, e=e
                    )
                    continue
                await self._end(vmid, change.op, True)
            finally:
                self.in_flight.discard(change.op)
            self.log.info(
                "vm {vmid} moved {how} from PM {source} to PM {target} in {duration:.3f} s",
                event="vm_migrate",
                vmid=vmid,
                source=source,
                target=target,
                how="live" if where in LIVE_STATES else "cold",
                duration=time.monotonic() - started,
            )
            return target
        raise Refused(f"VM {vmid} not moved: {summary(refused)}")

    async def _move(self, rec: VMRecord, target: int, live: bool) -> None:
        """
        Move C{rec}'s guest to PM C{target} on the hypervisors; on failure, leave it where
        it was and nothing of it on the target.
        """
        parts = self.parts
        hypervisors, fleet, source = parts.hypervisors, parts.fleet_id, rec.pmid
        flavor = _flavor(rec)
        vm = _vm(fleet, rec, flavor, target)
        await hypervisors.on(source).pool_marks(fleet, source)
        shared = source in await hypervisors.on(target).pool_marks(fleet, target)
        if not shared:
            image = parts.ready().image(rec.image_id)
            if image is None:
                raise Refused(f"image {rec.image_id} is no longer in the image_file")
            try:
                path = await self.creator.sources.local_path(image.source)
            except ImageUnavailable as e:
                raise Refused(str(e)) from None
            base_path, base_format = await self.creator.bases.ensure(
                fleet, target, rec.image_id, path
            )
            await hypervisors.on(target).prepare_incoming(vm, base_path, base_format)
        slow = parts.host_settings.migrate_timeout
        try:
            if live:
                uri = parts.ready().pms[target].uri
                await hypervisors.on(source, timeout=slow).migrate_vm(vm, uri, shared)
            else:
                if not shared:
                    await self._copy_disk(source, target, vm.volume_name)
                await hypervisors.on(target).define_vm(vm)
                await hypervisors.on(source).destroy_vm(rec.domain, None if shared else rec.volume)
        except HypervisorError as e:
            where = await self._where(rec, target)
            if where == (False, True):
                # It failed to say so (a timeout, say), but the guest is on the target.
                return
            if where[1] and live:
                # On the target too: libvirt may still be moving it, past our timeout.
                raise Unsettled(f"{e}; where it ends up is settled later") from None
            await self.creator.undo.remove_leftover(
                target, rec.domain, None if shared else rec.volume
            )
            raise

    async def _copy_disk(self, source: int, target: int, volume: str) -> None:
        """
        Copy a stopped VM's disk from PM C{source} to the volume prepared on C{target},
        through a file on this machine.
        """
        hypervisors, slow = self.parts.hypervisors, self.parts.host_settings.migrate_timeout
        # File work off the reactor thread too: freeing a disk-sized file takes a while.
        path = await hypervisors.blocking(_scratch_file)
        try:
            await hypervisors.on(source, timeout=slow).export_disk(volume, path)
            await hypervisors.on(target, timeout=slow).import_disk(volume, path)
        finally:
            await hypervisors.blocking(os.unlink, path)

    async def _where(self, rec: VMRecord, target: int) -> tuple[bool, bool]:
        """
        Whether C{rec}'s guest is on its own PM, and whether it is on PM C{target}
        (where a PM cannot say, as it was: on its own PM, not on the target).
        """
        hypervisors = self.parts.hypervisors
        try:
            here = await hypervisors.on(rec.pmid).vm_state(rec.domain) != "missing"
        except HypervisorError:
            here = True
        try:
            there = await hypervisors.on(target).vm_state(rec.domain) != "missing"
        except HypervisorError:
            there = False
        return here, there

    async def _end(self, vmid: int, op: str, done: bool) -> None:
        """
        End change C{op}; when Redis cannot be told now, the reconciler settles it later
        from what the hypervisors say (L{settle}).
        """
        try:
            await self.parts.store.end_change(vmid, op, done)
        except StoreUnavailable as e:
            self.log.warn(
                "vm {vmid}: change not recorded as {how} yet (the reconciler will): {e}",
                vmid=vmid,
                how="done" if done else "undone",
                e=e,
            )

    # -- evacuate ----------------------------------------------------------------------

    async def evacuate(
        self, pmid: int, progress: Callable[[int, int | None, str], object] | None = None
    ) -> dict[str, dict[int, object]]:
        """
        Close PM C{pmid} to new VMs and move its VMs away one by one, each to where the
        active policy puts it. Run again, it moves what is left.

        @param progress: told C{(vmid, pmid or None, reason)} after each VM; if it
            answers C{False} (whoever asked is gone), the evacuation stops there.
        @return: C{{"moved": {vmid: pmid}, "failed": {vmid: reason}}}.
        @raise Refused: no such PM, or it is being evacuated already.
        """
        parts = self.parts
        if pmid in self.evacuating:
            raise Refused(f"PM {pmid} is being evacuated already")
        if not await parts.store.set_drained(pmid, True):
            raise Refused(f"no PM {pmid}")
        report: dict[str, dict[int, object]] = {"moved": {}, "failed": {}}
        self.evacuating.add(pmid)
        try:
            pm = parts.ready().pms[pmid]
            for vmid in sorted(pm.vmids):
                rec = parts.ready().vms.get(vmid)
                if rec is None or rec.pmid != pmid:
                    continue
                try:
                    report["moved"][vmid] = target = await self.migrate(vmid)
                    reason = ""
                except Refused as e:
                    report["failed"][vmid] = reason = str(e)
                    target = None
                if progress is not None and progress(vmid, target, reason) is False:
                    self.log.info("PM {pmid}: evacuation interrupted", pmid=pmid)
                    break
        finally:
            self.evacuating.discard(pmid)
        self.log.info(
            "PM {pmid} evacuated: {moved} VMs moved, {failed} not",
            event="pm_evacuate",
            pmid=pmid,
            moved=len(report["moved"]),
            failed=len(report["failed"]),
        )
        return report


class Unsettled(HypervisorError):
    """
    A move failed to say it was done, and the guest is on the target PM as well as (or
    instead of) its own: which one keeps it is for the reconciler to see.
    """


def _flavor(rec: VMRecord) -> Flavor:
    """
    The flavor VM C{rec} has: its instance type with the room it was given (kept when the
    flavor_file changes the type).
    """
    r = rec.resources
    return Flavor(rec.instance_type, r.cpu, r.ram, r.disk)


def _token() -> str:
    return secrets.token_hex(6)


def _vm(fleet: str, rec: VMRecord, flavor: Flavor, pmid: int) -> VM:
    # Its stored MAC address goes with it: the NIC keeps it wherever the domain is defined.
    vm = VM(fleet, rec.vmid, rec.name, flavor, rec.image_id, pmid)
    return vm if not rec.mac else evolve(vm, mac=rec.mac)


def _scratch_file() -> str:
    """
    The path of a new empty file of this machine's temporary directory, for a disk.
    """
    fd, path = tempfile.mkstemp(prefix="vorchd-disk-")
    os.close(fd)
    return path
