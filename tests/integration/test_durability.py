"""
Redis as install.sh runs it (etc/redis.conf), crashed on purpose: a killed Redis loses
nothing, and a machine crash, which loses the AOF's last second, loses nothing that was
acknowledged before that second, while vmids are never given twice.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from tests.clients import InMemoryClient
from tests.harness import Daemon, RedisServer, daemon_domains, snapshot, tmpdir, write_fleet
from vorchd.store.client import StoreUnavailable

SIZES = [(4, 4096), (4, 4096)]


class CrashTests(TestCase):
    """
    A daemon in this process, over test-driver PMs (which keep their domains while the
    daemon runs), on a Redis of the test's own that the test kills.
    """

    timeout = 120

    async def setUp(self):
        directory = tmpdir(self)
        (directory / "redis").mkdir()
        self.redis = RedisServer(directory=str(directory / "redis")).start()
        self.addCleanup(self.redis.stop)
        self.daemon = Daemon(
            directory / "daemon",
            self.redis.url,
            "crash",
            write_fleet(directory, SIZES),
        )
        # The test runs the reconciler itself, to read its report.
        self.daemon.ini.write_text(
            self.daemon.ini.read_text().replace(
                "[server]\n", "[server]\nreconcile_interval = 3600\n"
            )
        )
        await self.daemon.start()
        self.addCleanup(self.daemon.stop)
        self.client = InMemoryClient(self.daemon)

    async def json(self, path: str):
        return (await self.client.call(path)).json

    async def create(self, name: str) -> int:
        vmid = (await self.json(f"/vm/create?name={name}&instance_type=1&image_id=1"))["vmid"]
        self.assertGreater(vmid, 0)
        return vmid

    async def destroy(self, vmid: int) -> None:
        self.assertEqual(await self.json(f"/vm/destroy?vmid={vmid}"), {"status": 1})

    async def redis_back(self) -> None:
        """
        Start Redis again on its port, and wait (bounded: only a hang fails here) until
        the daemon's connections and its read model follow it again.
        """
        self.redis.start()
        store = self.daemon.fleet.store
        for _ in range(600):
            try:
                await store.pm_ids()
                if (await self.client.call("/pm/list")).json:
                    return
            except StoreUnavailable:
                pass
            await task.deferLater(reactor, 0.05, lambda: None)
        self.fail("the daemon never followed Redis back")

    def last_fsync(self) -> dict[str, int]:
        """
        Mark now as the AOF's last fsync: what a machine crash from now on leaves of the
        files Redis appends to (their sizes now, by name).
        """
        return {name: (self.aof / name).stat().st_size for name in self.appended()}

    @property
    def aof(self) -> Path:
        return Path(self.redis.dir) / "appendonlydir"

    def appended(self) -> list[str]:
        """
        The AOF files Redis appends to now (its manifest's incr files); its base files
        are written whole and fsynced by Redis itself (an AOF rewrite).
        """
        manifest = (self.aof / "appendonly.aof.manifest").read_text()
        return [line.split()[1] for line in manifest.splitlines() if line.split()[-1:] == ["i"]]

    def machine_crash(self, fsynced: dict[str, int]) -> None:
        """
        Kill Redis, and leave its files as a machine crash would at worst, the AOF's last
        fsync having been at C{fsynced} (L{last_fsync}): whatever was appended since is
        lost, rewritten base files are kept.
        """
        self.redis.kill()
        for name in self.appended():
            with open(self.aof / name, "r+b") as f:
                f.truncate(fsynced.get(name, 0))

    async def test_machine_crash_loses_only_the_last_moment(self):
        """
        Redis' AOF loses what was appended after a moment before a crash: every change
        acknowledged before that moment (creates, a destroy) is there after the restart;
        the VM that moment created is adopted back by the reconciler with its vmid; and
        a VM made and destroyed in that moment, which left nothing to adopt, does not
        get its vmid given again.
        """
        kept = await self.create("kept")
        gone = await self.create("gone")
        await self.destroy(gone)
        before = await snapshot(self.json)
        fsynced = self.last_fsync()

        # The moment lost: one VM made, another made and destroyed.
        lost = await self.create("lost")
        fleeting = await self.create("fleeting")
        await self.destroy(fleeting)
        lost_answer = await self.json(f"/vm/query?vmid={lost}")
        self.machine_crash(fsynced)
        await self.redis_back()

        self.assertEqual(await self.json(f"/vm/query?vmid={lost}"), 0)
        report = await self.daemon.fleet.reconcile()
        self.assertEqual(report["adopted"], [lost])
        self.assertEqual(await self.json(f"/vm/query?vmid={lost}"), lost_answer)
        again = await self.create("again")
        self.assertGreater(again, max(kept, gone, lost, fleeting))

        await self.destroy(lost)
        await self.destroy(again)
        self.assertEqual(await snapshot(self.json), before)

    async def test_vmids_unique_across_repeated_crashes(self):
        """
        Crash after crash, each losing the last moment's AOF (VMs made and destroyed in
        it, and the vmid counter's last steps), no vmid is ever handed out twice: also
        when that moment began a new block of vmids (after each restart).
        """
        seen = [await self.create("first")]
        for round in range(3):
            fsynced = self.last_fsync()
            for name in ("a", "b"):
                vmid = await self.create(f"{name}{round}")
                seen.append(vmid)
                await self.destroy(vmid)
            self.machine_crash(fsynced)
            await self.redis_back()
        seen.append(await self.create("last"))
        self.assertEqual(len(seen), len(set(seen)), seen)

    async def test_killed_redis_loses_nothing(self):
        """
        A plain SIGKILL of Redis (the machine stays up) loses nothing at all, not even
        the change acknowledged just before the kill; the domains and the records agree.
        """
        vmids = [await self.create(f"v{i}") for i in range(3)]
        await self.destroy(vmids[1])
        before = await snapshot(self.json)
        self.redis.kill()
        await self.redis_back()
        self.assertEqual(await snapshot(self.json), before)
        self.assertEqual(await self.daemon.fleet.reconcile(), await self.daemon.fleet.reconcile())
        report = await self.daemon.fleet.reconcile()
        self.assertFalse(any(report.values()), report)
        names = set()
        for pmid in (1, 2):
            names |= {int(d["vmid"]) for d in (await daemon_domains(self.daemon, pmid)).values()}
        self.assertEqual(names, {vmids[0], vmids[2]})
