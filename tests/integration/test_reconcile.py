"""
After a crash Redis and the hypervisors agree again: claims left half-made by a dead
daemon are rolled back, domains Redis forgot are adopted back, nothing is lost.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.clients import InMemoryClient
from tests.harness import (
    Daemon,
    shared_redis,
    start_daemon,
    tmpdir,
    unique_prefix,
    write_fleet,
)
from vorchd.admin import Admin
from vorchd.domain import VM, domain_name, volume_name
from vorchd.model import Flavor

SIZES = [(4, 4096), (4, 4096)]
SMALL = Flavor(1, 1, 512, 1)
ONE = {"cpu": 1.0, "ram": 1.0, "disk": 1.0}


class ReconcileTests(TestCase):
    """
    The reconciler of a running daemon, against real Redis and test-driver PMs.
    """

    async def setUp(self):
        self.daemon = await start_daemon(self, SIZES)
        self.fleet = self.daemon.fleet
        self.client = InMemoryClient(self.daemon)

    async def json(self, path):
        return (await self.client.call(path)).json

    async def domains(self, pmid):
        return await self.fleet.hypervisors.on(pmid).domain_names()

    async def half_made(self, owner: str) -> int:
        """
        What a daemon killed mid-create leaves: a claim in state creating and a domain
        with its disk already started on PM 1.
        """
        vmid = await self.fleet.store.next_vmid()
        fleet = self.fleet.fleet_id
        record = {
            "owner": owner,
            "name": "half",
            "instance_type": 1,
            "image_id": 1,
            "domain": domain_name(fleet, vmid),
            "volume": volume_name(fleet, vmid),
        }
        _, why = await self.fleet.store.claim(vmid, 1, SMALL.resources, ONE, record)
        self.assertIsNone(why)
        pm1 = self.fleet.hypervisors.on(1)
        path, fmt = await pm1.ensure_base(fleet, 1, str(self.daemon.dir / "images" / "hello.img"))
        spec = VM(fleet, vmid, "half", SMALL, 1, 1)
        await pm1.create_vm(spec, path, fmt)
        return vmid

    async def test_dead_daemons_claim_rolled_back(self):
        """
        A claim whose daemon's lease is gone is rolled back: its domain and disk are
        removed and its room freed; the API never showed it.
        """
        vmid = await self.half_made(owner="dead-daemon")
        self.assertEqual(await self.json(f"/vm/query?vmid={vmid}"), 0)
        report = await self.fleet.reconcile()
        self.assertEqual(report["rolled_back"], [vmid])
        self.assertEqual(await self.domains(1), set())
        pm = await self.json("/pm/query?pmid=1")
        self.assertEqual(pm["free"], pm["capacity"])
        self.assertIsNone(await self.fleet.store.vm(vmid))

    async def test_live_daemons_claim_kept(self):
        """
        A claim of a daemon whose lease is alive is left alone: it is still being made.
        """
        await self.fleet.store.heartbeat("busy-daemon", 30)
        vmid = await self.half_made(owner="busy-daemon")
        self.assertEqual((await self.fleet.reconcile())["rolled_back"], [])
        self.assertEqual((await self.fleet.store.vm(vmid))["state"], "creating")
        self.assertEqual(len(await self.domains(1)), 1)

    async def test_forgotten_domain_adopted(self):
        """
        A VM whose Redis record was lost (its room and the vmid counter too) while its
        domain runs is adopted back: answered as before, its room counted again, and
        its vmid never given to another VM, its MAC address kept.
        """
        answer = await self.json("/vm/create?name=kept%20me&instance_type=2&image_id=1")
        vmid = answer["vmid"]
        before = await self.json(f"/vm/query?vmid={vmid}")
        mac = (await self.json(f"/vm/info?vmid={vmid}"))["mac"]
        pm_before = await self.json(f"/pm/query?pmid={before['pmid']}")
        # Redis loses the VM: record, room and counter.
        self.assertTrue(await self.fleet.store.release(vmid))
        await self.fleet.store._call("delete", f"{self.fleet.store._prefix}:vmid")
        self.assertEqual(await self.json(f"/vm/query?vmid={vmid}"), 0)

        report = await self.fleet.reconcile()
        self.assertEqual(report["adopted"], [vmid])
        self.assertEqual(await self.json(f"/vm/query?vmid={vmid}"), before)
        self.assertEqual((await self.json(f"/vm/info?vmid={vmid}"))["mac"], mac)
        self.assertEqual((await self.fleet.store.vm(vmid))["mac"], mac)
        self.assertEqual(await self.json(f"/pm/query?pmid={before['pmid']}"), pm_before)
        again = await self.json("/vm/create?name=next&instance_type=1&image_id=1")
        self.assertGreater(again["vmid"], vmid)
        self.assertEqual((await self.fleet.reconcile())["adopted"], [])


class RetiredPMTests(TestCase):
    """
    A PM whose line leaves the pm_file while it still has VMs.
    """

    async def test_retired_pm_still_destroys(self):
        """
        After a restart without its line, the PM takes no new VMs and is out of pm/list,
        but its VM still answers and can be destroyed, freeing it.
        """
        d = tmpdir(self)
        redis, prefix = shared_redis(), unique_prefix()
        uris = write_fleet(d, [(1, 4096), (4, 4096)])
        first = Daemon(d / "daemon", redis.url, prefix, uris)
        await first.start()
        client = InMemoryClient(first)
        # Flavor 2 (2 CPUs) fits on PM 2 only.
        vmid = (await client.call("/vm/create?name=kept&instance_type=2&image_id=1")).json["vmid"]
        self.assertGreater(vmid, 0)
        self.assertEqual((await client.call(f"/vm/query?vmid={vmid}")).json["pmid"], 2)
        await first.stop()

        second = Daemon(d / "daemon", redis.url, prefix, uris[:1])
        await second.start()
        self.addCleanup(second.stop)
        client = InMemoryClient(second)
        self.assertEqual((await client.call("/pm/list")).json, {"pmids": [1]})
        self.assertEqual(
            (await client.call(f"/vm/query?vmid={vmid}")).json,
            {"vmid": vmid, "name": "kept", "instance_type": 2, "pmid": 2},
        )
        refused = await client.call("/vm/create?name=no&instance_type=2&image_id=1")
        self.assertEqual(refused.json, {"vmid": 0})
        self.assertIn("PM 1: no room", refused.reason)
        self.assertNotIn("PM 2", refused.reason)
        # The admin sees it, retired, with its VM.
        status = await Admin(second.fleet, "test")._status()
        self.assertEqual(
            [(pm["pmid"], pm["state"], pm["vms"]) for pm in status["pms"]],
            [(1, "up", 0), (2, "retired", 1)],
        )
        self.assertEqual((await client.call(f"/vm/destroy?vmid={vmid}")).json, {"status": 1})
        self.assertEqual((await client.call(f"/vm/query?vmid={vmid}")).json, 0)
        self.assertEqual((await client.call("/pm/listvms?pmid=2")).json, {"vmids": []})
