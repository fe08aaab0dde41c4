"""
Placement: the shared mechanism (room after overcommit, refusals) and every policy.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from vorchd.model import Flavor, Host, Resources
from vorchd.placement import candidates, free
from vorchd.policies import (
    IAllocationPolicy,
    Request,
    UnknownPolicy,
    builtin_policies,
    policy_named,
)

ONE = {"cpu": 1.0, "ram": 1.0, "disk": 1.0}

resources = st.builds(Resources, st.integers(0, 64), st.integers(0, 65536), st.integers(0, 2000))
hosts = st.lists(
    st.builds(
        Host,
        pmid=st.integers(1, 10**6),
        capacity=resources,
        used=resources,
        vms=st.integers(0, 50),
        up=st.booleans(),
        drained=st.booleans(),
    ),
    max_size=20,
    unique_by=lambda h: h.pmid,
)
flavors = st.builds(
    Flavor, st.integers(1, 9), st.integers(1, 16), st.integers(1, 8192), st.integers(1, 100)
)
ratios = st.fixed_dictionaries(
    {r: st.sampled_from([0.5, 1.0, 1.5, 4.0]) for r in ("cpu", "ram", "disk")}
)


NOTHING_USED = Resources()


def host(pmid, cpu=4, ram=4096, disk=100, used=NOTHING_USED, **kw):
    return Host(pmid, Resources(cpu, ram, disk), used, **kw)


def request(cpu=1, ram=512, disk=1):
    return Request(Flavor(1, cpu, ram, disk), 1, "vm")


class PlacementTests(SynchronousTestCase):
    def test_every_policy_provides_the_interface(self):
        """
        Every built-in policy provides IAllocationPolicy and is found by its own name.
        """
        for name, policy in builtin_policies().items():
            self.assertTrue(verifyObject(IAllocationPolicy, policy), name)
            self.assertIsNotNone(policy_named(name), name)

    def test_unknown_policy(self):
        """
        Asking for a policy that does not exist says which ones do.
        """
        try:
            policy_named("nope")
        except UnknownPolicy as e:
            self.assertIn("first-fit", str(e))
        else:
            self.fail("no error")

    @given(hosts, flavors, ratios, st.sampled_from(sorted(builtin_policies())))
    def test_never_ranks_a_host_without_room(self, fleet, flavor, ratio, name):
        """
        Whatever the fleet, request and ratios, every policy is only offered (and only
        ranks) hosts that are up, not drained and have room; every other host is refused
        with a reason; no host is both.
        """
        req = Request(flavor, 1, "vm")
        ranked, refused = candidates(policy_named(name), req, fleet, ratio)
        for h in ranked:
            original = next(x for x in fleet if x.pmid == h.pmid)
            self.assertTrue(original.up and not original.drained)
            self.assertTrue(free(original, ratio).covers(flavor.resources))
        self.assertTrue({h.pmid for h in ranked}.isdisjoint(refused))
        self.assertEqual({h.pmid for h in ranked} | set(refused), {h.pmid for h in fleet})
        self.assertTrue(all(refused.values()))

    @given(hosts, flavors)
    def test_first_fit_is_file_order(self, fleet, flavor):
        """
        first-fit tries the hosts with room in pm_file order.
        """
        ranked, _ = candidates(policy_named("first-fit"), Request(flavor, 1, "x"), fleet, ONE)
        self.assertEqual([h.pmid for h in ranked], sorted(h.pmid for h in ranked))

    def test_refusal_reasons(self):
        """
        A refused host says whether it is down, drained, or which resource is short.
        """
        fleet = [host(1, up=False), host(2, drained=True), host(3, ram=256), host(4)]
        ranked, refused = candidates(policy_named("first-fit"), request(), fleet, ONE)
        self.assertEqual([h.pmid for h in ranked], [4])
        self.assertEqual(refused[1], "down")
        self.assertEqual(refused[2], "drained")
        self.assertEqual(refused[3], "no room for ram (512 wanted, 256 free)")

    def test_overcommit_ratio(self):
        """
        A ratio of 2 lets a host hand out twice its capacity, and no more.
        """
        full = host(1, cpu=4, used=Resources(4, 0, 0))
        ratio = {**ONE, "cpu": 2.0}
        self.assertEqual(free(full, ratio), Resources(4, 4096, 100))
        self.assertTrue(candidates(policy_named("first-fit"), request(cpu=4), [full], ratio)[0])
        self.assertFalse(candidates(policy_named("first-fit"), request(cpu=5), [full], ratio)[0])
