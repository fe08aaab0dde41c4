"""
VMs people can reach, on real libvirtd PMs that each live in a network namespace of their
own: the bundled Linux example (L{vorchd.linuximage}) boots, takes an address by DHCP from
its PM's libvirt network, vorchd reports that address, and its page answers.

How the traffic stays inside what the test made: each PM is a L{LibvirtdFleet} PM with
C{netns=True}, so its libvirtd, its libvirt network's bridge and dnsmasq, and its guests'
taps all live in a network namespace this test made, holding nothing else. The PM's
network (L{GUEST_NET}, isolated: no forwarding, no NAT) gives guests addresses in
L{SUBNET}, which exists only inside that namespace; the guest's page is fetched by a
process the test runs inside it (C{pm.nsenter}). The daemon, in this machine's own
namespace, reaches each libvirtd only over loopback (the fleet's forwarder on the PM's
127.x address). Nothing is sent from the host to a private-range address.

PM 2 has no such network: vorchd refuses it, down with that reason.

The guest runs emulated (C{domain_type = qemu}): this machine's nested KVM cannot run
syslinux or a Linux kernel, and boots the example in about 20 s under TCG. One test leaves
the choice to vorchd (C{auto}) and has it find that out (L{vorchd.hypervisor.emulation}).
"""

from __future__ import annotations

import inspect
import os
import re
import time
import xml.etree.ElementTree as ET

from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.clients import LoopbackClient
from tests.harness import Daemon, require, shared_redis, tmpdir, unique_prefix
from tests.libvirtd_fleet import LibvirtdFleet, netns_unavailable
from vorchd import linuximage
from vorchd.network import interface_macs

