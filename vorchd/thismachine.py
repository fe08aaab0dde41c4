"""
Whether a host named in an input file is this machine itself.

A pm_file line naming this machine is reached as C{qemu:///system} (no ssh to ourselves),
and an image_file line naming it is read as a local file. Knowing this machine's names takes
DNS lookups (C{gethostname}, C{getfqdn}, C{getaddrinfo}), so they are made only when asked
for, never at import: L{this_machine} makes them at once, L{default_is_local} on the first
host that is not a loopback address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

__all__ = ["canonical_ip", "default_is_local", "is_loopback", "local_names", "this_machine"]


def local_names() -> frozenset[str]:
    """
    This machine's own names and addresses, lowercased.

    C{localhost}, C{127.0.0.1}, C{::1}, C{socket.gethostname()}, C{socket.getfqdn()} and the
    addresses those two resolve to. A name that does not resolve is simply left out: a
    machine without DNS still knows it is C{localhost}. (All of 127.0.0.0/8 is local too,
    which a set cannot hold; L{this_machine} checks it.)
    """
    names = {"localhost", "127.0.0.1", "::1"}
    own: list[str] = []
    for ask in (socket.gethostname, socket.getfqdn):
        try:
            name = ask()
        except OSError:
            continue
        if name:
            own.append(name)
    names.update(n.lower() for n in own)
    for name in own:
        try:
            infos = socket.getaddrinfo(name, None)
        except (OSError, UnicodeError):
            continue
        for info in infos:
            address = str(info[4][0])
            names.add(address.lower())
            canonical = canonical_ip(address)
            if canonical is not None:
                names.add(canonical)
    return frozenset(names)


def canonical_ip(text: str) -> str | None:
    """
    The compressed form of an IP address (so C{0:0::1} and C{::1} compare equal), or C{None}
    if C{text} is not an IP address.
    """
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """
    Whether C{host} is a loopback address: all of 127.0.0.0/8, C{::1}, and 127/8 mapped
    into IPv6. A name (even C{localhost}) is not an address: see L{local_names}.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def this_machine() -> Callable[[str], bool]:
    """
    Whether a host (as written in an input file) is this machine, with this machine's names
    looked up now, once: the predicate itself never blocks.
    """
    names = local_names()
    return lambda host: is_loopback(host) or host.lower() in names or canonical_ip(host) in names


def default_is_local() -> Callable[[str], bool]:
    """
    The C{is_local} a pm_file is read with when the caller gives none: L{this_machine}, made
    on first use only (a loopback address needs no names), so a pm_file of full URIs or
    loopback addresses never waits on DNS.
    """
    known: Callable[[str], bool] | None = None

    def is_local(host: str) -> bool:
        nonlocal known
        if is_loopback(host):
            return True
        if known is None:
            known = this_machine()
        return known(host)

    return is_local
