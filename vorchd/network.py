"""
Where a VM's network interface goes, and its MAC address (pure).

The ini's C{[network]} section names, for every PM or per PM kind (the libvirt URI's
driver: C{qemu}, C{test}, ...), what each VM's virtio NIC is attached to: a libvirt
network, a bridge on the PM, or nothing (L{Attachment}). A VM's MAC address is derived
from its domain's name (so from the fleet and the vmid), in the locally administered
range, and stored with the VM: the claim writes it, the domain's metadata carries it.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from attrs import field, frozen

NETWORK = "network"
BRIDGE = "bridge"
NONE = "none"


class NetworkSettingError(ValueError):
    """
    A C{[network]} value is not one of the forms L{parse_attachment} reads.
    """


@frozen
class Attachment:
    """
    What a VM's NIC is attached to on a PM: C{kind} L{NETWORK} (a libvirt network named
    C{source}), L{BRIDGE} (a bridge C{source} on the PM) or L{NONE} (no NIC at all).
    """

    kind: str = NONE
    source: str = ""

    def __str__(self) -> str:
        return NONE if self.kind == NONE else f"{self.kind} {self.source}"


#: No NIC at all (C{none}).
NO_NIC = Attachment()


def parse_attachment(text: str) -> Attachment:
    """
    C{none} (or empty), C{bridge:NAME}, C{network:NAME} or a bare C{NAME} (a libvirt
    network).

    @raise NetworkSettingError: a kind other than those, or no name after one.
    """
    text = text.strip()
    if text in ("", NONE):
        return Attachment()
    kind, sep, name = text.partition(":")
    if not sep:
        kind, name = NETWORK, text
    kind, name = kind.strip(), name.strip()
    if kind not in (NETWORK, BRIDGE):
        raise NetworkSettingError(f"{text!r}: not none, network:NAME or bridge:NAME")
    if not name or any(c.isspace() or c in "<>&'\"/" for c in name):
        raise NetworkSettingError(f"{text!r}: no usable {kind} name")
    return Attachment(kind, name)


def uri_driver(uri: str) -> str:
    """
    The driver of the libvirt URI C{uri}: C{qemu} for C{qemu+ssh://...}, C{test} for
    C{test:///...}.
    """
    return uri.partition(":")[0].partition("+")[0].lower()


@frozen
class NetworkSettings:
    """
    The C{[network]} section: C{attach} for every PM, C{by_driver} where a kind of PM
    differs.
    """

    attach: Attachment = NO_NIC
    by_driver: Mapping[str, Attachment] = field(factory=dict)

    def for_uri(self, uri: str) -> Attachment:
        """
        What VMs on the PM at C{uri} attach their NIC to.
        """
        return self.by_driver.get(uri_driver(uri), self.attach)

    @classmethod
    def from_section(cls, section: Mapping[str, str]) -> NetworkSettings:
        """
        Read the ini's C{[network]} section: C{attach}, and any other key a driver name.

        @raise NetworkSettingError: a value that L{parse_attachment} refuses (the message
            names the key).
        """
        attach, by_driver = NO_NIC, {}
        for key, value in section.items():
            try:
                parsed = parse_attachment(value)
            except NetworkSettingError as e:
                raise NetworkSettingError(f"[network] {key}: {e}") from None
            if key == "attach":
                attach = parsed
            else:
                by_driver[key.lower()] = parsed
        return cls(attach, by_driver)


def mac_of(domain_name: str, again: int = 0) -> str:
    """
    The MAC address of the NIC of the domain C{domain_name}: C{02:} (locally administered,
    unicast) and five bytes of the name's SHA-1, as C{lua/claim.lua} computes it; with
    C{again} > 0, of the name followed by C{#again}, what a claim gives a VM whose name's
    MAC another VM has.
    """
    text = domain_name if not again else f"{domain_name}#{again}"
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return "02:" + ":".join(digest[i : i + 2] for i in range(0, 10, 2))


def interface_element(nic: Attachment, mac: str) -> ET.Element | None:
    """
    The domain XML's C{<interface>} of a virtio NIC with MAC address C{mac} attached to
    C{nic}, or None for L{NONE}.
    """
    if nic.kind == NONE:
        return None
    el = ET.Element("interface", type=nic.kind)
    if mac:
        ET.SubElement(el, "mac", address=mac)
    ET.SubElement(el, "source", {nic.kind: nic.source})
    ET.SubElement(el, "model", type="virtio")
    return el


def interface_macs(xml: str) -> list[str]:
    """
    The MAC addresses of the NICs in the domain XML C{xml}, in order.
    """
    root = ET.fromstring(xml)
    return [m.get("address", "").lower() for m in root.findall("devices/interface/mac")]
