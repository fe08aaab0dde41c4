"""
Block volumes over the API (the course's phase 2): /volume/create, query, destroy, attach,
detach and list, against real Redis and a fleet of libvirt test-driver PMs, in memory and
over a real port, with the answers of the issue's table exactly.

What the calls did is checked where a user would notice it: the guest's definition (a
SCSI disk of the volume, read through the daemon's own libvirt connection), the pool of the
PM holding the volume, and pm/query's disk accounting after each step.
"""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.clients import InMemoryClient, LoopbackClient
from tests.harness import TEST_POOL_GIB, Daemon, shared_redis, tmpdir, unique_prefix, write_fleet
from vorchd.hypervisor.fake import FakeHypervisor
from vorchd.volume_xml import data_volume_name

# Flavor 1 goes to PM 1 (first fit); flavor 3 (4 CPUs) fits on PM 2 only.
SIZES = [(2, 4096), (8, 8192)]
VOLUME_KEYS = {"volumeid", "name", "size", "status"}


def q(**args) -> str:
    return urllib.parse.urlencode(args)


class VolumeAPITestsMixin:
    """
    The volume calls; subclasses say how the API is reached.
    """

    client_type: type

    async def setUp(self):
        self.dir = tmpdir(self)
        redis, prefix = shared_redis(), unique_prefix()
        uris = write_fleet(self.dir, SIZES)
        self.daemon = Daemon(self.dir / "daemon", redis.url, prefix, uris)
        await self.daemon.start()
        self.addCleanup(self.daemon.stop)
        self.client = self.client_type(self.daemon)
        self.addCleanup(self.client.close)

    async def get(self, path: str, method: str = "GET"):
        answer = await self.client.call(path, method)
        self.assertEqual(answer.status, 200, answer)
        return answer

    async def json(self, path: str):
        return (await self.get(path)).json

    async def create_vm(self, instance_type: int) -> int:
        q_ = q(name="vm", instance_type=instance_type, image_id=1)
        vmid = (await self.json(f"/vm/create?{q_}"))["vmid"]
        self.assertGreater(vmid, 0)
        return vmid

    async def create_volume(self, name: str = "data", size: int = 10) -> int:
        answer = await self.get("/volume/create?" + q(name=name, size=size))
        self.assertIsNone(answer.reason, answer)
        self.assertEqual(set(answer.json), {"volumeid"})
        self.assertGreater(answer.json["volumeid"], 0)
        return answer.json["volumeid"]

    async def done(self, path: str) -> None:
        answer = await self.get(path)
        self.assertEqual((answer.json, answer.reason), ({"status": 1}, None), path)

    async def refused(self, path: str) -> str:
        """
        C{path} answers {"status": 0} with a reason, and changes no answer.
        """
        before = await self.everything()
        answer = await self.get(path)
        self.assertEqual(answer.json, {"status": 0}, path)
        self.assertTrue(answer.reason, path)
        self.assertEqual(await self.everything(), before, path)
        return answer.reason

    async def everything(self) -> dict:
        out = {"/volume/list": await self.json("/volume/list")}
        for pmid in (1, 2):
            out[pmid] = await self.json(f"/pm/query?pmid={pmid}")
        return out

    async def free_disk(self, pmid: int) -> int:
        return (await self.json(f"/pm/query?pmid={pmid}"))["free"]["disk"]

    async def scsi_disks(self, vmid: int) -> list[str]:
        """
        The files of the SCSI disks in VM C{vmid}'s definition on its PM.
        """
        pm = (await self.json(f"/vm/query?vmid={vmid}"))["pmid"]
        host = self.daemon.fleet.hypervisors.host(pm)
        name = self.daemon.fleet.state.vms[vmid].domain

        def read():
            if isinstance(host, FakeHypervisor):
                return host.domains[name].xml
            import libvirt

            dom = host.conn.lookupByName(name)
            return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

        root = ET.fromstring(await deferToThread(read))
        return [
            d.find("source").get("file")
            for d in root.findall("devices/disk")
            if d.find("target").get("bus") == "scsi"
        ]

    async def pool(self, pmid: int) -> set[str]:
        return await self.daemon.fleet.hypervisors.on(pmid).volume_names()

    def volume_name(self, volumeid: int) -> str:
        return data_volume_name(self.daemon.fleet.fleet_id, volumeid)

    async def test_life_of_a_volume(self):
        """
        Created, it is available and on no PM; attached, the guest has a SCSI disk of it,
        made in its PM's pool, and its size leaves that PM's free disk; detached, the disk
        leaves the guest and the volume stays; attached to a VM on another PM, it moves
        there with its claim; destroyed, it is gone from the pool and its room given back.
        """
        vm_a, vm_b = await self.create_vm(1), await self.create_vm(3)
        self.assertEqual((await self.json(f"/vm/query?vmid={vm_b}"))["pmid"], 2)
        free_a, free_b = await self.free_disk(1), await self.free_disk(2)
        vol = await self.create_volume("my data <&> ü", 10)
        self.assertEqual(
            await self.json(f"/volume/query?volumeid={vol}"),
            {"volumeid": vol, "name": "my data <&> ü", "size": 10, "status": "available"},
        )
        self.assertEqual((await self.free_disk(1), await self.free_disk(2)), (free_a, free_b))
        name = self.volume_name(vol)

        await self.done(f"/volume/attach?vmid={vm_a}&volumeid={vol}")
        self.assertEqual(
            await self.json(f"/volume/query?volumeid={vol}"),
            {
                "volumeid": vol,
                "name": "my data <&> ü",
                "size": 10,
                "status": "attached",
                "vmid": vm_a,
            },
        )
        [disk] = await self.scsi_disks(vm_a)
        self.assertTrue(disk.endswith(name), disk)
        self.assertIn(name, await self.pool(1))
        self.assertEqual((await self.free_disk(1), await self.free_disk(2)), (free_a - 10, free_b))

        await self.done(f"/volume/detach?volumeid={vol}")
        self.assertEqual((await self.json(f"/volume/query?volumeid={vol}"))["status"], "available")
        self.assertEqual(await self.scsi_disks(vm_a), [])
        self.assertIn(name, await self.pool(1))
        self.assertEqual((await self.free_disk(1), await self.free_disk(2)), (free_a - 10, free_b))

        await self.done(f"/volume/attach?vmid={vm_b}&volumeid={vol}")
        self.assertEqual((await self.json(f"/volume/query?volumeid={vol}"))["vmid"], vm_b)
        self.assertEqual(len(await self.scsi_disks(vm_b)), 1)
        self.assertNotIn(name, await self.pool(1))
        self.assertIn(name, await self.pool(2))
        self.assertEqual((await self.free_disk(1), await self.free_disk(2)), (free_a, free_b - 10))

        await self.done(f"/volume/detach?volumeid={vol}")
        await self.done(f"/volume/destroy?volumeid={vol}")
        self.assertNotIn(name, await self.pool(2))
        self.assertEqual((await self.free_disk(1), await self.free_disk(2)), (free_a, free_b))
        answer = await self.get(f"/volume/query?volumeid={vol}")
        self.assertEqual(answer.json, {"error": f"volumeid : {vol} does not exist"})
        self.assertTrue(answer.reason)
        # Ids are never reused.
        self.assertGreater(await self.create_volume(), vol)

    async def test_list_and_fleet(self):
        """
        volume/list answers every volume as volume/query does, by id; /v1/fleet too.
        """
        self.assertEqual(await self.json("/volume/list"), {"volumes": []})
        vmid = await self.create_vm(1)
        first, second = await self.create_volume("a", 1), await self.create_volume("b", 2)
        await self.done(f"/volume/attach?vmid={vmid}&volumeid={second}")
        expected = [await self.json(f"/volume/query?volumeid={v}") for v in (first, second)]
        self.assertEqual(await self.json("/volume/list"), {"volumes": expected})
        self.assertEqual((await self.json("/v1/fleet"))["volumes"], expected)
        self.assertEqual(expected[1]["vmid"], vmid)
        self.assertEqual(set(expected[0]), VOLUME_KEYS)

    async def test_vm_destroy_detaches_its_volumes(self):
        """
        Destroying a VM with a volume attached detaches it first: the volume survives,
        available, its data and claim on the PM where it was, and attaches again.
        """
        vmid = await self.create_vm(1)
        vol = await self.create_volume(size=5)
        free = await self.free_disk(1)
        await self.done(f"/volume/attach?vmid={vmid}&volumeid={vol}")
        await self.done(f"/vm/destroy?vmid={vmid}")
        self.assertEqual((await self.json(f"/volume/query?volumeid={vol}"))["status"], "available")
        self.assertIn(self.volume_name(vol), await self.pool(1))
        self.assertEqual(await self.free_disk(1), free - 5 + 1)
        other = await self.create_vm(1)
        await self.done(f"/volume/attach?vmid={other}&volumeid={vol}")

    async def test_failures(self):
        """
        Attach to an unknown VM, a second attach, destroy of an attached volume, detach of
        an available one, size 0 or beyond every PM's room, and malformed arguments: each
        answers its failure value with a reason and changes nothing.
        """
        vmid = await self.create_vm(1)
        vol = await self.create_volume(size=1)
        await self.refused(f"/volume/attach?vmid=999999&volumeid={vol}")
        await self.refused(f"/volume/attach?vmid={vmid}&volumeid=999999")
        await self.refused(f"/volume/detach?volumeid={vol}")
        await self.done(f"/volume/attach?vmid={vmid}&volumeid={vol}")
        await self.refused(f"/volume/attach?vmid={vmid}&volumeid={vol}")
        other = await self.create_vm(1)
        await self.refused(f"/volume/attach?vmid={other}&volumeid={vol}")
        await self.refused(f"/volume/destroy?volumeid={vol}")
        await self.refused(f"/vm/migrate?vmid={vmid}&pmid=2")
        for bad in ("", "abc", "0", "-1", "1.0", "99999999999999999999"):
            await self.refused(f"/volume/attach?vmid={vmid}&volumeid={bad}")
            await self.refused(f"/volume/destroy?volumeid={bad}")
            await self.refused(f"/volume/detach?volumeid={bad}")
            answer = await self.get(f"/volume/query?volumeid={urllib.parse.quote(bad)}")
            self.assertEqual(answer.json, {"error": f"volumeid : {bad} does not exist"}, bad)
            self.assertTrue(answer.reason)
        before = await self.everything()
        for query in (
            q(name="x", size=0),
            q(name="x", size=-3),
            q(name="x", size=TEST_POOL_GIB + 1),
            q(name="x", size="ten"),
            q(name="", size=1),
            q(size=1),
            "name=x&name=y&size=1",
        ):
            answer = await self.get("/volume/create?" + query)
            self.assertEqual(answer.json, {"volumeid": 0}, query)
            self.assertTrue(answer.reason, query)
        self.assertEqual(await self.everything(), before)
        # A HEAD of a call that changes state does nothing.
        head = await self.get(f"/volume/detach?volumeid={vol}", "HEAD")
        self.assertEqual(head.raw, b"")
        self.assertEqual((await self.json(f"/volume/query?volumeid={vol}"))["status"], "attached")

    async def test_changes_left_by_a_dead_daemon_are_settled(self):
        """
        A daemon that died mid-attach, mid-detach or mid-destroy leaves the volume busy;
        the reconciler ends each change as the hypervisors allow: the attach undone (the
        copy made for it deleted, the claim given back), the detach and destroy done.
        """
        fleet, store = self.daemon.fleet, self.daemon.fleet.store
        vmid = await self.create_vm(1)
        free = await self.free_disk(1)
        vol = await self.create_volume(size=5)
        # Killed mid-attach: claimed, its volume made on the PM, the guest not told.
        _, _, why = await store.attach_volume(vol, vmid, 1.0, "op-a", "dead-daemon")
        self.assertIsNone(why)
        await fleet.hypervisors.on(1).make_volume(self.volume_name(vol), 5)
        self.assertEqual(await self.free_disk(1), free - 5)
        await self.refused(f"/volume/destroy?volumeid={vol}")
        report = await fleet.reconcile()
        self.assertEqual(report["volumes"], [vol])
        self.assertEqual((await self.json(f"/volume/query?volumeid={vol}"))["status"], "available")
        self.assertEqual(await self.free_disk(1), free)
        self.assertNotIn(self.volume_name(vol), await self.pool(1))
        # A change a live daemon is making is left alone.
        await self.done(f"/volume/attach?vmid={vmid}&volumeid={vol}")
        await store.heartbeat("live-daemon", 60)
        self.assertIsNone(await store.begin_volume(vol, "detaching", "op-d", "live-daemon"))
        self.assertEqual((await fleet.reconcile())["volumes"], [])
        self.assertTrue(await store.end_volume(vol, "op-d", False))
        # Killed mid-detach: the disk is taken out of the guest, the volume available.
        self.assertIsNone(await store.begin_volume(vol, "detaching", "op-d2", "dead-daemon"))
        self.assertEqual((await fleet.reconcile())["volumes"], [vol])
        self.assertEqual(await self.scsi_disks(vmid), [])
        self.assertEqual((await self.json(f"/volume/query?volumeid={vol}"))["status"], "available")
        self.assertEqual(await self.free_disk(1), free - 5)
        # Killed mid-destroy: gone, its room given back.
        self.assertIsNone(await store.begin_volume(vol, "destroying", "op-x", "dead-daemon"))
        self.assertEqual((await fleet.reconcile())["volumes"], [vol])
        self.assertEqual(await self.json("/volume/list"), {"volumes": []})
        self.assertNotIn(self.volume_name(vol), await self.pool(1))
        self.assertEqual(await self.free_disk(1), free)


class InMemoryVolumeAPITests(VolumeAPITestsMixin, TestCase):
    """
    Through StubTreq over the Klein resource.
    """

    client_type = InMemoryClient


class LoopbackVolumeAPITests(VolumeAPITestsMixin, TestCase):
    """
    Over a real TCP port on 127.0.0.1.
    """

    client_type = LoopbackClient
