"""
The three input files an operator gives vorchd (pm_file, image_file, flavor_file), parsed
into L{PMEntry}, L{ImageEntry} and L{Flavor} values.

Pure apart from reading the one file named: no Twisted, no libvirt, no network (except the
name lookups L{local_names} does to learn this machine's own addresses). Every problem is an
L{InputFileError} naming the file, the line and what is wrong, because a malformed file must
stop start-up with a message an operator can act on.
"""

from __future__ import annotations

import ast
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable
from typing import Any, NoReturn

from vorchd.model import Flavor, ImageEntry, PMEntry

__all__ = [
    "DEFAULT_SSH_TEMPLATE",
    "LOCAL_URI",
    "InputFileError",
    "local_names",
    "parse_flavor_file",
    "parse_flavor_text",
    "parse_image_file",
    "parse_image_text",
    "parse_pm_file",
    "parse_pm_text",
]

DEFAULT_SSH_TEMPLATE = "qemu+ssh://{userat}{host}/system"
"""
How a C{host} or C{user@host} pm_file line becomes a libvirt URI. C{{userat}} is C{"user@"}
or C{""}; C{{host}} is the host as written (an IPv6 address in brackets).
"""

LOCAL_URI = "qemu:///system"
"""
The URI used for a pm_file line that names this machine itself: no ssh to ourselves.
"""

# A flavor's numbers end up in libvirt XML and in Redis; anything past a signed 64-bit
# integer is a typo, not a machine.
_MAX_INT = 2**63 - 1

_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*\Z")
_WHITESPACE_RE = re.compile(r"\s")


class InputFileError(ValueError):
    """
    A malformed input file.

    C{str()} reads like C{"pm_file /path/to/file, line 3: <what is wrong>"}; without a line
    (the file cannot be read, or holds nothing) it is C{"pm_file /path/to/file: <reason>"}.

    @ivar kind: C{"pm_file"}, C{"image_file"} or C{"flavor_file"}.
    @ivar path: the file as the operator named it.
    @ivar lineno: the 1-based line at fault, or C{None} when no one line is.
    @ivar reason: what is wrong, for a person.
    """

    def __init__(self, kind: str, path: str, lineno: int | None, reason: str) -> None:
        # All four go to ValueError so the exception pickles and compares by its args.
        super().__init__(kind, path, lineno, reason)
        self.kind = kind
        self.path = path
        self.lineno = lineno
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.kind} {self.path}"
        if self.lineno is not None:
            where += f", line {self.lineno}"
        return f"{where}: {self.reason}"


