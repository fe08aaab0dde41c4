"""
Policies told apart by what they do, measured through the REST API on a test-driver
fleet with real Redis; and a third-party policy chosen from the ini alone.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.clients import InMemoryClient
from tests.harness import start_daemon, tmpdir

# Three equal PMs with room for four 1-vCPU VMs each.
SIZES = [(4, 8192)] * 3

REVERSE_PLUGIN = """
from zope.interface import implementer
from vorchd.policies import IAllocationPolicy


@implementer(IAllocationPolicy)
class HighestFirst:
    name = "highest-first"

    def rank(self, request, hosts):
        return sorted(hosts, key=lambda h: -h.pmid)


highest = HighestFirst()
"""


class PolicyBehaviourTests(TestCase):
    """
    Each policy's placements, as a user sees them through pm/listvms.
    """

    async def placements(self, policy: str, n: int = 6, **allocation) -> list[int]:
        daemon = await start_daemon(self, SIZES, allocation={"policy": policy, **allocation})
        client = InMemoryClient(daemon)
        pmids = []
        for i in range(n):
            vmid = (await client.call(f"/vm/create?name=v{i}&instance_type=1&image_id=1")).json[
                "vmid"
            ]
            self.assertGreater(vmid, 0)
            pmids.append((await client.call(f"/vm/query?vmid={vmid}")).json["pmid"])
        return pmids

    async def test_best_fit_fills_one_pm_first(self):
        """
        best-fit packs: it fills PM 1 before it uses PM 2.
        """
        self.assertEqual(await self.placements("best-fit"), [1, 1, 1, 1, 2, 2])

    async def test_worst_fit_spreads(self):
        """
        worst-fit spreads: each VM goes to the emptiest PM.
        """
        self.assertEqual(await self.placements("worst-fit"), [1, 2, 3, 1, 2, 3])

    async def test_round_robin_cycles(self):
        """
        round-robin cycles through the PMs in order.
        """
        self.assertEqual(await self.placements("round-robin"), [1, 2, 3, 1, 2, 3])

    async def test_round_robin_by_dotted_path_keeps_its_place(self):
        """
        A stateful policy named by a dotted path is loaded once, not again for every
        request: round-robin chosen as vorchd.policies.builtin:RoundRobin still cycles.
        """
        placements = await self.placements("vorchd.policies.builtin:RoundRobin")
        self.assertEqual(placements, [1, 2, 3, 1, 2, 3])

    async def test_first_fit(self):
        """
        first-fit uses the first PM in the pm_file with room.
        """
        self.assertEqual(await self.placements("first-fit"), [1, 1, 1, 1, 2, 2])

    async def test_weighted_packs_with_negative_weights(self):
        """
        weighted with negative weights packs like best-fit; positive ones spread.
        """
        packed = await self.placements("weighted", weights="cpu:-1, ram:-1")
        self.assertEqual(packed, [1, 1, 1, 1, 2, 2])
        spread = await self.placements("weighted", weights="cpu:1, ram:1")
        self.assertEqual(spread, [1, 2, 3, 1, 2, 3])

    async def test_third_party_plugin_from_ini(self):
        """
        A policy file dropped in a plugin directory is selected from the ini with no
        change to vorchd.
        """
        plugins = tmpdir(self)
        (plugins / "highest.py").write_text(REVERSE_PLUGIN)
        placed = await self.placements("highest-first", n=5, plugin_path=str(plugins))
        self.assertEqual(placed, [3, 3, 3, 3, 2])
