"""
Block volumes on a PM, as every provider of L{IHypervisor} must hold them: raw volumes in
its pool, attached to a domain as disks on its SCSI controller and detached again, at once
and without the guest's help.

L{BlockVolumeTests} holds no tests of its own to run: it is mixed into the class
L{tests.system.test_hypervisor_interface.make_hypervisor_tests} makes for each kind of
hypervisor (the fake, libvirt's test driver, real libvirtd), whose helpers it uses.
"""

from __future__ import annotations

from vorchd.hypervisor.interface import HypervisorError, NoSuchVM
from vorchd.volume_xml import data_volume_name

GIB = 1024**3


class BlockVolumeTests:
    """
    The tests of block volumes, mixed into each kind's test class.
    """

    def made_volume(self, volumeid: int, size_gib: int = 1) -> str:
        """
        Make block volume C{volumeid} on the test's PM; deleted when the test ends.
        """
        name = data_volume_name(self.fleet, volumeid)
        path = self.hv.make_volume(name, size_gib)
        self.addCleanup(lambda: self.hv.delete_volume(name))
        self.assertTrue(path.endswith(name), path)
        return name

    def test_make_and_delete_volume(self):
        """
        A block volume is made in the pool at its size (made again, it is kept), and
        deleted once.
        """
        name = self.made_volume(1, 2)
        self.assertIn(name, self.hv.volume_names())
        self.assertEqual(self.maker.capacity_of(self.hv, name), 2 * GIB)
        self.hv.make_volume(name, 2)
        self.assertTrue(self.hv.delete_volume(name))
        self.assertNotIn(name, self.hv.volume_names())
        self.assertFalse(self.hv.delete_volume(name))

    def test_attach_and_detach(self):
        """
        Attached to a running guest, a volume is a SCSI disk of it at once (a second one
        on the next target; attached again, nothing changes); detached, it is gone from
        the guest, and a detach of what is not attached says so.
        """
        spec = self.create(1)
        first, second = self.made_volume(1), self.made_volume(2)
        self.hv.attach_volume(spec.domain_name, first, "vorchd-volume-1")
        disks = self.maker.scsi_disks(self.hv, spec.domain_name)
        self.assertEqual(list(disks), ["sda"])
        self.assertTrue(disks["sda"].endswith(first))
        self.hv.attach_volume(spec.domain_name, first, "vorchd-volume-1")
        self.hv.attach_volume(spec.domain_name, second, "vorchd-volume-2")
        disks = self.maker.scsi_disks(self.hv, spec.domain_name)
        self.assertEqual(sorted(disks), ["sda", "sdb"])
        self.assertTrue(disks["sdb"].endswith(second))
        self.assertEqual(self.hv.vm_state(spec.domain_name), "running")
        self.assertTrue(self.hv.detach_volume(spec.domain_name, first))
        disks = self.maker.scsi_disks(self.hv, spec.domain_name)
        self.assertEqual(list(disks), ["sdb"])
        self.assertFalse(self.hv.detach_volume(spec.domain_name, first))
        self.assertTrue(self.hv.detach_volume(spec.domain_name, second))
        self.assertEqual(self.maker.scsi_disks(self.hv, spec.domain_name), {})
        # The volumes stay in the pool.
        self.assertLessEqual({first, second}, self.hv.volume_names())

    def test_rbd_volume(self):
        """
        An RBD volume is made in the cluster's pool (made again, it is kept), attached to
        a running guest as a SCSI network disk of that image, detached, and deleted once.
        The cluster's room is read through the PM: some available, no more than its
        capacity.
        """
        ceph = self.maker.ceph()
        capacity, available = self.hv.ceph_room(ceph)
        self.assertGreater(available, 0)
        self.assertLessEqual(available, capacity)
        name = data_volume_name(self.fleet, 7)
        self.addCleanup(lambda: self.hv.delete_volume(name, ceph))
        self.assertEqual(self.hv.make_volume(name, 1, ceph), f"{ceph.pool}/{name}")
        self.assertEqual(self.hv.make_volume(name, 1, ceph), f"{ceph.pool}/{name}")
        self.assertNotIn(name, self.hv.volume_names())
        spec = self.create(1)
        self.hv.attach_volume(spec.domain_name, name, "vorchd-volume-7", ceph)
        self.hv.attach_volume(spec.domain_name, name, "vorchd-volume-7", ceph)
        self.assertEqual(
            self.maker.scsi_disks(self.hv, spec.domain_name), {"sda": f"{ceph.pool}/{name}"}
        )
        self.assertEqual(self.hv.vm_state(spec.domain_name), "running")
        self.assertTrue(self.hv.detach_volume(spec.domain_name, name, ceph))
        self.assertEqual(self.maker.scsi_disks(self.hv, spec.domain_name), {})
        self.assertFalse(self.hv.detach_volume(spec.domain_name, name, ceph))
        with self.assertRaises(HypervisorError):
            self.hv.attach_volume(spec.domain_name, name + "-none", "s", ceph)
        self.assertTrue(self.hv.delete_volume(name, ceph))
        self.assertFalse(self.hv.delete_volume(name, ceph))

    def test_attach_failures(self):
        """
        An attach to a domain the PM does not have raises NoSuchVM; of a volume it does
        not have, HypervisorError; neither changes the guest.
        """
        spec = self.create(1)
        name = self.made_volume(1)
        with self.assertRaises(NoSuchVM):
            self.hv.attach_volume(spec.domain_name + "-none", name, "s")
        with self.assertRaises(HypervisorError):
            self.hv.attach_volume(spec.domain_name, "no-such.raw", "s")
        self.assertEqual(self.maker.scsi_disks(self.hv, spec.domain_name), {})
        with self.assertRaises(NoSuchVM):
            self.hv.detach_volume(spec.domain_name + "-none", name)