class _LineError(Exception):
    """
    A problem found below the line loop, before the file's kind and path are at hand.
    """

    def __init__(self, reason: str, lineno: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.lineno = lineno


# -- this machine ---------------------------------------------------------------------------


def local_names() -> frozenset[str]:
    """
    This machine's own names and addresses, lowercased.

    C{localhost}, C{127.0.0.1}, C{::1}, C{socket.gethostname()}, C{socket.getfqdn()} and the
    addresses those two resolve to. A name that does not resolve is simply left out: a
    machine without DNS still knows it is C{localhost}. (All of 127.0.0.0/8 is local too,
    which a set cannot hold; the default C{is_local} of L{parse_pm_text} checks it.)
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
            canonical = _canonical_ip(address)
            if canonical is not None:
                names.add(canonical)
    return frozenset(names)


def _canonical_ip(text: str) -> str | None:
    """
    The compressed form of an IP address (so C{0:0::1} and C{::1} compare equal), or C{None}.
    """
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
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
    return lambda host: _is_loopback(host) or host.lower() in names or _canonical_ip(host) in names


def _default_is_local() -> Callable[[str], bool]:
    """
    The default C{is_local}: L{this_machine}, made on first use only (a loopback address
    needs no names), so a pm_file of full URIs never waits on DNS.
    """
    known: Callable[[str], bool] | None = None

    def is_local(host: str) -> bool:
        nonlocal known
        if _is_loopback(host):
            return True
        if known is None:
            known = this_machine()
        return known(host)

    return is_local


# -- shared line handling -------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    """
    The file's lines, with CRLF and a leading BOM taken care of.

    Only C{\\n} and C{\\r\\n} end a line (not C{str.splitlines}'s form feeds and the like), so
    line numbers agree with what an editor or C{sed -n Np} shows.
    """
    text = text.removeprefix("\ufeff")
    return text.replace("\r\n", "\n").split("\n")


def _entries(text: str) -> list[tuple[int, str]]:
    """
    The (1-based line number, stripped line) pairs that are neither blank nor comments.
    """
    found = []
    for lineno, raw in enumerate(_lines(text), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            found.append((lineno, line))
    return found


def _inside_whitespace_reason(line: str, what: str) -> str:
    if re.search(r"\s#", line):
        return f"{what} has a '#' after it; comments must be on a line of their own"
    return f"whitespace inside {what} {line!r}"


def _parse_host(host: str) -> tuple[str, str]:
    """
    Check a host as written and return (host for C{is_local} and ImageEntry, host for a URI).

    An IPv6 address may come bare or in brackets; it is handed to C{is_local} bare and put in
    a URI in brackets. Anything else must be an IPv4 address or a DNS name.
    """
    if not host:
        raise _LineError("empty host")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise _LineError(f"unbalanced brackets in host {host!r}")
        bare = host[1:-1]
        _check_ipv6(bare, host)
        return bare, host
    if ":" in host:
        if "::" in host or host.count(":") >= 2:
            _check_ipv6(host, host)
            return host, f"[{host}]"
        raise _LineError(
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
            raise _LineError(f"bad IPv4 address {host!r}") from None
        return host, host
    if len(host) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise _LineError(
            f"bad host {host!r}: not an IP address or a DNS name"
            " (letters, digits and '-', in dot-separated labels)"
        )
    return host, host


def _check_ipv6(bare: str, as_written: str) -> None:
    if "%" in bare:
        raise _LineError(f"scoped IPv6 address {as_written!r} is not supported")
    try:
        ipaddress.IPv6Address(bare)
    except ValueError:
        raise _LineError(f"bad IPv6 address {as_written!r}") from None


def _parse_user_host(spec: str) -> tuple[str | None, str, str]:
    """
    Split and check C{host} or C{user@host}: return (user or None, bare host, URI host).
    """
    if spec.count("@") > 1:
        raise _LineError(f"more than one '@' in {spec!r}")
    user: str | None = None
    host = spec
    if "@" in spec:
        user, host = spec.split("@")
        if not user:
            raise _LineError(f"empty user before '@' in {spec!r}")
        if not _USER_RE.match(user):
            raise _LineError(
                f"bad user {user!r}: a user is letters, digits, '_', '.' and '-',"
                " starting with a letter or '_'"
            )
        if not host:
            raise _LineError(f"empty host after '@' in {spec!r}")
    bare, for_uri = _parse_host(host)
    return user, bare, for_uri


def _fail(kind: str, path: str, lineno: int | None, reason: str) -> NoReturn:
    raise InputFileError(kind, path, lineno, reason)


def _read(kind: str, path: str | os.PathLike[str]) -> tuple[str, str]:
    """
    Read and decode one input file; return (path as text, contents).

    UTF-8 with or without a BOM; undecodable bytes name their line.
    """
    shown = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        _fail(kind, shown, None, f"cannot read: {e.strerror or e}")
    try:
        return shown, data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        _fail(kind, shown, lineno, f"not UTF-8 text (byte {data[e.start]:#04x})")


# -- pm_file --------------------------------------------------------------------------------


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
        machine. By default: membership in L{local_names}, plus all of 127.0.0.0/8.
    @param ssh_template: a C{str.format} template with C{{userat}} and C{{host}}.
    @raise InputFileError: a malformed line, the same PM twice, or no PM at all.
    """
    kind = "pm_file"
    try:
        ssh_template.format(userat="user@", host="host")
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"bad ssh_template {ssh_template!r}: {e!r}") from None
    if is_local is None:
        is_local = _default_is_local()

    result: list[PMEntry] = []
    # Two keys catch the same PM twice: the identical line, and the same machine reached
    # again. The machine is the resulting URI, or for a host line the host itself: root@h
    # and h reach the same libvirtd, and counting it twice would overcommit it.
    seen_lines: dict[str, int] = {}
    seen_uris: dict[str, int] = {}
    seen_hosts: dict[str, int] = {}
    for lineno, line in _entries(text):
        try:
            uri, host_key = _pm_uri(line, is_local, ssh_template)
        except _LineError as e:
            _fail(kind, path, lineno, e.reason)
        earlier = seen_lines.get(line)
        # libvirt's test driver gives every connection a private simulated host, so only an
        # identical line repeats a test:/// PM; any other URI names one real machine.
        if earlier is None and not _is_test_uri(uri):
            earlier = seen_uris.get(uri)
        if earlier is None and host_key is not None:
            earlier = seen_hosts.get(host_key)
        if earlier is not None:
            _fail(kind, path, lineno, f"same PM as line {earlier} ({uri})")
        seen_lines[line] = lineno
        seen_uris.setdefault(uri, lineno)
        if host_key is not None:
            seen_hosts[host_key] = lineno
        result.append(PMEntry(line=line, uri=uri, lineno=lineno))
    if not result:
        _fail(kind, path, None, "no PMs (every line is blank or a comment)")
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
            raise _LineError(
                f"bad URI scheme {scheme!r}: lowercase letters, digits, '+', '.' and '-',"
                " starting with a letter"
            )
        if _WHITESPACE_RE.search(line):
            raise _LineError(_inside_whitespace_reason(line, "the URI"))
        if not rest:
            raise _LineError(f"nothing after '://' in URI {line!r}")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in line):
            raise _LineError(f"control character in URI {line!r}")
        return line, None
    if _WHITESPACE_RE.search(line):
        raise _LineError(_inside_whitespace_reason(line, "the host"))
    if "/" in line:
        raise _LineError(
            f"{line!r} is neither host, user@host nor a full libvirt URI (scheme://...)"
        )
    user, host, for_uri = _parse_user_host(line)
    if is_local(host):
        return LOCAL_URI, "local"
    uri = ssh_template.format(userat=f"{user}@" if user else "", host=for_uri)
    return uri, (_canonical_ip(host) or host.lower())


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
    shown, text = _read("pm_file", path)
    return parse_pm_text(text, path=shown, is_local=is_local, ssh_template=ssh_template)


