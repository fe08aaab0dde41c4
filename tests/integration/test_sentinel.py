"""
The store behind Redis Sentinel: real redis-server master and replica, three real
redis-sentinel processes; the master killed with kill -9.
"""

from __future__ import annotations

import signal
import time

from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.ha import ReplicatedRedis
from tests.harness import unique_prefix
from vorchd.config import RedisAddress
from vorchd.model import Resources
from vorchd.store import Store, StoreUnavailable
from vorchd.store.client import NotReplicated

ONE = {"cpu": 1.0, "ram": 1.0, "disk": 1.0}
SMALL = Resources(1, 512, 1)


async def until_answered(call, deadline: float = 30.0):
    """
    Repeat C{call()} until the store answers it; its answer and how long that took.
    """
    started = time.monotonic()
    while True:
        try:
            return await call(), time.monotonic() - started
        except StoreUnavailable:
            if time.monotonic() - started > deadline:
                raise
            await task.deferLater(reactor, 0.05, lambda: None)


class SentinelStoreTests(TestCase):
    """
    A store given a C{redis+sentinel://} URL.
    """

    timeout = 120

    async def setUp(self):
        self.redis = await deferToThread(ReplicatedRedis, self)

    def connect(self, **options) -> Store:
        store = Store.connect(
            RedisAddress.from_url(self.redis.url()), unique_prefix(), timeout=2.0, **options
        )
        self.addCleanup(store.disconnect)
        return store

    async def made_vm(self, store: Store) -> int:
        [pmid] = await store.register_pms([("pm-a", "test:///a")])
        await store.set_capacity(pmid, Resources(64, 65536, 1000))
        vmid, why = await store.claim(0, pmid, SMALL, ONE, {"name": "x"})
        self.assertIsNone(why)
        self.assertTrue(await store.commit(vmid, pmid))
        return vmid

    async def test_follows_failover(self):
        """
        The store finds the master through the Sentinels; after the master is killed
        it fails calls only until the Sentinels promote the replica, then works on the
        new master without a restart, which has every change confirmed by a replica,
        and it counts the change of master.
        """
        store = self.connect(min_replicas_acked=1)
        vmid = await self.made_vm(store)
        self.assertEqual(store.failovers, 0)
        old = self.redis.master
        await deferToThread(old.kill)
        killed = time.monotonic()
        _, _waited = await until_answered(store.fleet_id)
        print(f"\nstore answering again {time.monotonic() - killed:.2f} s after the kill")
        new = await deferToThread(self.redis.wait_new_master, old.port)
        self.assertNotEqual(new.port, old.port)
        self.assertEqual(store.failovers, 1)
        self.assertIsNotNone(await store.vm(vmid))
        # No replica is left (the old master is dead), so an acknowledged change is
        # refused until one rejoins.
        [pmid] = await store.pm_ids()
        vmid2, _ = await store.claim(0, pmid, SMALL, ONE, {"name": "y"})
        await self.assertFailure_(store.commit(vmid2, pmid), NotReplicated)

    async def assertFailure_(self, coro, exc):
        try:
            await coro
        except exc:
            return
        self.fail(f"{exc.__name__} not raised")

    async def test_unconfirmed_commit(self):
        """
        While the replica does not answer, a commit is made on the master but raises
        L{NotReplicated} within the ack timeout, so that the create is undone rather
        than acknowledged; Redis itself answered, so it is no outage. Once the replica
        answers again, commits are acknowledged again.
        """
        store = self.connect(min_replicas_acked=1, replicas_ack_timeout=0.3)
        await self.made_vm(store)
        [pmid] = await store.pm_ids()
        replica = self.redis.nodes[1]
        replica.proc.send_signal(signal.SIGSTOP)
        try:
            vmid, _ = await store.claim(0, pmid, SMALL, ONE, {"name": "x"})
            started = time.monotonic()
            await self.assertFailure_(store.commit(vmid, pmid), NotReplicated)
            self.assertLess(time.monotonic() - started, 3)
            self.assertIsNone(store.down)
        finally:
            replica.proc.send_signal(signal.SIGCONT)
        vmid, _ = await store.claim(0, pmid, SMALL, ONE, {"name": "z"})
        self.assertTrue(await store.commit(vmid, pmid))
        self.assertEqual(
            await deferToThread(replica.ask, "HGET", store.keys.vm(vmid), "state"), "active"
        )


class SentinelPasswordTests(TestCase):
    """
    A replicated Redis with a password, named by a Sentinel URL that carries it.
    """

    timeout = 120

    async def test_password_in_url(self):
        """
        The URL's password (percent-encoded) reaches the master: the store writes, and
        its commits are confirmed by the replica, which the master's password also
        guards.
        """
        redis = await deferToThread(ReplicatedRedis, self, 1, 1000, "p@ss:w/rd")
        address = RedisAddress.from_url(redis.url("p@ss:w/rd"))
        self.assertEqual(address.password, "p@ss:w/rd")
        store = Store.connect(address, unique_prefix(), timeout=2.0, min_replicas_acked=1)
        self.addCleanup(store.disconnect)
        [pmid] = await store.register_pms([("pm-a", "test:///a")])
        await store.set_capacity(pmid, Resources(64, 65536, 1000))
        vmid, _ = await store.claim(0, pmid, SMALL, ONE, {"name": "x"})
        self.assertTrue(await store.commit(vmid, pmid))
        replica = redis.nodes[1]
        state = await deferToThread(replica.ask, "HGET", store.keys.vm(vmid), "state")
        self.assertEqual(state, "active")
