"""
Block volumes on the C{local} backend, on real libvirtd PMs with real guests: created,
attached to a running guest (a SCSI disk of its live domain, which QEMU writes to),
detached, attached to a guest on another PM (the volume moves there, what was written
through the first attach with it), destroyed; each PM's disk accounting after each step;
and the failures a user can cause. What the PMs hold is read with virsh and inside each
PM's namespace, independently of vorchd's own code.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request

from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.harness import (
    REPO,
    Daemon,
    free_port,
    get_json,
    require,
    shared_redis,
    tmpdir,
    twistd_command,
    unique_prefix,
    wait_answering,
)
from tests.libvirtd_fleet import LibvirtdFleet, libvirtd_fleet_unavailable
from tests.system.test_running import ALLOCATION, FLAVORS, LIBVIRT, POOL, FleetCase

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


class KillMidAttachTests(TestCase):
    """
    The real twistd process killed with SIGKILL while a local volume moves to another PM
    for an attach, then started again.
    """

    timeout = 300

    async def test_kill_during_attach(self):
        """
        After a kill -9 while an attach copies the volume to the other PM, and a restart,
        the reconciler undoes the attach: the volume is available, its data still on the
        PM it was on, the partial copy gone from the other PM's pool, each PM's free disk
        its capacity less its VMs' and volumes'; then the attach works.
        """
        require(libvirtd_fleet_unavailable())
        fleet = LibvirtdFleet(2)
        await deferToThread(fleet.start)
        self.addCleanup(deferToThread, fleet.stop)
        prefix = unique_prefix()
        daemon = Daemon(
            tmpdir(self),
            shared_redis().url,
            prefix,
            fleet.uris,
            flavors=FLAVORS,
            libvirt=LIBVIRT,
            allocation=ALLOCATION,
        )
        text = daemon.ini.read_text().replace(
            "[server]\n", "[server]\nlease = 2\nreconcile_interval = 1\n"
        )
        daemon.ini.write_text(text)

        def spawn() -> str:
            port = free_port()
            argv, env = twistd_command(daemon.ini, port)
            proc = subprocess.Popen(
                argv, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
            )
            self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
            self.proc = proc
            return f"http://127.0.0.1:{port}"

        base = spawn()
        await deferToThread(wait_answering, base)

        async def get(path: str):
            return await deferToThread(get_json, base + path)

        vm_a = (await get("/vm/create?name=a&instance_type=5&image_id=1"))["vmid"]
        vm_b = (await get("/vm/create?name=b&instance_type=1&image_id=1"))["vmid"]
        self.assertEqual((await get(f"/vm/query?vmid={vm_b}"))["pmid"], 2)
        free = {p: (await get(f"/pm/query?pmid={p}"))["free"]["disk"] for p in (1, 2)}
        vol = (await get("/volume/create?name=data&size=2"))["volumeid"]
        self.assertEqual(await get(f"/volume/attach?vmid={vm_a}&volumeid={vol}"), {"status": 1})
        self.assertEqual(await get(f"/volume/detach?volumeid={vol}"), {"status": 1})
        redis = shared_redis()

        def op() -> str:
            return redis.ask("hget", f"{prefix}:volume:{vol}", "op")

        attach = deferToThread(get_json, f"{base}/volume/attach?vmid={vm_b}&volumeid={vol}")
        attach.addErrback(lambda _f: None)
        deadline = time.monotonic() + 60
        while not await deferToThread(op):
            self.assertLess(time.monotonic(), deadline, "the attach never began")
            await task.deferLater(reactor, 0.01, lambda: None)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        await attach

        base = spawn()
        await deferToThread(wait_answering, base)
        deadline = time.monotonic() + 60
        while await deferToThread(op):
            self.assertLess(time.monotonic(), deadline, "the attach was never settled")
            await task.deferLater(reactor, 0.2, lambda: None)
        query = await get(f"/volume/query?volumeid={vol}")
        fleet_id = await deferToThread(redis.ask, "get", f"{prefix}:fleet")
        name = f"vorchd-{fleet_id}-volume-{vol}.raw"
        self.assertEqual(query["status"], "available", query)
        pools = {}
        for i, pm in enumerate(fleet.pms, start=1):
            out = await deferToThread(pm.virsh, "vol-list", "vorchd")
            pools[i] = {line.split()[0] for line in out.stdout.splitlines() if line.split()}
        self.assertIn(name, pools[1])
        self.assertNotIn(name, pools[2])
        now = {p: (await get(f"/pm/query?pmid={p}"))["free"]["disk"] for p in (1, 2)}
        self.assertEqual(now, {1: free[1] - 2, 2: free[2]})

        # The copy to PM 2 may take longer than get_json waits.
        def attach_slowly():
            url = f"{base}/volume/attach?vmid={vm_b}&volumeid={vol}"
            with urllib.request.urlopen(url, timeout=300) as r:
                return json.loads(r.read())

        self.assertEqual(await deferToThread(attach_slowly), {"status": 1})
        now = {p: (await get(f"/pm/query?pmid={p}"))["free"]["disk"] for p in (1, 2)}
        self.assertEqual(now, {1: free[1], 2: free[2] - 2})
