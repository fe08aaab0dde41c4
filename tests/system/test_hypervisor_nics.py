"""
VMs' network interfaces, as every provider of L{IHypervisor} must make them: a virtio NIC
with the VM's stored MAC address on the PM's network (kept through a resize, a live
migration and a cold move), none for C{[network] none}, the PM's network checked, and the
addresses a guest has.

L{NicTests} holds no tests of its own to run: it is mixed into the class
L{tests.system.test_hypervisor_interface.make_hypervisor_tests} makes for each kind of
hypervisor, whose maker gives PMs with a network (C{networked}, C{set_network}) and reads
a domain's definition back (C{domain_xml}).

On real libvirtd PMs (which share this machine's network namespace) the network is an
isolated libvirt network without any address or DHCP: its bridge carries nothing the host
sends. Guests that really get an address by DHCP are tested on PMs in network namespaces
of their own, in L{tests.system.test_reachable_vms}.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET

from attrs import evolve
from twisted.trial.unittest import SkipTest

from tests.harness import tmpdir
from tests.system.test_hypervisor_life import BIGGER, STOP_TIMEOUT
from vorchd.domain import VM
from vorchd.hypervisor.interface import IHypervisor, NetworkUnavailable, NoSuchVM

#: The MAC address the tests' VMs are stored with (not the one derived by default).
MAC = "02:5e:00:12:34:56"


class NicTests:
    """
    The tests of VMs' NICs, mixed into each kind's test class.
    """

    def networked(self, network: str | None = None, second: bool = False) -> IHypervisor:
        """
        A connected hypervisor of the test's PM (or the second PM) whose VMs attach to the
        libvirt network C{network} (default: the one the maker gave that PM, active).
        """
        return self.connected(self.maker.networked(self, network, second))

    def create_with_mac(self, hv: IHypervisor, vmid: int) -> VM:
        vm = evolve(self.spec(vmid), mac=MAC)
        path, fmt = hv.ensure_base(vm.fleet, 1, str(self.image))
        self.addCleanup(self.destroy_quietly, vm, hv)
        hv.create_vm(vm, path, fmt)
        return vm

    def nics(self, hv: IHypervisor, domain_name: str) -> list[dict[str, str]]:
        """
        The NICs of the domain's definition, as the PM has it: type, MAC, source, model.
        """
        root = ET.fromstring(self.maker.domain_xml(hv, domain_name))
        return [
            {
                "type": nic.get("type"),
                "mac": nic.find("mac").get("address"),
                "source": nic.find("source").get(nic.get("type")),
                "model": nic.find("model").get("type"),
            }
            for nic in root.findall("devices/interface")
        ]

    def test_nic_carries_stored_mac(self):
        """
        A VM on a PM with a network has one virtio NIC on that network with the VM's
        stored MAC address, which its metadata carries too; its addresses are IP addresses
        (one at once where the PM makes leases up: the fake and the test driver).
        """
        hv = self.networked()
        vm = self.create_with_mac(hv, 11)
        expected = {"type": "network", "mac": MAC, "model": "virtio"}
        expected["source"] = hv.network.source
        self.assertEqual(self.nics(hv, vm.domain_name), [expected])
        [meta] = hv.fleet_domains(self.fleet)
        self.assertEqual(meta["mac"], MAC)
        ips = hv.vm_addresses(vm.domain_name)
        for ip in ips:
            ipaddress.ip_address(ip)
        if self.maker.leases_at_once:
            self.assertEqual(len(ips), 1)

    def test_no_nic_without_network(self):
        """
        With C{[network] none} a VM has no NIC at all, and no addresses.
        """
        vm = self.create_with_mac(self.hv, 12)
        self.assertEqual(self.nics(self.hv, vm.domain_name), [])
        self.assertEqual(self.hv.vm_addresses(vm.domain_name), [])

    def test_addresses_of_no_such_vm(self):
        """
        The addresses of a domain the PM does not have: L{NoSuchVM}.
        """
        self.assertRaises(NoSuchVM, self.hv.vm_addresses, self.spec(99).domain_name)

    def test_check_network(self):
        """
        A PM's network passes the check while it is active; stopped, or missing, it fails
        with L{NetworkUnavailable} saying which. Without a network there is nothing to
        check.
        """
        self.hv.check_network()
        hv = self.networked()
        hv.check_network()
        self.maker.set_network(hv, active=False)
        e = self.assertRaises(NetworkUnavailable, hv.check_network)
        self.assertIn(f"{hv.network.source} is not active", str(e))
        missing = self.networked("vorchd-no-such-net")
        e = self.assertRaises(NetworkUnavailable, missing.check_network)
        self.assertIn("vorchd-no-such-net is missing", str(e))

    def test_resize_keeps_nic(self):
        """
        A resized VM keeps its NIC and MAC address.
        """
        hv = self.networked()
        self.maker.ignore_acpi(hv)
        vm = self.create_with_mac(hv, 13)
        before = self.nics(hv, vm.domain_name)
        hv.resize_vm(evolve(vm, flavor=BIGGER), STOP_TIMEOUT)
        self.assertEqual(self.nics(hv, vm.domain_name), before)

    def test_migrate_keeps_nic(self):
        """
        A VM migrated live to a PM with the same network keeps its NIC and MAC address.
        """
        if self.maker.cannot_migrate:
            raise SkipTest(self.maker.cannot_migrate)
        hv = self.networked()
        vm = self.create_with_mac(hv, 14)
        before = self.nics(hv, vm.domain_name)
        target = self.networked(second=True)
        moved = evolve(vm, pmid=2)
        path, fmt = target.ensure_base(vm.fleet, 1, str(self.image))
        self.addCleanup(self.destroy_quietly, moved, target)
        target.prepare_incoming(moved, path, fmt)
        hv.migrate_vm(moved, target.uri, False)
        self.assertEqual(target.vm_state(vm.domain_name), "running")
        self.assertEqual(self.nics(target, vm.domain_name), before)

    def test_cold_move_keeps_nic(self):
        """
        A shut off VM moved by its disk and defined on a PM with the same network keeps
        its NIC and MAC address there, and starts.
        """
        hv = self.networked()
        self.maker.ignore_acpi(hv)
        vm = self.create_with_mac(hv, 15)
        before = self.nics(hv, vm.domain_name)
        hv.stop_vm(vm.domain_name, STOP_TIMEOUT)
        target = self.networked(second=True)
        moved = evolve(vm, pmid=2)
        path, fmt = target.ensure_base(vm.fleet, 1, str(self.image))
        self.addCleanup(self.destroy_quietly, moved, target)
        target.prepare_incoming(moved, path, fmt)
        disk = tmpdir(self) / "disk.qcow2"
        hv.export_disk(vm.volume_name, str(disk))
        target.import_disk(vm.volume_name, str(disk))
        target.define_vm(moved)
        hv.destroy_vm(vm.domain_name, vm.volume_name)
        self.assertEqual(self.nics(target, vm.domain_name), before)
        target.start_vm(vm.domain_name)
        self.assertEqual(target.vm_state(vm.domain_name), "running")
