"""
The calls on running VMs, beside the seed API: vm/info, vm/stop, vm/start, vm/reboot,
vm/suspend, vm/resume, vm/resize and vm/migrate, against real Redis and a fleet of libvirt
test-driver PMs, in memory and over a real port.

Each answers {"status": 1} once done, or {"status": 0} with the reason in X-Vorchd-Reason
(vm/info answers the VM as its hypervisor has it); malformed or missing arguments answer
{"status": 0} too, other methods 0, and a HEAD of a call that changes state does nothing.
What they did is checked against the hypervisors, through the daemon's own libvirt
connections, and the seed API's answers keep their exact keys throughout.
"""

from __future__ import annotations

import urllib.parse

from twisted.trial.unittest import TestCase

from tests.clients import InMemoryClient, LoopbackClient
from tests.harness import (
    FLAVORS,
    Daemon,
    daemon_domains,
    fake_hosts,
    shared_redis,
    snapshot,
    tmpdir,
    unique_prefix,
    write_fleet,
)
from vorchd import openapi

# Two PMs of different sizes, (cpus, ram MiB): flavor 3 (4 CPUs) fits on the second only.
SIZES = [(2, 4096), (8, 8192)]
FLAVOR = {f["tid"]: f for f in FLAVORS}
ACTIONS = ("stop", "start", "reboot", "suspend", "resume")
CHANGING = [f"/vm/{a}" for a in ACTIONS] + ["/vm/resize", "/vm/migrate"]
INFO_KEYS = {"vmid", "name", "instance_type", "pmid", "image_id", "state", "domain", "mac", "ips"}
SEED_VM_KEYS = {"vmid", "name", "instance_type", "pmid"}


def q(**args) -> str:
    return urllib.parse.urlencode(args)


