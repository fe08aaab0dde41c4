"""
Block volumes on the C{rbd} backend over the API, against real Redis and in-memory PMs
that reach a fake Ceph cluster (L{vorchd.hypervisor.fakevolumes.CLUSTERS}); the same on
real libvirtd PMs and a real one-node Ceph is in tests/system/test_volumes_rbd.py.

An RBD volume is made in Ceph at create, attached as a network disk wherever its guest
runs (nothing copied, no PM's disk claimed), and deleted from Ceph at destroy. Ceph
unreachable: each call answers its failure value at once, nothing changed.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

from twisted.trial.unittest import TestCase

from tests.clients import LoopbackClient
from tests.harness import Daemon, fake_hosts, shared_redis, tmpdir, unique_prefix, write_fleet
from vorchd.hypervisor import fakevolumes
from vorchd.volume_xml import data_volume_name

SIZES = [(2, 4096), (8, 8192)]


class RbdVolumeAPITests(TestCase):
    async def setUp(self):
        directory = tmpdir(self)
        uris = write_fleet(directory, SIZES)
        self.pool = f"p{uuid.uuid4().hex[:8]}"
        (directory / "keyring").write_text("[client.admin]\n\tkey = a2V5\n")
        self.daemon = Daemon(
            directory / "daemon",
            shared_redis().url,
            unique_prefix(),
            uris,
            hosts=fake_hosts(uris, SIZES),
            volumes={
                "backend": "rbd",
                "rbd_monitors": "fake-mon:6789",
                "rbd_pool": self.pool,
                "rbd_keyring": directory / "keyring",
            },
        )
        await self.daemon.start()
        self.addCleanup(self.daemon.stop)
        self.client = LoopbackClient(self.daemon)
        self.addCleanup(self.client.close)
        self.where = ((("fake-mon", 6789),), self.pool)
        self.addCleanup(fakevolumes.UNREACHABLE.pop, self.where, None)
        self.addCleanup(fakevolumes.ROOM.pop, self.where, None)

    async def json(self, path: str):
        return (await self.client.call(path)).json

    def images(self) -> dict[str, int]:
        return dict(fakevolumes.CLUSTERS.get(self.where, {}))

    def rbd_disks(self, vmid: int) -> list[str]:
        vm = self.daemon.fleet.state.vms[vmid]
        host = self.daemon.fleet.hypervisors.host(vm.pmid)
        with host.lock:
            root = ET.fromstring(host.domains[vm.domain].xml)
        return [
            d.find("source").get("name")
            for d in root.findall("devices/disk")
            if d.get("type") == "network"
        ]

    async def free_disk(self) -> list[int]:
        return [(await self.json(f"/pm/query?pmid={p}"))["free"]["disk"] for p in (1, 2)]

    async def test_rbd_volume_life(self):
        """
        Created, the image is in Ceph; attached, the guest has a network disk of it and no
        PM's free disk changes; attached to a guest on the other PM, nothing is copied;
        destroyed, the image is gone from Ceph.
        """
        vm_a = (await self.json("/vm/create?name=a&instance_type=1&image_id=1"))["vmid"]
        vm_b = (await self.json("/vm/create?name=b&instance_type=3&image_id=1"))["vmid"]
        free = await self.free_disk()
        vol = (await self.json("/volume/create?name=data&size=50"))["volumeid"]
        name = data_volume_name(self.daemon.fleet.fleet_id, vol)
        self.assertEqual(self.images(), {name: 50 * 1024**3})
        self.assertEqual(
            await self.json(f"/volume/attach?vmid={vm_a}&volumeid={vol}"), {"status": 1}
        )
        self.assertEqual(self.rbd_disks(vm_a), [f"{self.pool}/{name}"])
        self.assertEqual(
            await self.json(f"/volume/query?volumeid={vol}"),
            {"volumeid": vol, "name": "data", "size": 50, "status": "attached", "vmid": vm_a},
        )
        self.assertEqual(await self.free_disk(), free)
        self.assertEqual(await self.json(f"/volume/detach?volumeid={vol}"), {"status": 1})
        self.assertEqual(self.rbd_disks(vm_a), [])
        self.assertEqual(
            await self.json(f"/volume/attach?vmid={vm_b}&volumeid={vol}"), {"status": 1}
        )
        self.assertEqual(self.rbd_disks(vm_b), [f"{self.pool}/{name}"])
        self.assertEqual(await self.free_disk(), free)
        self.assertEqual(await self.json(f"/volume/destroy?volumeid={vol}"), {"status": 0})
        # vm/destroy detaches it first; it survives in Ceph.
        self.assertEqual(await self.json(f"/vm/destroy?vmid={vm_b}"), {"status": 1})
        self.assertEqual((await self.json(f"/volume/query?volumeid={vol}"))["status"], "available")
        self.assertIn(name, self.images())
        self.assertEqual(await self.json(f"/volume/destroy?volumeid={vol}"), {"status": 1})
        self.assertEqual(self.images(), {})

    async def test_beyond_ceph_room(self):
        """
        A volume bigger than what the Ceph pool has available answers {"volumeid": 0}
        with the reason, and nothing is made or recorded; one that fits is made.
        """
        fakevolumes.ROOM[self.where] = (10 * 1024**3, 4 * 1024**3)
        answer = await self.client.call("/volume/create?name=big&size=5")
        self.assertEqual(answer.json, {"volumeid": 0})
        self.assertEqual(
            answer.reason,
            f"Ceph pool {self.pool} has 4.0 GiB available (of 10.0 GiB),"
            " less than the 5 GiB asked for",
        )
        self.assertEqual(self.images(), {})
        self.assertEqual(await self.json("/volume/list"), {"volumes": []})
        vol = (await self.json("/volume/create?name=fits&size=4"))["volumeid"]
        self.assertGreater(vol, 0)
        self.assertEqual(list(self.images()), [data_volume_name(self.daemon.fleet.fleet_id, vol)])

    async def test_ceph_unreachable(self):
        """
        With Ceph unreachable, create, attach and destroy answer their failure values
        with a reason, and nothing changes; once it is back they work.
        """
        vmid = (await self.json("/vm/create?name=a&instance_type=1&image_id=1"))["vmid"]
        vol = (await self.json("/volume/create?name=data&size=1"))["volumeid"]
        fakevolumes.UNREACHABLE[self.where] = "cannot reach the monitors"
        answer = await self.client.call("/volume/create?name=x&size=1")
        self.assertEqual(answer.json, {"volumeid": 0})
        self.assertIn("monitors", answer.reason)
        answer = await self.client.call(f"/volume/attach?vmid={vmid}&volumeid={vol}")
        self.assertEqual(answer.json, {"status": 0})
        self.assertIn("monitors", answer.reason)
        self.assertEqual(await self.json(f"/volume/destroy?volumeid={vol}"), {"status": 0})
        listed = await self.json("/volume/list")
        self.assertEqual([v["volumeid"] for v in listed["volumes"]], [vol])
        self.assertEqual(listed["volumes"][0]["status"], "available")
        self.assertEqual(self.rbd_disks(vmid), [])
        del fakevolumes.UNREACHABLE[self.where]
        self.assertEqual(
            await self.json(f"/volume/attach?vmid={vmid}&volumeid={vol}"), {"status": 1}
        )
        # The failed create was refused before anything was recorded: it spent no id.
        later = (await self.json("/volume/create?name=y&size=1"))["volumeid"]
        self.assertEqual(later, vol + 1)
