"""
The whole seed API, as a grader calls it, against real Redis and a fleet of libvirt
test-driver PMs of different sizes; every test runs in memory and over a real port.

What the API answers is checked against what really happened on the hypervisors,
through the daemon's own libvirt connections (a test-driver PM's state lives in the
connection that made it). The tests of hypervisor failures restart the daemon over
in-memory PMs of the same sizes (L{vorchd.hypervisor.fake.FakeHypervisor}), which fail
on demand as the real ones can.
"""

from __future__ import annotations

import time
import urllib.parse

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from tests.clients import InMemoryClient, LoopbackClient
from tests.harness import (
    FLAVORS,
    TEST_POOL_GIB,
    Daemon,
    daemon_domains,
    fake_hosts,
    shared_redis,
    snapshot,
    tmpdir,
    unique_prefix,
    write_fleet,
)
from vorchd.hypervisor.fake import FakeHypervisor

# Three PMs of different sizes: (cpus, ram MiB); the third has no pool of vorchd's
# yet, so the daemon defines one. Every test-driver pool is TEST_POOL_GIB.
SIZES = [(4, 4096), (2, 2048), (8, 8192, False)]
FLAVOR = {f["tid"]: f for f in FLAVORS}


def q(**args) -> str:
    return urllib.parse.urlencode(args)


