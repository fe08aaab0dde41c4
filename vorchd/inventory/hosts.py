"""
The C{host} and C{user@host} that pm_file and image_file lines name, checked as written:
an IPv4 address, an IPv6 address (bare or in brackets) or a DNS name, and a user name.

Pure: nothing is looked up. Whether a host is this machine is L{vorchd.thismachine}'s
question.
"""

from __future__ import annotations

import ipaddress
import re

from vorchd.inventory.inputfile import LineError

__all__ = ["WHITESPACE_RE", "parse_host", "parse_user_host", "whitespace_reason"]

WHITESPACE_RE = re.compile(r"\s")
"""
Any whitespace: no host, user, path or URI in an input file holds one.
"""

_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


def whitespace_reason(line: str, what: str) -> str:
    """
    Why whitespace inside C{what} (C{"the host"}, C{"the URI"}) is wrong, for a person: most
    often it is a comment put after the entry on its line.
    """
    if re.search(r"\s#", line):
        return f"{what} has a '#' after it; comments must be on a line of their own"
    return f"whitespace inside {what} {line!r}"


def parse_host(host: str) -> tuple[str, str]:
    """
    Check a host as written and return (host for C{is_local} and ImageEntry, host for a URI).

    An IPv6 address may come bare or in brackets; it is handed to C{is_local} bare and put in
    a URI in brackets. Anything else must be an IPv4 address or a DNS name.

    @raise LineError: the host is none of these.
    """
    if not host:
        raise LineError("empty host")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise LineError(f"unbalanced brackets in host {host!r}")
        bare = host[1:-1]
        _check_ipv6(bare, host)
        return bare, host
    if ":" in host:
        if "::" in host or host.count(":") >= 2:
            _check_ipv6(host, host)
            return host, f"[{host}]"
        raise LineError(
            f"':' in host {host!r}: a port or path does not belong here"
            " (write a full libvirt URI such as qemu+ssh://host:port/system)"
        )
    labels = host.split(".")
    if all(label.isdigit() for label in labels):
        # All-numeric names are not DNS names (no top-level domain is numeric): a typo'd
        # IPv4 address must not pass as a host name.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise LineError(f"bad IPv4 address {host!r}") from None
        return host, host
    if len(host) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise LineError(
            f"bad host {host!r}: not an IP address or a DNS name"
            " (letters, digits and '-', in dot-separated labels)"
        )
    return host, host


def _check_ipv6(bare: str, as_written: str) -> None:
    if "%" in bare:
        raise LineError(f"scoped IPv6 address {as_written!r} is not supported")
    try:
        ipaddress.IPv6Address(bare)
    except ValueError:
        raise LineError(f"bad IPv6 address {as_written!r}") from None


def parse_user_host(spec: str) -> tuple[str | None, str, str]:
    """
    Split and check C{host} or C{user@host}: return (user or None, bare host, URI host).

    @raise LineError: a bad user or host, or more than one C{@}.
    """
    if spec.count("@") > 1:
        raise LineError(f"more than one '@' in {spec!r}")
    user: str | None = None
    host = spec
    if "@" in spec:
        user, host = spec.split("@")
        if not user:
            raise LineError(f"empty user before '@' in {spec!r}")
        if not _USER_RE.match(user):
            raise LineError(
                f"bad user {user!r}: a user is letters, digits, '_', '.' and '-',"
                " starting with a letter or '_'"
            )
        if not host:
            raise LineError(f"empty host after '@' in {spec!r}")
    bare, for_uri = parse_host(host)
    return user, bare, for_uri
