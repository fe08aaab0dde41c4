"""
One PM's hypervisor through one long-lived libvirt connection.

Everything here blocks: it is only ever called from the thread pool that
L{vorchd.hypervisor.service.Hypervisors} owns, never from the reactor thread.
libvirt connections are thread-safe, so the pool's threads share one per PM.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import stat
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable

import libvirt
from attrs import evolve
from twisted.logger import Logger

from vorchd import domain
from vorchd.domain import VMSpec
from vorchd.model import Resources

GIB = 1024**3
UPLOAD_CHUNK = 256 * 1024
# Uploads this large or larger log their progress every tenth.
PROGRESS_FROM = 64 * 1024**2
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3

_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by us",
}

log = Logger()

# libvirt prints every error to stderr by default; vorchd reports them itself.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class HypervisorError(Exception):
    """
    A libvirt operation failed; the message says which and why.
    """


class HostUnreachable(HypervisorError):
    """
    The PM's libvirt connection is gone (or was never made).
    """


_digests: dict[tuple[str, int, int], tuple[str, int, str]] = {}
_digests_lock = threading.Lock()


def source_digest(source: str) -> tuple[str, int, str]:
    """
    The sha256, size and format (C{raw} or C{qcow2}) of the image file C{source}, read
    once per version of the file (its size and modification time).

    @raise HypervisorError: the file cannot be read.
    """
    try:
        with open(source, "rb") as f:
            st = os.fstat(f.fileno())
            key = (source, st.st_size, st.st_mtime_ns)
            with _digests_lock:
                known = _digests.get(key)
            if known is not None:
                return known
            fmt = domain.image_format(f.read(4))
            f.seek(0)
            digest = hashlib.sha256()
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
    except OSError as e:
        raise HypervisorError(f"image {source}: {e.strerror}") from None
    result = (digest.hexdigest(), st.st_size, fmt)
    with _digests_lock:
        _digests[key] = result
    return result


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


def _is_not_found(e: libvirt.libvirtError) -> bool:
    return e.get_error_code() in (
        libvirt.VIR_ERR_NO_DOMAIN,
        libvirt.VIR_ERR_NO_STORAGE_VOL,
        libvirt.VIR_ERR_NO_STORAGE_POOL,
    )


def _abort(stream: libvirt.virStream) -> None:
    """
    Give up a stream whose transfer failed (an abort that fails too changes nothing).
    """
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass


class LibvirtHost:
    """
    A PM reached at C{uri}, its VM disks kept in the directory pool C{pool_name}.

    @ivar domain_type: C{auto} (KVM where it works, else plain QEMU), C{kvm} or C{qemu}.
    """

    def __init__(
        self,
        uri: str,
        pool_name: str = "vorchd",
        pool_path: str = "/var/lib/vorchd/pool",
        domain_type: str = "auto",
        console_log_dir: str | None = None,
    ):
        self.uri = uri
        self.pool_name = pool_name
        self.pool_path = pool_path
        self.domain_type = domain_type
        self.console_log_dir = console_log_dir
        self._conn: libvirt.virConnect | None = None
        self._kvm_works: bool | None = None
        # Base copies this daemon has checked, by volume name: they are read back once.
        self._verified: dict[str, str] = {}
        # Called (on libvirt's event thread) when an open connection drops by itself.
        self.on_close: Callable[[str], object] | None = None
        self._lock = threading.Lock()

    # -- the connection ---------------------------------------------------------------

    def connect(self) -> None:
        """
        Open the connection (closing a dead one first).
        """
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
        self._conn = conn

    def _closed(self, conn, reason: int, _opaque) -> None:
        if conn is not self._conn or self.on_close is None:
            return
        why = _CLOSE_REASONS.get(reason, f"reason {reason}")
        self.on_close(f"{self.uri}: connection closed ({why})")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.unregisterCloseCallback()
            except libvirt.libvirtError:
                pass
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

    def alive(self) -> bool:
        """
        Whether the connection is open and answering.
        """
        try:
            return self._conn is not None and self._conn.isAlive() == 1
        except libvirt.libvirtError:
            return False

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            raise HostUnreachable(f"{self.uri}: not connected")
        return self._conn

    def _failed(self, what: str, e: libvirt.libvirtError) -> HypervisorError:
        kind = HypervisorError if self.alive() else HostUnreachable
        return kind(f"{self.uri}: {what}: {e.get_error_message()}")

    @property
    def is_test_driver(self) -> bool:
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
                if not _is_not_found(e):
                    raise self._failed("pool lookup", e) from None
                try:
                    pool = self.conn.storagePoolDefineXML(
                        domain.pool_xml(self.pool_name, self.pool_path), 0
                    )
                    pool.build(0)
                    pool.setAutostart(1)
                except libvirt.libvirtError as e:
                    raise self._failed(f"defining pool {self.pool_name}", e) from None
            try:
                if not pool.isActive():
                    pool.create(0)
            except libvirt.libvirtError as e:
                raise self._failed(f"starting pool {self.pool_name}", e) from None
            return pool

    def discover(self) -> Resources:
        """
        The PM's capacity: host CPUs, host memory in MiB, and the GiB of its VM pool.
        """
        try:
            info = self.conn.getInfo()
            pool = self.pool()
            pool.refresh(0)
            capacity_bytes = pool.info()[1]
        except libvirt.libvirtError as e:
            raise self._failed("discovery", e) from None
        return Resources(cpu=int(info[2]), ram=int(info[1]), disk=int(capacity_bytes // GIB))

    def _domain_type(self) -> str:
        if self.is_test_driver:
            return "test"
        if self.domain_type != "auto":
            return self.domain_type
        if self._kvm_works is None:
            try:
                self.conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
                self._kvm_works = True
            except libvirt.libvirtError:
                self._kvm_works = False
            if self._kvm_works and self.uri == "qemu:///system":
                self._kvm_works = kvm_usable_here() is not False
        return "kvm" if self._kvm_works else "qemu"

    # -- images ---------------------------------------------------------------------------

    def _volume(self, pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as e:
            if _is_not_found(e):
                return None
            raise self._failed(f"volume lookup {name}", e) from None

    def ensure_base(self, fleet: str, image_id: int, source: str) -> tuple[str, str]:
        """
        The base copy of image C{image_id} (the local file C{source}) in the PM's pool,
        uploaded through libvirt's volume stream if it is not there or not right.

        The copy's name carries the image's checksum, so a changed image file gets a
        new copy and VMs on the old one keep theirs. A copy found on the PM is read back
        and checked against the checksum the first time this daemon uses it: a copy a
        crash left half-uploaded is replaced. The test driver cannot upload: there the
        volume is made without content (it runs no guest anyway).

        @return: the copy's path on the PM and the image's format (C{raw} or C{qcow2}).
        """
        digest, size, fmt = source_digest(source)
        name = domain.base_volume_name(fleet, image_id, digest)
        pool = self.pool()
        vol = self._volume(pool, name)
        if vol is not None and (self.is_test_driver or self._verified.get(name) == digest):
            return vol.path(), fmt
        if vol is not None:
            if self._checksum(vol, size) == digest:
                self._verified[name] = digest
                return vol.path(), fmt
            log.warn(
                "{uri}: base copy {name} is damaged; uploading it again", uri=self.uri, name=name
            )
            self._delete_volume(vol)
        try:
            vol = pool.createXML(domain.base_volume_xml(name, size), 0)
        except libvirt.libvirtError as e:
            raise self._failed(f"creating volume {name}", e) from None
        if not self.is_test_driver:
            try:
                self._upload(vol, source, size)
            except BaseException:
                self._delete_volume(vol)
                raise
            self._verified[name] = digest
        return vol.path(), fmt

    def prune_bases(self, fleet: str) -> list[str]:
        """
        Delete this fleet's base copies that no VM's disk is built on any more.

        @return: the names of the copies deleted.
        """
        pool = self.pool()
        prefix = domain.base_volume_prefix(fleet)
        try:
            pool.refresh(0)
            vols = pool.listAllVolumes(0)
            in_use = set()
            for vol in vols:
                if not vol.name().startswith(prefix):
                    backing = ET.fromstring(vol.XMLDesc(0)).findtext("backingStore/path")
                    if backing:
                        in_use.add(backing)
            pruned = []
            for vol in vols:
                if vol.name().startswith(prefix) and vol.path() not in in_use:
                    vol.delete(0)
                    self._verified.pop(vol.name(), None)
                    pruned.append(vol.name())
        except libvirt.libvirtError as e:
            raise self._failed("pruning base copies", e) from None
        return sorted(pruned)

    def _upload(self, vol: libvirt.virStorageVol, source: str, size: int) -> None:
        stream = self.conn.newStream(0)
        sent, step = 0, max(size // 10, 1)
        try:
            vol.upload(stream, 0, size, 0)
            with open(source, "rb") as f:
                while chunk := f.read(UPLOAD_CHUNK):
                    stream.send(chunk)
                    sent += len(chunk)
                    if size >= PROGRESS_FROM and sent // step != (sent - len(chunk)) // step:
                        log.info(
                            "{uri}: uploading {source}: {pct}%",
                            uri=self.uri,
                            source=source,
                            pct=100 * sent // size,
                        )
            stream.finish()
        except (libvirt.libvirtError, OSError) as e:
            _abort(stream)
            if isinstance(e, OSError):
                raise HypervisorError(f"image {source}: {e.strerror}") from None
            raise self._failed(f"uploading {source}", e) from None

    def _checksum(self, vol: libvirt.virStorageVol, size: int) -> str | None:
        """
        The sha256 of the first C{size} bytes of C{vol}, read back through libvirt, or
        None if it is shorter or cannot be read.
        """
        digest = hashlib.sha256()
        stream = self.conn.newStream(0)
        got = 0
        try:
            vol.download(stream, 0, size, 0)
            while got < size:
                data = stream.recv(min(UPLOAD_CHUNK, size - got))
                if not data or not isinstance(data, bytes):
                    break
                digest.update(data)
                got += len(data)
            stream.finish()
        except libvirt.libvirtError:
            _abort(stream)
            return None
        return digest.hexdigest() if got == size else None

    @staticmethod
    def _delete_volume(vol: libvirt.virStorageVol) -> None:
        try:
            vol.delete(0)
        except libvirt.libvirtError:
            pass

    # -- VMs ----------------------------------------------------------------------------

    def create_vm(self, spec: VMSpec, base_path: str, base_format: str) -> str:
        """
        Make the VM's own overlay disk, define its domain persistently and start it.

        On any failure everything made here is removed again before raising.

        @return: the domain type it runs under (C{kvm}, C{qemu} or C{test}).
        """
        pool = self.pool()
        stale = self._volume(pool, spec.volume_name)
        if stale is not None:
            # Left by a create that died half-way: vmids are never reused, so it is ours.
            self._delete_volume(stale)
        try:
            overlay = pool.createXML(
                domain.overlay_volume_xml(
                    spec.volume_name, spec.flavor.disk, base_path, base_format
                ),
                0,
            )
        except libvirt.libvirtError as e:
            raise self._failed("creating disk", e) from None
        try:
            kind = self._domain_type()
            console = None
            if self.console_log_dir and kind != "test":
                console = os.path.join(self.console_log_dir, f"{spec.domain_name}-serial.log")
            spec = evolve(spec, domain_type=kind, disk_path=overlay.path(), console_log=console)
            try:
                self._define_and_start(spec)
            except HypervisorError:
                if kind != "kvm" or self.domain_type != "auto":
                    raise
                # KVM is offered but does not work here (say /dev/kvm is not the qemu
                # user's): emulate, and stop trying KVM on this PM.
                self._kvm_works = False
                spec = evolve(spec, domain_type="qemu")
                self._define_and_start(spec)
            return spec.domain_type
        except BaseException:
            self._delete_volume(overlay)
            raise

    def _define_and_start(self, spec: VMSpec) -> None:
        try:
            dom = self.conn.defineXML(domain.domain_xml(spec))
        except libvirt.libvirtError as e:
            raise self._failed("defining domain", e) from None
        try:
            dom.create()
        except libvirt.libvirtError as e:
            error = self._failed(f"starting {spec.domain_type} domain", e)
            self._remove_domain(dom)
            raise error from None

    def _remove_domain(self, dom: libvirt.virDomain) -> None:
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError:
            pass
        try:
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError:
            dom.undefine()

    def destroy_vm(self, domain_name: str, volume_name: str) -> bool:
        """
        Stop and undefine the domain, and delete its disk. Either may be gone already.

        @return: whether the domain was still there.
        """
        found = True
        try:
            dom = self.conn.lookupByName(domain_name)
        except libvirt.libvirtError as e:
            if not _is_not_found(e):
                raise self._failed(f"looking up {domain_name}", e) from None
            found = False
        if found:
            try:
                self._remove_domain(dom)
            except libvirt.libvirtError as e:
                raise self._failed(f"removing {domain_name}", e) from None
        vol = self._volume(self.pool(), volume_name)
        if vol is not None:
            try:
                vol.delete(0)
            except libvirt.libvirtError as e:
                raise self._failed(f"deleting {volume_name}", e) from None
        return found

    def domain_names(self) -> set[str]:
        """
        The names of every domain the PM has defined or running.
        """
        try:
            return {dom.name() for dom in self.conn.listAllDomains(0)}
        except libvirt.libvirtError as e:
            raise self._failed("listing domains", e) from None

    def fleet_domains(self, fleet: str, known: frozenset[str] = frozenset()) -> list[dict]:
        """
        The vorchd metadata of every domain of fleet C{fleet} on this PM, with its
        libvirt name (C{domain}); for a name in C{known} only the name is given (its
        metadata is not read, which costs a round trip and an XML parse per domain).
        """
        out = []
        try:
            for dom in self.conn.listAllDomains(0):
                name = dom.name()
                if not name.startswith(domain.fleet_prefix(fleet)):
                    continue
                if name in known:
                    out.append({"domain": name})
                    continue
                meta = domain.parse_metadata(dom.XMLDesc(0))
                if meta.get("fleet") == fleet:
                    out.append({**meta, "domain": dom.name()})
        except libvirt.libvirtError as e:
            raise self._failed("listing domains", e) from None
        return out
