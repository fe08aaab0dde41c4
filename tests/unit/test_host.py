"""
The libvirt shell's local checks that need no hypervisor.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import require
from vorchd.hypervisor.host import kvm_usable_here


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
