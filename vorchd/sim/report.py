"""
The simulator's answers for people and for scripts: a table of the policies side by
side, with a few lines on the fleet and the trace above it, and the JSON list of
C{vorchd-sim --json}. Pure: text and dicts from L{Outcome}s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from vorchd.model import RESOURCES
from vorchd.sim.fleet import SimFleet
from vorchd.sim.run import Outcome
from vorchd.sim.traces import Trace


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def _count(n: float) -> str:
    return f"{n:,.0f}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """
    Columns padded to their widest cell, the first left-aligned and the others right.
    """
    rows = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(r[k]) for r in rows) for k in range(len(headers))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


_MARKS = " ▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 24) -> str:
    """
    C{values} (fractions, 0 to 1) as C{width} marks, each the mean of its share of them:
    a blank for 0, C{█} for 1.
    """
    if not values:
        return ""
    width = min(width, len(values))
    marks = []
    for k in range(width):
        part = values[k * len(values) // width : (k + 1) * len(values) // width] or [0.0]
        level = min(max(sum(part) / len(part), 0.0), 1.0)
        marks.append(_MARKS[round(level * (len(_MARKS) - 1))])
    return "".join(marks)


def over_time(outcomes: Sequence[Outcome]) -> str:
    """
    Each policy's utilisation of cpu, ram and disk over the trace, as sparklines.
    """
    width = max(len(o.policy) for o in outcomes)
    lines = ["utilisation over the trace (blank 0% .. █ 100%):"]
    for o in outcomes:
        cells = [f"{r} {sparkline(o.series.get(r, []))}" for r in RESOURCES]
        lines.append(f"  {o.policy.ljust(width)}  " + "  ".join(cells))
    return "\n".join(lines)


def refusal_text(refusals: Mapping[str, int]) -> str:
    """
    The reasons of a policy's refusals, most frequent first: C{"cpu 120, fragmented 3"}.
    """
    ordered = sorted(refusals.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{why} {_count(n)}" for why, n in ordered) or "-"


def flavor_text(counts: Mapping[int, int]) -> str:
    """
    Refusals by flavor, most first: C{"tid 5: 300, tid 4: 9"}.
    """
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"tid {tid}: {_count(n)}" for tid, n in ordered) or "-"


def describe(fleet: SimFleet, trace: Trace, ratios: Mapping[str, float]) -> str:
    """
    A few lines on what was simulated: the fleet, the ratios and the trace.
    """
    total = [sum(getattr(pm.capacity, r) for pm in fleet.pms) for r in RESOURCES]
    vms = sum(pm.vms for pm in fleet.pms)
    creates = trace.slots
    span = float(trace.time[-1] - trace.time[0]) if len(trace) else 0.0
    lines = [
        f"fleet: {len(fleet.pms):,} PMs, {total[0]:,} CPUs, {total[1]:,} MiB RAM,"
        f" {total[2]:,} GiB disk" + (f", {vms:,} VMs already placed" if vms else ""),
        "ratios: " + ", ".join(f"{r}={ratios[r]:g}" for r in RESOURCES),
        f"trace: {trace.source or 'given'}: {len(trace):,} events ({creates:,} creates,"
        f" {len(trace) - creates:,} destroys) over {span:,.0f} s",
    ]
    if trace.left_out:
        lines.append(f"  {trace.left_out:,} VMs of the trace fit no flavor and are left out")
    flavors = ", ".join(f"{f.tid}=({f.cpu},{f.ram},{f.disk})" for f in trace.flavors)
    lines.append(f"flavors (tid=(cpu,ram,disk)): {flavors}")
    return "\n".join(lines)


def format_outcomes(outcomes: Sequence[Outcome], current: str | None = None) -> str:
    """
    The policies side by side, one row each: creates placed and refused (and why), PMs
    holding a VM, the fleet's utilisation, the stranded free room and the imbalance at the
    end, and decisions per second.

    @param current: the policy in force, marked C{(now)}.
    """
    headers = [
        "policy",
        "placed",
        "refused",
        "PMs used",
        "cpu",
        "ram",
        "disk",
        "stranded cpu/ram/disk",
        "imbalance",
        "decisions/s",
    ]
    rows = []
    for o in outcomes:
        stranded = "/".join(_percent(o.stranded.get(r, 0.0)) for r in RESOURCES)
        rows.append(
            [
                f"{o.policy} (now)" if o.policy == current else o.policy,
                _count(o.placed),
                _count(o.refused),
                f"{o.pms_used:,}/{o.pms:,}",
                *(_percent(o.utilisation.get(r, 0.0)) for r in RESOURCES),
                stranded,
                f"{o.imbalance:.3f}",
                _count(o.decisions_per_s),
            ]
        )
    text = _table(headers, rows)
    if outcomes:
        text += "\n\n" + over_time(outcomes)
    reasons = [
        f"  {o.policy}: {refusal_text(o.refusals)}; by flavor: {flavor_text(o.refused_by_flavor)}"
        for o in outcomes
        if o.refused
    ]
    if reasons:
        text += "\n\nrefused because (the resources no open PM had enough of, or fragmented:"
        text += " each is free somewhere, but not all on one PM):\n" + "\n".join(reasons)
    return text


def report(
    fleet: SimFleet,
    trace: Trace,
    ratios: Mapping[str, float],
    outcomes: Sequence[Outcome],
    current: str | None = None,
) -> str:
    """
    L{describe} and L{format_outcomes}, for the terminal.
    """
    return describe(fleet, trace, ratios) + "\n\n" + format_outcomes(outcomes, current)


def outcomes_json(outcomes: Sequence[Outcome], series: bool = True) -> str:
    """
    The JSON list of C{--json}: one object per policy (L{Outcome.as_dict}).
    """
    return json.dumps([o.as_dict(series=series) for o in outcomes], indent=1)
