"""
The fleet's jobs (create, destroy, undo, reconcile) over the in-memory store and
hypervisors, with a clock for time: every retry, undo and timeout path, in milliseconds,
with neither Redis nor libvirt.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import World
from vorchd.domain import domain_name
from vorchd.fleet import Refused
from vorchd.hypervisor.interface import HostUnreachable, HypervisorError
from vorchd.model import Flavor
from vorchd.network import mac_of
from vorchd.store import StoreUnavailable


class FleetJobsTests(SynchronousTestCase):
    def setUp(self):
        directory = Path(tempfile.mkdtemp(prefix="vorchd-unit-"))
        self.addCleanup(shutil.rmtree, directory, True)
        self.world = World(directory)
        self.world.start()
        self.addCleanup(self.world.stop)
        self.fleet = self.world.fleet

    # -- helpers ----------------------------------------------------------------------

    def create(self, name="vm", tid=1) -> int:
        return self.world.settle(self.fleet.create(name, tid, 1))

    def refused(self, d) -> Refused:
        with self.assertRaises(Refused) as caught:
            self.world.settle(d)
        return caught.exception

    def domains(self, pmid: int) -> set[str]:
        return set(self.world.hosts[pmid].domains)

    def volumes(self, pmid: int) -> set[str]:
        return {v for v in self.world.hosts[pmid].volume_names() if "image" not in v}

    def claims(self) -> dict[int, str]:
        return {v: rec["state"] for v, rec in self.world.store.vms.items()}

    def used(self, pmid: int) -> int:
        return int(self.world.store.items["pm"][pmid].get("used_cpu", 0))

    # -- create -------------------------------------------------------------------------

    def test_create_runs_domain_and_records_it(self):
        vmid = self.create("web")
        name = domain_name(self.fleet.fleet_id, vmid)
        self.assertEqual(self.domains(1), {name})
        self.assertTrue(self.world.hosts[1].domains[name].running)
        self.assertEqual(self.claims(), {vmid: "active"})
        self.assertEqual(self.fleet.vm(vmid)["name"], "web")
        self.assertEqual(self.fleet.pm_vmids(1), [vmid])

    def test_domain_gets_the_mac_its_claim_gave(self):
        """
        When the MAC a new VM's name gives is another VM's (a five-byte hash: rare), its
        domain and its record both get the other MAC its claim gave it.
        """
        first = self.create("one")
        fleet = self.fleet.fleet_id
        # The next VM's name's MAC, held by the first VM.
        self.world.store.macs[mac_of(domain_name(fleet, first + 1))] = first
        second = self.create("two")
        self.assertEqual(second, first + 1)
        name = domain_name(fleet, second)
        wanted = mac_of(name, 1)
        self.assertEqual(self.world.hosts[1].domains[name].metadata["mac"], wanted)
        self.assertEqual(self.world.store.vms[second]["mac"], wanted)

    def test_failed_start_moves_on_and_leaves_nothing(self):
        """
        A PM whose start fails gives its claim back; the next PM takes the VM.
        """
        self.world.hosts[1].start_failure = "no /dev/kvm"
        vmid = self.create()
        self.assertEqual(self.domains(1), set())
        self.assertEqual(self.volumes(1), set())
        self.assertEqual(self.used(1), 0)
        self.assertEqual(self.fleet.vm(vmid)["pmid"], 2)

    def test_every_pm_failing_refuses_and_leaves_nothing(self):
        for host in self.world.hosts.values():
            host.failures["create_vm"] = HypervisorError("disk full")
        e = self.refused(self.fleet.create("x", 1, 1))
        self.assertEqual(e.kind, "hypervisor_error")
        self.assertIn("disk full", str(e))
        self.assertEqual(self.claims(), {})
        self.assertEqual((self.used(1), self.used(2)), (0, 0))

    def test_no_room_refuses_without_claiming(self):
        self.world.settle(
            defer.ensureDeferred(self.world.store.set_flavors([Flavor(9, 64, 1, 1)]))
        )
        e = self.refused(self.fleet.create("big", 9, 1))
        self.assertEqual(e.kind, "no_room")
        self.assertIn("PM 1: no room for cpu (64 wanted, 4 free)", str(e))
        self.assertEqual(self.claims(), {})

    def test_slow_create_times_out_then_its_late_domain_is_removed(self):
        """
        A create_vm still running after call_timeout answers a failure (the next PM is
        tried); when it finishes after all, its domain is destroyed.
        """
        d = self.fleet.create("slow", 1, 1)
        # Run up to PM 1's create_vm and hold it in the queue.
        held = self.world.hold("create_vm")
        self.world.reactor.advance(31)
        vmid = self.world.settle(d)
        self.assertEqual(self.fleet.vm(vmid)["pmid"], 2)
        # PM 1's create finishes now, long after: it is undone.
        self.world.pool.run_one(held)
        self.world.settle()
        self.assertEqual(self.domains(1), set())
        self.assertEqual(self.used(1), 0)

    def test_commit_lost_undoes_domain_then_claim(self):
        """
        Redis gone at the commit: the user is told no, the domain goes at once, the claim
        once Redis answers again (the undo round).
        """
        store = self.world.store
        commit = store.commit

        async def down(vmid, pmid, op=""):
            store.fail = "redis: connection lost"
            return await commit(vmid, pmid, op)

        store.commit = down
        e = self.refused(self.fleet.create("x", 1, 1))
        self.assertEqual(e.kind, "store_unavailable")
        self.assertEqual(self.domains(1), set())
        self.assertEqual(list(self.claims().values()), ["creating"])
        store.fail = None
        store.commit = commit
        self.world.settle(defer.ensureDeferred(self.fleet.retry_undos()))
        self.assertEqual(self.claims(), {})
        self.assertEqual(self.used(1), 0)

    def test_claim_gone_at_commit_removes_domain(self):
        """
        A claim gone by the time its create commits (a Redis failover lost it): the user
        is told no and the domain made for it is removed; nothing is left to adopt.
        """
        store = self.world.store
        commit = store.commit

        async def failed_over(vmid, pmid, op=""):
            store.vms.pop(vmid)  # the new master never had the claim
            return await commit(vmid, pmid, op)

        store.commit = failed_over
        self.refused(self.fleet.create("x", 1, 1))
        self.assertEqual(self.domains(1), set())
        self.assertEqual(self.claims(), {})

    def test_claim_lost_is_found_and_undone(self):
        """
        Redis fails while a claim's answer is on its way: the vmid is unknown, so the
        claim is found by its create's token once the model follows Redis again.
        """
        store = self.world.store
        claim = store.claim

        async def lost(*args, **kwargs):
            # The claim is written, but its answer never comes back.
            await claim(*args, **kwargs)
            raise StoreUnavailable("redis: the answer was lost")

        store.claim = lost
        with self.assertRaises(StoreUnavailable):
            self.world.settle(self.fleet.create("x", 1, 1))
        self.assertEqual(list(self.claims().values()), ["creating"])
        store.claim = claim
        self.world.settle(defer.ensureDeferred(self.fleet.retry_undos()))
        self.world.settle(defer.ensureDeferred(self.fleet.retry_undos()))
        self.assertEqual(self.claims(), {})

    # -- destroy --------------------------------------------------------------------------

    def test_destroy_removes_domain_disk_and_record(self):
        vmid = self.create()
        self.world.settle(self.fleet.destroy(vmid))
        self.assertEqual((self.domains(1), self.volumes(1)), (set(), set()))
        self.assertEqual(self.claims(), {})
        self.assertIsNone(self.fleet.vm(vmid))

    def test_destroy_with_pm_unreachable_changes_nothing(self):
        vmid = self.create()
        self.world.hosts[1].failures["destroy_vm"] = HostUnreachable("gone")
        e = self.refused(self.fleet.destroy(vmid))
        self.assertIn("PM 1", str(e))
        self.assertEqual(self.claims(), {vmid: "active"})
        self.assertEqual(len(self.domains(1)), 1)

    def test_destroy_unknown_vm_refused(self):
        self.refused(self.fleet.destroy(999))

    # -- reconcile ----------------------------------------------------------------------

    def test_reconcile_rolls_back_a_dead_daemons_claim(self):
        """
        A claim whose daemon's lease ran out is rolled back, domain and disk included.
        """
        store = self.world.store
        vmid, why = self.world.settle(
            defer.ensureDeferred(
                store.claim(
                    0,
                    1,
                    Flavor(1, 1, 512, 1).resources,
                    {"cpu": 1, "ram": 1, "disk": 1},
                    {"owner": "dead", "op": "x", "name": "half", "instance_type": 1},
                    f"vorchd-{self.fleet.fleet_id}-",
                )
            )
        )
        self.assertIsNone(why)
        report = self.world.settle(defer.ensureDeferred(self.fleet.reconcile()))
        self.assertEqual(report["rolled_back"], [vmid])
        self.assertEqual(self.claims(), {})

    def test_reconcile_spares_a_create_that_finished_during_its_round(self):
        """
        While a round rolls back a dead daemon's claim, a create of this daemon that it
        had seen as a claim finishes and is answered: the round leaves it alone (it was
        rolling back acknowledged VMs, found by the HA test's daemon kill).
        """
        store = self.world.store
        dead, _ = self.world.settle(
            defer.ensureDeferred(
                store.claim(
                    0,
                    2,
                    Flavor(1, 1, 512, 1).resources,
                    {"cpu": 1, "ram": 1, "disk": 1},
                    {"owner": "dead", "op": "x", "name": "half", "instance_type": 1},
                    f"vorchd-{self.fleet.fleet_id}-",
                )
            )
        )
        mine = self.fleet.create("mine", 1, 1)
        self.world.reactor.advance(0)
        # Its claim is made; its base copy next, then its domain: run the first only, so
        # that its domain is made (and it commits) while the round removes the dead claim.
        on_result, f, args, kwargs = self.world.pool.queue.pop(0)
        on_result(True, f(*args, **kwargs))
        report = self.world.settle(defer.ensureDeferred(self.fleet.reconcile()))
        vmid = self.world.settle(mine)
        self.assertEqual(report["rolled_back"], [dead])
        self.assertEqual(self.claims(), {vmid: "active"})
        self.assertIn(domain_name(self.fleet.fleet_id, vmid), self.domains(1))

    def test_reconcile_adopts_a_forgotten_domain_and_marks_a_vanished_one(self):
        kept = self.create("kept")
        gone = self.create("gone")
        store = self.world.store
        # Redis forgets one VM (its last second lost); a PM loses another's domain.
        self.world.settle(defer.ensureDeferred(store.release(kept)))
        del self.world.hosts[1].domains[domain_name(self.fleet.fleet_id, gone)]
        report = self.world.settle(defer.ensureDeferred(self.fleet.reconcile()))
        self.assertEqual(report["adopted"], [kept])
        self.assertEqual(self.fleet.vm(kept)["name"], "kept")
        self.assertEqual(self.claims(), {kept: "active", gone: "missing"})
        # The missing VM stays in every answer until destroyed, and destroying it works.
        self.assertEqual(self.fleet.vm(gone)["name"], "gone")
        self.world.settle(self.fleet.destroy(gone))
        self.assertIsNone(self.fleet.vm(gone))
