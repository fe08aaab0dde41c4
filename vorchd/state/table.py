"""
The PMs open to placement as columns of numbers (numpy), kept up to date by the read
model, so that finding the PMs with room for a request costs a few vector operations
however large the fleet, and a policy can rank them without a Python object per PM.

Beside the columns the table keeps each PM's facts as Python numbers and a log of the
PMs that changed, so that what is derived from it (the L{fits} answers
and the keyed policies' rankings, L{vorchd.state.ranking}) is brought up to date lazily,
a changed PM at a time, only when it is next asked for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from vorchd.model import RESOURCES, Host, Resources

# How many fits() answers and rankings a table keeps (flavors times ratios in use).
_KEPT_FITS = 64
_KEPT_RANKINGS = 64

Scale = tuple[tuple[int, int, int], tuple[float, float, float]]
"""A PM's effective capacity under some ratios, and its inverse (0 where that is 0)."""


def ratio_key(ratios: Mapping[str, float]) -> tuple[float, float, float]:
    """
    C{ratios} as a tuple (cpu, ram, disk) of floats: how the table tells them apart.
    """
    return (float(ratios["cpu"]), float(ratios["ram"]), float(ratios["disk"]))


def scale(capacity: tuple[int, int, int], ratios: tuple[float, float, float]) -> Scale:
    """
    One PM's effective capacity under C{ratios} and its inverse, as Python numbers, by
    the same operations as L{HostTable.effective} and L{HostTable.inverse} (so the same
    values): C{floor(capacity * ratio)}, and C{1.0 / effective} where that is positive.
    """
    effective = tuple(math.floor(c * r) for c, r in zip(capacity, ratios, strict=True))
    inverse = tuple(1.0 / e if e > 0 else 0.0 for e in effective)
    return effective, inverse


