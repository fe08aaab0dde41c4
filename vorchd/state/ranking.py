"""
A keyed policy's first choice for each flavor, kept up to date as the fleet changes, so
that a decision costs about the same for ten PMs as for ten thousand.

A L{Ranking} holds, for one L{IKeyedPolicy}, one flavor's resources and one set of
ratios, the PMs of a L{HostTable} that can take the flavor (by the room rule) in a heap
ordered by C{(key, column)}. The L{Rankings} of one policy under one set of ratios (one
per flavor asked) are brought up to date together when one of them is asked: the table's
change log is read from where they stopped, and each PM changed since has its room worked
out once and, for each flavor it fits, its key (L{IKeyedPolicy.row_key}) and a new entry
if that changed; an entry that is no longer its PM's live one is stale and is dropped
when it reaches the top. So nothing is done while no create is asked for, and a create
costs a key and perhaps a push per flavor for each PM changed since the last one. Rankings
too far behind the log, and a ranking whose heap holds more stale entries than live ones,
are built again from the columns (L{IKeyedPolicy.keys}).

The first choice is the smallest C{(key, column)}: exactly the first index of the
policy's own C{order} (ascending key as a float64, as numpy compares it, the lower
column first among equals), as long as C{row_key} gives bit for bit what C{keys} gives.
A key that is not finite (a weight so large that it overflows) cannot be kept in numpy's
order: that flavor's ranking then declines (L{Unranked}) and placement uses C{order}.

An entry is one Python int, C{ordered(key) << shift | column}, with C{ordered} a map of
finite floats onto ints that keeps their order (and makes -0.0 and 0.0 equal): ints
compare several times faster than tuples, and a decision is mostly heap operations.

@see: L{vorchd.placement.ranked} and L{vorchd.placement.chosen}, which ask it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
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
    bits = _unpack(_pack(float(key)))[0]
    return bits if bits >= 0 else -(bits & _MAGNITUDE)


def ordered_column(keys: np.ndarray) -> np.ndarray:
    """
    L{ordered} of each key of a column (as float64), at once.
    """
    bits = keys.astype(np.float64).view(np.int64)
    return np.where(bits >= 0, bits, -(bits & _MAGNITUDE))


class Unranked(Exception):
    """
    A key was not finite: this flavor's first choice must come from the policy's order.
    """


class Ranking:
    """
    The PMs that can take one flavor, by one keyed policy's key, under one set of ratios.

    @ivar heap: the entries, smallest first; C{live}: each column's live entry, or
        C{None} where the flavor does not fit.
    @ivar usable: false once a key was not finite.
    """

    def __init__(self, rankings: Rankings, request: Request) -> None:
        self.rankings = rankings
        self.request = request
        flavor = request.flavor
        self.wanted = (int(flavor.cpu), int(flavor.ram), int(flavor.disk))
        self.key = rankings.policy.row_key(request)
        self.usable = True
        self.build()

    def build(self) -> None:
        """
        The heap afresh from the table's columns and the policy's C{keys}.
        """
        rankings = self.rankings
        table, ratios = rankings.table, rankings.ratios
        fits = table.fit_mask(self.wanted, ratios)
        columns = Candidates(
            table.pmid,
            table.effective(ratios),
            table.inverse(ratios),
            table.used,
            table.vms,
            fits,
        )
        rows = np.flatnonzero(fits)
        keys = np.asarray(rankings.policy.keys(self.request, columns))[rows].astype(np.float64)
        if not np.isfinite(keys).all():
            self.usable = False
            keys = np.nan_to_num(keys)
        shift = rankings.shift
        rows = rows.tolist()
        entries = [
            (o << shift) | i for o, i in zip(ordered_column(keys).tolist(), rows, strict=True)
        ]
        self.live: list[int | None] = [None] * len(table)
        live = self.live
        for e, i in zip(entries, rows, strict=True):
            live[i] = e
        heapify(entries)
        self.heap = entries
        rankings.members = None

    def first(self) -> int | None:
        """
        The column of the smallest live entry, or C{None}; stale entries above it go.
        """
        heap, live, mask = self.heap, self.live, self.rankings.mask
        while heap:
            top = heap[0]
            if live[top & mask] == top:
                return top & mask
            heappop(heap)
        return None


class Rankings:
    """
    One keyed policy's rankings under one set of ratios, one per flavor asked, caught up
    together from the table's change log.
    """

    def __init__(self, table: HostTable, policy, ratios: Mapping[str, float]) -> None:
        self.table = table
        self.policy = policy
        self.ratios = dict(ratios)
        self.ratio = ratio_key(ratios)
        self.shift = max(len(table), 1).bit_length()
        self.mask = (1 << self.shift) - 1
        self._limit = 2 * len(table) + 1024
        self.by_flavor: dict[tuple[int, int, int], Ranking] = {}
        # What _catch_up loops over, made again when a ranking is added or built.
        self.members: list[tuple] | None = None
        self.seen = table.changes

    @classmethod
    def of(cls, table: HostTable, policy, ratios: Mapping[str, float]) -> Rankings:
        """
        The rankings C{table} keeps for C{policy} under C{ratios}.
        """
        last = table.last_rankings
        if last is not None and last.policy is policy and last.ratios == ratios:
            return last  # the usual case: one policy and one set of ratios in force
        key = (id(policy), *ratio_key(ratios))
        kept = table.rankings.get(key)
        if kept is None or kept.policy is not policy:
            if len(table.rankings) >= _KEPT_RANKINGS:
                table.rankings.clear()
            kept = table.rankings[key] = cls(table, policy, ratios)
        table.last_rankings = kept
        return kept

    def first(self, request: Request) -> int | None:
        """
        The column of the PM to try first for C{request}: the smallest key, the lowest
        column among equals; C{None} if no PM can take it.

        @raise Unranked: a key was not finite; ask the policy's C{order}.
        """
        table = self.table
        start = self.seen - table._log_start
        if start < 0:
            self.seen = table.changes
            for ranking in self.by_flavor.values():
                ranking.build()
        elif start < len(table._log):
            self.seen = table._log_start + len(table._log)
            self._catch_up(table._log[start:])
        flavor = request.flavor
        ranking = self.by_flavor.get((flavor.cpu, flavor.ram, flavor.disk))
        if ranking is None:
            ranking = Ranking(self, request)
            self.by_flavor[ranking.wanted] = ranking
            self.members = None
        if not ranking.usable:
            raise Unranked()
        return ranking.first()

    def _catch_up(self, changed: list[int]) -> None:
        """
        For each flavor, a new entry for each PM in C{changed} that fits it now with
        another key than its live entry's; no live entry where it no longer fits.
        """
        table = self.table
        members = self.members
        if members is None:
            members = self.members = [
                (r.heap, r.live, r.key, *r.wanted, r) for r in self.by_flavor.values()
            ]
        shift = self.shift
        open_of, used_of, vms_of = table.open_of, table.used_of, table.vms_of
        capacity_of = table.capacity_of
        scales = table.scales(self.ratio)
        for i in changed:
            if not open_of[i]:
                for member in members:
                    member[1][i] = None
                continue
            found = scales.get(capacity_of[i])
            if found is None:
                found = table.scale_of(i, self.ratio)
            effective, inverse = found
            u = used_of[i]
            vms = vms_of[i]
            f0 = effective[0] - u[0]
            f1 = effective[1] - u[1]
            f2 = effective[2] - u[2]
            for heap, live, key, w0, w1, w2, ranking in members:
                if f0 >= w0 and f1 >= w1 and f2 >= w2:
                    k = key(effective, inverse, u, vms)
                    if k - k != 0.0:  # inf or nan
                        ranking.usable = False
                        k = 0.0
                    bits = _unpack(_pack(k))[0]
                    e = ((bits if bits >= 0 else -(bits & _MAGNITUDE)) << shift) | i
                    if live[i] != e:
                        live[i] = e
                        heappush(heap, e)
                else:
                    live[i] = None
        for member in members:
            if len(member[0]) > self._limit:
                member[-1].build()
