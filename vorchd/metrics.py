"""
vorchd's Prometheus metrics, served at C{GET /metrics} in the text exposition format
(version 0.0.4), written here without a client library.

Two kinds of numbers:

  - the fleet's state (PMs up, drained, capacity, allocation, VMs), from the daemon's
    read model, which follows Redis' change stream, so every daemon sharing a Redis
    reports the same values; while Redis does not answer, C{vorchd_store_up} is 0 and
    these are left out;
  - this daemon's own counters (requests per endpoint and outcome, their latency, failed
    creates by reason class), kept in memory by L{Metrics}: they start at 0 with the
    process and are per daemon.

Labels only ever hold values from small fixed sets (or PM ids): free-text reasons are
classified (L{placement_reason}) before they become a label.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from vorchd import openapi, room
from vorchd.model import Host
from vorchd.store import StoreUnavailable

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

# The API's calls (its OpenAPI document's paths but the document's own: the seed API, the
# fleet view and the calls on running VMs), by path, labelled after it (/vm/create:
# vm_create, /vm/migrate: vm_migrate); every other request counts as "other".
ENDPOINTS = {
    path.encode("ascii"): path[1:].replace("/", "_")
    for path in openapi.PATHS
    if path != "/openapi.json"
}
OTHER = "other"
ENDPOINT_NAMES = (*ENDPOINTS.values(), OTHER)

# ok: the call's success value; failed: the call's own failure value (a malformed argument
# included); malformed: the plain 0 of anything that is not a call (unknown path, another
# method, a HEAD of a call that changes state).
OUTCOMES = ("ok", "failed", "malformed")

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# Why a vm/create failed, as a label:
PLACEMENT_REASONS = (
    # a name, instance_type or image_id missing, empty, repeated, malformed, non-positive
    # or unknown
    "bad_request",
    "no_room",  # some PM was up and open, but none had room for the flavor
    "drained",  # the only PMs up were closed to new VMs by an admin
    "down",  # no PM could be reached
    "no_pm",  # the fleet has no PMs at all
    "hypervisor_error",  # a PM was chosen and its hypervisor failed to make the VM
    "image_unavailable",  # the image's source could not be read or fetched
    "store_unavailable",  # Redis did not answer
    "other",  # anything else (an unexpected error)
)

# (resource label, attribute of Resources)
RESOURCE_LABELS = (("cpu", "cpu"), ("ram_mib", "ram"), ("disk_gib", "disk"))


def endpoint_of(path: bytes) -> str:
    """
    The endpoint label of a request for C{path}: one of the API's calls, else C{other}.
    """
    return ENDPOINTS.get(path, OTHER)


def placement_reason(refusals: Iterable[room.Refusal]) -> str:
    """
    The reason class of a create no PM could take, from each PM's refusal: the one
    closest to success wins (a hypervisor that failed, then a PM without room, then a
    drained one, then one down).
    """
    kinds = {r.kind for r in refusals}
    if not kinds:
        return "no_pm"
    for kind, label in (
        (room.FAILED, "hypervisor_error"),
        (room.NO_ROOM, "no_room"),
        (room.DRAINED, "drained"),
        (room.DOWN, "down"),
    ):
        if kind in kinds:
            return label
    return "other"


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int):
        return str(value)
    if value.is_integer():
        return f"{value:.1f}"
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: dict[str, object], value: float) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {_number(value)}"
    return f"{name} {_number(value)}"


class Histogram:
    """
    One latency histogram: counts per upper bound (not cumulative), sum and count.
    """

    def __init__(self, buckets: Sequence[float] = BUCKETS):
        self.bounds = tuple(buckets)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        out, total = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            total += n
            out.append((bound, total))
        out.append((math.inf, self.count))
        return out


class Metrics:
    """
    This daemon's counters and histograms, and the exposition text of them and the
    fleet's state.
    """

    def __init__(self):
        self.requests = {(e, o): 0 for e in ENDPOINT_NAMES for o in OUTCOMES}
        self.latency = {e: Histogram() for e in ENDPOINT_NAMES}
        self.placement_failures = dict.fromkeys(PLACEMENT_REASONS, 0)

    def request_done(self, endpoint: str, outcome: str, seconds: float) -> None:
        """
        Count one answered request and its time from arrival to the answer written.
        """
        endpoint = endpoint if endpoint in self.latency else OTHER
        outcome = outcome if outcome in OUTCOMES else "failed"
        self.requests[endpoint, outcome] += 1
        self.latency[endpoint].observe(max(0.0, seconds))

    def placement_failed(self, reason: str) -> None:
        """
        Count one failed create of reason class C{reason}.
        """
        if reason not in self.placement_failures:
            reason = "other"
        self.placement_failures[reason] += 1

    def text(
        self, hosts: Sequence[Host] | None, store_up: bool | None = None, failovers: int = 0
    ) -> str:
        """
        The exposition text: the fleet as C{hosts} (C{None}: Redis did not answer), then
        this daemon's counters (C{failovers}: the Redis masters it has followed).
        """
        lines: list[str] = []

        def family(name: str, kind: str, help_: str, samples: Iterable[str]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)

        family(
            "vorchd_store_up",
            "gauge",
            "Whether Redis answers this daemon (1) or not (0).",
            [
                _sample(
                    "vorchd_store_up", {}, int(hosts is not None if store_up is None else store_up)
                )
            ],
        )
        family(
            "vorchd_store_failovers_total",
            "counter",
            "Times the Redis Sentinels named a new master that this daemon then followed.",
            [_sample("vorchd_store_failovers_total", {}, failovers)],
        )
        if hosts is not None:
            self._fleet(family, hosts)
        family(
            "vorchd_requests_total",
            "counter",
            "Requests answered by this daemon, by endpoint and outcome.",
            [
                _sample("vorchd_requests_total", {"endpoint": e, "outcome": o}, n)
                for (e, o), n in self.requests.items()
            ],
        )
        samples = []
        for endpoint, hist in self.latency.items():
            for bound, n in hist.cumulative():
                labels = {"endpoint": endpoint, "le": _number(float(bound))}
                samples.append(_sample("vorchd_request_seconds_bucket", labels, n))
            samples.append(_sample("vorchd_request_seconds_sum", {"endpoint": endpoint}, hist.sum))
            samples.append(
                _sample("vorchd_request_seconds_count", {"endpoint": endpoint}, hist.count)
            )
        family(
            "vorchd_request_seconds",
            "histogram",
            "Seconds from a request's arrival to its answer, by endpoint.",
            samples,
        )
        family(
            "vorchd_placement_failures_total",
            "counter",
            "VM creates this daemon answered as failed, by reason class.",
            [
                _sample("vorchd_placement_failures_total", {"reason": r}, n)
                for r, n in self.placement_failures.items()
            ],
        )
        return "\n".join(lines) + "\n"

    @staticmethod
    def _fleet(family: Callable, hosts: Sequence[Host]) -> None:
        def per_pm(name: str, value: Callable[[Host], float]) -> list[str]:
            return [_sample(name, {"pmid": h.pmid}, value(h)) for h in hosts]

        def per_resource(name: str, attr: str) -> list[str]:
            return [
                _sample(name, {"pmid": h.pmid, "resource": label}, getattr(getattr(h, attr), r))
                for h in hosts
                for label, r in RESOURCE_LABELS
            ]

        family(
            "vorchd_pm_up",
            "gauge",
            "Whether this daemon reaches the PM's hypervisor now.",
            per_pm("vorchd_pm_up", lambda h: int(h.up)),
        )
        family(
            "vorchd_pm_drained",
            "gauge",
            "Whether an admin closed the PM to new VMs.",
            per_pm("vorchd_pm_drained", lambda h: int(h.drained)),
        )
        family(
            "vorchd_pm_capacity",
            "gauge",
            "The PM's capacity as discovered (before overcommit): cpu, ram_mib, disk_gib.",
            per_resource("vorchd_pm_capacity", "capacity"),
        )
        family(
            "vorchd_pm_allocated",
            "gauge",
            "The sum of the flavors of the VMs placed (or being placed) on the PM.",
            per_resource("vorchd_pm_allocated", "used"),
        )
        family(
            "vorchd_pm_vms",
            "gauge",
            "VMs on the PM.",
            per_pm("vorchd_pm_vms", lambda h: h.vms),
        )
        family(
            "vorchd_vms",
            "gauge",
            "VMs in the fleet.",
            [_sample("vorchd_vms", {}, sum(h.vms for h in hosts))],
        )


async def scrape(fleet) -> bytes:
    """
    The exposition text for C{fleet} (a L{vorchd.fleet.Fleet}) now, as bytes; its
    state comes from the daemon's read model, and is left out while that model is not
    following Redis (before its first snapshot, or with the change stream lost).
    """
    try:
        state = fleet.ready()
    except StoreUnavailable:
        return fleet.metrics.text(None, failovers=fleet.store.failovers).encode("utf-8")
    hosts = [
        Host(
            pmid,
            state.pms[pmid].capacity,
            state.pms[pmid].used,
            len(state.pms[pmid].vmids),
            state.is_up(pmid),
            state.pms[pmid].drained,
        )
        for pmid in state.pm_ids
        if pmid in state.pms
    ]
    return fleet.metrics.text(hosts, fleet.store.down is None, fleet.store.failovers).encode(
        "utf-8"
    )
