"""
The block volumes of a fake PM (L{vorchd.hypervisor.fake.FakeHypervisor}): raw volumes in
its pool, attached to its domains by changing their XML as libvirt would.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vorchd import volume_xml
from vorchd.hypervisor.fakeguests import GIB, FakeVolume

if TYPE_CHECKING:
    from vorchd.hypervisor.fake import FakeHypervisor


class FakeBlockVolumes:
    """
    L{FakeHypervisor}'s L{IHypervisor} methods for block volumes.
    """

    def make_volume(self: FakeHypervisor, volume_name: str, size_gib: int) -> str:
        self._enter("make_volume")
        with self.lock:
            pool = self._pool()
            if volume_name not in pool:
                path = os.path.join(self.pool_path, volume_name)
                pool[volume_name] = FakeVolume(path, size_gib * GIB)
            path = pool[volume_name].path
        self._did("make_volume")
        return path

    def delete_volume(self: FakeHypervisor, volume_name: str) -> bool:
        self._enter("delete_volume")
        with self.lock:
            found = self._pool().pop(volume_name, None) is not None
        self._did("delete_volume")
        return found

    def attach_volume(
        self: FakeHypervisor, domain_name: str, volume_name: str, serial: str
    ) -> None:
        self._enter("attach_volume")
        with self.lock:
            path = self._volume(volume_name).path
            dom = self._domain(domain_name)
            if volume_xml.attached_disk(dom.xml, path) is None:
                disk = volume_xml.scsi_disk_xml(path, volume_xml.free_target(dom.xml), serial)
                dom.xml = volume_xml.with_disk(dom.xml, disk)
        self._did("attach_volume")

    def detach_volume(self: FakeHypervisor, domain_name: str, volume_name: str) -> bool:
        self._enter("detach_volume")
        with self.lock:
            vol = self._pool().get(volume_name)
            dom = self._domain(domain_name)
            attached = vol is not None and volume_xml.attached_disk(dom.xml, vol.path) is not None
            if attached:
                dom.xml = volume_xml.without_disk(dom.xml, vol.path)
        self._did("detach_volume")
        return attached
