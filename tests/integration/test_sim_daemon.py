"""
The simulator and the daemon agree: one short trace of creates and destroys, sent to a
real daemon (real Redis, a libvirt test-driver fleet) over HTTP and replayed by
vorchd-sim on the same pm_file and flavors, places every VM on the same PM (and refuses
the same creates), for each deterministic policy; and the fleet read from the daemon's
own /v1/fleet simulates the same as the one read from its pm_file.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.clients import LoopbackClient
from tests.harness import start_daemon
from vorchd.inventory import parse_flavor_file
from vorchd.policies import policy_named
from vorchd.sim import cli, whatif
from vorchd.sim.fleet import fetch_document, fleet_from_document, fleet_from_pm_file
from vorchd.sim.run import replay
from vorchd.sim.traces import read_csv_trace

# PMs of unequal shapes, so that each policy has a choice to make: (cpus, MiB).
SIZES = [(4, 4096), (8, 8192), (2, 2048), (6, 3072)]

# Flavors (tests.harness.FLAVORS): 1 = (1, 512, 1), 2 = (2, 1024, 2), 3 = (4, 2048, 3).
# Enough 4-vCPU VMs that the last ones find no room on some policies.
TRACE = """time,event,vm,flavor
0,create,a,3
1,create,b,1
2,create,c,2
3,create,d,3
4,destroy,b
5,create,e,1
6,create,f,2
7,destroy,a
8,create,g,3
9,create,h,3
10,create,i,2
11,create,j,3
12,destroy,c
13,create,k,1
14,create,l,2
"""


class SimulatorAgreesWithDaemonTests(TestCase):
    """
    vorchd-sim's decisions are the daemon's.
    """

    async def through_daemon(self, policy: str):
        """
        Send L{TRACE} to a fresh daemon of L{SIZES} running C{policy}; return the daemon,
        the pmid of each event as the daemon answered it (0 for a refused create and its
        destroy), and its /v1/fleet before the first event.
        """
        daemon = await start_daemon(self, SIZES, allocation={"policy": policy})
        client = LoopbackClient(daemon)
        self.addCleanup(client.close)
        before = await deferToThread(fetch_document, daemon.url)
        trace_file = daemon.dir / "trace.csv"
        trace_file.write_text(TRACE)
        vmids: dict[str, int] = {}
        pmids = []
        for line in TRACE.splitlines()[1:]:
            _, event, name, *tid = line.split(",")  # a destroy has no flavor
            if event == "create":
                answer = await client.call(
                    f"/vm/create?name={name}&instance_type={tid[0]}&image_id=1"
                )
                vmid = answer.json["vmid"]
                pmid = 0
                if vmid:
                    vmids[name] = vmid
                    pmid = (await client.call(f"/vm/query?vmid={vmid}")).json["pmid"]
                pmids.append(pmid)
            else:
                vmid = vmids.pop(name, 0)
                pmid = 0
                if vmid:
                    pmid = (await client.call(f"/vm/query?vmid={vmid}")).json["pmid"]
                    destroyed = await client.call(f"/vm/destroy?vmid={vmid}")
                    self.assertEqual(destroyed.json, {"status": 1})
                pmids.append(pmid)
        return daemon, pmids, before

    async def check(self, policy: str) -> None:
        daemon, answered, before = await self.through_daemon(policy)
        flavors = parse_flavor_file(daemon.dir / "flavor_file")
        trace = read_csv_trace(daemon.dir / "trace.csv", flavors)
        ratios = before["ratios"]
        from_file = fleet_from_pm_file(daemon.dir / "pm_file")
        from_daemon = fleet_from_document(before)
        # The node files say what discovery read.
        self.assertEqual(
            [pm.capacity for pm in from_file.pms], [pm.capacity for pm in from_daemon.pms]
        )
        for fleet in (from_file, from_daemon):
            outcome = replay(policy_named(policy), fleet, trace, ratios)
            self.assertEqual(outcome.placements.tolist(), answered, (policy, fleet.pms[0].source))
        print(f"{policy}: {answered}")
        # The trace runs the fleet out of room (j at least is refused): refusals agree too.
        self.assertIn(0, answered)

    async def test_best_fit(self):
        """
        best-fit: the same PM for every VM, in the daemon and in the simulator.
        """
        await self.check("best-fit")

    async def test_worst_fit(self):
        """
        worst-fit: the same PM for every VM, in the daemon and in the simulator.
        """
        await self.check("worst-fit")

    async def test_round_robin(self):
        """
        round-robin, which keeps its place from one request to the next: the same PM for
        every VM, in the daemon and in the simulator.
        """
        await self.check("round-robin")


class LiveFleetTests(TestCase):
    """
    vorchd-sim --from-url and the admin's whatif, on a running daemon's fleet.
    """

    async def test_from_url_and_whatif(self):
        """
        C{vorchd-sim --from-url} reads the daemon's fleet over HTTP, VMs included, and
        whatif on the daemon's own L{Fleet.view} compares the policy in force with another.
        """
        daemon = await start_daemon(self, SIZES, allocation={"policy": "best-fit"})
        client = LoopbackClient(daemon)
        self.addCleanup(client.close)
        for name in ("x", "y"):
            answer = await client.call(f"/vm/create?name={name}&instance_type=3&image_id=1")
            self.assertGreater(answer.json["vmid"], 0)

        def run_cli():
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                code = cli.main(["--from-url", daemon.url, "--generate", "30", "--json", "-q"])
            return code, out.getvalue(), err.getvalue()

        code, out, err = await deferToThread(run_cli)
        self.assertEqual(code, 0, err)
        self.assertIn("best-fit", [o["policy"] for o in json.loads(out)])

        out = io.StringIO()
        outcomes = whatif.whatif(
            daemon.fleet.view(), ["worst-fit", "--generate", "30"], out=out, err=io.StringIO()
        )
        self.assertEqual([o.policy for o in outcomes], ["best-fit", "worst-fit"])
        self.assertIn("best-fit (now)", out.getvalue())
        self.assertIn("2 VMs already placed", out.getvalue())
