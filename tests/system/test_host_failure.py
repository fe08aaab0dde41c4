"""
Real hypervisors failing: independent libvirtd PMs reached over TCP are killed and
restarted under a running daemon, which notices, routes around them and takes them back.
"""

from __future__ import annotations

import os
import signal
import time
from urllib.parse import quote

from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.clients import LoopbackClient
from tests.harness import Daemon, require, shared_redis, tmpdir, unique_prefix
from tests.libvirtd_fleet import LibvirtdFleet, libvirtd_fleet_unavailable

# Under each PM's own /var/lib/libvirt, so that the PMs' pools never share a directory.
POOL_PATH = "/var/lib/libvirt/vorchd-pool"
FLAVORS = [{"tid": 1, "cpu": 1, "ram": 64, "disk": 1}]


class HostFailureTests(TestCase):
    """
    A daemon over two real libvirtd PMs, one of which dies and comes back.
    """

    timeout = 240

    async def setUp(self):
        require(libvirtd_fleet_unavailable())
        self.fleet = LibvirtdFleet(2)
        await deferToThread(self.fleet.start)
        self.addCleanup(deferToThread, self.fleet.stop)
        self.pm1, self.pm2 = self.fleet.pms

    async def start_daemon(self, directory=None, prefix=None, **libvirt) -> None:
        self.daemon = Daemon(
            directory or tmpdir(self),
            shared_redis().url,
            prefix or unique_prefix(),
            self.fleet.uris,
            flavors=FLAVORS,
            libvirt={
                "pool_path": POOL_PATH,
                "connect_timeout": 5,
                "call_timeout": 60,
                "reconnect_max_delay": 2,
                "domain_type": "qemu",
                **libvirt,
            },
        )
        await self.daemon.start()
        self.addCleanup(self.daemon.stop)
        self.client = LoopbackClient(self.daemon)
        self.addCleanup(self.client.close)

    async def json(self, path: str):
        return (await self.client.call(path)).json

    async def create(self) -> tuple[int, int]:
        answer = await self.client.call("/vm/create?name=f&instance_type=1&image_id=1")
        vmid = answer.json["vmid"]
        self.assertGreater(vmid, 0, answer)
        return vmid, (await self.json(f"/vm/query?vmid={vmid}"))["pmid"]

    async def until(self, what, condition, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                self.fail(f"not {what} within {seconds} s")
            await task.deferLater(reactor, 0.05, lambda: None)

    def running(self, pm) -> set[str]:
        return set(pm.virsh("list", "--name").stdout.split())

    async def test_killed_pm_goes_down_and_comes_back(self):
        """
        A PM whose libvirtd is killed is marked down within seconds, keeps answering
        pm/query as before, gets no new VMs (they go elsewhere), refuses to destroy its
        VMs meanwhile; restarted, it is rediscovered and used again, its guest intact.
        """
        await self.start_daemon()
        hypervisors = self.daemon.fleet.hypervisors
        vmid, pmid = await self.create()
        self.assertEqual(pmid, 1)
        domain = f"vorchd-{self.daemon.fleet.fleet_id}-{vmid}"
        self.assertEqual(await deferToThread(self.running, self.pm1), {domain})
        before = await self.json("/pm/query?pmid=1")

        await deferToThread(self.pm1.kill)
        await self.until("marked down", lambda: not hypervisors.is_up(1), 10)
        self.assertEqual(await self.json("/pm/query?pmid=1"), before)
        self.assertEqual((await self.create())[1], 2)
        refused = await self.client.call(f"/vm/destroy?vmid={vmid}")
        self.assertEqual(refused.json, {"status": 0})
        self.assertTrue(refused.reason)
        self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["pmid"], 1)

        await deferToThread(self.pm1.restart)
        await self.until("back up", lambda: hypervisors.is_up(1), 30)
        self.assertEqual((await self.daemon.fleet.store.vm(vmid))["state"], "active")
        self.assertEqual(await deferToThread(self.running, self.pm1), {domain})
        self.assertEqual((await self.create())[1], 1)
        self.assertEqual(await self.json(f"/vm/destroy?vmid={vmid}"), {"status": 1})
        self.assertNotIn(domain, await deferToThread(self.running, self.pm1))

    async def test_unreachable_at_start(self):
        """
        A PM that is down when the daemon starts does not stop it: the others serve,
        and the PM joins once its libvirtd is up.
        """
        await deferToThread(self.pm2.kill)
        await self.start_daemon()
        hypervisors = self.daemon.fleet.hypervisors
        self.assertEqual(await self.json("/pm/list"), {"pmids": [1, 2]})
        self.assertFalse(hypervisors.is_up(2))
        await self.daemon.fleet.store.set_drained(1, True)
        answer = await self.client.call("/vm/create?name=f&instance_type=1&image_id=1")
        self.assertEqual(answer.json, {"vmid": 0})
        self.assertIn("PM 2: down", answer.reason)
        await deferToThread(self.pm2.restart)
        await self.until("joined", lambda: hypervisors.is_up(2), 30)
        self.assertEqual((await self.create())[1], 2)
        pm2 = await self.json("/pm/query?pmid=2")
        self.assertGreater(pm2["capacity"]["cpu"], 0)

    async def test_base_image_uploaded_once_per_pm(self):
        """
        A PM gets the image's base copy through libvirt's upload stream, once: later VMs
        on it reuse that copy, each with its own overlay.
        """
        await self.start_daemon()
        for _ in range(3):
            await self.create()
        vols = set(self.pm1.virsh("vol-list", "vorchd").stdout.split())
        bases = [v for v in vols if "-image-" in v and not v.startswith("/")]
        overlays = [v for v in vols if v.endswith(".qcow2") and not v.startswith("/")]
        self.assertEqual(len(bases), 1)
        self.assertEqual(len(overlays), 2)

    async def test_hung_pm_fails_keepalive(self):
        """
        A PM whose libvirtd hangs (SIGSTOP) while its connection stays open is marked
        down by libvirt's keepalive (every 5 s, 3 unanswered: 20 s), with no call of the
        daemon's to time out first (their timeout here is 10 minutes); new VMs go to the
        other PM meanwhile, and once libvirtd runs again the PM is back.
        """
        downs = []

        def observe(event):
            if event.get("log_format") == "PM {pmid} down: {why}":
                downs.append((event["pmid"], event["why"]))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        await self.start_daemon(call_timeout=600)
        hypervisors = self.daemon.fleet.hypervisors
        self.assertTrue(hypervisors.is_up(1))
        pid = self.pm1.libvirtd_pid()
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: self.pm1.libvirtd_pid() and os.kill(pid, signal.SIGCONT))
        # A bound that only catches a hang: keepalive promises 20 s.
        await self.until("marked down", lambda: not hypervisors.is_up(1), 120)
        self.assertIn("keepalive timeout", dict(downs)[1])
        self.assertEqual((await self.create())[1], 2)
        os.kill(pid, signal.SIGCONT)
        # First libvirtd itself answers again (else the fleet, not vorchd, is at fault).
        deadline = time.monotonic() + 60
        while not await deferToThread(self.pm1.answers):
            if time.monotonic() > deadline:
                self.fail("libvirtd does not answer again after SIGCONT")
        await self.until("back up", lambda: hypervisors.is_up(1), 120)

    async def test_unicode_named_domain_adopted_at_start(self):
        """
        A VM with a name in several scripts, whose record Redis lost, is adopted back
        from its domain on a real libvirtd when the next daemon starts: answered as
        before, its name intact.
        """
        directory, prefix = tmpdir(self), unique_prefix()
        await self.start_daemon(directory, prefix)
        name = "café ☕ 名前 – Ωμέγα"
        answer = await self.client.call(
            f"/vm/create?name={quote(name)}&instance_type=1&image_id=1"
        )
        vmid = answer.json["vmid"]
        self.assertGreater(vmid, 0, answer)
        before = await self.json(f"/vm/query?vmid={vmid}")
        self.assertEqual(before["name"], name)
        # Redis loses the VM (its last second, say), then the daemon restarts.
        self.assertTrue(await self.daemon.fleet.store.release(vmid))
        await self.daemon.stop()
        await self.client.close()

        await self.start_daemon(directory, prefix)
        await self.until("adopted", lambda: self.daemon.fleet.vm(vmid) is not None, 60)
        self.assertEqual(await self.json(f"/vm/query?vmid={vmid}"), before)
        self.assertEqual(self.daemon.fleet.reconciler.last["adopted"], [vmid])
