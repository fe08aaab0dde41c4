"""
The newcomer's path of the README, for real: C{./install.sh} with no files, then
C{vorch vm create hello --type 2 --image 1}, then C{vorch vm show} with the VM's address,
its console naming the same address, and its page.

It runs in a L{NewcomerMachine}: this machine's packages and kernel, and everything
install.sh starts (libvirtd, libvirt's C{default} network and its DHCP, Redis, the daemon
on port 80, the guest) in namespaces this test made. The page is fetched by C{curl} run
inside them: nothing is sent from the host to the guest's private address.

Where KVM pauses the example (this machine's nested KVM does), the daemon restarts it
emulated (L{vorchd.hypervisor.emulation}): the newcomer needs no setting for it.
"""

from __future__ import annotations

import re
import time

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.harness import require
from tests.newcomer_machine import REPO, NewcomerMachine, newcomer_unavailable
from vorchd import linuximage

#: How long the guest may take to report an address: KVM's pause and the restart (a few
#: seconds), then the emulated boot (about 20 s).
ADDRESS_DEADLINE = 120.0


class NewcomerTests(TestCase):
    """
    The README's first steps on a fresh-looking copy of this machine.
    """

    timeout = 600

    async def setUp(self):
        require(newcomer_unavailable())
        self.machine = NewcomerMachine()
        await deferToThread(self.machine.start)
        self.addCleanup(deferToThread, self.machine.stop)

    def run_in(self, *command: str, timeout: float = 60):
        done = self.machine.run(*command, timeout=timeout, cwd=str(REPO))
        self.assertEqual(done.returncode, 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def newcomer(self):
        said = self.run_in("./install.sh", timeout=400)
        self.assertIn("vorchd is up", said)
        self.assertIn("the example's VMs attach to libvirt's network default", said)
        created = self.run_in("vorch", "vm", "create", "hello", "--type", "2", "--image", "1")
        [vmid] = re.findall(r"^\s*(\d+)\s+hello\s", created, re.M)
        deadline = time.monotonic() + ADDRESS_DEADLINE
        while True:
            shown = self.run_in("vorch", "vm", "show", vmid)
            row = shown.splitlines()[-1].split()
            # VMID NAME TYPE PM MAC ADDRESS
            if row[-1] != "-":
                break
            self.assertLess(time.monotonic(), deadline, f"no address shown:\n{shown}")
            time.sleep(1)
        address = row[-1]
        self.assertRegex(address, r"^192\.168\.122\.\d+$")
        self.assertRegex(row[-2], r"^02(:[0-9a-f]{2}){5}$")
        [console] = self.machine.path("log", "qemu").glob(f"vorchd-*-{vmid}-serial.log")
        line = f"{linuximage.ADDRESS_LINE}{address}"
        while line not in console.read_text(errors="replace"):
            self.assertLess(time.monotonic(), deadline + 30, "the console names no address")
            time.sleep(0.5)
        page = self.run_in("curl", "-fsS", "--max-time", "10", f"http://{address}/")
        self.assertIn(linuximage.PAGE_TITLE, page)
        self.assertIn(address, page)
        info = self.run_in("vorch", "vm", "info", vmid)
        self.assertIn("running", info)
        [qemu_log] = self.machine.path("log", "qemu").glob(f"vorchd-*-{vmid}.log")
        if "KVM internal error" in qemu_log.read_text(errors="replace"):
            # The daemon saw KVM pause it and said what it did.
            daemon_log = self.machine.path("vorchd-log", "vorchd-80.log").read_text()
            self.assertIn("KVM cannot run guests there", daemon_log)
        self.run_in("vorch", "vm", "destroy", vmid)
        listed = self.run_in("virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name")
        self.assertEqual(listed.strip(), "")
        self.assertIn("stopped", self.run_in("./install.sh", "stop"))

    async def test_readme_first_steps(self):
        """
        C{./install.sh} with no files starts everything; C{vorch vm create hello --type 2
        --image 1} makes a VM of the Linux example; C{vorch vm show} shows its MAC and,
        once it has booted, its address on libvirt's default network, the one its console
        prints; its page answers there; C{vorch vm destroy} leaves no domain;
        C{./install.sh stop} stops the daemon.
        """
        await deferToThread(self.newcomer)
