"""
The PMs open to placement as columns of numbers (numpy), kept up to date by the read
model, so that finding the PMs with room for a request costs a few vector operations
however large the fleet, and a policy can rank them without a Python object per PM.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from vorchd.model import RESOURCES, Host, Resources

# How many fits() answers a table keeps up to date (flavors times ratios in use).
_KEPT_FITS = 64


class HostTable:
    """
    One column per current PM, in ascending pmid (so the first of equals is the first in
    the pm_file's order): C{pmid}; C{capacity} and C{used}, one row per resource (cpu,
    ram, disk); C{vms}; C{open} (this daemon reaches it and it is not drained).
    """

    def __init__(self, pmids: Iterable[int] = ()):
        self.pmid = np.array(sorted(pmids), dtype=np.int64)
        n = len(self.pmid)
        self.row = {int(p): i for i, p in enumerate(self.pmid)}
        self.capacity = np.zeros((len(RESOURCES), n), dtype=np.int64)
        self.used = np.zeros((len(RESOURCES), n), dtype=np.int64)
        self.vms = np.zeros(n, dtype=np.int64)
        self.up = np.zeros(n, dtype=bool)
        self.drained = np.zeros(n, dtype=bool)
        self.open = np.zeros(n, dtype=bool)
        # (ratios, effective capacity, its reciprocal where positive, else 0)
        self._effective: tuple[tuple[float, ...], np.ndarray, np.ndarray] | None = None
        # fits() answers by (wanted cpu, ram, disk, ratios), each kept up to date a row
        # at a time as PMs change: a fleet sees few flavors and ratios, and a create
        # then costs no pass over the fleet to find where it fits.
        self._fits: dict[tuple, np.ndarray] = {}

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
            column = (capacity.cpu, capacity.ram, capacity.disk)
            if tuple(self.capacity[:, i]) != column:
                self.capacity[:, i] = column
                self._effective = None
                changed = True
        if used is not None:
            self.used[:, i] = (used.cpu, used.ram, used.disk)
            changed = True
        if vms is not None:
            self.vms[i] = vms
        if up is not None:
            self.up[i] = up
        if drained is not None:
            self.drained[i] = drained
        if up is not None or drained is not None:
            self.open[i] = self.up[i] and not self.drained[i]
            changed = True
        if changed:
            self._refit(i)

    def add(self, i: int, amount: np.ndarray, vms: int) -> None:
        """
        Add C{amount} (cpu, ram, disk; negative to give room back) and C{vms} to what
        column C{i}'s PM holds: L{set} by column, for a simulated fleet's claims.
        """
        self.used[:, i] += amount
        self.vms[i] += vms
        self._refit(i)

    def _refit(self, i: int) -> None:
        """
        Bring row C{i} of every kept L{fits} answer up to date.
        """
        if not self._fits:
            return
        is_open = bool(self.open[i])
        capacity = [int(c) for c in self.capacity[:, i]]
        used = [int(u) for u in self.used[:, i]]
        for key, mask in self._fits.items():
            wanted, ratios = key[:3], key[3:]
            mask[i] = is_open and all(
                math.floor(capacity[r] * ratios[r]) - used[r] >= wanted[r] for r in range(3)
            )

    def _scaled(self, ratios: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        key = tuple(float(ratios[r]) for r in RESOURCES)
        if self._effective is None or self._effective[0] != key:
            scale = np.array(key, dtype=np.float64)[:, None]
            effective = np.floor(self.capacity * scale).astype(np.int64)
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

    def fits(self, wanted: Resources, ratios: Mapping[str, float]) -> np.ndarray:
        """
        Which PMs can take C{wanted} now: open, with room by the room rule.
        """
        ratio_key = tuple(float(ratios[r]) for r in RESOURCES)
        key = (wanted.cpu, wanted.ram, wanted.disk, *ratio_key)
        mask = self._fits.get(key)
        if mask is None:
            effective = self.effective(ratios)
            mask = self.open.copy()
            for r, amount in enumerate(key[:3]):
                mask &= effective[r] - self.used[r] >= amount
            if len(self._fits) >= _KEPT_FITS:
                self._fits.clear()
            self._fits[key] = mask
        # A copy: what the caller holds stays what it was asked at.
        return mask.copy()

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