class HostTable:
    """
    One column per current PM, in ascending pmid (so the first of equals is the first in
    the pm_file's order): C{pmid} (and C{pmids}, the same as a list of ints); C{capacity}
    and C{used}, one row per resource (cpu, ram, disk); C{vms}; C{open} (this daemon
    reaches it and it is not drained).

    Change it only through L{set} and L{add}: they keep the Python facts and the change
    log beside the columns.
    """

    def __init__(self, pmids: Iterable[int] = ()):
        self.pmid = np.array(sorted(pmids), dtype=np.int64)
        n = len(self.pmid)
        self.pmids: list[int] = self.pmid.tolist()
        self.row = {p: i for i, p in enumerate(self.pmids)}
        self.capacity = np.zeros((len(RESOURCES), n), dtype=np.int64)
        self.used = np.zeros((len(RESOURCES), n), dtype=np.int64)
        self.vms = np.zeros(n, dtype=np.int64)
        self.up = np.zeros(n, dtype=bool)
        self.drained = np.zeros(n, dtype=bool)
        self.open = np.zeros(n, dtype=bool)
        # The same facts as Python numbers, per column: what a change of one PM is worked
        # out from without a numpy scalar per value.
        self.open_of: list[bool] = [False] * n
        self.capacity_of: list[tuple[int, int, int]] = [(0, 0, 0)] * n
        self.used_of: list[tuple[int, int, int]] = [(0, 0, 0)] * n
        self.vms_of: list[int] = [0] * n
        # The columns changed, in order; _log[0] is change number _log_start. Halved
        # when long: a follower further behind than what is left rebuilds instead.
        self._log: list[int] = []
        self._log_start = 0
        self._log_limit = max(4096, 2 * n)
        # (ratios, effective capacity, its reciprocal where positive, else 0)
        self._effective: tuple[tuple[float, ...], np.ndarray, np.ndarray] | None = None
        # Per ratios: capacity -> Scale, for the few PM sizes of a fleet.
        self._scales: dict[tuple[float, float, float], dict[tuple[int, int, int], Scale]] = {}
        # fits() answers by (wanted cpu, ram, disk, ratios), each [mask, changes seen]:
        # a fleet sees few flavors and ratios, and a create then costs no pass over the
        # fleet to find where it fits.
        self._fits: dict[tuple, list] = {}
        # Rankings (vorchd.state.ranking) by (id(policy), ratios), and the last asked.
        self.rankings: dict[tuple, object] = {}
        self.last_rankings = None

    def __len__(self) -> int:
        return len(self.pmid)

    def set(
        self,
        pmid: int,
        capacity: Resources | None = None,
        used: Resources | None = None,
        vms: int | None = None,
        up: bool | None = None,
        drained: bool | None = None,
    ) -> None:
        """
        Change what is known of PM C{pmid} (nothing if it has no column).
        """
        i = self.row.get(pmid)
        if i is None:
            return
        changed = False
        if capacity is not None:
            column = (int(capacity.cpu), int(capacity.ram), int(capacity.disk))
            if self.capacity_of[i] != column:
                self.capacity[:, i] = column
                self.capacity_of[i] = column
                self._effective = None
                changed = True
        if used is not None:
            column = (int(used.cpu), int(used.ram), int(used.disk))
            if self.used_of[i] != column:
                self.used[:, i] = column
                self.used_of[i] = column
                changed = True
        if vms is not None and self.vms_of[i] != vms:
            self.vms[i] = vms
            self.vms_of[i] = int(vms)
            changed = True
        if up is not None:
            self.up[i] = up
        if drained is not None:
            self.drained[i] = drained
        if up is not None or drained is not None:
            is_open = bool(self.up[i]) and not bool(self.drained[i])
            if self.open_of[i] != is_open:
                self.open[i] = is_open
                self.open_of[i] = is_open
                changed = True
        if changed:
            self._changed(i)

    def add(self, i: int, amount: Sequence[int], vms: int) -> None:
        """
        Add C{amount} (cpu, ram, disk as Python ints; negative to give room back) and
        C{vms} to what column C{i}'s PM holds: L{set} by column, for a simulated fleet's
        claims.
        """
        u = self.used_of[i]
        column = (u[0] + amount[0], u[1] + amount[1], u[2] + amount[2])
        self.used_of[i] = column
        used = self.used
        used[0, i], used[1, i], used[2, i] = column
        if vms:
            self.vms_of[i] += vms
            self.vms[i] = self.vms_of[i]
        self._changed(i)

    def _changed(self, i: int) -> None:
        """
        Column C{i} changed: a line in the change log.
        """
        log = self._log
        log.append(i)
        if len(log) > self._log_limit:
            half = len(log) // 2
            self._log_start += half
            self._log = log[half:]

    @property
    def changes(self) -> int:
        """
        How many changes the table has seen: the position a follower has caught up to.
        """
        return self._log_start + len(self._log)

    def changed_since(self, seen: int) -> list[int] | None:
        """
        The columns changed since change number C{seen} (L{changes} when last caught up),
        in order, a column perhaps more than once; C{None} if the log no longer goes back
        that far (the follower must then rebuild from the columns).
        """
        start = seen - self._log_start
        if start < 0:
            return None
        return self._log[start:]

    def scales(self, ratios: tuple[float, float, float]) -> dict[tuple[int, int, int], Scale]:
        """
        A cache of L{scale} under C{ratios} by capacity, filled by L{scale_of}.
        """
        kept = self._scales.get(ratios)
        if kept is None:
            kept = self._scales[ratios] = {}
        return kept

    def scale_of(self, i: int, ratios: tuple[float, float, float]) -> Scale:
        """
        Column C{i}'s effective capacity and inverse under C{ratios}, as Python numbers.
        """
        kept = self.scales(ratios)
        capacity = self.capacity_of[i]
        found = kept.get(capacity)
        if found is None:
            found = kept[capacity] = scale(capacity, ratios)
        return found

    def _scaled(self, ratios: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        key = ratio_key(ratios)
        if self._effective is None or self._effective[0] != key:
            factor = np.array(key, dtype=np.float64)[:, None]
            effective = np.floor(self.capacity * factor).astype(np.int64)
            inverse = np.zeros(effective.shape, dtype=np.float64)
            np.divide(1.0, effective, out=inverse, where=effective > 0)
            self._effective = (key, effective, inverse)
        return self._effective[1], self._effective[2]

    def effective(self, ratios: Mapping[str, float]) -> np.ndarray:
        """
        Each PM's capacity under C{ratios}: L{vorchd.room.limit} of each resource.
        """
        return self._scaled(ratios)[0]

    def inverse(self, ratios: Mapping[str, float]) -> np.ndarray:
        """
        1 / L{effective}, and 0 where that is 0 (for fractions of capacity).
        """
        return self._scaled(ratios)[1]

    def fit_mask(self, wanted: Sequence[int], ratios: Mapping[str, float]) -> np.ndarray:
        """
        Which PMs can take C{wanted} (cpu, ram, disk) now, worked out afresh over the
        columns: open, with room by the room rule. A new array.
        """
        effective = self.effective(ratios)
        mask = self.open.copy()
        for r, amount in enumerate(wanted):
            mask &= effective[r] - self.used[r] >= amount
        return mask

    def fits(self, wanted: Resources, ratios: Mapping[str, float]) -> np.ndarray:
        """
        Which PMs can take C{wanted} now: open, with room by the room rule.
        """
        ratio = ratio_key(ratios)
        key = (wanted.cpu, wanted.ram, wanted.disk, *ratio)
        kept = self._fits.get(key)
        changed = None if kept is None else self.changed_since(kept[1])
        if changed is None:
            if kept is None and len(self._fits) >= _KEPT_FITS:
                self._fits.clear()
            kept = self._fits[key] = [self.fit_mask(key[:3], ratios), self.changes]
        elif changed:
            mask = kept[0]
            w0, w1, w2 = key[:3]
            open_of, used_of, capacity_of = self.open_of, self.used_of, self.capacity_of
            scales = self.scales(ratio)
            for i in changed:
                if open_of[i]:
                    found = scales.get(capacity_of[i])
                    if found is None:
                        found = self.scale_of(i, ratio)
                    (e0, e1, e2), _ = found
                    u = used_of[i]
                    mask[i] = e0 - u[0] >= w0 and e1 - u[1] >= w1 and e2 - u[2] >= w2
                else:
                    mask[i] = False
            kept[1] = self.changes
        # A copy: what the caller holds stays what it was asked at.
        return kept[0].copy()

    def host(self, i: int, ratios: Mapping[str, float] | None = None) -> Host:
        """
        PM column C{i} as a L{Host}; with C{ratios}, its capacity scaled by them.
        """
        capacity = self.effective(ratios)[:, i] if ratios is not None else self.capacity[:, i]
        return Host(
            pmid=int(self.pmid[i]),
            capacity=Resources(*map(int, capacity)),
            used=Resources(*map(int, self.used[:, i])),
            vms=int(self.vms[i]),
            up=bool(self.up[i]),
            drained=bool(self.drained[i]),
        )
