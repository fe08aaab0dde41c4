"""
Domain, volume and pool XML: user text only ever as escaped metadata, read back exactly.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vorchd.domain import (
    VMSpec,
    domain_xml,
    image_format,
    overlay_volume_xml,
    parse_metadata,
    pool_xml,
)
from vorchd.model import Flavor

FLAVOR = Flavor(3, 4, 2048, 3)


def spec(name: str = "vm", domain_type: str = "kvm", **kw) -> VMSpec:
    values = dict(
        fleet="ab12cd34",
        vmid=42,
        name=name,
        flavor=FLAVOR,
        image_id=7,
        pmid=2,
        domain_type=domain_type,
        disk_path="/pool/vorchd-ab12cd34-42.qcow2",
        console_log="/var/log/libvirt/qemu/vorchd-ab12cd34-42-serial.log",
    )
    values.update(kw)
    return VMSpec(**values)


class DomainXMLTests(SynchronousTestCase):
    @given(st.text(alphabet=st.characters(codec=None), max_size=80))
    def test_any_name_round_trips(self, name):
        """
        Any text at all as a VM name gives well-formed XML from which the exact name reads
        back, while the domain's own name stays vorchd's.
        """
        xml = domain_xml(spec(name))
        root = ET.fromstring(xml)
        self.assertEqual(root.findtext("name"), "vorchd-ab12cd34-42")
        self.assertEqual(parse_metadata(xml)["name"], name)

    def test_markup_in_name_is_text(self):
        """
        A name full of markup is escaped text, not elements or attributes.
        """
        name = "</name><devices><disk/></devices><!-- & ' \""
        root = ET.fromstring(domain_xml(spec(name)))
        self.assertEqual(len(root.findall("devices")), 1)
        self.assertEqual(len(root.findall("devices/disk")), 1)
        self.assertEqual(parse_metadata(ET.tostring(root, encoding="unicode"))["name"], name)

    def test_metadata_carries_ids_and_flavor(self):
        """
        The metadata says which VM, PM, image and flavor the domain is.
        """
        meta = parse_metadata(domain_xml(spec()))
        self.assertEqual(
            meta,
            {
                "fleet": "ab12cd34",
                "vmid": 42,
                "name": "vm",
                "pmid": 2,
                "image_id": 7,
                "flavor": FLAVOR,
            },
        )

    def test_resources_and_disk(self):
        """
        The domain gets the flavor's vCPUs and RAM, and boots from its own qcow2 disk.
        """
        root = ET.fromstring(domain_xml(spec()))
        self.assertEqual(root.get("type"), "kvm")
        self.assertEqual(
            (root.findtext("vcpu"), root.findtext("memory"), root.find("memory").get("unit")),
            (
                "4",
                "2048",
                "MiB",
            ),
        )
        disk = root.find("devices/disk")
        self.assertEqual(disk.find("source").get("file"), "/pool/vorchd-ab12cd34-42.qcow2")
        self.assertEqual(disk.find("driver").get("type"), "qcow2")
        self.assertEqual(root.find("os/type").get("machine"), "pc")
        self.assertTrue(root.find("devices/serial/log").get("file").endswith("-serial.log"))

    def test_test_driver_domain(self):
        """
        For libvirt's test driver the domain is of type test, with no serial console.
        """
        root = ET.fromstring(domain_xml(spec(domain_type="test")))
        self.assertEqual(root.get("type"), "test")
        self.assertIsNone(root.find("devices/serial"))

    def test_no_metadata(self):
        """
        A domain that is not vorchd's has no vorchd metadata.
        """
        self.assertEqual(parse_metadata("<domain type='kvm'><name>other</name></domain>"), {})

    def test_overlay_volume(self):
        """
        A VM's disk is a qcow2 overlay of the flavor's size over the image's base copy.
        """
        vol = ET.fromstring(overlay_volume_xml("v.qcow2", 3, "/pool/base.img", "raw"))
        self.assertEqual(
            (vol.findtext("capacity"), vol.find("capacity").get("unit")), ("3", "GiB")
        )
        self.assertEqual(vol.find("target/format").get("type"), "qcow2")
        self.assertEqual(vol.findtext("backingStore/path"), "/pool/base.img")
        self.assertEqual(vol.find("backingStore/format").get("type"), "raw")

    def test_pool_and_format(self):
        """
        Pools are directory pools; qcow2 images are told from raw ones by their magic.
        """
        pool = ET.fromstring(pool_xml("vorchd", "/var/lib/vorchd/pool"))
        self.assertEqual(
            (pool.get("type"), pool.findtext("target/path")), ("dir", "/var/lib/vorchd/pool")
        )
        self.assertEqual(image_format(b"QFI\xfb\x00\x00\x00\x03"), "qcow2")
        self.assertEqual(image_format(b"\xfa\x31\xc0\x8e"), "raw")
