"""
Images on real PMs reached over TCP: base copies uploaded through libvirt once per PM
and checked, guests booting from their own overlays, nothing left after a failure.
"""

from __future__ import annotations

import hashlib
import time

from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.spread import pb
from twisted.trial.unittest import TestCase

from tests.clients import LoopbackClient
from tests.harness import Daemon, require, shared_redis, tmpdir, unique_prefix
from tests.libvirtd_fleet import LibvirtdFleet, libvirtd_fleet_unavailable
from vorchd.bootimage import BOOT_MESSAGE, write_image
from vorchd.hypervisor.interface import HypervisorError
from vorchd.images import copies as base_copies

POOL = "/var/lib/libvirt/vorchd-pool"
FLAVORS = [{"tid": 1, "cpu": 1, "ram": 64, "disk": 1}]


class ImagesOnFleetTests(TestCase):
    """
    One real libvirtd PM, fresh for each test.
    """

    timeout = 240

    async def setUp(self):
        require(libvirtd_fleet_unavailable())
        self.fleet = LibvirtdFleet(1)
        await deferToThread(self.fleet.start)
        self.addCleanup(deferToThread, self.fleet.stop)
        [self.pm] = self.fleet.pms
        self.prefix = unique_prefix()
        # Daemons of one fleet are given the same files, the image included.
        self.image = tmpdir(self) / "hello.img"
        write_image(self.image)
        self.daemon = await self.start_daemon()

    async def start_daemon(self) -> Daemon:
        daemon = Daemon(
            tmpdir(self),
            shared_redis().url,
            self.prefix,
            self.fleet.uris,
            flavors=FLAVORS,
            image_lines=[str(self.image)],
            libvirt={"pool_path": POOL, "call_timeout": 60, "domain_type": "qemu"},
            allocation={"cpu_ratio": 16, "ram_ratio": 4},
        )
        await daemon.start()
        self.addCleanup(daemon.stop)
        self.client = LoopbackClient(daemon)
        self.addCleanup(self.client.close)
        return daemon

    async def create(self) -> dict:
        return (await self.client.call("/vm/create?name=i&instance_type=1&image_id=1")).json

    def volumes(self) -> dict[str, str]:
        out = {}
        for line in self.pm.virsh("vol-list", "vorchd").stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].startswith("/"):
                out[parts[0]] = parts[1]
        return out

    def source_digest(self) -> str:
        return hashlib.sha256(self.image.read_bytes()).hexdigest()

    async def test_guest_boots_from_its_overlay(self):
        """
        The base copy appears in the PM's pool through libvirt with the image's exact
        bytes; the guest boots from its own overlay (its serial console says so).
        """
        vmid = (await self.create())["vmid"]
        self.assertGreater(vmid, 0)
        vols = await deferToThread(self.volumes)
        [base] = [v for v in vols if "-image-" in v]
        host_path = self.pm.path("lib", "vorchd-pool", base)
        self.assertEqual(hashlib.sha256(host_path.read_bytes()).hexdigest(), self.source_digest())
        self.assertIn(self.source_digest()[:12], base)
        domain = f"vorchd-{self.daemon.fleet.fleet_id}-{vmid}"
        self.assertIn(f"{domain}.qcow2", vols)
        console = self.pm.path("log", "qemu", f"{domain}-serial.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if console.exists() and BOOT_MESSAGE.strip() in console.read_bytes():
                break
            await task.deferLater(reactor, 0.2, lambda: None)
        self.assertIn(BOOT_MESSAGE.strip(), console.read_bytes())
        self.assertEqual((await self.client.call(f"/vm/destroy?vmid={vmid}")).json, {"status": 1})
        self.assertNotIn(f"{domain}.qcow2", await deferToThread(self.volumes))

    async def test_concurrent_creates_upload_once(self):
        """
        10 creates of one image at once on a fresh PM upload the image exactly once.
        """
        uploads = []
        original = base_copies.upload

        # Counted inside the real LibvirtHost: an in-memory PM cannot race two uploads.
        def counting(host, vol, source, size):
            uploads.append(source)
            return original(host, vol, source, size)

        self.patch(base_copies, "upload", counting)
        answers = await defer.gatherResults(
            [
                defer.ensureDeferred(
                    self.client.call("/vm/create?name=i&instance_type=1&image_id=1")
                )
                for _ in range(10)
            ]
        )
        self.assertTrue(all(a.json["vmid"] > 0 for a in answers), answers)
        self.assertEqual(len(uploads), 1)
        vols = await deferToThread(self.volumes)
        self.assertEqual(len([v for v in vols if "-image-" in v]), 1)
        self.assertEqual(len([v for v in vols if v.endswith(".qcow2")]), 10)

    async def test_upload_cut_off(self):
        """
        An upload cut off halfway answers {"vmid": 0} and leaves no volume, no domain
        and no claim behind.
        """

        # A real stream, really aborted halfway: no outside failure cuts the upload of an
        # image this small at a chosen point.
        def cut(host, vol, source, size):
            stream = host.conn.newStream(0)
            vol.upload(stream, 0, size, 0)
            stream.send(b"\0" * 4096)
            stream.abort()
            raise HypervisorError("injected: connection cut during upload")

        self.patch(base_copies, "upload", cut)
        answer = await self.client.call("/vm/create?name=i&instance_type=1&image_id=1")
        self.assertEqual(answer.json, {"vmid": 0})
        self.assertIn("cut during upload", answer.reason)
        self.assertEqual(await deferToThread(self.volumes), {})
        self.assertEqual(self.pm.virsh("list", "--all", "--name").stdout.split(), [])
        pm = (await self.client.call("/pm/query?pmid=1")).json
        self.assertEqual((pm["free"]["cpu"], pm["vms"]), (pm["capacity"]["cpu"] * 16, 0))

    async def test_damaged_base_copy_replaced(self):
        """
        A base copy damaged on the PM (a crash mid-upload, say) is found on the next
        daemon's first use and uploaded again; the new guest still boots.
        """
        self.assertGreater((await self.create())["vmid"], 0)
        await self.daemon.stop()
        [base] = [v for v in await deferToThread(self.volumes) if "-image-" in v]
        host_path = self.pm.path("lib", "vorchd-pool", base)
        with open(host_path, "r+b") as f:
            f.write(b"\xde\xad" * 256)
        self.daemon = await self.start_daemon()
        answer = await self.client.call("/vm/create?name=i&instance_type=1&image_id=1")
        self.assertGreater(answer.json["vmid"], 0, answer)
        self.assertEqual(hashlib.sha256(host_path.read_bytes()).hexdigest(), self.source_digest())

    async def test_pool_too_small(self):
        """
        A flavor whose disk no PM's pool can hold is refused, naming the disk.
        """
        await self.daemon.stop()
        self.daemon = Daemon(
            tmpdir(self),
            shared_redis().url,
            unique_prefix(),
            self.fleet.uris,
            flavors=[{"tid": 1, "cpu": 1, "ram": 64, "disk": 10**6}],
            libvirt={"pool_path": POOL, "call_timeout": 60},
        )
        await self.daemon.start()
        self.addCleanup(self.daemon.stop)
        client = LoopbackClient(self.daemon)
        self.addCleanup(client.close)
        answer = await client.call("/vm/create?name=i&instance_type=1&image_id=1")
        self.assertEqual(answer.json, {"vmid": 0})
        self.assertIn("no room for disk", answer.reason)
        self.assertEqual(await deferToThread(self.volumes), {})

    async def test_prune_unused_base_copies(self):
        """
        The admin's prune deletes a base copy only once no VM's disk is built on it;
        a later create uploads it again.
        """
        first = (await self.create())["vmid"]
        second = (await self.create())["vmid"]
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", self.daemon.admin_port, factory)
        self.addCleanup(factory.disconnect)
        admin = await factory.login(
            UsernamePassword(b"admin", self.daemon.admin_password.encode())
        )
        await self.client.call(f"/vm/destroy?vmid={first}")
        self.assertEqual(await admin.callRemote("prune"), {1: []})
        await self.client.call(f"/vm/destroy?vmid={second}")
        [base] = [v for v in await deferToThread(self.volumes) if "-image-" in v]
        self.assertEqual(await admin.callRemote("prune"), {1: [base]})
        self.assertEqual(await deferToThread(self.volumes), {})
        self.assertGreater((await self.create())["vmid"], 0)
        self.assertIn(base, await deferToThread(self.volumes))
