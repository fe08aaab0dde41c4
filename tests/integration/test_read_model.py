"""
The read model against real Redis: whatever sequence of changes the store makes, a
daemon's model (fed by the change stream) equals a fresh snapshot; a gap forces a
snapshot; two daemons on one Redis converge; the seed answers made from the model are
those Redis' records give.
"""

from __future__ import annotations

import random

import txredisapi
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import TestCase

from tests.harness import shared_redis, unique_prefix
from vorchd.config import RedisAddress
from vorchd.model import Flavor, Resources
from vorchd.room import Change
from vorchd.state import views
from vorchd.state.feed import ChangeFeed
from vorchd.state.model import FleetState
from vorchd.store import Store
from vorchd.store.fake import FakeStore

ONE = {"cpu": 1.0, "ram": 1.0, "disk": 1.0}
# Every kind of change the store makes, each emitting its own op on the stream.
OPS = (
    "claim",
    "commit",
    "release",
    "state",
    "capacity",
    "drain",
    "setting",
    "register",
    "adopt",
    "flavors",
    "resize",
    "move",
    "end",
)


def dump(state: FleetState) -> dict:
    """
    Everything a model holds that Redis decides, in a form to compare.
    """
    return {
        "seq": state.seq,
        "fleet": state.fleet_id,
        "settings": dict(state.settings),
        "pm_ids": list(state.pm_ids),
        "pms": {
            p: (pm.line, pm.uri, pm.capacity, pm.used, pm.drained, sorted(pm.vmids))
            for p, pm in state.pms.items()
        },
        "vms": dict(state.vms),
        "flavors": list(state.flavors),
        "images": list(state.images),
        "table": (
            state.table.pmid.tolist(),
            state.table.capacity.tolist(),
            state.table.used.tolist(),
            state.table.vms.tolist(),
            state.table.drained.tolist(),
        ),
    }


async def until(condition, deadline: float = 10.0):
    """
    Wait until C{condition()} holds; fail after C{deadline} seconds (a hang, not a timing).
    """
    for _ in range(int(deadline / 0.01)):
        if condition():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition never held")


