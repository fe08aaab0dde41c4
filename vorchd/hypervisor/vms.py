"""
VMs on a libvirt PM: each one's own overlay disk and persistent domain, made and started
(or only defined, for a VM moved here), stopped and removed, and the domains a PM has,
listed.

Everything here blocks, like the L{LibvirtHost} whose connection it uses.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import libvirt

from vorchd import domain
from vorchd.domain import VM, VMSpec
from vorchd.hypervisor.interface import HypervisorError
from vorchd.images.copies import delete_volume, find_volume

if TYPE_CHECKING:
    from vorchd.hypervisor.host import LibvirtHost


def create_vm(host: LibvirtHost, vm: VM, base_path: str, base_format: str) -> str:
    """
    L{IHypervisor.create_vm} on C{host}.

    Where C{host.domain_type} is C{auto} and a KVM domain will not start (say /dev/kvm is
    not the qemu user's), it is started emulated, and KVM is no longer tried on that PM.
    One that starts is on trial for a while (L{vorchd.hypervisor.emulation}): if KVM pauses
    it, it is restarted emulated then.
    """
    overlay = make_overlay(host, vm, base_path, base_format)
    try:
        kind = host.domain_type_here()
        try:
            define_and_start(host, spec_here(host, vm, kind, overlay.path()))
        except HypervisorError:
            if kind != "kvm" or host.domain_type != "auto":
                raise
            host.kvm_failed()
            kind = "qemu"
            define_and_start(host, spec_here(host, vm, kind, overlay.path()))
        return kind
    except BaseException:
        delete_volume(overlay)
        raise


def make_overlay(
    host: LibvirtHost, vm: VM, base_path: str, base_format: str
) -> libvirt.virStorageVol:
    """
    Make the VM's own disk in C{host}'s pool, an overlay on the base copy at C{base_path},
    replacing one of that name that a create or a move which died half-way left.
    """
    pool = host.pool()
    stale = host.volume(pool, vm.volume_name)
    if stale is not None:
        # vmids are never reused, so it is ours.
        delete_volume(stale)
    try:
        return pool.createXML(
            domain.overlay_volume_xml(vm.volume_name, vm.flavor.disk, base_path, base_format),
            0,
        )
    except libvirt.libvirtError as e:
        raise host.failed("creating disk", e) from None


def spec_here(host: LibvirtHost, vm: VM, kind: str, disk_path: str) -> VMSpec:
    """
    The spec of C{vm}'s domain on C{host}, of type C{kind} on the disk at C{disk_path}, its
    serial console written into C{host.console_log_dir} if there is one, its NIC (with
    C{vm.mac}) attached to C{host.network}.
    """
    console = None
    if host.console_log_dir and kind != "test":
        console = os.path.join(host.console_log_dir, f"{vm.domain_name}-serial.log")
    return VMSpec.of(vm, kind, disk_path, console, host.network)


def define_vm(host: LibvirtHost, vm: VM) -> str:
    """
    L{IHypervisor.define_vm} on C{host}.
    """
    vol = find_volume(host, vm.volume_name)
    if vol is None:
        raise HypervisorError(
            f"{host.uri}: no disk {vm.volume_name} to define {vm.domain_name} on"
        )
    kind = host.domain_type_here()
    try:
        host.conn.defineXML(domain.domain_xml(spec_here(host, vm, kind, vol.path())))
    except libvirt.libvirtError as e:
        raise host.failed(f"defining {vm.domain_name}", e) from None
    return kind


def define_and_start(host: LibvirtHost, spec: VMSpec) -> None:
    """
    Define C{spec}'s domain and start it; one that is defined but will not start is
    undefined again.
    """
    try:
        dom = host.conn.defineXML(domain.domain_xml(spec))
    except libvirt.libvirtError as e:
        raise host.failed("defining domain", e) from None
    if spec.domain_type == "kvm":
        # On trial from before its start: KVM may pause it before create() returns.
        host.trials.start(spec.domain_name)
    try:
        dom.create()
    except libvirt.libvirtError as e:
        host.trials.end(spec.domain_name)
        error = host.failed(f"starting {spec.domain_type} domain", e)
        _remove_domain(dom)
        raise error from None


def _remove_domain(dom: libvirt.virDomain) -> None:
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError:
        pass
    try:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError:
        dom.undefine()


def destroy_vm(host: LibvirtHost, domain_name: str, volume_name: str | None) -> bool:
    """
    L{IHypervisor.destroy_vm} on C{host}.
    """
    # Not while the domain is restarted emulated, which would bring it back.
    with host.domain_locks.held(domain_name):
        host.trials.end(domain_name)
        return _destroy_vm(host, domain_name, volume_name)


def _destroy_vm(host: LibvirtHost, domain_name: str, volume_name: str | None) -> bool:
    found = True
    try:
        dom = host.conn.lookupByName(domain_name)
    except libvirt.libvirtError as e:
        if not host.is_not_found(e):
            raise host.failed(f"looking up {domain_name}", e) from None
        found = False
    if found:
        try:
            _remove_domain(dom)
        except libvirt.libvirtError as e:
            raise host.failed(f"removing {domain_name}", e) from None
    vol = None if volume_name is None else find_volume(host, volume_name)
    if vol is not None:
        try:
            vol.delete(0)
        except libvirt.libvirtError as e:
            raise host.failed(f"deleting {volume_name}", e) from None
    return found


def domain_names(host: LibvirtHost) -> set[str]:
    """
    L{IHypervisor.domain_names} on C{host}.
    """
    try:
        return {dom.name() for dom in host.conn.listAllDomains(0)}
    except libvirt.libvirtError as e:
        raise host.failed("listing domains", e) from None


def fleet_domains(host: LibvirtHost, fleet: str, known: frozenset[str]) -> list[dict]:
    """
    L{IHypervisor.fleet_domains} on C{host}.
    """
    out = []
    try:
        for dom in host.conn.listAllDomains(0):
            name = dom.name()
            if not name.startswith(domain.fleet_prefix(fleet)):
                continue
            if name in known:
                out.append({"domain": name})
                continue
            meta = domain.parse_metadata(dom.XMLDesc(0))
            if meta.get("fleet") == fleet:
                out.append({**meta, "domain": dom.name()})
    except libvirt.libvirtError as e:
        raise host.failed("listing domains", e) from None
    return out
