"""
Block volumes on the C{rbd} backend, on real libvirtd PMs with real guests and a
throwaway one-node Ceph cluster (L{tests.ceph_cluster}, started once per test run):
created (an RBD image in the pool, read with the rbd CLI), attached to a running guest (a
SCSI network disk of its live domain, which QEMU writes to), detached, attached to a guest
on another PM (what QEMU wrote read back from Ceph, nothing copied, no PM's disk claimed),
destroyed; and a cluster that cannot be reached answered at once.
"""

from __future__ import annotations

from twisted.internet.threads import deferToThread

from tests.ceph_cluster import shared_ceph
from tests.system.test_running import FleetCase

PATTERN, PATTERN_BYTES = 0x3C, 4096


class RbdVolumeTests(FleetCase):
    """
    Two PMs, a guest on each, and Ceph.
    """

    pms = 2

    async def setUp(self):
        await super().setUp()
        self.ceph = await deferToThread(shared_ceph)

    async def start_rbd_daemon(self, **volumes) -> None:
        await self.start_daemon(
            volumes={
                "backend": "rbd",
                "rbd_monitors": self.ceph.monitor,
                "rbd_pool": self.ceph.pool,
                "rbd_keyring": self.ceph.keyring,
                "rbd_client_conf": self.ceph.client_conf,
                **volumes,
            }
        )

    async def two_guests(self, **volumes) -> tuple[int, int]:
        await self.start_rbd_daemon(**volumes)
        vm_a, vm_b = await self.create(5), await self.create(1)
        self.assertEqual((await self.json(f"/vm/query?vmid={vm_b}"))["pmid"], 2)
        await self.booted(1, vm_a)
        await self.booted(2, vm_b)
        return vm_a, vm_b

    def image(self, volumeid: int) -> str:
        return f"vorchd-{self.daemon.fleet.fleet_id}-volume-{volumeid}.raw"

    async def images(self) -> set[str]:
        done = await deferToThread(self.ceph.rbd, "ls")
        return set(done.stdout.split())

    async def head(self, volumeid: int) -> bytes:
        path = self.ceph.dir / f"export-{volumeid}"

        def read() -> bytes:
            path.unlink(missing_ok=True)
            self.ceph.rbd("export", self.image(volumeid), str(path))
            with open(path, "rb") as f:
                return f.read(PATTERN_BYTES)

        return await deferToThread(read)

    async def blklist(self, pmid: int, vmid: int) -> dict[str, str]:
        out = await self.virsh(pmid, "domblklist", self.domain(vmid))
        return dict(line.split(None, 1) for line in out.splitlines() if line.strip())

    async def free_disk(self) -> list[int]:
        return [(await self.pm_query(p))["free"]["disk"] for p in (1, 2)]

    async def test_rbd_volume_life(self):
        """
        The image is made at create; attached, the guest's live domain has a network disk
        of it that QEMU writes to; detached and attached to the guest on the other PM,
        what QEMU wrote is there (nothing copied); no PM's free disk changes; destroyed,
        the image is gone from Ceph.
        """
        vm_a, vm_b = await self.two_guests()
        free = await self.free_disk()
        answer = await self.call("/volume/create?name=data&size=1")
        vol = answer.json["volumeid"]
        self.assertGreater(vol, 0, answer)
        self.assertIn(self.image(vol), await self.images())
        await self.ok(f"/volume/attach?vmid={vm_a}&volumeid={vol}")
        disks = await self.blklist(1, vm_a)
        self.assertEqual(disks.get("sda"), f"{self.ceph.pool}/{self.image(vol)}", disks)
        out = await self.virsh(
            1,
            "qemu-monitor-command",
            self.domain(vm_a),
            "--hmp",
            f'qemu-io -d scsi0-0-0-0 "write -P {PATTERN:#x} 0 {PATTERN_BYTES}"',
        )
        self.assertNotIn("rror", out)
        self.assertEqual(await self.head(vol), bytes([PATTERN]) * PATTERN_BYTES)
        self.assertEqual(await self.free_disk(), free)
        await self.ok(f"/volume/detach?volumeid={vol}")
        self.assertNotIn("sda", await self.blklist(1, vm_a))
        await self.ok(f"/volume/attach?vmid={vm_b}&volumeid={vol}")
        disks = await self.blklist(2, vm_b)
        self.assertEqual(disks.get("sda"), f"{self.ceph.pool}/{self.image(vol)}", disks)
        self.assertEqual(await self.free_disk(), free)
        self.assertEqual(await self.head(vol), bytes([PATTERN]) * PATTERN_BYTES)
        self.assertEqual(await self.domstate(2, vm_b), "running")
        await self.refused(f"/volume/destroy?volumeid={vol}")
        await self.ok(f"/volume/detach?volumeid={vol}")
        await self.ok(f"/volume/destroy?volumeid={vol}")
        self.assertNotIn(self.image(vol), await self.images())
        self.assertEqual(await self.free_disk(), free)

    async def test_volume_beyond_ceph_room(self):
        """
        A volume bigger than what Ceph has available (its OSD holds 2 GiB) answers
        {"volumeid": 0} with a reason naming the pool's room; no image is made and no
        volume recorded. One that fits is made.
        """
        await self.start_rbd_daemon()
        _capacity, available = await deferToThread(self.ceph.room)
        self.assertLess(available, 3 * 1024**3)
        before = await self.images()
        answer = await self.call("/volume/create?name=big&size=3")
        self.assertEqual(answer.json, {"volumeid": 0})
        self.assertIn(f"Ceph pool {self.ceph.pool} has", answer.reason)
        self.assertIn("less than the 3 GiB asked for", answer.reason)
        self.assertEqual(await self.images(), before)
        self.assertEqual(await self.json("/volume/list"), {"volumes": []})
        vol = (await self.call("/volume/create?name=small&size=1")).json["volumeid"]
        self.assertGreater(vol, 0)
        self.assertIn(self.image(vol), await self.images())
        await self.ok(f"/volume/destroy?volumeid={vol}")

    async def qemu_write(self, pmid: int, vmid: int, pattern: int, offset: int) -> None:
        out = await self.virsh(
            pmid,
            "qemu-monitor-command",
            self.domain(vmid),
            "--hmp",
            f'qemu-io -d scsi0-0-0-0 "write -P {pattern:#x} {offset} {PATTERN_BYTES}"',
        )
        self.assertNotIn("rror", out)

    async def test_live_migration_with_rbd_volume(self):
        """
        A running guest with an RBD volume attached moves live to the other PM: its disk
        of the image goes with it (nothing copied), QEMU on the new PM writes to it, and
        what was written on both PMs is in Ceph; a detach then works where it runs.
        """
        vm_a, vm_b = await self.two_guests()
        # Room on PM 2 for the guest of PM 1 (which has all of a PM's CPUs).
        await self.ok(f"/vm/destroy?vmid={vm_b}")
        vol = (await self.call("/volume/create?name=data&size=1")).json["volumeid"]
        await self.ok(f"/volume/attach?vmid={vm_a}&volumeid={vol}")
        await self.qemu_write(1, vm_a, PATTERN, 0)
        await self.ok(f"/vm/migrate?vmid={vm_a}&pmid=2")
        self.assertEqual(await self.domstate(2, vm_a), "running")
        self.assertEqual(await self.domstate(1, vm_a), "missing")
        disks = await self.blklist(2, vm_a)
        self.assertEqual(disks.get("sda"), f"{self.ceph.pool}/{self.image(vol)}", disks)
        await self.qemu_write(2, vm_a, PATTERN + 1, PATTERN_BYTES)
        path = self.ceph.dir / f"export-{vol}"

        def read() -> bytes:
            path.unlink(missing_ok=True)
            self.ceph.rbd("export", self.image(vol), str(path))
            with open(path, "rb") as f:
                return f.read(2 * PATTERN_BYTES)

        data = await deferToThread(read)
        self.assertEqual(
            data, bytes([PATTERN]) * PATTERN_BYTES + bytes([PATTERN + 1]) * PATTERN_BYTES
        )
        await self.ok(f"/volume/detach?volumeid={vol}")
        self.assertNotIn("sda", await self.blklist(2, vm_a))
        await self.ok(f"/volume/destroy?volumeid={vol}")

    async def test_ceph_dies_under_an_attached_volume(self):
        """
        The cluster stops while a running guest has an RBD volume attached: a detach
        answers (QEMU's waits are bounded by the client conf the disk carries), the daemon
        goes on answering meanwhile and after, and the guest can still be destroyed.
        """
        from tests.ceph_cluster import CephCluster
        from tests.harness import tmpdir

        directory = tmpdir(self)
        directory.chmod(0o755)  # QEMU reads the client conf in it
        own = CephCluster(directory / "ceph")
        self.addCleanup(deferToThread, own.stop)
        await deferToThread(own.start)
        self.ceph = own
        vm_a, vm_b = await self.two_guests()
        vol = (await self.call("/volume/create?name=data&size=1")).json["volumeid"]
        await self.ok(f"/volume/attach?vmid={vm_a}&volumeid={vol}")
        await deferToThread(own.stop)
        detach = self.call(f"/volume/detach?volumeid={vol}")
        self.assertEqual((await self.json(f"/vm/query?vmid={vm_b}"))["pmid"], 2)
        answer = await detach
        self.assertIn(answer.json, ({"status": 0}, {"status": 1}), answer)
        self.assertEqual((await self.json(f"/vm/info?vmid={vm_b}"))["state"], "running")
        await self.ok(f"/vm/destroy?vmid={vm_a}")
        self.assertEqual(await self.domstate(1, vm_a), "missing")
        status = (await self.json(f"/volume/query?volumeid={vol}"))["status"]
        self.assertEqual(status, "available")

    async def test_ceph_unreachable(self):
        """
        Pointed at monitors nobody answers on, a create answers {"volumeid": 0} with a
        reason within the daemon's call timeout, and the daemon goes on answering.
        """
        from tests.harness import free_port

        await self.two_guests(rbd_monitors=f"127.0.0.1:{free_port()}")
        answer = await self.call("/volume/create?name=data&size=1")
        self.assertEqual(answer.json, {"volumeid": 0})
        self.assertTrue(answer.reason)
        self.assertEqual(await self.json("/volume/list"), {"volumes": []})
        self.assertEqual((await self.pm_query(1))["pmid"], 1)
