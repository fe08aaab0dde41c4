"""
Block volumes in libvirt XML (pure): a volume's name in a PM's pool, the pool volume that
holds a C{local} one, and the SCSI disk a guest sees it as.

Guests get volumes on the virtio-scsi controller every domain has from creation
(L{vorchd.domain.domain_xml}): a SCSI disk is attached and detached by QEMU at once,
without the guest's OS having to agree (a virtio-blk unplug waits for it).
"""

from __future__ import annotations

import string
import uuid
import xml.etree.ElementTree as ET

from attrs import frozen

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


# -- the rbd backend: Ceph RBD images through libvirt's RBD storage pool --------------------


@frozen
class CephPool:
    """
    Where C{rbd} volumes live: a Ceph pool, its monitors (host, port), the client user
    and its key (base64, as in a keyring), and a client conf file QEMU is given with each
    disk (bounded waits when the cluster goes away; readable by QEMU on every PM), or "".
    """

    monitors: tuple[tuple[str, int], ...]
    pool: str
    user: str
    key: str
    client_conf: str = ""

    @property
    def secret_uuid(self) -> str:
        """
        The libvirt secret holding the key on every PM: the same for the same cluster,
        pool and user.
        """
        where = ",".join(f"{h}:{p}" for h, p in self.monitors)
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vorchd-rbd://{self.user}@{where}/{self.pool}"))

    @property
    def pool_name(self) -> str:
        """
        The name of the libvirt storage pool over the Ceph pool, on every PM.
        """
        return f"vorchd-rbd-{self.secret_uuid[:8]}"


def rbd_secret_xml(ceph: CephPool) -> str:
    """
    The libvirt secret of C{ceph}'s key (its value is set apart, never in XML).
    """
    secret = ET.Element("secret", ephemeral="no", private="yes")
    ET.SubElement(secret, "uuid").text = ceph.secret_uuid
    usage = ET.SubElement(secret, "usage", type="ceph")
    ET.SubElement(usage, "name").text = f"{ceph.pool_name} client.{ceph.user}"
    return ET.tostring(secret, encoding="unicode")


def _hosts(parent: ET.Element, ceph: CephPool) -> None:
    for host, port in ceph.monitors:
        ET.SubElement(parent, "host", name=host, port=str(port))


def rbd_pool_xml(ceph: CephPool) -> str:
    """
    A libvirt RBD storage pool over C{ceph}'s pool: volumes made and removed through it.
    """
    pool = ET.Element("pool", type="rbd")
    ET.SubElement(pool, "name").text = ceph.pool_name
    source = ET.SubElement(pool, "source")
    ET.SubElement(source, "name").text = ceph.pool
    _hosts(source, ceph)
    auth = ET.SubElement(source, "auth", type="ceph", username=ceph.user)
    ET.SubElement(auth, "secret", uuid=ceph.secret_uuid)
    return ET.tostring(pool, encoding="unicode")


def rbd_volume_xml(name: str, size_gib: int) -> str:
    """
    An RBD image of C{size_gib} GiB (thin: nothing allocated until written).
    """
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="GiB").text = str(size_gib)
    return ET.tostring(vol, encoding="unicode")


def rbd_disk_xml(ceph: CephPool, name: str, target: str, serial: str) -> str:
    """
    The RBD image C{name} as a network disk on the domain's SCSI bus as C{target}.
    """
    disk = ET.Element("disk", type="network", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="raw", cache="none")
    source = ET.SubElement(disk, "source", protocol="rbd", name=f"{ceph.pool}/{name}")
    _hosts(source, ceph)
    if ceph.client_conf:
        ET.SubElement(source, "config", file=ceph.client_conf)
    auth = ET.SubElement(disk, "auth", username=ceph.user)
    ET.SubElement(auth, "secret", type="ceph", uuid=ceph.secret_uuid)
    ET.SubElement(disk, "target", dev=target, bus="scsi")
    ET.SubElement(disk, "serial").text = serial
    # In Ceph, reached from every PM: a live migration leaves it where it is (libvirt
    # copies a non-shared disk to the target with the guest's own).
    ET.SubElement(disk, "shareable")
    return ET.tostring(disk, encoding="unicode")


def rbd_attached_disk(domain_xml: str, ceph: CephPool, name: str) -> str | None:
    """
    The C{<disk>} of C{domain_xml} whose source is RBD image C{name} of C{ceph}, or None.
    """
    for disk in _disks(domain_xml):
        source = disk.find("source")
        if (
            source is not None
            and source.get("protocol") == "rbd"
            and source.get("name") == f"{ceph.pool}/{name}"
        ):
            return ET.tostring(disk, encoding="unicode")
    return None


def without_device(domain_xml: str, disk_xml: str) -> str:
    """
    C{domain_xml} without the disk C{disk_xml} (as L{attached_disk} or
    L{rbd_attached_disk} gave it).
    """
    root = ET.fromstring(domain_xml)
    devices = root.find("devices")
    for disk in devices.findall("disk"):
        if ET.tostring(disk, encoding="unicode") == disk_xml:
            devices.remove(disk)
    return ET.tostring(root, encoding="unicode")
