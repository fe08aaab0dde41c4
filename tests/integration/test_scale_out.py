"""
Scale-out: two daemons sharing one real Redis serve one fleet of libvirt test-driver PMs
under hundreds of concurrent creates, and nothing is lost or double-booked.

libvirt's test driver keeps its state per connection, so each daemon has its own simulated
copy of every PM: a VM's domain lives in the connection of the daemon that created it,
while the accounting (claims, vmids, listings) is shared through Redis, which is what is
checked here.
"""

from __future__ import annotations

import random
import time
import urllib.parse

from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.clients import LoopbackClient
from tests.harness import (
    FLAVORS,
    TEST_POOL_GIB,
    Daemon,
    daemon_domains,
    shared_redis,
    tmpdir,
    unique_prefix,
    write_fleet,
)
from vorchd.bootimage import write_image
from vorchd.domain import domain_name

# (cpus, ram MiB); every test-driver pool is TEST_POOL_GIB. Every flavor asks 512 MiB per
# vCPU, so PMs with less RAM than that are RAM-bound, the big ones disk-bound, the rest
# CPU-bound. In all a bit under half of the creates below fit.
SIZES = [
    (32, 16384),
    (64, 16384),
    (96, 65536),
    (48, 24576),
    (80, 20480),
    (16, 8192),
    (128, 131072),
    (40, 40960),
    (112, 28672),
    (56, 57344),
]
FLAVOR = {f["tid"]: f for f in FLAVORS}
RESOURCES = ("cpu", "ram", "disk")
CREATES = 500
IN_FLIGHT = 50  # per daemon


def q(**args) -> str:
    return urllib.parse.urlencode(args)


