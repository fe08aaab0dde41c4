"""
The placement table's answer to "where does this fit", kept up to date a row at a time,
against the room rule worked out here on plain integers for every PM.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vorchd.model import Resources
from vorchd.state.table import HostTable

PMIDS = list(range(1, 9))
amounts = st.integers(0, 40)
resources = st.builds(Resources, amounts, amounts, amounts)
ratios = st.sampled_from([(1.0, 1.0, 1.0), (1.5, 1.0, 2.0), (0.5, 3.0, 1.0)])
change = st.tuples(
    st.sampled_from(PMIDS),
    st.sampled_from(["capacity", "used", "up", "drained"]),
    resources,
    st.booleans(),
)


def room_rule(pm: dict, wanted: Resources, ratio: tuple[float, ...]) -> bool:
    """
    Whether C{wanted} fits PM C{pm}: open, and for each resource used + wanted <=
    floor(capacity * ratio).
    """
    if not pm["up"] or pm["drained"]:
        return False
    names = ("cpu", "ram", "disk")
    return all(
        getattr(pm["used"], r) + getattr(wanted, r)
        <= math.floor(getattr(pm["capacity"], r) * ratio[i])
        for i, r in enumerate(names)
    )


class FitsTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(change, max_size=40),
        st.lists(st.tuples(resources, ratios), min_size=1, max_size=4),
    )
    def test_fits_follows_every_change(self, changes, asked):
        """
        Asked before, between and after any changes, fits() answers the room rule for
        every PM; an answer the caller holds does not change under it.
        """
        table = HostTable(PMIDS)
        pms = {
            p: {"capacity": Resources(), "used": Resources(), "up": False, "drained": False}
            for p in PMIDS
        }

        def check():
            for wanted, ratio in asked:
                named = dict(zip(("cpu", "ram", "disk"), ratio, strict=True))
                got = table.fits(wanted, named)
                expected = [room_rule(pms[p], wanted, ratio) for p in PMIDS]
                self.assertEqual(got.tolist(), expected)

        check()
        held = table.fits(asked[0][0], dict(zip(("cpu", "ram", "disk"), asked[0][1], strict=True)))
        before = held.tolist()
        for pmid, what, amount, flag in changes:
            if what in ("capacity", "used"):
                pms[pmid][what] = amount
                table.set(pmid, **{what: amount})
            else:
                pms[pmid][what] = flag
                table.set(pmid, **{what: flag})
            check()
        self.assertEqual(held.tolist(), before)