# -- image_file -----------------------------------------------------------------------------


def parse_image_text(text: str, *, path: str = "<image_file>") -> list[ImageEntry]:
    """
    Parse an image_file's contents into one L{ImageEntry} per image, in file order.

    A line is a local absolute path or C{[user@]host:/abs/path} (scp's syntax; an IPv6 host
    in brackets). The image's name is the file's base name without its last extension.
    A remote line naming this machine is kept as written: the caller decides whether to
    copy or to read it in place. Whether the file exists is not checked here.

    @param path: the file's name, for messages only.
    @raise InputFileError: a malformed line, the same line twice, or no image at all.
    """
    kind = "image_file"
    result: list[ImageEntry] = []
    seen: dict[str, int] = {}
    for lineno, line in _entries(text):
        try:
            entry = _image_entry(line, lineno)
        except _LineError as e:
            _fail(kind, path, lineno, e.reason)
        if line in seen:
            _fail(kind, path, lineno, f"same image as line {seen[line]}")
        seen[line] = lineno
        result.append(entry)
    if not result:
        _fail(kind, path, None, "no images (every line is blank or a comment)")
    return result


def _image_entry(line: str, lineno: int) -> ImageEntry:
    if "\x00" in line:
        raise _LineError("NUL character in the line")
    user: str | None = None
    host: str | None = None
    if line.startswith("/"):
        file_path = line
    elif "://" in line:
        raise _LineError(
            f"{line!r} is a URL; an image is an absolute path or [user@]host:/absolute/path"
        )
    else:
        colon = _first_colon_outside_brackets(line)
        if colon is None:
            raise _LineError(
                f"relative path {line!r}: an image is an absolute path"
                " or [user@]host:/absolute/path"
            )
        spec, file_path = line[:colon], line[colon + 1 :]
        if _WHITESPACE_RE.search(spec):
            raise _LineError(_inside_whitespace_reason(spec, "the host"))
        user, host, _ = _parse_user_host(spec)
        if not file_path:
            raise _LineError(f"empty path after ':' in {line!r}")
        if not file_path.startswith("/"):
            hint = ""
            if file_path.startswith(":") or ":" in spec:
                hint = " (put an IPv6 host in brackets: user@[address]:/path)"
            raise _LineError(f"remote path {file_path!r} is not absolute{hint}")
    base = file_path.rsplit("/", 1)[1]
    if base in ("", ".", ".."):
        raise _LineError(f"{file_path!r} names a directory, not an image file")
    stem, _, _ = base.rpartition(".")
    # A dotfile (".hidden") or a name without a dot keeps its whole base name: stripping
    # would leave it nameless.
    name = stem or base
    return ImageEntry(line=line, name=name, path=file_path, host=host, user=user, lineno=lineno)


