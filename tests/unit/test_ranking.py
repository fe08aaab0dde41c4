"""
The rankings a host table keeps for keyed policies (vorchd.state.ranking) choose exactly
the PM the policy's own vectorized order puts first, over generated fleets of mixed
sizes under overcommit ratios other than 1, through any sequence of placements, frees
and changes of capacity, reach and drain: the kept index changes the cost of a decision,
never the decision, and never breaks the room rule.
"""

from __future__ import annotations

import math
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from vorchd.model import RESOURCES, Flavor, Resources
from vorchd.placement import chosen, ranked
from vorchd.policies import Candidates, IKeyedPolicy, Request, policy_named
from vorchd.policies.builtin import Weighted, round12
from vorchd.state.model import FleetState
from vorchd.state.ranking import ordered, ordered_column
from vorchd.state.table import HostTable

KEYED = ["best-fit", "first-fit", "least-vms", "weighted", "worst-fit"]

# PM sizes a fleet mixes: (cpu, ram MiB, disk GiB).
CLASSES = [(8, 16384, 100), (16, 65536, 500), (32, 131072, 1000), (64, 262144, 2000), (3, 5000, 7)]
FLAVORS = [
    Flavor(1, 1, 2048, 20),
    Flavor(2, 2, 4096, 40),
    Flavor(3, 4, 8192, 80),
    Flavor(4, 8, 16384, 160),
    Flavor(5, 3, 3000, 5),
]

ratios_strategy = st.fixed_dictionaries(
    {r: st.sampled_from([0.75, 1.0, 1.5, 2.0, 3.0]) for r in RESOURCES}
)
weights_strategy = st.fixed_dictionaries(
    {r: st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.5, -0.3]) for r in RESOURCES}
)
operation = st.tuples(
    st.sampled_from(["place", "place", "place", "free", "free", "up", "drain", "resize", "used"]),
    st.integers(0, 10**6),
    st.integers(0, len(FLAVORS) - 1),
    st.booleans(),
)


def _half(n: int) -> float:
    """
    A number of 12 decimals plus half a unit of the 13th: where rounding could differ.
    """
    return n / 1e12 + 0.5e-12


def _hex(value):
    return value.hex() if isinstance(value, float) else value


def room_rule(pm: dict, wanted: Resources, ratios: dict) -> bool:
    """
    Whether C{wanted} fits C{pm}, worked out here: up, not drained, and for each resource
    used + wanted <= floor(capacity * ratio).
    """
    return (
        pm["up"]
        and not pm["drained"]
        and all(
            pm["used"][k] + getattr(wanted, r) <= math.floor(pm["capacity"][k] * ratios[r])
            for k, r in enumerate(RESOURCES)
        )
    )


def vectorized_first(policy, request: Request, table: HostTable, ratios: dict, fits) -> int | None:
    """
    The first column of C{policy.order} over the table's columns, as placement ranked
    before rankings were kept (every PM's key, then the smallest).
    """
    columns = Candidates(
        table.pmid, table.effective(ratios), table.inverse(ratios), table.used, table.vms, fits
    )
    return next((i for i in policy.order(request, columns) if fits[i]), None)


