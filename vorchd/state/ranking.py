"""
A keyed policy's first choice for one flavor, kept up to date as the fleet changes, so
that a decision costs about the same for ten PMs as for ten thousand.

A L{Ranking} holds, for one L{IKeyedPolicy}, one flavor's resources and one set of
ratios, the PMs of a L{HostTable} that can take the flavor (by the room rule) in a heap
ordered by C{(key, column)}. When it is asked, it first reads the table's change log from
where it stopped: each PM changed since gets its key worked out again
(L{IKeyedPolicy.row_key}) and a new entry if it fits and its entry changed; an entry
that is no longer its PM's live one is stale and is dropped when it reaches the top. So
a flavor that is not asked costs nothing, and one that is costs a key and perhaps a push
per PM changed since it was last asked. A ranking too far behind the log, or whose heap
holds more stale entries than live ones, is built again from the columns
(L{IKeyedPolicy.keys}).

Its first choice is the smallest C{(key, column)}: exactly the first index of the
policy's own C{order} (ascending key as a float64, as numpy compares it, the lower
column first among equals), as long as C{row_key} gives bit for bit what C{keys} gives.
A key that is not finite (a weight so large that it overflows) cannot be kept in numpy's
order: the ranking then declines (L{Ranking.usable} false) and placement uses C{order}.

An entry is one Python int, C{ordered(key) << shift | column}, with C{ordered} a map of
finite floats onto ints that keeps their order (and makes -0.0 and 0.0 equal): ints
compare several times faster than tuples, and a decision is mostly heap operations.

@see: L{vorchd.placement.ranked} and L{vorchd.placement.chosen}, which ask it.
"""

from __future__ import annotations

import struct
from heapq import heapify, heappop, heappush

import numpy as np

from vorchd.policies import Candidates, Request
from vorchd.state.table import _KEPT_RANKINGS, HostTable, ratio_key

_pack = struct.Struct("<d").pack
_unpack = struct.Struct("<q").unpack
_MAGNITUDE = (1 << 63) - 1


def ordered(key: float) -> int:
    """
    An int that orders as the finite float C{key} does (C{ordered(a) < ordered(b)} if and
    only if C{a < b}), the same for -0.0 as for 0.0: its IEEE bits, negated magnitude for
    a negative number.
    """
    bits = _unpack(_pack(float(key) + 0.0))[0]
    return bits if bits >= 0 else -(bits & _MAGNITUDE)


def ordered_column(keys: np.ndarray) -> np.ndarray:
    """
    L{ordered} of each key of a column (as float64), at once.
    """
    bits = (keys.astype(np.float64) + 0.0).view(np.int64)
    return np.where(bits >= 0, bits, -(bits & _MAGNITUDE))


class Ranking:
    """
    The PMs that can take one flavor, by one keyed policy's key, under one set of ratios.

    @ivar usable: false once a key was not finite (then ask the policy's C{order}).
    """

    def __init__(self, table: HostTable, policy, request: Request, ratios) -> None:
        self.table = table
        self.policy = policy
        self.request = request
        self.ratios = dict(ratios)
        self.ratio = ratio_key(ratios)
        flavor = request.flavor
        self.wanted = (int(flavor.cpu), int(flavor.ram), int(flavor.disk))
        self.key = policy.row_key(request)
        self.usable = True
        self.shift = max(len(table), 1).bit_length()
        self._build()

    @classmethod
    def of(cls, table: HostTable, policy, request: Request, ratios) -> Ranking:
        """
        The ranking C{table} keeps for C{policy}, C{request}'s flavor resources and
        C{ratios}, made the first time it is asked for.
        """
        flavor = request.flavor
        key = (id(policy), flavor.cpu, flavor.ram, flavor.disk, *ratio_key(ratios))
        kept = table.rankings.get(key)
        if kept is None or kept.policy is not policy:
            if len(table.rankings) >= _KEPT_RANKINGS:
                table.rankings.clear()
            kept = table.rankings[key] = cls(table, policy, request, ratios)
        return kept

    def _build(self) -> None:
        """
        The heap afresh from the table's columns and the policy's C{keys}.
        """
        table = self.table
        fits = table.fit_mask(self.wanted, self.ratios)
        columns = Candidates(
            table.pmid,
            table.effective(self.ratios),
            table.inverse(self.ratios),
            table.used,
            table.vms,
            fits,
        )
        rows = np.flatnonzero(fits)
        keys = np.asarray(self.policy.keys(self.request, columns))[rows].astype(np.float64)
        if not np.isfinite(keys).all():
            self.usable = False
            keys = np.nan_to_num(keys)
        shift = self.shift
        entries = [
            (o << shift) | i
            for o, i in zip(ordered_column(keys).tolist(), rows.tolist(), strict=True)
        ]
        # Each column's live entry, or None where the flavor does not fit.
        self.live: list[int | None] = [None] * len(table)
        live = self.live
        for e, i in zip(entries, rows.tolist(), strict=True):
            live[i] = e
        heapify(entries)
        self.heap = entries
        self.seen = table.changes
        self._limit = 2 * len(table) + 1024

    def first(self) -> int | None:
        """
        The column of the PM to try first (the smallest key, the lowest column among
        equals), or C{None} if no PM can take the flavor. Check L{usable} after.
        """
        table = self.table
        start = self.seen - table._log_start
        if start < 0:
            self._build()
        elif start < len(table._log):
            self.seen = table._log_start + len(table._log)
            self._catch_up(table._log[start:])
        heap = self.heap
        live = self.live
        mask = (1 << self.shift) - 1
        while heap:
            top = heap[0]
            if live[top & mask] == top:
                return top & mask
            heappop(heap)
        return None

    def _catch_up(self, changed: list[int]) -> None:
        """
        A new entry for each PM in C{changed} that fits now with another key than its
        live entry's; no live entry for those that no longer fit.
        """
        table = self.table
        heap, live, key, shift = self.heap, self.live, self.key, self.shift
        open_of, used_of, vms_of = table.open_of, table.used_of, table.vms_of
        capacity_of = table.capacity_of
        scales = table.scales(self.ratio)
        w0, w1, w2 = self.wanted
        for i in changed:
            if not open_of[i]:
                live[i] = None
                continue
            found = scales.get(capacity_of[i])
            if found is None:
                found = table.scale_of(i, self.ratio)
            effective, inverse = found
            u = used_of[i]
            if (
                effective[0] - u[0] >= w0
                and effective[1] - u[1] >= w1
                and effective[2] - u[2] >= w2
            ):
                k = float(key(effective, inverse, u, vms_of[i]))
                if k - k != 0.0:  # inf or nan
                    self.usable = False
                    k = 0.0
                bits = _unpack(_pack(k))[0]
                e = ((bits if bits >= 0 else -(bits & _MAGNITUDE)) << shift) | i
                if live[i] != e:
                    live[i] = e
                    heappush(heap, e)
            else:
                live[i] = None
        if len(heap) > self._limit:
            self._build()
