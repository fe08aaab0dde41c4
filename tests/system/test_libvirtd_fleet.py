"""
The libvirtd fleet harness: several real, independent hypervisors on this machine, each with
its own hostname and guests, whose libvirtd can be killed and restarted under running guests,
and which leave nothing behind when stopped.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import require
from tests.libvirtd_fleet import LibvirtdFleet, _alive, _pids_mounting, libvirtd_fleet_unavailable
from vorchd.bootimage import write_image

GUEST = "fleet-guest"


def _fleet_or_skip() -> None:
    require(libvirtd_fleet_unavailable())


def _libvirt():
    import libvirt

    return libvirt


def _guest_xml(name: str, disk: Path) -> str:
    return f"""
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='hda' bus='ide'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _start_guest(fleet: LibvirtdFleet, pm_index: int, name: str = GUEST):
    """
    Define and start a boot-sector guest on PM C{pm_index} (from 1); return its connection.
    """
    images = fleet.dir / "images"
    images.mkdir(mode=0o755, exist_ok=True)
    disk = images / f"{name}-pm{pm_index}.img"
    write_image(disk)
    conn = _libvirt().open(fleet.pms[pm_index - 1].uri)
    conn.defineXML(_guest_xml(name, disk)).create()
    return conn


# One fleet shared by the tests that need a running one (started by the first of them,
# stopped when the module is done), as they ran on one module-wide fleet before; the order
# matters: the second finds the first one's guest.
_shared: LibvirtdFleet | None = None


def _shared_fleet() -> LibvirtdFleet:
    global _shared
    _fleet_or_skip()
    if _shared is None:
        _shared = LibvirtdFleet(2).start()
    return _shared


def tearDownModule():
    global _shared
    if _shared is not None:
        try:
            _shared.stop()
        finally:
            _shared = None


class PmsAreIndependentTests(SynchronousTestCase):
    def test_pms_are_independent(self):
        """Each PM answers on its own URI with its own hostname and lists only its own guests."""
        fleet = _shared_fleet()
        libvirt = _libvirt()
        self.assertEqual(len(set(fleet.uris)), 2)
        conns = [libvirt.open(uri) for uri in fleet.uris]
        try:
            self.assertNotEqual(conns[0].getHostname(), conns[1].getHostname())
            self.assertEqual(conns[0].getHostname(), fleet.pms[0].hostname)
            conn = _start_guest(fleet, 1)
            conn.close()
            self.assertTrue(conns[0].lookupByName(GUEST).isActive())
            self.assertNotIn(GUEST, [d.name() for d in conns[1].listAllDomains()])
            self.assertEqual(list(fleet.pms[0].qemu_pids()), [GUEST])
            self.assertEqual(fleet.pms[1].qemu_pids(), {})
        finally:
            for conn in conns:
                conn.close()


class KillAndRestartTests(SynchronousTestCase):
    def test_kill_and_restart_keep_guests(self):
        """A killed libvirtd refuses at once, its guest survives, and a restart reattaches it."""
        fleet = _shared_fleet()
        libvirt = _libvirt()
        pm1, pm2 = fleet.pms
        if GUEST not in pm1.qemu_pids():
            _start_guest(fleet, 1).close()
        qemu = pm1.qemu_pids()[GUEST]
        pm1.kill()
        self.assertIsNone(pm1.libvirtd_pid())
        # Refused at once, not timed out: the error says which (the test's own timeout
        # catches a hang).
        with self.assertRaises(libvirt.libvirtError) as caught:
            libvirt.open(pm1.uri)
        self.assertRegex(str(caught.exception), "Connection refused")
        self.assertTrue(_alive(qemu))
        self.assertTrue(pm2.answers())
        pm1.restart()
        conn = libvirt.open(pm1.uri)
        try:
            dom = conn.lookupByName(GUEST)
            self.assertEqual(dom.state()[0], libvirt.VIR_DOMAIN_RUNNING)
            self.assertEqual(pm1.qemu_pids(), {GUEST: qemu})
        finally:
            conn.close()


class StopTests(SynchronousTestCase):
    def test_stop_leaves_nothing(self):
        """stop() removes guests, pool volumes, daemons, namespaces and state, even mid-failure."""
        _fleet_or_skip()
        tmp_path = Path(tempfile.mkdtemp(prefix="vorchd-test-"))
        self.addCleanup(shutil.rmtree, tmp_path, True)
        fleet = LibvirtdFleet(2).start()
        try:
            pm1, pm2 = fleet.pms
            holders = [pid for pm in fleet.pms for pid in (pm.holder.pid, pm.init_pid)]
            _start_guest(fleet, 1).close()
            conn = _start_guest(fleet, 2)
            pool_dir = tmp_path / "pool"
            pool_dir.mkdir()
            pool = conn.storagePoolCreateXML(
                f"<pool type='dir'><name>p</name><target><path>{pool_dir}</path></target></pool>"
            )
            pool.createXML(
                "<volume><name>v.img</name><capacity unit='MiB'>1</capacity>"
                "<target><format type='raw'/></target></volume>"
            )
            conn.close()
            self.assertTrue((pool_dir / "v.img").exists())
            qemus = [*pm1.qemu_pids().values(), *pm2.qemu_pids().values()]
            self.assertEqual(len(qemus), 2)
            # As if a test failed half-way: one PM's libvirtd is dead under a running guest.
            pm1.kill()
        finally:
            fleet.stop()
        fleet.stop()
        self.assertFalse(fleet.dir.exists())
        self.assertFalse(any(_alive(pid) for pid in qemus + holders))
        self.assertEqual(_pids_mounting(f"/{fleet.dir.name}/"), [])
        self.assertEqual(list(pool_dir.iterdir()), [])
