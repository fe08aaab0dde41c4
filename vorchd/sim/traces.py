"""
Workloads: traces of VM arrivals and departures, read from a CSV file in vorchd's own
layout or in the Azure public VM trace's (C{vmtable.csv}), or generated from a seed.

A L{Trace} is columns (numpy), one row per event in time order: C{time}, C{create}
(true for an arrival), C{slot} (the VM: each create opens a slot of its own, and its
destroy names it) and C{flavor} (an index into the trace's flavors). Every destroy
follows its own create. Pure but for reading and writing the files.

vorchd's CSV layout, one event a line, an optional header, C{#} comments:

    time,event,vm,flavor
    0,create,web1,2
    12.5,create,db1,3
    60,destroy,web1,

C{time} in seconds, non-decreasing; C{event} C{create} or C{destroy}; C{vm} any name (a
name destroyed may be created again); C{flavor} a tid of the catalog (left out, or
ignored, on a destroy).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator, Sequence
from typing import NoReturn

import numpy as np
from attrs import field, frozen

from vorchd.inventory import InputFileError
from vorchd.model import Flavor
from vorchd.sim.fleet import SimError

CSV_HEADER = ("time", "event", "vm", "flavor")

AZURE_COLUMNS = (
    "vm id",
    "subscription",
    "deployment",
    "created",
    "deleted",
    "max cpu",
    "avg cpu",
    "p95 max cpu",
    "category",
    "core-count bucket",
    "memory bucket (GB)",
)
"""The columns of the Azure public VM trace's C{vmtable.csv} (it has no header line)."""

DEFAULT_FLAVORS = (
    Flavor(1, 1, 2048, 20),
    Flavor(2, 2, 4096, 40),
    Flavor(3, 4, 8192, 80),
    Flavor(4, 8, 16384, 160),
    Flavor(5, 16, 65536, 320),
)
"""A catalog for when none is given: general-purpose sizes from 1 to 16 vCPUs."""

DEFAULT_MIX = {1: 0.35, 2: 0.3, 3: 0.2, 4: 0.1, 5: 0.05}
"""How often each of L{DEFAULT_FLAVORS} is asked for, by tid: small VMs are the most."""


@frozen(eq=False)
class Trace:
    """
    Events in time order, as columns.

    @ivar time: seconds, non-decreasing (float64).
    @ivar create: true for a create, false for a destroy.
    @ivar slot: which VM (int64, 0..slots-1, in the order of their creates).
    @ivar flavor: the VM's flavor, an index into C{flavors} (int64).
    @ivar flavors: the catalog the trace was read or made with.
    @ivar names: each slot's name as the trace gave it (or none: see L{name}).
    @ivar source: what it was made from, for people.
    @ivar left_out: VMs of the source that no flavor holds, not in the trace.
    """

    time: np.ndarray
    create: np.ndarray
    slot: np.ndarray
    flavor: np.ndarray
    flavors: tuple[Flavor, ...] = field(converter=tuple)
    names: Sequence[str] = ()
    source: str = ""
    left_out: int = 0

    def __len__(self) -> int:
        return len(self.time)

    def name(self, slot: int) -> str:
        """
        The name of the VM of C{slot}: the trace's, or C{vm<slot + 1>}.
        """
        return self.names[slot] if slot < len(self.names) else f"vm{slot + 1}"

    @property
    def slots(self) -> int:
        """
        How many VMs the trace creates.
        """
        return int(np.count_nonzero(self.create))


def _fail(path: str, lineno: int | None, reason: str) -> NoReturn:
    raise InputFileError("trace", path, lineno, reason)


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} {text!r} is not a finite number >= 0")
    return value


