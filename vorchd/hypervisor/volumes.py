"""
L{IHypervisor}'s block volume methods over libvirt: a C{local} volume is a raw volume in
the PM's pool, attached to a domain as a disk on its SCSI controller
(L{vorchd.volume_xml}).

libvirt's test driver cannot attach a device to a domain: there the disk is put in, and
taken out of, the domain's persistent definition, which is what its live one becomes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import libvirt

from vorchd import volume_xml
from vorchd.hypervisor.interface import HypervisorError
from vorchd.hypervisor.running import is_active, lookup
from vorchd.images import copies

if TYPE_CHECKING:
    from vorchd.hypervisor.host import LibvirtHost


def make_volume(host: LibvirtHost, volume_name: str, size_gib: int) -> str:
    """
    L{IHypervisor.make_volume} on C{host}.
    """
    vol = copies.find_volume(host, volume_name)
    if vol is None:
        try:
            vol = host.pool().createXML(volume_xml.data_volume_xml(volume_name, size_gib), 0)
        except libvirt.libvirtError as e:
            raise host.failed(f"making volume {volume_name}", e) from None
    return vol.path()


def delete_volume(host: LibvirtHost, volume_name: str) -> bool:
    """
    L{IHypervisor.delete_volume} on C{host}.
    """
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


def _path(host: LibvirtHost, volume_name: str) -> str:
    vol = copies.find_volume(host, volume_name)
    if vol is None:
        raise HypervisorError(f"{host.uri}: no volume {volume_name}")
    return vol.path()


def _flags(host: LibvirtHost, dom: libvirt.virDomain) -> int:
    config = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    return config | libvirt.VIR_DOMAIN_AFFECT_LIVE if is_active(host, dom) else config


def attach_volume(host: LibvirtHost, domain_name: str, volume_name: str, serial: str) -> None:
    """
    L{IHypervisor.attach_volume} on C{host}.
    """
    path = _path(host, volume_name)
    dom = lookup(host, domain_name)
    try:
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        if volume_xml.attached_disk(xml, path) is not None:
            return
        target = volume_xml.free_target(xml, dom.XMLDesc(0))
        disk = volume_xml.scsi_disk_xml(path, target, serial)
        if host.is_test_driver:
            host.conn.defineXML(volume_xml.with_disk(xml, disk))
        else:
            dom.attachDeviceFlags(disk, _flags(host, dom))
    except libvirt.libvirtError as e:
        raise host.failed(f"attaching {volume_name} to {domain_name}", e) from None


def detach_volume(host: LibvirtHost, domain_name: str, volume_name: str) -> bool:
    """
    L{IHypervisor.detach_volume} on C{host}.
    """
    vol = copies.find_volume(host, volume_name)
    if vol is None:
        return False
    path = vol.path()
    dom = lookup(host, domain_name)
    try:
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        live = dom.XMLDesc(0)
        if host.is_test_driver:
            if volume_xml.attached_disk(xml, path) is None:
                return False
            host.conn.defineXML(volume_xml.without_disk(xml, path))
            return True
        attached = False
        if is_active(host, dom) and (disk := volume_xml.attached_disk(live, path)) is not None:
            dom.detachDeviceFlags(disk, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            attached = True
        if (disk := volume_xml.attached_disk(xml, path)) is not None:
            dom.detachDeviceFlags(disk, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            attached = True
        return attached
    except libvirt.libvirtError as e:
        raise host.failed(f"detaching {volume_name} from {domain_name}", e) from None
