"""
Why no PM took a request (vorchd.sim.measure.why_refused), against the reasons worked
out here PM by PM on plain integers, over generated fleets with PMs down and drained.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vorchd.model import RESOURCES, Resources
from vorchd.sim import measure
from vorchd.state.table import HostTable

amount = st.tuples(st.integers(0, 40), st.integers(0, 4096), st.integers(0, 100))
pm = st.tuples(amount, amount, st.booleans(), st.booleans())
ratios_strategy = st.fixed_dictionaries({r: st.sampled_from([0.5, 1.0, 2.0]) for r in RESOURCES})


def expected_reason(pms, wanted: Resources, ratios) -> str:
    """
    The reason by the definitions of measure's docstrings, one PM at a time.
    """
    open_pms = [(c, u) for c, u, up, drained in pms if up and not drained]
    if not open_pms:
        return measure.NO_OPEN_PM
    want = (wanted.cpu, wanted.ram, wanted.disk)

    def free(c, u, k):
        return math.floor(c[k] * ratios[RESOURCES[k]]) - u[k]

    short = [
        r
        for k, r in enumerate(RESOURCES)
        if not any(free(c, u, k) >= want[k] for c, u in open_pms)
    ]
    if short:
        return "+".join(short)
    if any(all(free(c, u, k) >= want[k] for k in range(3)) for c, u in open_pms):
        return measure.DECLINED
    return measure.FRAGMENTED


class WhyRefusedTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(pm, min_size=1, max_size=12), amount, ratios_strategy)
    def test_reason_is_the_definitions(self, pms, wanted, ratios):
        """
        No open PM, the resources no open PM has enough of, a request that fits some open
        PM (declined), or fragmented room: as worked out PM by PM.
        """
        table = HostTable(range(1, len(pms) + 1))
        for pmid, (capacity, used, up, drained) in enumerate(pms, 1):
            table.set(
                pmid,
                capacity=Resources(*capacity),
                used=Resources(*used),
                up=up,
                drained=drained,
            )
        wanted = Resources(*wanted)
        self.assertEqual(
            measure.why_refused(table, wanted, ratios), expected_reason(pms, wanted, ratios)
        )
