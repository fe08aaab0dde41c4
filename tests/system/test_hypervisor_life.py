"""
A VM's life once made, as every provider of L{IHypervisor} must lead it: its state,
stopped, started, rebooted, paused, resumed, and resized.

L{VMLifeTests} holds no tests of its own to run: it is mixed into the class
L{tests.system.test_hypervisor_interface.make_hypervisor_tests} makes for each kind of
hypervisor (the fake, libvirt's test driver, real libvirtd), whose helpers it uses.
"""

from __future__ import annotations

import threading
import time

from attrs import evolve
from twisted.trial.unittest import SkipTest

from vorchd.hypervisor.interface import HostUnreachable, HypervisorError, NoSuchVM, WrongState
from vorchd.model import Flavor

GIB = 1024**3

FLAVOR = Flavor(1, 1, 64, 1)

#: Bigger in every way than L{FLAVOR}.
BIGGER = Flavor(2, 2, 128, 2)

#: Seconds a test guest gets to shut down when asked (vorchd's never do: they are forced).
STOP_TIMEOUT = 0.3


class VMLifeTests:
    """
    The tests of a VM's life, mixed into each kind's test class.
    """

    def assert_wrong_state(self, state: str, words: str, call, *args) -> WrongState:
        """
        C{call(*args)} raises L{WrongState} for a domain in C{state}, saying C{words}.
        """
        e = self.assertRaises(WrongState, call, *args)
        self.assertEqual(e.state, state)
        self.assertIn(f" is {words}", str(e))
        return e

    # -- states -----------------------------------------------------------------------

    def test_life_cycle(self):
        """
        A created VM runs; it can be paused and resumed, reset, stopped (staying defined
        with its disk) and started again, each answered by the state it is then in.
        """
        spec = self.create(1)
        name = spec.domain_name
        self.assertEqual(self.hv.vm_state(name), "running")
        self.hv.suspend_vm(name)
        self.assertEqual(self.hv.vm_state(name), "paused")
        self.hv.resume_vm(name)
        self.assertEqual(self.hv.vm_state(name), "running")
        self.hv.reboot_vm(name)
        self.assertEqual(self.hv.vm_state(name), "running")
        self.hv.stop_vm(name, STOP_TIMEOUT)
        self.assertEqual(self.hv.vm_state(name), "shutoff")
        self.assertIn(name, self.hv.domain_names())
        self.assertIn(spec.volume_name, self.hv.volume_names())
        [meta] = self.hv.fleet_domains(self.fleet)
        self.assertEqual((meta["vmid"], meta["flavor"]), (1, FLAVOR))
        self.hv.start_vm(name)
        self.assertEqual(self.hv.vm_state(name), "running")

    def test_wrong_states(self):
        """
        An operation its domain's state does not allow fails with L{WrongState} saying
        the state, and changes nothing; the PM stays connected.
        """
        name = self.create(1).domain_name
        self.assert_wrong_state("running", "running", self.hv.start_vm, name)
        e = self.assert_wrong_state("running", "running", self.hv.resume_vm, name)
        self.assertIn(name, str(e))
        self.assertEqual(self.hv.vm_state(name), "running")
        self.hv.suspend_vm(name)
        self.assert_wrong_state("paused", "paused", self.hv.suspend_vm, name)
        self.assert_wrong_state("paused", "paused", self.hv.reboot_vm, name)
        self.assert_wrong_state("paused", "paused", self.hv.start_vm, name)
        self.assertEqual(self.hv.vm_state(name), "paused")
        self.hv.stop_vm(name, STOP_TIMEOUT)
        for call in (self.hv.resume_vm, self.hv.suspend_vm, self.hv.reboot_vm):
            self.assert_wrong_state("shutoff", "shut off", call, name)
        self.assert_wrong_state("shutoff", "shut off", self.hv.stop_vm, name, STOP_TIMEOUT)
        self.assertEqual(self.hv.vm_state(name), "shutoff")
        self.assertTrue(self.hv.alive())

    def test_missing(self):
        """
        A domain the PM does not have is C{missing}, not an error; every operation on it
        fails with L{NoSuchVM}.
        """
        spec = self.spec(404)
        name = spec.domain_name
        self.assertEqual(self.hv.vm_state(name), "missing")
        calls = {
            "stop_vm": lambda: self.hv.stop_vm(name, STOP_TIMEOUT),
            "start_vm": lambda: self.hv.start_vm(name),
            "reboot_vm": lambda: self.hv.reboot_vm(name),
            "suspend_vm": lambda: self.hv.suspend_vm(name),
            "resume_vm": lambda: self.hv.resume_vm(name),
            "resize_vm": lambda: self.hv.resize_vm(spec, STOP_TIMEOUT),
            "migrate_vm": lambda: self.hv.migrate_vm(spec, "test:///default", False),
        }
        raised = {}
        for method, call in calls.items():
            try:
                raised[method] = call()
            except Exception as e:
                raised[method] = type(e)
        self.assertEqual(raised, dict.fromkeys(calls, NoSuchVM))

    def test_stop_forces_off(self):
        """
        A guest that ignores the request to shut down is forced off once the timeout is
        up.
        """
        self.maker.ignore_acpi(self.hv)
        if not self.maker.ignores_acpi:
            raise SkipTest("its guests shut down when asked")
        name = self.create(1).domain_name
        started = time.monotonic()
        self.hv.stop_vm(name, 1.0)
        self.assertGreaterEqual(time.monotonic() - started, 1.0)
        self.assertEqual(self.hv.vm_state(name), "shutoff")

    def test_stop_paused(self):
        """
        A paused domain is forced off at once: its guest cannot be asked.
        """
        self.maker.ignore_acpi(self.hv)
        name = self.create(1).domain_name
        self.hv.suspend_vm(name)
        # A stop that waited for the guest would take the hour it is given: a deadline
        # far below that, and far above a forced stop, only catches such a wait.
        stopping = threading.Thread(target=self.hv.stop_vm, args=(name, 3600), daemon=True)
        stopping.start()
        stopping.join(120)
        self.assertFalse(stopping.is_alive(), "the stop waited for a paused guest")
        self.assertEqual(self.hv.vm_state(name), "shutoff")

    def test_destroy_keeping_disk(self):
        """
        Destroying a VM without naming its disk removes the domain and keeps the disk.
        """
        spec = self.create(1)
        self.assertTrue(self.hv.destroy_vm(spec.domain_name, None))
        self.assertEqual(self.hv.vm_state(spec.domain_name), "missing")
        self.assertIn(spec.volume_name, self.hv.volume_names())
        self.assertFalse(self.hv.destroy_vm(spec.domain_name, spec.volume_name))
        self.assertNotIn(spec.volume_name, self.hv.volume_names())

    # -- resizing ---------------------------------------------------------------------

    def assert_size(self, spec, flavor: Flavor) -> None:
        """
        C{spec}'s domain has C{flavor}'s vCPUs and memory, in its definition and in its
        metadata, and its disk (where disks grow) C{flavor}'s GiB.
        """
        self.assertEqual(self.maker.size(self.hv, spec.domain_name), (flavor.cpu, flavor.ram))
        [meta] = [m for m in self.hv.fleet_domains(self.fleet) if m["vmid"] == spec.vmid]
        self.assertEqual(meta["flavor"], flavor)
        if not self.maker.cannot_grow_disk:
            capacity = self.maker.capacity_of(self.hv, spec.volume_name)
            self.assertEqual(capacity, flavor.disk * GIB)

    def test_resize_running(self):
        """
        A running VM resized gets the new vCPUs, memory, disk and flavor, and runs
        again.
        """
        spec = self.create(1)
        self.hv.resize_vm(evolve(spec, flavor=BIGGER), STOP_TIMEOUT)
        self.assertEqual(self.hv.vm_state(spec.domain_name), "running")
        self.assert_size(spec, BIGGER)

    def test_resize_shut_off(self):
        """
        A shut off VM resized gets the new size and stays shut off; it starts so.
        """
        spec = self.create(1)
        self.hv.stop_vm(spec.domain_name, STOP_TIMEOUT)
        self.hv.resize_vm(evolve(spec, flavor=BIGGER), STOP_TIMEOUT)
        self.assertEqual(self.hv.vm_state(spec.domain_name), "shutoff")
        self.assert_size(spec, BIGGER)
        self.hv.start_vm(spec.domain_name)
        self.assertEqual(self.hv.vm_state(spec.domain_name), "running")
        self.assert_size(spec, BIGGER)

    def test_resize_never_shrinks_disk(self):
        """
        A resize to a disk smaller than the VM's fails with L{HypervisorError} and changes
        nothing: the VM keeps running with its old size. A smaller CPU and memory with
        the same disk is fine.
        """
        start = Flavor(2, 2, 128, 2)
        spec = self.create(1, flavor=start)
        smaller = evolve(spec, flavor=Flavor(1, 1, 64, 1))
        e = self.assertRaises(HypervisorError, self.hv.resize_vm, smaller, STOP_TIMEOUT)
        self.assertNotIsInstance(e, HostUnreachable)
        self.assertIn("shrunk", str(e))
        self.assertEqual(self.hv.vm_state(spec.domain_name), "running")
        self.assertEqual(self.maker.capacity_of(self.hv, spec.volume_name), 2 * GIB)
        self.assert_size(spec, start)
        fewer = Flavor(3, 1, 64, 2)
        self.hv.resize_vm(evolve(spec, flavor=fewer), STOP_TIMEOUT)
        self.assert_size(spec, fewer)

    def test_resize_fails_put_back(self):
        """
        A resize that fails once the VM is shut down puts the old definition back and
        starts the VM again, and fails with L{HypervisorError}.
        """
        if self.maker.cannot_fail_resize:
            raise SkipTest(self.maker.cannot_fail_resize)
        spec = self.create(1)
        flavor = self.maker.break_resize(self.hv) or BIGGER
        e = self.assertRaises(
            HypervisorError, self.hv.resize_vm, evolve(spec, flavor=flavor), STOP_TIMEOUT
        )
        self.assertNotIsInstance(e, HostUnreachable)
        self.assertIn("resizing", str(e))
        self.assertEqual(self.hv.vm_state(spec.domain_name), "running")
        self.assertEqual(self.maker.size(self.hv, spec.domain_name), (1, 64))
        [meta] = self.hv.fleet_domains(self.fleet)
        self.assertEqual(meta["flavor"], FLAVOR)
