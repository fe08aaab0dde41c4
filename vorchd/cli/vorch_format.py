"""
vorch's pure formatters: the daemon's answers as tables and text.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO


class Progress:
    """
    An elapsed-seconds spinner on C{stream} while a slow call runs, if C{stream} is a
    terminal; nothing otherwise. Use as a context manager.
    """

    FRAMES = "|/-\\"

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 0.1):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        if tty:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def _spin(self) -> None:
        start = time.monotonic()
        frame = 0
        while not self._stop.wait(self.interval):
            elapsed = time.monotonic() - start
            spinner = self.FRAMES[frame % len(self.FRAMES)]
            self.stream.write(f"\r{spinner} {self.label} {elapsed:.0f}s")
            self.stream.flush()
            frame += 1

    def __exit__(self, *exc_info) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.stream.write("\r\033[K")
            self.stream.flush()


# --- Formatters: answers to text (pure) -------------------------------------------------


def cell(value: Any) -> str:
    """
    A value as table text: whole numbers without a point, other numbers to two places,
    and text with its control characters escaped so that a row stays one line.
    """
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}".rstrip("0")
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """
    A plain-text table: a header line, then one line per row, columns two spaces apart;
    numbers align right, text left. Ends with a newline.
    """
    rows = [list(row) for row in rows]
    texts = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in texts:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))

    def line(values: Sequence[str], raw: Sequence[Any] | None) -> str:
        parts = []
        for i, text in enumerate(values):
            number = raw is not None and _is_number(raw[i])
            parts.append(text.rjust(widths[i]) if number else text.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    lines = [line(list(headers), None)]
    lines += [line(text, row) for text, row in zip(texts, rows, strict=True)]
    return "\n".join(lines) + "\n"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


VM_HEADERS = ("VMID", "NAME", "TYPE", "PM")


def format_vms(vms: Iterable[Mapping[str, Any]]) -> str:
    """
    C{vm/query} answers as a table.
    """
    return format_table(
        VM_HEADERS, [(v["vmid"], v["name"], v["instance_type"], v["pmid"]) for v in vms]
    )


def addresses(info: Mapping[str, Any] | None) -> tuple[str, str]:
    """
    The MAC address and the IP addresses (comma-separated) of a C{vm/info} answer, C{-}
    for what it does not have (or for no answer at all).
    """
    if not isinstance(info, Mapping):
        return "-", "-"
    ips = info.get("ips")
    return info.get("mac") or "-", ",".join(map(str, ips)) if ips else "-"


SHOW_HEADERS = (*VM_HEADERS, "MAC", "ADDRESS")


def format_shown(vm: Mapping[str, Any], info: Mapping[str, Any] | None) -> str:
    """
    One VM (its C{vm/query} answer) with its MAC and IP addresses from its C{vm/info}
    answer, if any.
    """
    row = (vm["vmid"], vm["name"], vm["instance_type"], vm["pmid"], *addresses(info))
    return format_table(SHOW_HEADERS, [row])


INFO_HEADERS = ("VMID", "NAME", "TYPE", "PM", "IMAGE", "STATE", "DOMAIN", "MAC", "ADDRESS")


def format_info(vms: Iterable[Mapping[str, Any]]) -> str:
    """
    C{vm/info} answers as a table: the VM's record, its state, its domain, its MAC
    address and the addresses its guest has.
    """
    keys = ("vmid", "name", "instance_type", "pmid", "image_id", "state", "domain")
    return format_table(INFO_HEADERS, [[*(v[k] for k in keys), *addresses(v)] for v in vms])


def format_types(answer: Mapping[str, Any]) -> str:
    """
    A C{vm/types} answer as a table.
    """
    return format_table(
        ("TID", "CPU", "RAM MiB", "DISK GiB"),
        [(t["tid"], t["cpu"], t["ram"], t["disk"]) for t in answer["types"]],
    )


def format_images(answer: Mapping[str, Any]) -> str:
    """
    An C{image/list} answer as a table.
    """
    return format_table(("ID", "NAME"), [(i["id"], i["name"]) for i in answer["images"]])


PM_HEADERS = (
    "PMID",
    "CPU",
    "FREE CPU",
    "RAM MiB",
    "FREE RAM",
    "DISK GiB",
    "FREE DISK",
    "VMS",
)


def format_pms(pms: Iterable[Mapping[str, Any]]) -> str:
    """
    C{pm/query} answers as a table: each resource's capacity, then what is free of it.
    """
    rows = []
    for pm in pms:
        capacity, free = pm["capacity"], pm["free"]
        row = [pm["pmid"]]
        for resource in ("cpu", "ram", "disk"):
            row += [capacity[resource], free[resource]]
        rows.append([*row, pm["vms"]])
    return format_table(PM_HEADERS, rows)


def format_vmids(vmids: Iterable[int]) -> str:
    """
    A C{pm/listvms} answer's vmids as a one-column table.
    """
    return format_table(("VMID",), [(vmid,) for vmid in vmids])