class ModelTestsMixin:
    """
    The read model over a store: the real one on Redis, or the in-memory fake, which must
    emit the same changes for the model to follow.
    """

    def make_store(self):
        raise NotImplementedError

    async def setUp(self):
        self.prefix = unique_prefix()
        self.store, self.state, self.feed = await self.daemon()

    async def daemon(self):
        store = self.make_store()
        state = FleetState()
        feed = ChangeFeed(store, state, reactor, block_ms=200)
        feed.start()
        self.addCleanup(store.disconnect)
        self.addCleanup(feed.stop)
        await until(lambda: state.ready)
        return store, state, feed

    async def fresh(self) -> FleetState:
        state = FleetState()
        state.load(await self.store.snapshot())
        return state

    async def run_program(self, rng: random.Random, steps: int) -> None:
        """
        A random sequence of every kind of change the daemon makes.
        """
        await self.apply_ops(
            [(rng.choice(OPS), rng.randrange(1 << 30)) for _ in range(steps)], rng.random()
        )

    async def apply_ops(self, ops, salt: float = 0.0) -> None:
        """
        Apply C{ops}, a list of (op, number) pairs, each op one of L{OPS} and the number
        choosing its arguments, on a fleet of up to six PMs with three at first.
        """
        store = self.store
        lines = [f"pm-{i}" for i in range(6)]
        pmids = await store.register_pms([(line, f"test:///{line}") for line in lines[:3]])
        await store.set_flavors([Flavor(1, 1, 512, 1), Flavor(2, 2, 1024, 2)])
        await store.register_images([("/i/a.img", "a")])
        vms: dict[int, int] = {}
        changes: dict[int, Change] = {}
        for op, number in ops:
            rng = random.Random(number)
            if op == "claim" and pmids:
                pmid = rng.choice(pmids)
                wanted = Resources(rng.randint(1, 3), rng.choice([256, 512]), 1)
                record = {"name": f"n{number}{salt}", "instance_type": 1}
                vmid, why = await store.claim(0, pmid, wanted, ONE, record, "d-")
                if why is None:
                    vms[vmid] = pmid
            elif op == "commit" and vms:
                vmid = rng.choice(sorted(vms))
                await store.commit(vmid, vms[vmid])
            elif op == "release" and vms:
                vmid = rng.choice(sorted(vms))
                await store.release(vmid)
                vms.pop(vmid)
            elif op == "state" and vms:
                await store.set_vm_state(
                    rng.choice(sorted(vms)), rng.choice(["missing", "active"])
                )
            elif op == "capacity" and pmids:
                cap = Resources(rng.randint(1, 16), rng.randint(1, 8) * 1024, 100)
                await store.set_capacity(rng.choice(pmids), cap)
            elif op == "drain" and pmids:
                await store.set_drained(rng.choice(pmids), rng.random() < 0.5)
            elif op == "setting":
                await store.set_setting("cpu_ratio", repr(rng.choice([1.0, 1.5, 2.0])))
            elif op == "register":
                pmids = await store.register_pms(
                    [(line, f"test:///{line}") for line in rng.sample(lines, rng.randint(1, 5))]
                )
            elif op == "adopt" and pmids:
                vmid = rng.randint(1000, 2000)
                pmid = rng.choice(pmids)
                if await store.adopt(vmid, pmid, Flavor(1, 1, 512, 1), {"name": "found"}):
                    vms[vmid] = pmid
            elif op == "flavors":
                await store.set_flavors([Flavor(rng.randint(1, 4), 1, 512, 1)])
            elif op in ("resize", "move") and vms and pmids:
                vmid = rng.choice(sorted(vms))
                if op == "resize":
                    flavor = Flavor(2, rng.randint(1, 4), 1024, 2)
                    change = Change.resize(
                        vms[vmid], Resources(1, 512, 1), flavor, f"o{number}", "d"
                    )
                else:
                    change = Change.move(
                        rng.choice(pmids), Flavor(1, 1, 512, 1), f"o{number}", "d"
                    )
                if await store.begin_change(vmid, change, ONE) is None:
                    changes[vmid] = change
            elif op == "end" and changes:
                vmid = rng.choice(sorted(changes))
                change = changes.pop(vmid)
                done = rng.random() < 0.5
                if await store.end_change(vmid, change.op, done) and done and vmid in vms:
                    vms[vmid] = change.pmid

    async def test_model_equals_snapshot_after_any_changes(self):
        """
        After any sequence of changes (hypothesis draws them: every op the scripts emit,
        in any order, with any arguments), the model a daemon keeps from the stream is
        exactly what a fresh snapshot gives, and each write returned only once the
        model held it (read-your-writes: nothing is awaited between the last write and
        the comparison). Each example runs on a fleet of its own.
        """

        async def check(ops) -> None:
            self.prefix = unique_prefix()
            store, state, feed = await self.daemon()
            self.store, self.state = store, state
            await self.apply_ops(ops)
            self.assertEqual(dump(state), dump(await self.fresh()))
            self.assertEqual((feed.snapshots, feed.gaps), (1, 0))
            await feed.stop()
            await store.disconnect()

        # txredisapi picks pool connections with the global random, on the reactor
        # thread, while hypothesis generates in this one and checks nothing touched it.
        self.patch(txredisapi, "random", random.Random())

        @settings(max_examples=40, deadline=None, database=None)
        @given(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 1 << 30)), max_size=60))
        def run(ops):
            blockingCallFromThread(reactor, lambda: defer.ensureDeferred(check(ops)))

        await deferToThread(run)

    async def test_seed_answers_match_redis(self):
        """
        pm/query, pm/listvms and vm/query made from the model answer what Redis' own
        records say.
        """
        await self.run_program(random.Random(99), 60)
        for pmid in self.state.pm_ids:
            rec = await self.store.pm_record(pmid)
            answer = views.pm_answer(self.state, pmid, ONE)
            self.assertEqual(answer["capacity"]["cpu"], int(rec.get("cap_cpu", 0)))
            self.assertEqual(
                answer["free"]["cpu"], int(rec.get("cap_cpu", 0)) - int(rec.get("used_cpu", 0))
            )
            self.assertEqual(views.pm_vmids(self.state, pmid), await self.store.pm_vmids(pmid))
            self.assertEqual(answer["vms"], len(await self.store.pm_vmids(pmid)))
        for vmid in await self.store.all_vmids():
            rec = await self.store.vm(vmid)
            answer = views.vm_answer(self.state, vmid)
            if rec["state"] == "creating":
                self.assertIsNone(answer)
            else:
                self.assertEqual(answer["name"], rec["name"])
                self.assertEqual(answer["pmid"], int(rec["pmid"]))


