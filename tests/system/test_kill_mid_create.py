"""
The real twistd process killed with SIGKILL while creates are provably in flight on a real
libvirtd PM: after a restart, the claims are rolled back and the half-made domains and
disks are gone from the hypervisor, while every VM acknowledged before the kill stays.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

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

# Under the PM's own /var/lib/libvirt (seen from here under its state directory).
POOL_PATH = "/var/lib/libvirt/vorchd-pool"
FLAVORS = [{"tid": 1, "cpu": 1, "ram": 64, "disk": 1}]
BURST = 6


def redis_states(prefix: str) -> dict[int, str]:
    """
    Every VM record of the fleet under C{prefix} in Redis, by vmid: its state.
    """
    redis = shared_redis()
    out = {}
    for key in redis.keys(f"{prefix}:vm:*"):
        state = subprocess.run(
            ["redis-cli", "-p", str(redis.port), "hget", key, "state"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        out[int(key.rsplit(":", 1)[1])] = state
    return out


class KillMidCreateTests(TestCase):
    """
    A twistd vorchd over one real libvirtd PM, killed mid-burst.
    """

    timeout = 300

    async def setUp(self):
        require(libvirtd_fleet_unavailable())
        self.fleet = LibvirtdFleet(1)
        await deferToThread(self.fleet.start)
        self.addCleanup(deferToThread, self.fleet.stop)
        [self.pm] = self.fleet.pms
        self.prefix = unique_prefix()
        self.daemon = Daemon(
            tmpdir(self),
            shared_redis().url,
            self.prefix,
            self.fleet.uris,
            flavors=FLAVORS,
            # Room for the whole burst on this machine's few CPUs.
            allocation={"cpu_ratio": 16},
            libvirt={
                "pool_path": POOL_PATH,
                "connect_timeout": 5,
                "call_timeout": 120,
                "domain_type": "qemu",
            },
        )
        text = self.daemon.ini.read_text().replace(
            "[server]\n", "[server]\nlease = 2\nreconcile_interval = 1\n"
        )
        self.daemon.ini.write_text(text)

    def spawn(self) -> tuple[subprocess.Popen, str]:
        proc, base = spawn_twistd(self, self.daemon.ini)
        wait_answering(base, proc)
        return proc, base

    async def until(self, what: str, condition, seconds: float = 60.0):
        """
        Wait for C{condition()} (run in a thread) to be true; fail after C{seconds} (a
        bound that only catches a hang).
        """
        deadline = time.monotonic() + seconds
        while not await deferToThread(condition):
            if time.monotonic() > deadline:
                self.fail(f"not {what} within {seconds} s")
            await task.deferLater(reactor, 0.01, lambda: None)

    def on_pm(self) -> tuple[set[str], set[str]]:
        """
        The PM's domains (running or not) and the volumes of its pool, as libvirt has them.
        """
        domains = self.pm.virsh("list", "--all", "--name").stdout.split()
        volumes = self.pm.virsh("vol-list", "vorchd").stdout.split()
        return set(domains), {v for v in volumes if v.endswith(".qcow2")}

    async def test_kill_mid_burst(self):
        """
        With the PM's libvirtd stopped (SIGSTOP) once the burst's first disk is on it,
        the daemon is killed while Redis holds claims in state creating; restarted, it
        rolls them back: their domains and disks are gone from the PM (which still had
        some), each VM acknowledged before stays as it was, and the PM's room adds up.
        """
        proc, base = await deferToThread(self.spawn)
        acked = {}
        for i in range(2):
            vmid = (
                await deferToThread(
                    get_json, f"{base}/vm/create?name=a{i}&instance_type=1&image_id=1"
                )
            )["vmid"]
            self.assertGreater(vmid, 0)
            acked[vmid] = await deferToThread(get_json, f"{base}/vm/query?vmid={vmid}")
        fleet_id = subprocess.run(
            ["redis-cli", "-p", str(shared_redis().port), "get", f"{self.prefix}:fleet"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        name = f"vorchd-{fleet_id}-"
        pool = Path(self.pm.path("lib", "vorchd-pool"))
        known = {f"{name}{v}.qcow2" for v in acked}
        overlay = re.compile(re.escape(name) + r"\d+\.qcow2")

        def create(i):
            try:
                get_json(f"{base}/vm/create?name=k{i}&instance_type=1&image_id=1")
            except OSError:
                pass  # killed mid-answer

        burst = [deferToThread(create, i) for i in range(BURST)]
        # Hold the builds: once the burst's first disk is on the PM, its libvirtd stops
        # answering, and every create past its claim waits on it.
        await self.until(
            "a disk of the burst on the PM",
            lambda: any(overlay.fullmatch(p.name) and p.name not in known for p in pool.iterdir()),
        )
        self.pm.kill(signal.SIGSTOP)
        self.addCleanup(
            lambda: self.pm.libvirtd_pid() and os.kill(self.pm.libvirtd_pid(), signal.SIGCONT)
        )
        # Freeze the daemon too, so that what Redis shows is what it has at the kill.
        os.kill(proc.pid, signal.SIGSTOP)
        states = await deferToThread(redis_states, self.prefix)
        in_flight = {v for v, s in states.items() if s == "creating"}
        self.assertTrue(in_flight, states)
        proc.kill()
        proc.wait()
        os.kill(self.pm.libvirtd_pid(), signal.SIGCONT)
        await defer.DeferredList(burst)

        # The hypervisor remembers what the dead daemon half made.
        domains, volumes = await deferToThread(self.on_pm)
        half = {v for v in in_flight if f"{name}{v}" in domains or f"{name}{v}.qcow2" in volumes}
        self.assertTrue(half, (in_flight, domains, volumes))

        proc, base = await deferToThread(self.spawn)
        # Its lease runs out (2 s), then a reconciliation (every 1 s) rolls back.
        await self.until(
            "the claims rolled back",
            lambda: "creating" not in redis_states(self.prefix).values(),
        )
        states = await deferToThread(redis_states, self.prefix)
        self.assertFalse(in_flight & set(states), states)
        domains, volumes = await deferToThread(self.on_pm)
        made = {int(v) for v, s in states.items()}
        self.assertEqual(domains, {f"{name}{v}" for v in made})
        self.assertEqual(
            {v for v in volumes if overlay.fullmatch(v)}, {f"{name}{v}.qcow2" for v in made}
        )
        for vmid, answer in acked.items():
            self.assertEqual(await deferToThread(get_json, f"{base}/vm/query?vmid={vmid}"), answer)
        pm = await deferToThread(get_json, f"{base}/pm/query?pmid=1")
        listed = (await deferToThread(get_json, f"{base}/pm/listvms?pmid=1"))["vmids"]
        self.assertEqual(sorted(listed), sorted(made))
        self.assertEqual(pm["free"]["cpu"], pm["capacity"]["cpu"] * 16 - len(listed))
