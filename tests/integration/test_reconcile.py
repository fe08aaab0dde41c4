"""
After a crash Redis and the hypervisors agree again: claims left half-made by a dead
daemon are rolled back, domains Redis forgot are adopted back, nothing is lost.
"""

from __future__ import annotations

import signal
import subprocess
import time

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.clients import InMemoryClient
from tests.harness import (
    REPO,
    Daemon,
    free_port,
    get_json,
    shared_redis,
    start_daemon,
    tmpdir,
    twistd_command,
    unique_prefix,
    wait_answering,
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


class KillTests(TestCase):
    """
    The real twistd process killed with SIGKILL in the middle of a burst of creates.
    """

    timeout = 180

    def spawn(self, daemon: Daemon, port: int) -> subprocess.Popen:
        argv, env = twistd_command(daemon.ini, port)
        proc = subprocess.Popen(
            argv, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        return proc

    async def wait_serving(self, port: int) -> None:
        await deferToThread(wait_answering, f"http://127.0.0.1:{port}")

    async def test_kill_mid_burst(self):
        """
        After a kill -9 during creates and a restart, every VM answered before the kill
        is still there, and no claim is left behind: each PM's free room is exactly its
        capacity minus its listed VMs' flavors, and nothing stays half-made.
        """
        directory = tmpdir(self)
        prefix = unique_prefix()
        daemon = Daemon(
            directory,
            shared_redis().url,
            prefix,
            write_fleet(directory, SIZES),
            libvirt={"call_timeout": 30},
        )
        text = daemon.ini.read_text().replace(
            "[server]\n", "[server]\nlease = 2\nreconcile_interval = 1\n"
        )
        daemon.ini.write_text(text)
        port = free_port()
        proc = self.spawn(daemon, port)
        await self.wait_serving(port)
        base = f"http://127.0.0.1:{port}"
        acked: dict[int, dict] = {}

        def create(i):
            try:
                vmid = get_json(f"{base}/vm/create?name=k{i}&instance_type=1&image_id=1")["vmid"]
            except OSError:
                return
            if vmid:
                acked[vmid] = None
                try:
                    acked[vmid] = get_json(f"{base}/vm/query?vmid={vmid}")
                except OSError:
                    pass  # acknowledged all the same: it must still be there afterwards

        burst = [deferToThread(create, i) for i in range(12)]
        while len(acked) < 3:
            await task.deferLater(reactor, 0.01, lambda: None)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        await defer.DeferredList(burst)

        port = free_port()
        self.spawn(daemon, port)
        await self.wait_serving(port)
        base = f"http://127.0.0.1:{port}"
        store_prefix = prefix
        # Leases of the killed daemon run out (2 s), then a reconciliation (every 1 s).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            keys = shared_redis().keys(f"{store_prefix}:vm:*")
            states = [
                subprocess.run(
                    ["redis-cli", "-p", str(shared_redis().port), "hget", k, "state"],
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                for k in keys
            ]
            if "creating" not in states:
                break
            await task.deferLater(reactor, 0.5, lambda: None)
        self.assertNotIn("creating", states)
        for vmid, vm in acked.items():
            now = await deferToThread(get_json, f"{base}/vm/query?vmid={vmid}")
            self.assertEqual(now["vmid"], vmid)
            if vm is not None:
                self.assertEqual(now, vm)
        for pmid in (1, 2):
            pm = await deferToThread(get_json, f"{base}/pm/query?pmid={pmid}")
            listed = (await deferToThread(get_json, f"{base}/pm/listvms?pmid={pmid}"))["vmids"]
            self.assertEqual(pm["vms"], len(listed))
            self.assertEqual(pm["free"]["cpu"], pm["capacity"]["cpu"] - len(listed))
