"""
The hypervisor service over in-memory PMs: each L{IHypervisor} method reached through
C{hypervisors.on(pmid)} runs in the service's thread pool, within its time, and what a
late one did is undone; failures mark a PM down, and it is taken back once it answers.
"""

from __future__ import annotations

import time

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import Interface

from vorchd.domain import VM
from vorchd.hypervisor.fake import FakeHypervisor, Gate
from vorchd.hypervisor.interface import (
    HostUnreachable,
    HypervisorError,
    IHypervisor,
    NoSuchVM,
    WrongState,
)
from vorchd.hypervisor.service import Hypervisors, ThreadedHypervisor
from vorchd.hypervisor.threaded import methods_of, threaded
from vorchd.model import Flavor, Resources
from vorchd.network import NETWORK, Attachment

SPEC = VM("f1", 1, "one", Flavor(1, 1, 64, 1), 1, 1)


class IExample(Interface):
    def get(key: str, default: int = 0) -> int:
        """
        An example method.
        """


class ThreadedTests(SynchronousTestCase):
    """
    L{threaded} makes one method per method of the interface, from the class's stubs.
    """

    def test_generated_from_interface(self):
        """
        Each generated method hands its name and arguments to C{_call}, and carries the
        interface's documentation and the stub's signature.
        """

        @threaded(IExample)
        class Example:
            def get(self, key: str, default: int = 0) -> int: ...

            def _call(self, method, args, kwargs):
                return (method, args, kwargs)

        self.assertEqual(Example().get("k", default=2), ("get", ("k",), {"default": 2}))
        self.assertIn("An example method", Example.get.__doc__)

    def test_stubs_must_match(self):
        """
        A class that lacks a method of the interface, or declares it with other
        parameters, is refused when it is made.
        """
        with self.assertRaises(TypeError):

            @threaded(IExample)
            class Missing:
                pass

        with self.assertRaises(TypeError):

            @threaded(IExample)
            class Different:
                def get(self, name: str, default: int = 0) -> int: ...

        with self.assertRaises(TypeError):

            @threaded(IExample)
            class Required:
                def get(self, key: str, default: int) -> int: ...

    def test_adapter_covers_interface(self):
        """
        L{ThreadedHypervisor} offers every method of L{IHypervisor}.
        """
        for name in methods_of(IHypervisor):
            self.assertEqual(getattr(ThreadedHypervisor, name).__name__, name)


