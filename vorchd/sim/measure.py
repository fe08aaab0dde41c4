"""
What a simulated fleet looks like at one moment, measured on its L{HostTable}: how full
it is, how many PMs are in use, how much free room is stranded, how unevenly the load is
spread, and why a request finds no PM. Pure: numpy over the table's columns.

The fleet's room is the room rule's (L{vorchd.room}): each PM's capacity times the
overcommit ratio, rounded down (L{HostTable.effective}).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vorchd.model import RESOURCES, Flavor, Resources
from vorchd.state.table import HostTable

NO_OPEN_PM = "no open PM"
"""Every PM is down or drained."""
FRAGMENTED = "fragmented"
"""Each resource is free on some open PM, but no one PM has all that is asked."""
DECLINED = "policy declined"
"""Some PM had room, but the policy ranked none (a third-party policy may drop PMs)."""


def fill(table: HostTable, ratios: Mapping[str, float]) -> np.ndarray:
    """
    Each PM's fill: the mean over cpu, ram and disk of C{used / limit} (a resource a PM
    has none of counts 0), in pmid order. The measure best-fit and worst-fit rank by.
    """
    return (table.used * table.inverse(ratios)).mean(axis=0)


def utilisation(table: HostTable, ratios: Mapping[str, float]) -> dict[str, float]:
    """
    Per resource, what is used over the whole fleet's limit (0 for an empty fleet).
    """
    limit = table.effective(ratios).sum(axis=1)
    used = table.used.sum(axis=1)
    return {r: float(used[k] / limit[k]) if limit[k] > 0 else 0.0 for k, r in enumerate(RESOURCES)}


def imbalance(table: HostTable, ratios: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    """
    How unevenly the open PMs are filled: the standard deviation of L{fill} over them,
    and that of each resource's C{used / limit}. 0 when the load is perfectly even.
    """
    open_ = table.open
    if not open_.any():
        return 0.0, dict.fromkeys(RESOURCES, 0.0)
    fractions = (table.used * table.inverse(ratios))[:, open_]
    per = {r: float(fractions[k].std()) for k, r in enumerate(RESOURCES)}
    return float(fractions.mean(axis=0).std()), per


def stranded(
    table: HostTable, ratios: Mapping[str, float], flavors: Sequence[Flavor]
) -> dict[str, float]:
    """
    Free room no flavor of C{flavors} can use: on each open PM where none of them fits
    by the room rule, all its free room is stranded. Per resource, as a fraction of the
    whole fleet's limit, and C{pms}, how many such PMs hold some free room.
    """
    effective = table.effective(ratios)
    free = effective - table.used
    usable = np.zeros(len(table), dtype=bool)
    for f in flavors:
        usable |= (free[0] >= f.cpu) & (free[1] >= f.ram) & (free[2] >= f.disk)
    stuck = table.open & ~usable
    left = np.maximum(free[:, stuck], 0)
    limit = effective.sum(axis=1)
    out = {
        r: float(left[k].sum() / limit[k]) if limit[k] > 0 else 0.0
        for k, r in enumerate(RESOURCES)
    }
    out["pms"] = int(np.count_nonzero(left.any(axis=0)))
    return out


def why_refused(table: HostTable, wanted: Resources, ratios: Mapping[str, float]) -> str:
    """
    Why no PM took a request for C{wanted}: L{NO_OPEN_PM}; the resources no open PM has
    enough of (C{"cpu"}, C{"cpu+ram"}, ...); L{FRAGMENTED}; or L{DECLINED}.
    """
    open_ = table.open
    if not open_.any():
        return NO_OPEN_PM
    free = table.effective(ratios) - table.used
    if not open_.all():
        free = free[:, open_]
    asked = np.array([getattr(wanted, r) for r in RESOURCES], dtype=np.int64)
    # A resource no open PM has enough of: the most any open PM has is short of it.
    most = free.max(axis=1)
    short = [r for k, r in enumerate(RESOURCES) if most[k] < asked[k]]
    if short:
        return "+".join(short)
    if (free >= asked[:, None]).all(axis=0).any():
        return DECLINED
    return FRAGMENTED
