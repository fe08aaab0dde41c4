"""
The flavor_file: the instance types, as JSON, a Python literal or the bare fragment
C{"types": [...]}, parsed into L{Flavor} values.

Pure apart from reading the one file named. The text is read by L{vorchd.inventory.literal},
which never evaluates it.
"""

from __future__ import annotations

import ast
import math
import os
from typing import Any

from vorchd.inventory.inputfile import LineError, fail, lines, read_input_file
from vorchd.inventory.literal import (
    DictLiteral,
    LiteralSyntaxError,
    literal_value,
    parse_expression,
    refuse,
    type_name,
)
from vorchd.model import Flavor

__all__ = ["parse_flavor_file", "parse_flavor_text"]

# A flavor's numbers end up in libvirt XML and in Redis; anything past a signed 64-bit
# integer is a typo, not a machine.
_MAX_INT = 2**63 - 1
_REQUIRED = ("cpu", "ram", "disk")
_FRAGMENT_NOTE = " (read as a bare '\"types\": [...]' fragment, without outer braces)"


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
    text_lines = lines(text)
    if not any(_significant(line) for line in text_lines):
        fail(kind, path, None, "no flavors (every line is blank or a comment)")
    try:
        tree = _parse_flavor_source("\n".join(text_lines))
        return _flavors_from(tree)
    except LineError as e:
        fail(kind, path, e.lineno, e.reason)


def _parse_flavor_source(source: str) -> ast.expr:
    """
    The expression the file holds, with the bare fragment given its missing braces.
    """
    try:
        return parse_expression(source)
    except LineError:
        # A file that opens with '{' (after comments) meant to be a whole dict: its own
        # error is the right one, not what the fragment reading would make of it.
        first = next(line.strip() for line in source.split("\n") if _significant(line))
        if first.startswith("{"):
            raise
    try:
        return parse_expression(source, inside_braces=True)
    except LiteralSyntaxError as e:
        raise LineError(e.reason + _FRAGMENT_NOTE, e.lineno) from None


def _significant(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _flavors_from(tree: ast.expr) -> list[Flavor]:
    top = literal_value(tree)
    if not isinstance(top, DictLiteral):
        refuse(tree, f"the file must hold a dict with a 'types' key, not {type_name(top)}")
    keys = top.lookup("the top-level dict")
    if "types" not in keys:
        refuse(tree, "no 'types' key in the top-level dict")
    types_node, types = keys["types"]
    if not isinstance(types_node, (ast.List, ast.Tuple)):
        refuse(types_node, f"'types' must be a list of flavors, not {type_name(types)}")
    if not types:
        refuse(types_node, "no flavors ('types' is an empty list)")

    flavors: list[Flavor] = []
    tid_lines: dict[int, tuple[int, int]] = {}
    for position, (node, item) in enumerate(zip(types_node.elts, types, strict=True), start=1):
        what = f"flavor {position}"
        if not isinstance(item, DictLiteral):
            refuse(node, f"{what} must be a dict, not {type_name(item)}")
        fields = item.lookup(what)
        numbers: dict[str, int] = {}
        for key in _REQUIRED:
            if key not in fields:
                refuse(node, f"{what} has no {key!r} (it needs 'cpu', 'ram' and 'disk')")
            numbers[key] = _positive_int(what, key, *fields[key])
        if "tid" in fields:
            tid_node: ast.AST = fields["tid"][0]
            tid = _positive_int(what, "tid", *fields["tid"])
        else:
            # The seed's samples leave tid out and number flavors by position.
            tid_node, tid = node, position
        if tid in tid_lines:
            first_position, first_line = tid_lines[tid]
            refuse(
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
        refuse(node, f"{prefix}, not {type_name(value)}")
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            refuse(node, f"{prefix}, not the float {value!r} (write {int(value)})")
        refuse(node, f"{prefix}, not the float {value!r}")
    if value <= 0:
        refuse(node, f"{prefix}, not {value}")
    if value > _MAX_INT:
        refuse(node, f"{prefix} below 2**63, not {value}")
    return value


def parse_flavor_file(path: str | os.PathLike[str]) -> list[Flavor]:
    """
    Read and parse a flavor_file: see L{parse_flavor_text}.

    @raise InputFileError: the file cannot be read or decoded, or is malformed.
    """
    shown, text = read_input_file("flavor_file", path)
    return parse_flavor_text(text, path=shown)
