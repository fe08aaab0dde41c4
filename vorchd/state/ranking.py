"""
A keyed policy's first choice for one flavor, kept up to date as the fleet changes, so
that a decision costs about the same for ten PMs as for ten thousand.

A L{Ranking} holds, for one L{IKeyedPolicy}, one flavor's resources and one set of
ratios, the PMs of a L{HostTable} that can take the flavor (by the room rule) in a heap
of C{(key, column, version)}. When it is asked, it first reads the table's change log
from where it stopped: each PM changed since gets its key worked out again
(L{IKeyedPolicy.row_key}) and pushed if it fits; entries of an older version of a PM
are stale and are dropped when they reach the top. So a flavor that is not asked costs
nothing, and one that is costs a push per PM changed since it was last asked. A ranking
too far behind the log, or whose heap holds more stale entries than live ones, is built
again from the columns (L{IKeyedPolicy.keys}).

Its first choice is the smallest C{(key, column)}: exactly the first index of the
policy's own C{order} (ascending key, the lower column first among equals), as long as
C{row_key} gives bit for bit what C{keys} gives. A key that is not finite (a weight so
large that it overflows) cannot be kept in a heap in numpy's order: the ranking then
declines (L{Ranking.usable} false) and placement uses C{order}.

@see: L{vorchd.placement.ranked}, which asks it for the first choice.
"""

from __future__ import annotations

import math
from heapq import heapify, heappop, heappush

import numpy as np

from vorchd.policies import Candidates, Request
from vorchd.state.table import _KEPT_RANKINGS, HostTable, ratio_key


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
        wanted = request.flavor.resources
        self.wanted = (int(wanted.cpu), int(wanted.ram), int(wanted.disk))
        self.key = policy.row_key(request)
        self.usable = True
        self._build()

    @classmethod
    def of(cls, table: HostTable, policy, request: Request, ratios) -> Ranking:
        """
        The ranking C{table} keeps for C{policy}, C{request}'s flavor resources and
        C{ratios}, made the first time it is asked for.
        """
        wanted = request.flavor.resources
        ratio = ratio_key(ratios)
        key = (id(policy), wanted.cpu, wanted.ram, wanted.disk, ratio)
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
        keys = np.asarray(self.policy.keys(self.request, columns))[rows]
        if keys.dtype.kind == "f" and not np.isfinite(keys).all():
            self.usable = False
        version = table.version
        rows = rows.tolist()
        self.heap = list(zip(keys.tolist(), rows, [version[i] for i in rows], strict=True))
        heapify(self.heap)
        # The version each column was last pushed (or judged not to fit) at.
        self.pushed = list(version)
        self.seen = table.changes
        self._limit = 2 * len(table) + 1024

    def first(self) -> int | None:
        """
        The column of the PM to try first (the smallest key, the lowest column among
        equals), or C{None} if no PM can take the flavor. Check L{usable} after.
        """
        table = self.table
        changed = table.changed_since(self.seen)
        if changed is None:
            self._build()
        elif changed:
            self.seen = table.changes
            self._catch_up(changed)
        heap = self.heap
        version = table.version
        while heap:
            top = heap[0]
            if version[top[1]] == top[2]:
                return top[1]
            heappop(heap)
        return None

    def _catch_up(self, changed: list[int]) -> None:
        """
        Push the current key of each PM in C{changed} that fits now.
        """
        table = self.table
        heap, pushed, key = self.heap, self.pushed, self.key
        version, open_of, used_of, vms_of = (
            table.version,
            table.open_of,
            table.used_of,
            table.vms_of,
        )
        capacity_of = table.capacity_of
        scales = table.scales(self.ratio)
        w0, w1, w2 = self.wanted
        for i in changed:
            v = version[i]
            if pushed[i] == v:
                continue
            pushed[i] = v
            if not open_of[i]:
                continue
            capacity = capacity_of[i]
            found = scales.get(capacity)
            if found is None:
                found = table.scale_of(i, self.ratio)
            effective, inverse = found
            u = used_of[i]
            if (
                effective[0] - u[0] >= w0
                and effective[1] - u[1] >= w1
                and effective[2] - u[2] >= w2
            ):
                k = key(effective, inverse, u, vms_of[i])
                if not math.isfinite(k):
                    self.usable = False
                heappush(heap, (k, i, v))
        if len(heap) > self._limit:
            self._build()
