"""
The replay: one policy over one fleet and one trace, decided by the daemon's own
placement code, and every policy asked over the same fleet and trace.

A decision is what the daemon's create path (L{vorchd.fleet.create}) makes of
L{vorchd.placement.ranked}: it tries the ranked PMs in order and the authority's claim
re-checks room; with one request at a time nothing races, so the first ranked PM always
has room and is the one chosen: L{vorchd.placement.chosen}, the same first PM by the
same code (for a keyed policy, the ranking the host table keeps, so a decision costs
about the same whatever the fleet's size). ranked() offers only PMs with room by the
room rule (L{vorchd.room}), under the overcommit ratios given. A destroy frees the room its VM
took. Nothing here is random but what a policy draws (C{random} takes the C{seed}
option), so a run is the same for the same fleet, trace, ratios and options, whether the
policies are replayed one after another or side by side in processes of their own.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Mapping, Sequence

import numpy as np
from attrs import define, field

from vorchd.model import RESOURCES
from vorchd.placement import chosen
from vorchd.policies import IAllocationPolicy, Request, available_policies, policy_named
from vorchd.sim import measure
from vorchd.sim.fleet import SimError, SimFleet
from vorchd.sim.traces import Trace
from vorchd.state.model import FleetState

DEFAULT_SAMPLES = 100
"""How many times over a run the fleet is measured for the series (evenly by event)."""

SERIES = ("time", "cpu", "ram", "disk", "pms_used", "refused", "imbalance")
"""The series a run records, each one value per sample."""


@define
class Outcome:
    """
    What one policy made of a trace.

    @ivar placed: creates placed.
    @ivar refused: creates no PM took; C{refusals}: how many for each reason of
        L{vorchd.sim.measure.why_refused}; C{refused_by_flavor}: how many of each tid.
    @ivar destroyed: destroys of VMs that had been placed.
    @ivar pms: PMs in the fleet; C{pms_used}: how many hold a VM at the end.
    @ivar utilisation: per resource at the end (L{measure.utilisation}).
    @ivar imbalance: at the end (L{measure.imbalance}), and per resource.
    @ivar stranded: at the end (L{measure.stranded}).
    @ivar decisions: creates decided (placed or refused), in C{seconds} of the replay
        (C{cpu_seconds} of its process's CPU time).
    @ivar series: each of L{SERIES}, one value per sample, the first before any event.
    @ivar fill: each PM's fill at the end (L{measure.fill}), in pmid order.
    @ivar placements: per event, the pmid the VM was placed on (a create) or freed from (a
        destroy); 0 where a create was refused, and for that VM's destroy.
    """

    policy: str
    placed: int = 0
    refused: int = 0
    refusals: dict[str, int] = field(factory=dict)
    refused_by_flavor: dict[int, int] = field(factory=dict)
    destroyed: int = 0
    pms: int = 0
    pms_used: int = 0
    utilisation: dict[str, float] = field(factory=dict)
    imbalance: float = 0.0
    imbalance_by_resource: dict[str, float] = field(factory=dict)
    stranded: dict[str, float] = field(factory=dict)
    decisions: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    series: dict[str, list] = field(factory=dict)
    fill: np.ndarray = field(factory=lambda: np.zeros(0))
    placements: np.ndarray = field(factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def decisions_per_s(self) -> float:
        return self.decisions / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self, series: bool = True) -> dict:
        """
        The JSON object of C{vorchd-sim --json} (without C{fill} and C{placements}).
        """
        out = {
            "policy": self.policy,
            "placed": self.placed,
            "refused": self.refused,
            "refusals": dict(sorted(self.refusals.items())),
            "refused_by_flavor": {str(t): n for t, n in sorted(self.refused_by_flavor.items())},
            "destroyed": self.destroyed,
            "pms": self.pms,
            "pms_used": self.pms_used,
            "utilisation": self.utilisation,
            "imbalance": self.imbalance,
            "imbalance_by_resource": self.imbalance_by_resource,
            "stranded": self.stranded,
            "decisions": self.decisions,
            "seconds": self.seconds,
            "decisions_per_s": self.decisions_per_s,
        }
        if series:
            out["series"] = self.series
        return out


def _sample_points(n: int, samples: int) -> list[int]:
    """
    The event indices after which the fleet is measured: C{samples} of them, evenly
    spread, the last one the last event.
    """
    if n == 0 or samples <= 0:
        return []
    return sorted({max(0, (n * j) // samples - 1) for j in range(1, samples + 1)})


def replay(
    policy: IAllocationPolicy,
    fleet: SimFleet,
    trace: Trace,
    ratios: Mapping[str, float],
    samples: int = DEFAULT_SAMPLES,
) -> Outcome:
    """
    Replay C{trace} on a fresh copy of C{fleet}, each create placed by C{policy} through
    L{vorchd.placement.ranked} under C{ratios}.

    @param policy: a policy instance of its own (one that keeps state, as round-robin
        does, starts where it is).
    @param samples: how many times to measure the fleet for the series.
    """
    ratios = {r: float(ratios[r]) for r in RESOURCES}
    table = fleet.table()
    state = FleetState()
    state.table = table
    # One request per flavor: what a policy is told of a VM is its flavor (the built-in
    # policies read nothing else; a plugin sees the name "sim" and image 0).
    requests = [Request(f, 0, "sim") for f in trace.flavors]
    wanted = [(f.cpu, f.ram, f.disk) for f in trace.flavors]
    given_back = [(-f.cpu, -f.ram, -f.disk) for f in trace.flavors]
    asked = [trace.flavors[k] for k in sorted(set(trace.flavor[trace.create].tolist()))]
    vms, row = table.vms, table.row
    times = trace.time.tolist()
    creates = trace.create.tolist()
    slots = trace.slot.tolist()
    flavors = trace.flavor.tolist()
    # Each slot's PM column + 1; 0 while it is not placed (or was refused).
    where = [0] * len(trace)
    placements = [0] * len(trace)
    pmids = table.pmid.tolist()
    out = Outcome(policy=getattr(policy, "name", repr(policy)), pms=len(table))
    series: dict[str, list] = {name: [] for name in SERIES}

    def sample(at: float) -> None:
        series["time"].append(at)
        for r, value in measure.utilisation(table, ratios).items():
            series[r].append(value)
        series["pms_used"].append(int(np.count_nonzero(vms)))
        series["refused"].append(out.refused)
        series["imbalance"].append(measure.imbalance(table, ratios)[0])

    points = _sample_points(len(trace), samples)
    sample(times[0] if times else 0.0)
    next_point = points[0] if points else -1
    p = 0
    placed = refused = destroyed = 0
    refusals: dict[str, int] = {}
    by_flavor: dict[int, int] = {}
    started = time.perf_counter()
    cpu_started = time.process_time()
    for k in range(len(trace)):
        f = flavors[k]
        s = slots[k]
        if creates[k]:
            pmid = chosen(policy, requests[f], state, ratios)
            if pmid is None:
                refused += 1
                out.refused = refused
                flavor = requests[f].flavor
                why = measure.why_refused(table, flavor.resources, ratios)
                refusals[why] = refusals.get(why, 0) + 1
                by_flavor[flavor.tid] = by_flavor.get(flavor.tid, 0) + 1
            else:
                # The room the claim takes, changed by column (HostTable.set, with
                # Resources objects, would cost more than the rest).
                i = row[pmid]
                table.add(i, wanted[f], 1)
                where[s] = i + 1
                placements[k] = pmid
                placed += 1
        else:
            i = where[s] - 1
            if i >= 0:
                table.add(i, given_back[f], -1)
                where[s] = 0
                placements[k] = pmids[i]
                destroyed += 1
        if k == next_point:
            sample(times[k])
            p += 1
            next_point = points[p] if p < len(points) else -1
    out.seconds = time.perf_counter() - started
    out.cpu_seconds = time.process_time() - cpu_started
    out.placed, out.refused, out.destroyed = placed, refused, destroyed
    out.refusals = refusals
    out.refused_by_flavor = dict(sorted(by_flavor.items()))
    out.decisions = placed + refused
    out.pms_used = int(np.count_nonzero(vms))
    out.utilisation = measure.utilisation(table, ratios)
    out.imbalance, out.imbalance_by_resource = measure.imbalance(table, ratios)
    out.stranded = measure.stranded(table, ratios, asked or trace.flavors)
    out.series = series
    out.fill = measure.fill(table, ratios)
    out.placements = np.array(placements, dtype=np.int64)
    return out


def policy_names(wanted: Sequence[str] | None, options: Mapping[str, str]) -> list[str]:
    """
    The policies to compare: C{wanted}, or every built-in policy and every plugin found
    (L{available_policies}).
    """
    return list(wanted) if wanted else available_policies(options)


def compare(
    names: Sequence[str],
    fleet: SimFleet,
    trace: Trace,
    ratios: Mapping[str, float],
    options: Mapping[str, str] | None = None,
    samples: int = DEFAULT_SAMPLES,
    progress=None,
    jobs: int = 1,
) -> list[Outcome]:
    """
    L{replay} C{trace} on C{fleet} for each policy named, each a new instance made with
    C{options} (the C{[allocation]} keys: C{seed}, C{weights}, C{plugin_path}), in order.

    @param progress: called with each L{Outcome} as it is made, if given, in order.
    @param jobs: how many policies to replay at once, each in a process of its own
        (spawned: each is handed the fleet, trace and options, and makes its policies
        by name as here); the outcomes are the same as one at a time, as each replay
        starts from its own new policy and fleet.
    @raise SimError: a name is no policy, or an option is malformed.
    """
    options = dict(options or {})
    policies = []
    for name in names:
        try:
            policies.append(policy_named(name, options))
        except (LookupError, ValueError) as e:
            raise SimError(str(e)) from None
    jobs = min(jobs, len(names))
    if jobs > 1:
        return _compare_in_processes(
            names, jobs, (fleet, trace, ratios, options, samples), progress
        )
    outcomes = []
    for name, policy in zip(names, policies, strict=True):
        outcome = replay(policy, fleet, trace, ratios, samples)
        outcome.policy = name
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    return outcomes


# What a replaying process was handed (once, when it started).
_work: tuple | None = None


def _receive(work: tuple) -> None:
    global _work
    _work = work


def _replay_named(name: str) -> Outcome:
    fleet, trace, ratios, options, samples = _work
    outcome = replay(policy_named(name, options), fleet, trace, ratios, samples)
    outcome.policy = name
    return outcome


def _compare_in_processes(names: Sequence[str], jobs: int, work: tuple, progress) -> list[Outcome]:
    # Spawned, not forked: a fresh interpreter inherits no other thread's locks (a fork
    # of a process with threads, such as a test run's or a Twisted program's, can hang),
    # and finds plugins again by the same options and sys.path.
    context = multiprocessing.get_context("spawn")
    with context.Pool(jobs, initializer=_receive, initargs=(work,)) as pool:
        outcomes = []
        for outcome in pool.imap(_replay_named, names):
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
        return outcomes
