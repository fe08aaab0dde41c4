"""
Allocation policies: the interface every policy keeps (built-in and third-party), what
each built-in policy does, its options, and how third-party policies are found.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st
from zope.interface.verify import verifyObject

import vorchd.plugins
from tests.unit.test_placement import flavors, hosts, ratios
from vorchd.model import Flavor, Host, Resources
from vorchd.placement import candidates, effective_capacity, free, refusal
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


def offered(fleet, req, ratio):
    """
    The hosts the mechanism hands a policy: those with room, capacity scaled.
    """
    return [
        evolve(h, capacity=effective_capacity(h, ratio))
        for h in fleet
        if refusal(h, req, ratio) is None
    ]


def pmids(hosts_):
    return [h.pmid for h in hosts_]


# The interface test factory ------------------------------------------------------------

Maker = Callable[[pytest.TempPathFactory, contextlib.ExitStack], Callable[[], IAllocationPolicy]]


def interface_tests(make: Maker, *, deterministic: bool = True) -> type:
    """
    A test class holding every policy to the L{IAllocationPolicy} contract.

    @param make: given a temporary-directory factory and an exit stack for clean-up,
        returns a callable that makes a new, independent instance of the policy.
    @param deterministic: whether two such instances given the same requests give
        the same orders.
    """

    class PolicyInterface:
        @pytest.fixture(scope="class")
        @classmethod
        def new_policy(cls, tmp_path_factory):
            with contextlib.ExitStack() as stack:
                yield make(tmp_path_factory, stack)

        def test_provides_the_interface(self, new_policy):
            """
            The policy provides IAllocationPolicy (verifyObject) and has a name.
            """
            policy = new_policy()
            assert verifyObject(IAllocationPolicy, policy)
            assert isinstance(policy.name, str) and policy.name

        @given(fleet=hosts, flavor=flavors, ratio=ratios)
        def test_never_ranks_a_host_without_room(self, new_policy, fleet, flavor, ratio):
            """
            Through the mechanism, only hosts with room are ranked, each once.
            """
            req = Request(flavor, 1, "vm")
            ranked, refused = candidates(new_policy(), req, fleet, ratio)
            assert len(set(pmids(ranked))) == len(ranked)
            assert set(pmids(ranked)).isdisjoint(refused)
            for h in ranked:
                original = next(x for x in fleet if x.pmid == h.pmid)
                assert original.up and not original.drained
                assert free(original, ratio).covers(flavor.resources)

        @given(fleet=hosts, flavor=flavors, ratio=ratios)
        def test_never_adds_hosts(self, new_policy, fleet, flavor, ratio):
            """
            rank returns only hosts it was given, each at most once, input untouched.
            """
            req = Request(flavor, 1, "vm")
            given_ = tuple(offered(fleet, req, ratio))
            ranked = list(new_policy().rank(req, given_))
            assert all(any(h is g for g in given_) for h in ranked)
            assert len(set(pmids(ranked))) == len(ranked)
            assert all((h.capacity - h.used).covers(flavor.resources) for h in ranked)
            assert given_ == tuple(offered(fleet, req, ratio))

        if deterministic:

            @settings(max_examples=50)
            @given(
                calls=st.lists(st.tuples(hosts, flavors), min_size=1, max_size=5),
                ratio=ratios,
            )
            def test_deterministic(self, new_policy, calls, ratio):
                """
                Two new instances given the same requests rank them the same way.
                """
                a, b = new_policy(), new_policy()
                for fleet, flavor in calls:
                    req = Request(flavor, 1, "vm")
                    fit = offered(fleet, req, ratio)
                    assert pmids(a.rank(req, fit)) == pmids(b.rank(req, fit))

    return PolicyInterface


INTERFACE_TESTED: set[str] = set()


def builtin(name: str, options: dict[str, str] | None = None) -> Maker:
    """
    Makes built-in policy C{name} by name, as the daemon does.
    """
    INTERFACE_TESTED.add(name)
    return lambda tmp, stack: lambda: policy_named(name, options)


def plugin_from_plugin_path(tmp: pytest.TempPathFactory, stack) -> Callable[[], IAllocationPolicy]:
    """
    Makes the example third-party policy, found in a C{plugin_path} directory.
    """
    directory = write_plugin(tmp.mktemp("plugins"))
    return lambda: policy_named("reverse-pmid", {"plugin_path": str(directory)})


def plugin_from_dotted_path(tmp: pytest.TempPathFactory, stack) -> Callable[[], IAllocationPolicy]:
    """
    Makes the example third-party policy through a dotted path to its factory.
    """
    directory = write_plugin(tmp.mktemp("dotted"), module="vorchd_example_policy")
    stack.enter_context(pytest.MonkeyPatch.context()).syspath_prepend(str(directory))
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


def test_every_builtin_is_tested():
    """
    Every built-in policy has an interface test class in this module.
    """
    assert set(BUILTIN) <= INTERFACE_TESTED


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


def test_best_fit_packs():
    """
    best-fit tries the fullest host that still fits first, the emptiest last.
    """
    assert ranked_by("best-fit") == [3, 2, 1]


def test_worst_fit_spreads():
    """
    worst-fit tries the emptiest host first, the fullest that fits last.
    """
    assert ranked_by("worst-fit") == [1, 2, 3]


def test_fit_measure_is_normalised_across_resources():
    """
    best-fit/worst-fit compare the summed fractions of cpu, ram and disk left.
    """
    small = host(1, cpu=4, ram=4096, disk=100, used=Resources(3, 0, 0))  # 0 + .875 + .99
    big = host(2, cpu=8, ram=8192, disk=200, used=Resources(0, 7168, 0))  # .875 + .0625 + .995
    assert ranked_by("best-fit", [small, big]) == [1, 2]
    assert ranked_by("worst-fit", [small, big]) == [2, 1]


def test_the_ratios_are_not_applied_twice():
    """
    Policies use the ratio-scaled capacity as given and do not scale it again.
    """
    scaled = host(1, cpu=4, used=Resources(8, 0, 0))
    empty = host(2, cpu=8)
    ratio = {**ONE, "cpu": 4.0}
    assert ranked_by("worst-fit", [scaled, empty], ratio=ratio) == [2, 1]
    assert ranked_by("best-fit", [scaled, empty], ratio=ratio) == [1, 2]


@pytest.mark.parametrize("name", ["best-fit", "worst-fit", "least-vms", "weighted"])
def test_ties_go_in_pm_file_order(name):
    """
    Hosts the measure cannot tell apart are tried in pm_file (pmid) order.
    """
    fleet = [host(7), host(3), host(5)]
    assert ranked_by(name, fleet) == [3, 5, 7]


def test_round_robin_cycles():
    """
    round-robin starts each request at the host after the previous start: 1, 2, 3, 1.
    """
    policy = policy_named("round-robin")
    fleet = [host(3), host(1), host(2)]
    firsts = [candidates(policy, request(), fleet, ONE)[0] for _ in range(5)]
    assert [pmids(r) for r in firsts] == [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 2, 3], [2, 3, 1]]


def test_round_robin_skips_hosts_without_room():
    """
    round-robin skips a host that is not offered and goes on after the last start.
    """
    policy = policy_named("round-robin")
    req = request()
    assert pmids(policy.rank(req, [host(1), host(2), host(3)]))[0] == 1
    assert pmids(policy.rank(req, [host(1), host(3)])) == [3, 1]
    assert pmids(policy.rank(req, [host(1), host(2)])) == [1, 2]
    assert pmids(policy.rank(req, [])) == []
    assert pmids(policy.rank(req, [host(1), host(2)])) == [2, 1]


def test_round_robin_state_is_per_instance():
    """
    Each policy_named call gives a new round-robin starting at the first host.
    """
    fleet = [host(1), host(2)]
    a = policy_named("round-robin")
    a.rank(request(), fleet)
    assert pmids(a.rank(request(), fleet)) == [2, 1]
    assert pmids(policy_named("round-robin").rank(request(), fleet)) == [1, 2]


def test_least_vms():
    """
    least-vms tries the host running the fewest VMs first, whatever their size.
    """
    fleet = [host(1, vms=5), host(2, vms=0, used=Resources(3, 3000, 90)), host(3, vms=2)]
    assert ranked_by("least-vms", fleet) == [2, 3, 1]


def test_weighted_positive_weights_spread():
    """
    weighted with positive weights tries the host with the most room left first.
    """
    assert ranked_by("weighted", options={"weights": "cpu:1.0, ram:1.0, disk:0.5"}) == [1, 2, 3]


def test_weighted_negative_weights_pack():
    """
    weighted with negative weights tries the fullest host that fits first.
    """
    assert ranked_by("weighted", options={"weights": "cpu:-1, ram:-1, disk:-1"}) == [3, 2, 1]


def test_weighted_weighs_only_the_resources_listed():
    """
    A resource missing from weights weighs 0: only the listed ones decide.
    """
    cpu_full = host(1, used=Resources(3, 0, 0))
    ram_full = host(2, used=Resources(0, 3000, 0))
    assert ranked_by("weighted", [cpu_full, ram_full], options={"weights": "ram:1"}) == [1, 2]
    assert ranked_by("weighted", [cpu_full, ram_full], options={"weights": "cpu:1"}) == [2, 1]


def test_weighted_score():
    """
    The score is sum(weight * left / capacity); zero capacity counts 0.
    """
    h = host(1, cpu=4, ram=1024, disk=0)
    req = request(cpu=1, ram=512, disk=0)
    assert weighted_room(req, h, {"cpu": 2.0, "ram": -1.0, "disk": 5.0}) == 2 * 0.75 - 0.5


def test_weighted_default_weights():
    """
    Without a weights option, weighted weighs every resource 1 (it spreads).
    """
    assert policy_named("weighted").weights == ONE
    assert policy_named("weighted", {"weights": "  "}).weights == ONE


def test_parse_weights():
    """
    weights reads comma-separated resource:weight pairs; missing resources weigh 0.
    """
    assert parse_weights("cpu:1.0, ram:1.0, disk:0.5") == {"cpu": 1.0, "ram": 1.0, "disk": 0.5}
    assert parse_weights(" RAM : -2 ,") == {"cpu": 0.0, "ram": -2.0, "disk": 0.0}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("cpu=1", "'cpu=1' is not resource:weight"),
        ("cpu:", "'cpu:' is not resource:weight"),
        (":1", "':1' is not resource:weight"),
        ("gpu:1", "unknown resource 'gpu'"),
        ("cpu:lots", "'lots' in 'cpu:lots' is not a number"),
        ("cpu:nan", "not a finite number"),
        ("cpu:1, cpu:2", "cpu is given more than once"),
    ],
)
def test_bad_weights(weights, message):
    """
    A malformed weights option is a ValueError that says what is wrong.
    """
    with pytest.raises(ValueError, match="^weights: .*" + message.replace("(", r"\(")):
        policy_named("weighted", {"weights": weights})


def test_weighted_refuses_unknown_resources():
    """
    Weighted built directly refuses a weight for a resource vorchd does not account.
    """
    with pytest.raises(ValueError, match="gpu"):
        Weighted({"gpu": 1.0})


def test_random_with_a_seed_is_reproducible():
    """
    Two random policies with the same seed give the same sequence of orders.
    """
    fleet = [host(i) for i in range(1, 11)]
    a, b = policy_named("random", {"seed": "7"}), policy_named("random", {"seed": " 7 "})
    orders = [pmids(a.rank(request(), fleet)) for _ in range(5)]
    assert orders == [pmids(b.rank(request(), fleet)) for _ in range(5)]
    assert len({tuple(o) for o in orders}) > 1


def test_random_depends_on_the_hosts_not_their_order():
    """
    A seeded random policy gives the same order whatever order the hosts come in.
    """
    fleet = [host(i) for i in range(1, 11)]
    shuffled = random.Random(1).sample(fleet, len(fleet))
    a, b = policy_named("random", {"seed": "3"}), policy_named("random", {"seed": "3"})
    assert pmids(a.rank(request(), fleet)) == pmids(b.rank(request(), shuffled))


def test_random_without_a_seed_differs():
    """
    Random policies without a seed do not all give the same orders.
    """
    fleet = [host(i) for i in range(1, 11)]
    orders = {tuple(pmids(policy_named("random").rank(request(), fleet))) for _ in range(5)}
    assert len(orders) > 1


def test_bad_seed():
    """
    A seed that is not an integer is a ValueError naming the option.
    """
    with pytest.raises(ValueError, match="^seed: 'x' is not an integer"):
        policy_named("random", {"seed": "x"})


def test_builtins_are_new_instances():
    """
    builtin_policies and policy_named make new instances at every call.
    """
    assert policy_named("round-robin") is not policy_named("round-robin")
    first, second = builtin_policies(), builtin_policies()
    assert sorted(first) == sorted(BUILTIN)
    assert all(first[n] is not second[n] for n in first)


def test_builtin_options_are_checked():
    """
    builtin_policies makes every built-in from the options, so a bad one raises.
    """
    with pytest.raises(ValueError, match="weights"):
        builtin_policies({"weights": "nonsense"})


def test_other_policies_ignore_options_they_do_not_read():
    """
    A malformed option of another policy does not stop a built-in from being made.
    """
    assert policy_named("first-fit", {"weights": "nonsense", "seed": "x"}).name == "first-fit"


# Third-party policies -------------------------------------------------------------------


def test_plugin_path_policy_is_selected_by_name(tmp_path):
    """
    A policy file in plugin_path is selected by its name with no change to vorchd.
    """
    options = {"policy": "reverse-pmid", "plugin_path": str(write_plugin(tmp_path))}
    policy = policy_named("reverse-pmid", options)
    assert policy.name == "reverse-pmid"
    assert pmids(candidates(policy, request(), FLEET, ONE)[0]) == [3, 2, 1]
    assert "reverse-pmid" in available_policies(options)
    assert available_policies(options) == sorted(available_policies(options))


def test_plugin_path_lists_several_directories(tmp_path):
    """
    plugin_path takes several directories separated by ':', all searched.
    """
    a = write_plugin(tmp_path / "a", module="one", name="policy-one")
    b = write_plugin(tmp_path / "b", module="two", name="policy-two")
    options = {"plugin_path": f"{a}: :{b}"}
    assert {"policy-one", "policy-two"} <= set(available_policies(options))
    assert policy_named("policy-two", options).name == "policy-two"


def test_plugin_path_must_be_directories(tmp_path):
    """
    A plugin_path entry that is not a directory is a ValueError naming it.
    """
    with pytest.raises(ValueError, match="^plugin_path: .*nowhere.* is not a directory"):
        available_policies({"plugin_path": str(tmp_path / "nowhere")})


def test_plugins_do_not_leak(tmp_path):
    """
    A plugin_path search leaves no module or package path behind for the next one.
    """
    path_before = list(vorchd.plugins.__path__)
    a = write_plugin(tmp_path / "a", name="policy-a")
    b = write_plugin(tmp_path / "b", name="policy-b")
    assert policy_named("policy-a", {"plugin_path": str(a)}).name == "policy-a"
    assert vorchd.plugins.__path__ == path_before
    assert "vorchd.plugins.reverse_pmid" not in sys.modules
    assert not hasattr(vorchd.plugins, "reverse_pmid")
    assert "policy-a" not in available_policies()
    assert "policy-a" not in available_policies({"plugin_path": str(b)})
    assert policy_named("policy-b", {"plugin_path": str(b)}).name == "policy-b"
    with pytest.raises(UnknownPolicy):
        policy_named("policy-a", {"plugin_path": str(b)})


def test_plugin_path_policies_are_new_instances(tmp_path):
    """
    A plugin_path policy is imported afresh at each lookup, so state is not shared.
    """
    options = {"plugin_path": str(write_plugin(tmp_path))}
    assert policy_named("reverse-pmid", options) is not policy_named("reverse-pmid", options)


def test_drop_in_on_sys_path_is_found(tmp_path, monkeypatch):
    """
    A policy in a vorchd/plugins/ directory of another sys.path entry is found.
    """
    write_plugin(tmp_path / "vorchd" / "plugins", module="dropped", name="dropped-in")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "dropped-in" in available_policies()
    policy = policy_named("dropped-in")
    assert verifyObject(IAllocationPolicy, policy)
    assert pmids(policy.rank(request(), [host(1), host(2)])) == [2, 1]


def test_builtin_name_wins_over_plugin(tmp_path):
    """
    A plugin named like a built-in policy is ignored with a warning.
    """
    options = {"plugin_path": str(write_plugin(tmp_path, name="first-fit"))}
    with pytest.warns(PolicyWarning, match="'first-fit' is a built-in policy"):
        available_policies(options)
    assert type(policy_named("first-fit", options)).__module__ == "vorchd.policies.builtin"


def test_duplicate_plugin_names(tmp_path):
    """
    Of two plugins with the same name, the first found is used, with a warning.
    """
    options = {"plugin_path": str(write_plugin(write_plugin(tmp_path, module="a"), module="b"))}
    with pytest.warns(PolicyWarning, match="'reverse-pmid' is already"):
        assert available_policies(options).count("reverse-pmid") == 1


def test_unknown_name_lists_plugins(tmp_path):
    """
    An unknown name is an UnknownPolicy listing the built-in and plugin names.
    """
    options = {"plugin_path": str(write_plugin(tmp_path))}
    with pytest.raises(UnknownPolicy) as e:
        policy_named("cleverest", options)
    assert "'cleverest'" in str(e.value)
    assert all(name in str(e.value) for name in [*BUILTIN, "reverse-pmid"])


@pytest.fixture
def dotted(tmp_path, monkeypatch):
    """
    The example policy module importable as C{vorchd_dotted_example}.
    """
    write_plugin(tmp_path, module="vorchd_dotted_example")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "vorchd_dotted_example"
    sys.modules.pop("vorchd_dotted_example", None)


@pytest.mark.parametrize(
    "path",
    [
        "vorchd_dotted_example:reverse",
        "vorchd_dotted_example.reverse",
        "vorchd_dotted_example:ReversePmid",
        "vorchd_dotted_example.ReversePmid",
        "vorchd_dotted_example:make",
    ],
)
def test_dotted_path(dotted, path):
    """
    A dotted path to a policy, a policy class or a factory selects that policy.
    """
    policy = policy_named(path, {"policy": path})
    assert verifyObject(IAllocationPolicy, policy)
    assert pmids(policy.rank(request(), [host(1), host(2)])) == [2, 1]


def test_dotted_path_factory_gets_the_options(dotted):
    """
    A factory taking one argument is called with the [allocation] options.
    """
    options = {"policy": "vorchd_dotted_example:make", "colour": "blue"}
    assert policy_named(options["policy"], options).options == options
    assert policy_named("vorchd_dotted_example:reverse", options).options is None


def test_dotted_path_to_a_builtin_class_uses_from_options():
    """
    A dotted path to a built-in class with from_options reads its own option keys.
    """
    policy = policy_named("vorchd.policies.builtin:Weighted", {"weights": "disk:-1"})
    assert policy.weights == {"cpu": 0.0, "ram": 0.0, "disk": -1.0}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("vorchd_dotted_example:not_a_policy", "neither an IAllocationPolicy nor a factory"),
        ("vorchd_dotted_example:nothing", "has no attribute 'nothing'"),
        ("vorchd.model.Resources", "does not provide IAllocationPolicy"),
    ],
)
def test_dotted_path_not_a_policy(dotted, path, message):
    """
    A dotted path to a non-policy is an InvalidPolicy (UnknownPolicy, ValueError).
    """
    with pytest.raises(InvalidPolicy, match=message) as e:
        policy_named(path)
    assert isinstance(e.value, UnknownPolicy) and isinstance(e.value, ValueError)


def test_dotted_path_to_no_module():
    """
    A dotted path to a module that does not exist is an UnknownPolicy listing names.
    """
    with pytest.raises(UnknownPolicy, match="no module 'no_such_vorchd_policy'.*first-fit"):
        policy_named("no_such_vorchd_policy.module:attr")


def test_broken_plugin_is_left_out(tmp_path):
    """
    A plugin module that fails to import is left out; its neighbours are found.
    """
    write_plugin(tmp_path)
    (tmp_path / "broken.py").write_text("raise RuntimeError('broken plugin')\n")
    names = available_policies({"plugin_path": str(tmp_path)})
    assert "reverse-pmid" in names
    assert "vorchd.plugins.broken" not in sys.modules