def _first_colon_outside_brackets(line: str) -> int | None:
    depth = 0
    for i, c in enumerate(line):
        if c == "[":
            depth += 1
        elif c == "]":
            depth = max(0, depth - 1)
        elif c == ":" and depth == 0:
            return i
    return None


def parse_image_file(path: str | os.PathLike[str]) -> list[ImageEntry]:
    """
    Read and parse an image_file: see L{parse_image_text}.

    @raise InputFileError: the file cannot be read or decoded, or is malformed.
    """
    shown, text = _read("image_file", path)
    return parse_image_text(text, path=shown)


# -- flavor_file ----------------------------------------------------------------------------

_JSON_NAMES = {"true": True, "false": False, "null": None}
_REQUIRED = ("cpu", "ram", "disk")


def parse_flavor_text(text: str, *, path: str = "<flavor_file>") -> list[Flavor]:
    """
    Parse a flavor_file's contents into L{Flavor}s, in file order.

    Accepts JSON (C{{"types": [...]}}), a Python literal (single quotes, trailing commas,
    comments) and the bare fragment C{"types": [...]} without outer braces. Nothing is ever
    evaluated: the text is parsed with L{ast} and only literals are accepted.

    Each flavor needs C{cpu}, C{ram} (MiB) and C{disk} (GiB) as positive integers; C{tid}
    is optional and defaults to the flavor's 1-based position. Other keys are ignored.

    @param path: the file's name, for messages only.
    @raise InputFileError: a syntax error, a value that is not a literal, a missing or bad
        number, a duplicate tid, or no flavor at all.
    """
    kind = "flavor_file"
    lines = _lines(text)
    source = "\n".join(lines)
    if not any(_significant(line) for line in lines):
        _fail(kind, path, None, "no flavors (every line is blank or a comment)")
    if "\x00" in source:
        # ast.parse refuses NUL with a ValueError or a SyntaxError depending on the Python
        # version, neither naming the line.
        _fail(kind, path, source.count("\n", 0, source.index("\x00")) + 1, "NUL character")
    try:
        # Errors Python places past the text (at its end) are put on the last line with text.
        last = max(i for i, line in enumerate(lines, start=1) if line.strip())
        tree = _parse_flavor_source(source, last)
        return _flavors_from(tree)
    except _LineError as e:
        _fail(kind, path, e.lineno, e.reason)


