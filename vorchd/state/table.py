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
    One row per current PM, in ascending pmid (so the first of equals is the first in the
    pm_file's order): C{pmid}, C{capacity} and C{used} (rows of cpu, ram, disk), C{vms},
    C{up} (this daemon reaches it), C{drained}.
    """

    def __init__(self, pmids: Iterable[int] = ()):
        self.pmid = np.array(sorted(pmids), dtype=np.int64)
        n = len(self.pmid)
        self.row = {int(p): i for i, p in enumerate(self.pmid)}
        self.capacity = np.zeros((n, len(RESOURCES)), dtype=np.int64)
        self.used = np.zeros((n, len(RESOURCES)), dtype=np.int64)
        self.vms = np.zeros(n, dtype=np.int64)
        self.up = np.zeros(n, dtype=bool)
        self.drained = np.zeros(n, dtype=bool)
        self._effective: tuple[tuple[float, ...], np.ndarray] | None = None

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
        Change what is known of PM C{pmid} (nothing if it has no row).
        """
        row = self.row.get(pmid)
        if row is None:
            return
        if capacity is not None:
            self.capacity[row] = (capacity.cpu, capacity.ram, capacity.disk)
            self._effective = None
        if used is not None:
            self.used[row] = (used.cpu, used.ram, used.disk)
        if vms is not None:
            self.vms[row] = vms
        if up is not None:
            self.up[row] = up
        if drained is not None:
            self.drained[row] = drained

    def effective(self, ratios: Mapping[str, float]) -> np.ndarray:
        """
        Each row's capacity under C{ratios}: L{vorchd.room.limit} of each resource.
        """
        key = tuple(float(ratios[r]) for r in RESOURCES)
        if self._effective is None or self._effective[0] != key:
            scaled = np.floor(self.capacity * np.array(key, dtype=np.float64))
            self._effective = (key, scaled.astype(np.int64))
        return self._effective[1]

    def free(self, ratios: Mapping[str, float]) -> np.ndarray:
        """
        Each row's free room under C{ratios} (L{vorchd.room.free}).
        """
        return self.effective(ratios) - self.used

    def fit_rows(self, wanted: Resources, ratios: Mapping[str, float]) -> np.ndarray:
        """
        The rows that can take C{wanted} now: up, open, with room by the room rule; in
        ascending pmid.
        """
        room = self.free(ratios) >= np.array([wanted.cpu, wanted.ram, wanted.disk])
        return np.flatnonzero(self.up & ~self.drained & room.all(axis=1))

    def host(self, row: int, ratios: Mapping[str, float] | None = None) -> Host:
        """
        Row C{row} as a L{Host}; with C{ratios}, its capacity scaled by them.
        """
        capacity = self.effective(ratios)[row] if ratios is not None else self.capacity[row]
        return Host(
            pmid=int(self.pmid[row]),
            capacity=Resources(*map(int, capacity)),
            used=Resources(*map(int, self.used[row])),
            vms=int(self.vms[row]),
            up=bool(self.up[row]),
            drained=bool(self.drained[row]),
        )