class HypervisorsTests(TestCase):
    """
    A running L{Hypervisors} service with one in-memory PM, connected.
    """

    async def setUp(self):
        self.states: list[tuple[int, bool]] = []
        self.ups: list[tuple[int, Resources]] = []
        self.hypervisors = Hypervisors(
            reactor,
            threads=4,
            connect_timeout=2,
            call_timeout=5,
            reconnect_max_delay=1,
            on_up=lambda pmid, capacity: self.ups.append((pmid, capacity)),
        )
        self.hypervisors.on_state = lambda pmid, up: self.states.append((pmid, up))
        self.hypervisors.startService()
        self.addCleanup(self.stop)
        self.pm = FakeHypervisor("fake:///pm1")
        self.hypervisors.add(1, self.pm)
        self.assertEqual(await self.hypervisors.connect(1), self.pm.capacity)

    async def stop(self):
        if self.hypervisors.running:
            await self.hypervisors.stopService()

    async def until(self, what: str, condition, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                self.fail(f"not {what} within {seconds} s")
            await task.deferLater(reactor, 0.01, lambda: None)

    def gate(self, method: str) -> Gate:
        gate = self.pm.gates[method] = Gate()
        self.addCleanup(gate.release)
        return gate

    async def test_connect(self):
        """
        A PM connected and discovered is up, and C{on_up} is told its capacity.
        """
        self.assertTrue(self.hypervisors.is_up(1))
        self.assertEqual(self.states, [(1, True)])
        self.assertEqual(self.ups, [(1, self.pm.capacity)])

    async def test_call_in_thread(self):
        """
        A call runs in a thread of the pool (a gate there does not hold the reactor) and
        answers what the method returns.
        """
        gate = self.gate("domain_names")
        answer = self.hypervisors.on(1).domain_names()
        await self.until("held", lambda: gate.held == 1)
        self.assertFalse(answer.called)
        gate.release()
        self.assertEqual(await answer, set())
        path, fmt = "/base.img", "raw"
        self.assertEqual(await self.hypervisors.on(1).create_vm(SPEC, path, fmt), "fake")
        self.assertEqual(await self.hypervisors.on(1).domain_names(), {SPEC.domain_name})

    async def test_failure(self):
        """
        A call that fails answers its error, and the PM stays up.
        """
        self.pm.failures["destroy_vm"] = HypervisorError("injected")
        with self.assertRaises(HypervisorError):
            await self.hypervisors.on(1).destroy_vm("d", "v")
        self.assertTrue(self.hypervisors.is_up(1))

    async def test_vm_life(self):
        """
        A VM's life goes through the service like the rest: each change answered once
        done; a L{WrongState} or L{NoSuchVM} arrives as itself, and the PM stays up.
        """
        pm = self.hypervisors.on(1)
        await pm.create_vm(SPEC, "/base.img", "raw")
        await pm.suspend_vm(SPEC.domain_name)
        self.assertEqual(await pm.vm_state(SPEC.domain_name), "paused")
        with self.assertRaises(WrongState) as e:
            await pm.suspend_vm(SPEC.domain_name)
        self.assertEqual(e.exception.state, "paused")
        await pm.stop_vm(SPEC.domain_name, 1.0)
        self.assertEqual(await pm.vm_state(SPEC.domain_name), "shutoff")
        with self.assertRaises(NoSuchVM):
            await pm.start_vm("vorchd-f1-404")
        self.assertTrue(self.hypervisors.is_up(1))
        self.assertEqual(self.pm.done.count("suspend_vm"), 1)
        self.assertNotIn("start_vm", self.pm.done)

    async def test_kvm_pause_restarted_emulated(self):
        """
        A PM saying (from another thread) that a guest it started lately was paused has
        it restarted emulated through the pool, and the service says so once, naming
        the PM and the domain; a pause KVM did not cause (a suspend) is left alone,
        with nothing said.
        """
        said = []

        def observe(event):
            if event.get("log_format", "").startswith("PM {pmid}: KVM cannot run guests"):
                said.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        pm = self.hypervisors.on(1)
        name = SPEC.domain_name
        await pm.create_vm(SPEC, "/base.img", "raw")
        await pm.suspend_vm(name)
        await deferToThread(self.pm.on_kvm_pause, name)
        await self.until("run_emulated asked", lambda: "run_emulated" in self.pm.done)
        self.assertEqual(await pm.vm_state(name), "paused")
        self.assertEqual(said, [])

        self.pm.kvm_pauses[name] = 2.5
        await deferToThread(self.pm.on_kvm_pause, name)
        await self.until("the restart said", lambda: bool(said))
        self.assertEqual(await pm.vm_state(name), "running")
        self.assertEqual((said[0]["pmid"], said[0]["domain"], said[0]["age"]), (1, name, 2.5))

    async def test_migrate_between_fakes(self):
        """
        A fake PM migrates a VM to the fake at the target's URI, through the service.
        """
        target = FakeHypervisor("fake:///pm2")
        self.hypervisors.add(2, target)
        await self.hypervisors.connect(2)
        await self.hypervisors.on(1).create_vm(SPEC, "/base.img", "raw")
        moved = VM(SPEC.fleet, SPEC.vmid, SPEC.name, SPEC.flavor, SPEC.image_id, 2)
        await self.hypervisors.on(2).prepare_incoming(moved, "/base.img", "raw")
        await self.hypervisors.on(1).migrate_vm(moved, target.uri, False)
        self.assertEqual(await self.hypervisors.on(2).vm_state(SPEC.domain_name), "running")
        self.assertEqual(target.domains[SPEC.domain_name].metadata["pmid"], 2)
        self.assertEqual(self.pm.domains, {})

    async def test_unknown_pm(self):
        """
        A call to a PM the service does not manage fails with L{HostUnreachable}.
        """
        with self.assertRaises(HostUnreachable):
            await self.hypervisors.on(99).domain_names()

    async def test_string_call(self):
        """
        C{call(pmid, "method", ...)} still reaches the method; a name that is not a method
        of the interface is refused at once.
        """
        self.assertEqual(await self.hypervisors.call(1, "domain_names"), set())
        self.assertRaises(AttributeError, self.hypervisors.call, 1, "nope")
        self.assertRaises(AttributeError, self.hypervisors.call, 1, "_call")

    async def test_pm_dies_and_comes_back(self):
        """
        A PM that goes away is marked down at once (its connection's close is noticed),
        and reconnected, rediscovered and up again once it answers.
        """
        self.pm.die()
        await self.until("down", lambda: not self.hypervisors.is_up(1))
        with self.assertRaises(HostUnreachable):
            await self.hypervisors.on(1).domain_names()
        self.pm.reachable = True
        await self.until("up again", lambda: self.hypervisors.is_up(1))
        self.assertEqual(self.states[-2:], [(1, False), (1, True)])
        self.assertEqual(len(self.ups), 2)

    async def test_network_missing_refused_then_up(self):
        """
        A PM whose VMs' network is missing is refused: down, with that reason, and not
        told up; it is retried, and once its network runs it is up.
        """
        pm = FakeHypervisor("fake:///pm2", network=Attachment(NETWORK, "lan"))
        self.hypervisors.add(2, pm)
        self.assertIsNone(await self.hypervisors.connect(2))
        self.assertFalse(self.hypervisors.is_up(2))
        self.assertIn("network lan is missing", self.hypervisors.down_reason(2))
        self.assertNotIn(2, [pmid for pmid, _ in self.ups])
        pm.networks["lan"] = False
        await self.until(
            "refused as not active", lambda: "not active" in self.hypervisors.down_reason(2)
        )
        pm.networks["lan"] = True
        await self.until("PM 2 up", lambda: self.hypervisors.is_up(2))
        self.assertEqual(self.hypervisors.down_reason(2), "")
        self.assertIn((2, pm.capacity), self.ups)

    async def test_call_finds_pm_gone(self):
        """
        A call that finds the connection gone (a PM that went away unnoticed) marks the
        PM down.
        """
        self.pm.reachable = False
        with self.assertRaises(HostUnreachable):
            await self.hypervisors.on(1).domain_names()
        self.assertFalse(self.hypervisors.is_up(1))

    async def test_late_success_undone(self):
        """
        A call still running after its timeout fails at once; when it succeeds after all,
        C{undo} is given its result (here: the late domain is destroyed), and
        C{finished} is told.
        """
        gate = self.gate("create_vm")
        undone, finished = [], []
        hypervisors = self.hypervisors

        def undo(kind):
            undone.append(kind)
            return hypervisors.on(1).destroy_vm(SPEC.domain_name, SPEC.volume_name)

        calls = hypervisors.on(1, timeout=0.2, undo=undo, finished=lambda: finished.append(1))
        with self.assertRaises(HypervisorError) as e:
            await calls.create_vm(SPEC, "/base.img", "raw")
        self.assertIn("took too long", str(e.exception))
        self.assertEqual((undone, finished), ([], []))
        gate.release()
        await self.until("undone", lambda: "destroy_vm" in self.pm.done)
        self.assertEqual((undone, finished), (["fake"], [1]))
        self.assertEqual(self.pm.domains, {})
        self.assertEqual(self.pm.done[-2:], ["create_vm", "destroy_vm"])

    async def test_slow_call_times_out(self):
        """
        A slow PM's call fails once its time is up; a late failure is not undone.
        """
        self.pm.delays["create_vm"] = 0.5
        self.pm.start_failure = "injected"
        undone, finished = [], []
        calls = self.hypervisors.on(
            1, timeout=0.1, undo=undone.append, finished=lambda: finished.append(1)
        )
        with self.assertRaises(HypervisorError):
            await calls.create_vm(SPEC, "/base.img", "raw")
        await self.until("finished", lambda: finished)
        self.assertEqual(undone, [])

    async def test_stopping_fails_pending_calls(self):
        """
        Stopping the service fails the calls still waiting for their thread at once, and
        refuses new ones.
        """
        gate = self.gate("domain_names")
        answer = self.hypervisors.on(1).domain_names()
        await self.until("held", lambda: gate.held == 1)
        stopped = defer.ensureDeferred(self.stop())
        self.assertTrue(answer.called)
        gate.release()
        with self.assertRaises(HypervisorError):
            await answer
        await stopped
        with self.assertRaises(HypervisorError):
            await self.hypervisors.on(1).domain_names()
