"""
Redis outages: a daemon whose Redis stops answers every call with the seed API's failure
value within a bounded time, serves fully again once Redis is back (same port, same AOF),
and never loses a VM it acknowledged nor keeps anything of a create it refused.

Each test runs its own redis-server, stopped and restarted under the daemon's feet.
"""

from __future__ import annotations

import time
import urllib.parse

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.clients import LoopbackClient
from tests.harness import (
    FLAVORS,
    TEST_POOL_GIB,
    Daemon,
    RedisServer,
    daemon_domains,
    fake_hosts,
    snapshot,
    tmpdir,
    unique_prefix,
    write_fleet,
)
from vorchd.domain import domain_name
from vorchd.hypervisor.fake import Gate

# Roomy enough that every create below fits: a refusal can only come from the outage.
SIZES = [(64, 65536), (32, 32768), (96, 98304), (48, 49152)]
FLAVOR = {f["tid"]: f for f in FLAVORS}
RESOURCES = ("cpu", "ram", "disk")
# An answer later than this is a hang, not a wait. That the store gives up on Redis at its
# timeout (5 s) is pinned on a clock (test_store.OutageTests); how long answers take here
# is a figure of the benchmark (bench/run.py --only outage), not a test.
HANG_BOUND = 60.0
# How long a daemon may take to serve again once Redis is back (txredisapi reconnects
# with a back-off of at most 10 s; FleetService retries its load every 2 s).
RECOVERY_BOUND = 60.0
# Builds held until Redis is down, and how long it then stays down: longer than a commit
# and its undo (5 s each) take to give up on it.
HELD = 5
OUTAGE = 12.0
# How long a daemon may take, once serving again, to roll back what it could not during
# the outage.
SETTLE = 15.0


def q(**args) -> str:
    return urllib.parse.urlencode(args)


def capacity_of(size) -> dict[str, int]:
    return {"cpu": size[0], "ram": size[1], "disk": TEST_POOL_GIB}


