"""
The Azure public VM trace's C{vmtable.csv} layout, read as a L{Trace}.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from vorchd.model import Flavor
from vorchd.sim.traces import (  # noqa: F401
    AZURE_COLUMNS,
    DEFAULT_FLAVORS,
    DEFAULT_MIX,
    Trace,
    _catalog,
    _fail,
    _from_lifetimes,
    _number,
    _read_rows,
    _text,
)


def _bucket(text: str, what: str) -> int:
    """
    The least amount a bucket of the Azure trace allows: C{"8"} is 8, C{">24"} is 25.
    """
    more = text.startswith(">")
    number = text[1:] if more else text
    try:
        value = int(number)
    except ValueError:
        raise ValueError(f"{what} {text!r} is neither a number nor >number") from None
    if value <= 0:
        raise ValueError(f"{what} {text!r} is not positive")
    return value + 1 if more else value


def smallest_flavor(flavors: Sequence[Flavor], cpu: int, ram_mib: int) -> int | None:
    """
    The index in C{flavors} of the smallest flavor with at least C{cpu} vCPUs and
    C{ram_mib} MiB (fewest vCPUs, then least RAM, then least disk, then lowest tid), or
    C{None} if none holds that much.
    """
    best = None
    for i, f in enumerate(flavors):
        if f.cpu >= cpu and f.ram >= ram_mib:
            key = (f.cpu, f.ram, f.disk, f.tid)
            if best is None or key < best[0]:
                best = (key, i)
    return None if best is None else best[1]


def read_azure_trace(path: str | os.PathLike[str], flavors: Sequence[Flavor]) -> Trace:
    """
    Read the Azure public VM trace's C{vmtable.csv} layout (no header; L{AZURE_COLUMNS}):
    each VM is created at its C{created} second and destroyed at its C{deleted} second,
    as the smallest flavor that holds its core-count and memory buckets (memory in GB,
    taken as GiB; a bucket C{>N} as N + 1). VMs no flavor holds are left out and
    counted in L{Trace.left_out}. At one second, destroys come before creates.

    @raise InputFileError: the file cannot be read, or a line is malformed (the message
        names the file, the line and what is wrong).
    """
    shown = os.fspath(path)
    _catalog(flavors)
    mapped: dict[tuple[int, int], int | None] = {}
    created: list[float] = []
    deleted: list[float] = []
    flavor: list[int] = []
    names: list[str] = []
    left_out = 0
    for lineno, row in _read_rows(path):
        if len(row) != len(AZURE_COLUMNS):
            _fail(
                shown,
                lineno,
                f"{len(row)} columns; vmtable.csv has {len(AZURE_COLUMNS)}"
                f" ({', '.join(AZURE_COLUMNS)})",
            )
        try:
            if not row[0]:
                raise ValueError("the vm id is empty")
            start = _number(row[3], "created")
            end = _number(row[4], "deleted")
            if end < start:
                raise ValueError(f"deleted {row[4]} is before created {row[3]}")
            for k in (5, 6, 7):
                _number(row[k], AZURE_COLUMNS[k])
            cores = _bucket(row[9], "core-count bucket")
            memory = _bucket(row[10], "memory bucket")
        except ValueError as e:
            _fail(shown, lineno, str(e))
        key = (cores, memory)
        if key not in mapped:
            mapped[key] = smallest_flavor(flavors, cores, memory * 1024)
        k = mapped[key]
        if k is None:
            left_out += 1
            continue
        created.append(start)
        deleted.append(end)
        flavor.append(k)
        names.append(row[0])
    return _from_lifetimes(
        np.array(created, dtype=np.float64),
        np.array(deleted, dtype=np.float64),
        np.array(flavor, dtype=np.int64),
        flavors,
        names,
        source=shown,
        left_out=left_out,
    )