def _parse_flavor_source(source: str, last: int) -> ast.expr:
    """
    The expression the file holds, with the bare fragment given its missing braces.
    """
    try:
        return _ast_expr(source, last, wrapped=False)
    except _LineError:
        # A file that opens with '{' (after comments) meant to be a whole dict: its own
        # error is the right one, not what the fragment reading would make of it.
        first = next(line.strip() for line in source.split("\n") if _significant(line))
        if first.startswith("{"):
            raise
    # The '{' goes before the first character and the '}' on a line of its own after the
    # last, so every line keeps its number (and a comment on the last line cannot swallow
    # the brace).
    return _ast_expr("{" + source + "\n}", last, wrapped=True)


def _significant(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


_MISMATCH_RE = re.compile(r"opening parenthesis '(.)' on line (\d+)")


def _ast_expr(source: str, last: int, *, wrapped: bool) -> ast.expr:
    try:
        return ast.parse(source, mode="eval").body
    except SyntaxError as e:
        reason = f"syntax error: {e.msg}"
        lineno = e.lineno
        if wrapped and lineno is not None and lineno > source.count("\n"):
            # The error is at the '}' we added: the operator's text left a bracket open
            # (or closed one too many). Say so in their terms, not in terms of our brace.
            mismatch = _MISMATCH_RE.search(e.msg)
            if mismatch:
                reason = f"syntax error: '{mismatch[1]}' was never closed"
                lineno = int(mismatch[2])
            else:
                reason = "syntax error: brackets do not balance"
        if wrapped:
            reason += " (read as a bare '\"types\": [...]' fragment, without outer braces)"
        if lineno is not None:
            lineno = max(1, min(lineno, last))
        raise _LineError(reason, lineno) from None
    except (RecursionError, MemoryError):
        raise _LineError("nested too deeply to parse", None) from None


def _bad(node: ast.AST, reason: str) -> NoReturn:
    raise _LineError(reason, getattr(node, "lineno", None))


def _describe(node: ast.AST) -> str:
    """
    What a non-literal node is, for a person (without echoing arbitrary code back).
    """
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Attribute):
        return "an attribute lookup"
    if isinstance(node, (ast.BinOp, ast.BoolOp, ast.Compare)):
        return "an expression"
    if isinstance(node, (ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp)):
        return "a comprehension"
    if isinstance(node, ast.Lambda):
        return "a lambda"
    if isinstance(node, ast.Subscript):
        return "a subscript"
    if isinstance(node, ast.JoinedStr):
        return "an f-string"
    return f"a {type(node).__name__} expression"


def _literal(node: ast.AST) -> Any:
    """
    The value of a literal node, walking containers ourselves so every error names a line.

    Dicts come back as a list of (key node, key, value node, value) so callers can point at
    the line of a key; JSON's C{true}/C{false}/C{null} are accepted as names.
    """
    if isinstance(node, ast.Dict):
        items = []
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            if key_node is None:
                _bad(value_node, "'**' unpacking is not a literal")
            items.append((key_node, _literal(key_node), value_node, _literal(value_node)))
        return _DictLiteral(node, items)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(element) for element in node.elts]
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    if isinstance(node, (ast.Constant, ast.UnaryOp)):
        try:
            value = ast.literal_eval(node)
        except ValueError:
            _bad(node, f"not a literal: {_describe(node)}")
        if isinstance(value, (str, bytes, int, float, bool, type(None))):
            return value
        _bad(node, f"unsupported literal of type {type(value).__name__}")
    if isinstance(node, ast.Starred):
        _bad(node, "'*' unpacking is not a literal")
    _bad(node, f"not a literal: {_describe(node)}")


