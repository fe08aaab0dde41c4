"""
Redis hashes as Python sees them, for everything that reads or writes them (the store,
its in-memory fake, and the read model applying the change stream's entries).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from vorchd.model import RESOURCES, Resources


def mapping(flat) -> dict[str, str]:
    """
    A hash as Redis gives it (field, value, ...) as a dict; an empty one may come from
    Lua's cjson as an empty object.
    """
    if not flat:
        return {}
    return dict(zip(flat[::2], flat[1::2], strict=True))


def pairs(fields: Mapping[str, object]) -> list[object]:
    """
    C{fields} as Redis takes a hash: field, value, field, value, ...
    """
    return [x for item in fields.items() for x in item]


def whole(value: object, default: int = 0) -> int:
    """
    A hash field's value as an integer, C{default} where it is unset or not one.
    """
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def resources(rec: Mapping[str, str], prefix: str = "") -> Resources:
    """
    The C{<prefix>cpu}, C{<prefix>ram} and C{<prefix>disk} fields of a hash.
    """
    return Resources(*(whole(rec.get(f"{prefix}{r}")) for r in RESOURCES))
