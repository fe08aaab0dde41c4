"""
What the three input file formats share: reading a file, splitting it into lines that
number as an editor numbers them, and L{InputFileError}, which names the file, the line and
what is wrong.
"""

from __future__ import annotations

import os
from typing import NoReturn

__all__ = ["InputFileError", "LineError", "entries", "fail", "lines", "read_input_file"]


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


class LineError(Exception):
    """
    A problem found below a parser's line loop, before the file's kind and path are at hand:
    the parser turns it into an L{InputFileError}.

    @ivar reason: what is wrong, for a person.
    @ivar lineno: the 1-based line at fault if the finder knows it, else C{None}.
    """

    def __init__(self, reason: str, lineno: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.lineno = lineno


def fail(kind: str, path: str, lineno: int | None, reason: str) -> NoReturn:
    """
    Raise the L{InputFileError} for C{kind} file C{path}.
    """
    raise InputFileError(kind, path, lineno, reason)


def lines(text: str) -> list[str]:
    """
    The file's lines, with CRLF and a leading BOM taken care of.

    Only C{\\n} and C{\\r\\n} end a line (not C{str.splitlines}'s form feeds and the like), so
    line numbers agree with what an editor or C{sed -n Np} shows.
    """
    text = text.removeprefix("\ufeff")
    return text.replace("\r\n", "\n").split("\n")


def entries(text: str) -> list[tuple[int, str]]:
    """
    The (1-based line number, stripped line) pairs that are neither blank nor comments.
    """
    found = []
    for lineno, raw in enumerate(lines(text), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            found.append((lineno, line))
    return found


def read_input_file(kind: str, path: str | os.PathLike[str]) -> tuple[str, str]:
    """
    Read and decode one input file; return (path as text, contents).

    UTF-8 with or without a BOM; undecodable bytes name their line.

    @param kind: C{"pm_file"}, C{"image_file"} or C{"flavor_file"}, for messages.
    @raise InputFileError: the file cannot be read or is not UTF-8.
    """
    shown = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fail(kind, shown, None, f"cannot read: {e.strerror or e}")
    try:
        return shown, data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        fail(kind, shown, lineno, f"not UTF-8 text (byte {data[e.start]:#04x})")
