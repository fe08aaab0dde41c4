"""
libvirt domain, volume and pool XML, built with an XML library and read back.

Pure: user text (a VM's name) only ever reaches libvirt as escaped XML text inside
vorchd's own metadata element; every libvirt name is of vorchd's choosing.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

from attrs import Factory, field, frozen

from vorchd.model import Flavor
from vorchd.network import NO_NIC, Attachment, interface_element, mac_of

METADATA_NS = "https://vorchd.dev/xmlns/vm/1"
METADATA_PREFIX = "vorchd"

# Characters XML 1.0 cannot carry at all, even escaped, and CR, which XML parsers turn
# into LF: a name with any of them is carried base64-encoded to come back exact.
_NOT_XML = re.compile("[^\u0009\u000a\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

ET.register_namespace(METADATA_PREFIX, METADATA_NS)


@frozen
class VM:
    """
    A VM as the fleet asks a PM for it: who it is, its flavor and image, and where.

    @ivar fleet: the fleet id, so that two fleets sharing a hypervisor never collide.
    @ivar mac: its NIC's MAC address, as stored with it (by default the one
        L{vorchd.network.mac_of} derives from its domain name).
    """

    fleet: str
    vmid: int
    name: str
    flavor: Flavor
    image_id: int
    pmid: int
    mac: str = field(
        default=Factory(lambda vm: mac_of(domain_name(vm.fleet, vm.vmid)), takes_self=True)
    )

    @property
    def domain_name(self) -> str:
        return domain_name(self.fleet, self.vmid)

    @property
    def volume_name(self) -> str:
        return volume_name(self.fleet, self.vmid)


@frozen
class VMSpec:
    """
    Everything needed to build one VM's domain: who it is and what it runs on. Made
    whole, by L{of}, once the PM has decided the domain type and made the disk.

    @ivar fleet: the fleet id, so that two fleets sharing a hypervisor never collide.
    @ivar domain_type: C{kvm}, C{qemu} or C{test} (libvirt's test driver).
    @ivar disk_path: the path of the VM's own overlay volume on the PM.
    @ivar console_log: where the serial console's output is written on the PM, or None.
    @ivar mac: the MAC address of its NIC; C{nic}: what the NIC is attached to (no NIC
        for L{vorchd.network.NONE}).
    """

    fleet: str
    vmid: int
    name: str
    flavor: Flavor
    image_id: int
    pmid: int
    domain_type: str
    disk_path: str
    console_log: str | None = None
    mac: str = ""
    nic: Attachment = NO_NIC

    @classmethod
    def of(
        cls,
        vm: VM,
        domain_type: str,
        disk_path: str,
        console_log: str | None = None,
        nic: Attachment = NO_NIC,
    ) -> VMSpec:
        """
        The spec of C{vm} running as C{domain_type} on the disk at C{disk_path}, its NIC
        attached to C{nic}.
        """
        return cls(
            vm.fleet,
            vm.vmid,
            vm.name,
            vm.flavor,
            vm.image_id,
            vm.pmid,
            domain_type,
            disk_path,
            console_log,
            vm.mac,
            nic,
        )

    @property
    def domain_name(self) -> str:
        return domain_name(self.fleet, self.vmid)

    @property
    def volume_name(self) -> str:
        return volume_name(self.fleet, self.vmid)


def fleet_prefix(fleet: str) -> str:
    """
    How the name of every domain and volume of fleet C{fleet} begins.
    """
    return f"vorchd-{fleet}-"


def base_volume_prefix(fleet: str) -> str:
    """
    How the name of every base copy of fleet C{fleet} begins.
    """
    return f"{fleet_prefix(fleet)}image-"


def domain_name(fleet: str, vmid: int) -> str:
    """
    The libvirt name of a VM's domain: unique in the fleet, safe everywhere.
    """
    return f"{fleet_prefix(fleet)}{vmid}"


def volume_name(fleet: str, vmid: int) -> str:
    """
    The name of a VM's own disk volume in the PM's pool.
    """
    return f"{fleet_prefix(fleet)}{vmid}.qcow2"


def mark_volume_name(fleet: str, pmid: int) -> str:
    """
    The name of the tiny volume that marks PM C{pmid} of fleet C{fleet} in its pool: PMs
    whose pools are one shared directory see each other's marks.
    """
    return f"{fleet_prefix(fleet)}pm-{pmid}.mark"


def mark_pmid(fleet: str, name: str) -> int | None:
    """
    The pmid whose mark (L{mark_volume_name}) of fleet C{fleet} the volume C{name} is, or
    None if it is no such mark.
    """
    m = re.fullmatch(re.escape(fleet_prefix(fleet)) + r"pm-([0-9]+)\.mark", name)
    return int(m.group(1)) if m else None


def base_volume_name(fleet: str, image_id: int, digest: str) -> str:
    """
    The name of an image's base copy in a PM's pool, shared by all VMs of that image;
    it carries the image's checksum, so a changed image file gets a copy of its own.
    """
    return f"{base_volume_prefix(fleet)}{image_id}-{digest[:12]}.img"


def image_format(header: bytes) -> str:
    """
    C{qcow2} if C{header} (an image's first bytes) is a qcow2 header, else C{raw}.
    """
    return "qcow2" if header[:4] == b"QFI\xfb" else "raw"


def _sub(parent: ET.Element, tag: str, text: object = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = str(text)
    return el


def _name_element(parent: ET.Element, name: str) -> None:
    tag = f"{{{METADATA_NS}}}name"
    if _NOT_XML.search(name):
        # XML cannot hold these characters even as references: carry the exact text.
        _sub(
            parent,
            tag,
            base64.b64encode(name.encode("utf-8", "surrogatepass")).decode(),
            encoding="base64",
        )
    else:
        _sub(parent, tag, name)


def metadata_element(spec: VMSpec | VM) -> ET.Element:
    """
    vorchd's C{<metadata>} child: the VM's ids, name, flavor and MAC address.
    """
    ns = f"{{{METADATA_NS}}}"
    vm = ET.Element(ns + "vm")
    _sub(vm, ns + "fleet", spec.fleet)
    _sub(vm, ns + "vmid", spec.vmid)
    _name_element(vm, spec.name)
    _sub(vm, ns + "pmid", spec.pmid)
    _sub(vm, ns + "image", spec.image_id)
    _sub(
        vm,
        ns + "flavor",
        None,
        tid=str(spec.flavor.tid),
        cpu=str(spec.flavor.cpu),
        ram=str(spec.flavor.ram),
        disk=str(spec.flavor.disk),
    )
    if spec.mac:
        _sub(vm, ns + "mac", spec.mac)
    return vm


def domain_xml(spec: VMSpec) -> str:
    """
    The persistent definition of a VM's domain.
    """
    dom = ET.Element("domain", type=spec.domain_type)
    _sub(dom, "name", spec.domain_name)
    meta = _sub(dom, "metadata")
    meta.append(metadata_element(spec))
    _sub(dom, "memory", spec.flavor.ram, unit="MiB")
    _sub(dom, "vcpu", spec.flavor.cpu)
    os_ = _sub(dom, "os")
    if spec.domain_type == "test":
        _sub(os_, "type", "hvm")
    else:
        # "pc" boots in seconds here; q35's firmware took three times as long.
        _sub(os_, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_, "boot", dev="hd")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=spec.disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")
    # Block volumes are attached here (vorchd.volume_xml): SCSI hot-plug needs no ACPI and
    # no help from the guest's OS.
    _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    nic = interface_element(spec.nic, spec.mac)
    if nic is not None:
        devices.append(nic)
    if spec.domain_type != "test":
        serial = _sub(devices, "serial", type="pty")
        if spec.console_log:
            _sub(serial, "log", file=spec.console_log, append="off")
        _sub(serial, "target", port="0")
        _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")
    return ET.tostring(dom, encoding="unicode")


# What comes before <metadata> in libvirt's domain XML.
_BEFORE_METADATA = {"name", "uuid", "genid", "title", "description"}


def with_metadata(xml: str, vm: VM) -> str:
    """
    The domain XML C{xml} (as libvirt gives it) with vorchd's metadata made C{vm}'s (its
    pmid, say, for the PM it migrates to), and nothing else changed.
    """
    root = ET.fromstring(xml)
    meta = root.find("metadata")
    if meta is None:
        meta = ET.Element("metadata")
        # libvirt expects it right after the name, uuid, title and description.
        after = [i for i, el in enumerate(root) if el.tag in _BEFORE_METADATA]
        root.insert(after[-1] + 1 if after else 0, meta)
    for old in meta.findall(f"{{{METADATA_NS}}}vm"):
        meta.remove(old)
    meta.append(metadata_element(vm))
    return ET.tostring(root, encoding="unicode")


def resized_xml(xml: str, vm: VM) -> str:
    """
    The domain XML C{xml} (as libvirt gives it) with C{vm.flavor}'s vCPUs and memory, and
    C{vm}'s metadata; its domain type, devices (its disk and console) and the rest kept.
    """
    root = ET.fromstring(with_metadata(xml, vm))
    memory, vcpu = root.find("memory"), root.find("vcpu")
    if memory is None:
        memory = _sub(root, "memory")
    if vcpu is None:
        vcpu = _sub(root, "vcpu")
    for el in (memory, root.find("currentMemory")):
        if el is not None:
            el.attrib = {"unit": "MiB"}
            el.text = str(vm.flavor.ram)
    vcpu.attrib.pop("current", None)
    vcpu.text = str(vm.flavor.cpu)
    return ET.tostring(root, encoding="unicode")


def parse_metadata(xml: str) -> dict[str, object]:
    """
    Read back what L{metadata_element} wrote, from a domain's XML or the element alone.

    @return: C{fleet}, C{vmid}, C{name}, C{pmid}, C{image_id}, C{flavor} and C{mac} (not
        for a domain made before VMs had one); empty when
        the XML carries no vorchd metadata.
    """
    root = ET.fromstring(xml)
    ns = f"{{{METADATA_NS}}}"
    vm = root if root.tag == ns + "vm" else root.find(f"metadata/{ns}vm")
    if vm is None:
        return {}
    name_el = vm.find(ns + "name")
    name = (name_el.text or "") if name_el is not None else ""
    if name_el is not None and name_el.get("encoding") == "base64":
        name = base64.b64decode(name).decode("utf-8", "surrogatepass")
    fl = vm.find(ns + "flavor")
    flavor = None
    if fl is not None:
        flavor = Flavor(*(int(fl.get(k, 0)) for k in ("tid", "cpu", "ram", "disk")))
    mac = vm.findtext(ns + "mac")
    return {
        **({"mac": mac} if mac else {}),
        "fleet": vm.findtext(ns + "fleet"),
        "vmid": int(vm.findtext(ns + "vmid", "0")),
        "name": name,
        "pmid": int(vm.findtext(ns + "pmid", "0")),
        "image_id": int(vm.findtext(ns + "image", "0")),
        "flavor": flavor,
    }


def pool_xml(name: str, path: str) -> str:
    """
    A directory storage pool for VM disks.
    """
    pool = ET.Element("pool", type="dir")
    _sub(pool, "name", name)
    _sub(_sub(pool, "target"), "path", path)
    return ET.tostring(pool, encoding="unicode")


def base_volume_xml(name: str, size_bytes: int) -> str:
    """
    An empty volume of C{size_bytes}, to be filled with an image's bytes by upload.

    Declared raw: the upload replaces its content as is, and the pool then sees whatever
    format the image has.
    """
    vol = ET.Element("volume")
    _sub(vol, "name", name)
    _sub(vol, "capacity", size_bytes, unit="bytes")
    target = _sub(vol, "target")
    _sub(target, "format", type="raw")
    # qemu runs as another user and must read the base through the overlay.
    _sub(_sub(target, "permissions"), "mode", "0644")
    return ET.tostring(vol, encoding="unicode")


def mark_volume_xml(name: str) -> str:
    """
    An empty raw volume, a PM's mark in its pool (L{mark_volume_name}).
    """
    vol = ET.Element("volume")
    _sub(vol, "name", name)
    _sub(vol, "capacity", 0, unit="bytes")
    _sub(_sub(vol, "target"), "format", type="raw")
    return ET.tostring(vol, encoding="unicode")


def overlay_volume_xml(name: str, size_gib: int, backing_path: str, backing_format: str) -> str:
    """
    A VM's own qcow2 disk of C{size_gib} GiB over an image's base copy.
    """
    vol = ET.Element("volume")
    _sub(vol, "name", name)
    _sub(vol, "capacity", size_gib, unit="GiB")
    _sub(_sub(vol, "target"), "format", type="qcow2")
    backing = _sub(vol, "backingStore")
    _sub(backing, "path", backing_path)
    _sub(backing, "format", type=backing_format)
    return ET.tostring(vol, encoding="unicode")
