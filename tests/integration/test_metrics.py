"""
GET /metrics: Prometheus text that the Prometheus client's own parser reads, true to the
seed API's answers, and moving as VMs are created and creates are refused; against real
Redis and libvirt test-driver PMs, in memory and over a real port.
"""

from __future__ import annotations

import math
import urllib.parse

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from tests.clients import InMemoryClient, LoopbackClient
from tests.harness import FLAVORS, start_daemon
from vorchd import metrics, room
from vorchd.model import Host, Resources
from vorchd.room import Refusal

# Two small PMs: flavor 3 (4 CPUs) fits on neither.
SIZES = [(2, 2048), (3, 3072)]
FLAVOR = {f["tid"]: f for f in FLAVORS}
RESOURCE = {"cpu": "cpu", "ram_mib": "ram", "disk_gib": "disk"}


def q(**args) -> str:
    return urllib.parse.urlencode(args)


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """
    Every sample of C{text} as parsed by prometheus_client: (name, labels) -> value.
    """
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def value(samples, name: str, **labels) -> float:
    return samples[name, frozenset((k, str(v)) for k, v in labels.items())]


def pm_labels(samples, name: str) -> set[str]:
    return {dict(labels)["pmid"] for n, labels in samples if n == name}


class UnitTests(TestCase):
    """
    The exposition text and the reason classes, without a daemon.
    """

    def test_reason_classes(self):
        """Refusals are classified, closest to success first; free text never becomes a label."""
        down, drained = Refusal(room.DOWN), Refusal(room.DRAINED)
        short = Refusal(room.NO_ROOM, "cpu (4 wanted, 2 free)")
        failed = Refusal(room.FAILED, "disk full")
        cases = [
            ([], "no_pm"),
            ([down, down], "down"),
            ([down, drained], "drained"),
            ([drained], "drained"),
            ([down, short], "no_room"),
            ([Refusal(room.NO_ROOM, "ram (1024 wanted, 10 free)")], "no_room"),
            ([short, failed], "hypervisor_error"),
            ([Refusal(room.VMID_TAKEN)], "other"),
            ([Refusal(room.UNKNOWN_PM)], "other"),
        ]
        for refusals, expected in cases:
            self.assertEqual(metrics.placement_reason(refusals), expected, refusals)
        for reason in {c[1] for c in cases}:
            self.assertIn(reason, metrics.PLACEMENT_REASONS)

    def test_text_parses(self):
        """The text parses; histogram buckets are cumulative and end in +Inf = count."""
        m = metrics.Metrics()
        for seconds in (0.001, 0.02, 0.3, 200):
            m.request_done("vm_create", "ok", seconds)
        m.request_done("nonsense", "weird", 0.1)
        m.placement_failed("no_room")
        m.placement_failed('free "text"\n')
        host = Host(1, Resources(4, 4096, 100), Resources(1, 512, 1), vms=1, drained=True)
        samples = parse(m.text([host]))
        self.assertEqual(value(samples, "vorchd_store_up"), 1)
        self.assertEqual(value(samples, "vorchd_pm_drained", pmid=1), 1)
        self.assertEqual(value(samples, "vorchd_pm_capacity", pmid=1, resource="ram_mib"), 4096)
        self.assertEqual(value(samples, "vorchd_pm_allocated", pmid=1, resource="disk_gib"), 1)
        self.assertEqual(value(samples, "vorchd_vms"), 1)
        ok = {"endpoint": "vm_create", "outcome": "ok"}
        self.assertEqual(value(samples, "vorchd_requests_total", **ok), 4)
        self.assertEqual(
            value(samples, "vorchd_requests_total", endpoint="other", outcome="failed"), 1
        )
        buckets = [
            (float(dict(labels)["le"]), v)
            for (n, labels), v in samples.items()
            if n == "vorchd_request_seconds_bucket" and ("endpoint", "vm_create") in labels
        ]
        buckets.sort()
        self.assertEqual([le for le, _ in buckets], [*map(float, metrics.BUCKETS), math.inf])
        counts = [v for _, v in buckets]
        self.assertEqual(counts, sorted(counts))
        self.assertEqual(
            value(samples, "vorchd_request_seconds_bucket", endpoint="vm_create", le="0.005"), 1
        )
        self.assertEqual(
            value(samples, "vorchd_request_seconds_bucket", endpoint="vm_create", le="0.5"), 3
        )
        self.assertEqual(counts[-1], 4)
        self.assertEqual(value(samples, "vorchd_request_seconds_count", endpoint="vm_create"), 4)
        self.assertAlmostEqual(
            value(samples, "vorchd_request_seconds_sum", endpoint="vm_create"), 200.321
        )
        self.assertEqual(value(samples, "vorchd_placement_failures_total", reason="no_room"), 1)
        self.assertEqual(value(samples, "vorchd_placement_failures_total", reason="other"), 1)
        reasons = {dict(ls)["reason"] for n, ls in samples if n.startswith("vorchd_placement")}
        self.assertEqual(reasons, set(metrics.PLACEMENT_REASONS))

    def test_text_without_store(self):
        """With Redis not answering, the text says so and still holds the counters."""
        samples = parse(metrics.Metrics().text(None))
        self.assertEqual(value(samples, "vorchd_store_up"), 0)
        self.assertFalse([n for n, _ in samples if n.startswith("vorchd_pm_")])
        self.assertEqual(
            value(samples, "vorchd_requests_total", endpoint="pm_list", outcome="ok"), 0
        )


