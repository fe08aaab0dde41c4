"""
The domain XML vorchd changes for a VM once made: its metadata (a migration's target pmid)
and its size (a resize), on XML as libvirt gives it back; and the names of pool marks.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from attrs import evolve
from twisted.trial.unittest import SynchronousTestCase

from vorchd.domain import (
    VM,
    VMSpec,
    domain_xml,
    mark_pmid,
    mark_volume_name,
    parse_metadata,
    resized_xml,
    with_metadata,
)
from vorchd.hypervisor.interface import VM_STATES, WrongState, wrong_state
from vorchd.model import Flavor

VM1 = VM("ab12cd34", 7, "web <1>", Flavor(1, 1, 64, 1), 3, 1)
VM1_DISK = "/pool/vorchd-ab12cd34-7.qcow2"

# A domain as libvirt gives its XML back: a UUID, memory in KiB, a vCPU placement, devices
# libvirt added, and vorchd's metadata declared on the element itself.
LIBVIRT_XML = """\
<domain type='kvm' id='4'>
  <name>vorchd-ab12cd34-7</name>
  <uuid>0e6ab9b8-1d4f-4a52-8d8b-7f3d3e0c1a11</uuid>
  <metadata>
    <vorchd:vm xmlns:vorchd="https://vorchd.dev/xmlns/vm/1">
      <vorchd:fleet>ab12cd34</vorchd:fleet>
      <vorchd:vmid>7</vorchd:vmid>
      <vorchd:name>web &lt;1&gt;</vorchd:name>
      <vorchd:pmid>1</vorchd:pmid>
      <vorchd:image>3</vorchd:image>
      <vorchd:flavor tid="1" cpu="1" ram="64" disk="1"/>
    </vorchd:vm>
    <other:note xmlns:other="https://example.org/other">kept</other:note>
  </metadata>
  <memory unit='KiB'>65536</memory>
  <currentMemory unit='KiB'>65536</currentMemory>
  <vcpu placement='static' current='1'>1</vcpu>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/pool/vorchd-ab12cd34-7.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'><log file='/log/vorchd-ab12cd34-7-serial.log' append='off'/></serial>
  </devices>
</domain>
"""


class MetadataTests(SynchronousTestCase):
    def test_with_metadata(self):
        """
        The metadata is made the VM's (its pmid, here), once; the rest of the domain
        (its UUID, other metadata, devices) is kept as it was.
        """
        xml = with_metadata(LIBVIRT_XML, evolve(VM1, pmid=2))
        meta = parse_metadata(xml)
        self.assertEqual((meta["pmid"], meta["name"], meta["vmid"]), (2, "web <1>", 7))
        root = ET.fromstring(xml)
        self.assertEqual(len(root.findall("metadata/{https://vorchd.dev/xmlns/vm/1}vm")), 1)
        self.assertEqual(root.findtext("metadata/{https://example.org/other}note"), "kept")
        self.assertEqual(root.findtext("uuid"), "0e6ab9b8-1d4f-4a52-8d8b-7f3d3e0c1a11")
        self.assertEqual(root.find("devices/disk/source").get("file"), VM1_DISK)

    def test_without_metadata(self):
        """
        A domain without metadata gets it, after its name and UUID.
        """
        xml = "<domain type='kvm'><name>d</name><uuid>u</uuid><memory>1</memory></domain>"
        root = ET.fromstring(with_metadata(xml, VM1))
        self.assertEqual([el.tag for el in root], ["name", "uuid", "metadata", "memory"])
        self.assertEqual(parse_metadata(ET.tostring(root, encoding="unicode"))["vmid"], 7)


class ResizeTests(SynchronousTestCase):
    def test_resized(self):
        """
        A resized domain has the flavor's vCPUs (all of them current) and memory, and the
        flavor in its metadata; its type, UUID, disk and console are kept.
        """
        flavor = Flavor(2, 4, 2048, 5)
        root = ET.fromstring(resized_xml(LIBVIRT_XML, evolve(VM1, flavor=flavor)))
        self.assertEqual(root.find("vcpu").attrib, {"placement": "static"})
        self.assertEqual(root.findtext("vcpu"), "4")
        for tag in ("memory", "currentMemory"):
            self.assertEqual((root.find(tag).get("unit"), root.findtext(tag)), ("MiB", "2048"))
        xml = ET.tostring(root, encoding="unicode")
        self.assertEqual(parse_metadata(xml)["flavor"], flavor)
        self.assertEqual(root.get("type"), "kvm")
        self.assertEqual(root.findtext("uuid"), "0e6ab9b8-1d4f-4a52-8d8b-7f3d3e0c1a11")
        self.assertEqual(root.find("devices/disk/source").get("file"), VM1_DISK)
        self.assertEqual(
            root.find("devices/serial/log").get("file"), "/log/vorchd-ab12cd34-7-serial.log"
        )

    def test_resized_own_xml(self):
        """
        vorchd's own domain XML resizes the same way.
        """
        spec = VMSpec.of(VM1, "test", VM1_DISK)
        root = ET.fromstring(
            resized_xml(domain_xml(spec), evolve(VM1, flavor=Flavor(2, 3, 96, 1)))
        )
        self.assertEqual((root.findtext("vcpu"), root.findtext("memory")), ("3", "96"))
        self.assertIsNone(root.find("currentMemory"))


class MarkTests(SynchronousTestCase):
    def test_round_trip(self):
        """
        A mark's name gives back its pmid, for its own fleet only.
        """
        name = mark_volume_name("ab12cd34", 12)
        self.assertEqual(mark_pmid("ab12cd34", name), 12)
        self.assertIsNone(mark_pmid("ab12cd3", name))
        self.assertIsNone(mark_pmid("other", name))

    def test_not_marks(self):
        """
        A fleet's VM disks, base copies and anything else are no marks.
        """
        for name in [
            "vorchd-ab12cd34-7.qcow2",
            "vorchd-ab12cd34-image-1-0123456789ab.img",
            "vorchd-ab12cd34-pm-.mark",
            "vorchd-ab12cd34-pm-1.mark.old",
            "vorchd-ab12cd34-pm-x.mark",
        ]:
            self.assertIsNone(mark_pmid("ab12cd34", name), name)


class WrongStateTests(SynchronousTestCase):
    def test_message(self):
        """
        L{WrongState} says which domain is in which state, in words, and carries the
        state.
        """
        e = wrong_state("qemu+tcp://pm1/system", "vorchd-ab12-7", "shutoff")
        self.assertIsInstance(e, WrongState)
        self.assertEqual(str(e), "qemu+tcp://pm1/system: vorchd-ab12-7 is shut off")
        self.assertEqual(e.state, "shutoff")
        self.assertEqual(
            set(VM_STATES) - {"missing"},
            {
                "running",
                "paused",
                "shutoff",
                "shutdown",
                "crashed",
                "pmsuspended",
                "blocked",
                "nostate",
            },
        )
