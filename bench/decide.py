"""
The placement benchmark's one seam with vorchd: L{decide} sets up a fleet of
C{fleet_size} PMs for a policy and hands back the call that makes one placement
decision, which bench/run.py times. Nothing else in the harness touches placement.

Each way of deciding is a L{PATHS} entry: set-up from the same fleet, then a closure.

  - C{today}: C{vorchd.placement.candidates(policy, request, hosts, ratios)} over a list
    of C{vorchd.model.Host}, which filters every PM by room and has the policy rank the
    rest; the first candidate is the decision. Pure, and in every tree so far.
  - C{readmodel}, where the tree has the read model (C{vorchd.state}): the host table
    (numpy columns) filled with the same fleet, and the first pmid
    C{vorchd.placement.ranked} yields, as the daemon takes it.
  - C{readmodel-claimed}: the same, each decision followed by its claim applied to the
    chosen PM's row, so that each decision catches up on a changed PM (where the table
    keeps rankings, a repeated decision over an unchanged table costs next to nothing,
    which C{readmodel} alone would show).

bench/run.py times every path present; C{--placement-path NAME} picks one. When an API
changes, only these few lines follow it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from vorchd.model import Flavor, Host, Resources
from vorchd.placement import candidates
from vorchd.policies import Request, policy_named
from vorchd.policies.builtin import BUILTIN

POLICIES: tuple[str, ...] = tuple(BUILTIN)
RATIOS = {"cpu": 1.0, "ram": 1.0, "disk": 1.0}
FLAVOR = Flavor(tid=1, cpu=1, ram=512, disk=1)
REQUEST = Request(flavor=FLAVOR, image_id=1, name="bench")


def fleet(fleet_size: int, seed: int = 1) -> list[Host]:
    """
    C{fleet_size} hosts of a few sizes, each partly used (some full), in pmid order: a
    fleet that has run for a while, so that filtering and ranking both have work.
    """
    rng = random.Random(seed)
    sizes = [Resources(16, 65536, 100), Resources(32, 131072, 100), Resources(64, 262144, 100)]
    hosts = []
    for pmid in range(1, fleet_size + 1):
        capacity = rng.choice(sizes)
        vms = rng.randint(0, capacity.cpu)
        used = Resources(vms, vms * FLAVOR.ram, vms * FLAVOR.disk)
        hosts.append(Host(pmid=pmid, capacity=capacity, used=used, vms=vms))
    return hosts


def today(policy_name: str, fleet_size: int) -> Callable[[], object]:
    """
    vorchd.placement.candidates over a list of hosts, as the daemon calls it now.
    """
    policy = policy_named(policy_name, {"seed": "1"})
    hosts = fleet(fleet_size)

    def one():
        ranked, _refused = candidates(policy, REQUEST, hosts, RATIOS)
        return ranked[0].pmid if ranked else None

    return one


PATHS: dict[str, Callable[[str, int], Callable[[], object]]] = {"today": today}

try:  # the read model (an index of the fleet as numpy columns), where this tree has it
    from vorchd.placement import ranked
    from vorchd.state.model import FleetState
    from vorchd.state.table import HostTable
except ImportError:
    pass
else:

    def readmodel(policy_name: str, fleet_size: int) -> Callable[[], object]:
        """
        vorchd.placement.ranked over a read model whose host table holds the same fleet,
        every PM up: the first pmid it yields is the decision (the daemon reads on only
        when a claim fails).
        """
        policy = policy_named(policy_name, {"seed": "1"})
        state = FleetState()
        hosts = fleet(fleet_size)
        state.table = HostTable(h.pmid for h in hosts)
        for h in hosts:
            state.table.set(h.pmid, capacity=h.capacity, used=h.used, vms=h.vms, up=True)

        def one():
            return next(iter(ranked(policy, REQUEST, state, RATIOS)), None)

        return one

    PATHS["readmodel"] = readmodel

    def claimed(policy_name: str, fleet_size: int) -> Callable[[], object]:
        """
        As C{readmodel}, and each decision's claim then applied to the chosen PM's row
        (HostTable.set, as the read model applies the claim's change), so that every
        decision but the first sees a PM changed since the one before, as in the daemon.
        """
        policy = policy_named(policy_name, {"seed": "1"})
        state = FleetState()
        hosts = fleet(fleet_size)
        state.table = HostTable(h.pmid for h in hosts)
        for h in hosts:
            state.table.set(h.pmid, capacity=h.capacity, used=h.used, vms=h.vms, up=True)
        table = state.table
        wanted = FLAVOR.resources

        def one():
            pmid = next(iter(ranked(policy, REQUEST, state, RATIOS)), None)
            if pmid is not None:
                i = table.row[pmid]
                used = Resources(*(int(x) for x in table.used[:, i])) + wanted
                table.set(pmid, used=used, vms=int(table.vms[i]) + 1)
            return pmid

        return one

    PATHS["readmodel-claimed"] = claimed


def decide(policy_name: str, fleet_size: int, path: str = "today") -> Callable[[], object]:
    """
    Set up C{fleet_size} PMs for policy C{policy_name} (untimed) and return the timed
    call: one placement decision, answering the chosen pmid (or None).
    """
    return PATHS[path](policy_name, fleet_size)