class MetricsTestsMixin:
    """
    /metrics of a real daemon; subclasses say how it is reached.
    """

    client_type: type

    async def setUp(self):
        self.daemon = await start_daemon(self, SIZES)
        self.client = self.client_type(self.daemon)
        self.addCleanup(self.client.close)

    async def json(self, path: str):
        answer = await self.client.call(path)
        self.assertEqual(answer.status, 200, answer)
        return answer.json

    async def scrape(self):
        answer = await self.client.call("/metrics")
        self.assertEqual(answer.status, 200)
        self.assertEqual(
            answer.headers.getRawHeaders("content-type"),
            ["text/plain; version=0.0.4; charset=utf-8"],
        )
        return parse(answer.raw.decode("utf-8"))

    async def create(self, tid: int, name: str = "vm") -> int:
        answer = await self.json("/vm/create?" + q(name=name, instance_type=tid, image_id=1))
        return answer["vmid"]

    async def test_parses_and_matches_pm_query(self):
        """/metrics parses; per-PM capacity, allocation and VMs equal what pm/query answers."""
        samples = await self.scrape()
        self.assertEqual(value(samples, "vorchd_store_up"), 1)
        pmids = (await self.json("/pm/list"))["pmids"]
        self.assertEqual(pm_labels(samples, "vorchd_pm_up"), {str(p) for p in pmids})
        for pmid in pmids:
            pm = await self.json(f"/pm/query?pmid={pmid}")
            self.assertEqual(value(samples, "vorchd_pm_up", pmid=pmid), 1)
            self.assertEqual(value(samples, "vorchd_pm_drained", pmid=pmid), 0)
            self.assertEqual(value(samples, "vorchd_pm_vms", pmid=pmid), pm["vms"])
            for label, key in RESOURCE.items():
                cap = value(samples, "vorchd_pm_capacity", pmid=pmid, resource=label)
                used = value(samples, "vorchd_pm_allocated", pmid=pmid, resource=label)
                self.assertEqual(cap, pm["capacity"][key])
                self.assertEqual(cap - used, pm["free"][key])
        self.assertEqual(value(samples, "vorchd_vms"), 0)

    async def test_creates_move_metrics(self):
        """Created VMs move vorchd_vms, the PMs' VMs and allocation, and vm_create's counts."""
        before = await self.scrape()
        ok = {"endpoint": "vm_create", "outcome": "ok"}
        vmids = [await self.create(1), await self.create(2, "b"), await self.create(1, "c")]
        self.assertTrue(all(vmids), vmids)
        after = await self.scrape()
        self.assertEqual(value(after, "vorchd_vms"), value(before, "vorchd_vms") + 3)
        placed: dict[int, list[int]] = {}
        for vmid in vmids:
            vm = await self.json(f"/vm/query?vmid={vmid}")
            placed.setdefault(vm["pmid"], []).append(vm["instance_type"])
        for pmid in (1, 2):
            tids = placed.get(pmid, [])
            self.assertEqual(value(after, "vorchd_pm_vms", pmid=pmid), len(tids))
            for label, key in RESOURCE.items():
                self.assertEqual(
                    value(after, "vorchd_pm_allocated", pmid=pmid, resource=label),
                    sum(FLAVOR[t][key] for t in tids),
                )
        self.assertEqual(
            value(after, "vorchd_requests_total", **ok),
            value(before, "vorchd_requests_total", **ok) + 3,
        )
        for name in ("vorchd_request_seconds_count", "vorchd_request_seconds_bucket"):
            labels = {"endpoint": "vm_create"}
            if name.endswith("bucket"):
                labels["le"] = "+Inf"
            self.assertEqual(value(after, name, **labels), value(before, name, **labels) + 3)
        self.assertGreater(
            value(after, "vorchd_request_seconds_sum", endpoint="vm_create"),
            value(before, "vorchd_request_seconds_sum", endpoint="vm_create"),
        )
        # The first scrape was counted too, as an "other" request.
        self.assertGreaterEqual(
            value(after, "vorchd_requests_total", endpoint="other", outcome="ok"), 1
        )
        await self.json(f"/vm/destroy?vmid={vmids[0]}")
        self.assertEqual(value(await self.scrape(), "vorchd_vms"), 2)

    async def test_refused_creates_counted_by_reason(self):
        """Refused creates move vorchd_placement_failures_total under their reason class."""

        def failures(samples, reason):
            return value(samples, "vorchd_placement_failures_total", reason=reason)

        failed = {"endpoint": "vm_create", "outcome": "failed"}
        before = await self.scrape()
        self.assertEqual(await self.create(99), 0)  # unknown type
        self.assertEqual(await self.create(0), 0)  # non-positive type
        self.assertEqual(await self.create(3), 0)  # fits on no PM
        after = await self.scrape()
        self.assertEqual(failures(after, "bad_request"), failures(before, "bad_request") + 2)
        self.assertEqual(failures(after, "no_room"), failures(before, "no_room") + 1)
        self.assertEqual(
            value(after, "vorchd_requests_total", **failed),
            value(before, "vorchd_requests_total", **failed) + 3,
        )
        # A missing or non-integer argument is a create that failed, as a bad request;
        # a HEAD or a POST is not a create at all: malformed, no placement failure.
        self.assertEqual(await self.json("/vm/create?name=x&image_id=1"), {"vmid": 0})
        self.assertEqual(
            await self.json("/vm/create?name=x&instance_type=abc&image_id=1"), {"vmid": 0}
        )
        for method in ("HEAD", "POST"):
            answer = await self.client.call(
                "/vm/create?" + q(name="x", instance_type=1, image_id=1), method
            )
            self.assertEqual(answer.status, 200)
        for pmid in (1, 2):
            await self.daemon.fleet.store.set_drained(pmid, True)
        self.assertEqual(await self.create(1), 0)
        last = await self.scrape()
        self.assertEqual(failures(last, "bad_request"), failures(after, "bad_request") + 2)
        self.assertEqual(failures(last, "drained"), failures(after, "drained") + 1)
        self.assertEqual(sum(v for (n, _), v in last.items() if "placement" in n), 6)
        self.assertEqual(
            value(last, "vorchd_requests_total", endpoint="vm_create", outcome="failed"),
            value(after, "vorchd_requests_total", endpoint="vm_create", outcome="failed") + 3,
        )
        self.assertEqual(
            value(last, "vorchd_requests_total", endpoint="vm_create", outcome="malformed"), 2
        )
        self.assertEqual(value(last, "vorchd_pm_drained", pmid=1), 1)

    async def test_argument_errors_and_new_calls_counted(self):
        """
        Malformed arguments of a seed call count as failed (they answer its failure
        value), other methods as malformed; the calls on running VMs have endpoints of
        their own, and their failures count as failed.
        """
        before = await self.scrape()

        def moved(samples, endpoint, outcome):
            labels = {"endpoint": endpoint, "outcome": outcome}
            return value(samples, "vorchd_requests_total", **labels) - value(
                before, "vorchd_requests_total", **labels
            )

        for path in ("/vm/destroy?vmid=abc", "/vm/destroy", "/vm/destroy?vmid=1&vmid=1"):
            self.assertEqual(await self.json(path), {"status": 0}, path)
        self.assertEqual(await self.json("/pm/listvms"), {"vmids": 0})
        self.assertEqual(await self.json("/pm/query?pmid=x"), 0)
        self.assertEqual((await self.client.call("/vm/destroy?vmid=1", "POST")).json, 0)
        self.assertEqual((await self.client.call("/vm/destroy?vmid=1", "HEAD")).status, 200)
        self.assertEqual(await self.json("/vm/info?vmid=abc"), 0)
        for path in ("/vm/stop?vmid=0", "/vm/migrate?vmid=-1"):
            self.assertEqual(await self.json(path), {"status": 0}, path)
        self.assertEqual((await self.client.call("/vm/stop?vmid=1", "HEAD")).status, 200)
        after = await self.scrape()
        self.assertEqual(moved(after, "vm_destroy", "failed"), 3)
        self.assertEqual(moved(after, "vm_destroy", "malformed"), 2)
        self.assertEqual(moved(after, "pm_listvms", "failed"), 1)
        self.assertEqual(moved(after, "pm_query", "failed"), 1)
        self.assertEqual(moved(after, "vm_info", "failed"), 1)
        self.assertEqual(moved(after, "vm_stop", "failed"), 1)
        self.assertEqual(moved(after, "vm_stop", "malformed"), 1)
        self.assertEqual(moved(after, "vm_migrate", "failed"), 1)
        for endpoint in ("vm_info", "vm_stop", "vm_start", "vm_reboot", "vm_suspend"):
            self.assertIn(endpoint, metrics.ENDPOINT_NAMES)
        for endpoint in ("vm_resume", "vm_resize", "vm_migrate", "v1_fleet"):
            self.assertIn(endpoint, metrics.ENDPOINT_NAMES)

    async def test_seed_answers_unchanged(self):
        """/ and unknown paths still answer 0; only GET and HEAD of exactly /metrics serve it."""
        for path, method in [
            ("/", "GET"),
            ("/nope", "GET"),
            ("/metrics/", "GET"),
            ("/metrics.txt", "GET"),
            ("/METRICS", "GET"),
            ("/metrics", "POST"),
            ("/metrics", "DELETE"),
        ]:
            answer = await self.client.call(path, method)
            self.assertEqual((answer.status, answer.json), (200, 0), (path, method))
            self.assertEqual(
                answer.headers.getRawHeaders("content-type"), ["application/json"], path
            )
        head = await self.client.call("/metrics", "HEAD")
        self.assertEqual((head.status, head.raw), (200, b""))
        samples = await self.scrape()
        self.assertEqual(
            value(samples, "vorchd_requests_total", endpoint="other", outcome="malformed"), 7
        )

    async def test_store_down(self):
        """With Redis not answering, /metrics still answers 200: store down, counters kept."""
        await self.json("/pm/list")

        # What the daemon sees when Redis goes: its change stream lost.
        self.patch(self.daemon.fleet.feed, "connected", False)
        samples = await self.scrape()
        self.assertEqual(value(samples, "vorchd_store_up"), 0)
        self.assertFalse(pm_labels(samples, "vorchd_pm_up"))
        self.assertEqual(
            value(samples, "vorchd_requests_total", endpoint="pm_list", outcome="ok"), 1
        )


class InMemoryMetricsTests(MetricsTestsMixin, TestCase):
    """
    /metrics through StubTreq over the daemon's resource.
    """

    client_type = InMemoryClient


class LoopbackMetricsTests(MetricsTestsMixin, TestCase):
    """
    /metrics over the daemon's real port.
    """

    client_type = LoopbackClient
