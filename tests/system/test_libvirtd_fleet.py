"""
The libvirtd fleet harness: several real, independent hypervisors on this machine, each with
its own hostname and guests, whose libvirtd can be killed and restarted under running guests,
and which leave nothing behind when stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def fleet():
    _fleet_or_skip()
    fleet = LibvirtdFleet(2).start()
    try:
        yield fleet
    finally:
        fleet.stop()


def test_pms_are_independent(fleet):
    """Each PM answers on its own URI with its own hostname and lists only its own guests."""
    libvirt = _libvirt()
    assert len(set(fleet.uris)) == 2
    conns = [libvirt.open(uri) for uri in fleet.uris]
    try:
        assert conns[0].getHostname() != conns[1].getHostname()
        assert conns[0].getHostname() == fleet.pms[0].hostname
        conn = _start_guest(fleet, 1)
        conn.close()
        assert conns[0].lookupByName(GUEST).isActive()
        assert GUEST not in [d.name() for d in conns[1].listAllDomains()]
        assert list(fleet.pms[0].qemu_pids()) == [GUEST]
        assert fleet.pms[1].qemu_pids() == {}
    finally:
        for conn in conns:
            conn.close()


def test_kill_and_restart_keep_guests(fleet):
    """A killed libvirtd refuses at once, its guest survives, and a restart reattaches it."""
    libvirt = _libvirt()
    pm1, pm2 = fleet.pms
    if GUEST not in pm1.qemu_pids():
        _start_guest(fleet, 1).close()
    qemu = pm1.qemu_pids()[GUEST]
    pm1.kill()
    assert pm1.libvirtd_pid() is None
    started = time.monotonic()
    with pytest.raises(libvirt.libvirtError, match="Connection refused"):
        libvirt.open(pm1.uri)
    assert time.monotonic() - started < 2
    assert _alive(qemu)
    assert pm2.answers()
    pm1.restart()
    conn = libvirt.open(pm1.uri)
    try:
        dom = conn.lookupByName(GUEST)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert pm1.qemu_pids() == {GUEST: qemu}
    finally:
        conn.close()


def test_stop_leaves_nothing(tmp_path):
    """stop() removes guests, pool volumes, daemons, namespaces and state, even mid-failure."""
    _fleet_or_skip()
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
        assert (pool_dir / "v.img").exists()
        qemus = [*pm1.qemu_pids().values(), *pm2.qemu_pids().values()]
        assert len(qemus) == 2
        # As if a test failed half-way: one PM's libvirtd is dead under a running guest.
        pm1.kill()
    finally:
        fleet.stop()
    fleet.stop()
    assert not fleet.dir.exists()
    assert not any(_alive(pid) for pid in qemus + holders)
    assert _pids_mounting(f"/{fleet.dir.name}/") == []
    assert list(pool_dir.iterdir()) == []
