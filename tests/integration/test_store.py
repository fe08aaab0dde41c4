"""
The Redis store against a real redis-server: stable ids, atomic claims, exact releases.
"""

from __future__ import annotations

import os
import signal

import txredisapi
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from tests.harness import RedisServer, refused_port, shared_redis, unique_prefix
from vorchd.config import RedisAddress
from vorchd.model import Flavor, Resources
from vorchd.network import mac_of
from vorchd.room import Change
from vorchd.store import Store, StoreUnavailable
from vorchd.store.fake import FakeStore
from vorchd.store.vmids import VMID_BLOCK, VMID_REFILL

ONE = {"cpu": 1.0, "ram": 1.0, "disk": 1.0}
SMALL = Resources(1, 512, 1)


class StoreTestsMixin:
    """
    The state store's promises: the interface tests every store passes, the real one on
    Redis and the in-memory fake (L{vorchd.store.fake.FakeStore}) alike.
    """

    def make_store(self):
        raise NotImplementedError

    async def setUp(self):
        self.store = self.make_store()
        self.addCleanup(self.store.disconnect)
        [self.pmid] = await self.store.register_pms([("pm-a", "test:///a")])
        await self.store.set_capacity(self.pmid, Resources(4, 4096, 100))

    async def claim(self, wanted=SMALL, ratios=ONE):
        return await self.store.claim(0, self.pmid, wanted, ratios, {"name": "x"})

    async def used(self, pmid):
        rec = await self.store.pm_record(pmid)
        return Resources(*(int(rec.get(f"used_{r}", 0)) for r in ("cpu", "ram", "disk")))

    async def test_ids_stable_by_line(self):
        """
        A line keeps its id when the file changes around it; a new line gets a new id,
        and the current list follows the file's order.
        """
        first = await self.store.register_pms([("pm-a", "u"), ("pm-b", "u"), ("pm-c", "u")])
        self.assertEqual(first, [1, 2, 3])
        second = await self.store.register_pms([("pm-c", "u"), ("pm-d", "u"), ("pm-a", "u")])
        self.assertEqual(second, [3, 4, 1])
        self.assertEqual(await self.store.pm_ids(), [3, 4, 1])

    async def test_flavors_replace(self):
        """
        The current flavors are the last ones set, in their order.
        """
        await self.store.set_flavors([Flavor(2, 1, 1, 1), Flavor(1, 2, 2, 2)])
        await self.store.set_flavors([Flavor(5, 1, 512, 1)])
        self.assertEqual(await self.store.flavors(), [Flavor(5, 1, 512, 1)])
        self.assertIsNone(await self.store.flavor(2))

    async def test_lookups_current_only(self):
        """
        flavor() and image() find a current one by id, and nothing for an id that left
        the file or never was; images() keeps the file's order.
        """
        await self.store.set_flavors([Flavor(3, 1, 512, 1), Flavor(7, 2, 1024, 2)])
        self.assertEqual(await self.store.flavor(7), Flavor(7, 2, 1024, 2))
        self.assertIsNone(await self.store.flavor(4))
        ids = await self.store.register_images([("/i/a.img", "a"), ("/i/b.img", "b")])
        await self.store.register_images([("/i/b.img", "b"), ("/i/c.img", "c")])
        self.assertEqual([i.name for i in await self.store.images()], ["b", "c"])
        self.assertIsNone(await self.store.image(ids[0]))
        self.assertEqual((await self.store.image(ids[1])).name, "b")
        self.assertIsNone(await self.store.image(99))

    async def test_vmids_increase(self):
        """
        vmids only ever go up.
        """
        ids = [await self.store.next_vmid() for _ in range(5)]
        self.assertEqual(ids, sorted(set(ids)))

    async def test_claim_refuses_past_capacity(self):
        """
        A claim that would take a PM past its capacity is refused with the resource.
        """
        _, why = await self.claim(Resources(4, 4096, 100))
        self.assertIsNone(why)
        _, why = await self.claim(Resources(1, 1, 1))
        self.assertEqual(why.kind, "no_room")
        self.assertIn("cpu", why.detail)
        self.assertEqual(await self.used(self.pmid), Resources(4, 4096, 100))

    async def test_claim_stores_mac(self):
        """
        A claim stores the VM's MAC address with it: its domain name's (so the fleet's
        and the vmid's), locally administered and unicast, different for each VM.
        """
        macs = []
        for _ in range(3):
            vmid, why = await self.store.claim(0, self.pmid, SMALL, ONE, {}, "vorchd-f1-")
            self.assertIsNone(why)
            rec = await self.store.vm(vmid)
            self.assertEqual(rec["mac"], mac_of(f"vorchd-f1-{vmid}"))
            macs.append(rec["mac"])
        self.assertEqual(len(set(macs)), 3)
        for mac in macs:
            first = int(mac.split(":")[0], 16)
            self.assertEqual(first & 0b11, 0b10, mac)

    async def test_claim_gives_a_mac_no_other_vm_has(self):
        """
        Two VMs whose names would give the same MAC (here the same name, through two name
        prefixes: "a" + 51 and "a5" + 1) get different ones: the second its name's with
        #1 after it. Once the first is released, its MAC is free again.
        """
        first, _ = await self.store.claim(51, self.pmid, SMALL, ONE, {}, "a")
        second, _ = await self.store.claim(1, self.pmid, SMALL, ONE, {}, "a5")
        self.assertEqual((await self.store.vm(first))["mac"], mac_of("a51"))
        self.assertEqual((await self.store.vm(second))["mac"], mac_of("a51", 1))
        self.assertTrue(await self.store.release(first))
        third, _ = await self.store.claim(51, self.pmid, SMALL, ONE, {}, "a")
        self.assertEqual((await self.store.vm(third))["mac"], mac_of("a51"))
        # A MAC held by an adopted VM is taken too.
        adopted = {"name": "found", "domain": "elsewhere", "mac": mac_of("b7")}
        self.assertTrue(await self.store.adopt(90, self.pmid, Flavor(1, 0, 0, 0), adopted))
        seventh, _ = await self.store.claim(7, self.pmid, SMALL, ONE, {}, "b")
        self.assertEqual((await self.store.vm(seventh))["mac"], mac_of("b7", 1))
        self.assertEqual(await self.store.index_macs(), 0)

    async def test_concurrent_claims(self):
        """
        100 claims at once on a PM with room for 4: exactly 4 succeed.
        """
        results = await defer.gatherResults(
            [defer.ensureDeferred(self.claim()) for _ in range(100)]
        )
        self.assertEqual(sum(1 for _, why in results if why is None), 4)
        self.assertEqual(await self.used(self.pmid), Resources(4, 2048, 4))
        vmids = [vmid for vmid, why in results if why is None]
        self.assertEqual(len(set(vmids)), 4)

    async def test_ratio_applies(self):
        """
        An overcommit ratio of 2 lets claims reach twice the capacity.
        """
        ratios = {**ONE, "cpu": 2.0}
        results = [await self.claim(ratios=ratios) for _ in range(9)]
        self.assertEqual(sum(1 for _, why in results if why is None), 8)

    async def test_drained_pm_refuses(self):
        """
        A drained PM takes no claims.
        """
        self.assertTrue(await self.store.set_drained(self.pmid, True))
        _, why = await self.claim()
        self.assertEqual(why.kind, "drained")

    async def test_commit_and_release(self):
        """
        A committed VM is listed on its PM; releasing it frees its room, and of two
        releases at once exactly one succeeds.
        """
        vmid, _ = await self.claim()
        self.assertEqual(await self.store.pm_vmids(self.pmid), [])
        self.assertTrue(await self.store.commit(vmid, self.pmid))
        self.assertEqual(await self.store.pm_vmids(self.pmid), [vmid])
        both = await defer.gatherResults(
            [defer.ensureDeferred(self.store.release(vmid)) for _ in range(2)]
        )
        self.assertEqual(sorted(both), [False, True])
        self.assertEqual(await self.used(self.pmid), Resources())
        self.assertEqual(await self.store.pm_vmids(self.pmid), [])
        self.assertFalse(await self.store.commit(vmid, self.pmid))

    async def test_commit_only_its_own_claim(self):
        """
        A commit given its create's token commits only that create's claim: a claim of
        the same vmid made by another create (after a failover lost the first claim and
        the counter's last steps) stays a claim.
        """
        vmid, _ = await self.store.claim(0, self.pmid, SMALL, ONE, {"name": "x", "op": "mine"})
        self.assertFalse(await self.store.commit(vmid, self.pmid, "another"))
        self.assertEqual((await self.store.vm(vmid))["state"], "creating")
        self.assertEqual(await self.store.pm_vmids(self.pmid), [])
        self.assertTrue(await self.store.commit(vmid, self.pmid, "mine"))
        self.assertEqual(await self.store.pm_vmids(self.pmid), [vmid])

    async def created(self, wanted=SMALL) -> int:
        vmid, why = await self.claim(wanted)
        self.assertIsNone(why)
        self.assertTrue(await self.store.commit(vmid, self.pmid))
        return vmid

    async def test_resize_holds_growth_then_done_or_undone(self):
        """
        A resize holds only what grows, on the VM's own PM; done, the VM has the new
        flavor and the PM its room exactly; undone, everything is as before. A growth
        past the PM's room is refused with nothing held.
        """
        vmid = await self.created(Resources(2, 1024, 10))
        bigger = Flavor(5, 3, 512, 20)
        change = Change.resize(self.pmid, Resources(2, 1024, 10), bigger, "op1", "d1")
        self.assertEqual(change.hold, Resources(1, 0, 10))
        self.assertIsNone(await self.store.begin_change(vmid, change, ONE))
        self.assertEqual(await self.used(self.pmid), Resources(3, 1024, 20))
        self.assertTrue(await self.store.end_change(vmid, "op1", True))
        self.assertEqual(await self.used(self.pmid), Resources(3, 512, 20))
        rec = await self.store.vm(vmid)
        self.assertEqual(
            (rec["instance_type"], rec["cpu"], rec["ram"], rec["disk"]), ("5", "3", "512", "20")
        )
        self.assertNotIn("change_op", rec)
        # Undone: the hold given back, the flavor kept.
        again = Change.resize(self.pmid, Resources(3, 512, 20), Flavor(6, 4, 512, 20), "op2", "d1")
        self.assertIsNone(await self.store.begin_change(vmid, again, ONE))
        self.assertTrue(await self.store.end_change(vmid, "op2", False))
        self.assertFalse(await self.store.end_change(vmid, "op2", False))
        self.assertEqual(await self.used(self.pmid), Resources(3, 512, 20))
        self.assertEqual((await self.store.vm(vmid))["instance_type"], "5")
        # Past the room: refused, nothing held.
        huge = Change.resize(self.pmid, Resources(3, 512, 20), Flavor(7, 5, 512, 20), "op3", "d1")
        why = await self.store.begin_change(vmid, huge, ONE)
        self.assertEqual(why.kind, "no_room")
        self.assertIn("cpu", why.detail)
        self.assertEqual(await self.used(self.pmid), Resources(3, 512, 20))

    async def test_move_holds_target_until_done(self):
        """
        A move holds the whole flavor on the target; done, the VM is on the target and
        listed there only, the source's room given back; one change at a time; a drained
        or full target refuses; releasing a VM mid-move frees the hold too.
        """
        [_, other] = await self.store.register_pms([("pm-a", "test:///a"), ("pm-b", "test:///b")])
        await self.store.set_capacity(other, Resources(2, 2048, 100))
        vmid = await self.created()
        move = Change.move(other, Flavor(1, SMALL.cpu, SMALL.ram, SMALL.disk), "m1", "d1")
        self.assertIsNone(await self.store.begin_change(vmid, move, ONE))
        self.assertEqual(await self.used(other), SMALL)
        self.assertEqual(await self.used(self.pmid), SMALL)
        busy = await self.store.begin_change(
            vmid, Change.move(other, Flavor(1, SMALL.cpu, SMALL.ram, SMALL.disk), "m2", "d1"), ONE
        )
        self.assertEqual(busy.kind, "busy")
        self.assertTrue(await self.store.end_change(vmid, "m1", True))
        self.assertEqual(await self.used(self.pmid), Resources())
        self.assertEqual(await self.used(other), SMALL)
        self.assertEqual(await self.store.pm_vmids(other), [vmid])
        self.assertEqual(await self.store.pm_vmids(self.pmid), [])
        self.assertEqual((await self.store.vm(vmid))["pmid"], str(other))
        # Back, to a drained PM: refused.
        await self.store.set_drained(self.pmid, True)
        back = Change.move(self.pmid, Flavor(1, SMALL.cpu, SMALL.ram, SMALL.disk), "m3", "d1")
        self.assertEqual((await self.store.begin_change(vmid, back, ONE)).kind, "drained")
        await self.store.set_drained(self.pmid, False)
        self.assertIsNone(await self.store.begin_change(vmid, back, ONE))
        self.assertTrue(await self.store.release(vmid))
        self.assertEqual(await self.used(self.pmid), Resources())
        self.assertEqual(await self.used(other), Resources())
        unknown = await self.store.begin_change(vmid, back, ONE)
        self.assertEqual(unknown.kind, "no_vm")


