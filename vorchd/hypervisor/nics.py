"""
VMs' network interfaces on a libvirt PM: whether the network they attach to is there and
running (L{check_network}), and the addresses a guest was given (L{vm_addresses}).

Everything here blocks, like the L{LibvirtHost} whose connection it uses.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import libvirt

from vorchd.hypervisor.interface import HostUnreachable, NetworkUnavailable, no_such_vm
from vorchd.network import BRIDGE, NETWORK, interface_macs

if TYPE_CHECKING:
    from vorchd.hypervisor.host import LibvirtHost

# Where a guest's addresses are read, in order: the PM's DHCP leases (libvirt networks),
# then the guest agent (where the guest has one), then the PM's ARP table (a bridge).
_SOURCES = (
    libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
    libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
    libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
)


def check_network(host: LibvirtHost) -> None:
    """
    L{IHypervisor.check_network} on C{host}.
    """
    nic = host.network
    if not host.alive():
        raise HostUnreachable(f"{host.uri}: not connected")
    if nic.kind == NETWORK:
        try:
            net = host.conn.networkLookupByName(nic.source)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                raise NetworkUnavailable(f"{host.uri}: network {nic.source} is missing") from None
            raise host.failed(f"looking up network {nic.source}", e) from None
        try:
            active = net.isActive()
        except libvirt.libvirtError as e:
            raise host.failed(f"network {nic.source}", e) from None
        if not active:
            raise NetworkUnavailable(f"{host.uri}: network {nic.source} is not active")
    elif nic.kind == BRIDGE:
        kind = _interface_type(host, nic.source)
        if kind is None:
            raise NetworkUnavailable(f"{host.uri}: bridge {nic.source} is missing")
        if kind != "bridge":
            raise NetworkUnavailable(f"{host.uri}: {nic.source} is a {kind}, not a bridge")


def _interface_type(host: LibvirtHost, name: str) -> str | None:
    """
    The type (C{bridge}, C{ethernet}, ...) of the PM's network interface C{name} as
    libvirt's interface driver reads it now, or None if there is none.

    Not libvirt's node devices: those are udev's, and without udevd running (in a
    container, say) a bridge made after libvirtd started never shows there. Where the
    interface driver is missing, a node device of that name stands for a bridge.
    """
    try:
        iface = host.conn.interfaceLookupByName(name)
        return ET.fromstring(iface.XMLDesc(0)).get("type") or "device"
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_INTERFACE:
            return None
        if e.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_NO_CONNECT):
            raise host.failed(f"looking up interface {name}", e) from None
    return "bridge" if name in _net_devices(host) else None


def _net_devices(host: LibvirtHost) -> set[str]:
    try:
        devices = host.conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET)
        names = set()
        for dev in devices:
            name = ET.fromstring(dev.XMLDesc(0)).findtext("capability/interface")
            if name:
                names.add(name)
        return names
    except libvirt.libvirtError as e:
        raise host.failed("listing network devices", e) from None


def vm_addresses(host: LibvirtHost, domain_name: str) -> list[str]:
    """
    L{IHypervisor.vm_addresses} on C{host}.
    """
    try:
        dom = host.conn.lookupByName(domain_name)
    except libvirt.libvirtError as e:
        if host.is_not_found(e):
            raise no_such_vm(host.uri, domain_name) from None
        raise host.failed(f"looking up {domain_name}", e) from None
    try:
        # Not running, or no NIC: no address, and nothing more to ask.
        if not dom.isActive() or not interface_macs(dom.XMLDesc(0)):
            return []
    except libvirt.libvirtError as e:
        raise host.failed(f"state of {domain_name}", e) from None
    for source in _SOURCES:
        try:
            found = dom.interfaceAddresses(source, 0)
        except libvirt.libvirtError as e:
            # No agent in the guest, no lease database: the next source.
            if not host.alive():
                raise host.failed(f"addresses of {domain_name}", e) from None
            continue
        addresses = sorted_addresses(
            a["addr"] for iface in (found or {}).values() for a in iface.get("addrs") or ()
        )
        if addresses:
            return addresses
    return []


def sorted_addresses(addresses) -> list[str]:
    """
    C{addresses} without loopback and link-local ones and without repeats, IPv4 first.
    """
    out = set()
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local):
            out.add(ip)
    return [str(ip) for ip in sorted(out, key=lambda ip: (ip.version, ip))]
