"""
The fleet's jobs on running VMs (state changes, resize, migrate, evacuate, and the
reconciler settling a change its daemon left) over the in-memory store and hypervisors:
every path in milliseconds, with neither Redis nor libvirt.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import World
from vorchd.domain import VM, domain_name, volume_name
from vorchd.fleet import Refused
from vorchd.hypervisor.interface import HypervisorError
from vorchd.model import Flavor, Resources
from vorchd.room import Change
from vorchd.store import StoreUnavailable


class MovesTests(SynchronousTestCase):
    def setUp(self):
        directory = Path(tempfile.mkdtemp(prefix="vorchd-unit-"))
        self.addCleanup(shutil.rmtree, directory, True)
        self.world = World(directory, pms=3)
        self.world.start()
        self.addCleanup(self.world.stop)
        self.fleet = self.world.fleet
        self.hosts = self.world.hosts

    # -- helpers ----------------------------------------------------------------------

    def wait(self, d):
        return self.world.settle(d)

    def create(self, tid: int = 1) -> int:
        return self.wait(self.fleet.create("vm", tid, 1))

    def refused(self, d) -> str:
        with self.assertRaises(Refused) as caught:
            self.wait(d)
        return str(caught.exception)

    def domain(self, vmid: int) -> str:
        return domain_name(self.fleet.fleet_id, vmid)

    def where(self, vmid: int) -> dict[int, str]:
        """
        The PMs whose fake hypervisor has VM C{vmid}'s domain, with its state.
        """
        name = self.domain(vmid)
        return {p: h.domains[name].state for p, h in self.hosts.items() if name in h.domains}

    def disks(self, vmid: int) -> set[int]:
        name = volume_name(self.fleet.fleet_id, vmid)
        return {p for p, h in self.hosts.items() if name in h.volume_names()}

    def used(self, pmid: int) -> Resources:
        return self.fleet.state.pms[pmid].used

    def change_fields(self, vmid: int) -> list[str]:
        return [k for k in self.world.store.vms[vmid] if k.startswith(("change_", "hold_"))]

    # -- state changes -------------------------------------------------------------------

    def test_actions_change_the_domain_not_the_room(self):
        vmid = self.create()
        room = self.used(1)
        for action, state in [("stop", "shutoff"), ("start", "running"), ("suspend", "paused")]:
            self.wait(self.fleet.act(vmid, action))
            self.assertEqual(self.where(vmid), {1: state})
            self.assertEqual(self.wait(self.fleet.info(vmid))["state"], state)
            self.assertEqual(self.used(1), room)
        self.assertIn("paused", self.refused(self.fleet.act(vmid, "suspend")))
        self.wait(self.fleet.act(vmid, "resume"))
        self.assertIn("no VM", self.refused(self.fleet.act(vmid + 1, "stop")))
        self.assertIn("no action", self.refused(self.fleet.act(vmid, "explode")))
        self.assertEqual(self.where(vmid), {1: "running"})

    def test_info_of_a_pm_that_cannot_answer_is_unknown(self):
        vmid = self.create()
        self.hosts[1].failures["vm_state"] = HypervisorError("gone quiet")
        self.assertEqual(self.wait(self.fleet.info(vmid))["state"], "unknown")

    # -- resize ---------------------------------------------------------------------------

    def test_resize_holds_growth_and_applies_it(self):
        vmid = self.create(1)
        self.wait(self.fleet.resize(vmid, 2))
        self.assertEqual(self.used(1), Resources(2, 1024, 2))
        self.assertEqual(self.fleet.vm(vmid)["instance_type"], 2)
        meta = self.hosts[1].domains[self.domain(vmid)].metadata
        self.assertEqual(meta["flavor"], Flavor(2, 2, 1024, 2))
        self.assertEqual(self.where(vmid), {1: "running"})
        self.assertEqual(self.change_fields(vmid), [])

    def test_resize_refusals_change_nothing(self):
        vmid = self.create(2)
        self.assertIn("shrink", self.refused(self.fleet.resize(vmid, 1)))
        self.create(2)  # PM 1 now has 0 CPUs free
        self.assertIn("no room", self.refused(self.fleet.resize(vmid, 3)))
        self.assertIn("no instance_type", self.refused(self.fleet.resize(vmid, 9)))
        self.assertEqual(self.used(1), Resources(4, 2048, 4))
        self.assertEqual(self.fleet.vm(vmid)["instance_type"], 2)
        self.assertEqual(self.change_fields(vmid), [])

    def test_failed_resize_gives_the_hold_back(self):
        vmid = self.create(1)
        self.hosts[1].failures["resize_vm"] = HypervisorError("qemu would not start")
        self.assertIn("qemu would not start", self.refused(self.fleet.resize(vmid, 2)))
        self.assertEqual(self.used(1), Resources(1, 512, 1))
        self.assertEqual(self.fleet.vm(vmid)["instance_type"], 1)

    def test_resize_past_its_timeout_is_settled_by_what_the_domain_has(self):
        """
        A resize the PM has not finished when its time is up answers a failure that
        says it may still happen; its room stays held until the PM is done, and then
        the VM's record follows its domain: the new flavor when the resize went through.
        """
        vmid = self.create(1)
        d = self.fleet.resize(vmid, 2)
        held = self.world.hold("resize_vm")
        self.world.reactor.advance(3600)
        self.assertIn("may still finish", self.refused(d))
        self.assertEqual(self.used(1), Resources(2, 1024, 2))
        report = self.wait(defer.ensureDeferred(self.fleet.reconcile()))
        self.assertEqual(report["settled"], [])
        self.world.pool.run_one(held)
        self.world.settle()
        report = self.wait(defer.ensureDeferred(self.fleet.reconcile()))
        self.assertEqual(report["settled"], [vmid])
        self.assertEqual(self.fleet.vm(vmid)["instance_type"], 2)
        self.assertEqual(self.used(1), Resources(2, 1024, 2))
        self.assertEqual(self.change_fields(vmid), [])

    def test_resize_failing_past_its_timeout_leaves_the_old_flavor(self):
        vmid = self.create(1)
        self.hosts[1].failures["resize_vm"] = HypervisorError("qemu would not start")
        d = self.fleet.resize(vmid, 2)
        held = self.world.hold("resize_vm")
        self.world.reactor.advance(3600)
        self.assertIn("may still finish", self.refused(d))
        self.world.pool.run_one(held)
        self.world.settle()
        report = self.wait(defer.ensureDeferred(self.fleet.reconcile()))
        self.assertEqual(report["settled"], [vmid])
        self.assertEqual(self.fleet.vm(vmid)["instance_type"], 1)
        self.assertEqual(self.used(1), Resources(1, 512, 1))

    # -- migrate --------------------------------------------------------------------------

    def test_migrate_moves_guest_disk_and_room(self):
        vmid = self.create()
        self.wait(self.fleet.migrate(vmid, 3))
        self.assertEqual(self.where(vmid), {3: "running"})
        self.assertEqual(self.disks(vmid), {3})
        self.assertEqual(self.fleet.vm(vmid)["pmid"], 3)
        self.assertEqual(self.fleet.pm_vmids(3), [vmid])
        self.assertEqual(self.fleet.pm_vmids(1), [])
        self.assertEqual((self.used(1), self.used(3)), (Resources(), Resources(1, 512, 1)))
        meta = self.hosts[3].domains[self.domain(vmid)].metadata
        self.assertEqual(meta["pmid"], 3)

    def test_migrate_without_target_takes_the_policys_pick(self):
        vmid = self.create()
        self.assertEqual(self.wait(self.fleet.migrate(vmid)), 2)
        self.assertEqual(self.where(vmid), {2: "running"})

    def test_stopped_vm_moves_cold(self):
        vmid = self.create()
        self.wait(self.fleet.act(vmid, "stop"))
        self.wait(self.fleet.migrate(vmid, 2))
        self.assertEqual(self.where(vmid), {2: "shutoff"})
        self.assertEqual(self.disks(vmid), {2})
        self.wait(self.fleet.act(vmid, "start"))
        self.assertEqual(self.where(vmid), {2: "running"})

    def test_failed_migration_leaves_guest_and_nothing_on_target(self):
        vmid = self.create()
        self.hosts[1].failures["migrate_vm"] = HypervisorError("connection reset")
        reason = self.refused(self.fleet.migrate(vmid, 2))
        self.assertIn("connection reset", reason)
        self.assertEqual(self.where(vmid), {1: "running"})
        self.assertEqual(self.disks(vmid), {1})
        self.assertEqual(self.used(2), Resources())
        self.assertEqual(self.fleet.vm(vmid)["pmid"], 1)
        self.assertEqual(self.change_fields(vmid), [])

    def test_migration_refusals(self):
        vmid = self.create()
        self.assertIn("already", self.refused(self.fleet.migrate(vmid, 1)))
        self.assertIn("no PM 7", self.refused(self.fleet.migrate(vmid, 7)))
        self.wait(defer.ensureDeferred(self.world.store.set_drained(2, True)))
        self.assertIn("drained", self.refused(self.fleet.migrate(vmid, 2)))
        self.hosts[3].die()
        self.world.settle()
        self.assertIn("down", self.refused(self.fleet.migrate(vmid, 3)))
        self.assertEqual(self.where(vmid), {1: "running"})
        self.assertEqual(self.used(1), Resources(1, 512, 1))

    def test_unreachable_target_left_overs_removed_when_back(self):
        """
        A move whose target dies as it starts leaves the guest where it was; the disk
        made on the target goes at the next undo round once the target answers.
        """
        vmid = self.create()
        target = self.hosts[2]
        migrate = self.hosts[1].migrate_vm

        def target_dies(*args, **kwargs):
            target.failures["destroy_vm"] = HypervisorError("connection refused")
            target.failures["vm_state"] = HypervisorError("connection refused")
            raise HypervisorError("target went away")

        self.hosts[1].migrate_vm = target_dies
        self.refused(self.fleet.migrate(vmid, 2))
        self.assertEqual(self.disks(vmid), {1, 2})
        self.hosts[1].migrate_vm = migrate
        target.failures.clear()
        self.wait(defer.ensureDeferred(self.fleet.retry_undos()))
        self.assertEqual(self.disks(vmid), {1})
        self.assertEqual(self.where(vmid), {1: "running"})

    def test_destroy_during_a_change_is_refused(self):
        vmid = self.create()
        self.begin(vmid, Change.move(2, Flavor(1, 1, 512, 1), "op", self.fleet.daemon_id))
        self.assertIn("under way", self.refused(self.fleet.destroy(vmid)))

    # -- evacuate -------------------------------------------------------------------------

    def test_evacuate_moves_every_vm_and_drains(self):
        vmids = [self.create() for _ in range(3)]
        seen = []
        report = self.wait(
            self.fleet.evacuate(1, lambda vmid, pmid, why: seen.append((vmid, pmid)))
        )
        self.assertEqual(sorted(report["moved"]), vmids)
        self.assertEqual(report["failed"], {})
        self.assertEqual([v for v, _ in seen], vmids)
        self.assertEqual(self.fleet.pm_vmids(1), [])
        self.assertTrue(self.fleet.state.pms[1].drained)
        self.assertEqual(self.used(1), Resources())
        for vmid in vmids:
            self.assertNotIn(1, self.where(vmid))

    def test_evacuate_reports_what_could_not_move_and_reruns(self):
        vmids = [self.create() for _ in range(2)]
        self.hosts[1].failures["migrate_vm"] = HypervisorError("busy")
        report = self.wait(self.fleet.evacuate(1))
        self.assertEqual(sorted(report["failed"]), vmids)
        del self.hosts[1].failures["migrate_vm"]
        report = self.wait(self.fleet.evacuate(1))
        self.assertEqual(sorted(report["moved"]), vmids)
        self.assertEqual(self.fleet.pm_vmids(1), [])

    # -- a daemon that died mid-change ------------------------------------------------

    def begin(self, vmid: int, change: Change) -> None:
        ratios = {"cpu": 1.0, "ram": 1.0, "disk": 1.0}
        why = self.wait(defer.ensureDeferred(self.world.store.begin_change(vmid, change, ratios)))
        self.assertIsNone(why)

    def test_reconcile_finishes_a_dead_daemons_move_that_landed(self):
        vmid = self.create()
        self.begin(vmid, Change.move(2, Flavor(1, 1, 512, 1), "op1", "dead"))
        # The guest moved at libvirt (which carries a p2p migration on by itself).
        moved = VM(self.fleet.fleet_id, vmid, "vm", Flavor(1, 1, 512, 1), 1, 2)
        base = next(v.path for n, v in self.hosts[1].pools["vorchd"].items() if "image" in n)
        self.hosts[2].prepare_incoming(moved, base, "raw")
        self.hosts[1].migrate_vm(moved, self.hosts[2].uri, False)
        report = self.wait(defer.ensureDeferred(self.fleet.reconcile()))
        self.assertEqual(report["settled"], [vmid])
        self.assertEqual(self.fleet.vm(vmid)["pmid"], 2)
        self.assertEqual((self.used(1), self.used(2)), (Resources(), Resources(1, 512, 1)))
        self.assertEqual(self.disks(vmid), {2})
        self.assertEqual(self.change_fields(vmid), [])

    def test_reconcile_undoes_a_dead_daemons_move_that_did_not(self):
        vmid = self.create()
        self.begin(vmid, Change.move(2, Flavor(1, 1, 512, 1), "op1", "dead"))
        moved = VM(self.fleet.fleet_id, vmid, "vm", Flavor(1, 1, 512, 1), 1, 2)
        self.hosts[2].prepare_incoming(moved, "/nowhere/base.img", "raw")
        report = self.wait(defer.ensureDeferred(self.fleet.reconcile()))
        self.assertEqual(report["settled"], [vmid])
        self.assertEqual(self.fleet.vm(vmid)["pmid"], 1)
        self.assertEqual(self.used(2), Resources())
        self.assertEqual(self.disks(vmid), {1})
        self.assertEqual(self.where(vmid), {1: "running"})

    def test_reconcile_leaves_a_live_daemons_change_alone(self):
        vmid = self.create()
        self.world.settle(defer.ensureDeferred(self.world.store.heartbeat("alive", 30)))
        self.begin(vmid, Change.move(2, Flavor(1, 1, 512, 1), "op1", "alive"))
        report = self.wait(defer.ensureDeferred(self.fleet.reconcile()))
        self.assertEqual(report["settled"], [])
        self.assertEqual(self.used(2), Resources(1, 512, 1))

    def test_change_end_lost_to_an_outage_is_settled_later(self):
        """
        Redis down as a move ends: the user is told it moved (it did); the record catches
        up at the next reconcile, from where the guest runs.
        """
        vmid = self.create()
        store = self.world.store
        end_change = store.end_change

        async def down(*args, **kwargs):
            raise StoreUnavailable("redis: connection lost")

        store.end_change = down
        self.wait(self.fleet.migrate(vmid, 2))
        self.assertEqual(self.fleet.vm(vmid)["pmid"], 1)
        store.end_change = end_change
        report = self.wait(defer.ensureDeferred(self.fleet.reconcile()))
        self.assertEqual(report["settled"], [vmid])
        self.assertEqual(self.fleet.vm(vmid)["pmid"], 2)
        self.assertEqual(self.used(1), Resources())

    def test_reconcile_waits_for_a_move_still_under_way_at_libvirt(self):
        """
        The guest on both PMs (libvirt still migrating it): nothing is decided yet.
        """
        vmid = self.create()
        self.begin(vmid, Change.move(2, Flavor(1, 1, 512, 1), "op1", "dead"))
        incoming = VM(self.fleet.fleet_id, vmid, "vm", Flavor(1, 1, 512, 1), 1, 2)
        self.hosts[2].prepare_incoming(incoming, "/nowhere/base.img", "raw")
        self.hosts[2].define_vm(incoming)
        report = self.wait(defer.ensureDeferred(self.fleet.reconcile()))
        self.assertEqual(report["settled"], [])
        self.assertEqual(self.used(2), Resources(1, 512, 1))
        self.assertEqual(self.where(vmid), {1: "running", 2: "shutoff"})

    def test_evacuate_stops_when_its_caller_is_gone(self):
        """
        Interrupted (the admin's progress says it is gone) after the first VM, the
        evacuation stops there; run again, it moves the rest.
        """
        vmids = [self.create() for _ in range(3)]
        report = self.wait(self.fleet.evacuate(1, lambda vmid, pmid, why: False))
        self.assertEqual(list(report["moved"]), vmids[:1])
        self.assertEqual(self.fleet.pm_vmids(1), vmids[1:])
        report = self.wait(self.fleet.evacuate(1))
        self.assertEqual(sorted(report["moved"]), vmids[1:])

    def test_move_that_times_out_mid_way_is_settled_by_where_the_guest_ends(self):
        """
        A live move that fails to answer while the guest is on both PMs (libvirt still
        moving it) is refused but not undone: the hold stays until the reconciler sees
        where the guest ended up.
        """
        vmid = self.create()
        source, target = self.hosts[1], self.hosts[2]
        migrate = source.migrate_vm

        def half_way(vm, uri, shared):
            target.define_vm(vm)
            target.domains[self.domain(vmid)].state = "paused"
            raise HypervisorError("timed out after 600 s")

        source.migrate_vm = half_way
        self.assertIn("not confirmed", self.refused(self.fleet.migrate(vmid, 2)))
        self.assertEqual(self.where(vmid), {1: "running", 2: "paused"})
        self.assertEqual(self.used(2), Resources(1, 512, 1))
        self.assertEqual(self.wait(defer.ensureDeferred(self.fleet.reconcile()))["settled"], [])
        # libvirt finishes the move: the guest runs on PM 2 only.
        del source.domains[self.domain(vmid)]
        target.domains[self.domain(vmid)].state = "running"
        source.migrate_vm = migrate
        self.assertEqual(
            self.wait(defer.ensureDeferred(self.fleet.reconcile()))["settled"], [vmid]
        )
        self.assertEqual(self.fleet.vm(vmid)["pmid"], 2)
        self.assertEqual((self.used(1), self.used(2)), (Resources(), Resources(1, 512, 1)))
        self.assertEqual(self.disks(vmid), {2})