class _DictLiteral:
    """
    A dict literal with the nodes kept, so a message can name the line of each key.
    """

    def __init__(self, node: ast.Dict, items: list[tuple[ast.expr, Any, ast.expr, Any]]):
        self.node = node
        self.items = items

    def lookup(self, what: str) -> dict[str, tuple[ast.expr, Any]]:
        """
        The string keys to (value node, value); a key given twice is an error, since JSON
        and Python would silently keep only the last one.
        """
        found: dict[str, tuple[ast.expr, Any]] = {}
        lines: dict[str, int] = {}
        for key_node, key, value_node, value in self.items:
            if not isinstance(key, str):
                _bad(key_node, f"{what} has a key that is not a string: {_type_name(key)}")
            if key in found:
                _bad(key_node, f"{what} gives {key!r} twice (first on line {lines[key]})")
            found[key] = (value_node, value)
            lines[key] = key_node.lineno
        return found


def _type_name(value: Any) -> str:
    if isinstance(value, _DictLiteral):
        return "a dict"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, float):
        return f"the float {value!r}"
    return f"a {type(value).__name__}"


def _flavors_from(tree: ast.expr) -> list[Flavor]:
    top = _literal(tree)
    if not isinstance(top, _DictLiteral):
        _bad(tree, f"the file must hold a dict with a 'types' key, not {_type_name(top)}")
    keys = top.lookup("the top-level dict")
    if "types" not in keys:
        _bad(tree, "no 'types' key in the top-level dict")
    types_node, types = keys["types"]
    if not isinstance(types_node, (ast.List, ast.Tuple)):
        _bad(types_node, f"'types' must be a list of flavors, not {_type_name(types)}")
    if not types:
        _bad(types_node, "no flavors ('types' is an empty list)")

    flavors: list[Flavor] = []
    tid_lines: dict[int, tuple[int, int]] = {}
    for position, (node, item) in enumerate(zip(types_node.elts, types, strict=True), start=1):
        what = f"flavor {position}"
        if not isinstance(item, _DictLiteral):
            _bad(node, f"{what} must be a dict, not {_type_name(item)}")
        fields = item.lookup(what)
        numbers: dict[str, int] = {}
        for key in _REQUIRED:
            if key not in fields:
                _bad(node, f"{what} has no {key!r} (it needs 'cpu', 'ram' and 'disk')")
            numbers[key] = _positive_int(what, key, *fields[key])
        if "tid" in fields:
            tid_node: ast.AST = fields["tid"][0]
            tid = _positive_int(what, "tid", *fields["tid"])
        else:
            # The seed's samples leave tid out and number flavors by position.
            tid_node, tid = node, position
        if tid in tid_lines:
            first_position, first_line = tid_lines[tid]
            _bad(
                tid_node,
                f"{what} has tid {tid}, already used by flavor {first_position}"
                f" (line {first_line})",
            )
        tid_lines[tid] = (position, getattr(tid_node, "lineno", 0))
        flavors.append(Flavor(tid=tid, **numbers))
    return flavors


def _positive_int(what: str, key: str, node: ast.AST, value: Any) -> int:
    prefix = f"{what}: {key!r} must be a positive integer"
    # bool is an int to Python, but 'true' vCPUs is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _bad(node, f"{prefix}, not {_type_name(value)}")
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            _bad(node, f"{prefix}, not the float {value!r} (write {int(value)})")
        _bad(node, f"{prefix}, not the float {value!r}")
    if value <= 0:
        _bad(node, f"{prefix}, not {value}")
    if value > _MAX_INT:
        _bad(node, f"{prefix} below 2**63, not {value}")
    return value


def parse_flavor_file(path: str | os.PathLike[str]) -> list[Flavor]:
    """
    Read and parse a flavor_file: see L{parse_flavor_text}.

    @raise InputFileError: the file cannot be read or decoded, or is malformed.
    """
    shown, text = _read("flavor_file", path)
    return parse_flavor_text(text, path=shown)