class RedisStoreTests(StoreTestsMixin, TestCase):
    """
    The real store, on a real redis-server.
    """

    def make_store(self):
        redis = shared_redis()
        return Store.connect(RedisAddress("127.0.0.1", redis.port, 0), unique_prefix())

    async def test_macs_of_older_vms_indexed_once(self):
        """
        VMs made before claims indexed their MACs (their index gone, as in a fleet
        Redis kept from then) are indexed at start-up, once: no new VM gets one of theirs.
        """
        store = self.store
        older, _ = await store.claim(3, self.pmid, SMALL, ONE, {}, "c1")
        await store._call("delete", store.keys.macs)
        await store._call("delete", store.keys("macs", "indexed"))
        self.assertEqual(await store.index_macs(), 1)
        self.assertEqual(await store.index_macs(), 0)
        # "c" + 13 is the older VM's name, "c1" + 3: its MAC is taken.
        newer, _ = await store.claim(13, self.pmid, SMALL, ONE, {}, "c")
        self.assertEqual((await store.vm(older))["mac"], mac_of("c13"))
        self.assertEqual((await store.vm(newer))["mac"], mac_of("c13", 1))

    async def test_next_vmid_block_reserved_ahead(self):
        """
        Before the ids of a block run out, the next block is made durable in the
        background: the ceiling moves up a block while ids are still left below it, so
        the creates that take them never wait for an AOF rewrite.
        """
        store = self.store
        block = store.vmid_block_key
        ids = [await store.next_vmid() for _ in range(VMID_BLOCK - VMID_REFILL + 1)]
        self.assertEqual(ids, list(range(1, VMID_BLOCK - VMID_REFILL + 2)))
        for _ in range(600):
            if int(await store._call("hget", block, "ceiling")) == 2 * VMID_BLOCK:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        else:
            self.fail("the next block was not reserved ahead")
        self.assertLess(int(await store._call("get", store.keys.vmid)), VMID_BLOCK)
        more = [await store.next_vmid() for _ in range(VMID_REFILL + 10)]
        self.assertEqual(more, list(range(ids[-1] + 1, ids[-1] + VMID_REFILL + 11)))


