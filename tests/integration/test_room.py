"""
The room rule is written once in Python (vorchd.room) and computed again in Lua by the
claim script at the authority: the two must agree on every PM, request and ratio.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import TestCase

from tests.harness import shared_redis, unique_prefix
from vorchd import room
from vorchd.config import RedisAddress
from vorchd.model import RESOURCES, Resources
from vorchd.store import Store

RATIOS = [0.5, 0.7, 1.0, 1.1, 1.3, 1.5, 2.0, 3.7, 16.0]


class RoomRuleTests(TestCase):
    async def test_claim_script_agrees_with_python(self):
        """
        For random capacities, uses, requests and ratios (awkward fractions included),
        the claim succeeds exactly when vorchd.room says the PM has room, and refuses
        with the same kind and wording when it has not.
        """
        store = Store.connect(RedisAddress("127.0.0.1", shared_redis().port, 0), unique_prefix())
        self.addCleanup(store.disconnect)
        rng = random.Random(7)
        lines = [f"pm{i}" for i in range(300)]
        pmids = await store.register_pms([(line, "test:///x") for line in lines])
        agreed = {True: 0, False: 0}
        for pmid in pmids:
            capacity = Resources(rng.randint(0, 64), rng.randint(0, 65536), rng.randint(0, 500))
            ratios = {r: rng.choice(RATIOS) for r in RESOURCES}
            await store.set_capacity(pmid, capacity)
            used = Resources()
            # Fill it with a first claim of some size (it may itself be refused).
            first = Resources(rng.randint(0, 8), rng.randint(0, 8192), rng.randint(0, 50))
            if room.refusal(capacity, used, first, ratios) is None:
                _, why = await store.claim(0, pmid, first, ratios, {"name": "a"})
                self.assertIsNone(why)
                used = first
            wanted = Resources(rng.randint(1, 32), rng.randint(1, 32768), rng.randint(1, 200))
            expected = room.refusal(capacity, used, wanted, ratios)
            _, why = await store.claim(0, pmid, wanted, ratios, {"name": "b"})
            self.assertEqual(why, expected, (capacity, used, wanted, ratios))
            agreed[expected is None] += 1
        # Both outcomes were exercised.
        self.assertGreater(agreed[True], 20)
        self.assertGreater(agreed[False], 20)
