"""
The PMs open to placement as columns of numbers (numpy), kept up to date by the read
model, so that finding the PMs with room for a request costs a few vector operations
however large the fleet, and a policy can rank them without a Python object per PM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from vorchd.model import RESOURCES, Host, Resources


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
        if capacity is not None:
            column = (capacity.cpu, capacity.ram, capacity.disk)
            if tuple(self.capacity[:, i]) != column:
                self.capacity[:, i] = column
                self._effective = None
        if used is not None:
            self.used[:, i] = (used.cpu, used.ram, used.disk)
        if vms is not None:
            self.vms[i] = vms
        if up is not None:
            self.up[i] = up
        if drained is not None:
            self.drained[i] = drained
        if up is not None or drained is not None:
            self.open[i] = self.up[i] and not self.drained[i]

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
        effective = self.effective(ratios)
        out = self.open.copy()
        for r, amount in enumerate((wanted.cpu, wanted.ram, wanted.disk)):
            out &= effective[r] - self.used[r] >= amount
        return out

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