GUEST_NET = "vorchd-guests"
SUBNET = "10.213.7"
NETWORK_XML = (
    f"<network><name>{GUEST_NET}</name><bridge name='vgbr0' stp='off'/>"
    f"<ip address='{SUBNET}.1' prefix='24'>"
    f"<dhcp><range start='{SUBNET}.100' end='{SUBNET}.199'/></dhcp></ip></network>"
)
# The bridge of test_bridge_attach (made in PM 2's namespace) and its subnet.
BRIDGE = "vbr1"
BRIDGE_SUBNET = "10.213.8"
FLAVORS = [{"tid": 1, "cpu": 1, "ram": 256, "disk": 1}]
LIBVIRT = {
    "pool_path": "/var/lib/libvirt/vorchd-pool",
    "connect_timeout": 5,
    "call_timeout": 60,
    "reconnect_max_delay": 1,
    "domain_type": "qemu",
    "stop_timeout": 1,
}
# What a page fetch inside a PM's namespace runs: it prints the page.
FETCH = (
    "import sys, urllib.request;"
    " print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)


class ReachableVMTests(TestCase):
    """
    The Linux example on PMs in network namespaces of their own.
    """

    timeout = 300

    async def setUp(self):
        require(netns_unavailable())
        # A /dev/kvm of their own: the KVM test must not see another test close the
        # machine's.
        self.fleet = LibvirtdFleet(2, netns=True, own_kvm=os.path.exists("/dev/kvm"))
        await deferToThread(self.fleet.start)
        self.addCleanup(deferToThread, self.fleet.stop)
        self.pm1, self.pm2 = self.fleet.pms
        (self.fleet.dir / "net.xml").write_text(NETWORK_XML)
        for args in (("net-define", str(self.fleet.dir / "net.xml")), ("net-start", GUEST_NET)):
            done = await deferToThread(self.pm1.virsh, *args)
            self.assertEqual(done.returncode, 0, done.stderr)
        image = self.fleet.dir / "linux.img"
        try:
            await deferToThread(linuximage.write_image, str(image))
        except linuximage.ImageError as e:
            require(f"the Linux example cannot be built here: {e}")
        self.prefix = unique_prefix()
        self.directory = tmpdir(self)
        self.image = image

    async def start_daemon(self, network: dict | None = None, **libvirt) -> Daemon:
        daemon = Daemon(
            self.directory,
            shared_redis().url,
            self.prefix,
            self.fleet.uris,
            flavors=FLAVORS,
            image_lines=[str(self.image)],
            libvirt={**LIBVIRT, **libvirt},
            network=network or {"attach": GUEST_NET},
        )
        await daemon.start()
        self.addCleanup(daemon.stop)
        self.client = LoopbackClient(daemon)
        self.addCleanup(self.client.close)
        if network is None:
            hypervisors = daemon.fleet.hypervisors
            await self.until("PM 1 up", lambda: hypervisors.is_up(1), 60)
        return daemon

    async def until(self, what: str, condition, seconds: float):
        deadline = time.monotonic() + seconds
        while True:
            found = condition()
            if inspect.isawaitable(found):
                found = await found
            if found:
                return found
            if time.monotonic() > deadline:
                self.fail(f"not {what} within {seconds} s")
            await task.deferLater(reactor, 0.2, lambda: None)

    async def json(self, path: str):
        return (await self.client.call(path)).json

    async def test_linux_example_reachable(self):
        """
        The Linux example boots with a NIC of its stored MAC address on its PM's network;
        vorchd reports the address its PM's DHCP gave it within 30 s (the one its console
        prints), and its page answers at that address from inside the PM's namespace. A
        restarted daemon reports the same MAC address and address.
        """
        daemon = await self.start_daemon()
        answer = await self.client.call("/vm/create?name=web&instance_type=1&image_id=1")
        vmid = answer.json["vmid"]
        self.assertGreater(vmid, 0, answer)
        info = await self.json(f"/vm/info?vmid={vmid}")
        mac = info["mac"]
        self.assertRegex(mac, r"^02(:[0-9a-f]{2}){5}$")
        dumped = await deferToThread(self.pm1.virsh, "dumpxml", info["domain"])
        self.assertEqual(interface_macs(dumped.stdout), [mac])
        fleet_vm = [v for v in (await self.json("/v1/fleet"))["vms"] if v["vmid"] == vmid]
        self.assertEqual(fleet_vm[0]["mac"], mac)

        async def ips():
            return (await self.json(f"/vm/info?vmid={vmid}"))["ips"]

        [ip] = await self.until("an address reported", ips, 30)
        self.assertTrue(ip.startswith(f"{SUBNET}."), ip)
        console = self.pm1.path("log", "qemu", f"{info['domain']}-serial.log")
        # The guest prints it just after its lease, which vorchd may read first.
        line = f"{linuximage.ADDRESS_LINE}{ip}"
        await self.until(
            "the console naming it", lambda: line in console.read_text(errors="replace"), 30
        )

        async def page():
            done = await deferToThread(
                self.pm1.nsenter, "python3", "-c", FETCH, f"http://{ip}/", timeout=30
            )
            return done.stdout if done.returncode == 0 else None

        text = await self.until("the page answering", page, 30)
        self.assertIn(linuximage.PAGE_TITLE, text)
        self.assertIn(ip, text)

        await daemon.stop()
        await self.start_daemon()
        again = await self.json(f"/vm/info?vmid={vmid}")
        self.assertEqual((again["mac"], again["ips"]), (mac, [ip]))

    async def test_kvm_that_pauses_the_guest(self):
        """
        With C{domain_type = auto}, on a PM that offers KVM: where KVM pauses the Linux
        example with an internal error (this machine's nested KVM does, about 2 s after
        its start), vorchd restarts it under QEMU emulation, logs why, and starts the next
        VM on that PM emulated at once. Either way (or where KVM runs it) the VM ends up
        running and reports the address its console prints.
        """
        require(None if self.fleet.own_kvm else "this machine has no /dev/kvm")
        fallbacks, creates = [], []

        def observe(event):
            if event.get("log_format", "").startswith("PM {pmid}: KVM cannot run guests"):
                fallbacks.append(event)
            if event.get("event") == "vm_create":
                creates.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        await self.start_daemon(domain_type="auto")
        first = await self.create_reachable()
        qemu_log = self.pm1.path("log", "qemu", f"{first['domain']}.log").read_text()
        kind = await self.domain_type(first["domain"])
        if "KVM internal error" not in qemu_log:
            # KVM runs it here (or was closed under this test): nothing to fall back from.
            self.assertEqual(fallbacks, [])
            return
        self.assertEqual(creates[0]["kind"], "kvm")
        self.assertEqual(kind, "qemu")
        [fallback] = fallbacks
        self.assertEqual((fallback["pmid"], fallback["domain"]), (1, first["domain"]))
        second = await self.create_reachable()
        self.assertEqual(creates[1]["kind"], "qemu")
        self.assertEqual(await self.domain_type(second["domain"]), "qemu")
        self.assertEqual(len(fallbacks), 1)

    async def create_reachable(self) -> dict:
        """
        Create a VM of the Linux example; once it runs and vorchd reports the address its
        console prints, answer its C{/vm/info}.
        """
        answer = await self.client.call("/vm/create?name=web&instance_type=1&image_id=1")
        vmid = answer.json["vmid"]
        self.assertGreater(vmid, 0, answer)

        async def reachable():
            info = await self.json(f"/vm/info?vmid={vmid}")
            return info if info["state"] == "running" and info["ips"] else None

        # KVM's pause (about 2 s) and the restart, then the emulated boot (about 20 s).
        info = await self.until("running with an address", reachable, 90)
        [ip] = info["ips"]
        self.assertTrue(ip.startswith(f"{SUBNET}."), ip)
        console = self.pm1.path("log", "qemu", f"{info['domain']}-serial.log")
        line = f"{linuximage.ADDRESS_LINE}{ip}"
        await self.until(
            "the console naming it", lambda: line in console.read_text(errors="replace"), 30
        )
        return info

    async def domain_type(self, name: str) -> str:
        dumped = await deferToThread(self.pm1.virsh, "dumpxml", name)
        self.assertEqual(dumped.returncode, 0, dumped.stderr)
        return ET.fromstring(dumped.stdout).get("type")

    async def test_bridge_attach(self):
        """
        With C{[network] attach = bridge:NAME}: PM 1, which has no such bridge, is refused
        with that reason; on PM 2, whose bridge (made by the test inside PM 2's network
        namespace, with a dnsmasq of its own on it) exists, the VM's NIC is on that bridge
        with its stored MAC, the guest takes an address from that dnsmasq, its page
        answers there from inside the namespace, and vorchd reports the address (from
        the PM's ARP table: a bridge has no libvirt lease database) where libvirt can
        read that table.
        """
        pm2 = self.pm2
        setup = (
            f"ip link add {BRIDGE} type bridge stp_state 0"
            f" && ip addr add {BRIDGE_SUBNET}.1/24 dev {BRIDGE} && ip link set {BRIDGE} up"
            f" && dnsmasq --conf-file=/dev/null --user=root --bind-interfaces"
            f" --interface={BRIDGE} --except-interface=lo --port=0"
            f" --dhcp-range={BRIDGE_SUBNET}.100,{BRIDGE_SUBNET}.199,1h"
            f" --dhcp-leasefile=/var/lib/libvirt/{BRIDGE}.leases"
            f" --pid-file=/run/libvirt/{BRIDGE}-dnsmasq.pid"
        )
        done = await deferToThread(pm2.nsenter, "sh", "-c", setup)
        self.assertEqual(done.returncode, 0, done.stderr)
        seen = []

        def observe(event):
            if event.get("log_format", "").startswith("PM {pmid} refused"):
                seen.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        daemon = await self.start_daemon(network={"attach": f"bridge:{BRIDGE}"})
        hypervisors = daemon.fleet.hypervisors
        await self.until("PM 2 up", lambda: hypervisors.is_up(2), 60)
        await self.until("PM 1 refused", lambda: bool(seen), 30)
        self.assertEqual(seen[0]["pmid"], 1)
        self.assertIn(f"bridge {BRIDGE} is missing", hypervisors.down_reason(1))

        answer = await self.client.call("/vm/create?name=bridged&instance_type=1&image_id=1")
        vmid = answer.json["vmid"]
        self.assertGreater(vmid, 0, answer)
        info = await self.json(f"/vm/info?vmid={vmid}")
        self.assertEqual(info["pmid"], 2)
        nics = await deferToThread(pm2.virsh, "domiflist", info["domain"])
        [nic] = nics.stdout.split("\n")[:1]
        self.assertEqual(nic.split()[1:3], ["bridge", BRIDGE], nics.stdout)
        self.assertEqual(nic.split()[-1], info["mac"])

        console = pm2.path("log", "qemu", f"{info['domain']}-serial.log")

        def printed():
            found = re.findall(
                re.escape(linuximage.ADDRESS_LINE) + r"(\S+)", console.read_text(errors="replace")
            )
            return found[-1] if found else None

        ip = await self.until("the console naming an address", printed, 60)
        self.assertTrue(ip.startswith(f"{BRIDGE_SUBNET}."), ip)

        async def page():
            done = await deferToThread(
                pm2.nsenter, "python3", "-c", FETCH, f"http://{ip}/", timeout=30
            )
            return done.stdout if done.returncode == 0 else None

        text = await self.until("the page answering", page, 30)
        self.assertIn(linuximage.PAGE_TITLE, text)

        async def ips():
            return (await self.json(f"/vm/info?vmid={vmid}"))["ips"]

        arp = await deferToThread(pm2.virsh, "domifaddr", "--source", "arp", info["domain"])
        if arp.returncode == 0:
            self.assertEqual(await self.until("an address reported", ips, 30), [ip])
        else:
            # libvirt 9.0 cannot read this kernel's ARP table ("wrong nlmsg len"): a bridge
            # has no other source for vorchd to ask, and it reports none rather than a
            # wrong one.
            self.assertIn("nlmsg", arp.stderr)
            self.assertEqual(await ips(), [])

    async def test_pm_without_network_refused(self):
        """
        PM 2, which lacks the network, is refused: down, with the reason in the daemon's
        log and in the fleet view, while PM 1 is up.
        """
        seen = []

        def observe(event):
            if event.get("log_format", "").startswith("PM {pmid} refused"):
                seen.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        daemon = await self.start_daemon()
        hypervisors = daemon.fleet.hypervisors
        await self.until("PM 2 refused", lambda: bool(seen), 30)
        self.assertEqual(seen[0]["pmid"], 2)
        self.assertTrue(re.search(f"network {GUEST_NET} is missing", seen[0]["why"]))
        self.assertFalse(hypervisors.is_up(2))
        self.assertIn(f"network {GUEST_NET} is missing", hypervisors.down_reason(2))
        states = {p["pmid"]: p["state"] for p in (await self.json("/v1/fleet"))["pms"]}
        self.assertEqual(states, {1: "up", 2: "down"})
