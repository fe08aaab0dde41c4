"""
The VMs of a fake PM once made (L{vorchd.hypervisor.fake.FakeHypervisor}): their volumes
and domains, their states, resizes, and moves between fake PMs, which find each other by
URI (L{fake_at}) as libvirtds do.
"""

from __future__ import annotations

import os
import time
import weakref
from typing import TYPE_CHECKING

from attrs import define

from vorchd import domain
from vorchd.domain import VM, VMSpec
from vorchd.hypervisor.interface import HypervisorError, no_such_vm, wrong_state

if TYPE_CHECKING:
    from vorchd.hypervisor.fake import FakeHypervisor

GIB = 1024**3

#: The domain type a fake PM's VMs run under (what L{FakeHypervisor.create_vm} answers).
FAKE_DOMAIN_TYPE = "fake"

# Every fake PM made, by URI (the latest of a URI), while it lives.
_fakes: weakref.WeakValueDictionary[str, FakeHypervisor] = weakref.WeakValueDictionary()


def register(fake: FakeHypervisor) -> None:
    """
    Let other fakes reach C{fake} at its URI (replacing an earlier fake of that URI).
    """
    _fakes[fake.uri] = fake


def fake_at(uri: str) -> FakeHypervisor | None:
    """
    The fake PM at C{uri} (the latest made, if it still exists), or None.
    """
    return _fakes.get(uri)


@define
class FakeVolume:
    """
    A volume of a fake pool: its path, size in bytes, the path of the volume it is an
    overlay on (None for a base copy or a mark), and its content (what a real one's file
    would hold: a VM's disk is made with a few bytes of its own).
    """

    path: str
    capacity: int
    backing: str | None = None
    data: bytes = b""


@define
class FakeDomain:
    """
    A fake PM's domain: its definition (libvirt XML, as vorchd builds it) and its state
    (one of L{vorchd.hypervisor.interface.VM_STATES} but C{missing}).
    """

    xml: str
    state: str = "shutoff"

    @property
    def metadata(self) -> dict:
        return domain.parse_metadata(self.xml)

    @property
    def running(self) -> bool:
        """
        Whether it is active (has a guest: running, paused...), not shut off.
        """
        return self.state != "shutoff"

    @running.setter
    def running(self, value: bool) -> None:
        self.state = "running" if value else "shutoff"


