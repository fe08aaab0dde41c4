"""
Running VMs on real libvirtd PMs with real guests: their state changed, resized, moved
live and cold between PMs, a PM evacuated, a daemon killed mid-move; what the hypervisors
say is read with virsh, independently of vorchd's own code.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.clients import LoopbackClient
from tests.harness import (
    Daemon,
    get_json,
    require,
    shared_redis,
    spawn_twistd,
    tmpdir,
    unique_prefix,
    wait_answering,
)
from tests.libvirtd_fleet import LibvirtdFleet, libvirtd_fleet_unavailable
from vorchd.bootimage import BOOT_MESSAGE, DISK_MARKER
from vorchd.network import mac_of

# Under each PM's own /var/lib/libvirt, so that the PMs' pools never share a directory.
POOL = "/var/lib/libvirt/vorchd-pool"
# libvirt reports the host's CPUs for every PM here; room is made of them.
CPUS = os.cpu_count() or 2
CPU_RATIO = 4
FLAVORS = [
    {"tid": 1, "cpu": 1, "ram": 64, "disk": 1},
    {"tid": 2, "cpu": 2, "ram": 128, "disk": 2},
    {"tid": 3, "cpu": 1, "ram": 96, "disk": 2},
    # More CPUs than any PM has room for.
    {"tid": 4, "cpu": CPUS * CPU_RATIO + 1, "ram": 64, "disk": 2},
    # All of a PM's CPUs.
    {"tid": 5, "cpu": CPUS * CPU_RATIO, "ram": 64, "disk": 1},
]
LIBVIRT = {
    "pool_path": POOL,
    "connect_timeout": 5,
    "call_timeout": 60,
    "reconnect_max_delay": 1,
    "domain_type": "qemu",
    "stop_timeout": 1,
}
ALLOCATION = {"cpu_ratio": CPU_RATIO, "ram_ratio": 4}
# virsh domstate's words, by what vorchd's /vm/info calls them.
VIRSH_STATES = {"running": "running", "paused": "paused", "shutoff": "shut off"}


class FleetCase(TestCase):
    """
    A daemon in this process over real libvirtd PMs, fresh for each test, and what the
    tests ask of them.
    """

    timeout = 300
    pms = 3

    async def setUp(self):
        require(libvirtd_fleet_unavailable())
        self.fleet = LibvirtdFleet(self.pms)
        await deferToThread(self.fleet.start)
        self.addCleanup(deferToThread, self.fleet.stop)
        self.pm = {i + 1: pm for i, pm in enumerate(self.fleet.pms)}
        self.prefix = unique_prefix()

    async def start_daemon(self, libvirt=None, volumes=None) -> Daemon:
        self.daemon = Daemon(
            tmpdir(self),
            shared_redis().url,
            self.prefix,
            self.fleet.uris,
            flavors=FLAVORS,
            libvirt={**LIBVIRT, **(libvirt or {})},
            allocation=ALLOCATION,
            volumes=volumes,
        )
        await self.daemon.start()
        self.addCleanup(self.daemon.stop)
        self.client = LoopbackClient(self.daemon)
        self.addCleanup(self.client.close)
        hypervisors = self.daemon.fleet.hypervisors
        await self.until("every PM up", lambda: all(hypervisors.is_up(p) for p in self.pm))
        return self.daemon

    # -- helpers ----------------------------------------------------------------------

    async def call(self, path: str):
        return await self.client.call(path)

    async def json(self, path: str):
        return (await self.call(path)).json

    async def ok(self, path: str) -> None:
        answer = await self.call(path)
        self.assertEqual(answer.json, {"status": 1}, answer)

    async def refused(self, path: str) -> str:
        answer = await self.call(path)
        self.assertEqual(answer.json, {"status": 0}, answer)
        self.assertTrue(answer.reason, answer)
        return answer.reason

    async def create(self, tid: int = 1) -> int:
        answer = await self.call(f"/vm/create?name=r&instance_type={tid}&image_id=1")
        vmid = answer.json["vmid"]
        self.assertGreater(vmid, 0, answer)
        return vmid

    async def until(self, what: str, condition, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                self.fail(f"not {what} within {seconds} s")
            await task.deferLater(reactor, 0.1, lambda: None)

    def domain(self, vmid: int) -> str:
        return f"vorchd-{self.daemon.fleet.fleet_id}-{vmid}"

    async def virsh(self, pmid: int, *args: str) -> str:
        done = await deferToThread(self.pm[pmid].virsh, *args)
        return done.stdout

    async def domstate(self, pmid: int, vmid: int) -> str:
        """
        What PM C{pmid}'s libvirtd says of VM C{vmid}'s domain: its state, or "missing".
        """
        names = (await self.virsh(pmid, "list", "--all", "--name")).split()
        if self.domain(vmid) not in names:
            return "missing"
        return (await self.virsh(pmid, "domstate", self.domain(vmid))).strip()

    async def volumes(self, pmid: int) -> set[str]:
        out = await self.virsh(pmid, "vol-list", "vorchd")
        return {line.split()[0] for line in out.splitlines() if line.split()}

    async def dominfo(self, pmid: int, vmid: int) -> dict[str, str]:
        out = await self.virsh(pmid, "dominfo", self.domain(vmid))
        return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}

    async def disk_gib(self, pmid: int, vmid: int) -> float:
        out = await self.virsh(pmid, "vol-info", f"{self.domain(vmid)}.qcow2", "--pool", "vorchd")
        return float(re.search(r"Capacity:\s+([0-9.]+) GiB", out)[1])

    def console(self, pmid: int, vmid: int) -> bytes:
        path = self.pm[pmid].path("log", "qemu", f"{self.domain(vmid)}-serial.log")
        return path.read_bytes() if path.exists() else b""

    async def booted(self, pmid: int, vmid: int, times: int = 1) -> None:
        """
        Wait until the guest has printed its boot message C{times} times on its console.
        """
        message = BOOT_MESSAGE.strip()
        await self.until(
            f"vm {vmid} booted {times} times",
            lambda: self.console(pmid, vmid).count(message) >= times,
        )

    async def wrote(self, pmid: int, vmid: int) -> bool:
        """
        Whether the disk of VM C{vmid} on PM C{pmid} holds the sector its guest writes at
        boot, read with qemu-img inside the PM (where the overlay's backing path resolves).
        """
        overlay = f"{POOL}/{self.domain(vmid)}.qcow2"
        raw = f"/tmp/vorchd-test-{self.domain(vmid)}.raw"
        pm = self.pm[pmid]

        def read() -> bytes:
            pm.nsenter("qemu-img", "convert", "-U", "-O", "raw", overlay, raw, check=True)
            try:
                return pm.nsenter(
                    "dd", f"if={raw}", "bs=512", "skip=1", "count=1", text=False
                ).stdout
            finally:
                pm.nsenter("rm", "-f", raw)

        return DISK_MARKER in await deferToThread(read)

    async def pm_query(self, pmid: int) -> dict:
        return await self.json(f"/pm/query?pmid={pmid}")


class RunningFleetTests(FleetCase):
    """
    Three PMs.
    """

    # -- state changes ------------------------------------------------------------------

    async def test_stop_start_reboot_suspend_resume(self):
        """
        Each state change shows on the PM (virsh) and in /vm/info; none changes
        pm/query (a stopped VM keeps its room); a change the VM's state does not allow,
        and any change of an unknown VM, answers {"status": 0} with a reason.
        """
        await self.start_daemon()
        vmid = await self.create()
        await self.booted(1, vmid)
        room = await self.pm_query(1)
        steps = [
            ("stop", "shutoff"),
            ("start", "running"),
            ("suspend", "paused"),
            ("resume", "running"),
        ]
        for action, state in steps:
            await self.ok(f"/vm/{action}?vmid={vmid}")
            self.assertEqual(await self.domstate(1, vmid), VIRSH_STATES[state], action)
            info = await self.json(f"/vm/info?vmid={vmid}")
            self.assertEqual(info["state"], state, action)
            self.assertEqual(await self.pm_query(1), room, action)
        await self.booted(1, vmid)
        await self.ok(f"/vm/reboot?vmid={vmid}")
        await self.booted(1, vmid, times=2)
        self.assertEqual(await self.domstate(1, vmid), "running")

        await self.ok(f"/vm/stop?vmid={vmid}")
        for action in ("stop", "suspend", "resume", "reboot"):
            await self.refused(f"/vm/{action}?vmid={vmid}")
            self.assertEqual(await self.domstate(1, vmid), "shut off", action)
        await self.ok(f"/vm/start?vmid={vmid}")
        await self.refused(f"/vm/start?vmid={vmid}")
        await self.refused(f"/vm/resume?vmid={vmid}")
        self.assertEqual(await self.domstate(1, vmid), "running")
        for action in ("stop", "start", "reboot", "suspend", "resume"):
            await self.refused(f"/vm/{action}?vmid={vmid + 1000}")
        unknown = await self.call(f"/vm/info?vmid={vmid + 1000}")
        self.assertEqual((unknown.json, bool(unknown.reason)), (0, True))
        self.assertEqual(await self.pm_query(1), room)
        self.assertEqual(
            await self.json(f"/vm/info?vmid={vmid}"),
            {
                "vmid": vmid,
                "name": "r",
                "instance_type": 1,
                "pmid": 1,
                "image_id": 1,
                "state": "running",
                "domain": self.domain(vmid),
                # The ini names no network: no NIC, so no address; its MAC is stored.
                "mac": mac_of(self.domain(vmid)),
                "ips": [],
            },
        )

    # -- resize ---------------------------------------------------------------------------

    async def test_resize_up_and_down(self):
        """
        A resize gives the running domain the flavor's CPUs and memory and grows its
        disk, restarted; pm/query's free room follows exactly; a smaller disk and a
        flavor without room are refused with nothing changed.
        """
        await self.start_daemon()
        vmid = await self.create(1)
        await self.booted(1, vmid)
        free = (await self.pm_query(1))["free"]

        await self.ok(f"/vm/resize?vmid={vmid}&instance_type=2")
        info = await self.dominfo(1, vmid)
        self.assertEqual((info["CPU(s)"], info["Max memory"]), ("2", f"{128 * 1024} KiB"))
        self.assertEqual(info["State"], "running")
        self.assertEqual(await self.disk_gib(1, vmid), 2.0)
        self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["instance_type"], 2)
        now = (await self.pm_query(1))["free"]
        self.assertEqual(
            now, {"cpu": free["cpu"] - 1, "ram": free["ram"] - 64, "disk": free["disk"] - 1}
        )

        await self.ok(f"/vm/resize?vmid={vmid}&instance_type=3")
        info = await self.dominfo(1, vmid)
        self.assertEqual((info["CPU(s)"], info["Max memory"]), ("1", f"{96 * 1024} KiB"))
        self.assertEqual(await self.disk_gib(1, vmid), 2.0)
        now = (await self.pm_query(1))["free"]
        self.assertEqual(
            now, {"cpu": free["cpu"], "ram": free["ram"] - 32, "disk": free["disk"] - 1}
        )

        before = await self.pm_query(1)
        reason = await self.refused(f"/vm/resize?vmid={vmid}&instance_type=1")
        self.assertIn("shrink", reason)
        reason = await self.refused(f"/vm/resize?vmid={vmid}&instance_type=4")
        self.assertIn("no room", reason)
        self.assertEqual(await self.pm_query(1), before)
        info = await self.dominfo(1, vmid)
        self.assertEqual((info["CPU(s)"], info["State"]), ("1", "running"))
        self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["instance_type"], 3)

    # -- migrate --------------------------------------------------------------------------

    async def test_live_then_cold_migration(self):
        """
        A running guest moves live to PM 2: it runs there and is gone from PM 1 with its
        disk, its disk on PM 2 holds what it wrote at boot, the room moved. Stopped, it
        moves cold to PM 3, and starts there with that disk.
        """
        await self.start_daemon()
        vmid = await self.create()
        await self.booted(1, vmid)
        self.assertTrue(await self.wrote(1, vmid))
        free = {p: (await self.pm_query(p))["free"] for p in self.pm}

        await self.ok(f"/vm/migrate?vmid={vmid}&pmid=2")
        self.assertEqual(await self.domstate(2, vmid), "running")
        self.assertEqual(await self.domstate(1, vmid), "missing")
        self.assertNotIn(f"{self.domain(vmid)}.qcow2", await self.volumes(1))
        self.assertTrue(await self.wrote(2, vmid))
        self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["pmid"], 2)
        self.assertEqual(await self.json("/pm/listvms?pmid=1"), {"vmids": []})
        self.assertEqual(await self.json("/pm/listvms?pmid=2"), {"vmids": [vmid]})
        after = {p: (await self.pm_query(p))["free"] for p in self.pm}
        self.assertEqual(after[1]["cpu"], free[1]["cpu"] + 1)
        self.assertEqual(after[2]["cpu"], free[2]["cpu"] - 1)
        self.assertEqual(after[2]["ram"], free[2]["ram"] - 64)

        await self.ok(f"/vm/stop?vmid={vmid}")
        await self.ok(f"/vm/migrate?vmid={vmid}&pmid=3")
        self.assertEqual(await self.domstate(3, vmid), "shut off")
        self.assertEqual(await self.domstate(2, vmid), "missing")
        self.assertNotIn(f"{self.domain(vmid)}.qcow2", await self.volumes(2))
        self.assertTrue(await self.wrote(3, vmid))
        await self.ok(f"/vm/start?vmid={vmid}")
        await self.booted(3, vmid)
        self.assertEqual((await self.json(f"/vm/info?vmid={vmid}"))["pmid"], 3)
        self.assertEqual((await self.pm_query(2))["free"], free[2])
        self.assertEqual(await self.json(f"/vm/destroy?vmid={vmid}"), {"status": 1})
        self.assertEqual(await self.domstate(3, vmid), "missing")

    async def test_failed_migrations_leave_the_guest_where_it_was(self):
        """
        A move to a PM without room, to a PM that is down, and one cut short by the
        target's libvirtd dying as it starts: each answers {"status": 0}, leaves the
        guest running on its PM and nothing held or left on the target.
        """
        await self.start_daemon()
        vmid = await self.create()
        filler = await self.create(5)
        self.assertEqual((await self.json(f"/vm/query?vmid={filler}"))["pmid"], 2)
        await self.booted(1, vmid)
        room = {p: await self.pm_query(p) for p in self.pm}

        reason = await self.refused(f"/vm/migrate?vmid={vmid}&pmid=2")
        self.assertIn("no room", reason)

        hypervisors = self.daemon.fleet.hypervisors
        await deferToThread(self.pm[3].kill)
        await self.until("PM 3 down", lambda: not hypervisors.is_up(3))
        reason = await self.refused(f"/vm/migrate?vmid={vmid}&pmid=3")
        self.assertIn("down", reason)
        await deferToThread(self.pm[3].restart)
        await self.until("PM 3 up", lambda: hypervisors.is_up(3))

        # The target's libvirtd dies the moment the migration is asked for.
        source = hypervisors.host(1)
        migrate = source.migrate_vm

        def dying_target(*args, **kwargs):
            self.pm[3].kill()
            return migrate(*args, **kwargs)

        self.patch(source, "migrate_vm", dying_target)
        await self.refused(f"/vm/migrate?vmid={vmid}&pmid=3")
        self.assertEqual(await self.domstate(1, vmid), "running")
        self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["pmid"], 1)
        for pmid in self.pm:
            self.assertEqual(await self.pm_query(pmid), room[pmid], pmid)
        await deferToThread(self.pm[3].restart)
        await self.until("PM 3 up", lambda: hypervisors.is_up(3))
        # What the move made on PM 3 before it died goes once it is back.
        await self.daemon.fleet.retry_undos()
        self.assertEqual(await self.domstate(3, vmid), "missing")
        self.assertNotIn(f"{self.domain(vmid)}.qcow2", await self.volumes(3))
        self.assertEqual(await self.domstate(1, vmid), "running")

    # -- evacuate -------------------------------------------------------------------------

    async def test_drain_evacuate(self):
        """
        vorchd-admin drain 1 --evacuate moves PM 1's three guests to the other PMs one by
        one, printing each, and leaves PM 1 drained and empty.
        """
        daemon = await self.start_daemon()
        vmids = [await self.create() for _ in range(3)]
        for vmid in vmids:
            self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["pmid"], 1)
        argv = [
            str(Path(sys.executable).parent / "vorchd-admin"),
            "--config",
            str(daemon.ini),
            "--port",
            str(daemon.admin_port),
            "--password-file",
            str(daemon.dir / "admin.passwd"),
            "drain",
            "1",
            "--evacuate",
        ]

        def run() -> subprocess.CompletedProcess:
            return subprocess.run(argv, capture_output=True, text=True, timeout=240)

        done = await deferToThread(run)
        self.assertEqual(done.returncode, 0, done.stderr)
        for vmid in vmids:
            self.assertRegex(done.stdout, rf"vm {vmid}: moved to PM [23]")
        self.assertIn("3 VMs moved, 0 not", done.stdout)
        self.assertEqual(await self.json("/pm/listvms?pmid=1"), {"vmids": []})
        self.assertEqual((await self.virsh(1, "list", "--all", "--name")).split(), [])
        for vmid in vmids:
            pmid = (await self.json(f"/vm/query?vmid={vmid}"))["pmid"]
            self.assertEqual(await self.domstate(pmid, vmid), "running")
        self.assertTrue((await self.daemon.fleet.store.pm_record(1))["drained"] == "1")
        free = (await self.pm_query(1))["free"]
        self.assertEqual(free["cpu"], CPUS * CPU_RATIO)


class SharedPoolTests(FleetCase):
    """
    Two PMs whose pools are one directory (as an NFS export mounted on each would be).
    """

    pms = 2

    async def test_shared_pool_found_and_used(self):
        """
        The second PM finds the base copy the first uploaded into the shared pool and
        uses it; a live move between them copies no disk: the guest's overlay is the same
        file before and after.
        """
        shared = self.fleet.dir / "shared-pool"
        shared.mkdir(mode=0o755)
        await self.start_daemon({"pool_path": shared})
        first = await self.create()
        await self.daemon.fleet.store.set_drained(1, True)
        second = await self.create()
        self.assertEqual((await self.json(f"/vm/query?vmid={second}"))["pmid"], 2)
        await self.daemon.fleet.store.set_drained(1, False)
        bases = [p for p in shared.iterdir() if "-image-" in p.name]
        self.assertEqual(len(bases), 1, bases)
        overlay = shared / f"{self.domain(first)}.qcow2"
        inode = overlay.stat().st_ino
        await self.ok(f"/vm/migrate?vmid={first}&pmid=2")
        self.assertEqual(await self.domstate(2, first), "running")
        self.assertEqual(await self.domstate(1, first), "missing")
        self.assertEqual(overlay.stat().st_ino, inode)
        self.assertEqual(await self.json("/pm/listvms?pmid=2"), {"vmids": [first, second]})


class KillMidMigrationTests(TestCase):
    """
    The real twistd process killed with SIGKILL while a guest moves, then started again.
    """

    timeout = 300

    async def test_kill_during_migration(self):
        """
        After a kill -9 during a live move and a restart, the record, the room on both
        PMs and the guest agree: the guest runs on exactly one PM, the one vm/query
        names, and each PM's free room is its capacity less its listed VMs'.
        """
        require(libvirtd_fleet_unavailable())
        fleet = LibvirtdFleet(2)
        await deferToThread(fleet.start)
        self.addCleanup(deferToThread, fleet.stop)
        directory = tmpdir(self)
        prefix = unique_prefix()
        daemon = Daemon(
            directory,
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

        def spawn() -> tuple[subprocess.Popen, str]:
            proc, base = spawn_twistd(self, daemon.ini)
            wait_answering(base, proc)
            return proc, base

        proc, base = await deferToThread(spawn)
        vmid = (
            await deferToThread(get_json, f"{base}/vm/create?name=k&instance_type=1&image_id=1")
        )["vmid"]
        self.assertGreater(vmid, 0)
        redis = shared_redis()

        def change_op() -> str:
            return redis.ask("hget", f"{prefix}:vm:{vmid}", "change_op")

        move = deferToThread(get_json, f"{base}/vm/migrate?vmid={vmid}&pmid=2")
        move.addErrback(lambda _f: None)
        deadline = time.monotonic() + 60
        while not await deferToThread(change_op):
            self.assertLess(time.monotonic(), deadline, "the move never began")
            await task.deferLater(reactor, 0.02, lambda: None)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        await move

        _, base = await deferToThread(spawn)
        deadline = time.monotonic() + 60
        while await deferToThread(change_op):
            self.assertLess(time.monotonic(), deadline, "the move was never settled")
            await task.deferLater(reactor, 0.2, lambda: None)

        running = {}
        for i, pm in enumerate(fleet.pms, start=1):
            names = await deferToThread(pm.virsh, "list", "--name")
            running[i] = [n for n in names.stdout.split() if n.endswith(f"-{vmid}")]
        where = [p for p, names in running.items() if names]
        self.assertEqual(len(where), 1, running)
        self.assertEqual(
            (await deferToThread(get_json, f"{base}/vm/query?vmid={vmid}"))["pmid"], where[0]
        )
        for pmid in (1, 2):
            pm = await deferToThread(get_json, f"{base}/pm/query?pmid={pmid}")
            listed = (await deferToThread(get_json, f"{base}/pm/listvms?pmid={pmid}"))["vmids"]
            self.assertEqual(listed, [vmid] if pmid == where[0] else [])
            self.assertEqual(pm["free"]["cpu"], pm["capacity"]["cpu"] * CPU_RATIO - len(listed))
