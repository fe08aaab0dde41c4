"""
Images on a libvirt PM: each image's base copy in the PM's pool, uploaded through
libvirt's own volume stream and checked by reading it back, and pruned once no VM disk is
built on it; and volumes downloaded whole (a VM's disk, moved to another PM).

Everything here blocks, like the L{LibvirtHost} whose connection it uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import libvirt
from twisted.logger import Logger

from vorchd import domain
from vorchd.hypervisor.interface import HypervisorError

if TYPE_CHECKING:
    from vorchd.hypervisor.host import LibvirtHost

UPLOAD_CHUNK = 256 * 1024
# Uploads this large or larger log their progress every tenth.
PROGRESS_FROM = 64 * 1024**2

log = Logger()

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


def ensure_base(host: LibvirtHost, fleet: str, image_id: int, source: str) -> tuple[str, str]:
    """
    L{IHypervisor.ensure_base} on C{host}.

    A copy found on the PM is read back and checked against the checksum the first time
    this daemon uses it (C{host.verified} remembers it), so a copy a crash left
    half-uploaded is replaced. The test driver cannot upload: there the volume is made
    without content (it runs no guest anyway).

    In a pool that is one directory shared with other PMs, a copy another PM made is not
    listed here until the pool is refreshed, and libvirt refuses to make its file again:
    then it is found by a refresh, and used once checked (if it is not right, it may still
    be being uploaded: that fails, and the next call, finding it listed, replaces it).
    """
    digest, size, fmt = source_digest(source)
    name = domain.base_volume_name(fleet, image_id, digest)
    pool = host.pool()
    vol = host.volume(pool, name)
    if vol is not None and _is_right(host, vol, digest, size):
        return vol.path(), fmt
    if vol is not None:
        log.warn("{uri}: base copy {name} is damaged; uploading it again", uri=host.uri, name=name)
        delete_volume(vol)
    try:
        vol = pool.createXML(domain.base_volume_xml(name, size), 0)
    except libvirt.libvirtError as e:
        error = host.failed(f"creating volume {name}", e)
        theirs = made_elsewhere(host, pool, name)
        if theirs is None:
            raise error from None
        if not _is_right(host, theirs, digest, size):
            raise HypervisorError(
                f"{host.uri}: base copy {name}, made by another PM sharing the pool, is "
                "not right (yet)"
            ) from None
        return theirs.path(), fmt
    if not host.is_test_driver:
        try:
            upload(host, vol, source, size)
        except BaseException:
            delete_volume(vol)
            raise
        host.verified[name] = digest
    return vol.path(), fmt


def _is_right(host: LibvirtHost, vol: libvirt.virStorageVol, digest: str, size: int) -> bool:
    """
    Whether the base copy C{vol} holds the image of checksum C{digest} (C{size} bytes):
    read back once, then remembered in C{host.verified}.
    """
    name = vol.name()
    if host.is_test_driver or host.verified.get(name) == digest:
        return True
    if checksum(host, vol, size) == digest:
        host.verified[name] = digest
        return True
    return False


def made_elsewhere(
    host: LibvirtHost, pool: libvirt.virStoragePool, name: str
) -> libvirt.virStorageVol | None:
    """
    The volume C{name} if another PM sharing C{pool}'s directory made it: found once the
    pool is refreshed (None if it is not there, or libvirt refuses a refresh now).
    """
    try:
        pool.refresh(0)
    except libvirt.libvirtError:
        return None
    return host.volume(pool, name)


def prune_bases(host: LibvirtHost, fleet: str) -> list[str]:
    """
    L{IHypervisor.prune_bases} on C{host}.
    """
    pool = host.pool()
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
                host.verified.pop(vol.name(), None)
                pruned.append(vol.name())
    except libvirt.libvirtError as e:
        raise host.failed("pruning base copies", e) from None
    return sorted(pruned)


def upload(host: LibvirtHost, vol: libvirt.virStorageVol, source: str, size: int) -> None:
    """
    Send the file C{source} (C{size} bytes) into C{vol} through a libvirt stream.
    """
    stream = host.conn.newStream(0)
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
                        uri=host.uri,
                        source=source,
                        pct=100 * sent // size,
                    )
        stream.finish()
    except (libvirt.libvirtError, OSError) as e:
        _abort(stream)
        if isinstance(e, OSError):
            raise HypervisorError(f"image {source}: {e.strerror}") from None
        raise host.failed(f"uploading {source}", e) from None


def find_volume(host: LibvirtHost, name: str) -> libvirt.virStorageVol | None:
    """
    The volume C{name} of C{host}'s pool, or None; looked for again after a refresh if the
    pool does not list it (in a pool shared with other PMs, another may have made it).
    """
    pool = host.pool()
    return host.volume(pool, name) or made_elsewhere(host, pool, name)


def download(host: LibvirtHost, vol: libvirt.virStorageVol, path: str) -> None:
    """
    Copy every byte of C{vol} into the local file C{path} (made readable by its owner
    only), through a libvirt stream; on failure no file is left.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise HypervisorError(f"disk file {path}: {e.strerror}") from None
    stream = host.conn.newStream(0)
    try:
        with open(fd, "wb") as f:
            vol.download(stream, 0, 0, 0)
            # A blocking stream answers bytes, and b"" at the end.
            while data := stream.recv(UPLOAD_CHUNK):
                f.write(data)
            stream.finish()
    except (libvirt.libvirtError, OSError) as e:
        _abort(stream)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(e, OSError):
            raise HypervisorError(f"disk file {path}: {e.strerror}") from None
        raise host.failed(f"downloading {vol.name()}", e) from None


def checksum(host: LibvirtHost, vol: libvirt.virStorageVol, size: int) -> str | None:
    """
    The sha256 of the first C{size} bytes of C{vol}, read back through libvirt, or None if
    it is shorter or cannot be read.
    """
    digest = hashlib.sha256()
    stream = host.conn.newStream(0)
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


def delete_volume(vol: libvirt.virStorageVol) -> None:
    """
    Delete C{vol}, as cleanup (a delete that fails changes nothing).
    """
    try:
        vol.delete(0)
    except libvirt.libvirtError:
        pass


def _abort(stream: libvirt.virStream) -> None:
    """
    Give up a stream whose transfer failed (an abort that fails too changes nothing).
    """
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass
