"""
Every built-in policy ranks the read model's columns (IIndexedPolicy.order) exactly as
it ranks Host objects (IAllocationPolicy.rank), over random fleets, requests and ratios:
the fast path changes the cost of a decision, never the decision. Random's draw is held
to what a random order must be instead.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vorchd.model import Flavor, Host, Resources
from vorchd.placement import candidates, ranked
from vorchd.policies import IIndexedPolicy, Request, policy_named
from vorchd.policies.builtin import BUILTIN
from vorchd.state.model import FleetState
from vorchd.state.table import HostTable

DETERMINISTIC = sorted(set(BUILTIN) - {"random"})

hosts_strategy = st.lists(
    st.builds(
        lambda cap, used, vms, up, drained: (cap, used, vms, up, drained),
        st.tuples(st.integers(0, 16), st.integers(0, 8192), st.integers(0, 100)),
        st.tuples(st.integers(0, 20), st.integers(0, 9000), st.integers(0, 110)),
        st.integers(0, 20),
        st.booleans(),
        st.booleans(),
    ),
    min_size=0,
    max_size=40,
)
ratios_strategy = st.fixed_dictionaries(
    {r: st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]) for r in ("cpu", "ram", "disk")}
)
flavor_strategy = st.builds(
    Flavor, st.just(1), st.integers(1, 4), st.integers(1, 2048), st.integers(1, 20)
)


def fleet(rows) -> tuple[FleetState, list[Host]]:
    state = FleetState()
    hosts = [
        Host(pmid, Resources(*cap), Resources(*used), vms, up, drained)
        for pmid, (cap, used, vms, up, drained) in enumerate(rows, 1)
    ]
    state.table = HostTable(h.pmid for h in hosts)
    for h in hosts:
        state.table.set(
            h.pmid, capacity=h.capacity, used=h.used, vms=h.vms, up=h.up, drained=h.drained
        )
    return state, hosts


class IndexedPolicyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(hosts_strategy, flavor_strategy, ratios_strategy, st.sampled_from(DETERMINISTIC))
    def test_order_is_rank(self, rows, flavor, ratios, name):
        state, hosts = fleet(rows)
        request = Request(flavor, 1, "x")
        fast, slow = policy_named(name), policy_named(name)
        self.assertTrue(IIndexedPolicy.providedBy(fast))
        for _ in range(3):  # round-robin moves on: the same way on both paths
            expected = [h.pmid for h in candidates(slow, request, hosts, ratios)[0]]
            self.assertEqual(list(ranked(fast, request, state, ratios)), expected)

    @settings(max_examples=200, deadline=None)
    @given(hosts_strategy, flavor_strategy, ratios_strategy, st.integers(0, 2**32))
    def test_random_draws_each_fitting_pm_once(self, rows, flavor, ratios, seed):
        state, hosts = fleet(rows)
        request = Request(flavor, 1, "x")
        policy = policy_named("random", {"seed": str(seed)})
        # Which PMs fit, by the room rule written out here (not placement's own).
        fit = sorted(
            h.pmid
            for h in hosts
            if h.up
            and not h.drained
            and all(
                getattr(h.used, r) + getattr(flavor, r)
                <= math.floor(getattr(h.capacity, r) * ratios[r])
                for r in ("cpu", "ram", "disk")
            )
        )
        drawn = list(ranked(policy, request, state, ratios))
        self.assertEqual(sorted(drawn), fit)
        # The same seed draws the same order.
        again = policy_named("random", {"seed": str(seed)})
        self.assertEqual(list(ranked(again, request, state, ratios)), drawn)