class FakeGuests:
    """
    L{FakeHypervisor}'s L{IHypervisor} methods for VMs once made, over the state and
    switches that L{FakeHypervisor} keeps (and documents).
    """

    # -- helpers ------------------------------------------------------------------------

    def _domain(self: FakeHypervisor, name: str) -> FakeDomain:
        """
        The domain C{name} (hold the lock).

        @raise NoSuchVM: there is none.
        """
        dom = self.domains.get(name)
        if dom is None:
            raise no_such_vm(self.uri, name)
        return dom

    def _volume(self: FakeHypervisor, name: str) -> FakeVolume:
        """
        The volume C{name} of the PM's pool (hold the lock).

        @raise HypervisorError: there is none.
        """
        vol = self._pool().get(name)
        if vol is None:
            raise HypervisorError(f"{self.uri}: no volume {name}")
        return vol

    def _new_disk(self: FakeHypervisor, vm: VM, base_path: str) -> FakeVolume:
        """
        Make C{vm}'s own disk, over the base copy at C{base_path} (hold the lock).
        """
        path = os.path.join(self.pool_path, vm.volume_name)
        disk = FakeVolume(path, vm.flavor.disk * GIB, base_path, f"over {base_path}".encode())
        self._pool()[vm.volume_name] = disk
        return disk

    def _shut_down(self: FakeHypervisor, dom: FakeDomain, timeout: float) -> None:
        """
        Shut off the active C{dom}: a guest that is asked and ignores it (C{ignores_acpi})
        is forced off after C{timeout} seconds; a paused one at once.
        """
        if self.ignores_acpi and dom.state != "paused":
            time.sleep(timeout)
        with self.lock:
            dom.state = "shutoff"

    # -- states -------------------------------------------------------------------------

    def run_emulated(self: FakeHypervisor, domain_name: str) -> float | None:
        # Only the domains the test says KVM paused (kvm_pauses), found paused.
        self._enter("run_emulated")
        with self.lock:
            age = self.kvm_pauses.pop(domain_name, None)
            dom = self.domains.get(domain_name)
            if age is None or dom is None or dom.state != "paused":
                age = None
            else:
                dom.state = "running"
        self._did("run_emulated")
        return age

    def vm_state(self: FakeHypervisor, domain_name: str) -> str:
        self._enter("vm_state")
        with self.lock:
            dom = self.domains.get(domain_name)
            state = "missing" if dom is None else dom.state
        self._did("vm_state")
        return state

    def stop_vm(self: FakeHypervisor, domain_name: str, timeout: float) -> None:
        self._enter("stop_vm")
        with self.lock:
            dom = self._domain(domain_name)
            if dom.state == "shutoff":
                raise wrong_state(self.uri, domain_name, dom.state)
        self._shut_down(dom, timeout)
        self._did("stop_vm")

    def _change(self: FakeHypervisor, method: str, name: str, allowed: set, to: str) -> None:
        self._enter(method)
        with self.lock:
            dom = self._domain(name)
            if dom.state not in allowed:
                raise wrong_state(self.uri, name, dom.state)
            dom.state = to
        self._did(method)

    def start_vm(self: FakeHypervisor, domain_name: str) -> None:
        self._change("start_vm", domain_name, {"shutoff", "crashed"}, "running")

    def reboot_vm(self: FakeHypervisor, domain_name: str) -> None:
        self._change("reboot_vm", domain_name, {"running"}, "running")

    def suspend_vm(self: FakeHypervisor, domain_name: str) -> None:
        self._change("suspend_vm", domain_name, {"running"}, "paused")

    def resume_vm(self: FakeHypervisor, domain_name: str) -> None:
        self._change("resume_vm", domain_name, {"paused"}, "running")

    def resize_vm(self: FakeHypervisor, vm: VM, timeout: float) -> None:
        self._enter("resize_vm")
        name = vm.domain_name
        with self.lock:
            dom = self._domain(name)
            disk = self._pool().get(vm.volume_name)
            if disk is None:
                raise HypervisorError(f"{self.uri}: {name} has no disk {vm.volume_name}")
            wanted = vm.flavor.disk * GIB
            if wanted < disk.capacity:
                raise HypervisorError(
                    f"{self.uri}: {vm.volume_name} is {disk.capacity / GIB:g} GiB: "
                    f"a disk is never shrunk (to {vm.flavor.disk} GiB)"
                )
            active = dom.state != "shutoff"
        if active:
            self._shut_down(dom, timeout)
        with self.lock:
            if self.resize_failure is None:
                disk.capacity = wanted
                dom.xml = domain.resized_xml(dom.xml, vm)
            if active:
                dom.state = "running"
        if self.resize_failure is not None:
            raise HypervisorError(f"{self.uri}: resizing {name}: {self.resize_failure}")
        self._did("resize_vm")

    # -- moves ------------------------------------------------------------------------

    def migrate_vm(self: FakeHypervisor, vm: VM, target_uri: str, shared: bool) -> None:
        self._enter("migrate_vm")
        name = vm.domain_name
        with self.lock:
            dom = self._domain(name)
            if dom.state == "shutoff":
                raise wrong_state(self.uri, name, dom.state)
            disk = self._pool().get(vm.volume_name)
        failed = f"{self.uri}: migrating {name} to {target_uri}"
        target = fake_at(target_uri)
        if target is None or not target.reachable:
            raise HypervisorError(f"{failed}: unable to connect to the target")
        with target.lock:
            incoming = target._pool().get(vm.volume_name)
            if name in target.domains:
                raise HypervisorError(f"{failed}: domain '{name}' already exists there")
            if incoming is None or disk is None:
                raise HypervisorError(f"{failed}: the target has no disk {vm.volume_name}")
            if not shared:
                incoming.data = disk.data
            target.domains[name] = FakeDomain(domain.with_metadata(dom.xml, vm), dom.state)
        with self.lock:
            self.domains.pop(name, None)
            if not shared:
                self._pool().pop(vm.volume_name, None)
        self._did("migrate_vm")

    def prepare_incoming(self: FakeHypervisor, vm: VM, base_path: str, base_format: str) -> None:
        self._enter("prepare_incoming")
        with self.lock:
            self._new_disk(vm, base_path)
        self._did("prepare_incoming")

    def export_disk(self: FakeHypervisor, volume_name: str, path: str) -> None:
        self._enter("export_disk")
        with self.lock:
            data = self._volume(volume_name).data
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as e:
            raise HypervisorError(f"disk file {path}: {e.strerror}") from None
        self._did("export_disk")

    def import_disk(self: FakeHypervisor, volume_name: str, path: str) -> None:
        self._enter("import_disk")
        with self.lock:
            self._volume(volume_name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise HypervisorError(f"disk file {path}: {e.strerror}") from None
        with self.lock:
            self._volume(volume_name).data = data
        self._did("import_disk")

    def define_vm(self: FakeHypervisor, vm: VM) -> str:
        self._enter("define_vm")
        name = vm.domain_name
        with self.lock:
            disk = self._volume(vm.volume_name)
            if name in self.domains:
                raise HypervisorError(f"{self.uri}: defining {name}: '{name}' already exists")
            spec = VMSpec.of(vm, FAKE_DOMAIN_TYPE, disk.path, None, self.network)
            self.domains[name] = FakeDomain(domain.domain_xml(spec))
        self._did("define_vm")
        return FAKE_DOMAIN_TYPE

    def pool_marks(self: FakeHypervisor, fleet: str, pmid: int) -> frozenset[int]:
        self._enter("pool_marks")
        name = domain.mark_volume_name(fleet, pmid)
        with self.lock:
            pool = self._pool()
            pool.setdefault(name, FakeVolume(os.path.join(self.pool_path, name), 0))
            names = list(pool)
        self._did("pool_marks")
        return frozenset(p for n in names if (p := domain.mark_pmid(fleet, n)) is not None)
