"""
The image_file: one image per line, as a local absolute path or C{[user@]host:/abs/path},
parsed into L{ImageEntry} values.

Pure apart from reading the one file named: whether an image exists, or a host is this
machine, is decided later, by whoever uses the entry.
"""

from __future__ import annotations

import os

from vorchd.inventory.hosts import WHITESPACE_RE, parse_user_host, whitespace_reason
from vorchd.inventory.inputfile import LineError, entries, fail, read_input_file
from vorchd.model import ImageEntry

__all__ = ["parse_image_file", "parse_image_text"]


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
    for lineno, line in entries(text):
        try:
            entry = _image_entry(line, lineno)
        except LineError as e:
            fail(kind, path, lineno, e.reason)
        if line in seen:
            fail(kind, path, lineno, f"same image as line {seen[line]}")
        seen[line] = lineno
        result.append(entry)
    if not result:
        fail(kind, path, None, "no images (every line is blank or a comment)")
    return result


def _image_entry(line: str, lineno: int) -> ImageEntry:
    if "\x00" in line:
        raise LineError("NUL character in the line")
    user: str | None = None
    host: str | None = None
    if line.startswith("/"):
        file_path = line
    elif "://" in line:
        raise LineError(
            f"{line!r} is a URL; an image is an absolute path or [user@]host:/absolute/path"
        )
    else:
        colon = _first_colon_outside_brackets(line)
        if colon is None:
            raise LineError(
                f"relative path {line!r}: an image is an absolute path"
                " or [user@]host:/absolute/path"
            )
        spec, file_path = line[:colon], line[colon + 1 :]
        if WHITESPACE_RE.search(spec):
            raise LineError(whitespace_reason(spec, "the host"))
        user, host, _ = parse_user_host(spec)
        if not file_path:
            raise LineError(f"empty path after ':' in {line!r}")
        if not file_path.startswith("/"):
            hint = ""
            if file_path.startswith(":") or ":" in spec:
                hint = " (put an IPv6 host in brackets: user@[address]:/path)"
            raise LineError(f"remote path {file_path!r} is not absolute{hint}")
    base = file_path.rsplit("/", 1)[1]
    if base in ("", ".", ".."):
        raise LineError(f"{file_path!r} names a directory, not an image file")
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
    shown, text = read_input_file("image_file", path)
    return parse_image_text(text, path=shown)
