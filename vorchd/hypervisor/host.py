"""
One PM's hypervisor through one long-lived libvirt connection: L{LibvirtHost}, which
provides L{IHypervisor}. The connection and discovery are here; base copies of images
are in L{vorchd.images.copies}, VMs made and removed in L{vorchd.hypervisor.vms}, their
life (stop, start, resize...) in L{vorchd.hypervisor.running}, and moves between PMs in
L{vorchd.hypervisor.moves}.

Everything here blocks: it is only ever called from the thread pool that
L{vorchd.hypervisor.service.Hypervisors} owns, never from the reactor thread.
libvirt connections are thread-safe, so the pool's threads share one per PM.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
import threading
from collections.abc import Callable

import libvirt
from zope.interface import implementer

from vorchd import domain
from vorchd.domain import VM
from vorchd.hypervisor import emulation, moves, nics, running, vms
from vorchd.hypervisor import volumes as block_volumes
from vorchd.hypervisor.interface import HostUnreachable, HypervisorError, IHypervisor
from vorchd.images import copies as base_copies
from vorchd.images.copies import source_digest
from vorchd.model import Resources
from vorchd.network import NO_NIC, Attachment
from vorchd.volume_xml import CephPool

__all__ = [
    "HostUnreachable",
    "HypervisorError",
    "LibvirtHost",
    "kvm_usable_here",
    "source_digest",
]

GIB = 1024**3
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3

_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by us",
}

# libvirt prints every error to stderr by default; vorchd reports them itself.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _qemu_user(conf: str = "/etc/libvirt/qemu.conf") -> str:
    try:
        with open(conf, encoding="utf-8") as f:
            for line in f:
                m = re.match(r'\s*user\s*=\s*"([^"]+)"', line)
                if m:
                    return m.group(1)
    except OSError:
        pass
    return "libvirt-qemu"  # Debian's and Ubuntu's build default


def kvm_usable_here(device: str = "/dev/kvm", user: str | None = None) -> bool | None:
    """
    Whether QEMU, run by this machine's libvirtd as its unprivileged user, can open
    C{device}; C{None} if that cannot be told.

    libvirt offers KVM whenever the device exists, and a guest started without access
    fails only after about 40 s: for the local PM this check answers at once.
    """
    try:
        st = os.stat(device)
    except OSError:
        return False
    user = user or _qemu_user()
    if user == "root":
        return True
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    rw = stat.S_IRUSR | stat.S_IWUSR
    if st.st_uid == pw.pw_uid and st.st_mode & rw == rw:
        return True
    rw = stat.S_IRGRP | stat.S_IWGRP
    if st.st_gid in os.getgrouplist(user, pw.pw_gid) and st.st_mode & rw == rw:
        return True
    rw = stat.S_IROTH | stat.S_IWOTH
    return st.st_mode & rw == rw


@implementer(IHypervisor)
class LibvirtHost:
    """
    A PM reached at C{uri}, its VM disks kept in the directory pool C{pool_name}.

    Its L{IHypervisor} methods are documented there.

    @ivar domain_type: C{auto} (KVM where it works, else plain QEMU), C{kvm} or C{qemu}.
    @ivar console_log_dir: where on the PM each guest's serial console is written (as
        C{<domain>-serial.log}), or None for no console file.
    @ivar network: what its VMs' NICs attach to (see L{vorchd.network}).
    @ivar verified: the base copies this daemon has checked, by volume name (-> the
        checksum they were found to have): each is read back once.
    @ivar kvm_unusable: why KVM cannot run guests here ("" while it may): a guest it paused
        with an internal error (see L{vorchd.hypervisor.emulation}). Kept across
        reconnects, for the daemon's life; C{auto} then starts guests emulated.
    @ivar trials: the guests started lately, watched for KVM pausing them.
    @ivar domain_locks: a domain's is held while it is removed, or restarted emulated, so
        that a restart never brings back a domain that a destroy removed.
    """

    def __init__(
        self,
        uri: str,
        pool_name: str = "vorchd",
        pool_path: str = "/var/lib/vorchd/pool",
        domain_type: str = "auto",
        console_log_dir: str | None = None,
        network: Attachment = NO_NIC,
    ):
        self.uri = uri
        self.network = network
        self.pool_name = pool_name
        self.pool_path = pool_path
        self.domain_type = domain_type
        self.console_log_dir = console_log_dir
        self._conn: libvirt.virConnect | None = None
        self._kvm_works: bool | None = None
        self.kvm_unusable = ""
        self.trials = emulation.Trials()
        self.domain_locks = emulation.DomainLocks()
        self.verified: dict[str, str] = {}
        self.on_close: Callable[[str], object] | None = None
        self.on_kvm_pause: Callable[[str], object] | None = None
        self._events: int | None = None
        self._lock = threading.Lock()

    # -- the connection ---------------------------------------------------------------

    def connect(self) -> None:
        self.close()
        self._kvm_works = None
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as e:
            raise HostUnreachable(f"{self.uri}: {e.get_error_message()}") from None
        # Notice a dead PM by itself: a killed libvirtd closes the connection at once;
        # a hung one or a cut network fails keepalive after interval * (count + 1) s.
        # The test driver has neither (it cannot fail that way).
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        except libvirt.libvirtError:
            pass
        try:
            conn.registerCloseCallback(self._closed, None)
        except libvirt.libvirtError:
            pass
        try:
            self._events = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
            )
        except libvirt.libvirtError:
            self._events = None  # no event loop (a host used without the daemon's service)
        self._conn = conn

    def _closed(self, conn, reason: int, _opaque) -> None:
        if conn is not self._conn or self.on_close is None:
            return
        why = _CLOSE_REASONS.get(reason, f"reason {reason}")
        self.on_close(f"{self.uri}: connection closed ({why})")

    def _lifecycle(self, conn, dom, event: int, detail: int, _opaque) -> None:
        # On libvirt's event thread: no libvirt call here (a domain's name is local).
        if conn is not self._conn or self.on_kvm_pause is None:
            return
        if emulation.is_kvm_pause_event(event, detail):
            name = dom.name()
            if self.trials.age(name) is not None:
                self.on_kvm_pause(name)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.unregisterCloseCallback()
            except libvirt.libvirtError:
                pass
            events, self._events = self._events, None
            if events is not None:
                try:
                    conn.domainEventDeregisterAny(events)
                except libvirt.libvirtError:
                    pass
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

    def alive(self) -> bool:
        try:
            return self._conn is not None and self._conn.isAlive() == 1
        except libvirt.libvirtError:
            return False

    @property
    def conn(self) -> libvirt.virConnect:
        """
        The open connection.

        @raise HostUnreachable: there is none.
        """
        if self._conn is None:
            raise HostUnreachable(f"{self.uri}: not connected")
        return self._conn

    def failed(self, what: str, e: libvirt.libvirtError) -> HypervisorError:
        """
        The error to raise for libvirt's C{e} while doing C{what}: L{HostUnreachable} if
        the connection died, else L{HypervisorError}.
        """
        kind = HypervisorError if self.alive() else HostUnreachable
        return kind(f"{self.uri}: {what}: {e.get_error_message()}")

    @staticmethod
    def is_not_found(e: libvirt.libvirtError) -> bool:
        """
        Whether libvirt's C{e} says the domain, volume or pool looked up does not exist.
        """
        return e.get_error_code() in (
            libvirt.VIR_ERR_NO_DOMAIN,
            libvirt.VIR_ERR_NO_STORAGE_VOL,
            libvirt.VIR_ERR_NO_STORAGE_POOL,
        )

    @property
    def is_test_driver(self) -> bool:
        """
        Whether the PM is libvirt's test driver (it runs no guest and cannot upload).
        """
        return self.uri.startswith("test:")

    # -- discovery ----------------------------------------------------------------------

    def pool(self) -> libvirt.virStoragePool:
        """
        The pool VM disks go into, defined, built and started here if the PM lacks it.
        """
        with self._lock:
            try:
                pool = self.conn.storagePoolLookupByName(self.pool_name)
            except libvirt.libvirtError as e:
                if not self.is_not_found(e):
                    raise self.failed("pool lookup", e) from None
                try:
                    pool = self.conn.storagePoolDefineXML(
                        domain.pool_xml(self.pool_name, self.pool_path), 0
                    )
                    pool.build(0)
                    pool.setAutostart(1)
                except libvirt.libvirtError as e:
                    raise self.failed(f"defining pool {self.pool_name}", e) from None
            try:
                if not pool.isActive():
                    pool.create(0)
            except libvirt.libvirtError as e:
                raise self.failed(f"starting pool {self.pool_name}", e) from None
            return pool

    def volume(self, pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
        """
        The volume C{name} of C{pool}, or None if there is none.
        """
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as e:
            if self.is_not_found(e):
                return None
            raise self.failed(f"volume lookup {name}", e) from None

    def discover(self) -> Resources:
        try:
            info = self.conn.getInfo()
            pool = self.pool()
            pool.refresh(0)
            capacity_bytes = pool.info()[1]
        except libvirt.libvirtError as e:
            raise self.failed("discovery", e) from None
        return Resources(cpu=int(info[2]), ram=int(info[1]), disk=int(capacity_bytes // GIB))

    def domain_type_here(self) -> str:
        """
        The domain type to start a VM under: C{test} on the test driver, else the
        configured one, else KVM if the PM offers it (and, on this machine, QEMU may open
        /dev/kvm), else C{qemu}.
        """
        if self.is_test_driver:
            return "test"
        if self.domain_type != "auto":
            return self.domain_type
        if self.kvm_unusable:
            return "qemu"
        if self._kvm_works is None:
            try:
                self.conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
                self._kvm_works = True
            except libvirt.libvirtError:
                self._kvm_works = False
            if self._kvm_works and self.uri == "qemu:///system":
                self._kvm_works = kvm_usable_here() is not False
        return "kvm" if self._kvm_works else "qemu"

    def kvm_failed(self) -> None:
        """
        KVM is offered but a KVM domain would not start: emulate from now on (until the
        next connect).
        """
        self._kvm_works = False

    def run_emulated(self, domain_name: str) -> float | None:
        return emulation.run_emulated(self, domain_name)

    def volume_names(self) -> set[str]:
        pool = self.pool()
        try:
            # No refresh: libvirt refuses one while an upload into the pool runs.
            return set(pool.listVolumes())
        except libvirt.libvirtError as e:
            raise self.failed("listing volumes", e) from None

    # -- base copies, VMs and moves: see vorchd/images/copies.py, vms.py, running.py and
    # moves.py ----------------------------------------------------------------------------

    def check_network(self) -> None:
        nics.check_network(self)

    def vm_addresses(self, domain_name: str) -> list[str]:
        return nics.vm_addresses(self, domain_name)

    def ensure_base(self, fleet: str, image_id: int, source: str) -> tuple[str, str]:
        return base_copies.ensure_base(self, fleet, image_id, source)

    def prune_bases(self, fleet: str) -> list[str]:
        return base_copies.prune_bases(self, fleet)

    def create_vm(self, vm: VM, base_path: str, base_format: str) -> str:
        return vms.create_vm(self, vm, base_path, base_format)

    def destroy_vm(self, domain_name: str, volume_name: str | None) -> bool:
        return vms.destroy_vm(self, domain_name, volume_name)

    def domain_names(self) -> set[str]:
        return vms.domain_names(self)

    def fleet_domains(self, fleet: str, known: frozenset[str] = frozenset()) -> list[dict]:
        return vms.fleet_domains(self, fleet, known)

    def vm_state(self, domain_name: str) -> str:
        return running.vm_state(self, domain_name)

    def stop_vm(self, domain_name: str, timeout: float) -> None:
        running.stop_vm(self, domain_name, timeout)

    def start_vm(self, domain_name: str) -> None:
        running.start_vm(self, domain_name)

    def reboot_vm(self, domain_name: str) -> None:
        running.reboot_vm(self, domain_name)

    def suspend_vm(self, domain_name: str) -> None:
        running.suspend_vm(self, domain_name)

    def resume_vm(self, domain_name: str) -> None:
        running.resume_vm(self, domain_name)

    def resize_vm(self, vm: VM, timeout: float) -> None:
        running.resize_vm(self, vm, timeout)

    def migrate_vm(self, vm: VM, target_uri: str, shared: bool) -> None:
        moves.migrate_vm(self, vm, target_uri, shared)

    def prepare_incoming(self, vm: VM, base_path: str, base_format: str) -> None:
        moves.prepare_incoming(self, vm, base_path, base_format)

    def export_disk(self, volume_name: str, path: str) -> None:
        moves.export_disk(self, volume_name, path)

    def import_disk(self, volume_name: str, path: str) -> None:
        moves.import_disk(self, volume_name, path)

    def define_vm(self, vm: VM) -> str:
        return vms.define_vm(self, vm)

    def pool_marks(self, fleet: str, pmid: int) -> frozenset[int]:
        return moves.pool_marks(self, fleet, pmid)

    def make_volume(self, volume_name: str, size_gib: int, ceph: CephPool | None = None) -> str:
        return block_volumes.make_volume(self, volume_name, size_gib, ceph)

    def ceph_room(self, ceph: CephPool) -> tuple[int, int]:
        return block_volumes.ceph_room(self, ceph)

    def delete_volume(self, volume_name: str, ceph: CephPool | None = None) -> bool:
        return block_volumes.delete_volume(self, volume_name, ceph)

    def attach_volume(
        self, domain_name: str, volume_name: str, serial: str, ceph: CephPool | None = None
    ) -> None:
        block_volumes.attach_volume(self, domain_name, volume_name, serial, ceph)

    def detach_volume(
        self, domain_name: str, volume_name: str, ceph: CephPool | None = None
    ) -> bool:
        return block_volumes.detach_volume(self, domain_name, volume_name, ceph)