class FakeStoreTests(StoreTestsMixin, TestCase):
    """
    The in-memory fake, held to the same tests.
    """

    def make_store(self):
        return FakeStore(unique_prefix())


class UnavailableTests(TestCase):
    """
    A store whose Redis is not there fails fast instead of hanging.
    """

    async def test_unavailable(self):
        """
        Every call fails with StoreUnavailable within the store's timeout.
        """
        store = Store.connect(RedisAddress("127.0.0.1", refused_port(self), 0), "x", timeout=0.5)
        self.addCleanup(store.disconnect)
        with self.assertRaises(StoreUnavailable):
            await store.pm_ids()


class OutageTests(TestCase):
    """
    While Redis is down, one call at a time asks it; the others fail at once.
    """

    async def setUp(self):
        # A Redis of the test's own, to stop and start; the store's timeouts run on a
        # clock the test moves, so that no test waits on one.
        self.server = RedisServer().start()
        self.addCleanup(self.server.stop)
        self.clock = task.Clock()
        self.store = Store.connect(
            RedisAddress("127.0.0.1", self.server.port, 0),
            unique_prefix(),
            timeout=5,
            reactor=self.clock,
        )
        self.addCleanup(self.store.disconnect)

    async def redis_down(self) -> None:
        """
        Stop Redis and let a call go unanswered: Redis counts as down.
        """
        self.server.stop()
        first = defer.ensureDeferred(self.store.pm_ids())
        await task.deferLater(reactor, 0.2, lambda: None)
        self.clock.advance(5)
        with self.assertRaises(StoreUnavailable):
            await first
        self.assertIsNotNone(self.store.down)

    async def test_down_fails_fast_then_recovers(self):
        """
        Once a call went unanswered, a second call waits for Redis while a third, made
        meanwhile, fails at once (no timeout runs: the store's clock is not moved); when
        Redis is back, the waiting call is answered and every call works again.
        """
        store = self.store
        self.assertEqual(await store.pm_ids(), [])
        self.assertIsNone(store.down)
        await self.redis_down()
        probe = defer.ensureDeferred(store.pm_ids())
        if probe.called:
            # The pool had already seen its connections go (a loaded machine is slower
            # to stop Redis than to notice): the call failed at once, which is as good.
            self.failureResultOf(probe, StoreUnavailable)
            probe = None
        else:
            meanwhile = defer.ensureDeferred(store.pm_ids())
            self.failureResultOf(meanwhile, StoreUnavailable)

        self.server.start()
        if probe is not None:
            self.assertEqual(await probe, [])
        # Until every connection of the pool has reconnected, a call may still fail at
        # once on one that has not (txredisapi backs off up to 10 s between tries); well
        # within a deadline that only catches a hang, calls work again.
        for _ in range(1200):
            try:
                await store.pm_ids()
                break
            except StoreUnavailable:
                await task.deferLater(reactor, 0.05, lambda: None)
        self.assertIsNone(store.down)
        self.assertEqual(await store.pm_ids(), [])

    async def test_stall_while_reconnecting(self):
        """
        A Redis that stalls while the store's connections are being made again (they
        connect, and their first command goes unanswered past the timeout) does not leave
        the store disconnected for good: once Redis answers, calls work again.
        """
        # The connections' own reply timeout runs on the real clock: a short one.
        store = Store.connect(
            RedisAddress("127.0.0.1", self.server.port, 0), unique_prefix(), timeout=0.5
        )
        self.addCleanup(store.disconnect)
        self.assertEqual(await store.pm_ids(), [])
        self.assertGreater(int(self.server.ask("CLIENT", "KILL", "TYPE", "normal")), 0)
        pid = self.server.proc.pid
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(os.kill, pid, signal.SIGCONT)
        # The connections come back after about a second, and give up on Redis after
        # half of one more.
        await task.deferLater(reactor, 3, lambda: None)
        with self.assertRaises(StoreUnavailable):
            await store.pm_ids()
        os.kill(pid, signal.SIGCONT)
        why = None
        for _ in range(600):
            try:
                self.assertEqual(await store.pm_ids(), [])
                break
            except StoreUnavailable as e:
                why = e
                await task.deferLater(reactor, 0.05, lambda: None)
        else:
            self.fail(f"the store never reconnected: {why}")
        self.assertIsNone(store.down)

    async def test_patient_calls_wait(self):
        """
        While Redis counts as down, a call that records work already done (a commit)
        waits for Redis instead of failing at once, and lands once Redis is back.
        """
        store = self.store
        [pmid] = await store.register_pms([("pm", "test:///x")])
        await store.set_capacity(pmid, Resources(4, 4096, 100))
        vmid = await store.next_vmid()
        _, why = await store.claim(vmid, pmid, SMALL, ONE, {"name": "x"})
        self.assertIsNone(why)
        await self.redis_down()
        probe = defer.ensureDeferred(store.pm_ids())
        commit = defer.ensureDeferred(store.commit(vmid, pmid))
        self.failureResultOf(defer.ensureDeferred(store.vm(vmid)), StoreUnavailable)
        self.assertNoResult(commit)

        self.server.start()
        self.assertTrue(await commit)
        await probe
        self.assertEqual((await store.vm(vmid))["state"], "active")

    async def test_cancelled_call_is_not_an_outage(self):
        """
        A caller giving up on a call (an HTTP client gone, say) does not make Redis
        count as down.
        """
        store = self.store
        call = defer.ensureDeferred(store.pm_ids())
        call.cancel()
        self.failureResultOf(call, StoreUnavailable)
        self.assertIsNone(store.down)
        self.assertEqual(await store.pm_ids(), [])


class NotReadyRedis:
    """
    A Redis client whose server answers every command with C{error} (as a Redis still
    loading its AOF does): for the store's reading of errors, which a real server cannot
    be made to show on demand.
    """

    def __init__(self, error: str):
        self.error = error

    def lrange(self, *args):
        return defer.fail(txredisapi.ResponseError(self.error))


class ErrorTests(TestCase):
    """
    What the store makes of Redis' error replies.
    """

    async def test_not_ready_is_unavailable(self):
        """
        LOADING and BUSY mean Redis cannot answer yet: StoreUnavailable, like an outage.
        """
        for error in ("LOADING Redis is loading the dataset in memory", "BUSY Redis is busy"):
            with self.assertRaises(StoreUnavailable, msg=error):
                await Store(NotReadyRedis(error), "p").pm_ids()

    async def test_other_errors_are_bugs(self):
        """
        Any other error reply is not an outage: it is raised as it is, to be seen.
        """
        with self.assertRaises(txredisapi.ResponseError):
            await Store(NotReadyRedis("ERR wrong number of arguments"), "p").pm_ids()
