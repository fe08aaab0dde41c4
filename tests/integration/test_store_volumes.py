"""
Block volumes in the state store, real Redis and the in-memory fake alike: ids never
reused, an attach that claims the volume's size on the VM's PM in the same step as it
checks, moves that keep the old PM's claim until done, undos that give everything back,
and change entries that bring a read model to exactly what a fresh snapshot says.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.harness import shared_redis, unique_prefix
from vorchd.config import RedisAddress
from vorchd.model import Resources
from vorchd.state.model import FleetState
from vorchd.store import Store
from vorchd.store.fake import FakeStore

SMALL = Resources(1, 512, 1)
ONE = {"cpu": 1.0, "ram": 1.0, "disk": 1.0}


class VolumeStoreTestsMixin:
    """
    The volume operations every store passes.
    """

    def make_store(self):
        raise NotImplementedError

    async def setUp(self):
        self.store = self.make_store()
        self.addCleanup(self.store.disconnect)
        self.pm_a, self.pm_b = await self.store.register_pms([("a", "test:///a"), ("b", "u")])
        await self.store.set_capacity(self.pm_a, Resources(4, 4096, 20))
        await self.store.set_capacity(self.pm_b, Resources(4, 4096, 20))
        # A read model following the store from the start, as a daemon's does.
        self.model = FleetState()
        self.model.load(await self.store.snapshot())

    async def follow(self) -> FleetState:
        """
        Apply every change entry written since the last call to C{self.model}, and check
        it then equals a model loaded from a fresh snapshot.
        """
        entries = await self.store.read_changes(self.model.last_id, 10)
        for entry_id, fields in entries:
            self.model.apply(int(fields["s"]), fields["o"], fields["d"])
            self.model.last_id = entry_id
        fresh = FleetState()
        fresh.load(await self.store.snapshot())
        self.assertEqual(self.model.volumes, fresh.volumes)
        for pmid, pm in fresh.pms.items():
            self.assertEqual(self.model.pms[pmid].used, pm.used, pmid)
        return self.model

    async def vm_on(self, pmid: int) -> int:
        vmid, why = await self.store.claim(0, pmid, SMALL, ONE, {"name": "x"})
        self.assertIsNone(why)
        self.assertTrue(await self.store.commit(vmid, pmid))
        return vmid

    async def disk_used(self, pmid: int) -> int:
        return int((await self.store.pm_record(pmid)).get("used_disk", 0))

    async def test_ids_never_reused(self):
        """
        A destroyed volume's id is never given again; a new volume is available, on no PM.
        """
        first = await self.store.create_volume("data", 5, "local")
        self.assertIsNone(await self.store.begin_volume(first, "destroying", "d1"))
        self.assertTrue(await self.store.end_volume(first, "d1", True))
        second = await self.store.create_volume("data", 5, "local")
        self.assertGreater(second, first)
        self.assertIsNone(await self.store.volume(first))
        self.assertEqual(await self.store.volume_ids(), [second])
        rec = await self.store.volume(second)
        self.assertEqual((rec["status"], rec["pmid"], rec["vmid"]), ("available", "0", "0"))
        model = await self.follow()
        self.assertEqual(set(model.volumes), {second})

    async def test_attach_claims_size_on_the_vms_pm(self):
        """
        An attach claims the volume's size on its VM's PM at once; done, the volume is
        attached there; a second attach, or one to a VM that is not active, is refused.
        """
        vmid = await self.vm_on(self.pm_a)
        vol = await self.store.create_volume("data", 5, "local")
        source, target, why = await self.store.attach_volume(vol, vmid, 1.0, "a1")
        self.assertEqual((source, target, why), (0, self.pm_a, None))
        self.assertEqual(await self.disk_used(self.pm_a), SMALL.disk + 5)
        self.assertEqual((await self.follow()).volumes[vol].status, "attaching")
        _, _, busy = await self.store.attach_volume(vol, vmid, 1.0, "a2")
        self.assertEqual(busy.kind, "busy")
        self.assertTrue(await self.store.end_volume(vol, "a1", True))
        self.assertFalse(await self.store.end_volume(vol, "a1", True))
        rec = await self.store.volume(vol)
        self.assertEqual((rec["status"], rec["vmid"], rec["pmid"]), ("attached", str(vmid), "1"))
        _, _, busy = await self.store.attach_volume(vol, vmid, 1.0, "a3")
        self.assertEqual(busy.kind, "busy")
        other = await self.store.create_volume("more", 1, "local")
        _, _, why = await self.store.attach_volume(other, 999, 1.0, "a4")
        self.assertEqual(why.kind, "no_vm")
        _, _, why = await self.store.attach_volume(12345, vmid, 1.0, "a5")
        self.assertEqual(why.kind, "no_volume")
        self.assertEqual(await self.disk_used(self.pm_a), SMALL.disk + 5)
        model = await self.follow()
        self.assertTrue(model.volumes[vol].attached)
        self.assertEqual(model.pms[self.pm_a].used.disk, SMALL.disk + 5)

    async def test_attach_refused_without_room(self):
        """
        A volume bigger than the free disk of its VM's PM is refused, nothing claimed.
        """
        vmid = await self.vm_on(self.pm_a)
        vol = await self.store.create_volume("big", 20, "local")
        _, _, why = await self.store.attach_volume(vol, vmid, 1.0, "a1")
        self.assertEqual(why.kind, "no_room")
        self.assertEqual(await self.disk_used(self.pm_a), SMALL.disk)
        self.assertEqual((await self.store.volume(vol))["status"], "available")
        # Under a disk ratio of 2 it fits.
        _, _, why = await self.store.attach_volume(vol, vmid, 2.0, "a2")
        self.assertIsNone(why)

    async def test_undone_attach_gives_room_back(self):
        """
        An attach undone leaves the volume available and nothing claimed.
        """
        vmid = await self.vm_on(self.pm_a)
        vol = await self.store.create_volume("data", 5, "local")
        await self.store.attach_volume(vol, vmid, 1.0, "a1")
        self.assertTrue(await self.store.end_volume(vol, "a1", False))
        rec = await self.store.volume(vol)
        self.assertEqual((rec["status"], rec["vmid"], rec["pmid"]), ("available", "0", "0"))
        self.assertEqual(await self.disk_used(self.pm_a), SMALL.disk)
        await self.follow()

    async def test_move_keeps_old_claim_until_done(self):
        """
        Detached, then attached to a VM on another PM: both PMs hold its size until the
        attach is done, then only the new one; destroyed, its room is all given back.
        """
        vm_a, vm_b = await self.vm_on(self.pm_a), await self.vm_on(self.pm_b)
        vol = await self.store.create_volume("data", 5, "local")
        await self.store.attach_volume(vol, vm_a, 1.0, "a1")
        await self.store.end_volume(vol, "a1", True)
        busy = await self.store.begin_volume(vol, "destroying", "x")
        self.assertEqual(busy.kind, "busy")
        self.assertIsNone(await self.store.begin_volume(vol, "detaching", "d1"))
        self.assertTrue(await self.store.end_volume(vol, "d1", True))
        self.assertEqual((await self.store.volume(vol))["pmid"], str(self.pm_a))
        self.assertEqual(await self.disk_used(self.pm_a), SMALL.disk + 5)
        source, target, why = await self.store.attach_volume(vol, vm_b, 1.0, "a2")
        self.assertEqual((source, target, why), (self.pm_a, self.pm_b, None))
        self.assertEqual(await self.disk_used(self.pm_a), SMALL.disk + 5)
        self.assertEqual(await self.disk_used(self.pm_b), SMALL.disk + 5)
        await self.follow()
        self.assertTrue(await self.store.end_volume(vol, "a2", True))
        self.assertEqual(await self.disk_used(self.pm_a), SMALL.disk)
        self.assertEqual(await self.disk_used(self.pm_b), SMALL.disk + 5)
        await self.store.begin_volume(vol, "detaching", "d2")
        await self.store.end_volume(vol, "d2", True)
        self.assertIsNone(await self.store.begin_volume(vol, "destroying", "x2"))
        self.assertTrue(await self.store.end_volume(vol, "x2", True))
        self.assertEqual(await self.disk_used(self.pm_b), SMALL.disk)
        model = await self.follow()
        self.assertEqual(model.volumes, {})
        self.assertEqual(model.pms[self.pm_b].used.disk, SMALL.disk)

    async def test_rbd_claims_no_pm_disk(self):
        """
        An rbd volume lives in Ceph: attached, detached and attached on another PM, it
        never claims a PM's disk and its pmid stays 0.
        """
        vm_a, vm_b = await self.vm_on(self.pm_a), await self.vm_on(self.pm_b)
        vol = await self.store.create_volume("ceph", 15, "rbd")
        for vmid, op in ((vm_a, "a1"), (vm_b, "a2")):
            source, target, why = await self.store.attach_volume(vol, vmid, 1.0, op, "d")
            self.assertEqual((source, target, why), (0, 0, None))
            self.assertTrue(await self.store.end_volume(vol, op, True))
            rec = await self.store.volume(vol)
            self.assertEqual(
                (rec["status"], rec["vmid"], rec["pmid"]), ("attached", str(vmid), "0")
            )
            self.assertEqual(await self.disk_used(self.pm_a), SMALL.disk)
            self.assertEqual(await self.disk_used(self.pm_b), SMALL.disk)
            self.assertIsNone(await self.store.begin_volume(vol, "detaching", op + "d", "d"))
            self.assertTrue(await self.store.end_volume(vol, op + "d", True))
        await self.follow()


class RedisVolumeStoreTests(VolumeStoreTestsMixin, TestCase):
    """
    The real store, on a real redis-server.
    """

    def make_store(self):
        redis = shared_redis()
        return Store.connect(RedisAddress("127.0.0.1", redis.port, 0), unique_prefix())


class FakeVolumeStoreTests(VolumeStoreTestsMixin, TestCase):
    """
    The in-memory fake, held to the same tests.
    """

    def make_store(self):
        return FakeStore(unique_prefix())
