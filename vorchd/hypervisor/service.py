"""
The service that owns the fleet's libvirt connections and the thread pool they are
used from, started and stopped with the daemon (like C{twisted.enterprise.adbapi}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from vorchd.domain import VM
from vorchd.hypervisor.events import start_event_loop
from vorchd.hypervisor.interface import (
    CallTimedOut,
    HostUnreachable,
    HypervisorError,
    IHypervisor,
    NetworkUnavailable,
)
from vorchd.hypervisor.threaded import methods_of, threaded
from vorchd.model import Resources
from vorchd.volume_xml import CephPool

_METHODS = frozenset(methods_of(IHypervisor))


class Hypervisors(Service):
    """
    One L{IHypervisor} per PM, each reached only through L{on}, which runs its blocking
    methods in this service's thread pool and gives their results as Deferreds.

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
        pool: ThreadPool | None = None,
    ):
        self._reactor = reactor
        # The threads libvirt's blocking calls run in (a test may give one of its own
        # that runs them when it says, with a clock for the reactor).
        if pool is None:
            pool = ThreadPool(minthreads=1, maxthreads=threads, name="vorchd-libvirt")
        self._pool = pool
        self._hosts: dict[int, IHypervisor] = {}
        self._up: dict[int, bool] = {}
        self._why: dict[int, str] = {}
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

    def blocking(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        """
        C{f(*args)} in this service's thread pool: for blocking work of this machine's
        own (files), never on the reactor thread.
        """
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    # -- hosts ----------------------------------------------------------------------------

    def add(self, pmid: int, host: IHypervisor) -> None:
        """
        Manage C{host} as PM C{pmid} (not connected until L{connect}).
        """
        self._hosts[pmid] = host
        self._up[pmid] = False
        host.on_close = lambda why: self._reactor.callFromThread(self._mark_down, pmid, why)
        host.on_kvm_pause = lambda name: self._reactor.callFromThread(self._kvm_paused, pmid, name)

    def host(self, pmid: int) -> IHypervisor | None:
        """
        PM C{pmid}'s hypervisor itself (blocking: call it from a thread), or None.
        """
        return self._hosts.get(pmid)

    def is_up(self, pmid: int) -> bool:
        return self._up.get(pmid, False)

    def down_reason(self, pmid: int) -> str:
        """
        Why PM C{pmid} is down (its last connection failure, or the refusal of its
        network), or "" if it is up or was never tried.
        """
        return "" if self._up.get(pmid) else self._why.get(pmid, "")

    def on(
        self,
        pmid: int,
        *,
        timeout: float | None = None,
        undo: Callable[[Any], object] | None = None,
        finished: Callable[[], object] | None = None,
    ) -> ThreadedHypervisor:
        """
        PM C{pmid}'s hypervisor, each of its L{IHypervisor} methods run in this service's
        thread pool and answered as a Deferred: C{await hypervisors.on(pmid).domain_names()}.

        @param timeout: how long a call may take (default: the service's C{call_timeout}).
        @param undo: called with the result of a call that succeeds after its time was up.
        @param finished: called when a call's thread is done, in time or not.
        @see: L{ThreadedHypervisor}
        """
        return ThreadedHypervisor(self, pmid, timeout, undo, finished)

    def call(
        self,
        pmid: int,
        method: str,
        *args,
        timeout: float | None = None,
        undo: Callable[[Any], object] | None = None,
        finished: Callable[[], object] | None = None,
    ) -> defer.Deferred:
        """
        C{on(pmid, ...).<method>(*args)}, for a caller that still names the method by a
        string. Prefer L{on}, which a reader and a type checker can follow.

        @raise AttributeError: C{method} is not a method of L{IHypervisor}.
        """
        if method not in _METHODS:
            raise AttributeError(f"{method!r} is not a method of IHypervisor")
        calls = self.on(pmid, timeout=timeout, undo=undo, finished=finished)
        return getattr(calls, method)(*args)

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
            await self.on(
                pmid,
                timeout=self.connect_timeout,
                finished=lambda: self._connecting.discard(pmid),
            ).connect()
            capacity = await self.on(pmid).discover()
            # A PM whose VMs' network is missing or down would fail every create at its
            # start: it is refused (down, retried like an unreachable one) instead.
            await self.on(pmid).check_network()
        except NetworkUnavailable as e:
            self.log.warn("PM {pmid} refused: {why}", pmid=pmid, why=str(e))
            self._mark_down(pmid, str(e))
            return None
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

    def _kvm_paused(self, pmid: int, domain_name: str) -> defer.Deferred | None:
        """
        A guest PM C{pmid} started lately was paused unasked: have the PM restart it
        emulated if KVM is what paused it, and say so.
        """
        if not self.running or pmid not in self._hosts:
            return None

        def done(age):
            if age is not None:
                self.log.warn(
                    "PM {pmid}: KVM cannot run guests there: it paused {domain} with an"
                    " internal error {age:.1f} s after its start. Restarted it under QEMU"
                    " emulation; later VMs on PM {pmid} run emulated ([libvirt]"
                    " domain_type = qemu skips KVM from the start)",
                    pmid=pmid,
                    domain=domain_name,
                    age=age,
                )

        def failed(f):
            self.log.warn(
                "PM {pmid}: KVM paused {domain}, and restarting it emulated failed: {e}",
                pmid=pmid,
                domain=domain_name,
                e=f.getErrorMessage(),
            )

        return self.on(pmid).run_emulated(domain_name).addCallbacks(done, failed)

    def _mark_down(self, pmid: int, why: str) -> None:
        was_up = self._up.get(pmid, False)
        self._up[pmid] = False
        self._why[pmid] = why
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


@threaded(IHypervisor)
class ThreadedHypervisor:
    """
    One PM's L{IHypervisor} through a L{Hypervisors} service (made by L{Hypervisors.on}):
    each method runs in the service's thread pool and answers a Deferred of its result.

    A call that finds the connection gone marks the PM down and starts reconnecting. A
    call still running after C{timeout} fails at once; a thread cannot be stopped, so if it
    succeeds later after all, C{undo(result)} takes back what it did (a domain started
    after its create was answered with a failure, say). C{finished()} is called when the
    thread is done, in time or not.
    """

    __slots__ = ("_service", "_pmid", "_timeout", "_undo", "_finished")

    def __init__(
        self,
        service: Hypervisors,
        pmid: int,
        timeout: float | None = None,
        undo: Callable[[Any], object] | None = None,
        finished: Callable[[], object] | None = None,
    ):
        self._service = service
        self._pmid = pmid
        self._timeout = timeout
        self._undo = undo
        self._finished = finished

    # IHypervisor's methods, made by threaded(); declared here for their signatures.

    def connect(self) -> defer.Deferred[None]: ...

    def close(self) -> defer.Deferred[None]: ...

    def alive(self) -> defer.Deferred[bool]: ...

    def discover(self) -> defer.Deferred[Resources]: ...

    def check_network(self) -> defer.Deferred[None]: ...

    def vm_addresses(self, domain_name: str) -> defer.Deferred[list[str]]: ...

    def ensure_base(
        self, fleet: str, image_id: int, source: str
    ) -> defer.Deferred[tuple[str, str]]: ...

    def prune_bases(self, fleet: str) -> defer.Deferred[list[str]]: ...

    def create_vm(self, vm: VM, base_path: str, base_format: str) -> defer.Deferred[str]: ...

    def run_emulated(self, domain_name: str) -> defer.Deferred[float | None]: ...

    def destroy_vm(self, domain_name: str, volume_name: str | None) -> defer.Deferred[bool]: ...

    def domain_names(self) -> defer.Deferred[set[str]]: ...

    def fleet_domains(
        self, fleet: str, known: frozenset[str] = frozenset()
    ) -> defer.Deferred[list[dict]]: ...

    def volume_names(self) -> defer.Deferred[set[str]]: ...

    def vm_state(self, domain_name: str) -> defer.Deferred[str]: ...

    def stop_vm(self, domain_name: str, timeout: float) -> defer.Deferred[None]: ...

    def start_vm(self, domain_name: str) -> defer.Deferred[None]: ...

    def reboot_vm(self, domain_name: str) -> defer.Deferred[None]: ...

    def suspend_vm(self, domain_name: str) -> defer.Deferred[None]: ...

    def resume_vm(self, domain_name: str) -> defer.Deferred[None]: ...

    def resize_vm(self, vm: VM, timeout: float) -> defer.Deferred[None]: ...

    def migrate_vm(self, vm: VM, target_uri: str, shared: bool) -> defer.Deferred[None]: ...

    def prepare_incoming(
        self, vm: VM, base_path: str, base_format: str
    ) -> defer.Deferred[None]: ...

    def export_disk(self, volume_name: str, path: str) -> defer.Deferred[None]: ...

    def import_disk(self, volume_name: str, path: str) -> defer.Deferred[None]: ...

    def define_vm(self, vm: VM) -> defer.Deferred[str]: ...

    def pool_marks(self, fleet: str, pmid: int) -> defer.Deferred[frozenset[int]]: ...

    def make_volume(
        self, volume_name: str, size_gib: int, ceph: CephPool | None = None
    ) -> defer.Deferred[str]: ...

    def ceph_room(self, ceph: CephPool) -> defer.Deferred[tuple[int, int]]: ...

    def delete_volume(
        self, volume_name: str, ceph: CephPool | None = None
    ) -> defer.Deferred[bool]: ...

    def attach_volume(
        self, domain_name: str, volume_name: str, serial: str, ceph: CephPool | None = None
    ) -> defer.Deferred[None]: ...

    def detach_volume(
        self, domain_name: str, volume_name: str, ceph: CephPool | None = None
    ) -> defer.Deferred[bool]: ...

    def _call(self, method: str, args: tuple, kwargs: dict) -> defer.Deferred:
        service, pmid = self._service, self._pmid
        host = service._hosts.get(pmid)
        if host is None:
            return defer.fail(HostUnreachable(f"PM {pmid} is not managed by this daemon"))
        if not service.running:
            return defer.fail(HypervisorError("the daemon is stopping"))
        undo, finished = self._undo, self._finished
        answer: defer.Deferred = defer.Deferred()
        timer = service._reactor.callLater(
            self._timeout or service.call_timeout,
            lambda: answer.errback(CallTimedOut(f"{host.uri}: {method} took too long")),
        )
        service._pending[answer] = timer

        def done(result):
            service._pending.pop(answer, None)
            if finished is not None:
                finished()
            if timer.active():
                timer.cancel()
                answer.callback(result)
            elif isinstance(result, Failure):
                service.log.info(
                    "PM {pmid}: late {method} failed: {e}",
                    pmid=pmid,
                    method=method,
                    e=result.getErrorMessage(),
                )
            elif undo is not None:
                service.log.warn(
                    "PM {pmid}: {method} finished after its time; undoing it",
                    pmid=pmid,
                    method=method,
                )
                late = defer.maybeDeferred(undo, result)
                late.addErrback(lambda f: service.log.failure("undoing late {m}", f, m=method))

        deferToThreadPool(
            service._reactor, service._pool, getattr(host, method), *args, **kwargs
        ).addBoth(done)

        def failed(f):
            if f.check(HostUnreachable):
                service._mark_down(pmid, f.getErrorMessage())
            return f

        answer.addErrback(failed)
        return answer