class FakeModelTests(ModelTestsMixin, TestCase):
    """
    The model followed over the in-memory fake store.
    """

    def make_store(self):
        return FakeStore(self.prefix)

    async def test_new_master_forces_snapshot(self):
        """
        A new Redis master (a Sentinel failover, which the store counts) means a fresh
        snapshot, even if the stream still reads: the new master may lack changes the
        model holds.
        """
        await self.run_program(random.Random(5), 5)
        snapshots = self.feed.snapshots
        # What the old master had and the new one lost: only a snapshot forgets it.
        self.state.pms[1].drained = True
        self.store.failovers = 1
        await self.store.set_drained(2, True)
        await until(lambda: self.feed.snapshots == snapshots + 1)
        self.assertFalse(self.state.pms[1].drained)
        self.assertEqual(dump(self.state), dump(await self.fresh()))


class RedisModelTests(ModelTestsMixin, TestCase):
    """
    The model followed over real Redis, and what only a real Redis can do to it.
    """

    def make_store(self):
        return Store.connect(RedisAddress("127.0.0.1", shared_redis().port, 0), self.prefix)

    async def test_gap_forces_snapshot(self):
        """
        A change number skipped (what a trimmed stream or a Redis that lost changes
        leaves) makes the model take a fresh snapshot instead of drifting.
        """
        await self.run_program(random.Random(1), 10)
        # A change made behind the stream's back, then a counter that skips one.
        await self.store._call("hset", self.store.keys.pm(1), "cap_cpu", "77")
        await self.store._call("incr", self.store.keys.seq)
        await self.store.set_drained(1, True)
        await until(lambda: self.feed.snapshots == 2)
        self.assertEqual(self.feed.gaps, 1)
        self.assertEqual(self.state.pms[1].capacity.cpu, 77)
        self.assertEqual(dump(self.state), dump(await self.fresh()))

    async def test_trimmed_stream_forces_snapshot(self):
        """
        A reader whose position was trimmed away resyncs from a snapshot.
        """
        await self.run_program(random.Random(2), 5)
        await self.feed.stop()
        await self.store.set_drained(1, True)
        await self.store.set_drained(1, False)
        await self.store._call("execute_command", "XTRIM", self.store.keys.changes, "MAXLEN", 1)
        # Pretend the reader kept its place rather than resyncing on start.
        self.feed._running = True
        self.feed._resync = False
        self.feed._loop = defer.ensureDeferred(self.feed._run())
        await until(lambda: self.feed.snapshots == 2)
        self.assertEqual(dump(self.state), dump(await self.fresh()))

    async def test_two_daemons_converge(self):
        """
        Two daemons on one Redis: the changes one writes show in the other's model.
        """
        store2, state2, _feed2 = await self.daemon()
        await self.run_program(random.Random(3), 30)
        await until(lambda: state2.seq == self.state.seq)
        self.assertEqual(dump(state2), dump(self.state))
        # And the other way round.
        await store2.set_drained(1, True)
        await until(lambda: self.state.seq == state2.seq)
        self.assertTrue(self.state.pms[1].drained)
        self.assertEqual(dump(state2), dump(self.state))

    async def test_lost_connection_resyncs(self):
        """
        A lost stream connection (Redis restarted, failed over) means a fresh snapshot.
        """
        await self.run_program(random.Random(4), 5)
        await self.store._call(
            "execute_command", "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
        )
        await until(lambda: self.feed.snapshots >= 2)
        await self.store.set_drained(1, True)
        self.assertTrue(self.state.pms[1].drained)
        self.assertEqual(dump(self.state), dump(await self.fresh()))
