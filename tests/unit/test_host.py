"""
The libvirt shell's local checks that need no hypervisor.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import require
from vorchd.domain import VM, VMSpec, domain_xml
from vorchd.hypervisor.emulation import (
    TRIAL_SECONDS,
    DomainLocks,
    Trials,
    emulated_xml,
    is_kvm_pause_event,
    paused_by_kvm,
)
from vorchd.hypervisor.host import kvm_usable_here
from vorchd.model import Flavor
from vorchd.network import Attachment, interface_macs


class KvmUsableTests(SynchronousTestCase):
    def setUp(self):
        directory = Path(tempfile.mkdtemp(prefix="vorchd-test-"))
        self.addCleanup(shutil.rmtree, directory, True)
        self.device = directory / "kvm"
        self.device.write_bytes(b"")
        os.chown(self.device, 0, 0) if os.geteuid() == 0 else None

    def test_kvm_access_follows_mode(self):
        """
        An unprivileged qemu user can use KVM only where the device's mode lets it in.
        """
        require(None if os.geteuid() == 0 else "needs root to own the fake device")
        device = self.device
        os.chmod(device, 0o600)
        self.assertIs(kvm_usable_here(str(device), user="nobody"), False)
        os.chmod(device, 0o666)
        self.assertIs(kvm_usable_here(str(device), user="nobody"), True)

    def test_kvm_edge_cases(self):
        """
        No device means no KVM; qemu running as root always can; an unknown user cannot
        be told.
        """
        device = self.device
        self.assertIs(kvm_usable_here(str(device) + "-missing", user="nobody"), False)
        self.assertIs(kvm_usable_here(str(device), user="root"), True)
        self.assertIs(kvm_usable_here(str(device), user="no-such-user-vorchd"), None)


class KvmPauseTests(SynchronousTestCase):
    """
    The pure parts of restarting emulated a guest that KVM paused
    (L{vorchd.hypervisor.emulation}).
    """

    def test_only_kvm_pausing_by_itself(self):
        """
        Only a KVM domain paused with reason I{unknown} (what an internal error gives) is
        taken for one KVM cannot run: not one paused on request, by an I/O error or a
        panic, not a running one, not an emulated one.
        """
        paused = libvirt.VIR_DOMAIN_PAUSED
        self.assertTrue(paused_by_kvm("kvm", paused, libvirt.VIR_DOMAIN_PAUSED_UNKNOWN))
        for reason in (
            libvirt.VIR_DOMAIN_PAUSED_USER,
            libvirt.VIR_DOMAIN_PAUSED_IOERROR,
            libvirt.VIR_DOMAIN_PAUSED_CRASHED,
            libvirt.VIR_DOMAIN_PAUSED_MIGRATION,
        ):
            self.assertFalse(paused_by_kvm("kvm", paused, reason), reason)
        self.assertFalse(paused_by_kvm("qemu", paused, libvirt.VIR_DOMAIN_PAUSED_UNKNOWN))
        self.assertFalse(
            paused_by_kvm("kvm", libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED_UNKNOWN)
        )

    def test_emulated_xml_changes_only_the_type(self):
        """
        The emulated definition is the KVM one with type qemu: the same UUID, disk, NIC
        and MAC address, console and metadata.
        """
        vm = VM("f1", 7, "web <1>", Flavor(tid=1, cpu=1, ram=256, disk=1), 1, 1)
        nic = Attachment("network", "default")
        xml = domain_xml(VMSpec.of(vm, "kvm", "/pool/disk", "/log/console", nic))
        root = ET.fromstring(xml)
        ET.SubElement(root, "uuid").text = "4ca1b319-3514-42c6-9950-494c9d6e537b"
        emulated = ET.fromstring(emulated_xml(ET.tostring(root, encoding="unicode")))
        self.assertEqual(emulated.get("type"), "qemu")
        root.set("type", "qemu")
        self.assertEqual(ET.tostring(emulated), ET.tostring(root))
        self.assertEqual(interface_macs(emulated_xml(xml)), [vm.mac])

    def test_trial_ends(self):
        """
        A started domain is on trial for TRIAL_SECONDS, not after, and not once ended.
        """
        now = [100.0]
        trials = Trials(clock=lambda: now[0])
        trials.start("a")
        now[0] += 2.5
        self.assertEqual(trials.age("a"), 2.5)
        self.assertIsNone(trials.age("b"))
        now[0] += TRIAL_SECONDS
        self.assertIsNone(trials.age("a"))
        trials.start("b")
        trials.end("b")
        self.assertIsNone(trials.age("b"))

    def test_pause_events(self):
        """
        Only libvirt's I{suspended, paused} lifecycle event can be KVM pausing a guest.
        """
        self.assertTrue(
            is_kvm_pause_event(
                libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED
            )
        )
        self.assertFalse(
            is_kvm_pause_event(
                libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR
            )
        )
        self.assertFalse(is_kvm_pause_event(libvirt.VIR_DOMAIN_EVENT_STARTED, 0))

    def test_domain_locks(self):
        """
        A domain's lock waits for its holder; another domain's does not.
        """
        locks = DomainLocks()
        order = []
        with locks.held("a"):

            def other_domain():
                with locks.held("b"):
                    order.append("b")

            other = threading.Thread(target=other_domain)
            other.start()
            other.join(5)
            self.assertFalse(other.is_alive())

            def same():
                with locks.held("a"):
                    order.append("second")

            waiting = threading.Thread(target=same)
            waiting.start()
            waiting.join(0.2)
            self.assertTrue(waiting.is_alive())
            order.append("first")
        waiting.join(5)
        self.assertEqual(order, ["b", "first", "second"])
