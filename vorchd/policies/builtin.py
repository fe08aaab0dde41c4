"""
The allocation policies that ship with vorchd.

Every policy is handed only hosts that can take the request, each with its
C{capacity} already scaled by the overcommit ratios, so the room a host has is
C{capacity - used} and the room it would have left is that minus the request. No
policy applies the ratios again, does I/O or looks at a clock.

Each ranks L{Host} objects (C{rank}) and columns of numbers (C{order}, L{IIndexedPolicy})
alike. best-fit, worst-fit, weighted, least-vms and first-fit order by a key of each PM
alone and provide L{IKeyedPolicy} too (C{keys} for a column, C{row_key} for one PM, bit
for bit the same: L{weighted_room_columns} and L{weighted_room_key}), so that the
mechanism keeps their first choice up to date as PMs change. round-robin scans the fits
column from its position; random draws PMs until one with room comes up.

Option keys of the C{[allocation]} section read here:

  - C{weights} (for C{weighted}): comma-separated C{resource:weight} pairs, for
    example C{weights = cpu:1.0, ram:1.0, disk:0.5}. The resources are C{cpu},
    C{ram} and C{disk}; a resource not listed weighs 0. A host's score is the sum
    over resources of C{weight * free / capacity}, with C{free} the room left after
    placing the request (a resource with no capacity counts 0); the highest score is
    tried first, ties in pm_file order. Positive weights spread VMs over the emptiest
    hosts, negative weights pack them onto the fullest. Unset or empty:
    C{cpu:1.0, ram:1.0, disk:1.0}.
  - C{seed} (for C{random}): an integer. Given, the daemon tries hosts in the same
    pseudo-random order each time it is started and sent the same requests; unset or
    empty, the order differs from run to run.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction

import numpy as np
from zope.interface import implementer

from vorchd.model import RESOURCES, Host, Resources
from vorchd.policies import Candidates, IAllocationPolicy, IIndexedPolicy, IKeyedPolicy, Request

WEIGHTS_EXAMPLE = "cpu:1.0, ram:1.0, disk:0.5"


def by_pmid(hosts: Sequence[Host]) -> list[Host]:
    """
    C{hosts} in pm_file order.
    """
    return sorted(hosts, key=lambda h: h.pmid)


def room_left(request: Request, host: Host) -> Resources:
    """
    What C{host} would have free once C{request} is placed on it.
    """
    return host.capacity - host.used - request.flavor.resources


def weighted_room(request: Request, host: Host, weights: Mapping[str, float]) -> Fraction:
    """
    The sum over resources of C{weight * left / capacity}, exactly (so that equal
    hosts tie exactly); a resource with no capacity counts 0.
    """
    left = room_left(request, host)
    total = Fraction(0)
    for r, weight in weights.items():
        capacity = getattr(host.capacity, r)
        if capacity > 0 and weight:
            total += Fraction(weight) * Fraction(getattr(left, r), capacity)
    return total


EVERY_RESOURCE: Mapping[str, float] = {r: 1.0 for r in RESOURCES}


def weighted_room_columns(
    request: Request, c: Candidates, weights: Mapping[str, float]
) -> np.ndarray:
    """
    L{weighted_room} of every PM at once, rounded to 12 decimals so that equal PMs tie
    exactly as the exact sum does.
    """
    total = np.zeros(len(c.pmid), dtype=np.float64)
    for r, name in enumerate(RESOURCES):
        weight = float(weights.get(name, 0.0))
        if weight:
            left = c.capacity[r] - c.used[r] - getattr(request.flavor, name)
            total += weight * left * c.inverse[r]
    return np.round(total, 12)


def round12(total: float) -> float:
    """
    C{total} rounded to 12 decimals exactly as C{np.round(total, 12)} rounds a float64:
    multiplied by 10**12, rounded half to even, divided by 10**12 (so a PM's key worked
    out alone is bit for bit the one L{weighted_room_columns} gives it).
    """
    scaled = total * 1e12
    try:
        whole = round(scaled)
    except (OverflowError, ValueError):  # inf or nan: numpy leaves it as it is
        return scaled / 1e12
    # round() gives an int, which has no -0: numpy's rint keeps the sign of a zero.
    return whole / 1e12 if whole else math.copysign(0.0, scaled)


def weighted_room_key(
    request: Request, weights: Mapping[str, float], sign: int = 1
) -> Callable[[Sequence[int], Sequence[float], Sequence[int], int], float]:
    """
    L{weighted_room_columns} of one PM (times C{sign}, 1 or -1), from its effective
    capacity, inverse and used room (cpu, ram, disk) as Python numbers: the row key of
    best-fit, worst-fit and weighted (L{IKeyedPolicy.row_key}). The same operations in
    the same order as the columns' (C{total += weight * left * inverse} per resource,
    then L{round12}), so the same float.
    """
    terms = []
    for r, name in enumerate(RESOURCES):
        weight = float(weights.get(name, 0.0))
        if weight:
            terms.append((r, weight, getattr(request.flavor, name)))
    terms = tuple(terms)

    if len(terms) == 3:
        # Every resource weighed (the default): the same sums, written out, as a create
        # works out one of these per flavor for each PM that changed.
        (_, w0, f0), (_, w1, f1), (_, w2, f2) = terms

        def key(effective, inverse, used, vms) -> float:
            total = 0.0 + w0 * (effective[0] - used[0] - f0) * inverse[0]
            total = total + w1 * (effective[1] - used[1] - f1) * inverse[1]
            total = total + w2 * (effective[2] - used[2] - f2) * inverse[2]
            scaled = total * 1e12  # round12, written in
            try:
                whole = round(scaled)
            except (OverflowError, ValueError):
                return sign * (scaled / 1e12)
            return sign * (whole / 1e12 if whole else math.copysign(0.0, scaled))

        return key

    def key(effective, inverse, used, vms) -> float:
        total = 0.0
        for r, weight, wanted in terms:
            total += weight * (effective[r] - used[r] - wanted) * inverse[r]
        return sign * round12(total)

    return key


def _vms_key(effective, inverse, used, vms) -> int:
    return vms


def _no_key(effective, inverse, used, vms) -> int:
    return 0


def smallest_first(key: np.ndarray, fits: np.ndarray) -> Iterator[int]:
    """
    The indices where C{fits}, by ascending C{key}, the lower index first among equals,
    lazily: each step is one pass over the keys, and a create seldom needs more than one.
    """
    key = np.where(fits, key, np.inf)
    for _ in range(int(np.count_nonzero(fits))):
        i = int(np.argmin(key))
        yield i
        key[i] = np.inf


def first_true(mask: np.ndarray, start: int) -> int | None:
    """
    The lowest index at or after C{start} where C{mask} is true, or C{None}: a scan that
    stops there, not a list of every true index.
    """
    if start >= len(mask):
        return None
    i = start + int(mask[start:].argmax())
    return i if mask[i] else None


DRAWS = 16
"""How many PMs C{random} draws among all, at most, for one with room to try first."""


def parse_weights(text: str | None) -> dict[str, float]:
    """
    The weights of a C{weights} option: C{"cpu:1.0, ram:1.0, disk:0.5"} gives
    C{{"cpu": 1.0, "ram": 1.0, "disk": 0.5}}; a resource not listed weighs 0.
    C{None} or blank gives the default, 1.0 for every resource.

    @raise ValueError: the text is malformed; the message says where and how.
    """
    if text is None or not text.strip():
        return dict(EVERY_RESOURCE)
    weights = dict.fromkeys(RESOURCES, 0.0)
    seen: set[str] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        resource, colon, number = (part.strip() for part in item.partition(":"))
        if not colon or not resource or not number:
            raise ValueError(
                f"weights: {item!r} is not resource:weight (for example {WEIGHTS_EXAMPLE!r})"
            )
        resource = resource.lower()
        if resource not in weights:
            raise ValueError(
                f"weights: unknown resource {resource!r} in {item!r}"
                f" (known: {', '.join(RESOURCES)})"
            )
        if resource in seen:
            raise ValueError(f"weights: {resource} is given more than once")
        try:
            weight = float(number)
        except ValueError:
            raise ValueError(f"weights: {number!r} in {item!r} is not a number") from None
        if not math.isfinite(weight):
            raise ValueError(f"weights: {number!r} in {item!r} is not a finite number")
        seen.add(resource)
        weights[resource] = weight
    return weights


def parse_seed(text: str | None) -> int | None:
    """
    The seed of a C{seed} option, or C{None} if it is unset or blank.

    @raise ValueError: it is not an integer.
    """
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"seed: {text.strip()!r} is not an integer") from None


@implementer(IKeyedPolicy)
class FirstFit:
    """
    The PM listed first in the pm_file that has room: simple and predictable.
    """

    name = "first-fit"

    def rank(self, request: Request, hosts: Sequence[Host]) -> Sequence[Host]:
        return by_pmid(hosts)

    def order(self, request: Request, candidates: Candidates) -> Iterator[int]:
        return iter(candidates.rows())

    def keys(self, request: Request, candidates: Candidates) -> np.ndarray:
        return np.zeros(len(candidates.pmid), dtype=np.int64)

    def row_key(self, request: Request):
        return _no_key


@implementer(IKeyedPolicy)
class BestFit:
    """
    Pack: the PM with the least room left after placing the request first, measured
    as the sum of the fractions of cpu, ram and disk left; ties in pm_file order.
    Keeps the emptiest PMs free for large flavors.
    """

    name = "best-fit"

    def rank(self, request: Request, hosts: Sequence[Host]) -> Sequence[Host]:
        return sorted(hosts, key=lambda h: (weighted_room(request, h, EVERY_RESOURCE), h.pmid))

    def order(self, request: Request, candidates: Candidates) -> Iterator[int]:
        return smallest_first(self.keys(request, candidates), candidates.fits)

    def keys(self, request: Request, candidates: Candidates) -> np.ndarray:
        return weighted_room_columns(request, candidates, EVERY_RESOURCE)

    def row_key(self, request: Request):
        return weighted_room_key(request, EVERY_RESOURCE)


@implementer(IKeyedPolicy)
class WorstFit:
    """
    Spread: the PM with the most room left after placing the request first, by the
    same measure as best-fit; ties in pm_file order. Keeps the load even.
    """

    name = "worst-fit"

    def rank(self, request: Request, hosts: Sequence[Host]) -> Sequence[Host]:
        return sorted(hosts, key=lambda h: (-weighted_room(request, h, EVERY_RESOURCE), h.pmid))

    def order(self, request: Request, candidates: Candidates) -> Iterator[int]:
        return smallest_first(self.keys(request, candidates), candidates.fits)

    def keys(self, request: Request, candidates: Candidates) -> np.ndarray:
        return -weighted_room_columns(request, candidates, EVERY_RESOURCE)

    def row_key(self, request: Request):
        return weighted_room_key(request, EVERY_RESOURCE, -1)


@implementer(IIndexedPolicy)
class RoundRobin:
    """
    Each request starts at the PM after the one the previous request started at, in
    pm_file order, wrapping around and skipping PMs without room. The position is
    this instance's: a new instance starts at the first PM.
    """

    name = "round-robin"

    def __init__(self) -> None:
        self.last: int | None = None

    def rank(self, request: Request, hosts: Sequence[Host]) -> Sequence[Host]:
        ordered = by_pmid(hosts)
        if self.last is not None:
            start = bisect_right([h.pmid for h in ordered], self.last)
            ordered = ordered[start:] + ordered[:start]
        if ordered:
            self.last = ordered[0].pmid
        return ordered

    def order(self, request: Request, candidates: Candidates) -> Iterator[int]:
        # The first PM with room after the last start, found by scanning the fits column
        # from there (no list of every PM with room), then the others in turn.
        fits = candidates.fits
        after = 0
        if self.last is not None:
            after = int(candidates.pmid.searchsorted(self.last, side="right"))
        first = first_true(fits, after)
        if first is None:
            first = first_true(fits, 0)
        if first is None:
            return iter(())
        self.last = int(candidates.pmid[first])
        return self._from(first, candidates)

    @staticmethod
    def _from(first: int, candidates: Candidates) -> Iterator[int]:
        yield first
        rows = candidates.rows()
        k = int(rows.searchsorted(first))
        yield from rows[k + 1 :].tolist()
        yield from rows[:k].tolist()


@implementer(IIndexedPolicy)
class RandomOrder:
    """
    The PMs with room in a random order, from a generator this instance owns: with a
    C{seed} the same requests give the same orders, without one each run differs.
    """

    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._random = random.Random(seed)

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> RandomOrder:
        """
        A policy seeded by the C{seed} option.

        @raise ValueError: C{seed} is not an integer.
        """
        return cls(parse_seed(options.get("seed")))

    def rank(self, request: Request, hosts: Sequence[Host]) -> Sequence[Host]:
        # Sorted first, so the order depends on the hosts offered, not the order given.
        ordered = by_pmid(hosts)
        self._random.shuffle(ordered)
        return ordered

    def order(self, request: Request, candidates: Candidates) -> Iterator[int]:
        # A uniformly random order too, with a seed reproducible, though not the same
        # sequence as rank's shuffle. The first PM is drawn among all of them until one
        # with room comes up (uniform among those with room), up to DRAWS times, so that
        # a create costs the same whatever the fleet's size; failing that, and for the
        # rest, a Fisher-Yates shuffle of those with room drawn lazily from the front.
        fits = candidates.fits
        n = len(fits)
        if n:
            for _ in range(DRAWS):
                i = self._random.randrange(n)
                if fits[i]:
                    return self._after(i, candidates)
        return self._draw(candidates.rows())

    def _after(self, first: int, candidates: Candidates) -> Iterator[int]:
        yield first
        rows = candidates.rows()
        yield from self._draw(rows[rows != first])

    def _draw(self, rows) -> Iterator[int]:
        n = len(rows)
        taken: dict[int, int] = {}
        for i in range(n):
            j = i + self._random.randrange(n - i)
            yield int(rows[taken.get(j, j)])
            taken[j] = taken.get(i, i)


@implementer(IKeyedPolicy)
class LeastVMs:
    """
    The PM running the fewest VMs first, whatever their size; ties in pm_file order.
    """

    name = "least-vms"

    def rank(self, request: Request, hosts: Sequence[Host]) -> Sequence[Host]:
        return sorted(hosts, key=lambda h: (h.vms, h.pmid))

    def order(self, request: Request, candidates: Candidates) -> Iterator[int]:
        return smallest_first(self.keys(request, candidates), candidates.fits)

    def keys(self, request: Request, candidates: Candidates) -> np.ndarray:
        return candidates.vms

    def row_key(self, request: Request):
        return _vms_key


@implementer(IKeyedPolicy)
class Weighted:
    """
    Like Nova's weighers: the PM with the highest sum of C{weight * free / capacity}
    over the resources first, with C{free} what is left after placing the request;
    ties in pm_file order. Positive weights spread, negative weights pack.
    """

    name = "weighted"

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        weights = EVERY_RESOURCE if weights is None else weights
        unknown = set(weights) - set(RESOURCES)
        if unknown:
            raise ValueError(
                f"weights: unknown resource {', '.join(sorted(unknown))}"
                f" (known: {', '.join(RESOURCES)})"
            )
        self.weights = {r: float(weights.get(r, 0.0)) for r in RESOURCES}

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> Weighted:
        """
        A policy weighing as the C{weights} option says.

        @raise ValueError: C{weights} is malformed.
        """
        return cls(parse_weights(options.get("weights")))

    def rank(self, request: Request, hosts: Sequence[Host]) -> Sequence[Host]:
        return sorted(hosts, key=lambda h: (-weighted_room(request, h, self.weights), h.pmid))

    def order(self, request: Request, candidates: Candidates) -> Iterator[int]:
        return smallest_first(self.keys(request, candidates), candidates.fits)

    def keys(self, request: Request, candidates: Candidates) -> np.ndarray:
        return -weighted_room_columns(request, candidates, self.weights)

    def row_key(self, request: Request):
        return weighted_room_key(request, self.weights, -1)


BUILTIN: Mapping[str, Callable[[Mapping[str, str]], IAllocationPolicy]] = {
    FirstFit.name: lambda options: FirstFit(),
    BestFit.name: lambda options: BestFit(),
    WorstFit.name: lambda options: WorstFit(),
    RoundRobin.name: lambda options: RoundRobin(),
    RandomOrder.name: RandomOrder.from_options,
    LeastVMs.name: lambda options: LeastVMs(),
    Weighted.name: Weighted.from_options,
}
"""How to make each built-in policy from the C{[allocation]} options, by name."""
