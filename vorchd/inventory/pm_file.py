"""
The pm_file: one PM per line, as a full libvirt URI, C{host} or C{user@host}, parsed into
L{PMEntry} values.

Pure apart from reading the one file named, and from the default C{is_local}, which looks up
this machine's names (L{vorchd.thismachine}) the first time a line names a host that is not a
loopback address. Pass C{is_local} to keep DNS out of it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from vorchd.inventory.hosts import WHITESPACE_RE, parse_user_host, whitespace_reason
from vorchd.inventory.inputfile import LineError, entries, fail, read_input_file
from vorchd.model import PMEntry
from vorchd.thismachine import canonical_ip, default_is_local

__all__ = ["DEFAULT_SSH_TEMPLATE", "LOCAL_URI", "parse_pm_file", "parse_pm_text"]

DEFAULT_SSH_TEMPLATE = "qemu+ssh://{userat}{host}/system"
"""
How a C{host} or C{user@host} pm_file line becomes a libvirt URI. C{{userat}} is C{"user@"}
or C{""}; C{{host}} is the host as written (an IPv6 address in brackets).
"""

LOCAL_URI = "qemu:///system"
"""
The URI used for a pm_file line that names this machine itself: no ssh to ourselves.
"""

_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*\Z")


def parse_pm_text(
    text: str,
    *,
    path: str = "<pm_file>",
    is_local: Callable[[str], bool] | None = None,
    ssh_template: str = DEFAULT_SSH_TEMPLATE,
) -> list[PMEntry]:
    """
    Parse a pm_file's contents into one L{PMEntry} per PM, in file order.

    A line is a full libvirt URI (used as is), or C{host} / C{user@host}: a host for which
    C{is_local} says yes becomes L{LOCAL_URI}, any other becomes C{ssh_template} filled in.
    Blank lines and lines starting with C{#} are skipped.

    @param path: the file's name, for messages only.
    @param is_local: whether a host (as written; an IPv6 address without brackets) is this
        machine. By default L{vorchd.thismachine.default_is_local}: all of 127.0.0.0/8, plus
        membership in L{vorchd.thismachine.local_names}.
    @param ssh_template: a C{str.format} template with C{{userat}} and C{{host}}.
    @raise InputFileError: a malformed line, the same PM twice, or no PM at all.
    """
    kind = "pm_file"
    try:
        ssh_template.format(userat="user@", host="host")
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"bad ssh_template {ssh_template!r}: {e!r}") from None
    if is_local is None:
        is_local = default_is_local()

    result: list[PMEntry] = []
    # Two keys catch the same PM twice: the identical line, and the same machine reached
    # again. The machine is the resulting URI, or for a host line the host itself: root@h
    # and h reach the same libvirtd, and counting it twice would overcommit it.
    seen_lines: dict[str, int] = {}
    seen_uris: dict[str, int] = {}
    seen_hosts: dict[str, int] = {}
    for lineno, line in entries(text):
        try:
            uri, host_key = _pm_uri(line, is_local, ssh_template)
        except LineError as e:
            fail(kind, path, lineno, e.reason)
        earlier = seen_lines.get(line)
        # libvirt's test driver gives every connection a private simulated host, so only an
        # identical line repeats a test:/// PM; any other URI names one real machine.
        if earlier is None and not _is_test_uri(uri):
            earlier = seen_uris.get(uri)
        if earlier is None and host_key is not None:
            earlier = seen_hosts.get(host_key)
        if earlier is not None:
            fail(kind, path, lineno, f"same PM as line {earlier} ({uri})")
        seen_lines[line] = lineno
        seen_uris.setdefault(uri, lineno)
        if host_key is not None:
            seen_hosts[host_key] = lineno
        result.append(PMEntry(line=line, uri=uri, lineno=lineno))
    if not result:
        fail(kind, path, None, "no PMs (every line is blank or a comment)")
    return result


def _is_test_uri(uri: str) -> bool:
    return uri.split(":", 1)[0] == "test"


def _pm_uri(
    line: str, is_local: Callable[[str], bool], ssh_template: str
) -> tuple[str, str | None]:
    """
    The libvirt URI for one pm_file line, and for a host line the key naming its machine.
    """
    if "://" in line:
        scheme, rest = line.split("://", 1)
        if not _SCHEME_RE.match(scheme):
            raise LineError(
                f"bad URI scheme {scheme!r}: lowercase letters, digits, '+', '.' and '-',"
                " starting with a letter"
            )
        if WHITESPACE_RE.search(line):
            raise LineError(whitespace_reason(line, "the URI"))
        if not rest:
            raise LineError(f"nothing after '://' in URI {line!r}")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in line):
            raise LineError(f"control character in URI {line!r}")
        return line, None
    if WHITESPACE_RE.search(line):
        raise LineError(whitespace_reason(line, "the host"))
    if "/" in line:
        raise LineError(
            f"{line!r} is neither host, user@host nor a full libvirt URI (scheme://...)"
        )
    user, host, for_uri = parse_user_host(line)
    if is_local(host):
        return LOCAL_URI, "local"
    uri = ssh_template.format(userat=f"{user}@" if user else "", host=for_uri)
    return uri, (canonical_ip(host) or host.lower())


def parse_pm_file(
    path: str | os.PathLike[str],
    *,
    is_local: Callable[[str], bool] | None = None,
    ssh_template: str = DEFAULT_SSH_TEMPLATE,
) -> list[PMEntry]:
    """
    Read and parse a pm_file: see L{parse_pm_text}.

    @raise InputFileError: the file cannot be read or decoded, or is malformed.
    """
    shown, text = read_input_file("pm_file", path)
    return parse_pm_text(text, path=shown, is_local=is_local, ssh_template=ssh_template)
