"""
Where VMs' NICs attach (the ini's [network] and twistd's --network), their MAC addresses
and their domain XML, all pure.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import tmpdir
from vorchd.config import ConfigError, load_settings
from vorchd.domain import VM, VMSpec, domain_xml, parse_metadata
from vorchd.model import Flavor
from vorchd.network import (
    BRIDGE,
    NETWORK,
    NO_NIC,
    Attachment,
    NetworkSettingError,
    NetworkSettings,
    interface_macs,
    mac_of,
    parse_attachment,
)

FLAVOR = Flavor(1, 1, 64, 1)


class AttachmentTests(SynchronousTestCase):
    def test_forms(self):
        """
        none (or nothing) is no NIC; a bare name or network:NAME a libvirt network;
        bridge:NAME a bridge on the PM.
        """
        self.assertEqual(parse_attachment(""), NO_NIC)
        self.assertEqual(parse_attachment(" none "), NO_NIC)
        self.assertEqual(parse_attachment("default"), Attachment(NETWORK, "default"))
        self.assertEqual(parse_attachment("network: lan"), Attachment(NETWORK, "lan"))
        self.assertEqual(parse_attachment("bridge:br0"), Attachment(BRIDGE, "br0"))

    def test_refused(self):
        """
        Another kind, or a kind without a usable name, is refused.
        """
        for text in ("vlan:7", "bridge:", "network:a b", "bridge:<x>"):
            self.assertRaises(NetworkSettingError, parse_attachment, text)

    def test_per_driver(self):
        """
        A PM's VMs attach as its URI's driver's line says, else as attach says.
        """
        settings = NetworkSettings.from_section({"attach": "default", "test": "none"})
        self.assertEqual(settings.for_uri("qemu+ssh://h/system"), Attachment(NETWORK, "default"))
        self.assertEqual(settings.for_uri("qemu:///system"), Attachment(NETWORK, "default"))
        self.assertEqual(settings.for_uri("test:///x.xml"), NO_NIC)

    def test_ini_and_option(self):
        """
        The ini's [network] is read (a bad value names the key); twistd's --network
        replaces its attach and keeps its per-driver lines; without either, no NIC.
        """
        directory = Path(tmpdir(self))
        ini = directory / "vorchd.ini"
        ini.write_text("[network]\nattach = lan\ntest = none\n")
        settings = load_settings(str(ini), environ={})
        self.assertEqual(settings.network.attach, Attachment(NETWORK, "lan"))
        option = load_settings(str(ini), environ={}, overrides={"network_attach": "bridge:br0"})
        self.assertEqual(option.network.for_uri("qemu:///system"), Attachment(BRIDGE, "br0"))
        self.assertEqual(option.network.for_uri("test:///n.xml"), NO_NIC)
        e = self.assertRaises(
            ConfigError, load_settings, str(ini), {}, {"network_attach": "vlan:1"}
        )
        self.assertIn("--network", str(e))
        ini.write_text("[network]\nqemu = bridge:\n")
        e = self.assertRaises(ConfigError, load_settings, str(ini), {})
        self.assertIn("[network] qemu", str(e))
        ini.write_text("[server]\nport = 80\n")
        self.assertEqual(load_settings(str(ini), environ={}).network, NetworkSettings())


class MacTests(SynchronousTestCase):
    def test_stable_and_local(self):
        """
        A VM's MAC address is its domain name's, always the same, locally administered
        and unicast, and differs between VMs and between fleets.
        """
        macs = {mac_of(f"vorchd-{fleet}-{vmid}") for fleet in ("a", "b") for vmid in range(50)}
        self.assertEqual(len(macs), 100)
        self.assertEqual(mac_of("vorchd-a-1"), mac_of("vorchd-a-1"))
        for mac in macs:
            self.assertRegex(mac, r"^02(:[0-9a-f]{2}){5}$")

    def test_vm_default(self):
        """
        A VM is made with its derived MAC address unless given its stored one.
        """
        vm = VM("f1", 7, "x", FLAVOR, 1, 1)
        self.assertEqual(vm.mac, mac_of("vorchd-f1-7"))
        self.assertEqual(
            VM("f1", 7, "x", FLAVOR, 1, 1, mac="02:00:00:00:00:01").mac, "02:00:00:00:00:01"
        )


class DomainNicTests(SynchronousTestCase):
    def spec(self, nic: Attachment) -> VMSpec:
        vm = VM("f1", 7, "x", FLAVOR, 1, 1, mac="02:11:22:33:44:55")
        return VMSpec.of(vm, "kvm", "/p/d.qcow2", None, nic)

    def test_network_nic(self):
        """
        On a libvirt network, the domain has one virtio NIC with the VM's MAC address,
        which its metadata carries too.
        """
        xml = domain_xml(self.spec(Attachment(NETWORK, "lan")))
        self.assertEqual(interface_macs(xml), ["02:11:22:33:44:55"])
        self.assertIn(
            '<interface type="network"><mac address="02:11:22:33:44:55" />'
            '<source network="lan" /><model type="virtio" /></interface>',
            xml,
        )
        self.assertEqual(parse_metadata(xml)["mac"], "02:11:22:33:44:55")

    def test_bridge_nic(self):
        """
        On a bridge, the NIC's source is the bridge.
        """
        xml = domain_xml(self.spec(Attachment(BRIDGE, "br0")))
        self.assertIn('<interface type="bridge">', xml)
        self.assertIn('<source bridge="br0" />', xml)

    def test_none(self):
        """
        With none, no NIC at all.
        """
        xml = domain_xml(self.spec(NO_NIC))
        self.assertNotIn("<interface", xml)
        self.assertEqual(interface_macs(xml), [])
