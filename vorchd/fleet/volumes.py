"""
Block volumes (the course's phase 2). On the C{local} backend a volume is a raw volume in
the pool of the PM of the first VM it is attached to, its size claimed there like a VM's
disk; attached later to a VM on another PM, it moves there through libvirt's volume
download and upload streams (unless the two PMs share their pool), and the PM it left
gets its room back. On the C{rbd} backend it is an RBD image in Ceph, made at create
through any PM that is up, attached as a network disk wherever its guest runs: it claims
no PM's disk and never moves.

Each change is begun in the store (which checks and holds in one step), done on the
hypervisors, then ended done, or undone if the hypervisor failed: a failure leaves the
volume as it was.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time

from twisted.logger import Logger

from vorchd import room
from vorchd.fleet import volume_settle
from vorchd.fleet.parts import Parts, Refused
from vorchd.fleet.running import visible_vm
from vorchd.fleet.settings import LiveSettings
from vorchd.hypervisor.interface import HypervisorError, NoSuchVM
from vorchd.state.model import VMRecord, VolumeRecord
from vorchd.volume_xml import CephPool, data_volume_name

log = Logger()


GIB = 1 << 30


def _token() -> str:
    return secrets.token_hex(6)


class Volumes:
    """
    Create, attach, detach and destroy block volumes.
    """

    def __init__(
        self,
        parts: Parts,
        settings: LiveSettings,
        backend: str = "local",
        in_flight: set[str] | None = None,
        ceph: CephPool | None = None,
    ):
        self.parts = parts
        self.settings = settings
        self.backend = backend
        # Where rbd volumes live (the [volumes] rbd_* settings), or None.
        self.ceph = ceph
        # The tokens of the changes this daemon is making now (the reconciler leaves
        # them be).
        self.in_flight = in_flight if in_flight is not None else set()

    def _name(self, volumeid: int) -> str:
        return data_volume_name(self.parts.fleet_id or "", volumeid)

    def _ceph(self, vol: VolumeRecord) -> CephPool | None:
        """
        The Ceph pool of an rbd volume, None for a local one.

        @raise Refused: an rbd volume, and this daemon has no Ceph settings.
        """
        if vol.backend != "rbd":
            return None
        if self.ceph is None:
            raise Refused(f"volume {vol.volumeid} is in Ceph, which this daemon is not set up for")
        return self.ceph

    def _any_up(self) -> int:
        """
        A PM that is up, to reach Ceph through.

        @raise Refused: none is.
        """
        state, hypervisors = self.parts.ready(), self.parts.hypervisors
        for pmid in state.pm_ids:
            if hypervisors.is_up(pmid):
                return pmid
        raise Refused("no PM is up to reach Ceph through")

    def volume(self, volumeid: int) -> VolumeRecord:
        """
        Volume C{volumeid}'s record.

        @raise Refused: there is none.
        """
        vol = self.parts.ready().volumes.get(volumeid)
        if vol is None:
            raise Refused(f"volumeid : {volumeid} does not exist")
        return vol

    async def create(self, name: str, size: int) -> int:
        """
        Record a new volume of C{size} GiB, available: a local one is made on a PM at its
        first attach, an rbd one is made in Ceph now (through any PM that is up).

        @raise Refused: C{size} is not positive, or (local) no PM of the fleet has that
            much disk room free now, or (rbd) Ceph has less available now, or could not
            make it.
        """
        state = self.parts.ready()
        if size <= 0:
            raise Refused(f"size {size} is not positive")
        if self.backend == "rbd":
            return await self._create_rbd(name, size)
        _policy, ratios = self.settings.current(state)
        room_on = [
            room.free(pm.capacity, pm.used, ratios).disk
            for pmid, pm in state.pms.items()
            if pmid in state.pm_ids and not pm.drained
        ]
        if not any(free >= size for free in room_on):
            raise Refused(
                f"no PM has {size} GiB of disk free (the most is {max(room_on, default=0)})"
            )
        volumeid = await self.parts.store.create_volume(name, size, self.backend)
        log.info(
            "volume {volumeid} created: {size} GiB",
            event="volume_create",
            volumeid=volumeid,
            size=size,
        )
        return volumeid

    async def _create_rbd(self, name: str, size: int) -> int:
        store, pmid = self.parts.store, self._any_up()
        host = self.parts.hypervisors.on(pmid)
        # Checked before anything is recorded: a volume Ceph has no room for is refused
        # with nothing left behind (no record, no image, no id spent). Images are thin,
        # so creates at once may together promise more than is free, as in Cinder. libvirt
        # reports the cluster's raw space: with N replicas a pool holds about 1/N of it.
        try:
            capacity, available = await host.ceph_room(self.ceph)
        except HypervisorError as e:
            raise Refused(f"volume not made in Ceph: {e}") from None
        if size * GIB > available:
            raise Refused(
                f"Ceph pool {self.ceph.pool} has {available / GIB:.1f} GiB available"
                f" (of {capacity / GIB:.1f} GiB), less than the {size} GiB asked for"
            )
        volumeid = await store.create_volume(name, size, "rbd")
        try:
            await host.make_volume(self._name(volumeid), size, self.ceph)
        except HypervisorError as e:
            # Its record goes again (its id is never given to another volume).
            op = _token()
            await store.begin_volume(volumeid, "destroying", op, self.parts.daemon_id)
            await store.end_volume(volumeid, op, True)
            raise Refused(f"volume not made in Ceph: {e}") from None
        log.info(
            "volume {v} created in Ceph: {size} GiB", event="volume_create", v=volumeid, size=size
        )
        return volumeid

    async def attach(self, vmid: int, volumeid: int) -> None:
        """
        Attach volume C{volumeid} to VM C{vmid}: its data made on, or moved to, the VM's
        PM first, then a SCSI disk of the guest.

        @raise Refused: no such volume or VM, the volume attached already or busy, the VM's
            PM without room for it or down, or the hypervisor failed (nothing changed).
        """
        parts = self.parts
        self.volume(volumeid)
        rec = visible_vm(parts, vmid)
        if not parts.hypervisors.is_up(rec.pmid):
            raise Refused(f"VM {vmid}: PM {rec.pmid} is down")
        _policy, ratios = self.settings.current(parts.ready())
        op = _token()
        self.in_flight.add(op)
        try:
            await self._attach(rec, volumeid, ratios["disk"], op)
        finally:
            self.in_flight.discard(op)

    async def _attach(self, rec: VMRecord, volumeid: int, disk_ratio: float, op: str) -> None:
        parts, vmid = self.parts, rec.vmid
        source, target, why = await parts.store.attach_volume(
            volumeid, vmid, disk_ratio, op, parts.daemon_id
        )
        if why is not None:
            raise Refused(f"volume {volumeid} not attached to VM {vmid}: {why}")
        started, name = time.monotonic(), self._name(volumeid)
        moved = False
        try:
            ceph = self._ceph(self.volume(volumeid))
            if ceph is not None:
                target = rec.pmid  # where the guest runs: an RBD image moves nowhere
            elif source != target:
                moved = await self._bring(volumeid, name, source, target)
            await parts.hypervisors.on(target).attach_volume(
                rec.domain, name, f"vorchd-volume-{volumeid}", ceph
            )
        except (HypervisorError, Refused) as e:
            if moved:
                await self._forget(target, name)
            await parts.store.end_volume(volumeid, op, False)
            raise Refused(f"volume {volumeid} not attached to VM {vmid}: {e}") from None
        await parts.store.end_volume(volumeid, op, True)
        if moved and source:
            await self._forget(source, name)
        log.info(
            "volume {volumeid} attached to vm {vmid} on PM {pmid} in {duration:.3f} s",
            event="volume_attach",
            volumeid=volumeid,
            vmid=vmid,
            pmid=target,
            source=source,
            duration=time.monotonic() - started,
        )

    async def _bring(self, volumeid: int, name: str, source: int, target: int) -> bool:
        """
        Make volume C{volumeid} on PM C{target}: empty if it was nowhere yet (C{source}
        0), else a copy of its data on C{source}.

        @return: whether a volume was made on C{target} (not when the two share a pool).
        """
        parts = self.parts
        hypervisors = parts.hypervisors
        if source:
            if not hypervisors.is_up(source):
                raise Refused(f"its data is on PM {source}, which is down")
            if await self._shared(source, target):
                return False
        await hypervisors.on(target).make_volume(name, self.volume(volumeid).size)
        if not source:
            return True
        slow = parts.host_settings.migrate_timeout
        fd, path = tempfile.mkstemp(prefix="vorchd-volume-")
        os.close(fd)
        try:
            await hypervisors.on(source, timeout=slow).export_disk(name, path)
            await hypervisors.on(target, timeout=slow).import_disk(name, path)
        except HypervisorError:
            await self._forget(target, name)
            raise
        finally:
            os.unlink(path)
        return True

    async def _forget(self, pmid: int, name: str) -> None:
        try:
            await self.parts.hypervisors.on(pmid).delete_volume(name)
        except HypervisorError as e:
            log.warn("PM {pmid}: volume {name} left behind: {e}", pmid=pmid, name=name, e=e)

    async def detach(self, volumeid: int) -> None:
        """
        Detach volume C{volumeid} from its VM; its data stays on that VM's PM.

        @raise Refused: no such volume, not attached, or the hypervisor failed.
        """
        parts = self.parts
        vol = self.volume(volumeid)
        if vol.status != "attached":
            raise Refused(f"volume {volumeid} is not attached")
        vm = parts.ready().vms.get(vol.vmid)
        ceph = self._ceph(vol)
        where = vm.pmid if ceph is not None and vm is not None else vol.pmid
        if vm is not None and not parts.hypervisors.is_up(where):
            raise Refused(f"volume {volumeid}: PM {where} is down")
        op = _token()
        why = await parts.store.begin_volume(volumeid, "detaching", op, parts.daemon_id)
        if why is not None:
            raise Refused(f"volume {volumeid} not detached: {why}")
        self.in_flight.add(op)
        try:
            if vm is not None:
                host = parts.hypervisors.on(where)
                await host.detach_volume(vm.domain, self._name(volumeid), ceph)
        except NoSuchVM:
            pass  # its VM's domain is gone: nothing holds it
        except HypervisorError as e:
            await parts.store.end_volume(volumeid, op, False)
            raise Refused(f"volume {volumeid} not detached: {e}") from None
        finally:
            self.in_flight.discard(op)
        await parts.store.end_volume(volumeid, op, True)
        log.info(
            "volume {volumeid} detached from vm {vmid}",
            event="volume_detach",
            volumeid=volumeid,
            vmid=vol.vmid,
        )

    async def detach_all(self, vmid: int) -> None:
        """
        Detach every volume attached to VM C{vmid} (before it is destroyed).
        """
        state = self.parts.ready()
        for vol in [v for v in state.volumes.values() if v.vmid == vmid and v.attached]:
            await self.detach(vol.volumeid)

    async def destroy(self, volumeid: int) -> None:
        """
        Delete volume C{volumeid} and give its room back, if it is not attached.

        @raise Refused: no such volume, attached, or its PM cannot delete it now.
        """
        parts = self.parts
        vol = self.volume(volumeid)
        if vol.status != "available":
            raise Refused(f"volume {volumeid} is {vol.status}")
        ceph = self._ceph(vol)
        where = self._any_up() if ceph is not None else vol.pmid
        if where and not parts.hypervisors.is_up(where):
            raise Refused(f"volume {volumeid}: PM {where} is down")
        op = _token()
        why = await parts.store.begin_volume(volumeid, "destroying", op, parts.daemon_id)
        if why is not None:
            raise Refused(f"volume {volumeid} not destroyed: {why}")
        self.in_flight.add(op)
        try:
            if where:
                await parts.hypervisors.on(where).delete_volume(self._name(volumeid), ceph)
        except HypervisorError as e:
            await parts.store.end_volume(volumeid, op, False)
            raise Refused(f"volume {volumeid} not destroyed: {e}") from None
        finally:
            self.in_flight.discard(op)
        await parts.store.end_volume(volumeid, op, True)
        log.info("volume {volumeid} destroyed", event="volume_destroy", volumeid=volumeid)

    async def before_move(self, rec: VMRecord, target: int, live: bool) -> None:
        """
        Before VM C{rec} moves live to PM C{target}: its RBD volumes made reachable there
        (the RBD pool and secret defined where missing); the guest's live definition
        carries their disks along, and nothing of them is copied.

        @raise Refused: a local volume is attached (its data is on the PM it leaves), or
            the guest is stopped (a cold move defines the domain afresh, without them).
        """
        attached = [
            v
            for v in self.parts.ready().volumes.values()
            if v.vmid == rec.vmid and v.status != "available"
        ]
        for vol in attached:
            ceph = self._ceph(vol)
            if ceph is None or not live:
                why = "a local volume" if ceph is None else "volumes, and it is stopped"
                raise Refused(f"VM {rec.vmid} has {why} attached: detach first")
            host = self.parts.hypervisors.on(target)
            await host.make_volume(self._name(vol.volumeid), vol.size, ceph)

    # -- after a crash ----------------------------------------------------------------------

    async def settle(self, vol: VolumeRecord) -> str | None:
        """
        End volume C{vol}'s change, left under way by a daemon that died
        (L{vorchd.fleet.volume_settle.settle}).
        """
        return await volume_settle.settle(self, vol)

    async def _shared(self, source: int, target: int) -> bool:
        """
        Whether PMs C{source} and C{target} share their pool (0 is no PM: never).
        """
        if not source:
            return False
        hypervisors, fleet = self.parts.hypervisors, self.parts.fleet_id or ""
        await hypervisors.on(source).pool_marks(fleet, source)
        return source in await hypervisors.on(target).pool_marks(fleet, target)
