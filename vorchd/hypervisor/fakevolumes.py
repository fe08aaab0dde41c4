"""
The block volumes of a fake PM (L{vorchd.hypervisor.fake.FakeHypervisor}): raw volumes in
its pool, or RBD images of a fake Ceph cluster every fake PM reaches (L{CLUSTERS}),
attached to its domains by changing their XML as libvirt would.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from vorchd import volume_xml
from vorchd.hypervisor.fakeguests import GIB, FakeVolume
from vorchd.hypervisor.interface import HypervisorError
from vorchd.volume_xml import CephPool

if TYPE_CHECKING:
    from vorchd.hypervisor.fake import FakeHypervisor

#: The fake Ceph clusters: (monitors, pool) -> image name -> size in bytes. Set
#: C{UNREACHABLE} to a reason to make every call on them fail, as a dead cluster's do.
CLUSTERS: dict[tuple, dict[str, int]] = {}
UNREACHABLE: dict[tuple, str] = {}
#: Their room (capacity, available) in bytes, by (monitors, pool); 1 TiB of each if unset.
ROOM: dict[tuple, tuple[int, int]] = {}
_lock = threading.Lock()


def _images(ceph: CephPool) -> dict[str, int]:
    where = (ceph.monitors, ceph.pool)
    if where in UNREACHABLE:
        raise HypervisorError(f"RBD pool {ceph.pool}: {UNREACHABLE[where]}")
    return CLUSTERS.setdefault(where, {})


class FakeBlockVolumes:
    """
    L{FakeHypervisor}'s L{IHypervisor} methods for block volumes.
    """

    def make_volume(
        self: FakeHypervisor, volume_name: str, size_gib: int, ceph: CephPool | None = None
    ) -> str:
        self._enter("make_volume")
        if ceph is not None:
            with _lock:
                _images(ceph).setdefault(volume_name, size_gib * GIB)
            self._did("make_volume")
            return f"{ceph.pool}/{volume_name}"
        with self.lock:
            pool = self._pool()
            if volume_name not in pool:
                path = os.path.join(self.pool_path, volume_name)
                pool[volume_name] = FakeVolume(path, size_gib * GIB)
            path = pool[volume_name].path
        self._did("make_volume")
        return path

    def ceph_room(self: FakeHypervisor, ceph: CephPool) -> tuple[int, int]:
        self._enter("ceph_room")
        with _lock:
            _images(ceph)
            room = ROOM.get((ceph.monitors, ceph.pool), (1024 * GIB, 1024 * GIB))
        self._did("ceph_room")
        return room

    def delete_volume(
        self: FakeHypervisor, volume_name: str, ceph: CephPool | None = None
    ) -> bool:
        self._enter("delete_volume")
        if ceph is not None:
            with _lock:
                found = _images(ceph).pop(volume_name, None) is not None
        else:
            with self.lock:
                found = self._pool().pop(volume_name, None) is not None
        self._did("delete_volume")
        return found

    def _finder(self: FakeHypervisor, volume_name: str, ceph: CephPool | None):
        if ceph is not None:
            with _lock:
                if volume_name not in _images(ceph):
                    return None, ""
            return (lambda xml: volume_xml.rbd_attached_disk(xml, ceph, volume_name)), ""
        vol = self._pool().get(volume_name)
        if vol is None:
            return None, ""
        return (lambda xml: volume_xml.attached_disk(xml, vol.path)), vol.path

    def attach_volume(
        self: FakeHypervisor,
        domain_name: str,
        volume_name: str,
        serial: str,
        ceph: CephPool | None = None,
    ) -> None:
        self._enter("attach_volume")
        with self.lock:
            find, path = self._finder(volume_name, ceph)
            if find is None:
                raise HypervisorError(f"{self.uri}: no volume {volume_name}")
            dom = self._domain(domain_name)
            if find(dom.xml) is None:
                target = volume_xml.free_target(dom.xml)
                if ceph is not None:
                    disk = volume_xml.rbd_disk_xml(ceph, volume_name, target, serial)
                else:
                    disk = volume_xml.scsi_disk_xml(path, target, serial)
                dom.xml = volume_xml.with_disk(dom.xml, disk)
        self._did("attach_volume")

    def detach_volume(
        self: FakeHypervisor, domain_name: str, volume_name: str, ceph: CephPool | None = None
    ) -> bool:
        self._enter("detach_volume")
        with self.lock:
            find, _path = self._finder(volume_name, ceph)
            dom = self._domain(domain_name)
            disk = find(dom.xml) if find is not None else None
            if disk is not None:
                dom.xml = volume_xml.without_device(dom.xml, disk)
        self._did("detach_volume")
        return disk is not None
