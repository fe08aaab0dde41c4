"""
The service that owns the fleet's libvirt connections and the thread pool they are
used from, started and stopped with the daemon (like C{twisted.enterprise.adbapi}).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from vorchd.hypervisor.events import start_event_loop
from vorchd.hypervisor.host import HostUnreachable, HypervisorError, LibvirtHost
from vorchd.model import Resources


class Hypervisors(Service):
    """
    One L{LibvirtHost} per PM, each reached only through C{call}, which runs the blocking
    method in this service's thread pool and gives its result as a Deferred.

    A PM whose connection fails is marked down and reconnected with exponential backoff;
    C{on_up} is told its freshly discovered capacity each time it (re)connects.
    """

    log = Logger()

    def __init__(
        self,
        reactor,
        threads: int = 8,
        connect_timeout: float = 20.0,
        call_timeout: float = 120.0,
        reconnect_max_delay: float = 60.0,
        on_up: Callable[[int, Resources], object] | None = None,
    ):
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=threads, name="vorchd-libvirt")
        self._hosts: dict[int, LibvirtHost] = {}
        self._up: dict[int, bool] = {}
        self._retry: dict[int, object] = {}
        self._delay: dict[int, float] = {}
        self._connecting: set[int] = set()
        # Calls not answered yet: their answer and timer (failed at once when stopping).
        self._pending: dict[defer.Deferred, object] = {}
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.reconnect_max_delay = reconnect_max_delay
        self.on_up = on_up
        # Told C{(pmid, up)} whenever a PM is found up or marked down.
        self.on_state: Callable[[int, bool], object] | None = None

    # -- life cycle ---------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        start_event_loop()
        self._pool.start()

    def stopService(self):
        super().stopService()
        for call in self._retry.values():
            if call.active():
                call.cancel()
        self._retry.clear()
        # No call waits for a thread pool that is going away.
        for answer, timer in list(self._pending.items()):
            if timer.active():
                timer.cancel()
                answer.errback(HypervisorError("the daemon is stopping"))
        self._pending.clear()
        hosts = list(self._hosts.values())

        def close_all():
            for host in hosts:
                host.close()

        d = deferToThreadPool(self._reactor, self._pool, close_all)
        d.addBoth(lambda _: self._pool.stop())
        return d

    # -- hosts ----------------------------------------------------------------------------

    def add(self, pmid: int, host: LibvirtHost) -> None:
        """
        Manage C{host} as PM C{pmid} (not connected until L{connect}).
        """
        self._hosts[pmid] = host
        self._up[pmid] = False
        host.on_close = lambda why: self._reactor.callFromThread(self._mark_down, pmid, why)

    def host(self, pmid: int) -> LibvirtHost | None:
        return self._hosts.get(pmid)

    def is_up(self, pmid: int) -> bool:
        return self._up.get(pmid, False)

    def call(
        self,
        pmid: int,
        method: str,
        *args,
        timeout: float | None = None,
        undo: Callable[[object], object] | None = None,
        finished: Callable[[], object] | None = None,
    ):
        """
        Run C{method} of PM C{pmid}'s L{LibvirtHost} in the thread pool.

        A call that finds the connection gone marks the PM down and starts reconnecting.
        A call still running after C{timeout} fails at once; a thread cannot be stopped,
        so if it succeeds later after all, C{undo(result)} takes back what it did (a
        domain started after its create was answered with a failure, say).
        C{finished()} is called when the thread is done, in time or not.
        """
        host = self._hosts.get(pmid)
        if host is None:
            return defer.fail(HostUnreachable(f"PM {pmid} is not managed by this daemon"))
        if not self.running:
            return defer.fail(HypervisorError("the daemon is stopping"))
        answer = defer.Deferred()
        timer = self._reactor.callLater(
            timeout or self.call_timeout,
            lambda: answer.errback(HypervisorError(f"{host.uri}: {method} took too long")),
        )
        self._pending[answer] = timer

        def done(result):
            self._pending.pop(answer, None)
            if finished is not None:
                finished()
            if timer.active():
                timer.cancel()
                answer.callback(result)
            elif isinstance(result, Failure):
                self.log.info(
                    "PM {pmid}: late {method} failed: {e}",
                    pmid=pmid,
                    method=method,
                    e=result.getErrorMessage(),
                )
            elif undo is not None:
                self.log.warn(
                    "PM {pmid}: {method} finished after its time; undoing it",
                    pmid=pmid,
                    method=method,
                )
                late = defer.maybeDeferred(undo, result)
                late.addErrback(lambda f: self.log.failure("undoing late {m}", f, m=method))

        deferToThreadPool(self._reactor, self._pool, getattr(host, method), *args).addBoth(done)

        def failed(f):
            if f.check(HostUnreachable):
                self._mark_down(pmid, f.getErrorMessage())
            return f

        answer.addErrback(failed)
        return answer

    async def connect(self, pmid: int) -> Resources | None:
        """
        Connect PM C{pmid} and discover it; on failure mark it down and retry later.

        @return: its capacity, or C{None} if it could not be reached now.
        """
        host = self._hosts[pmid]
        if pmid in self._connecting:
            # An earlier connect still blocks its thread (an address that drops packets
            # holds libvirt.open for minutes): do not pile up more of them.
            return None
        self._connecting.add(pmid)
        try:
            await self.call(
                pmid,
                "connect",
                timeout=self.connect_timeout,
                finished=lambda: self._connecting.discard(pmid),
            )
            capacity = await self.call(pmid, "discover")
        except HypervisorError as e:
            self._mark_down(pmid, str(e))
            return None
        self._up[pmid] = True
        if self.on_state is not None:
            self.on_state(pmid, True)
        self._delay.pop(pmid, None)
        self.log.info(
            "PM {pmid} up at {uri}: {capacity}", pmid=pmid, uri=host.uri, capacity=capacity
        )
        if self.on_up is not None:
            await defer.maybeDeferred(self.on_up, pmid, capacity)
        return capacity

    def _mark_down(self, pmid: int, why: str) -> None:
        was_up = self._up.get(pmid, False)
        self._up[pmid] = False
        if self.on_state is not None:
            self.on_state(pmid, False)
        if was_up:
            self.log.warn("PM {pmid} down: {why}", pmid=pmid, why=why)
        pending = self._retry.get(pmid)
        if not self.running or (pending is not None and pending.active()):
            return
        delay = min(self._delay.get(pmid, 0.5) * 2, self.reconnect_max_delay)
        self._delay[pmid] = delay
        self.log.info(
            "PM {pmid}: reconnecting in {delay:.0f} s ({why})", pmid=pmid, delay=delay, why=why
        )
        self._retry[pmid] = self._reactor.callLater(
            delay, lambda: defer.ensureDeferred(self.connect(pmid))
        )
