"""
L{IHypervisor}'s block volume methods over libvirt: a C{local} volume is a raw volume in
the PM's pool, an C{rbd} one an RBD image in a libvirt RBD pool (whose key is a libvirt
secret, both defined on the PM where missing); either is attached to a domain as a disk
on its SCSI controller (L{vorchd.volume_xml}).

libvirt's test driver cannot attach a device to a domain: there the disk is put in, and
taken out of, the domain's persistent definition, which is what its live one becomes. It
has no RBD pools.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import libvirt

from vorchd import volume_xml
from vorchd.hypervisor.interface import HypervisorError
from vorchd.hypervisor.running import is_active, lookup
from vorchd.images import copies
from vorchd.volume_xml import CephPool

if TYPE_CHECKING:
    from vorchd.hypervisor.host import LibvirtHost


def rbd_pool(host: LibvirtHost, ceph: CephPool) -> libvirt.virStoragePool:
    """
    The PM's libvirt RBD pool over C{ceph}, and the secret of its key, defined and
    started where missing.
    """
    conn = host.conn  # first: a PM that cannot be reached says so
    if host.is_test_driver:
        raise HypervisorError(f"{host.uri}: the test driver has no RBD storage")
    try:
        try:
            secret = conn.secretLookupByUUIDString(ceph.secret_uuid)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_SECRET:
                raise
            secret = conn.secretDefineXML(volume_xml.rbd_secret_xml(ceph), 0)
        secret.setValue(base64.b64decode(ceph.key), 0)
        try:
            pool = conn.storagePoolLookupByName(ceph.pool_name)
        except libvirt.libvirtError as e:
            if not host.is_not_found(e):
                raise
            pool = conn.storagePoolDefineXML(volume_xml.rbd_pool_xml(ceph), 0)
        if not pool.isActive():
            pool.create(0)
        return pool
    except libvirt.libvirtError as e:
        raise host.failed(f"RBD pool {ceph.pool}", e) from None


def _rbd_volume(host, pool, name: str) -> libvirt.virStorageVol | None:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as e:
        if host.is_not_found(e):
            return None
        raise host.failed(f"RBD image {name}", e) from None


def make_volume(
    host: LibvirtHost, volume_name: str, size_gib: int, ceph: CephPool | None = None
) -> str:
    """
    L{IHypervisor.make_volume} on C{host}.
    """
    if ceph is not None:
        pool = rbd_pool(host, ceph)
        if _rbd_volume(host, pool, volume_name) is None:
            try:
                pool.createXML(volume_xml.rbd_volume_xml(volume_name, size_gib), 0)
            except libvirt.libvirtError as e:
                raise host.failed(f"making RBD image {volume_name}", e) from None
        return f"{ceph.pool}/{volume_name}"
    vol = copies.find_volume(host, volume_name)
    if vol is None:
        try:
            vol = host.pool().createXML(volume_xml.data_volume_xml(volume_name, size_gib), 0)
        except libvirt.libvirtError as e:
            raise host.failed(f"making volume {volume_name}", e) from None
    return vol.path()


def ceph_room(host: LibvirtHost, ceph: CephPool) -> tuple[int, int]:
    """
    L{IHypervisor.ceph_room} on C{host}: the RBD pool's capacity and available bytes
    (libvirt reads the cluster's statistics at each refresh).
    """
    pool = rbd_pool(host, ceph)
    try:
        pool.refresh(0)
        _state, capacity, _allocation, available = pool.info()
    except libvirt.libvirtError as e:
        raise host.failed(f"RBD pool {ceph.pool}", e) from None
    return capacity, available


def delete_volume(host: LibvirtHost, volume_name: str, ceph: CephPool | None = None) -> bool:
    """
    L{IHypervisor.delete_volume} on C{host}.
    """
    if ceph is not None:
        vol = _rbd_volume(host, rbd_pool(host, ceph), volume_name)
    else:
        vol = copies.find_volume(host, volume_name)
    if vol is None:
        return False
    try:
        vol.delete(0)
    except libvirt.libvirtError as e:
        if host.is_not_found(e):
            return False
        raise host.failed(f"deleting volume {volume_name}", e) from None
    return True


def _flags(host: LibvirtHost, dom: libvirt.virDomain) -> int:
    config = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    return config | libvirt.VIR_DOMAIN_AFFECT_LIVE if is_active(host, dom) else config


def _finder(host: LibvirtHost, volume_name: str, ceph: CephPool | None):
    """
    A function finding the volume's disk in a domain's XML, and the path of a local one
    (None when there is no such volume).
    """
    if ceph is not None:
        return (lambda xml: volume_xml.rbd_attached_disk(xml, ceph, volume_name)), ""
    vol = copies.find_volume(host, volume_name)
    if vol is None:
        return None, None
    path = vol.path()
    return (lambda xml: volume_xml.attached_disk(xml, path)), path


def attach_volume(
    host: LibvirtHost,
    domain_name: str,
    volume_name: str,
    serial: str,
    ceph: CephPool | None = None,
) -> None:
    """
    L{IHypervisor.attach_volume} on C{host}.
    """
    if ceph is not None:
        rbd_pool(host, ceph)
    find, path = _finder(host, volume_name, ceph)
    if find is None:
        raise HypervisorError(f"{host.uri}: no volume {volume_name}")
    dom = lookup(host, domain_name)
    try:
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        if find(xml) is not None:
            return
        target = volume_xml.free_target(xml, dom.XMLDesc(0))
        if ceph is not None:
            disk = volume_xml.rbd_disk_xml(ceph, volume_name, target, serial)
        else:
            disk = volume_xml.scsi_disk_xml(path, target, serial)
        if host.is_test_driver:
            host.conn.defineXML(volume_xml.with_disk(xml, disk))
        else:
            dom.attachDeviceFlags(disk, _flags(host, dom))
    except libvirt.libvirtError as e:
        raise host.failed(f"attaching {volume_name} to {domain_name}", e) from None


def detach_volume(
    host: LibvirtHost, domain_name: str, volume_name: str, ceph: CephPool | None = None
) -> bool:
    """
    L{IHypervisor.detach_volume} on C{host}.
    """
    find, _path = _finder(host, volume_name, ceph)
    if find is None:
        return False
    dom = lookup(host, domain_name)
    try:
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        if host.is_test_driver:
            disk = find(xml)
            if disk is None:
                return False
            host.conn.defineXML(volume_xml.without_device(xml, disk))
            return True
        attached = False
        if is_active(host, dom) and (disk := find(dom.XMLDesc(0))) is not None:
            dom.detachDeviceFlags(disk, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            attached = True
        if (disk := find(xml)) is not None:
            dom.detachDeviceFlags(disk, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            attached = True
        return attached
    except libvirt.libvirtError as e:
        raise host.failed(f"detaching {volume_name} from {domain_name}", e) from None
