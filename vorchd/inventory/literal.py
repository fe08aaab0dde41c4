"""
A Python or JSON literal read from text without ever evaluating it, so that every error
names its line.

The text is parsed with L{ast} and the tree walked here: only constants, lists, tuples and
dicts are accepted (and JSON's C{true}, C{false} and C{null}). A function call, a name or
any other code is refused with what it is and where, never run. The flavor_file is read
with it.
"""

from __future__ import annotations

import ast
import re
from typing import Any, NoReturn

from vorchd.inventory.inputfile import LineError

__all__ = [
    "DictLiteral",
    "LiteralSyntaxError",
    "literal_value",
    "parse_expression",
    "refuse",
    "type_name",
]

_JSON_NAMES = {"true": True, "false": False, "null": None}
_MISMATCH_RE = re.compile(r"opening parenthesis '(.)' on line (\d+)")


class LiteralSyntaxError(LineError):
    """
    The text is not one Python expression: the reason is Python's, on the text's own line.
    """


def parse_expression(source: str, *, inside_braces: bool = False) -> ast.expr:
    """
    The one expression C{source} holds, as a tree (never evaluated).

    An error Python places past the text (at its end) is put on the last line with text.

    @param inside_braces: read C{source} as the inside of a dict, as if it were wrapped in
        C{{...}}; every line keeps its number. A bracket the text leaves open (or closes
        once too often) is told as such, not as an error at the added closing brace.
    @raise LiteralSyntaxError: a syntax error.
    @raise LineError: a NUL character, or nesting too deep for Python's parser.
    """
    if "\x00" in source:
        # ast.parse refuses NUL with a ValueError or a SyntaxError depending on the Python
        # version, neither naming the line.
        raise LineError("NUL character", source.count("\n", 0, source.index("\x00")) + 1)
    last = max(
        (i for i, line in enumerate(source.split("\n"), start=1) if line.strip()), default=1
    )
    if inside_braces:
        # The '{' goes before the first character and the '}' on a line of its own after
        # the last, so every line keeps its number (and a comment on the last line cannot
        # swallow the brace).
        source = "{" + source + "\n}"
    try:
        return ast.parse(source, mode="eval").body
    except SyntaxError as e:
        reason = f"syntax error: {e.msg}"
        lineno = e.lineno
        if inside_braces and lineno is not None and lineno > source.count("\n"):
            # The error is at the '}' we added: the operator's text left a bracket open
            # (or closed one too many). Say so in their terms, not in terms of our brace.
            mismatch = _MISMATCH_RE.search(e.msg)
            if mismatch:
                reason = f"syntax error: '{mismatch[1]}' was never closed"
                lineno = int(mismatch[2])
            else:
                reason = "syntax error: brackets do not balance"
        if lineno is not None:
            lineno = max(1, min(lineno, last))
        raise LiteralSyntaxError(reason, lineno) from None
    except (RecursionError, MemoryError):
        raise LineError("nested too deeply to parse", None) from None


def refuse(node: ast.AST, reason: str) -> NoReturn:
    """
    Raise the L{LineError} for C{reason}, at C{node}'s line.
    """
    raise LineError(reason, getattr(node, "lineno", None))


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


def literal_value(node: ast.AST) -> Any:
    """
    The value of a literal node, walking containers here so every error names a line.

    Dicts come back as L{DictLiteral}s, so callers can point at the line of a key; lists
    and tuples as lists; JSON's C{true}/C{false}/C{null} are accepted as names.

    @raise LineError: anything that is not a literal, at its line.
    """
    if isinstance(node, ast.Dict):
        items = []
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            if key_node is None:
                refuse(value_node, "'**' unpacking is not a literal")
            items.append(
                (key_node, literal_value(key_node), value_node, literal_value(value_node))
            )
        return DictLiteral(node, items)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [literal_value(element) for element in node.elts]
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    if isinstance(node, (ast.Constant, ast.UnaryOp)):
        try:
            value = ast.literal_eval(node)
        except ValueError:
            refuse(node, f"not a literal: {_describe(node)}")
        if isinstance(value, (str, bytes, int, float, bool, type(None))):
            return value
        refuse(node, f"unsupported literal of type {type(value).__name__}")
    if isinstance(node, ast.Starred):
        refuse(node, "'*' unpacking is not a literal")
    refuse(node, f"not a literal: {_describe(node)}")


class DictLiteral:
    """
    A dict literal with the nodes kept, so a message can name the line of each key.

    @ivar node: the dict's node.
    @ivar items: (key node, key, value node, value) in the order written, repeats included.
    """

    def __init__(self, node: ast.Dict, items: list[tuple[ast.expr, Any, ast.expr, Any]]):
        self.node = node
        self.items = items

    def lookup(self, what: str) -> dict[str, tuple[ast.expr, Any]]:
        """
        The string keys to (value node, value); a key given twice is an error, since JSON
        and Python would silently keep only the last one.

        @param what: the dict, for messages (C{"flavor 2"}).
        @raise LineError: a key that is not a string, or one given twice.
        """
        found: dict[str, tuple[ast.expr, Any]] = {}
        lines: dict[str, int] = {}
        for key_node, key, value_node, value in self.items:
            if not isinstance(key, str):
                refuse(key_node, f"{what} has a key that is not a string: {type_name(key)}")
            if key in found:
                refuse(key_node, f"{what} gives {key!r} twice (first on line {lines[key]})")
            found[key] = (value_node, value)
            lines[key] = key_node.lineno
        return found


def type_name(value: Any) -> str:
    """
    What a value from L{literal_value} is, for a message (C{"a list"}, C{"the string 'x'"}).
    """
    if isinstance(value, DictLiteral):
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
