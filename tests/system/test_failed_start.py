"""
Starts that fail inside libvirt itself, on a real libvirtd PM: the create answers its
failure value and leaves nothing on the PM; and where KVM stops working, a KVM start that
fails falls back to plain QEMU at once.
"""

from __future__ import annotations

import os
import re
import stat

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.clients import InMemoryClient
from tests.harness import Daemon, require, shared_redis, tmpdir, unique_prefix
from tests.libvirtd_fleet import LibvirtdFleet, libvirtd_fleet_unavailable

POOL_PATH = "/var/lib/libvirt/vorchd-pool"
FLAVORS = [{"tid": 1, "cpu": 1, "ram": 64, "disk": 1}]


class FailedStartTests(TestCase):
    """
    A daemon in this process over one real libvirtd PM.
    """

    timeout = 240

    async def setUp(self):
        require(libvirtd_fleet_unavailable())
        self.fleet = LibvirtdFleet(1)
        await deferToThread(self.fleet.start)
        self.addCleanup(deferToThread, self.fleet.stop)
        [self.pm] = self.fleet.pms

    async def start_daemon(self, **libvirt) -> None:
        self.daemon = Daemon(
            tmpdir(self),
            shared_redis().url,
            unique_prefix(),
            self.fleet.uris,
            flavors=FLAVORS,
            allocation={"cpu_ratio": 8},
            libvirt={"pool_path": POOL_PATH, "call_timeout": 120, **libvirt},
        )
        await self.daemon.start()
        self.addCleanup(self.daemon.stop)
        self.client = InMemoryClient(self.daemon)
        self.name = f"vorchd-{self.daemon.fleet.fleet_id}-"

    def on_pm(self) -> tuple[set[str], set[str]]:
        """
        This fleet's domains on the PM (defined or running) and its VMs' disks there.
        """
        domains = set(self.pm.virsh("list", "--all", "--name").stdout.split())
        volumes = set(self.pm.virsh("vol-list", "vorchd").stdout.split())
        overlay = re.compile(re.escape(self.name) + r"\d+\.qcow2")
        return (
            {d for d in domains if d.startswith(self.name)},
            {v for v in volumes if overlay.fullmatch(v)},
        )

    def domain_type(self, vmid: int) -> str:
        xml = self.pm.virsh("dumpxml", f"{self.name}{vmid}").stdout
        return re.search(r"<domain type='(\w+)'", xml).group(1)

    async def test_failed_start_leaves_nothing(self):
        """
        A domain libvirt defines but cannot start (QEMU cannot open its serial log in a
        directory that does not exist): the create answers {"vmid": 0} saying why, and
        the PM keeps neither the domain nor its disk; its room is whole again.
        """
        await self.start_daemon(console_log_dir="/nonexistent/console", domain_type="qemu")
        answer = await self.client.call("/vm/create?name=doomed&instance_type=1&image_id=1")
        self.assertEqual(answer.json, {"vmid": 0})
        self.assertIn("starting", answer.reason)
        self.assertEqual(await deferToThread(self.on_pm), (set(), set()))
        pm = (await self.client.call("/pm/query?pmid=1")).json
        self.assertEqual(pm["free"]["cpu"], pm["capacity"]["cpu"] * 8)
        self.assertEqual(pm["vms"], 0)

    async def test_kvm_start_failure_falls_back_to_qemu(self):
        """
        With domain_type auto, a PM's first VM runs under KVM; once QEMU can no longer
        open /dev/kvm, the next VM's KVM start fails inside libvirt, and the VM is started
        under plain QEMU instead; the failed KVM domain is not left behind.
        """
        if not os.path.exists("/dev/kvm"):
            require("no /dev/kvm: the fallback from KVM to emulation cannot be shown")
        await self.start_daemon(domain_type="auto")
        first = (await self.client.call("/vm/create?name=k&instance_type=1&image_id=1")).json
        self.assertGreater(first["vmid"], 0)
        kind = await deferToThread(self.domain_type, first["vmid"])
        if kind != "kvm":
            caps = self.pm.virsh("domcapabilities", "--virttype", "kvm")
            self.fail(
                f"the PM's first VM runs under {kind}, not KVM: domcapabilities kvm said"
                f" {caps.returncode} {caps.stderr[-500:]!r}; libvirtd log:\n"
                + self.pm.libvirtd_log.read_text(errors="replace")[-2000:]
            )

        # /dev/kvm closed to QEMU (its libvirt-qemu user) on this machine, put back as it
        # was by a cleanup registered first. Machine-wide: a device bound over it in the
        # PM's own mount namespace stops libvirt from starting any guest there ("Unable
        # to move ... mount to /dev/kvm"), so no test run beside this one may need KVM.
        st = os.stat("/dev/kvm")
        self.addCleanup(os.chmod, "/dev/kvm", stat.S_IMODE(st.st_mode))
        self.addCleanup(os.chown, "/dev/kvm", st.st_uid, st.st_gid)
        os.chown("/dev/kvm", 0, 0)
        os.chmod("/dev/kvm", 0o600)

        answer = await self.client.call("/vm/create?name=q&instance_type=1&image_id=1")
        second = answer.json["vmid"]
        self.assertGreater(second, 0, answer)
        self.assertEqual(await deferToThread(self.domain_type, second), "qemu")
        running = set(self.pm.virsh("list", "--name").stdout.split())
        self.assertIn(f"{self.name}{second}", running)
        domains, volumes = await deferToThread(self.on_pm)
        self.assertEqual(domains, {f"{self.name}{first['vmid']}", f"{self.name}{second}"})
        self.assertEqual(len(volumes), 2)