def _text(path: str | os.PathLike[str]) -> str:
    """
    The file's text: UTF-8 with or without a BOM; undecodable bytes name their line.
    """
    shown = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        _fail(shown, None, f"cannot read: {e.strerror or e}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        _fail(shown, lineno, f"not UTF-8 text (byte {data[e.start]:#04x})")


def _read_rows(path: str | os.PathLike[str]) -> Iterator[tuple[int, list[str]]]:
    """
    The (line number, fields) of each line that is neither blank nor a comment.
    """
    shown = os.fspath(path)
    reader = csv.reader(io.StringIO(_text(path), newline=""), strict=True)
    try:
        for row in reader:
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            yield reader.line_num, [cell.strip() for cell in row]
    except csv.Error as e:
        _fail(shown, reader.line_num, str(e))


def detect_layout(path: str | os.PathLike[str]) -> str:
    """
    C{"azure"} if the first line that is not blank or a comment has the Azure trace's
    L{AZURE_COLUMNS}, else C{"csv"}. Only the head of the file is read.

    @raise InputFileError: the file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16).decode("utf-8-sig", errors="replace")
    except OSError as e:
        _fail(os.fspath(path), None, f"cannot read: {e.strerror or e}")
    for line in head.splitlines()[:-1] or head.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            fields = next(csv.reader([line]), [])
            return "azure" if len(fields) == len(AZURE_COLUMNS) else "csv"
    return "csv"


def _catalog(flavors: Sequence[Flavor]) -> dict[int, int]:
    if not flavors:
        raise SimError("no flavors to map the trace's VMs to")
    return {f.tid: i for i, f in enumerate(flavors)}


# -- vorchd's CSV --------------------------------------------------------------------------


def read_csv_trace(path: str | os.PathLike[str], flavors: Sequence[Flavor]) -> Trace:
    """
    Read a trace in vorchd's CSV layout (see the module's docstring).

    @param flavors: the catalog whose tids the C{flavor} column names.
    @raise InputFileError: the file cannot be read, or a line is malformed (the message
        names the file, the line and what is wrong).
    """
    shown = os.fspath(path)
    index = _catalog(flavors)
    time: list[float] = []
    create: list[bool] = []
    slot: list[int] = []
    flavor: list[int] = []
    names: list[str] = []
    of_slot: list[int] = []  # each slot's flavor
    live: dict[str, tuple[int, int]] = {}  # name -> (slot, line of its create)
    last = 0.0
    first = True
    for lineno, row in _read_rows(path):
        if first and [c.lower() for c in row[:4]] == list(CSV_HEADER):
            first = False
            continue
        first = False
        if len(row) not in (3, 4):
            _fail(shown, lineno, f"{len(row)} fields; expected time,event,vm,flavor")
        try:
            at = _number(row[0], "time")
        except ValueError as e:
            _fail(shown, lineno, str(e))
        if at < last:
            _fail(shown, lineno, f"time {row[0]} is before the line above's ({last:g})")
        last = at
        event, vm = row[1].lower(), row[2]
        if not vm:
            _fail(shown, lineno, "the vm is empty")
        if event == "create":
            if len(row) < 4 or not row[3]:
                _fail(shown, lineno, "a create needs a flavor")
            try:
                tid = int(row[3])
            except ValueError:
                _fail(shown, lineno, f"flavor {row[3]!r} is not a tid (an integer)")
            if tid not in index:
                known = ", ".join(str(t) for t in index)
                _fail(shown, lineno, f"flavor {tid} is not in the catalog (tids {known})")
            if vm in live:
                _fail(
                    shown, lineno, f"vm {vm!r} is already running (created at line {live[vm][1]})"
                )
            live[vm] = (len(names), lineno)
            slot.append(len(names))
            names.append(vm)
            flavor.append(index[tid])
            of_slot.append(index[tid])
        elif event == "destroy":
            if vm not in live:
                _fail(shown, lineno, f"vm {vm!r} is not running (no create before this line)")
            s, _ = live.pop(vm)
            slot.append(s)
            flavor.append(of_slot[s])
        else:
            _fail(shown, lineno, f"event {row[1]!r} is neither create nor destroy")
        time.append(at)
        create.append(event == "create")
    return Trace(
        np.array(time, dtype=np.float64),
        np.array(create, dtype=bool),
        np.array(slot, dtype=np.int64),
        np.array(flavor, dtype=np.int64),
        flavors,
        names,
        source=shown,
    )


def write_csv_trace(trace: Trace, path: str | os.PathLike[str]) -> None:
    """
    Write C{trace} in vorchd's CSV layout (with its header), readable again by
    L{read_csv_trace} with the same flavors: times are written exactly.
    """
    tids = [f.tid for f in trace.flavors]
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(CSV_HEADER)
        for at, is_create, s, k in zip(
            trace.time.tolist(),
            trace.create.tolist(),
            trace.slot.tolist(),
            trace.flavor.tolist(),
            strict=True,
        ):
            name = trace.name(s)
            if is_create:
                out.writerow((repr(at), "create", name, tids[k]))
            else:
                out.writerow((repr(at), "destroy", name, ""))


# -- the Azure public VM trace ---------------------------------------------------------


def _from_lifetimes(
    start: np.ndarray,
    end: np.ndarray,
    flavor: np.ndarray,
    flavors: Sequence[Flavor],
    names: Sequence[str] = (),
    source: str = "",
    left_out: int = 0,
    limit: int | None = None,
) -> Trace:
    """
    The trace of VMs each created at C{start} and destroyed at C{end} (at one time,
    destroys first, but a VM's own destroy after its create), its first C{limit} events.
    Slots are numbered in the order of the creates.
    """
    n = len(start)
    # Creates in time order (stable: the input's order among equals) number the slots.
    by_start = np.argsort(start, kind="stable")
    start, end, flavor = start[by_start], end[by_start], flavor[by_start]
    if len(names):
        names = [names[i] for i in by_start.tolist()]
    times = np.concatenate([start, end])
    phase = np.concatenate([np.ones(n, np.int8), np.where(end > start, 0, 2).astype(np.int8)])
    order = np.lexsort((phase, times))
    if limit is not None:
        order = order[:limit]
    slots = np.concatenate([np.arange(n, dtype=np.int64)] * 2)
    return Trace(
        times[order],
        order < n,
        slots[order],
        np.concatenate([flavor, flavor])[order],
        flavors,
        names,
        source=source,
        left_out=left_out,
    )


# The other layouts and the generator, read through this module as before.
from vorchd.sim.azure import read_azure_trace, smallest_flavor  # noqa: E402
from vorchd.sim.workload import (  # noqa: E402
    Lifetime,
    default_mix,
    generate,
    mean_flavor,
    offered_rate,
    parse_lifetime,
    parse_mix,
)

__all__ = [
    "AZURE_COLUMNS",
    "CSV_HEADER",
    "DEFAULT_FLAVORS",
    "DEFAULT_MIX",
    "Lifetime",
    "Trace",
    "default_mix",
    "detect_layout",
    "generate",
    "mean_flavor",
    "offered_rate",
    "parse_lifetime",
    "parse_mix",
    "read_azure_trace",
    "read_csv_trace",
    "smallest_flavor",
    "write_csv_trace",
]
