"""
Allocation policies: the interface every policy keeps (built-in and third-party), what
each built-in policy does, its options, and how third-party policies are found.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import random
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import vorchd.plugins
from tests.unit.test_placement import flavors, hosts, ratios
from vorchd.model import Flavor, Host, Resources
from vorchd.placement import candidates
from vorchd.policies import (
    IAllocationPolicy,
    InvalidPolicy,
    Request,
    UnknownPolicy,
    available_policies,
    builtin_policies,
    policy_named,
)
from vorchd.policies.builtin import BUILTIN, Weighted, parse_weights, weighted_room
from vorchd.policies.discovery import PolicyWarning

ONE = {"cpu": 1.0, "ram": 1.0, "disk": 1.0}

EXAMPLE_PLUGIN = '''
"""
A third-party allocation policy: the PM with the highest id first.
"""

from zope.interface import implementer

from vorchd.policies import IAllocationPolicy


@implementer(IAllocationPolicy)
class ReversePmid:
    name = "{name}"

    def __init__(self, options=None):
        self.options = options

    def rank(self, request, hosts):
        return sorted(hosts, key=lambda h: -h.pmid)


reverse = ReversePmid()


def make(options):
    return ReversePmid(options)


not_a_policy = object()
'''


def write_plugin(directory: Path, module: str = "reverse_pmid", name: str = "reverse-pmid"):
    """
    The example third-party policy, as module C{module} in C{directory}.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text(EXAMPLE_PLUGIN.replace("{name}", name))
    return directory


NOTHING_USED = Resources()


def host(pmid, cpu=4, ram=4096, disk=100, used=NOTHING_USED, vms=0):
    return Host(pmid, Resources(cpu, ram, disk), used, vms=vms)


def request(cpu=1, ram=512, disk=1):
    return Request(Flavor(1, cpu, ram, disk), 1, "vm")


# The room rule as the README states it, written here on its own so that the tests do
# not take placement's word for it: a host up and not drained may hand out floor(capacity
# * ratio) of each resource, and a VM fits while used + wanted stays within that.
ROOM = ("cpu", "ram", "disk")


def scaled(h: Host, ratio) -> Resources:
    return Resources(*(math.floor(getattr(h.capacity, r) * ratio[r]) for r in ROOM))


def fits(h: Host, wanted: Resources, ratio) -> bool:
    limit = scaled(h, ratio)
    return (
        h.up
        and not h.drained
        and all(getattr(h.used, r) + getattr(wanted, r) <= getattr(limit, r) for r in ROOM)
    )


def offered(fleet, req, ratio):
    """
    The hosts the mechanism hands a policy: those with room, capacity scaled.
    """
    return [
        evolve(h, capacity=scaled(h, ratio)) for h in fleet if fits(h, req.flavor.resources, ratio)
    ]


def pmids(hosts_):
    return [h.pmid for h in hosts_]


# The interface test factory ------------------------------------------------------------

Maker = Callable[[Callable[[str], Path], contextlib.ExitStack], Callable[[], IAllocationPolicy]]


def syspath_prepend(path: str) -> Callable[[], None]:
    """
    Put C{path} first on sys.path (as pytest's monkeypatch.syspath_prepend does); returns
    the callable that puts sys.path back as it was.
    """
    saved = list(sys.path)
    sys.path.insert(0, path)
    importlib.invalidate_caches()

    def undo() -> None:
        sys.path[:] = saved

    return undo