class ScaleOutTests(TestCase):
    """
    Two in-process daemons (each with its own Redis pool, libvirt connections and REST
    port) on one shared Redis and one key prefix.
    """

    timeout = 180

    async def setUp(self):
        self.dir = tmpdir(self)
        # Tracebacks the daemons log, and builds that failed on a hypervisor.
        self.failures, self.build_failures = [], []

        def observe(event):
            if "log_failure" in event:
                self.failures.append(formatEvent(event))
            elif "on PM {pmid} failed" in event.get("log_format", ""):
                self.build_failures.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.prefix = unique_prefix()
        self.uris = write_fleet(self.dir, SIZES)
        # Daemons of one fleet are given the same files, the image included.
        image = self.dir / "hello.img"
        write_image(image)
        self.daemons = []
        self.clients = []
        for name in ("a", "b"):
            daemon = Daemon(
                self.dir / name,
                shared_redis().url,
                self.prefix,
                self.uris,
                image_lines=[str(image)],
            )
            await daemon.start()
            self.addCleanup(daemon.stop)
            client = LoopbackClient(daemon)
            self.addCleanup(client.close)
            self.daemons.append(daemon)
            self.clients.append(client)

    async def json(self, client, path: str):
        answer = await client.call(path)
        self.assertEqual(answer.status, 200, answer)
        return answer.json

    async def domains(self, daemon: Daemon, pmid: int) -> dict[str, dict]:
        return await daemon_domains(daemon, pmid)

    async def fan_out(self, calls):
        """
        Run C{(daemon index, path)} calls, at most IN_FLIGHT at a time per daemon, all
        daemons at once; return each call's answer in order.
        """
        limits = [defer.DeferredSemaphore(IN_FLIGHT) for _ in self.daemons]

        async def one(i, path):
            return await self.clients[i].call(path)

        return await defer.gatherResults(
            [
                limits[i].run(lambda i=i, path=path: defer.ensureDeferred(one(i, path)))
                for i, path in calls
            ],
            consumeErrors=True,
        )

    async def test_concurrent_creates_over_two_daemons(self):
        """
        500 concurrent mixed creates split over two daemons never put more than its
        capacity on a PM, give unique vmids, are refused only when nothing fits, and
        both daemons answer every VM and PM identically.
        """
        rng = random.Random(4711)
        tids = [rng.choice(sorted(FLAVOR)) for _ in range(CREATES)]
        calls = [
            (n % 2, "/vm/create?" + q(name=f"vm {n}", instance_type=tid, image_id=1))
            for n, tid in enumerate(tids)
        ]
        start = time.monotonic()
        answers = await self.fan_out(calls)
        elapsed = time.monotonic() - start

        created: dict[int, tuple[int, int, str]] = {}  # vmid -> (daemon, tid, name)
        refused: list[tuple[int, object]] = []  # (tid, answer)
        for n, (tid, answer) in enumerate(zip(tids, answers, strict=True)):
            self.assertEqual(answer.status, 200, answer)
            self.assertEqual(set(answer.json), {"vmid"}, answer)
            vmid = answer.json["vmid"]
            self.assertIsInstance(vmid, int)
            self.assertGreaterEqual(vmid, 0, answer)
            if vmid == 0:
                self.assertTrue(answer.reason, answer)
                self.assertNotIn("internal error", answer.reason)
                refused.append((tid, answer))
            else:
                self.assertNotIn(vmid, created, "vmid handed out twice")
                created[vmid] = (n % 2, tid, f"vm {n}")
        # The fleet is sized so that many fit and some do not.
        self.assertGreater(len(created), CREATES // 3, f"{len(created)} created")
        self.assertTrue(refused, "the fleet was sized to refuse some creates")
        print(f"\n{len(created)} created, {len(refused)} refused in {elapsed:.1f} s")

        a, b = self.clients
        pmids = (await self.json(a, "/pm/list"))["pmids"]
        self.assertEqual(pmids, list(range(1, len(SIZES) + 1)))
        self.assertEqual(await self.json(b, "/pm/list"), {"pmids": pmids})

        placed: dict[int, int] = {}  # vmid -> pmid, from the listings
        frees: dict[int, dict] = {}
        for pmid, (cpu, ram) in zip(pmids, SIZES, strict=True):
            listed = await self.json(a, f"/pm/listvms?pmid={pmid}")
            self.assertEqual(await self.json(b, f"/pm/listvms?pmid={pmid}"), listed)
            vmids = listed["vmids"]
            self.assertEqual(vmids, sorted(set(vmids)))
            for vmid in vmids:
                self.assertNotIn(vmid, placed, f"vm {vmid} listed on two PMs")
                placed[vmid] = pmid
            used = {r: sum(FLAVOR[created[v][1]][r] for v in vmids) for r in RESOURCES}
            capacity = {"cpu": cpu, "ram": ram, "disk": TEST_POOL_GIB}
            for r in RESOURCES:
                self.assertLessEqual(used[r], capacity[r], f"PM {pmid} overbooked on {r}")
            pm = await self.json(a, f"/pm/query?pmid={pmid}")
            self.assertEqual(await self.json(b, f"/pm/query?pmid={pmid}"), pm)
            frees[pmid] = {r: capacity[r] - used[r] for r in RESOURCES}
            self.assertEqual(
                pm,
                {"pmid": pmid, "capacity": capacity, "free": frees[pmid], "vms": len(vmids)},
            )
        # Every acknowledged VM is listed, and nothing else is.
        self.assertEqual(sorted(placed), sorted(created))

        # A create was refused only when its flavor fitted nowhere: room only shrank
        # during the run (no build failed, nothing was destroyed), so room left now was
        # room then.
        for tid, answer in refused:
            for pmid, room in frees.items():
                fits = all(room[r] >= FLAVOR[tid][r] for r in RESOURCES)
                self.assertFalse(
                    fits,
                    f"flavor {tid} refused but fits PM {pmid}: {answer}"
                    f" (failed builds: {self.build_failures})",
                )

        # Both daemons answer every VM the same, as it was created.
        queries = [(i, f"/vm/query?vmid={vmid}") for vmid in sorted(created) for i in range(2)]
        answers = await self.fan_out(queries)
        for (i, path), answer in zip(queries, answers, strict=True):
            vmid = int(path.rsplit("=", 1)[1])
            _, tid, name = created[vmid]
            self.assertEqual(answer.status, 200, answer)
            self.assertEqual(
                answer.json,
                {"vmid": vmid, "name": name, "instance_type": tid, "pmid": placed[vmid]},
                f"daemon {i}",
            )

        # Each VM runs as a domain in the connection of the daemon that created it, on its
        # PM, and no PM has a domain of anything else (refusals left nothing behind).
        fleet_id = self.daemons[0].fleet.fleet_id
        self.assertEqual(self.daemons[1].fleet.fleet_id, fleet_id)
        for i, daemon in enumerate(self.daemons):
            for pmid in pmids:
                domains = await self.domains(daemon, pmid)
                mine = {
                    domain_name(fleet_id, v): v
                    for v, p in placed.items()
                    if p == pmid and created[v][0] == i
                }
                self.assertEqual(set(domains), set(mine), f"daemon {i}, PM {pmid}")
                for dom, meta in domains.items():
                    vmid = mine[dom]
                    self.assertTrue(meta["running"], dom)
                    self.assertEqual(
                        (meta["vmid"], meta["pmid"], meta["name"], meta["flavor"].tid),
                        (vmid, pmid, created[vmid][2], created[vmid][1]),
                    )

        # Destroying everything (each VM through the daemon holding its domain) gives
        # every PM all of its room back, and leaves no domain anywhere.
        destroys = [(created[v][0], f"/vm/destroy?vmid={v}") for v in sorted(created)]
        for answer in await self.fan_out(destroys):
            self.assertEqual((answer.status, answer.json), (200, {"status": 1}), answer)
        for pmid, (cpu, ram) in zip(pmids, SIZES, strict=True):
            capacity = {"cpu": cpu, "ram": ram, "disk": TEST_POOL_GIB}
            for client in self.clients:
                self.assertEqual(
                    await self.json(client, f"/pm/query?pmid={pmid}"),
                    {"pmid": pmid, "capacity": capacity, "free": capacity, "vms": 0},
                )
                self.assertEqual(
                    await self.json(client, f"/pm/listvms?pmid={pmid}"), {"vmids": []}
                )
            for daemon in self.daemons:
                self.assertEqual(await self.domains(daemon, pmid), {})
        self.assertEqual(self.failures, [], "the daemons logged tracebacks")