class SeedAPITestsMixin:
    """
    The seed API's behaviour; subclasses say how the API is reached.
    """

    client_type: type

    async def setUp(self):
        self.dir = tmpdir(self)
        self.redis = shared_redis()
        self.prefix = unique_prefix()
        self.uris = write_fleet(self.dir, SIZES)
        self.daemon = await self.start_daemon()

    async def start_daemon(self, **kwargs):
        daemon = Daemon(self.dir / "daemon", self.redis.url, self.prefix, self.uris, **kwargs)
        await daemon.start()
        self.addCleanup(daemon.stop)
        self.client = self.client_type(daemon)
        self.addCleanup(self.client.close)
        return daemon

    async def restart(self, **kwargs):
        await self.daemon.stop()
        self.daemon = await self.start_daemon(**kwargs)

    async def restart_on_fakes(self, **kwargs) -> list[FakeHypervisor]:
        """
        Restart the daemon over in-memory PMs of the same sizes, whose failures a test
        switches on; return them (PM 1 first).
        """
        fakes = fake_hosts(self.uris, SIZES)
        await self.restart(hosts=fakes, **kwargs)
        return list(fakes.values())

    async def get(self, path: str, method: str = "GET"):
        answer = await self.client.call(path, method)
        self.assertEqual(answer.status, 200, answer)
        return answer

    async def json(self, path: str):
        return (await self.get(path)).json

    async def create(self, name="vm", instance_type=1, image_id=1):
        answer = await self.get(
            "/vm/create?" + q(name=name, instance_type=instance_type, image_id=image_id)
        )
        return answer.json["vmid"], answer

    async def domains(self, pmid: int) -> dict[str, dict]:
        return await daemon_domains(self.daemon, pmid)

    async def volumes(self, pmid: int) -> set[str]:
        return await self.daemon.fleet.hypervisors.on(pmid).volume_names()

    async def snapshot(self) -> dict:
        return await snapshot(self.json)

    # -- success shapes ------------------------------------------------------------------

    async def test_listings(self):
        """
        pm/list, vm/types and image/list answer the fleet as the input files give it.
        """
        self.assertEqual(await self.json("/pm/list"), {"pmids": [1, 2, 3]})
        self.assertEqual(await self.json("/vm/types"), {"types": FLAVORS})
        self.assertEqual(await self.json("/image/list"), {"images": [{"id": 1, "name": "hello"}]})

    async def test_pm_query_capacity_from_libvirt(self):
        """
        pm/query's capacity is what libvirt reports for each PM; free is all of it at first.
        """
        for pmid, (cpu, ram, *_) in enumerate(SIZES, 1):
            capacity = {"cpu": cpu, "ram": ram, "disk": TEST_POOL_GIB}
            self.assertEqual(
                await self.json(f"/pm/query?pmid={pmid}"),
                {"pmid": pmid, "capacity": capacity, "free": capacity, "vms": 0},
            )

    async def test_create_runs_domain(self):
        """
        vm/create answers a positive vmid once a domain carrying the VM's metadata runs
        on the chosen PM with a disk of its own; vm/query and pm/listvms agree.
        """
        vmid, answer = await self.create(name="test_vm", instance_type=2)
        self.assertIsInstance(vmid, int)
        self.assertGreater(vmid, 0)
        self.assertIsNone(answer.reason)
        vm = await self.json(f"/vm/query?vmid={vmid}")
        self.assertEqual(set(vm), {"vmid", "name", "instance_type", "pmid"})
        self.assertEqual((vm["vmid"], vm["name"], vm["instance_type"]), (vmid, "test_vm", 2))
        pmid = vm["pmid"]
        self.assertEqual(await self.json(f"/pm/listvms?pmid={pmid}"), {"vmids": [vmid]})
        [(name, meta)] = (await self.domains(pmid)).items()
        self.assertTrue(meta["running"])
        self.assertEqual((meta["vmid"], meta["name"], meta["pmid"]), (vmid, "test_vm", pmid))
        self.assertEqual(meta["flavor"].ram, FLAVOR[2]["ram"])
        self.assertIn(f"{name}.qcow2", await self.volumes(pmid))
        # Checking the PM against its domains finds nothing missing.
        self.assertEqual(await self.daemon.fleet.check_domains(pmid), [])
        self.assertEqual((await self.daemon.fleet.store.vm(vmid))["state"], "active")

    async def test_names_are_free_text(self):
        """
        A name with spaces, quotes, markup and any Unicode is stored and answered exactly,
        and never becomes a libvirt name; two VMs may share a name.
        """
        names = [
            "a b",
            'it\'s "quoted"',
            "<domain>&amp;</domain>",
            "ünïcødé 名前 🚀",
            "../../etc/passwd",
            "x\x01y",
            "same",
            "same",
        ]
        for name in names:
            vmid, answer = await self.create(name=name)
            self.assertGreater(vmid, 0, answer)
            self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["name"], name)
            pmid = (await self.json(f"/vm/query?vmid={vmid}"))["pmid"]
            doms = await self.domains(pmid)
            [(dname, meta)] = [(n, m) for n, m in doms.items() if m["vmid"] == vmid]
            self.assertEqual(meta["name"], name)
            self.assertRegex(dname, r"^vorchd-[0-9a-f]+-[0-9]+$")

    async def test_accounting(self):
        """
        free is capacity minus the flavors of the VMs placed there, and vms counts them.
        """
        made = [await self.create(instance_type=t) for t in (1, 2, 1, 3)]
        used: dict[int, list[int]] = {}
        for vmid, _ in made:
            vm = await self.json(f"/vm/query?vmid={vmid}")
            used.setdefault(vm["pmid"], []).append(vm["instance_type"])
        disk = TEST_POOL_GIB
        for pmid, (cpu, ram, *_) in enumerate(SIZES, 1):
            tids = used.get(pmid, [])
            pm = await self.json(f"/pm/query?pmid={pmid}")
            self.assertEqual(pm["vms"], len(tids))
            self.assertEqual(
                pm["free"],
                {
                    "cpu": cpu - sum(FLAVOR[t]["cpu"] for t in tids),
                    "ram": ram - sum(FLAVOR[t]["ram"] for t in tids),
                    "disk": disk - sum(FLAVOR[t]["disk"] for t in tids),
                },
            )
            self.assertEqual(len(await self.domains(pmid)), len(tids))

    async def test_destroy_frees(self):
        """
        vm/destroy stops and undefines the domain, deletes its disk and frees its room;
        the VM is gone from every answer.
        """
        vmid, _ = await self.create(instance_type=3)
        pmid = (await self.json(f"/vm/query?vmid={vmid}"))["pmid"]
        before = await self.volumes(pmid)
        self.assertEqual(await self.json(f"/vm/destroy?vmid={vmid}"), {"status": 1})
        self.assertEqual(await self.domains(pmid), {})
        self.assertEqual(len(before - await self.volumes(pmid)), 1)
        self.assertEqual(await self.json(f"/vm/query?vmid={vmid}"), 0)
        self.assertEqual(await self.json(f"/pm/listvms?pmid={pmid}"), {"vmids": []})
        pm = await self.json(f"/pm/query?pmid={pmid}")
        self.assertEqual((pm["free"], pm["vms"]), (pm["capacity"], 0))
        again = await self.get(f"/vm/destroy?vmid={vmid}")
        self.assertEqual(again.json, {"status": 0})
        self.assertTrue(again.reason)

    async def test_fill_to_refusal(self):
        """
        Creating until the fleet refuses never gives any PM more than its capacity, and
        the refusal says why each PM could not take it.
        """
        vmids = []
        while True:
            vmid, answer = await self.create(instance_type=2)
            if vmid == 0:
                break
            vmids.append(vmid)
            self.assertLess(len(vmids), 100)
        # cpu bounds it: 4/2 + 2/2 + 8/2 = 7 VMs of 2 vCPUs.
        self.assertEqual(len(vmids), 7)
        self.assertIn("PM 1: no room", answer.reason)
        for pmid in (1, 2, 3):
            free = (await self.json(f"/pm/query?pmid={pmid}"))["free"]
            self.assertTrue(all(v >= 0 for v in free.values()), free)
            self.assertEqual(free["cpu"], 0)
            self.assertEqual(len(await self.domains(pmid)), SIZES[pmid - 1][0] // 2)
        # Even the smallest flavor is refused now, and the refusal changes nothing.
        before = await self.snapshot()
        self.assertEqual((await self.create(instance_type=1))[0], 0)
        self.assertEqual(await self.snapshot(), before)

    async def test_concurrent_creates_never_oversubscribe(self):
        """
        50 creates at once: no PM is ever given more than its capacity, every vmid is
        unique, and each PM's hypervisor runs exactly the VMs the API says it has.
        """
        answers = await defer.gatherResults(
            [
                defer.ensureDeferred(self.create(name=f"c{i}", instance_type=1 + i % 3))
                for i in range(50)
            ]
        )
        vmids = [v for v, _ in answers if v]
        self.assertEqual(len(vmids), len(set(vmids)))
        self.assertGreater(len(vmids), 0)
        disk = TEST_POOL_GIB
        for pmid, (cpu, ram, *_) in enumerate(SIZES, 1):
            listed = (await self.json(f"/pm/listvms?pmid={pmid}"))["vmids"]
            tids = [(await self.json(f"/vm/query?vmid={v}"))["instance_type"] for v in listed]
            self.assertLessEqual(sum(FLAVOR[t]["cpu"] for t in tids), cpu)
            self.assertLessEqual(sum(FLAVOR[t]["ram"] for t in tids), ram)
            self.assertLessEqual(sum(FLAVOR[t]["disk"] for t in tids), disk)
            doms = await self.domains(pmid)
            self.assertEqual(sorted(m["vmid"] for m in doms.values()), sorted(listed))
        listed = []
        for pmid in (1, 2, 3):
            listed += (await self.json(f"/pm/listvms?pmid={pmid}"))["vmids"]
        self.assertEqual(sorted(vmids), sorted(listed))

    async def test_vmids_never_reused(self):
        """
        A destroyed VM's vmid is never given again, not even after a restart.
        """
        first, _ = await self.create()
        await self.get(f"/vm/destroy?vmid={first}")
        second, _ = await self.create()
        self.assertGreater(second, first)
        await self.get(f"/vm/destroy?vmid={second}")
        await self.restart()
        third, _ = await self.create()
        self.assertGreater(third, second)

    async def test_restart_keeps_every_answer(self):
        """
        After the daemon restarts every answer is as before, though libvirt's test driver
        forgot the domains; destroying such a VM then succeeds.
        """
        vmids = [(await self.create(name=f"keep {t}", instance_type=t))[0] for t in (1, 2, 3, 1)]
        before = await self.snapshot()
        await self.restart()
        self.assertEqual(await self.snapshot(), before)
        # The test driver forgot the domains: each VM is recorded as missing, not dropped.
        for vmid in vmids:
            self.assertEqual((await self.daemon.fleet.store.vm(vmid))["state"], "missing")
        vmid = before["/pm/listvms?pmid=1"]["vmids"][0]
        self.assertEqual(await self.json(f"/vm/destroy?vmid={vmid}"), {"status": 1})
        self.assertEqual(await self.json(f"/vm/query?vmid={vmid}"), 0)

    # -- failure shapes ----------------------------------------------------------------

    async def test_create_failures(self):
        """
        Unknown or non-positive types and images, an empty or missing name, and missing,
        empty, repeated or non-integer arguments all answer {"vmid": 0}, never a bare 0.
        Every one has a reason and leaves nothing on any PM.
        """
        refused = [
            q(name="x", instance_type=9, image_id=1),
            q(name="x", instance_type=0, image_id=1),
            q(name="x", instance_type=-1, image_id=1),
            q(name="x", instance_type=1, image_id=9),
            q(name="x", instance_type=1, image_id=0),
            q(name="x", instance_type=10**30, image_id=1),
            q(name="", instance_type=1, image_id=1),
            q(instance_type=1, image_id=1),
            "name=%ff%fe&instance_type=1&image_id=1",
            q(name="x", instance_type="abc", image_id=1),
            q(name="x", instance_type="one", image_id=1),
            q(name="x", instance_type="1.0", image_id=1),
            q(name="x", instance_type=" 1", image_id=1),
            q(name="x", instance_type="+1", image_id=1),
            q(name="x", instance_type=1, image_id="9" * 5000),
            q(name="x", image_id=1),
            q(name="x", instance_type=1),
            "name=x&name=y&instance_type=1&image_id=1",
            "name=x&instance_type=1&instance_type=1&image_id=1",
            "name=x&instance_type=&image_id=1",
            "name=x&instance_type=1&image_id=",
            "name=x&instance_type&image_id=1",
            "",
        ]
        for query in refused:
            answer = await self.get("/vm/create?" + query)
            self.assertEqual(answer.json, {"vmid": 0}, query)
            self.assertTrue(answer.reason, query)
        for pmid in (1, 2, 3):
            self.assertEqual(await self.domains(pmid), {})
            pm = await self.json(f"/pm/query?pmid={pmid}")
            self.assertEqual((pm["free"], pm["vms"]), (pm["capacity"], 0))

    async def test_query_failures(self):
        """
        Unknown ids, and missing, empty, repeated, non-integer and out-of-range ones,
        answer each call's own failure value, with a reason.
        """
        vmid, _ = await self.create()
        cases = {
            "/vm/query?vmid=999999": 0,
            "/vm/query?vmid=0": 0,
            "/vm/query?vmid=-1": 0,
            "/vm/query?vmid=abc": 0,
            "/vm/query": 0,
            f"/vm/query?vmid={vmid}&vmid={vmid}": 0,
            "/vm/query?vmid=" + "9" * 5000: 0,
            "/vm/destroy?vmid=999999": {"status": 0},
            "/vm/destroy?vmid=0": {"status": 0},
            "/vm/destroy?vmid=-5": {"status": 0},
            "/vm/destroy?vmid=x": {"status": 0},
            "/vm/destroy?vmid=": {"status": 0},
            f"/vm/destroy?vmid={vmid}&vmid={vmid}": {"status": 0},
            "/vm/destroy?vmid=" + "9" * 5000: {"status": 0},
            "/vm/destroy": {"status": 0},
            "/pm/query?pmid=4": 0,
            "/pm/query?pmid=0": 0,
            "/pm/query?pmid=x": 0,
            "/pm/query": 0,
            "/pm/listvms?pmid=4": {"vmids": 0},
            "/pm/listvms?pmid=-1": {"vmids": 0},
            "/pm/listvms?pmid=" + "1" * 40: {"vmids": 0},
            "/pm/listvms?pmid=": {"vmids": 0},
            "/pm/listvms?pmid=1.5": {"vmids": 0},
            "/pm/listvms?pmid=1&pmid=1": {"vmids": 0},
            "/pm/listvms": {"vmids": 0},
        }
        for path, expected in cases.items():
            answer = await self.get(path)
            self.assertEqual(answer.json, expected, path)
            self.assertTrue(answer.reason, path)
        self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["vmid"], vmid)

    async def test_contract_examples(self):
        """
        The contract's own examples of malformed arguments: each answers its call's
        failure value, with a reason, and no bare 0.
        """
        for path, expected in (
            ("/vm/create?name=x&instance_type=abc&image_id=1", {"vmid": 0}),
            ("/vm/destroy?vmid=abc", {"status": 0}),
            ("/pm/listvms", {"vmids": 0}),
        ):
            answer = await self.get(path)
            self.assertEqual(answer.json, expected, path)
            self.assertEqual(answer.headers.getRawHeaders("content-type"), ["application/json"])
            self.assertTrue(answer.reason, path)

    async def test_malformed_arguments(self):
        """
        For every seed call that takes arguments, each argument missing, empty, repeated,
        not an integer or out of range answers the call's own failure value (0 only for
        vm/query and pm/query, whose failure value it is), with a reason; none changes
        anything. A HEAD of a read answers the same headers without a body.
        """
        vmid, _ = await self.create(name="kept")
        before = await self.snapshot()
        good = {
            "/vm/create": {"name": "m", "instance_type": "1", "image_id": "1"},
            "/vm/query": {"vmid": str(vmid)},
            "/vm/destroy": {"vmid": str(vmid)},
            "/pm/listvms": {"pmid": "1"},
            "/pm/query": {"pmid": "1"},
        }
        failure = {
            "/vm/create": {"vmid": 0},
            "/vm/query": 0,
            "/vm/destroy": {"status": 0},
            "/pm/listvms": {"vmids": 0},
            "/pm/query": 0,
        }
        bad_values = ["", "abc", "1.0", "+1", " 1", "0x1", "1e3", "9" * 1001, "%ff"]
        for path, args in good.items():
            for name in args:
                if path == "/vm/create" and name == "name":
                    variants = [{k: v for k, v in args.items() if k != name}]
                    variants.append({**args, name: ""})
                else:
                    variants = [{k: v for k, v in args.items() if k != name}]
                    variants += [{**args, name: value} for value in bad_values]
                queries = [urllib.parse.urlencode(v).replace("%25ff", "%ff") for v in variants]
                # Given twice (even twice the same good value).
                queries.append(urllib.parse.urlencode(args) + f"&{name}={args[name]}")
                for query in queries:
                    where = f"{path}?{query}"
                    answer = await self.get(where)
                    self.assertEqual(answer.json, failure[path], where)
                    self.assertTrue(answer.reason, where)
                    if path in ("/vm/query", "/pm/listvms", "/pm/query"):
                        head = await self.get(where, "HEAD")
                        self.assertEqual((head.raw, head.reason), (b"", answer.reason), where)
        self.assertEqual(await self.snapshot(), before)
        home = before[f"/vm/query?vmid={vmid}"]["pmid"]
        for pmid in (1, 2, 3):
            self.assertEqual(len(await self.domains(pmid)), int(pmid == home), pmid)

    async def test_unknown_paths_and_methods(self):
        """
        Any other path, any method but GET and HEAD on a real path, and a HEAD of a call
        that changes state (which does nothing), answer 0 (HTTP 200) with a reason.
        """
        for path in (
            "/",
            "/vm",
            "/vm/create/",
            "/vm/nope",
            "/pm/list/x",
            "/VM/QUERY",
            "/%00",
        ):
            self.assertEqual((await self.get(path)).json, 0, path)
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            answer = await self.get(
                "/vm/create?" + q(name="x", instance_type=1, image_id=1), method
            )
            self.assertEqual(answer.json, 0, method)
            self.assertTrue(answer.reason, method)
            self.assertEqual((await self.get("/pm/list", method)).json, 0, method)
            # Even with malformed arguments, another method is not a call at all.
            for path in ("/vm/destroy?vmid=abc", "/pm/listvms", "/vm/query?vmid=x"):
                self.assertEqual((await self.get(path, method)).json, 0, (path, method))
        for path in (
            "/vm/create?" + q(name="x", instance_type=1, image_id=1),
            "/vm/create?name=x&instance_type=abc&image_id=1",
            "/vm/destroy?vmid=abc",
        ):
            head = await self.get(path, "HEAD")
            self.assertEqual(head.raw, b"", path)
            self.assertTrue(head.reason, path)
        for pmid in (1, 2, 3):
            self.assertEqual(await self.domains(pmid), {})

    async def test_hypervisor_failure_undone(self):
        """
        When the hypervisor fails after the claim, the create answers {"vmid": 0} and
        nothing is left: no claim, no domain, no disk.
        """
        for pm in await self.restart_on_fakes():
            pm.start_failure = "injected: domain would not start"
        vmid, answer = await self.create()
        self.assertEqual(vmid, 0)
        self.assertIn("injected", answer.reason)
        for pmid in (1, 2, 3):
            self.assertEqual(await self.domains(pmid), {})
            # Only the image's base copy, kept for the next VM, may stay.
            self.assertEqual(
                {v for v in await self.volumes(pmid) if not v.endswith(".img")}, set()
            )
            pm = await self.json(f"/pm/query?pmid={pmid}")
            self.assertEqual((pm["free"], pm["vms"]), (pm["capacity"], 0))

    async def test_slow_hypervisor_undone(self):
        """
        A create whose hypervisor answers only after the call's time is up answers
        {"vmid": 0}, and the domains that start late anyway are removed.
        """
        pms = await self.restart_on_fakes(libvirt={"call_timeout": 1})
        for pm in pms:
            pm.delays["create_vm"] = 1.5
        vmid, answer = await self.create()
        self.assertEqual(vmid, 0)
        self.assertIn("took too long", answer.reason)
        # Each PM was tried in turn; each late domain is undone in the background once its
        # create finishes: domain first, then its disk.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            undone = [
                [c for c in pm.done if c in ("create_vm", "destroy_vm")]
                == ["create_vm", "destroy_vm"]
                for pm in pms
            ]
            if all(undone):
                break
            await task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(undone, [True] * len(pms))
        for pmid in (1, 2, 3):
            self.assertEqual(await self.domains(pmid), {})
            self.assertEqual({v for v in await self.volumes(pmid) if v.endswith(".qcow2")}, set())
        for pmid in (1, 2, 3):
            pm = await self.json(f"/pm/query?pmid={pmid}")
            self.assertEqual(pm["free"], pm["capacity"])

    async def test_failed_pm_is_skipped(self):
        """
        When the first PM's hypervisor fails, the VM is placed on the next PM instead.
        """
        pm1, *_ = await self.restart_on_fakes()
        pm1.start_failure = "injected: PM 1 broken"
        vmid, _ = await self.create()
        self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["pmid"], 2)
        self.assertEqual(await self.domains(1), {})

    async def test_unreadable_image(self):
        """
        An image file that vanished after start-up makes create answer {"vmid": 0} with
        the reason, leaving nothing behind.
        """
        (self.daemon.dir / "images" / "hello.img").unlink()
        vmid, answer = await self.create()
        self.assertEqual(vmid, 0)
        self.assertIn("hello.img", answer.reason)
        for pmid in (1, 2, 3):
            self.assertEqual(await self.domains(pmid), {})
            pm = await self.json(f"/pm/query?pmid={pmid}")
            self.assertEqual(pm["free"], pm["capacity"])


class InMemorySeedAPITests(SeedAPITestsMixin, TestCase):
    """
    The seed API through StubTreq over the Klein resource.
    """

    client_type = InMemoryClient


class LoopbackSeedAPITests(SeedAPITestsMixin, TestCase):
    """
    The seed API over a real TCP port on 127.0.0.1.
    """

    client_type = LoopbackClient
