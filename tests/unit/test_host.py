"""
The libvirt shell's local checks that need no hypervisor.
"""

from __future__ import annotations

import os

import pytest

from vorchd.hypervisor.host import kvm_usable_here


@pytest.fixture
def device(tmp_path):
    path = tmp_path / "kvm"
    path.write_bytes(b"")
    os.chown(path, 0, 0) if os.geteuid() == 0 else None
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own the fake device")
def test_kvm_access_follows_mode(device):
    """
    An unprivileged qemu user can use KVM only where the device's mode lets it in.
    """
    os.chmod(device, 0o600)
    assert kvm_usable_here(str(device), user="nobody") is False
    os.chmod(device, 0o666)
    assert kvm_usable_here(str(device), user="nobody") is True


def test_kvm_edge_cases(device):
    """
    No device means no KVM; qemu running as root always can; an unknown user cannot
    be told.
    """
    assert kvm_usable_here(str(device) + "-missing", user="nobody") is False
    assert kvm_usable_here(str(device), user="root") is True
    assert kvm_usable_here(str(device), user="no-such-user-vorchd") is None