class Fleet:
    """
    A host table and, beside it, the same PMs as plain numbers for the room rule.
    """

    def __init__(self, classes: list[int], ratios: dict):
        self.ratios = ratios
        self.state = FleetState()
        self.table = self.state.table = HostTable(range(1, len(classes) + 1))
        self.pms = {}
        for pmid, c in enumerate(classes, 1):
            self.pms[pmid] = {
                "capacity": CLASSES[c],
                "used": (0, 0, 0),
                "vms": 0,
                "up": True,
                "drained": False,
            }
            self.table.set(pmid, capacity=Resources(*CLASSES[c]), up=True, drained=False)

    def apply(self, kind: str, which: int, f: int, flag: bool) -> None:
        pmid = which % len(self.pms) + 1
        pm = self.pms[pmid]
        flavor = FLAVORS[f]
        amount = (flavor.cpu, flavor.ram, flavor.disk)
        i = self.table.row[pmid]
        if kind == "place":
            if room_rule(pm, flavor.resources, self.ratios):
                pm["used"] = tuple(u + a for u, a in zip(pm["used"], amount, strict=True))
                pm["vms"] += 1
                self.table.add(i, amount, 1)
        elif kind == "free":
            if pm["vms"] and all(u >= a for u, a in zip(pm["used"], amount, strict=True)):
                pm["used"] = tuple(u - a for u, a in zip(pm["used"], amount, strict=True))
                pm["vms"] -= 1
                self.table.add(i, tuple(-a for a in amount), -1)
        elif kind == "up":
            pm["up"] = flag
            self.table.set(pmid, up=flag)
        elif kind == "drain":
            pm["drained"] = flag
            self.table.set(pmid, drained=flag)
        elif kind == "resize":
            pm["capacity"] = CLASSES[(which // 7) % len(CLASSES)]
            self.table.set(pmid, capacity=Resources(*pm["capacity"]))
        else:  # "used": as the read model sets it, beyond what the ratios allow at times
            pm["used"] = tuple(
                max(0, u + (a if flag else -a)) for u, a in zip(pm["used"], amount, strict=True)
            )
            pm["vms"] = max(0, pm["vms"] + (1 if flag else -1))
            self.table.set(pmid, used=Resources(*pm["used"]), vms=pm["vms"])

    def check(self, test, policies: dict) -> None:
        """
        For every policy and flavor: the kept ranking's first choice is the vectorized
        order's first, and has room by the room rule; none only when no PM has room.
        """
        for name, policy in policies.items():
            for flavor in FLAVORS:
                request = Request(flavor, 1, "x")
                fits = np.array(
                    [room_rule(self.pms[p], flavor.resources, self.ratios) for p in self.pms]
                )
                expected = vectorized_first(policy, request, self.table, self.ratios, fits)
                got = chosen(policy, request, self.state, self.ratios)
                want = None if expected is None else int(self.table.pmid[expected])
                test.assertEqual(got, want, f"{name}, flavor {flavor.tid}")
                if got is not None:
                    test.assertTrue(room_rule(self.pms[got], flavor.resources, self.ratios))


def keyed_policies(weights: dict) -> dict:
    policies = {name: policy_named(name) for name in KEYED}
    policies["weighted"] = Weighted(weights)
    return policies


class RankingTests(SynchronousTestCase):
    def test_keyed_policies_provide_the_interface(self):
        """
        best-fit, worst-fit, weighted, least-vms and first-fit provide IKeyedPolicy;
        round-robin and random (whose order is not by a key of each PM) do not.
        """
        for name in KEYED:
            self.assertTrue(verifyObject(IKeyedPolicy, policy_named(name)), name)
        for name in ("round-robin", "random"):
            self.assertFalse(IKeyedPolicy.providedBy(policy_named(name)), name)

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(st.integers(0, len(CLASSES) - 1), min_size=1, max_size=24),
        ratios_strategy,
        weights_strategy,
        st.lists(operation, max_size=60),
    )
    def test_first_choice_is_the_vectorized_orders(self, classes, ratios, weights, operations):
        """
        Asked before, between and after any placements, frees and changes, every keyed
        built-in policy's first choice is the first PM of its own vectorized order, with
        room by the room rule.
        """
        fleet = Fleet(classes, ratios)
        policies = keyed_policies(weights)
        fleet.check(self, policies)
        for op in operations:
            fleet.apply(*op)
            fleet.check(self, policies)

    @settings(max_examples=100, deadline=None)
    @given(
        st.lists(st.integers(0, len(CLASSES) - 1), min_size=1, max_size=16),
        ratios_strategy,
        weights_strategy,
        st.lists(operation, max_size=30),
    )
    def test_ranked_is_the_vectorized_order(self, classes, ratios, weights, operations):
        """
        With nothing changing while it is read, ranked() gives every keyed policy's whole
        vectorized order (the daemon reads on past the first when a claim loses a race).
        """
        fleet = Fleet(classes, ratios)
        for op in operations:
            fleet.apply(*op)
        for policy in keyed_policies(weights).values():
            for flavor in FLAVORS:
                request = Request(flavor, 1, "x")
                chosen(policy, request, fleet.state, ratios)  # a ranking kept
                table = fleet.table
                fits = table.fit_mask((flavor.cpu, flavor.ram, flavor.disk), ratios)
                columns = Candidates(
                    table.pmid,
                    table.effective(ratios),
                    table.inverse(ratios),
                    table.used,
                    table.vms,
                    fits,
                )
                expected = [int(table.pmid[i]) for i in policy.order(request, columns)]
                self.assertEqual(list(ranked(policy, request, fleet.state, ratios)), expected)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(CLASSES),
                st.tuples(st.integers(0, 70), st.integers(0, 300000), st.integers(0, 2100)),
                st.integers(0, 50),
            ),
            min_size=1,
            max_size=30,
        ),
        ratios_strategy,
        weights_strategy,
        st.sampled_from(FLAVORS),
    )
    def test_row_key_is_keys_bit_for_bit(self, pms, ratios, weights, flavor):
        """
        Each keyed policy's key of one PM, worked out from Python numbers, is exactly
        (bit for bit) the value its vectorized keys() gives that PM.
        """
        table = HostTable(range(1, len(pms) + 1))
        for pmid, (capacity, used, vms) in enumerate(pms, 1):
            table.set(pmid, capacity=Resources(*capacity), used=Resources(*used), vms=vms)
        columns = Candidates(
            table.pmid,
            table.effective(ratios),
            table.inverse(ratios),
            table.used,
            table.vms,
            np.ones(len(pms), dtype=bool),
        )
        request = Request(flavor, 1, "x")
        for name, policy in keyed_policies(weights).items():
            keys = policy.keys(request, columns).tolist()
            key = policy.row_key(request)
            for i in range(len(pms)):
                effective = tuple(int(x) for x in columns.capacity[:, i])
                inverse = tuple(float(x) for x in columns.inverse[:, i])
                used = tuple(int(x) for x in columns.used[:, i])
                got = key(effective, inverse, used, int(columns.vms[i]))
                self.assertEqual(got.hex() if isinstance(got, float) else got, _hex(keys[i]), name)

    @settings(max_examples=300, deadline=None)
    @given(st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-(10**13), 10**13).map(_half))
    def test_round12_is_numpys(self, x):
        """
        round12 rounds exactly as np.round(x, 12), halves included.
        """
        self.assertEqual(round12(x).hex(), float(np.round(np.float64(x), 12)).hex())

    @settings(max_examples=500, deadline=None)
    @given(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(allow_nan=False, allow_infinity=False),
    )
    def test_ordered_keeps_the_order_of_floats(self, a, b):
        """
        The ints a ranking's heap holds order as the keys do, -0.0 equal to 0.0, one key
        at a time as for a whole column.
        """
        self.assertEqual(ordered(a) < ordered(b), a < b)
        self.assertEqual(ordered(a) == ordered(b), a == b)
        self.assertEqual(ordered_column(np.array([a, b])).tolist(), [ordered(a), ordered(b)])

    def test_long_runs_rebuild_and_agree(self):
        """
        Far more changes than the table's change log keeps, with some flavors left unasked
        for thousands of them: rankings that fell behind are built again and still agree.
        """
        rng = random.Random(5)
        ratios = {"cpu": 1.5, "ram": 1.0, "disk": 2.0}
        fleet = Fleet([rng.randrange(len(CLASSES)) for _ in range(40)], ratios)
        policies = keyed_policies({"cpu": 1.0, "ram": -0.5, "disk": 0.25})
        for step in range(12000):
            kind = rng.choice(["place", "place", "free", "free", "up", "drain"])
            fleet.apply(
                kind, rng.randrange(10**6), rng.randrange(len(FLAVORS)), rng.random() < 0.9
            )
            if step % 3000 == 2999 or step < 50 or rng.random() < 0.01:
                fleet.check(self, policies)
            elif rng.random() < 0.3:
                # Only the smallest flavor asked often: the others fall behind the log.
                request = Request(FLAVORS[0], 1, "x")
                for name, policy in policies.items():
                    fits = np.array(
                        [room_rule(fleet.pms[p], FLAVORS[0].resources, ratios) for p in fleet.pms]
                    )
                    expected = vectorized_first(policy, request, fleet.table, ratios, fits)
                    want = None if expected is None else int(fleet.table.pmid[expected])
                    self.assertEqual(chosen(policy, request, fleet.state, ratios), want, name)
        fleet.check(self, policies)

    def test_later_candidates_after_a_change(self):
        """
        When the PMs change between the first candidate and the next (a claim lost a
        race), the rest are the vectorized order over the table as it is then, without the
        first.
        """
        fleet = Fleet([0, 1, 2, 1, 0], {"cpu": 1.0, "ram": 1.0, "disk": 1.0})
        policy = policy_named("best-fit")
        request = Request(FLAVORS[1], 1, "x")
        candidates = ranked(policy, request, fleet.state, fleet.ratios)
        first = next(candidates)
        self.assertEqual(first, 1)  # the smallest PM has the least room left
        fleet.apply("place", 3, 3, True)  # PM 4 (the second smallest) fills up some
        table = fleet.table
        fits = table.fit_mask((2, 4096, 40), fleet.ratios)
        columns = Candidates(
            table.pmid,
            table.effective(fleet.ratios),
            table.inverse(fleet.ratios),
            table.used,
            table.vms,
            fits,
        )
        expected = [int(table.pmid[i]) for i in policy.order(request, columns)]
        expected.remove(first)
        self.assertEqual(list(candidates), expected)

    def test_keys_that_overflow_fall_back_to_the_order(self):
        """
        A weight so large that a key overflows to infinity: the ranking declines, and the
        policy's own order decides, as before.
        """
        fleet = Fleet([0, 1, 2], {"cpu": 1.0, "ram": 1.0, "disk": 1.0})
        policy = Weighted({"cpu": 1e308, "ram": 1e308, "disk": 0.0})
        request = Request(FLAVORS[0], 1, "x")
        fits = fleet.table.fit_mask((1, 2048, 20), fleet.ratios)
        with np.errstate(over="ignore", invalid="ignore"):
            expected = vectorized_first(policy, request, fleet.table, fleet.ratios, fits)
            got = chosen(policy, request, fleet.state, fleet.ratios)
        self.assertEqual(got, int(fleet.table.pmid[expected]))
