"""
The PB admin port against a real daemon (real Redis, test-driver fleet): logins, live
tuning, and that every change applies to the next request and survives a restart.
"""

from __future__ import annotations

import socket
import subprocess

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor, task
from twisted.spread import pb
from twisted.trial.unittest import TestCase

from tests.clients import LoopbackClient
from tests.harness import Daemon, require, shared_redis, tmpdir, unique_prefix, write_fleet
from vorchd.bootimage import write_image

# Three PMs, the last the roomiest: first-fit fills PM 1, worst-fit picks PM 3.
SIZES = [(2, 2048), (4, 4096), (8, 8192)]


class AdminTests(TestCase):
    """
    What an administrator does over the admin port.
    """

    async def setUp(self):
        self.dir = tmpdir(self)
        self.prefix = unique_prefix()
        self.uris = write_fleet(self.dir, SIZES)
        self.daemon = await self.start_daemon("d")

    async def start_daemon(self, name: str) -> Daemon:
        # Daemons of one fleet are given the same files, the image included.
        image = self.dir / "hello.img"
        if not image.exists():
            write_image(image)
        daemon = Daemon(
            self.dir / name, shared_redis().url, self.prefix, self.uris, image_lines=[str(image)]
        )
        await daemon.start()
        self.addCleanup(daemon.stop)
        return daemon

    async def login(self, daemon: Daemon | None = None, password: str | None = None):
        daemon = daemon or self.daemon
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", daemon.admin_port, factory)

        async def close():
            factory.disconnect()
            await task.deferLater(reactor, 0.05, lambda: None)

        self.addCleanup(close)
        creds = UsernamePassword(b"admin", (password or daemon.admin_password).encode())
        return await factory.login(creds)

    async def api(self, path: str, daemon: Daemon | None = None):
        client = LoopbackClient(daemon or self.daemon)
        try:
            return (await client.call(path)).json
        finally:
            await client.close()

    async def create_on(self, daemon: Daemon | None = None) -> int:
        client = LoopbackClient(daemon or self.daemon)
        try:
            answer = await client.call("/vm/create?name=a&instance_type=1&image_id=1")
        finally:
            await client.close()
        vmid = answer.json["vmid"]
        self.assertGreater(vmid, 0, answer)
        return (await self.api(f"/vm/query?vmid={vmid}", daemon))["pmid"]

    async def test_wrong_password_refused(self):
        """
        A wrong password, or an unknown user, is refused.
        """
        for user, password in ((b"admin", b"wrong"), (b"root", self.daemon.admin_password)):
            factory = pb.PBClientFactory()
            reactor.connectTCP("127.0.0.1", self.daemon.admin_port, factory)
            self.addCleanup(factory.disconnect)
            login = factory.login(
                UsernamePassword(
                    user, password.encode() if isinstance(password, str) else password
                )
            )
            [failure] = await login.addCallbacks(lambda _: [None], lambda f: [f])
            # PB sends the failure by name: check() matches it, await would not.
            self.assertIsNotNone(failure, user)
            self.assertTrue(failure.check(UnauthorizedLogin), failure)
        self.assertEqual(len(self.flushLoggedErrors(UnauthorizedLogin)), 2)

    async def test_status(self):
        """
        status shows every PM with capacity, free room, VMs and state, and the policy and
        ratios in force.
        """
        await self.create_on()
        admin = await self.login()
        status = await admin.callRemote("status")
        self.assertEqual(status["policy"], "first-fit")
        self.assertIn("worst-fit", status["policies"])
        self.assertEqual(status["ratios"], {"cpu": 1.0, "ram": 1.0, "disk": 1.0})
        self.assertEqual([p["pmid"] for p in status["pms"]], [1, 2, 3])
        pm1 = status["pms"][0]
        self.assertEqual((pm1["state"], pm1["vms"], pm1["missing"]), ("up", 1, []))
        self.assertEqual(pm1["free"]["cpu"], pm1["capacity"]["cpu"] - 1)
        self.assertEqual(pm1["uri"], self.uris[0])

    async def test_switch_policy(self):
        """
        Switching the policy changes the very next placement, and the switch survives a
        restart of the daemon.
        """
        self.assertEqual(await self.create_on(), 1)
        admin = await self.login()
        self.assertEqual(await admin.callRemote("policy", "worst-fit"), "worst-fit")
        self.assertEqual(await self.create_on(), 3)
        await self.daemon.stop()
        self.daemon = await self.start_daemon("d2")
        # Still worst-fit: PM 2 is now the emptiest by fraction (PM 3 holds one VM);
        # first-fit would have chosen PM 1, which still has room.
        self.assertEqual(await self.create_on(), 2)
        admin = await self.login()
        self.assertEqual((await admin.callRemote("status"))["policy"], "worst-fit")

    async def test_unknown_policy(self):
        """
        An unknown policy is refused with the names of the known ones; nothing changes.
        """
        admin = await self.login()
        with self.assertRaises(pb.RemoteError) as e:
            await admin.callRemote("policy", "cleverest")
        self.assertIn("first-fit", str(e.exception))
        self.assertEqual((await admin.callRemote("status"))["policy"], "first-fit")

    async def test_drain_and_enable(self):
        """
        A drained PM gets no new VMs but keeps its own; enabled again, it is used again.
        """
        self.assertEqual(await self.create_on(), 1)
        admin = await self.login()
        await admin.callRemote("drain", 1)
        self.assertEqual(await self.create_on(), 2)
        self.assertEqual(len((await self.api("/pm/listvms?pmid=1"))["vmids"]), 1)
        self.assertEqual((await admin.callRemote("status"))["pms"][0]["state"], "drained")
        await admin.callRemote("enable", 1)
        self.assertEqual(await self.create_on(), 1)
        with self.assertRaises(pb.RemoteError):
            await admin.callRemote("drain", 99)

    async def test_ratios(self):
        """
        Raising an overcommit ratio raises free room at once; nonsense is refused.
        """
        admin = await self.login()
        ratios = await admin.callRemote("ratios", cpu=2.5)
        self.assertEqual(ratios, {"cpu": 2.5, "ram": 1.0, "disk": 1.0})
        pm = await self.api("/pm/query?pmid=1")
        self.assertEqual(pm["free"]["cpu"], 5)
        self.assertEqual(pm["capacity"]["cpu"], 2)
        for bad in (0, -1, "x"):
            with self.assertRaises(pb.RemoteError):
                await admin.callRemote("ratios", ram=bad)

    async def test_changes_reach_other_daemons(self):
        """
        A policy switched through one daemon's admin port is used by another daemon
        sharing the same Redis, from its next request.
        """
        other = await self.start_daemon("other")
        admin = await self.login()
        await admin.callRemote("policy", "worst-fit")
        self.assertEqual(await self.create_on(other), 3)

    async def test_rediscover(self):
        """
        Rediscovery reconnects and answers what each PM reports.
        """
        admin = await self.login()
        found = await admin.callRemote("rediscover")
        self.assertEqual(sorted(found), [1, 2, 3])
        self.assertEqual(found[3]["cpu"], 8)
        self.assertEqual(list(await admin.callRemote("rediscover", 2)), [2])

    async def test_loopback_only(self):
        """
        By default the admin port listens on 127.0.0.1 only: not on the machine's other
        addresses.
        """
        self.assertEqual(
            self.daemon.service.getServiceNamed("admin").port.getHost().host, "127.0.0.1"
        )
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
        addresses = [a for a in out if "." in a and not a.startswith("127.")]
        if not addresses:
            require("this machine has no non-loopback IPv4 address")
        with self.assertRaises(OSError):
            socket.create_connection((addresses[0], self.daemon.admin_port), timeout=2).close()
