"""
Moving a VM from one libvirt PM to another: live migration (the source's side), the
target's disk made ready for it, a shut off VM's disk carried over by the daemon (export,
import) and its domain defined there; and the marks that show which PMs share a pool.

Everything here blocks, like the L{LibvirtHost} whose connection it uses.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import libvirt
from twisted.logger import Logger

from vorchd import domain
from vorchd.domain import VM
from vorchd.hypervisor import running, vms
from vorchd.hypervisor.interface import HypervisorError, wrong_state
from vorchd.images import copies

if TYPE_CHECKING:
    from vorchd.hypervisor.host import LibvirtHost

#: A live migration: peer to peer (the source's libvirtd reaches the target's itself, and
#: a failure leaves the domain running on the source), the domain kept persistently on the
#: target and undefined on the source.
MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)

log = Logger()


def migrate_vm(host: LibvirtHost, vm: VM, target_uri: str, shared: bool) -> None:
    """
    L{IHypervisor.migrate_vm} on C{host}.

    Unless C{shared}, the disk is copied incrementally (C{VIR_MIGRATE_NON_SHARED_INC}):
    only the overlay's blocks, into the overlay that the target's L{prepare_incoming}
    made over its own base copy (libvirt 9 cannot make it itself). The target's domain,
    live and persistent, is the source's migratable XML with vorchd's metadata naming
    C{vm.pmid}.
    """
    dom = running.lookup(host, vm.domain_name)
    if not running.is_active(host, dom):
        raise wrong_state(host.uri, vm.domain_name, running.state_of(host, dom))
    if host.is_test_driver:
        raise HypervisorError(f"{host.uri}: libvirt's test driver cannot migrate")
    # libvirt judges a disk shared only on a network or cluster filesystem, and then only
    # with host caching off. vorchd has found the pool shared (pool_marks), which covers a
    # directory PMs share on one machine too, and QEMU itself flushes the source's writes
    # and rereads the disk on the target as the guest moves.
    flags = MIGRATE_FLAGS | (
        libvirt.VIR_MIGRATE_UNSAFE if shared else libvirt.VIR_MIGRATE_NON_SHARED_INC
    )
    xml_flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE
    try:
        live = dom.XMLDesc(xml_flags)
        persistent = dom.XMLDesc(xml_flags | libvirt.VIR_DOMAIN_XML_INACTIVE)
    except libvirt.libvirtError as e:
        raise host.failed(f"reading {vm.domain_name}", e) from None
    params = {
        libvirt.VIR_MIGRATE_PARAM_DEST_XML: domain.with_metadata(live, vm),
        libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: domain.with_metadata(persistent, vm),
    }
    try:
        dom.migrateToURI3(target_uri, params, flags)
    except libvirt.libvirtError as e:
        raise host.failed(f"migrating {vm.domain_name} to {target_uri}", e) from None
    if not shared:
        _delete_left_disk(host, vm.volume_name)


def _delete_left_disk(host: LibvirtHost, volume_name: str) -> None:
    """
    Delete the disk a VM that migrated away left; the migration done, a failure here is
    only logged.
    """
    try:
        vol = host.volume(host.pool(), volume_name)
        if vol is not None:
            vol.delete(0)
        return
    except libvirt.libvirtError as e:
        why = e.get_error_message()
    except HypervisorError as e:
        why = str(e)
    log.warn(
        "{uri}: deleting {name} after migrating it away: {why}",
        uri=host.uri,
        name=volume_name,
        why=why,
    )


def prepare_incoming(host: LibvirtHost, vm: VM, base_path: str, base_format: str) -> None:
    """
    L{IHypervisor.prepare_incoming} on C{host}.
    """
    vms.make_overlay(host, vm, base_path, base_format)


def _existing(host: LibvirtHost, volume_name: str) -> libvirt.virStorageVol:
    vol = copies.find_volume(host, volume_name)
    if vol is None:
        raise HypervisorError(f"{host.uri}: no volume {volume_name}")
    return vol


def export_disk(host: LibvirtHost, volume_name: str, path: str) -> None:
    """
    L{IHypervisor.export_disk} on C{host}. On the test driver, whose volumes hold nothing,
    C{path} is made empty.
    """
    vol = _existing(host, volume_name)
    if host.is_test_driver:
        try:
            with open(path, "wb"):
                pass
        except OSError as e:
            raise HypervisorError(f"disk file {path}: {e.strerror}") from None
        return
    copies.download(host, vol, path)


def import_disk(host: LibvirtHost, volume_name: str, path: str) -> None:
    """
    L{IHypervisor.import_disk} on C{host}.
    """
    vol = _existing(host, volume_name)
    if host.is_test_driver:
        return
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise HypervisorError(f"disk file {path}: {e.strerror}") from None
    copies.upload(host, vol, path, size)


def pool_marks(host: LibvirtHost, fleet: str, pmid: int) -> frozenset[int]:
    """
    L{IHypervisor.pool_marks} on C{host}.
    """
    pool = host.pool()
    name = domain.mark_volume_name(fleet, pmid)
    if host.volume(pool, name) is None:
        try:
            pool.createXML(domain.mark_volume_xml(name), 0)
        except libvirt.libvirtError as e:
            # Its file there already, and not listed: made before the pool was (re)made.
            if copies.made_elsewhere(host, pool, name) is None:
                raise host.failed(f"marking the pool with {name}", e) from None
    try:
        pool.refresh(0)
    except libvirt.libvirtError:
        pass  # refused while an upload into the pool runs: the list as it is
    try:
        names = pool.listVolumes()
    except libvirt.libvirtError as e:
        raise host.failed("listing volumes", e) from None
    return frozenset(p for n in names if (p := domain.mark_pmid(fleet, n)) is not None)