class RunningAPITestsMixin:
    """
    The calls on running VMs; subclasses say how the API is reached.
    """

    client_type: type

    async def setUp(self):
        self.dir = tmpdir(self)
        self.redis, self.prefix = shared_redis(), unique_prefix()
        self.uris = write_fleet(self.dir, SIZES)
        self.daemon = Daemon(self.dir / "daemon", self.redis.url, self.prefix, self.uris)
        await self.daemon.start()
        self.addCleanup(self.daemon.stop)
        self.client = self.client_type(self.daemon)
        self.addCleanup(self.client.close)

    async def restart_on_fakes(self) -> None:
        """
        Restart the daemon over in-memory PMs of the same sizes (which, unlike libvirt's
        test driver, migrate running domains).
        """
        await self.daemon.stop()
        self.daemon = Daemon(
            self.dir / "daemon",
            self.redis.url,
            self.prefix,
            self.uris,
            hosts=fake_hosts(self.uris, SIZES),
        )
        await self.daemon.start()
        self.addCleanup(self.daemon.stop)
        self.client = self.client_type(self.daemon)
        self.addCleanup(self.client.close)

    async def get(self, path: str, method: str = "GET"):
        answer = await self.client.call(path, method)
        self.assertEqual(answer.status, 200, answer)
        self.assertEqual(answer.headers.getRawHeaders("content-type"), ["application/json"])
        return answer

    async def json(self, path: str):
        return (await self.get(path)).json

    async def create(self, name="vm", instance_type=1) -> int:
        answer = await self.get(
            "/vm/create?" + q(name=name, instance_type=instance_type, image_id=1)
        )
        vmid = answer.json["vmid"]
        self.assertGreater(vmid, 0, answer)
        return vmid

    async def snapshot(self) -> dict:
        return await snapshot(self.json)

    async def domains(self, pmid: int) -> dict[str, dict]:
        return await daemon_domains(self.daemon, pmid)

    async def done(self, path: str) -> None:
        """
        GET C{path}, which must answer {"status": 1} and no reason.
        """
        answer = await self.get(path)
        self.assertEqual((answer.json, answer.reason), ({"status": 1}, None), path)

    async def refused(self, path: str, method: str = "GET") -> str:
        """
        C{path} must answer {"status": 0} (0 for vm/info, whose failure value it is as
        vm/query's, for a method other than GET and HEAD, and for a HEAD of a call that
        changes state) with a reason, and change nothing.
        """
        before = await self.snapshot()
        answer = await self.get(path, method)
        changing = path.partition("?")[0] in CHANGING
        if method == "GET":
            expected = 0 if path.startswith("/vm/info") else {"status": 0}
        elif method == "HEAD":
            expected = None if not changing else 0
        else:
            expected = 0
        if method == "HEAD":
            self.assertEqual(answer.raw, b"", path)
        else:
            self.assertEqual(answer.json, expected, (method, path))
        self.assertTrue(answer.reason, (method, path))
        self.assertEqual(await self.snapshot(), before, (method, path))
        return answer.reason

    async def info(self, vmid: int) -> dict:
        answer = await self.get(f"/vm/info?vmid={vmid}")
        self.assertIsNone(answer.reason, answer)
        self.assertEqual(set(answer.json), INFO_KEYS, answer)
        return answer.json

    async def assert_seed_shapes(self, vmids) -> None:
        """
        The seed answers about C{vmids} and every PM have exactly their seed keys.
        """
        for vmid in vmids:
            self.assertEqual(set(await self.json(f"/vm/query?vmid={vmid}")), SEED_VM_KEYS)
        for pmid in (await self.json("/pm/list"))["pmids"]:
            pm = await self.json(f"/pm/query?pmid={pmid}")
            self.assertEqual(set(pm), {"pmid", "capacity", "free", "vms"})
            self.assertEqual(set(await self.json(f"/pm/listvms?pmid={pmid}")), {"vmids"})

    # -- failures, which need nothing of the fleet but its records ----------------------

    async def test_malformed_arguments(self):
        """
        Every call answers {"status": 0} with a reason, and changes nothing, for a vmid
        missing, empty, not an integer, repeated, zero, negative or out of range; and for
        an unknown VM.
        """
        vmid = await self.create()
        paths = ["/vm/info", *CHANGING]
        extra = {"/vm/resize": "instance_type=1", "/vm/migrate": "pmid=2"}
        for path in paths:
            for query in (
                "",
                "vmid=",
                "vmid",
                "vmid=abc",
                "vmid=1.0",
                "vmid=+1",
                f"vmid={vmid}&vmid={vmid}",
                "vmid=0",
                "vmid=-1",
                "vmid=" + "9" * 30,
                "vmid=" + "9" * 5000,
                "vmid=999999",
            ):
                await self.refused(f"{path}?" + "&".join(filter(None, [query, extra.get(path)])))
        # The VM is still there and running, as it was.
        self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["vmid"], vmid)

    async def test_other_methods_and_head(self):
        """
        A method other than GET and HEAD answers 0; a HEAD of a call that changes state
        answers 0 and does nothing; a HEAD of vm/info answers what GET does, without a
        body.
        """
        vmid = await self.create()
        for path in CHANGING:
            target = f"{path}?vmid={vmid}"
            if path == "/vm/resize":
                target += "&instance_type=2"
            for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD"):
                await self.refused(target, method)
        for method in ("POST", "DELETE"):
            await self.refused(f"/vm/info?vmid={vmid}", method)
        await self.refused("/vm/info?vmid=999999", "HEAD")
        head = await self.get(f"/vm/info?vmid={vmid}", "HEAD")
        self.assertEqual((head.raw, head.reason), (b"", None))
        pmid = (await self.json(f"/vm/query?vmid={vmid}"))["pmid"]
        [meta] = (await self.domains(pmid)).values()
        self.assertTrue(meta["running"], "a HEAD stopped or moved the VM")

    async def test_resize_and_migrate_refused(self):
        """
        A resize to an unknown, non-positive, missing or malformed instance_type, or to
        one its PM has no room for, and a migrate to an unknown, non-positive or
        malformed PM, or to one without room, answer {"status": 0} with a reason and
        change nothing.
        """
        vmid = await self.create(instance_type=1)
        pmid = (await self.json(f"/vm/query?vmid={vmid}"))["pmid"]
        self.assertEqual(pmid, 1)
        for query in (
            "instance_type=99",
            "instance_type=0",
            "instance_type=-2",
            "instance_type=abc",
            "instance_type=",
            "instance_type=1&instance_type=2",
            "",
            # PM 1 has 2 CPUs: flavor 3 wants 4.
            "instance_type=3",
        ):
            await self.refused(f"/vm/resize?vmid={vmid}&{query}")
        for query in ("pmid=99", "pmid=0", "pmid=-1", "pmid=x", "pmid=", "pmid=2&pmid=2"):
            await self.refused(f"/vm/migrate?vmid={vmid}&{query}")
        big = await self.create(instance_type=3)
        self.assertEqual((await self.json(f"/vm/query?vmid={big}"))["pmid"], 2)
        # PM 1 has no room for a VM of 4 CPUs.
        await self.refused(f"/vm/migrate?vmid={big}&pmid=1")
        await self.assert_seed_shapes([vmid, big])

    # -- what they do (these need the fleet's running-VM jobs) ----------------------------

    async def test_info(self):
        """
        vm/info of a created VM answers exactly its nine keys: its record as created,
        its domain (which its PM has) and the state its hypervisor reports, running.
        """
        vmid = await self.create(name="info <me> ü", instance_type=2)
        vm = await self.json(f"/vm/query?vmid={vmid}")
        info = await self.info(vmid)
        self.assertEqual(
            {k: info[k] for k in ("vmid", "name", "instance_type", "pmid", "image_id")},
            {**vm, "image_id": 1},
        )
        self.assertEqual(info["state"], "running")
        domains = await self.domains(vm["pmid"])
        self.assertIn(info["domain"], domains)
        self.assertEqual(domains[info["domain"]]["vmid"], vmid)
        await self.assert_seed_shapes([vmid])

    async def test_lifecycle(self):
        """
        stop, start, suspend, resume and reboot each answer {"status": 1} and leave the
        domain in the state asked for, as the hypervisor and vm/info say; a change the
        VM's state does not allow (stopping a stopped VM, resuming a running one) answers
        {"status": 0} with a reason. The VM keeps its PM and room throughout, and a
        stopped VM is destroyed like any other.
        """
        vmid = await self.create(name="cycle")
        vm = await self.json(f"/vm/query?vmid={vmid}")
        pm_before = await self.json(f"/pm/query?pmid={vm['pmid']}")

        async def state() -> str:
            info = await self.info(vmid)
            self.assertEqual(info["pmid"], vm["pmid"])
            return info["state"]

        async def running() -> bool:
            [meta] = (await self.domains(vm["pmid"])).values()
            return meta["running"]

        await self.refused(f"/vm/resume?vmid={vmid}")
        await self.refused(f"/vm/start?vmid={vmid}")
        await self.done(f"/vm/stop?vmid={vmid}")
        self.assertEqual(await state(), "shutoff")
        self.assertFalse(await running())
        await self.refused(f"/vm/stop?vmid={vmid}")
        await self.refused(f"/vm/suspend?vmid={vmid}")
        await self.done(f"/vm/start?vmid={vmid}")
        self.assertEqual(await state(), "running")
        self.assertTrue(await running())
        await self.done(f"/vm/suspend?vmid={vmid}")
        self.assertEqual(await state(), "paused")
        await self.done(f"/vm/resume?vmid={vmid}")
        self.assertEqual(await state(), "running")
        await self.done(f"/vm/reboot?vmid={vmid}")
        self.assertEqual(await state(), "running")
        self.assertEqual(await self.json(f"/vm/query?vmid={vmid}"), vm)
        self.assertEqual(await self.json(f"/pm/query?pmid={vm['pmid']}"), pm_before)
        await self.assert_seed_shapes([vmid])
        await self.done(f"/vm/stop?vmid={vmid}")
        self.assertEqual(await self.json(f"/vm/destroy?vmid={vmid}"), {"status": 1})
        self.assertEqual(await self.domains(vm["pmid"]), {})
        await self.refused(f"/vm/info?vmid={vmid}")

    async def test_resize(self):
        """
        A resize to a bigger flavor its PM has room for answers {"status": 1}: vm/query,
        vm/info and pm/query's free room then count the new flavor.
        """
        vmid = await self.create(instance_type=1)
        pmid = (await self.json(f"/vm/query?vmid={vmid}"))["pmid"]
        await self.done(f"/vm/resize?vmid={vmid}&instance_type=2")
        self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["instance_type"], 2)
        self.assertEqual((await self.info(vmid))["instance_type"], 2)
        pm = await self.json(f"/pm/query?pmid={pmid}")
        self.assertEqual(
            pm["free"], {r: pm["capacity"][r] - FLAVOR[2][r] for r in ("cpu", "ram", "disk")}
        )
        await self.assert_seed_shapes([vmid])

    async def test_migrate_stopped(self):
        """
        A stopped VM moves cold: a migrate to another PM answers {"status": 1}, and the
        VM, its (stopped) domain and its room are then on the target, its source has none
        of them; it starts there. A migrate without pmid moves it to the PM the policy
        picks (first-fit: back to PM 1); a migrate to the PM it is on changes nothing.
        """
        vmid = await self.create(name="mover")
        self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["pmid"], 1)
        await self.done(f"/vm/stop?vmid={vmid}")
        await self.assert_moves(vmid, 2, running=False)
        await self.refused(f"/vm/migrate?vmid={vmid}&pmid=2")
        await self.done(f"/vm/start?vmid={vmid}")
        self.assertEqual((await self.info(vmid))["state"], "running")
        [meta] = (await self.domains(2)).values()
        self.assertTrue(meta["running"])
        await self.done(f"/vm/stop?vmid={vmid}")
        await self.assert_moves(vmid, None, running=False)
        self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["pmid"], 1)
        self.assertEqual(await self.json(f"/vm/destroy?vmid={vmid}"), {"status": 1})
        self.assertEqual((await self.domains(1), await self.domains(2)), ({}, {}))

    async def test_migrate_live(self):
        """
        A running VM moves live (on in-memory PMs: libvirt's test driver cannot migrate a
        running domain): it runs on the target, as vm/info says, and nothing of it is
        left on its source.
        """
        await self.restart_on_fakes()
        vmid = await self.create(name="live")
        self.assertEqual((await self.info(vmid))["state"], "running")
        await self.assert_moves(vmid, 2, running=True)
        self.assertEqual((await self.info(vmid))["state"], "running")
        await self.assert_moves(vmid, None, running=True)
        self.assertEqual(await self.json(f"/vm/destroy?vmid={vmid}"), {"status": 1})

    async def assert_moves(self, vmid: int, target: int | None, running: bool) -> None:
        """
        Migrate VM C{vmid} to PM C{target} (None: where the policy says, which must be
        another PM of the two): the VM, its domain and its room are then all there, and
        nothing of them is left on its source; the seed answers keep their keys.
        """
        before = await self.json(f"/vm/query?vmid={vmid}")
        source = before["pmid"]
        capacity = {p: (await self.json(f"/pm/query?pmid={p}"))["capacity"] for p in (1, 2)}
        await self.done(f"/vm/migrate?vmid={vmid}" + (f"&pmid={target}" if target else ""))
        vm = await self.json(f"/vm/query?vmid={vmid}")
        target = target or vm["pmid"]
        self.assertNotEqual(target, source)
        self.assertEqual(vm, {**before, "pmid": target})
        self.assertEqual((await self.info(vmid))["pmid"], target)
        self.assertEqual(await self.json(f"/pm/listvms?pmid={source}"), {"vmids": []})
        self.assertEqual(await self.json(f"/pm/listvms?pmid={target}"), {"vmids": [vmid]})
        self.assertEqual(await self.domains(source), {})
        [meta] = (await self.domains(target)).values()
        self.assertEqual((meta["vmid"], meta["running"]), (vmid, running))
        flavor = FLAVOR[vm["instance_type"]]
        for pmid, vms in ((source, 0), (target, 1)):
            pm = await self.json(f"/pm/query?pmid={pmid}")
            free = {r: capacity[pmid][r] - vms * flavor[r] for r in ("cpu", "ram", "disk")}
            self.assertEqual((pm["free"], pm["vms"]), (free, vms), pmid)
        await self.assert_seed_shapes([vmid])

    def test_calls_documented(self):
        """
        Every call tested here is in the OpenAPI document, and changes state exactly
        when it is tested as one.
        """
        running = {p for p in openapi.CHANGING if p.startswith("/vm/")}
        self.assertEqual(running - {"/vm/create", "/vm/destroy"}, set(CHANGING))
        self.assertLessEqual({"/vm/info", *CHANGING}, set(openapi.PATHS))


class InMemoryRunningAPITests(RunningAPITestsMixin, TestCase):
    """
    The calls through StubTreq over the daemon's resource.
    """

    client_type = InMemoryClient


class LoopbackRunningAPITests(RunningAPITestsMixin, TestCase):
    """
    The calls over the daemon's real port.
    """

    client_type = LoopbackClient
