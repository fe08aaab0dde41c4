"""
vorchd-sim without a daemon: what it promises over generated fleets and traces (held to
the room rule by an oracle of its own), the policies told apart by what they are for,
a plugin policy in the comparison, the trace readers, the fleet sources, the command
line, the figure and the admin's what-if.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import require
from vorchd import room
from vorchd.inventory import InputFileError
from vorchd.model import RESOURCES, Flavor, Resources
from vorchd.policies import policy_named
from vorchd.policies.builtin import BUILTIN
from vorchd.sim import cli, traces, whatif
from vorchd.sim.fleet import (
    SimError,
    SimFleet,
    SimPM,
    fleet_from_document,
    fleet_from_pm_file,
    fleet_from_sizes,
    parse_sizes,
)
from vorchd.sim.run import compare, policy_names, replay

ONE = dict.fromkeys(RESOURCES, 1.0)
FLAVORS = (Flavor(1, 1, 512, 1), Flavor(2, 2, 1024, 2), Flavor(3, 4, 2048, 3))

PLUGIN = """
from zope.interface import implementer
from vorchd.policies import IAllocationPolicy


@implementer(IAllocationPolicy)
class HighestFirst:
    name = "highest-first"

    def rank(self, request, hosts):
        return sorted(hosts, key=lambda h: -h.pmid)