class OutageTests(TestCase):
    """
    One daemon on a Redis of its own that the test stops and restarts.
    """

    timeout = 240

    async def setUp(self):
        self.dir = tmpdir(self)
        self.prefix = unique_prefix()
        self.uris = write_fleet(self.dir, SIZES)
        (self.dir / "redis").mkdir()
        self.redis = RedisServer(directory=str(self.dir / "redis"))
        self.servers = [self.redis]
        self.addCleanup(self._stop_redis_servers)
        # Whatever the daemon logs as a failure (a traceback) is collected here.
        self.failures = []

        def observe(event):
            if "log_failure" in event:
                self.failures.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def _stop_redis_servers(self):
        for server in self.servers:
            server.stop()

    # -- Redis going down and coming back -------------------------------------------------

    async def redis_down(self) -> None:
        await deferToThread(self.redis.stop)

    async def redis_up(self) -> None:
        """
        Start Redis on the same port and directory (so from the same AOF).
        """
        self.redis = RedisServer(port=self.redis.port, directory=self.redis.dir)
        self.servers.append(self.redis)
        await deferToThread(self.redis.start)

    # -- the daemon -------------------------------------------------------------------------

    def make_daemon(self, fake: bool = False) -> Daemon:
        """
        A daemon over the test-driver PMs, or over in-memory ones of the same sizes if
        C{fake}.
        """
        hosts = fake_hosts(self.uris, SIZES) if fake else None
        daemon = Daemon(self.dir / "daemon", self.redis.url, self.prefix, self.uris, hosts=hosts)
        self.addCleanup(daemon.stop)
        return daemon

    async def start_daemon(self, fake: bool = False) -> Daemon:
        daemon = self.make_daemon(fake)
        await daemon.start()
        self.client = LoopbackClient(daemon)
        self.addCleanup(self.client.close)
        return daemon

    async def call(self, path: str):
        answer = await self.client.call(path)
        self.assertEqual(answer.status, 200, answer)
        return answer

    async def json(self, path: str):
        return (await self.call(path)).json

    async def create(self, name: str, tid: int) -> int:
        answer = await self.call("/vm/create?" + q(name=name, instance_type=tid, image_id=1))
        return answer.json["vmid"]

    async def wait_serving(self, bound: float = RECOVERY_BOUND) -> float:
        """
        Poll pm/list until it answers the fleet; return how long that took.
        """
        start = time.monotonic()
        while time.monotonic() - start < bound:
            answer = await self.call("/pm/list")
            if answer.json == {"pmids": list(range(1, len(SIZES) + 1))}:
                return time.monotonic() - start
            await task.deferLater(reactor, 0.2, lambda: None)
        self.fail(f"the daemon did not serve again within {bound} s of Redis coming back")

    async def domains(self, daemon: Daemon, pmid: int) -> dict[str, dict]:
        return await daemon_domains(daemon, pmid)

    async def snapshot(self) -> dict:
        return await snapshot(self.json)

    async def check_failure_values(self, vmid: int) -> None:
        """
        Every call, made at once, answers its own failure value with a reason, each within
        HANG_BOUND seconds (a hang).
        """
        expected = {
            "/vm/create?" + q(name="during", instance_type=1, image_id=1): {"vmid": 0},
            f"/vm/query?vmid={vmid}": 0,
            f"/vm/destroy?vmid={vmid}": {"status": 0},
            "/vm/types": 0,
            "/pm/list": 0,
            "/pm/listvms?pmid=1": {"vmids": 0},
            "/pm/query?pmid=1": 0,
            "/image/list": 0,
        }

        async def timed(path):
            start = time.monotonic()
            answer = await self.client.call(path)
            return answer, time.monotonic() - start

        answers = await defer.gatherResults(
            [defer.ensureDeferred(timed(p)) for p in expected], consumeErrors=True
        )
        for (path, value), (answer, took) in zip(expected.items(), answers, strict=True):
            self.assertEqual((answer.status, answer.json), (200, value), f"{path}: {answer}")
            self.assertTrue(answer.reason, f"{path}: no reason given")
            self.assertNotIn("internal error", answer.reason, path)
            self.assertNotIn(b"Traceback", answer.raw, path)
            self.assertLessEqual(took, HANG_BOUND, f"{path} hung: {took:.1f} s")

    async def check_fleet(self, daemon: Daemon, created: dict[int, tuple[int, str]]) -> None:
        """
        The fleet is exactly the VMs in C{created} (vmid -> (tid, name)): each is answered
        as created and listed on one PM, where its domain runs; no PM has any other domain
        and no claim beyond those VMs' flavors.
        """
        placed: dict[int, int] = {}
        for pmid, size in enumerate(SIZES, 1):
            vmids = (await self.json(f"/pm/listvms?pmid={pmid}"))["vmids"]
            for vmid in vmids:
                self.assertNotIn(vmid, placed, f"vm {vmid} listed on two PMs")
                placed[vmid] = pmid
            capacity = capacity_of(size)
            used = {
                r: sum(FLAVOR[created[v][0]][r] for v in vmids if v in created) for r in RESOURCES
            }
            self.assertEqual(
                await self.json(f"/pm/query?pmid={pmid}"),
                {
                    "pmid": pmid,
                    "capacity": capacity,
                    "free": {r: capacity[r] - used[r] for r in RESOURCES},
                    "vms": len(vmids),
                },
                f"PM {pmid}: free is not capacity minus the flavors of its VMs",
            )
            domains = await self.domains(daemon, pmid)
            expected = {domain_name(daemon.fleet.fleet_id, v) for v in vmids}
            self.assertEqual(set(domains), expected, f"PM {pmid}: domains are not its VMs")
            for meta in domains.values():
                self.assertTrue(meta["running"], meta)
        self.assertEqual(sorted(placed), sorted(created), "listed VMs are not the created ones")
        for vmid, (tid, name) in created.items():
            self.assertEqual(
                await self.json(f"/vm/query?vmid={vmid}"),
                {"vmid": vmid, "name": name, "instance_type": tid, "pmid": placed[vmid]},
            )
        # No claim outlives its create: Redis holds a record for the listed VMs only.
        self.assertEqual(await daemon.fleet.store.all_vmids(), sorted(created))

    def assertNoTracebacks(self) -> None:
        self.assertEqual(
            [e.get("log_format") for e in self.failures], [], "the daemon logged failures"
        )

    # -- the tests ----------------------------------------------------------------------------

    async def test_outage_and_recovery(self):
        """
        While Redis is down every call answers its failure value with a reason in bounded
        time; once it is back every acknowledged VM is answered as before and creates,
        destroys and accounting work again.
        """
        await deferToThread(self.redis.start)
        daemon = await self.start_daemon()
        created = {}
        for n, tid in enumerate([1, 2, 3, 1, 2, 3, 3]):
            vmid = await self.create(f"before {n}", tid)
            self.assertGreater(vmid, 0)
            created[vmid] = (tid, f"before {n}")
        gone = min(created)
        self.assertEqual(await self.json(f"/vm/destroy?vmid={gone}"), {"status": 1})
        del created[gone]
        await self.check_fleet(daemon, created)
        before = await self.snapshot()
        domains_before = {p: await self.domains(daemon, p) for p in range(1, len(SIZES) + 1)}

        await self.redis_down()
        some = max(created)
        # Right after the outage began, and again once the pool has noticed.
        await self.check_failure_values(some)
        await self.check_failure_values(some)
        # Nothing was done on the hypervisors meanwhile (the destroy above was refused).
        for pmid, domains in domains_before.items():
            self.assertEqual(await self.domains(daemon, pmid), domains)

        await self.redis_up()
        await self.wait_serving()
        self.assertEqual(await self.snapshot(), before)
        await self.check_fleet(daemon, created)

        vmid = await self.create("after", 2)
        self.assertGreater(vmid, max(created))
        created[vmid] = (2, "after")
        await self.check_fleet(daemon, created)
        for old in (some, min(created)):
            self.assertEqual(await self.json(f"/vm/destroy?vmid={old}"), {"status": 1})
            self.assertEqual(await self.json(f"/vm/query?vmid={old}"), 0)
            del created[old]
        await self.check_fleet(daemon, created)
        self.assertNoTracebacks()

    async def burst_across_outage(self):
        """
        Start a daemon (over in-memory PMs) with two VMs, fire 120 creates (25 at a
        time), stop Redis while they run, bring it back after OUTAGE seconds, wait for
        every answer and for the daemon to serve again.

        @return: the daemon, the acknowledged VMs (vmid -> (tid, name), the two first
            included) and the number of creates refused.
        """
        await deferToThread(self.redis.start)
        daemon = await self.start_daemon(fake=True)
        created = {}
        for n, tid in enumerate([1, 3]):
            vmid = await self.create(f"before {n}", tid)
            self.assertGreater(vmid, 0)
            created[vmid] = (tid, f"before {n}")

        # Real hypervisors take seconds to build a VM, so an outage finds some creates
        # between their claim and their commit. In-memory PMs build at once: hold a few
        # builds at a gate until Redis is down to make sure of it.
        pms = [daemon.fleet.hypervisors.host(pmid) for pmid in range(1, len(SIZES) + 1)]
        gate = Gate(limit=HELD)
        self.addCleanup(gate.release)

        total, in_flight = 120, 25
        limit = defer.DeferredSemaphore(in_flight)
        answered = []
        first_answers = defer.Deferred()

        async def one(n):
            tid = FLAVORS[n % len(FLAVORS)]["tid"]
            name = f"burst {n}"
            answer = await self.client.call(
                "/vm/create?" + q(name=name, instance_type=tid, image_id=1)
            )
            answered.append((tid, name, answer))
            if len(answered) == 20 and not first_answers.called:
                first_answers.callback(None)

        burst = defer.gatherResults(
            [limit.run(lambda n=n: defer.ensureDeferred(one(n))) for n in range(total)],
            consumeErrors=True,
        )
        await first_answers
        for pm in pms:
            pm.gates["create_vm"] = gate
        start = time.monotonic()
        while gate.held < HELD:
            self.assertLess(time.monotonic() - start, 10, f"only {gate.held} builds held")
            await task.deferLater(reactor, 0.01, lambda: None)
        await self.redis_down()
        gate.release()
        # Down for longer than a commit and then its undo take to give up on Redis.
        await task.deferLater(reactor, OUTAGE, lambda: None)
        await self.redis_up()
        await burst
        await self.wait_serving()

        refused = 0
        for tid, name, answer in answered:
            self.assertEqual(answer.status, 200, answer)
            self.assertEqual(set(answer.json), {"vmid"}, answer)
            vmid = answer.json["vmid"]
            if vmid:
                self.assertNotIn(vmid, created)
                created[vmid] = (tid, name)
            else:
                self.assertTrue(answer.reason, answer)
                self.assertNotIn("internal error", answer.reason)
                refused += 1
        # The outage did hit the burst (the held builds at least), and did not stop all of it.
        self.assertGreaterEqual(refused, HELD)
        self.assertGreater(len(created), 2 + HELD)
        return daemon, created, refused

    async def test_creates_across_outage_acknowledged_kept(self):
        """
        Creates in flight while Redis stops and restarts are each answered a vmid (the VM
        then runs on its PM, listed there once) or {"vmid": 0} having left no domain.
        """
        daemon, created, _ = await self.burst_across_outage()
        fleet_id = daemon.fleet.fleet_id
        placed: dict[int, int] = {}
        for pmid in range(1, len(SIZES) + 1):
            for vmid in (await self.json(f"/pm/listvms?pmid={pmid}"))["vmids"]:
                self.assertNotIn(vmid, placed, f"vm {vmid} listed on two PMs")
                placed[vmid] = pmid
        for vmid, (tid, name) in created.items():
            self.assertIn(vmid, placed, f"acknowledged vm {vmid} is not listed")
            self.assertEqual(
                await self.json(f"/vm/query?vmid={vmid}"),
                {"vmid": vmid, "name": name, "instance_type": tid, "pmid": placed[vmid]},
            )
        for pmid in range(1, len(SIZES) + 1):
            domains = await self.domains(daemon, pmid)
            mine = {domain_name(fleet_id, v): v for v, p in placed.items() if p == pmid}
            acknowledged = {d for d, v in mine.items() if v in created}
            self.assertEqual(set(domains), acknowledged, f"PM {pmid}: domains")
            for dom, meta in domains.items():
                vmid = mine[dom]
                self.assertTrue(meta["running"], dom)
                self.assertEqual(
                    (meta["vmid"], meta["pmid"], meta["name"], meta["flavor"].tid),
                    (vmid, pmid, created[vmid][1], created[vmid][0]),
                )
        # Creates and destroys work again.
        vmid = await self.create("after", 2)
        self.assertGreater(vmid, max(created))
        for old in (vmid, *sorted(created)):
            self.assertEqual(await self.json(f"/vm/destroy?vmid={old}"), {"status": 1})
        for pmid in range(1, len(SIZES) + 1):
            self.assertEqual(await self.domains(daemon, pmid), {})
        self.assertNoTracebacks()

    async def test_creates_across_outage_leave_no_claim(self):
        """
        A create answered {"vmid": 0} because Redis failed mid-way leaves no claim and no
        record once Redis is back: Redis holds the acknowledged VMs only, and every PM's
        free room is its capacity minus their flavors.
        """
        daemon, created, _ = await self.burst_across_outage()
        # Allow the daemon a moment, once Redis is back, to roll back what it could not
        # during the outage.
        store = daemon.fleet.store
        start = time.monotonic()
        while await store.all_vmids() != sorted(created):
            if time.monotonic() - start > SETTLE:
                left = {v: await store.vm(v) for v in await store.all_vmids() if v not in created}
                self.fail(f"refused creates left claims or VMs behind: {left}")
            await task.deferLater(reactor, 0.5, lambda: None)
        await self.check_fleet(daemon, created)
        for vmid in sorted(created):
            self.assertEqual(await self.json(f"/vm/destroy?vmid={vmid}"), {"status": 1})
        await self.check_fleet(daemon, {})

    async def test_daemon_started_while_redis_down(self):
        """
        A daemon started while Redis is down answers the failure values, then loads the
        inventory once Redis comes up and serves normally.
        """
        daemon = self.make_daemon()
        daemon.launch()
        start = time.monotonic()
        while daemon.fleet_service.port is None:
            self.assertLess(time.monotonic() - start, 30, "the REST port never opened")
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(daemon.fleet_service.loaded.called)
        self.client = LoopbackClient(daemon)
        self.addCleanup(self.client.close)
        await self.check_failure_values(1)

        await self.redis_up()
        loaded = daemon.fleet_service.loaded
        loaded.addTimeout(RECOVERY_BOUND, reactor)
        await loaded
        await self.wait_serving()
        self.assertEqual(await self.json("/vm/types"), {"types": FLAVORS})
        self.assertEqual(await self.json("/image/list"), {"images": [{"id": 1, "name": "hello"}]})
        await self.check_fleet(daemon, {})
        vmid = await self.create("late", 3)
        self.assertGreater(vmid, 0)
        await self.check_fleet(daemon, {vmid: (3, "late")})
        self.assertEqual(await self.json(f"/vm/destroy?vmid={vmid}"), {"status": 1})
        await self.check_fleet(daemon, {})
        self.assertNoTracebacks()
