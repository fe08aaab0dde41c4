"""
Block volumes on the C{local} backend, on real libvirtd PMs with real guests: created,
attached to a running guest (a SCSI disk of its live domain, which QEMU writes to),
detached, attached to a guest on another PM (the volume moves there, what was written
through the first attach with it), destroyed; each PM's disk accounting after each step;
and the failures a user can cause. What the PMs hold is read with virsh and inside each
PM's namespace, independently of vorchd's own code.
"""

from __future__ import annotations

from tests.system.test_running import POOL, FleetCase

# What the guest's first attach writes at the start of the volume, through QEMU.
PATTERN = 0x5A
PATTERN_BYTES = 4096


class LocalVolumeTests(FleetCase):
    """
    Two PMs, a guest on each.
    """

    pms = 2

    async def two_guests(self) -> tuple[int, int]:
        """
        A running guest on PM 1 (all of its CPUs: the next goes to PM 2) and one on PM 2.
        """
        await self.start_daemon()
        vm_a, vm_b = await self.create(5), await self.create(1)
        self.assertEqual((await self.json(f"/vm/query?vmid={vm_a}"))["pmid"], 1)
        self.assertEqual((await self.json(f"/vm/query?vmid={vm_b}"))["pmid"], 2)
        await self.booted(1, vm_a)
        await self.booted(2, vm_b)
        return vm_a, vm_b

    def volume_file(self, volumeid: int) -> str:
        return f"vorchd-{self.daemon.fleet.fleet_id}-volume-{volumeid}.raw"

    async def create_volume(self, size: int) -> int:
        answer = await self.call(f"/volume/create?name=data&size={size}")
        volumeid = answer.json["volumeid"]
        self.assertGreater(volumeid, 0, answer)
        return volumeid

    async def blklist(self, pmid: int, vmid: int) -> dict[str, str]:
        """
        The live domain's disks, as virsh domblklist lists them: target -> source.
        """
        out = await self.virsh(pmid, "domblklist", self.domain(vmid))
        return dict(line.split(None, 1) for line in out.splitlines() if line.strip())

    async def free_disk(self, pmid: int) -> int:
        return (await self.pm_query(pmid))["free"]["disk"]

    async def head_bytes(self, pmid: int, volumeid: int) -> bytes:
        """
        The first bytes of the volume's file in PM C{pmid}'s pool, read inside the PM.
        """
        path = f"{POOL}/{self.volume_file(volumeid)}"
        done = self.pm[pmid].nsenter(
            "dd", f"if={path}", f"bs={PATTERN_BYTES}", "count=1", text=False
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    async def test_local_volume_life(self):
        """
        Attached to a running guest, a volume is a SCSI disk of its live domain that QEMU
        writes to, and its size leaves PM 1's free disk; detached, the disk leaves the
        domain and the volume stays on PM 1; attached to the guest on PM 2, it moves there
        with what QEMU wrote, and its room moves with it; destroyed, it is gone and every
        PM has its room back.
        """
        vm_a, vm_b = await self.two_guests()
        free = {p: await self.free_disk(p) for p in (1, 2)}
        vol = await self.create_volume(1)
        self.assertEqual(
            await self.json(f"/volume/query?volumeid={vol}"),
            {"volumeid": vol, "name": "data", "size": 1, "status": "available"},
        )
        self.assertEqual({p: await self.free_disk(p) for p in (1, 2)}, free)

        await self.ok(f"/volume/attach?vmid={vm_a}&volumeid={vol}")
        self.assertEqual(
            await self.json(f"/volume/query?volumeid={vol}"),
            {"volumeid": vol, "name": "data", "size": 1, "status": "attached", "vmid": vm_a},
        )
        disks = await self.blklist(1, vm_a)
        self.assertEqual(disks.get("sda"), f"{POOL}/{self.volume_file(vol)}", disks)
        self.assertIn(self.volume_file(vol), await self.volumes(1))
        self.assertEqual(await self.free_disk(1), free[1] - 1)
        self.assertEqual(await self.free_disk(2), free[2])
        # QEMU writes to it: through the guest's SCSI disk, by QEMU's own I/O.
        out = await self.virsh(
            1,
            "qemu-monitor-command",
            self.domain(vm_a),
            "--hmp",
            f'qemu-io -d scsi0-0-0-0 "write -P {PATTERN:#x} 0 {PATTERN_BYTES}"',
        )
        self.assertNotIn("rror", out)
        self.assertEqual(await self.head_bytes(1, vol), bytes([PATTERN]) * PATTERN_BYTES)
        self.assertEqual(await self.domstate(1, vm_a), "running")

        await self.ok(f"/volume/detach?volumeid={vol}")
        self.assertNotIn("sda", await self.blklist(1, vm_a))
        self.assertEqual((await self.json(f"/volume/query?volumeid={vol}"))["status"], "available")
        self.assertIn(self.volume_file(vol), await self.volumes(1))
        self.assertEqual(await self.free_disk(1), free[1] - 1)
        self.assertEqual(await self.domstate(1, vm_a), "running")

        await self.ok(f"/volume/attach?vmid={vm_b}&volumeid={vol}")
        disks = await self.blklist(2, vm_b)
        self.assertEqual(disks.get("sda"), f"{POOL}/{self.volume_file(vol)}", disks)
        self.assertNotIn(self.volume_file(vol), await self.volumes(1))
        self.assertIn(self.volume_file(vol), await self.volumes(2))
        self.assertEqual(await self.head_bytes(2, vol), bytes([PATTERN]) * PATTERN_BYTES)
        self.assertEqual(await self.free_disk(1), free[1])
        self.assertEqual(await self.free_disk(2), free[2] - 1)

        await self.ok(f"/volume/detach?volumeid={vol}")
        self.assertNotIn("sda", await self.blklist(2, vm_b))
        await self.ok(f"/volume/destroy?volumeid={vol}")
        self.assertNotIn(self.volume_file(vol), await self.volumes(2))
        self.assertEqual({p: await self.free_disk(p) for p in (1, 2)}, free)
        answer = await self.call(f"/volume/query?volumeid={vol}")
        self.assertEqual(answer.json, {"error": f"volumeid : {vol} does not exist"})

    async def test_failures_and_vm_destroy(self):
        """
        Attach to an unknown VM, a second attach, destroy of an attached volume, a size of
        0 or beyond every PM's room: refused, nothing changed on the PMs. Destroying the
        VM detaches its volume first: the volume survives, available, in PM 1's pool.
        """
        vm_a, vm_b = await self.two_guests()
        vol = await self.create_volume(1)
        await self.refused(f"/volume/attach?vmid={vm_b + 1000}&volumeid={vol}")
        await self.ok(f"/volume/attach?vmid={vm_a}&volumeid={vol}")
        free = {p: await self.free_disk(p) for p in (1, 2)}
        await self.refused(f"/volume/attach?vmid={vm_a}&volumeid={vol}")
        await self.refused(f"/volume/attach?vmid={vm_b}&volumeid={vol}")
        await self.refused(f"/volume/destroy?volumeid={vol}")
        self.assertEqual(list(await self.blklist(2, vm_b)), ["vda"])
        self.assertIn("sda", await self.blklist(1, vm_a))
        for size in (0, 10**6):
            answer = await self.call(f"/volume/create?name=x&size={size}")
            self.assertEqual(answer.json, {"volumeid": 0}, size)
            self.assertTrue(answer.reason, size)
        self.assertEqual({p: await self.free_disk(p) for p in (1, 2)}, free)
        self.assertEqual(len((await self.json("/volume/list"))["volumes"]), 1)

        await self.ok(f"/vm/destroy?vmid={vm_a}")
        self.assertEqual(await self.domstate(1, vm_a), "missing")
        self.assertEqual(
            await self.json(f"/volume/query?volumeid={vol}"),
            {"volumeid": vol, "name": "data", "size": 1, "status": "available"},
        )
        self.assertIn(self.volume_file(vol), await self.volumes(1))
        await self.ok(f"/volume/attach?vmid={vm_b}&volumeid={vol}")
        self.assertIn("sda", await self.blklist(2, vm_b))
