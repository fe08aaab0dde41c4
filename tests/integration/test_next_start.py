"""
What the next start of a daemon does with what an earlier one left: live settings an
admin changed, a PM that left the pm_file, and an input file broken meanwhile.
"""

from __future__ import annotations

import subprocess

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.clients import InMemoryClient
from tests.harness import (
    FOREGROUND,
    REPO,
    Daemon,
    shared_redis,
    tmpdir,
    twistd_command,
    unique_prefix,
    write_fleet,
)
from vorchd.admin import Admin


def stored(prefix: str) -> dict[str, bytes]:
    """
    Every key of the fleet under C{prefix} with its whole value (Redis' DUMP), but the
    daemons' leases, which run out by themselves.
    """
    redis = shared_redis()
    out = {}
    for key in redis.keys(f"{prefix}:*"):
        if key.startswith(f"{prefix}:daemon:"):
            continue
        out[key] = subprocess.run(
            ["redis-cli", "-p", str(redis.port), "--no-raw", "dump", key],
            capture_output=True,
            check=True,
        ).stdout
    return out


class NextStartTests(TestCase):
    """
    Daemons in this process, one after another, on one Redis key prefix.
    """

    async def setUp(self):
        self.dir = tmpdir(self)
        self.prefix = unique_prefix()
        self.uris = write_fleet(self.dir, [(1, 4096), (4, 4096)])

    async def start(self, pms=None, allocation=None) -> Daemon:
        daemon = Daemon(
            self.dir / "daemon",
            shared_redis().url,
            self.prefix,
            self.uris if pms is None else pms,
            allocation=allocation,
        )
        await daemon.start()
        self.addCleanup(daemon.stop)
        return daemon

    async def in_force(self, daemon: Daemon) -> tuple[str, dict]:
        status = await Admin(daemon.fleet, "test").status()
        return status["policy"], status["ratios"]

    async def test_ini_wins_at_next_start(self):
        """
        An admin's live policy and ratios outlast a restart on the same ini; once the
        operator edits the ini, its new values win at the next start, and only those:
        a value the ini still has unchanged stays the admin's.
        """
        ini = {"policy": "first-fit", "cpu_ratio": 1.0, "ram_ratio": 1.0}
        daemon = await self.start(allocation=ini)
        admin = Admin(daemon.fleet, "test")
        await admin.policy("worst-fit")
        await admin.ratios({"cpu": 2.0, "ram": 3.0})
        await daemon.stop()

        daemon = await self.start(allocation=ini)
        policy, ratios = await self.in_force(daemon)
        self.assertEqual((policy, ratios["cpu"], ratios["ram"]), ("worst-fit", 2.0, 3.0))
        await daemon.stop()

        edited = {**ini, "policy": "best-fit", "cpu_ratio": 4.0}
        daemon = await self.start(allocation=edited)
        policy, ratios = await self.in_force(daemon)
        self.assertEqual((policy, ratios["cpu"], ratios["ram"]), ("best-fit", 4.0, 3.0))

    async def test_retired_pm_forgotten_once_empty(self):
        """
        A PM that left the pm_file is kept, retired, while it has a VM; once that VM is
        destroyed, the next start forgets it: no longer in the admin's status, nor
        connected.
        """
        first = await self.start()
        client = InMemoryClient(first)
        # Flavor 2 (2 CPUs) fits on PM 2 only.
        vmid = (await client.call("/vm/create?name=kept&instance_type=2&image_id=1")).json["vmid"]
        self.assertEqual((await client.call(f"/vm/query?vmid={vmid}")).json["pmid"], 2)
        await first.stop()

        second = await self.start(pms=self.uris[:1])
        status = await Admin(second.fleet, "test").status()
        self.assertEqual(
            [(p["pmid"], p["state"]) for p in status["pms"]], [(1, "up"), (2, "retired")]
        )
        self.assertIsNotNone(second.fleet.hypervisors.host(2))
        client = InMemoryClient(second)
        self.assertEqual((await client.call(f"/vm/destroy?vmid={vmid}")).json, {"status": 1})
        await second.stop()

        third = await self.start(pms=self.uris[:1])
        status = await Admin(third.fleet, "test").status()
        self.assertEqual([(p["pmid"], p["state"]) for p in status["pms"]], [(1, "up")])
        self.assertIsNone(third.fleet.hypervisors.host(2))

    async def test_malformed_file_touches_nothing_stored(self):
        """
        A daemon started on a pm_file broken since the last start exits non-zero naming
        the file and line, and leaves every stored record as it was: PMs, VMs, counters.
        """
        daemon = await self.start()
        client = InMemoryClient(daemon)
        vmid = (await client.call("/vm/create?name=kept&instance_type=1&image_id=1")).json["vmid"]
        self.assertGreater(vmid, 0)
        await daemon.stop()
        before = await deferToThread(stored, self.prefix)
        self.assertIn(f"{self.prefix}:vm:{vmid}", before)

        pm_file = daemon.dir / "pm_file"
        pm_file.write_text(f"{self.uris[0]}\nbad host name\n")
        argv, env = twistd_command(daemon.ini, 0, FOREGROUND)
        done = await deferToThread(
            subprocess.run, argv, cwd=str(REPO), env=env, capture_output=True, timeout=60
        )
        output = done.stdout.decode() + done.stderr.decode()
        self.assertNotEqual(done.returncode, 0, output)
        self.assertIn(f"{pm_file}, line 2", output)
        self.assertEqual(await deferToThread(stored, self.prefix), before)
