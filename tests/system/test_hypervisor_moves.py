"""
Moving a VM between PMs, as every provider of L{IHypervisor} must: live (source side
L{IHypervisor.migrate_vm}, target side L{IHypervisor.prepare_incoming}) and cold (its
disk exported, imported and its domain defined on the target); and pools shared by PMs,
found by their marks.

L{MoveTests} holds no tests of its own to run: it is mixed into the class
L{tests.system.test_hypervisor_interface.make_hypervisor_tests} makes for each kind of
hypervisor (the fake, libvirt's test driver, real libvirtd), whose helpers it uses.
"""

from __future__ import annotations

import hashlib
import uuid

from attrs import evolve
from twisted.trial.unittest import SkipTest

from tests.harness import tmpdir
from vorchd.domain import VM, mark_volume_name
from vorchd.hypervisor.interface import (
    HostUnreachable,
    HypervisorError,
    IHypervisor,
    WrongState,
)
from vorchd.model import Flavor

#: Seconds a test guest gets to shut down when asked (vorchd's never do: they are forced).
STOP_TIMEOUT = 0.3


class MoveTests:
    """
    The tests of moving VMs and sharing pools, mixed into each kind's test class.
    """

    def second(self) -> IHypervisor:
        """
        The hypervisor of a second PM of the test's kind (its pmid 2), connected.
        """
        return self.connected(self.maker.make_second())

    def shared(self) -> tuple[IHypervisor, IHypervisor]:
        """
        The hypervisors of two PMs whose pools are one directory, connected.
        """
        if self.maker.cannot_share_pool:
            raise SkipTest(self.maker.cannot_share_pool)
        one, two = self.maker.make_shared()
        return self.connected(one), self.connected(two)

    def prepared(self, spec: VM, target: IHypervisor) -> VM:
        """
        C{spec} as it is to be on C{target} (pmid 2), its disk made there ready to be
        filled; its domain and disk are destroyed there when the test ends.
        """
        moved = evolve(spec, pmid=2)
        path, fmt = target.ensure_base(spec.fleet, 1, str(self.image))
        self.addCleanup(self.destroy_quietly, moved, target)
        target.prepare_incoming(moved, path, fmt)
        return moved

    def assert_moved(self, spec: VM, target: IHypervisor, state: str) -> None:
        """
        C{spec}'s domain is in C{state} on C{target}, its metadata naming pmid 2, and
        gone from the test's PM with its disk.
        """
        self.assertEqual(target.vm_state(spec.domain_name), state)
        [meta] = target.fleet_domains(self.fleet)
        self.assertEqual((meta["vmid"], meta["pmid"], meta["name"]), (spec.vmid, 2, spec.name))
        self.assertIn(spec.volume_name, target.volume_names())
        self.assertEqual(self.hv.vm_state(spec.domain_name), "missing")
        self.assertNotIn(spec.volume_name, self.hv.volume_names())

    # -- live migration -----------------------------------------------------------------

    def test_migrate(self):
        """
        A running VM migrated to a PM where its disk was prepared runs there, kept
        persistently with its metadata naming that PM, and is gone from the source with
        its disk.
        """
        if self.maker.cannot_migrate:
            raise SkipTest(self.maker.cannot_migrate)
        spec = self.create(1)
        target = self.second()
        moved = self.prepared(spec, target)
        self.hv.migrate_vm(moved, target.uri, False)
        self.assert_moved(spec, target, "running")
        target.stop_vm(spec.domain_name, STOP_TIMEOUT)
        self.assert_moved(spec, target, "shutoff")

    def test_migrate_paused(self):
        """
        A paused VM migrates too, and stays paused.
        """
        if self.maker.cannot_migrate:
            raise SkipTest(self.maker.cannot_migrate)
        spec = self.create(1)
        self.hv.suspend_vm(spec.domain_name)
        target = self.second()
        self.hv.migrate_vm(self.prepared(spec, target), target.uri, False)
        self.assert_moved(spec, target, "paused")

    def test_migrate_shared_pool(self):
        """
        Between PMs whose pools are one directory, a VM migrates without its disk being
        prepared or copied, and the disk stays.
        """
        if self.maker.cannot_migrate:
            raise SkipTest(self.maker.cannot_migrate)
        one, two = self.shared()
        spec = self.create(1, hv=one)
        moved = evolve(spec, pmid=2)
        self.addCleanup(self.destroy_quietly, moved, two)
        one.migrate_vm(moved, two.uri, True)
        self.assertEqual(two.vm_state(spec.domain_name), "running")
        self.assertEqual([m["pmid"] for m in two.fleet_domains(self.fleet)], [2])
        self.assertEqual(one.vm_state(spec.domain_name), "missing")
        self.assertIn(spec.volume_name, one.volume_names())

    def test_migrate_target_gone(self):
        """
        A migration to a PM that went away fails with L{HypervisorError}, and leaves the
        VM running on the source with its disk; the source stays connected.
        """
        if self.maker.cannot_migrate:
            raise SkipTest(self.maker.cannot_migrate)
        spec = self.create(1)
        target = self.second()
        moved = self.prepared(spec, target)
        self.maker.kill(target)
        self.addCleanup(self.maker.revive, target)
        e = self.assertRaises(HypervisorError, self.hv.migrate_vm, moved, target.uri, False)
        self.assertNotIsInstance(e, HostUnreachable)
        self.assertEqual(self.hv.vm_state(spec.domain_name), "running")
        self.assertIn(spec.volume_name, self.hv.volume_names())
        [meta] = self.hv.fleet_domains(self.fleet)
        self.assertEqual(meta["pmid"], 1)
        self.assertTrue(self.hv.alive())

    def test_migrate_shut_off(self):
        """
        A shut off VM cannot migrate live: L{WrongState}, and it stays.
        """
        spec = self.create(1)
        self.hv.stop_vm(spec.domain_name, STOP_TIMEOUT)
        e = self.assertRaises(
            WrongState, self.hv.migrate_vm, evolve(spec, pmid=2), "test:///default", False
        )
        self.assertEqual(e.state, "shutoff")
        self.assertEqual(self.hv.vm_state(spec.domain_name), "shutoff")

    def test_cannot_migrate(self):
        """
        A hypervisor without migration fails one with L{HypervisorError} saying so, and
        leaves the VM running.
        """
        if not self.maker.cannot_migrate:
            raise SkipTest("it migrates")
        spec = self.create(1)
        target = self.second()
        moved = self.prepared(spec, target)
        e = self.assertRaises(HypervisorError, self.hv.migrate_vm, moved, target.uri, False)
        self.assertIn("cannot migrate", str(e))
        self.assertEqual(self.hv.vm_state(spec.domain_name), "running")

    # -- cold moves ---------------------------------------------------------------------

    def test_cold_move(self):
        """
        A shut off VM moves by its disk exported to a file, imported into the disk
        prepared on the target, and its domain defined there: it is shut off there with
        the same disk content and its metadata naming the target, and starts there.
        """
        spec = self.create(1)
        self.hv.stop_vm(spec.domain_name, STOP_TIMEOUT)
        before = self.maker.digest_of(self.hv, spec.volume_name)
        target = self.second()
        moved = self.prepared(spec, target)
        disk = tmpdir(self) / "disk.qcow2"
        self.hv.export_disk(spec.volume_name, str(disk))
        target.import_disk(spec.volume_name, str(disk))
        self.assertIn(target.define_vm(moved), self.maker.kinds)
        self.assertTrue(self.hv.destroy_vm(spec.domain_name, spec.volume_name))
        self.assert_moved(spec, target, "shutoff")
        if before is not None:
            self.assertEqual(hashlib.sha256(disk.read_bytes()).hexdigest(), before)
            self.assertEqual(self.maker.digest_of(target, spec.volume_name), before)
        target.start_vm(spec.domain_name)
        self.assertEqual(target.vm_state(spec.domain_name), "running")

    def test_cold_move_shared_pool(self):
        """
        Between PMs whose pools are one directory, a shut off VM moves by its domain
        alone: defined on the target over the disk the source made (which the target's
        pool had not listed), and removed from the source keeping the disk. It starts, and
        resizes, there.
        """
        one, two = self.shared()
        two.discover()
        spec = self.create(1, hv=one)
        one.stop_vm(spec.domain_name, STOP_TIMEOUT)
        moved = evolve(spec, pmid=2)
        self.addCleanup(self.destroy_quietly, moved, two)
        self.assertIn(two.define_vm(moved), self.maker.kinds)
        self.assertTrue(one.destroy_vm(spec.domain_name, None))
        self.assertIn(spec.volume_name, one.volume_names())
        self.assertEqual([m["pmid"] for m in two.fleet_domains(self.fleet)], [2])
        two.start_vm(spec.domain_name)
        two.resize_vm(evolve(moved, flavor=Flavor(2, 2, 128, 2)), STOP_TIMEOUT)
        self.assertEqual(two.vm_state(spec.domain_name), "running")

    def test_cold_move_without_disk(self):
        """
        Exporting or importing a disk the PM lacks, and defining a domain over it, fail
        with L{HypervisorError}; so does defining a domain that exists.
        """
        spec = self.spec(9)
        disk = str(tmpdir(self) / "disk.qcow2")
        for call, args in [
            (self.hv.export_disk, (spec.volume_name, disk)),
            (self.hv.import_disk, (spec.volume_name, str(self.image))),
            (self.hv.define_vm, (spec,)),
        ]:
            e = self.assertRaises(HypervisorError, call, *args)
            self.assertNotIsInstance(e, HostUnreachable)
            self.assertIn(spec.volume_name, str(e))
        made = self.create(9)
        e = self.assertRaises(HypervisorError, self.hv.define_vm, made)
        self.assertNotIsInstance(e, HostUnreachable)
        self.assertEqual(self.hv.vm_state(made.domain_name), "running")

    def test_prepare_replaces_stale_disk(self):
        """
        Preparing a disk where one of that name was left behind replaces it, and defines
        no domain.
        """
        spec = self.spec(3)
        self.prepared(spec, self.hv)
        self.prepared(spec, self.hv)
        self.assertIn(spec.volume_name, self.hv.volume_names())
        self.assertEqual(self.hv.vm_state(spec.domain_name), "missing")

    # -- pools --------------------------------------------------------------------------

    def test_pool_marks(self):
        """
        A PM's pool holds its own mark once asked, only once, and not another fleet's;
        a second PM with a pool of its own sees only its own; pruning base copies keeps
        the marks.
        """
        other = f"o{uuid.uuid4().hex[:8]}"
        self.assertEqual(self.hv.pool_marks(self.fleet, 1), {1})
        self.assertEqual(self.hv.pool_marks(self.fleet, 1), {1})
        self.assertEqual(self.hv.pool_marks(other, 7), {7})
        self.assertIn(mark_volume_name(self.fleet, 1), self.hv.volume_names())
        self.assertEqual(self.second().pool_marks(self.fleet, 2), {2})
        self.hv.ensure_base(self.fleet, 1, str(self.image))
        self.assertEqual(len(self.hv.prune_bases(self.fleet)), 1)
        self.assertEqual(self.hv.pool_marks(self.fleet, 1), {1})

    def test_shared_pool_marks(self):
        """
        PMs whose pools are one directory see each other's marks.
        """
        one, two = self.shared()
        self.assertEqual(one.pool_marks(self.fleet, 1), {1})
        self.assertEqual(two.pool_marks(self.fleet, 2), {1, 2})
        self.assertEqual(one.pool_marks(self.fleet, 1), {1, 2})

    def test_shared_pool_base_copy(self):
        """
        The second PM of a shared pool uses the base copy the first made, without
        making it again, and VMs on both run on it.
        """
        one, two = self.shared()
        # Both pools read before the copy is made: the second does not list it.
        one.discover()
        two.discover()
        made = one.ensure_base(self.fleet, 1, str(self.image))
        token = self.maker.copy_token(one, made[0])
        self.assertEqual(two.ensure_base(self.fleet, 1, str(self.image)), made)
        self.assertEqual(self.maker.copy_token(one, made[0]), token)
        self.create(1, hv=one)
        self.create(2, hv=two)
        self.assertEqual(two.vm_state(self.spec(2).domain_name), "running")
