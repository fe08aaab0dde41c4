"""
One VM through the whole stack on a real libvirtd (qemu:///system): created through
the API, its guest really boots (its serial console says so), destroy removes it all.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.clients import LoopbackClient
from tests.harness import (
    Daemon,
    require,
    require_root_libvirtd,
    shared_redis,
    tmpdir,
    unique_prefix,
)
from vorchd.bootimage import BOOT_MESSAGE

CONSOLE_DIR = "/var/log/libvirt/qemu"
BOOT_DEADLINE = 90.0


def _remove_pool(name: str, path: Path) -> None:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        pool = conn.storagePoolLookupByName(name)
        for vol in pool.listAllVolumes(0):
            vol.delete(0)
        if pool.isActive():
            pool.destroy()
        pool.undefine()
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()
    shutil.rmtree(path, ignore_errors=True)


class EndToEndTests(TestCase):
    """
    The seed API on this machine's own hypervisor, as the bundled example runs it.
    """

    timeout = 300

    async def setUp(self):
        require(require_root_libvirtd())
        prefix = unique_prefix()
        self.pool_name = f"vorchd-{prefix}"
        # qemu runs as another user: the pool must sit where that user can reach it.
        self.pool_path = Path("/var/lib/vorchd-tests") / prefix
        self.pool_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.addCleanup(_remove_pool, self.pool_name, self.pool_path)
        # Before anything is made: a failed test leaves no guest running on this machine
        # (run before the pool's removal, which the disks are in).
        self.addCleanup(self._remove_domains)
        self.daemon = None
        self.daemon = Daemon(
            tmpdir(self),
            shared_redis().url,
            prefix,
            ["127.0.0.1"],
            libvirt={
                # With /dev/kvm closed to the qemu user, libvirt here takes ~40 s a start.
                "call_timeout": 150,
                "pool_name": self.pool_name,
                "pool_path": self.pool_path,
                "console_log_dir": CONSOLE_DIR,
            },
        )
        await self.daemon.start()
        self.addCleanup(self.daemon.stop)
        self.client = LoopbackClient(self.daemon)
        self.addCleanup(self.client.close)

    def _remove_domains(self) -> None:
        """
        Destroy and undefine every domain of this test's fleet on qemu:///system.
        """
        import libvirt

        if self.daemon is None or self.daemon.service is None:
            return
        if self.daemon.fleet.fleet_id is None:
            return  # it never loaded its inventory: it made nothing
        prefix = f"vorchd-{self.daemon.fleet.fleet_id}-"
        conn = libvirt.open("qemu:///system")
        try:
            for dom in conn.listAllDomains(0):
                if dom.name().startswith(prefix):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
        finally:
            conn.close()

    async def _console(self, domain: str) -> bytes:
        path = Path(CONSOLE_DIR) / f"{domain}-serial.log"
        deadline = time.monotonic() + BOOT_DEADLINE
        seen = b""
        while time.monotonic() < deadline:
            if path.exists():
                seen = path.read_bytes()
                if BOOT_MESSAGE.strip() in seen:
                    return seen
            await task.deferLater(reactor, 0.25, lambda: None)
        return seen

    async def test_guest_boots_and_destroy_removes_it(self):
        """
        A VM created through the API runs as a domain on qemu:///system whose serial
        console shows the guest booted; destroy removes the domain and its disk.
        """
        import libvirt

        pm = (await self.client.call("/pm/query?pmid=1")).json
        self.assertGreater(pm["capacity"]["cpu"], 0)
        self.assertGreater(pm["capacity"]["disk"], 0)
        answer = await self.client.call("/vm/create?name=e2e&instance_type=1&image_id=1")
        vmid = answer.json["vmid"]
        self.assertGreater(vmid, 0, answer)
        self.assertEqual(
            (await self.client.call(f"/vm/query?vmid={vmid}")).json,
            {"vmid": vmid, "name": "e2e", "instance_type": 1, "pmid": 1},
        )
        domain = f"vorchd-{self.daemon.fleet.fleet_id}-{vmid}"
        self.addCleanup(lambda: (Path(CONSOLE_DIR) / f"{domain}-serial.log").unlink(True))

        def inspect():
            conn = libvirt.open("qemu:///system")
            try:
                dom = conn.lookupByName(domain)
                pool = conn.storagePoolLookupByName(self.pool_name)
                pool.refresh(0)
                return dom.isActive(), dom.isPersistent(), set(pool.listVolumes())
            finally:
                conn.close()

        active, persistent, volumes = await deferToThread(inspect)
        self.assertEqual((active, persistent), (1, 1))
        self.assertIn(f"{domain}.qcow2", volumes)
        console = await self._console(domain)
        self.assertIn(BOOT_MESSAGE.strip(), console)

        self.assertEqual((await self.client.call(f"/vm/destroy?vmid={vmid}")).json, {"status": 1})

        def gone():
            conn = libvirt.open("qemu:///system")
            try:
                try:
                    conn.lookupByName(domain)
                    found = True
                except libvirt.libvirtError:
                    found = False
                pool = conn.storagePoolLookupByName(self.pool_name)
                pool.refresh(0)
                return found, set(pool.listVolumes())
            finally:
                conn.close()

        found, volumes = await deferToThread(gone)
        self.assertFalse(found)
        self.assertNotIn(f"{domain}.qcow2", volumes)
        pm_after = (await self.client.call("/pm/query?pmid=1")).json
        self.assertEqual(pm_after["free"], pm_after["capacity"])

    async def test_falls_back_to_emulation_without_kvm_access(self):
        """
        Where libvirt offers KVM but the qemu user cannot open /dev/kvm (as on a fresh
        machine), the VM still runs and boots, under plain QEMU emulation.
        """
        import libvirt

        if not os.path.exists("/dev/kvm"):
            require("no /dev/kvm: the fallback from KVM to emulation cannot be shown")
        st = os.stat("/dev/kvm")
        self.addCleanup(os.chown, "/dev/kvm", st.st_uid, st.st_gid)
        self.addCleanup(os.chmod, "/dev/kvm", stat.S_IMODE(st.st_mode))
        os.chown("/dev/kvm", 0, 0)
        os.chmod("/dev/kvm", 0o600)

        answer = await self.client.call("/vm/create?name=no-kvm&instance_type=1&image_id=1")
        vmid = answer.json["vmid"]
        self.assertGreater(vmid, 0, answer)
        domain = f"vorchd-{self.daemon.fleet.fleet_id}-{vmid}"
        self.addCleanup(lambda: (Path(CONSOLE_DIR) / f"{domain}-serial.log").unlink(True))

        def kind():
            conn = libvirt.open("qemu:///system")
            try:
                dom = conn.lookupByName(domain)
                return dom.isActive(), dom.XMLDesc(0)
            finally:
                conn.close()

        active, xml = await deferToThread(kind)
        self.assertEqual(active, 1)
        self.assertIn("<domain type='qemu'", xml)
        self.assertIn(BOOT_MESSAGE.strip(), await self._console(domain))
        self.assertEqual((await self.client.call(f"/vm/destroy?vmid={vmid}")).json, {"status": 1})