def temp_dir(case: SynchronousTestCase) -> Path:
    """
    A new empty directory, removed when C{case} is done.
    """
    path = Path(tempfile.mkdtemp(prefix="vorchd-test-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path


@contextlib.contextmanager
def warns(case: SynchronousTestCase, category: type[Warning], match: str) -> Iterator[None]:
    """
    Fail C{case} unless the block warns C{category} with a message C{match} searches (as
    pytest.warns does).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    case.assertTrue(
        any(issubclass(w.category, category) and re.search(match, str(w.message)) for w in caught),
        [f"{w.category.__name__}: {w.message}" for w in caught],
    )


@contextlib.contextmanager
def dotted_module() -> Iterator[str]:
    """
    The example policy module importable as C{vorchd_dotted_example}.
    """
    directory = Path(tempfile.mkdtemp(prefix="vorchd-test-"))
    try:
        write_plugin(directory, module="vorchd_dotted_example")
        undo = syspath_prepend(str(directory))
        try:
            yield "vorchd_dotted_example"
        finally:
            sys.modules.pop("vorchd_dotted_example", None)
            undo()
    finally:
        shutil.rmtree(directory, True)


def interface_tests(make: Maker, *, deterministic: bool = True) -> type:
    """
    A test class holding every policy to the L{IAllocationPolicy} contract.

    @param make: given a temporary-directory factory (a base name to a new directory) and
        an exit stack for clean-up, returns a callable that makes a new, independent
        instance of the policy; it is called once for the whole class.
    @param deterministic: whether two such instances given the same requests give
        the same orders.
    """

    class PolicyInterface(SynchronousTestCase):
        @classmethod
        def setUpClass(cls):
            with contextlib.ExitStack() as stack:
                base = Path(tempfile.mkdtemp(prefix="vorchd-test-"))
                stack.callback(shutil.rmtree, base, True)

                def mktemp(basename: str) -> Path:
                    return Path(tempfile.mkdtemp(prefix=basename, dir=base))

                cls.new_policy = staticmethod(make(mktemp, stack))
                cls._stack = stack.pop_all()

        @classmethod
        def tearDownClass(cls):
            cls._stack.close()

        def test_provides_the_interface(self):
            """
            The policy provides IAllocationPolicy (verifyObject) and has a name.
            """
            policy = self.new_policy()
            self.assertTrue(verifyObject(IAllocationPolicy, policy))
            self.assertTrue(isinstance(policy.name, str) and policy.name)

        @given(fleet=hosts, flavor=flavors, ratio=ratios)
        def test_never_ranks_a_host_without_room(self, fleet, flavor, ratio):
            """
            Through the mechanism, only hosts with room are ranked, each once.
            """
            req = Request(flavor, 1, "vm")
            ranked, refused = candidates(self.new_policy(), req, fleet, ratio)
            self.assertEqual(len(set(pmids(ranked))), len(ranked))
            self.assertTrue(set(pmids(ranked)).isdisjoint(refused))
            for h in ranked:
                original = next(x for x in fleet if x.pmid == h.pmid)
                self.assertTrue(fits(original, flavor.resources, ratio))

        @given(fleet=hosts, flavor=flavors, ratio=ratios)
        def test_never_adds_hosts(self, fleet, flavor, ratio):
            """
            rank returns only hosts it was given, each at most once, input untouched.
            """
            req = Request(flavor, 1, "vm")
            given_ = tuple(offered(fleet, req, ratio))
            ranked = list(self.new_policy().rank(req, given_))
            self.assertTrue(all(any(h is g for g in given_) for h in ranked))
            self.assertEqual(len(set(pmids(ranked))), len(ranked))
            self.assertTrue(
                all(
                    getattr(h.used, r) + getattr(flavor.resources, r) <= getattr(h.capacity, r)
                    for h in ranked
                    for r in ROOM
                )
            )
            self.assertEqual(given_, tuple(offered(fleet, req, ratio)))

        if deterministic:

            @settings(max_examples=50)
            @given(
                calls=st.lists(st.tuples(hosts, flavors), min_size=1, max_size=5),
                ratio=ratios,
            )
            def test_deterministic(self, calls, ratio):
                """
                Two new instances given the same requests rank them the same way.
                """
                a, b = self.new_policy(), self.new_policy()
                for fleet, flavor in calls:
                    req = Request(flavor, 1, "vm")
                    fit = offered(fleet, req, ratio)
                    self.assertEqual(pmids(a.rank(req, fit)), pmids(b.rank(req, fit)))

    return PolicyInterface


INTERFACE_TESTED: set[str] = set()


def builtin(name: str, options: dict[str, str] | None = None) -> Maker:
    """
    Makes built-in policy C{name} by name, as the daemon does.
    """
    INTERFACE_TESTED.add(name)
    return lambda tmp, stack: lambda: policy_named(name, options)


def plugin_from_plugin_path(tmp: Callable[[str], Path], stack) -> Callable[[], IAllocationPolicy]:
    """
    Makes the example third-party policy, found in a C{plugin_path} directory.
    """
    directory = write_plugin(tmp("plugins"))
    return lambda: policy_named("reverse-pmid", {"plugin_path": str(directory)})


def plugin_from_dotted_path(tmp: Callable[[str], Path], stack) -> Callable[[], IAllocationPolicy]:
    """
    Makes the example third-party policy through a dotted path to its factory.
    """
    directory = write_plugin(tmp("dotted"), module="vorchd_example_policy")
    stack.callback(syspath_prepend(str(directory)))
    stack.callback(sys.modules.pop, "vorchd_example_policy", None)
    return lambda: policy_named("vorchd_example_policy:make", {})


TestFirstFit = interface_tests(builtin("first-fit"))
TestBestFit = interface_tests(builtin("best-fit"))
TestWorstFit = interface_tests(builtin("worst-fit"))
TestRoundRobin = interface_tests(builtin("round-robin"))
TestRandomSeeded = interface_tests(builtin("random", {"seed": "42"}))
TestRandomUnseeded = interface_tests(builtin("random"), deterministic=False)
TestLeastVMs = interface_tests(builtin("least-vms"))
TestWeightedSpread = interface_tests(builtin("weighted", {"weights": "cpu:1, ram:1, disk:0.5"}))
TestWeightedPack = interface_tests(builtin("weighted", {"weights": "cpu:-1, ram:-2"}))
TestThirdPartyPlugin = interface_tests(plugin_from_plugin_path)
TestThirdPartyDottedPath = interface_tests(plugin_from_dotted_path)


class InterfaceCoverageTests(SynchronousTestCase):
    def test_every_builtin_is_tested(self):
        """
        Every built-in policy has an interface test class in this module.
        """
        self.assertLessEqual(set(BUILTIN), INTERFACE_TESTED)


# What each built-in policy does ---------------------------------------------------------

FLEET = [
    host(1),  # empty
    host(2, used=Resources(2, 2048, 50)),  # half full
    host(3, used=Resources(3, 3072, 90)),  # nearly full, still fits
    host(4, used=Resources(4, 4096, 100)),  # full: refused by the mechanism
]


def ranked_by(name, fleet=FLEET, req=None, options=None, ratio=ONE):
    ranked, _ = candidates(policy_named(name, options), req or request(), fleet, ratio)
    return pmids(ranked)


class BuiltinPolicyTests(SynchronousTestCase):
    def test_best_fit_packs(self):
        """
        best-fit tries the fullest host that still fits first, the emptiest last.
        """
        self.assertEqual(ranked_by("best-fit"), [3, 2, 1])

    def test_worst_fit_spreads(self):
        """
        worst-fit tries the emptiest host first, the fullest that fits last.
        """
        self.assertEqual(ranked_by("worst-fit"), [1, 2, 3])

    def test_fit_measure_is_normalised_across_resources(self):
        """
        best-fit/worst-fit compare the summed fractions of cpu, ram and disk left.
        """
        small = host(1, cpu=4, ram=4096, disk=100, used=Resources(3, 0, 0))  # 0 + .875 + .99
        big = host(2, cpu=8, ram=8192, disk=200, used=Resources(0, 7168, 0))  # .875 + .0625 + .995
        self.assertEqual(ranked_by("best-fit", [small, big]), [1, 2])
        self.assertEqual(ranked_by("worst-fit", [small, big]), [2, 1])

    def test_the_ratios_are_not_applied_twice(self):
        """
        Policies use the ratio-scaled capacity as given and do not scale it again.
        """
        scaled = host(1, cpu=4, used=Resources(8, 0, 0))
        empty = host(2, cpu=8)
        ratio = {**ONE, "cpu": 4.0}
        self.assertEqual(ranked_by("worst-fit", [scaled, empty], ratio=ratio), [2, 1])
        self.assertEqual(ranked_by("best-fit", [scaled, empty], ratio=ratio), [1, 2])

    def test_ties_go_in_pm_file_order(self):
        """
        Hosts the measure cannot tell apart are tried in pm_file (pmid) order.
        """
        for name in ["best-fit", "worst-fit", "least-vms", "weighted"]:
            fleet = [host(7), host(3), host(5)]
            self.assertEqual(ranked_by(name, fleet), [3, 5, 7], name)

    def test_round_robin_cycles(self):
        """
        round-robin starts each request at the host after the previous start: 1, 2, 3, 1.
        """
        policy = policy_named("round-robin")
        fleet = [host(3), host(1), host(2)]
        firsts = [candidates(policy, request(), fleet, ONE)[0] for _ in range(5)]
        self.assertEqual(
            [pmids(r) for r in firsts], [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 2, 3], [2, 3, 1]]
        )

    def test_round_robin_skips_hosts_without_room(self):
        """
        round-robin skips a host that is not offered and goes on after the last start.
        """
        policy = policy_named("round-robin")
        req = request()
        self.assertEqual(pmids(policy.rank(req, [host(1), host(2), host(3)]))[0], 1)
        self.assertEqual(pmids(policy.rank(req, [host(1), host(3)])), [3, 1])
        self.assertEqual(pmids(policy.rank(req, [host(1), host(2)])), [1, 2])
        self.assertEqual(pmids(policy.rank(req, [])), [])
        self.assertEqual(pmids(policy.rank(req, [host(1), host(2)])), [2, 1])

    def test_round_robin_state_is_per_instance(self):
        """
        Each policy_named call gives a new round-robin starting at the first host.
        """
        fleet = [host(1), host(2)]
        a = policy_named("round-robin")
        a.rank(request(), fleet)
        self.assertEqual(pmids(a.rank(request(), fleet)), [2, 1])
        self.assertEqual(pmids(policy_named("round-robin").rank(request(), fleet)), [1, 2])

    def test_least_vms(self):
        """
        least-vms tries the host running the fewest VMs first, whatever their size.
        """
        fleet = [host(1, vms=5), host(2, vms=0, used=Resources(3, 3000, 90)), host(3, vms=2)]
        self.assertEqual(ranked_by("least-vms", fleet), [2, 3, 1])

    def test_weighted_positive_weights_spread(self):
        """
        weighted with positive weights tries the host with the most room left first.
        """
        self.assertEqual(
            ranked_by("weighted", options={"weights": "cpu:1.0, ram:1.0, disk:0.5"}), [1, 2, 3]
        )

    def test_weighted_negative_weights_pack(self):
        """
        weighted with negative weights tries the fullest host that fits first.
        """
        self.assertEqual(
            ranked_by("weighted", options={"weights": "cpu:-1, ram:-1, disk:-1"}), [3, 2, 1]
        )

    def test_weighted_weighs_only_the_resources_listed(self):
        """
        A resource missing from weights weighs 0: only the listed ones decide.
        """
        cpu_full = host(1, used=Resources(3, 0, 0))
        ram_full = host(2, used=Resources(0, 3000, 0))
        self.assertEqual(
            ranked_by("weighted", [cpu_full, ram_full], options={"weights": "ram:1"}), [1, 2]
        )
        self.assertEqual(
            ranked_by("weighted", [cpu_full, ram_full], options={"weights": "cpu:1"}), [2, 1]
        )

    def test_weighted_score(self):
        """
        The score is sum(weight * left / capacity); zero capacity counts 0.
        """
        h = host(1, cpu=4, ram=1024, disk=0)
        req = request(cpu=1, ram=512, disk=0)
        self.assertEqual(
            weighted_room(req, h, {"cpu": 2.0, "ram": -1.0, "disk": 5.0}), 2 * 0.75 - 0.5
        )

    def test_weighted_default_weights(self):
        """
        Without a weights option, weighted weighs every resource 1 (it spreads).
        """
        self.assertEqual(policy_named("weighted").weights, ONE)
        self.assertEqual(policy_named("weighted", {"weights": "  "}).weights, ONE)

    def test_parse_weights(self):
        """
        weights reads comma-separated resource:weight pairs; missing resources weigh 0.
        """
        self.assertEqual(
            parse_weights("cpu:1.0, ram:1.0, disk:0.5"), {"cpu": 1.0, "ram": 1.0, "disk": 0.5}
        )
        self.assertEqual(parse_weights(" RAM : -2 ,"), {"cpu": 0.0, "ram": -2.0, "disk": 0.0})

    def test_bad_weights(self):
        """
        A malformed weights option is a ValueError that says what is wrong.
        """
        for weights, message in [
            ("cpu=1", "'cpu=1' is not resource:weight"),
            ("cpu:", "'cpu:' is not resource:weight"),
            (":1", "':1' is not resource:weight"),
            ("gpu:1", "unknown resource 'gpu'"),
            ("cpu:lots", "'lots' in 'cpu:lots' is not a number"),
            ("cpu:nan", "not a finite number"),
            ("cpu:1, cpu:2", "cpu is given more than once"),
        ]:
            with self.assertRaises(ValueError) as caught:
                policy_named("weighted", {"weights": weights})
            self.assertRegex(
                str(caught.exception),
                "^weights: .*" + message.replace("(", r"\("),
                (weights, message),
            )

    def test_weighted_refuses_unknown_resources(self):
        """
        Weighted built directly refuses a weight for a resource vorchd does not account.
        """
        with self.assertRaises(ValueError) as caught:
            Weighted({"gpu": 1.0})
        self.assertRegex(str(caught.exception), "gpu")

    def test_random_with_a_seed_is_reproducible(self):
        """
        Two random policies with the same seed give the same sequence of orders.
        """
        fleet = [host(i) for i in range(1, 11)]
        a, b = policy_named("random", {"seed": "7"}), policy_named("random", {"seed": " 7 "})
        orders = [pmids(a.rank(request(), fleet)) for _ in range(5)]
        self.assertEqual(orders, [pmids(b.rank(request(), fleet)) for _ in range(5)])
        self.assertGreater(len({tuple(o) for o in orders}), 1)

    def test_random_depends_on_the_hosts_not_their_order(self):
        """
        A seeded random policy gives the same order whatever order the hosts come in.
        """
        fleet = [host(i) for i in range(1, 11)]
        shuffled = random.Random(1).sample(fleet, len(fleet))
        a, b = policy_named("random", {"seed": "3"}), policy_named("random", {"seed": "3"})
        self.assertEqual(pmids(a.rank(request(), fleet)), pmids(b.rank(request(), shuffled)))

    def test_random_without_a_seed_differs(self):
        """
        Random policies without a seed do not all give the same orders.
        """
        fleet = [host(i) for i in range(1, 11)]
        orders = {tuple(pmids(policy_named("random").rank(request(), fleet))) for _ in range(5)}
        self.assertGreater(len(orders), 1)

    def test_bad_seed(self):
        """
        A seed that is not an integer is a ValueError naming the option.
        """
        with self.assertRaises(ValueError) as caught:
            policy_named("random", {"seed": "x"})
        self.assertRegex(str(caught.exception), "^seed: 'x' is not an integer")

    def test_builtins_are_new_instances(self):
        """
        builtin_policies and policy_named make new instances at every call.
        """
        self.assertIsNot(policy_named("round-robin"), policy_named("round-robin"))
        first, second = builtin_policies(), builtin_policies()
        self.assertEqual(sorted(first), sorted(BUILTIN))
        self.assertTrue(all(first[n] is not second[n] for n in first))

    def test_builtin_options_are_checked(self):
        """
        builtin_policies makes every built-in from the options, so a bad one raises.
        """
        with self.assertRaises(ValueError) as caught:
            builtin_policies({"weights": "nonsense"})
        self.assertRegex(str(caught.exception), "weights")

    def test_other_policies_ignore_options_they_do_not_read(self):
        """
        A malformed option of another policy does not stop a built-in from being made.
        """
        self.assertEqual(
            policy_named("first-fit", {"weights": "nonsense", "seed": "x"}).name, "first-fit"
        )


# Third-party policies -------------------------------------------------------------------


class ThirdPartyPolicyTests(SynchronousTestCase):
    def test_plugin_path_policy_is_selected_by_name(self):
        """
        A policy file in plugin_path is selected by its name with no change to vorchd.
        """
        tmp_path = temp_dir(self)
        options = {"policy": "reverse-pmid", "plugin_path": str(write_plugin(tmp_path))}
        policy = policy_named("reverse-pmid", options)
        self.assertEqual(policy.name, "reverse-pmid")
        self.assertEqual(pmids(candidates(policy, request(), FLEET, ONE)[0]), [3, 2, 1])
        self.assertIn("reverse-pmid", available_policies(options))
        self.assertEqual(available_policies(options), sorted(available_policies(options)))

    def test_plugin_path_lists_several_directories(self):
        """
        plugin_path takes several directories separated by ':', all searched.
        """
        tmp_path = temp_dir(self)
        a = write_plugin(tmp_path / "a", module="one", name="policy-one")
        b = write_plugin(tmp_path / "b", module="two", name="policy-two")
        options = {"plugin_path": f"{a}: :{b}"}
        self.assertLessEqual({"policy-one", "policy-two"}, set(available_policies(options)))
        self.assertEqual(policy_named("policy-two", options).name, "policy-two")

    def test_plugin_path_must_be_directories(self):
        """
        A plugin_path entry that is not a directory is a ValueError naming it.
        """
        tmp_path = temp_dir(self)
        with self.assertRaises(ValueError) as caught:
            available_policies({"plugin_path": str(tmp_path / "nowhere")})
        self.assertRegex(str(caught.exception), "^plugin_path: .*nowhere.* is not a directory")

    def test_plugins_do_not_leak(self):
        """
        A plugin_path search leaves no module or package path behind for the next one.
        """
        tmp_path = temp_dir(self)
        path_before = list(vorchd.plugins.__path__)
        a = write_plugin(tmp_path / "a", name="policy-a")
        b = write_plugin(tmp_path / "b", name="policy-b")
        self.assertEqual(policy_named("policy-a", {"plugin_path": str(a)}).name, "policy-a")
        self.assertEqual(vorchd.plugins.__path__, path_before)
        self.assertNotIn("vorchd.plugins.reverse_pmid", sys.modules)
        self.assertFalse(hasattr(vorchd.plugins, "reverse_pmid"))
        self.assertNotIn("policy-a", available_policies())
        self.assertNotIn("policy-a", available_policies({"plugin_path": str(b)}))
        self.assertEqual(policy_named("policy-b", {"plugin_path": str(b)}).name, "policy-b")
        with self.assertRaises(UnknownPolicy):
            policy_named("policy-a", {"plugin_path": str(b)})

    def test_plugin_path_policies_are_new_instances(self):
        """
        A plugin_path policy is imported afresh at each lookup, so state is not shared.
        """
        tmp_path = temp_dir(self)
        options = {"plugin_path": str(write_plugin(tmp_path))}
        self.assertIsNot(
            policy_named("reverse-pmid", options), policy_named("reverse-pmid", options)
        )

    def test_drop_in_on_sys_path_is_found(self):
        """
        A policy in a vorchd/plugins/ directory of another sys.path entry is found.
        """
        tmp_path = temp_dir(self)
        write_plugin(tmp_path / "vorchd" / "plugins", module="dropped", name="dropped-in")
        self.addCleanup(syspath_prepend(str(tmp_path)))
        self.assertIn("dropped-in", available_policies())
        policy = policy_named("dropped-in")
        self.assertTrue(verifyObject(IAllocationPolicy, policy))
        self.assertEqual(pmids(policy.rank(request(), [host(1), host(2)])), [2, 1])

    def test_builtin_name_wins_over_plugin(self):
        """
        A plugin named like a built-in policy is ignored with a warning.
        """
        tmp_path = temp_dir(self)
        options = {"plugin_path": str(write_plugin(tmp_path, name="first-fit"))}
        with warns(self, PolicyWarning, "'first-fit' is a built-in policy"):
            available_policies(options)
        self.assertEqual(
            type(policy_named("first-fit", options)).__module__, "vorchd.policies.builtin"
        )

    def test_duplicate_plugin_names(self):
        """
        Of two plugins with the same name, the first found is used, with a warning.
        """
        tmp_path = temp_dir(self)
        options = {
            "plugin_path": str(write_plugin(write_plugin(tmp_path, module="a"), module="b"))
        }
        with warns(self, PolicyWarning, "'reverse-pmid' is already"):
            self.assertEqual(available_policies(options).count("reverse-pmid"), 1)

    def test_unknown_name_lists_plugins(self):
        """
        An unknown name is an UnknownPolicy listing the built-in and plugin names.
        """
        tmp_path = temp_dir(self)
        options = {"plugin_path": str(write_plugin(tmp_path))}
        with self.assertRaises(UnknownPolicy) as e:
            policy_named("cleverest", options)
        self.assertIn("'cleverest'", str(e.exception))
        self.assertTrue(all(name in str(e.exception) for name in [*BUILTIN, "reverse-pmid"]))

    def test_dotted_path(self):
        """
        A dotted path to a policy, a policy class or a factory selects that policy.
        """
        for path in [
            "vorchd_dotted_example:reverse",
            "vorchd_dotted_example.reverse",
            "vorchd_dotted_example:ReversePmid",
            "vorchd_dotted_example.ReversePmid",
            "vorchd_dotted_example:make",
        ]:
            with dotted_module():
                policy = policy_named(path, {"policy": path})
                self.assertTrue(verifyObject(IAllocationPolicy, policy), path)
                self.assertEqual(pmids(policy.rank(request(), [host(1), host(2)])), [2, 1], path)

    def test_dotted_path_factory_gets_the_options(self):
        """
        A factory taking one argument is called with the [allocation] options.
        """
        with dotted_module():
            options = {"policy": "vorchd_dotted_example:make", "colour": "blue"}
            self.assertEqual(policy_named(options["policy"], options).options, options)
            self.assertIsNone(policy_named("vorchd_dotted_example:reverse", options).options)

    def test_dotted_path_to_a_builtin_class_uses_from_options(self):
        """
        A dotted path to a built-in class with from_options reads its own option keys.
        """
        policy = policy_named("vorchd.policies.builtin:Weighted", {"weights": "disk:-1"})
        self.assertEqual(policy.weights, {"cpu": 0.0, "ram": 0.0, "disk": -1.0})

    def test_dotted_path_not_a_policy(self):
        """
        A dotted path to a non-policy is an InvalidPolicy (UnknownPolicy, ValueError).
        """
        for path, message in [
            ("vorchd_dotted_example:not_a_policy", "neither an IAllocationPolicy nor a factory"),
            ("vorchd_dotted_example:nothing", "has no attribute 'nothing'"),
            ("vorchd.model.Resources", "does not provide IAllocationPolicy"),
        ]:
            with dotted_module():
                with self.assertRaises(InvalidPolicy) as e:
                    policy_named(path)
                self.assertRegex(str(e.exception), message, (path, message))
                self.assertTrue(
                    isinstance(e.exception, UnknownPolicy) and isinstance(e.exception, ValueError),
                    (path, message),
                )

    def test_dotted_path_to_no_module(self):
        """
        A dotted path to a module that does not exist is an UnknownPolicy listing names.
        """
        with self.assertRaises(UnknownPolicy) as caught:
            policy_named("no_such_vorchd_policy.module:attr")
        self.assertRegex(str(caught.exception), "no module 'no_such_vorchd_policy'.*first-fit")

    def test_broken_plugin_is_left_out(self):
        """
        A plugin module that fails to import is left out; its neighbours are found.
        """
        tmp_path = temp_dir(self)
        write_plugin(tmp_path)
        (tmp_path / "broken.py").write_text("raise RuntimeError('broken plugin')\n")
        names = available_policies({"plugin_path": str(tmp_path)})
        self.assertIn("reverse-pmid", names)
        self.assertNotIn("vorchd.plugins.broken", sys.modules)
        # twisted.plugin logs the broken module's import error; trial would fail the test
        # for it, but that error is the point here.
        self.flushLoggedErrors(RuntimeError)
