"""
Block volumes in libvirt XML (pure): a volume's name in a PM's pool, the pool volume that
holds a C{local} one, and the SCSI disk a guest sees it as.

Guests get volumes on the virtio-scsi controller every domain has from creation
(L{vorchd.domain.domain_xml}): a SCSI disk is attached and detached by QEMU at once,
without the guest's OS having to agree (a virtio-blk unplug waits for it).
"""

from __future__ import annotations

import string
import xml.etree.ElementTree as ET

from vorchd.domain import fleet_prefix

#: How the target of every volume's disk begins (C{sda}, C{sdb}, ...).
TARGET_PREFIX = "sd"


def data_volume_name(fleet: str, volumeid: int) -> str:
    """
    The name of block volume C{volumeid}'s volume in a PM's pool.
    """
    return f"{fleet_prefix(fleet)}volume-{volumeid}.raw"


def data_volume_xml(name: str, size_gib: int) -> str:
    """
    An empty raw volume of C{size_gib} GiB, sparse (nothing allocated until written).
    """
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="GiB").text = str(size_gib)
    ET.SubElement(vol, "allocation", unit="bytes").text = "0"
    ET.SubElement(ET.SubElement(vol, "target"), "format", type="raw")
    return ET.tostring(vol, encoding="unicode")


def _disks(domain_xml: str) -> list[ET.Element]:
    return ET.fromstring(domain_xml).findall("devices/disk")


def free_target(*domain_xmls: str) -> str:
    """
    The first SCSI disk target (C{sda}, ..., C{sdz}, C{sdaa}, ...) used in none of
    C{domain_xmls} (a domain's live and persistent definitions).
    """
    disks = [d for xml in domain_xmls for d in _disks(xml)]
    used = {t.get("dev") for d in disks if (t := d.find("target")) is not None}
    letters = string.ascii_lowercase
    names = [*letters, *(a + b for a in letters for b in letters)]
    return next(TARGET_PREFIX + n for n in names if TARGET_PREFIX + n not in used)


def scsi_disk_xml(path: str, target: str, serial: str) -> str:
    """
    The disk of the raw file C{path} on the domain's SCSI bus as C{target}; the guest sees
    C{serial} as its serial number (C{/dev/disk/by-id/...}).
    """
    disk = ET.Element("disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="raw", cache="none")
    ET.SubElement(disk, "source", file=path)
    ET.SubElement(disk, "target", dev=target, bus="scsi")
    ET.SubElement(disk, "serial").text = serial
    return ET.tostring(disk, encoding="unicode")


def attached_disk(domain_xml: str, path: str) -> str | None:
    """
    The C{<disk>} of C{domain_xml} whose source is the file C{path}, as XML, or C{None}.
    """
    for disk in _disks(domain_xml):
        source = disk.find("source")
        if source is not None and source.get("file") == path:
            return ET.tostring(disk, encoding="unicode")
    return None


def with_disk(domain_xml: str, disk_xml: str) -> str:
    """
    C{domain_xml} with the device C{disk_xml} added.
    """
    root = ET.fromstring(domain_xml)
    root.find("devices").append(ET.fromstring(disk_xml))
    return ET.tostring(root, encoding="unicode")


def without_disk(domain_xml: str, path: str) -> str:
    """
    C{domain_xml} without the disk whose source is the file C{path}.
    """
    root = ET.fromstring(domain_xml)
    devices = root.find("devices")
    for disk in devices.findall("disk"):
        source = disk.find("source")
        if source is not None and source.get("file") == path:
            devices.remove(disk)
    return ET.tostring(root, encoding="unicode")