highest = HighestFirst()
"""


def timeless(outcome) -> dict:
    """
    An outcome's JSON object without what depends on the clock.
    """
    d = outcome.as_dict()
    for key in ("seconds", "decisions_per_s"):
        d.pop(key)
    return d


def check_room_rule(fleet: SimFleet, trace, ratios, outcome, refuse_only_when_full=False):
    """
    Replay C{outcome}'s placements on C{fleet} with L{vorchd.room} alone: every VM went
    to a PM that had room for it (so no PM ever holds more than its capacity times the
    ratio), every destroy freed the PM its VM was on, and the sim's counts agree. With
    C{refuse_only_when_full}, every refused create found no PM with room.
    """
    pms = {pm.pmid: pm for pm in fleet.pms}
    used = {pm.pmid: pm.used for pm in fleet.pms}
    held: dict[int, int] = {}
    placed = refused = 0
    for k in range(len(trace)):
        flavor = trace.flavors[int(trace.flavor[k])]
        slot, pmid = int(trace.slot[k]), int(outcome.placements[k])
        if trace.create[k]:
            if pmid:
                pm = pms[pmid]
                why = room.refusal(
                    pm.capacity, used[pmid], flavor.resources, ratios, pm.up, pm.drained
                )
                assert why is None, (k, pmid, why)
                used[pmid] += flavor.resources
                assert room.effective(pm.capacity, ratios).covers(used[pmid])
                held[slot] = pmid
                placed += 1
            else:
                refused += 1
                if refuse_only_when_full:
                    for pm in fleet.pms:
                        why = room.refusal(
                            pm.capacity, used[pm.pmid], flavor.resources, ratios, pm.up, pm.drained
                        )
                        assert why is not None, (k, pm.pmid)
        else:
            assert pmid == held.pop(slot, 0), k
            if pmid:
                used[pmid] -= flavor.resources
    assert (outcome.placed, outcome.refused) == (placed, refused)
    return used


# -- properties over generated fleets and traces ------------------------------------------

pm_strategy = st.tuples(
    st.integers(0, 16), st.integers(0, 16384), st.integers(0, 200), st.booleans()
)
fleet_strategy = st.lists(pm_strategy, min_size=1, max_size=12).map(
    lambda rows: SimFleet(
        SimPM(pmid, Resources(cpu, ram, disk), drained=drained and pmid % 3 == 0)
        for pmid, (cpu, ram, disk, drained) in enumerate(rows, 1)
    )
)
flavors_strategy = st.lists(
    st.tuples(st.integers(1, 8), st.integers(1, 8192), st.integers(1, 50)), min_size=1, max_size=4
).map(lambda rows: tuple(Flavor(tid, *row) for tid, row in enumerate(rows, 1)))
ratios_strategy = st.fixed_dictionaries(
    {r: st.sampled_from([0.5, 1.0, 1.5, 2.0]) for r in RESOURCES}
)
lifetime_strategy = st.sampled_from(["exp:50", "fixed:30", "lognormal:40,1.5", "uniform:0,20"])


def generated(flavors, events, seed, lifetime, rate=1.0):
    return traces.generate(
        events,
        flavors,
        traces.default_mix(flavors),
        rate,
        traces.parse_lifetime(lifetime),
        seed,
    )


def temp_dir(case: SynchronousTestCase) -> Path:
    """
    A new empty directory, removed when C{case} is done.
    """
    path = Path(tempfile.mkdtemp(prefix="vorchd-test-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=80, deadline=None)
    @given(
        fleet_strategy,
        flavors_strategy,
        ratios_strategy,
        lifetime_strategy,
        st.integers(0, 2**32),
        st.integers(0, 150),
        st.sampled_from(sorted(BUILTIN)),
    )
    def test_no_pm_exceeds_its_room(self, fleet, flavors, ratios, lifetime, seed, events, name):
        """
        Whatever the fleet, trace, ratios and policy, each VM is placed on a PM with room for
        it by the room rule, so no PM ever holds more than its capacity times the ratio; and
        the fleet the sim ends with is what those placements add up to.
        """
        trace = generated(flavors, events, seed, lifetime)
        outcome = replay(policy_named(name, {"seed": "1"}), fleet, trace, ratios)
        used = check_room_rule(fleet, trace, ratios, outcome)
        self.assertEqual(
            outcome.pms_used, sum(1 for pm in fleet.pms if used[pm.pmid] != Resources())
        )

    @settings(max_examples=30, deadline=None)
    @given(
        fleet_strategy, flavors_strategy, ratios_strategy, lifetime_strategy, st.integers(0, 2**32)
    )
    def test_same_seed_same_result(self, fleet, flavors, ratios, lifetime, seed):
        """
        The same seed gives the same trace and, for every policy (random included), the same
        placements and figures.
        """
        runs = []
        for _ in range(2):
            trace = generated(flavors, 120, seed, lifetime)
            names = sorted(BUILTIN)
            outcomes = compare(names, fleet, trace, ratios, {"seed": str(seed)})
            runs.append((trace, outcomes))
        (t1, o1), (t2, o2) = runs
        for column in ("time", "create", "slot", "flavor"):
            self.assertTrue(np.array_equal(getattr(t1, column), getattr(t2, column)))
        for a, b in zip(o1, o2, strict=True):
            self.assertEqual(timeless(a), timeless(b))
            self.assertTrue(np.array_equal(a.placements, b.placements))

    def test_side_by_side_same_as_one_at_a_time(self):
        """
        Policies replayed side by side in processes of their own (jobs) give the same
        outcomes, in the same order, as one after another: every built-in policy, random
        included, and a plugin policy found in a plugin directory.
        """
        fleet = fleet_from_sizes(
            [Resources(16, 32768, 400)] * 12 + [Resources(32, 65536, 200)] * 8
        )
        trace = generated(FLAVORS, 3000, 11, "exp:40")
        with tempfile.TemporaryDirectory() as plugins:
            Path(plugins, "highest.py").write_text(PLUGIN)
            options = {"seed": "4", "plugin_path": plugins}
            names = policy_names(None, options)
            ratios = {"cpu": 1.5, "ram": 1.0, "disk": 1.0}
            serial = compare(names, fleet, trace, ratios, options, jobs=1)
            forked = compare(names, fleet, trace, ratios, options, jobs=3)
        self.assertIn("highest-first", names)
        self.assertEqual([o.policy for o in forked], names)
        for a, b in zip(serial, forked, strict=True):
            self.assertEqual(timeless(a), timeless(b))
            self.assertTrue(np.array_equal(a.placements, b.placements))
            self.assertTrue(np.array_equal(a.fill, b.fill))

    @settings(max_examples=60, deadline=None)
    @given(
        fleet_strategy,
        flavors_strategy,
        ratios_strategy,
        st.integers(0, 2**32),
        st.sampled_from(sorted(BUILTIN)),
    )
    def test_creates_only_refuse_nothing_until_full(self, fleet, flavors, ratios, seed, name):
        """
        On an empty fleet, a trace of creates alone is refused only where no PM has room for
        the request by the room rule (the others are down to what no such VM fits in).
        """
        trace = generated(flavors, 200, seed, "fixed:1e12")
        self.assertTrue(trace.create.all())
        outcome = replay(policy_named(name, {"seed": "1"}), fleet, trace, ratios)
        check_room_rule(fleet, trace, ratios, outcome, refuse_only_when_full=True)


# -- policies told apart --------------------------------------------------------------------


def packing_run(names=None, options=None):
    fleet = fleet_from_sizes([Resources(16, 32768, 400)] * 20)
    mix = {1: 0.5, 2: 0.3, 3: 0.2}
    lifetime = traces.parse_lifetime("fixed:1e12")
    # Creates only, for a third of the fleet's cpus.
    trace = traces.generate(60, FLAVORS, mix, 1.0, lifetime, seed=5)
    names = names or policy_names(None, options or {})
    return {o.policy: o for o in compare(names, fleet, trace, ONE, options or {"seed": "3"})}


class PoliciesToldApartTests(SynchronousTestCase):
    def test_best_fit_packs_worst_fit_spreads(self):
        """
        On a packing workload (creates filling a third of equal PMs) best-fit uses fewer PMs
        than worst-fit, and worst-fit leaves the least imbalance of all the built-in policies.
        """
        runs = packing_run(sorted(BUILTIN))
        print({name: (o.pms_used, round(o.imbalance, 4)) for name, o in runs.items()})
        self.assertTrue(all(o.refused == 0 for o in runs.values()))
        self.assertLess(runs["best-fit"].pms_used, runs["worst-fit"].pms_used)
        least = min(o.imbalance for o in runs.values())
        self.assertAlmostEqual(runs["worst-fit"].imbalance, least, delta=1e-12)
        self.assertLess(runs["worst-fit"].imbalance, runs["best-fit"].imbalance)

    def test_plugin_policy_compared_without_change(self):
        """
        A third-party policy dropped into a plugin directory is among the policies compared
        by default, placing as it ranks (through its rank(), not the indexed path).
        """
        with tempfile.TemporaryDirectory() as plugins:
            Path(plugins, "highest.py").write_text(PLUGIN)
            runs = packing_run(options={"plugin_path": plugins, "seed": "1"})
        self.assertLess(set(BUILTIN), set(runs))
        self.assertIn("highest-first", runs)
        placements = runs["highest-first"].placements
        self.assertEqual(placements[0], 20)
        self.assertEqual(runs["highest-first"].placed, 60)

    def test_plugin_policy_in_the_cli_json(self):
        """
        C{vorchd-sim --plugin-path DIR --json} lists the plugin's run beside the built-ins'.
        """
        with tempfile.TemporaryDirectory() as plugins:
            Path(plugins, "highest.py").write_text(PLUGIN)
            code, out, _ = run_cli(
                ["--pms", "4x(8,8192,100)", "--generate", "50", "--plugin-path", plugins, "--json"]
            )
        self.assertEqual(code, 0)
        names = [o["policy"] for o in json.loads(out)]
        self.assertTrue("highest-first" in names and set(BUILTIN) <= set(names))


# -- the trace readers --------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


class TraceReaderTests(SynchronousTestCase):
    def test_csv_trace(self):
        """
        vorchd's CSV layout: a header, comments, a destroy without a flavor, a name used
        again after its destroy.
        """
        tmp_path = temp_dir(self)
        path = write(
            tmp_path,
            "t.csv",
            "time,event,vm,flavor\n# warm-up\n0,create,a,2\n1.5,create,b,1\n"
            "2,destroy,a\n\n3,create,a,3\n4,destroy,b,1\n",
        )
        trace = traces.read_csv_trace(path, FLAVORS)
        self.assertEqual(trace.time.tolist(), [0, 1.5, 2, 3, 4])
        self.assertEqual(trace.create.tolist(), [True, True, False, True, False])
        self.assertEqual(trace.slot.tolist(), [0, 1, 0, 2, 1])
        self.assertEqual(trace.flavor.tolist(), [1, 0, 1, 2, 0])
        self.assertEqual([trace.name(s) for s in range(3)], ["a", "b", "a"])

    def test_csv_round_trip(self):
        """
        A generated trace written as CSV reads back the same.
        """
        tmp_path = temp_dir(self)
        trace = generated(FLAVORS, 300, 9, "lognormal:40,1.5")
        path = tmp_path / "g.csv"
        traces.write_csv_trace(trace, path)
        again = traces.read_csv_trace(path, FLAVORS)
        for column in ("time", "create", "slot", "flavor"):
            self.assertTrue(np.array_equal(getattr(trace, column), getattr(again, column)), column)

    def test_csv_trace_malformed(self):
        """
        A malformed CSV trace is refused with the file, the line and what is wrong.
        """
        for text, line, reason in [
            ("0,create,a,1\nx,create,b,1\n", 2, "time 'x' is not a number"),
            ("5,create,a,1\n3,create,b,1\n", 2, "before the line above"),
            ("0,create,a,9\n", 1, "flavor 9 is not in the catalog"),
            ("0,create,a\n", 1, "a create needs a flavor"),
            ("0,create,a,1\n1,create,a,1\n", 2, "already running (created at line 1)"),
            ("time,event,vm,flavor\n0,destroy,a\n", 2, "'a' is not running"),
            ("0,start,a,1\n", 1, "neither create nor destroy"),
            ("0,create,a,1,extra,more\n", 1, "6 fields"),
            ('0,create,"a\n', 1, "unexpected end of data"),
        ]:
            tmp_path = temp_dir(self)
            path = write(tmp_path, "bad.csv", text)
            with self.assertRaises(InputFileError) as caught:
                traces.read_csv_trace(path, FLAVORS)
            message = str(caught.exception)
            self.assertTrue(
                message.startswith(f"trace {path}, line {line}: "), ((text, line, reason), message)
            )
            self.assertIn(reason, message, (text, line, reason))

    def test_csv_trace_not_utf8(self):
        """
        Bytes that are not UTF-8 are refused with their line.
        """
        tmp_path = temp_dir(self)
        path = tmp_path / "bad.csv"
        path.write_bytes(b"0,create,a,1\n1,create,\xff,1\n")
        with self.assertRaises(InputFileError) as caught:
            traces.read_csv_trace(path, FLAVORS)
        self.assertRegex(str(caught.exception), r"bad.csv, line 2: not UTF-8 text \(byte 0xff\)")


AZURE = (
    "a1,s,d,0,600,90.1,10.2,80.3,Interactive,2,4\n"
    "a2,s,d,300,300,5,1,4,Delay-insensitive,4,8\n"
    "a3,s,d,300,2592000,50,20,40,Unknown,>24,>64\n"
    "a4,s,d,600,900,1,1,1,Interactive,1,2\n"
)


class AzureTraceTests(SynchronousTestCase):
    def test_azure_trace(self):
        """
        The Azure vmtable.csv layout: each VM created and deleted at its seconds, as the
        smallest flavor holding its buckets (GB read as GiB); one no flavor holds is left out
        and counted; at one second a destroy comes first, but never before its own create.
        """
        tmp_path = temp_dir(self)
        flavors = (
            Flavor(1, 2, 8192, 10),
            Flavor(2, 2, 4096, 10),
            Flavor(3, 8, 8192, 10),
            Flavor(4, 4, 16384, 10),
        )
        trace = traces.read_azure_trace(write(tmp_path, "vmtable.csv", AZURE), flavors)
        self.assertEqual(trace.left_out, 1)  # a3: more than 24 cores
        self.assertEqual(trace.slots, 3)
        rows = list(
            zip(
                trace.time.tolist(),
                trace.create.tolist(),
                trace.slot.tolist(),
                trace.flavor.tolist(),
                strict=True,
            )
        )
        self.assertEqual([trace.name(s) for s in range(3)], ["a1", "a2", "a4"])
        # a1 (2 cores, 4 GB) -> (2, 4096); a2 (4, 8 GB) -> (4, 16384) as (8, 8192) has more
        # cpus; a4 (1, 2 GB) -> (2, 4096).
        self.assertEqual(
            rows,
            [
                (0.0, True, 0, 1),
                (300.0, True, 1, 3),
                (300.0, False, 1, 3),
                (600.0, False, 0, 1),
                (600.0, True, 2, 1),
                (900.0, False, 2, 1),
            ],
        )
        self.assertEqual(traces.detect_layout(str(tmp_path / "vmtable.csv")), "azure")

    def test_azure_trace_malformed(self):
        """
        A malformed vmtable.csv is refused with the file, the line and what is wrong.
        """
        for text, reason in [
            (
                "vmid,sub,dep,created,deleted,max,avg,p95,cat,cores,mem\n",
                "created 'created' is not",
            ),
            ("a,s,d,10,5,1,1,1,Interactive,2,4\n", "deleted 5 is before created 10"),
            ("a,s,d,0,5,1,1,1,Interactive,two,4\n", "core-count bucket 'two'"),
            ("a,s,d,0,5,1,1,1,Interactive,2\n", "10 columns; vmtable.csv has 11"),
            ("a,s,d,0,5,x,1,1,Interactive,2,4\n", "max cpu 'x' is not a number"),
        ]:
            tmp_path = temp_dir(self)
            path = write(tmp_path, "vmtable.csv", AZURE + text)
            with self.assertRaises(InputFileError) as caught:
                traces.read_azure_trace(path, FLAVORS)
            self.assertTrue(
                str(caught.exception).startswith(f"trace {path}, line 5: "), (text, reason)
            )
            self.assertIn(reason, str(caught.exception), (text, reason))


# -- fleets ---------------------------------------------------------------------------------


class FleetTests(SynchronousTestCase):
    def test_sizes(self):
        """
        C{--pms} sizes: COUNTx(CPU,RAM,DISK), several joined, and a clear error otherwise.
        """
        sizes = parse_sizes("2x(32,131072,1000) + (4, 4096, 10)")
        self.assertEqual(sizes, [Resources(32, 131072, 1000)] * 2 + [Resources(4, 4096, 10)])
        with self.assertRaises(SimError) as caught:
            parse_sizes("200x(32,131072)")
        self.assertRegex(str(caught.exception), "expected COUNTx")

    def test_pm_file_of_test_nodes(self):
        """
        A pm_file of test-driver nodes: each PM's size as libvirt's test driver reports it
        (the topology's product capped by <active>, KiB as MiB, 100 GiB of pool), held to
        libvirt itself where it is installed.
        """
        tmp_path = temp_dir(self)
        nodes = {
            "a.xml": "<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores>"
            "<threads>1</threads><active>4</active></cpu><memory>8388608</memory></node>",
            "b.xml": "<node><cpu><active>5</active></cpu></node>",
            "c.xml": "<node><cpu><active>40</active></cpu><memory>1048576</memory></node>",
        }
        for name, xml in nodes.items():
            (tmp_path / name).write_text(xml)
        lines = [f"test://{tmp_path / name}" for name in nodes] + ["test:///default"]
        pm_file = write(tmp_path, "pm_file", "# nodes\n" + "\n".join(lines) + "\n")
        fleet = fleet_from_pm_file(pm_file)
        expected = [
            Resources(4, 8192, 100),
            Resources(5, 3072, 100),
            Resources(16, 1024, 100),
            Resources(16, 3072, 100),
        ]
        self.assertEqual([pm.capacity for pm in fleet.pms], expected)
        self.assertEqual([pm.pmid for pm in fleet.pms], [1, 2, 3, 4])
        try:
            import libvirt
        except ImportError:
            require("could not import 'libvirt'")
        for line, capacity in zip(lines, expected, strict=True):
            info = libvirt.open(line).getInfo()
            self.assertEqual((info[2], info[1]), (capacity.cpu, capacity.ram))

    def test_pm_file_of_real_hosts_refused(self):
        """
        A pm_file line that is not a test-driver node is refused with its line: only a node
        file tells the simulator a PM's size.
        """
        tmp_path = temp_dir(self)
        pm_file = write(tmp_path, "pm_file", "test:///default\n10.0.0.5\n")
        with self.assertRaises(InputFileError) as caught:
            fleet_from_pm_file(pm_file)
        self.assertRegex(str(caught.exception), r"line 2: '10.0.0.5' is not a libvirt test-driver")
        (tmp_path / "x.xml").write_text("<domain/>")
        pm_file = write(tmp_path, "pm_file", f"test://{tmp_path}/x.xml\n")
        with self.assertRaises(InputFileError) as caught:
            fleet_from_pm_file(pm_file)
        self.assertRegex(str(caught.exception), r"line 1: node file .* not <node>")


DOCUMENT = {
    "seq": 7,
    "policy": "first-fit",
    "ratios": {"cpu": 2.0, "ram": 1.0, "disk": 1.0},
    "types": [
        {"tid": 1, "cpu": 1, "ram": 512, "disk": 1},
        {"tid": 2, "cpu": 2, "ram": 1024, "disk": 2},
    ],
    "images": [{"id": 1, "name": "cirros"}],
    "pms": [
        {
            "pmid": 1,
            "state": "up",
            "capacity": {"cpu": 4, "ram": 4096, "disk": 100},
            "free": {"cpu": 5, "ram": 2560, "disk": 97},
            "vmids": [1, 2],
        },
        {
            "pmid": 2,
            "state": "drained",
            "capacity": {"cpu": 8, "ram": 8192, "disk": 100},
            "free": {"cpu": 16, "ram": 8192, "disk": 100},
            "vmids": [],
        },
        {
            "pmid": 3,
            "state": "down",
            "capacity": {"cpu": 8, "ram": 8192, "disk": 100},
            "free": {"cpu": 14, "ram": 7168, "disk": 98},
            "vmids": [3],
        },
        {
            "pmid": 4,
            "state": "up",
            "capacity": {"cpu": 2, "ram": 2048, "disk": 100},
            "free": {"cpu": 4, "ram": 2048, "disk": 100},
            "vmids": [],
        },
        {
            "pmid": 5,
            "state": "retired",
            "capacity": {"cpu": 2, "ram": 2048, "disk": 100},
            "free": {"cpu": 4, "ram": 2048, "disk": 100},
            "vmids": [],
        },
    ],
    "vms": [],
}


class FleetDocumentTests(SynchronousTestCase):
    def test_fleet_from_document(self):
        """
        /v1/fleet as it is: what the VMs take (the limit under the document's ratios less
        what is free), the down and drained PMs as they are, the retired left out; its
        flavors, ratios and policy kept.
        """
        fleet = fleet_from_document(DOCUMENT)
        self.assertEqual([pm.pmid for pm in fleet.pms], [1, 2, 3, 4])
        self.assertEqual(fleet.pms[0].used, Resources(3, 1536, 3))
        self.assertEqual(fleet.pms[0].vms, 2)
        self.assertEqual((fleet.pms[1].drained, fleet.pms[2].up), (True, False))
        self.assertTrue(fleet.ratios == DOCUMENT["ratios"] and fleet.policy == "first-fit")
        self.assertEqual([f.tid for f in fleet.flavors], [1, 2])
        table = fleet.table()
        self.assertEqual(table.open.tolist(), [True, False, False, True])
        with self.assertRaises(SimError) as caught:
            fleet_from_document({"pms": []})
        self.assertRegex(str(caught.exception), "not a /v1/fleet document")

    def test_whatif_on_the_live_fleet(self):
        """
        whatif: the policy in force and those named, on the fleet as it is, under its ratios:
        the VMs already there keep their room, and the drained and down PMs take nothing.
        """
        tmp_path = temp_dir(self)
        out, err = io.StringIO(), io.StringIO()
        saved = tmp_path / "trace.csv"
        argv = ["best-fit", "--generate", "40", "--seed", "2", "--save-trace", str(saved)]
        outcomes = whatif.whatif(DOCUMENT, argv, out=out, err=err)
        self.assertEqual([o.policy for o in outcomes], ["first-fit", "best-fit"])
        text = out.getvalue()
        self.assertTrue(
            "first-fit (now)" in text and "4 PMs" in text and "3 VMs already placed" in text
        )
        self.assertIn("cpu=2", text)
        fleet = fleet_from_document(DOCUMENT)
        trace = traces.read_csv_trace(saved, fleet.flavors)
        for o in outcomes:
            self.assertLessEqual(set(o.placements.tolist()), {0, 1, 4})
            self.assertGreater(o.placed, 0)
            check_room_rule(fleet, trace, fleet.ratios, o)


# -- the command line and the figure -------------------------------------------------------


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


class CommandLineTests(SynchronousTestCase):
    def test_cli_json(self):
        """
        --json: one object per policy asked, holding at least what the issue lists.
        """
        code, out, _ = run_cli(
            [
                "--pms",
                "10x(8,16384,200)",
                "--generate",
                "300",
                "--policies",
                "best-fit,worst-fit",
                "--ratios",
                "cpu=2",
                "--json",
                "-q",
            ]
        )
        self.assertEqual(code, 0)
        answer = json.loads(out)
        self.assertEqual([o["policy"] for o in answer], ["best-fit", "worst-fit"])
        for o in answer:
            for key in (
                "policy",
                "placed",
                "refused",
                "pms_used",
                "imbalance",
                "stranded",
                "decisions_per_s",
            ):
                self.assertIn(key, o)
            self.assertTrue(len(o["series"]["time"]) == len(o["series"]["cpu"]) > 1)

    def test_cli_errors(self):
        """
        A fleet, trace or option the simulator cannot use ends it with one line naming what
        is wrong (status 1); wrong usage is status 2.
        """
        tmp_path = temp_dir(self)
        bad = write(tmp_path, "bad.csv", "0,create,a,1\n0,create,a,1\n")
        code, _, err = run_cli(
            [
                "--pms",
                "2x(4,4096,100)",
                "--trace",
                bad,
                "--flavor-file",
                write(tmp_path, "f", '{"types": [{"tid": 1, "cpu": 1, "ram": 1, "disk": 1}]}'),
            ]
        )
        self.assertTrue(code == 1 and f"trace {bad}, line 2: vm 'a' is already running" in err)
        code, _, err = run_cli(["--generate", "10"])
        self.assertTrue(code == 1 and "no fleet" in err)
        code, _, err = run_cli(["--pms", "2x(4,4096,100)"])
        self.assertTrue(code == 1 and "no workload" in err)
        code, _, err = run_cli(
            ["--pms", "2x(4,4096,100)", "--generate", "5", "--policies", "nope"]
        )
        self.assertTrue(code == 1 and "unknown allocation policy 'nope'" in err)
        code, _, err = run_cli(["--pms", "2x(4,4096,100)", "--generate", "5", "--ratios", "gpu=2"])
        self.assertEqual(code, 2)

    def test_plot_is_a_png(self):
        """
        --plot writes a PNG that reads back as an image.
        """
        tmp_path = temp_dir(self)
        try:
            import matplotlib.image as image
        except ImportError:
            require("could not import 'matplotlib.image'")
        path = tmp_path / "sim.png"
        code, _, err = run_cli(
            ["--pms", "20x(16,32768,400)", "--generate", "400", "--plot", str(path), "-q"]
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        pixels = image.imread(str(path))
        self.assertTrue(pixels.ndim == 3 and pixels.shape[0] > 400 and pixels.shape[1] > 400)
