"""
What the unit tests run the fleet's jobs over: the in-memory store and hypervisors
(held to the real ones' interface tests elsewhere), a thread pool whose work runs when
the test says, and a clock for the reactor, so that every retry, undo and timeout path
runs in milliseconds without Redis, libvirt or real time.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from vorchd.fleet import Fleet
from vorchd.hypervisor.fake import FakeHypervisor
from vorchd.hypervisor.service import Hypervisors
from vorchd.model import Flavor, ImageEntry, PMEntry, Resources
from vorchd.store.fake import FakeStore

FLAVORS = [Flavor(1, 1, 512, 1), Flavor(2, 2, 1024, 2), Flavor(3, 4, 2048, 3)]
PM_SIZE = Resources(4, 4096, 100)


class Reactor(Clock):
    """
    A clock that is also where threads hand their results back (at once).
    """

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class ManualPool:
    """
    A thread pool that runs nothing until L{run}, then runs what was queued, in order,
    in the calling thread.
    """

    def __init__(self):
        self.queue: list[tuple] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs) -> None:
        self.queue.append((on_result, f, args, kwargs))

    def run(self) -> int:
        """
        Run everything queued (and what that queues); how many calls ran.
        """
        ran = 0
        while self.queue:
            self.run_one(self.queue.pop(0))
            ran += 1
        return ran

    @staticmethod
    def run_one(item: tuple) -> None:
        """
        Run one queued call (taken out of the queue), handing its result or failure back.
        """
        on_result, f, args, kwargs = item
        try:
            result, ok = f(*args, **kwargs), True
        except BaseException:
            result, ok = Failure(), False
        on_result(ok, result)


class World:
    """
    A fleet over C{pms} fake PMs of C{capacity}, a fake store, a manual pool and a clock.
    """

    def __init__(
        self,
        directory: Path,
        pms: int = 2,
        capacity: Resources = PM_SIZE,
        policy: str = "first-fit",
    ):
        self.reactor = Reactor()
        self.pool = ManualPool()
        self.store = FakeStore("unit", reactor=self.reactor)
        self.hypervisors = Hypervisors(self.reactor, call_timeout=30, pool=self.pool)
        self.fleet = Fleet(self.store, self.hypervisors, policy, {"cpu": 1, "ram": 1, "disk": 1})
        self.hosts = {
            pmid: FakeHypervisor(f"fake:///pm{pmid}", capacity) for pmid in range(1, pms + 1)
        }
        self.image = directory / "hello.img"
        self.image.write_bytes(b"\0" * 512)

    def settle(self, d: defer.Deferred | None = None, limit: int = 1000):
        """
        Run the pool and the clock (not moving it) until C{d} has fired (or nothing is
        left to run); its result, or raise its failure.
        """
        for _ in range(limit):
            self.reactor.advance(0)
            ran = self.pool.run()
            if d is not None and d.called:
                break
            if d is None and not ran:
                break
        if d is None:
            return None
        results: list = []
        d.addBoth(results.append)
        assert results, "the work never finished"
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    def hold(self, method: str) -> tuple:
        """
        Run the work under way up to the pool call of hypervisor method C{method}, and
        take that call out of the queue: it runs when the test hands it to the pool's
        C{run_one} (late, if the clock was moved past its timeout meanwhile).
        """
        pool = self.pool
        for _ in range(50):
            self.reactor.advance(0)
            if any(f.__name__ == method for _, f, _, _ in pool.queue):
                break
            pool.run_one(pool.queue.pop(0))
        [held] = [item for item in pool.queue if item[1].__name__ == method]
        pool.queue.remove(held)
        return held

    def start(self) -> None:
        """
        Start the services, load the inventory and discover every PM.
        """
        self.hypervisors.startService()
        for pmid, host in self.hosts.items():
            self.hypervisors.add(pmid, host)
        self.fleet.feed.start()
        pms = [PMEntry(f"pm{p}", host.uri, p) for p, host in self.hosts.items()]
        images = [ImageEntry(str(self.image), "hello", str(self.image), None, None, 1)]
        self.settle(defer.ensureDeferred(self.fleet.load(pms, images, FLAVORS)))
        self.settle(defer.ensureDeferred(self.fleet.discover()))

    def stop(self) -> None:
        self.settle(defer.ensureDeferred(self.fleet.feed.stop()))
        self.hypervisors.stopService()
        self.pool.run()
