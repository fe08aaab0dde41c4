"""
The image cache against a real sshd on loopback: remote images fetched once, intact and
readable; failures that say why and leave nothing behind; no option or shell injection.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.clients import InMemoryClient
from tests.harness import (
    Daemon,
    free_port,
    refused_port,
    require,
    shared_redis,
    tmpdir,
    unique_prefix,
    write_fleet,
)
from vorchd.bootimage import boot_sector, write_image
from vorchd.images import ImageCache, ImageUnavailable
from vorchd.inventory import parse_image_text
from vorchd.model import ImageEntry

SSHD = "/usr/sbin/sshd"
MIB = 1024 * 1024


def sshd_unavailable() -> str | None:
    """
    Why a loopback sshd cannot run here, or None if it can.
    """
    if os.geteuid() != 0:
        return "a loopback sshd for root needs root"
    for program in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen")):
        if program is None or not os.access(program, os.X_OK):
            return "sshd, ssh or ssh-keygen is not installed (openssh-server, openssh-client)"
    return None


def _children() -> dict[int, list[int]]:
    """
    Every process's children, read from /proc.
    """
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    return children


def _descendants(pid: int) -> list[int]:
    """
    The processes started (directly or not) by C{pid}.
    """
    children = _children()
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(path)],
        check=True,
        capture_output=True,
    )


class LoopbackSSHD:
    """
    A real sshd on 127.0.0.1 and a free port, with its own host key, and a client key it
    lets log in as root; everything lives in C{directory}.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.host_key = directory / "host_key"
        self.client_key = directory / "client_key"
        self.other_key = directory / "other_key"
        for key in (self.host_key, self.client_key, self.other_key):
            _keygen(key)
        authorized = directory / "authorized_keys"
        authorized.write_bytes(Path(f"{self.client_key}.pub").read_bytes())
        self.authorized = authorized
        self.config = directory / "sshd_config"
        self._write_config()
        self.log = directory / "sshd.log"
        self.process: subprocess.Popen | None = None
        self.started = False

    def _write_config(self) -> None:
        authorized = self.authorized
        self.config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            f"AuthorizedKeysFile {authorized}\n"
            # The temp dir's owner and modes are not what StrictModes wants for a home.
            "StrictModes no\n"
            f"PidFile {self.directory / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
        )

    def start(self) -> None:
        """
        Start sshd and return once its port accepts connections. If another process took
        its port first (chosen free a moment before), it starts on another, unless it ran
        before (clients know it by its port).
        """
        for _ in range(5):
            if self._start():
                self.started = True
                return
            taken = "Address already in use" in self.log.read_text(errors="replace")
            if self.started or not taken:
                break
            self.port = free_port()
            self._write_config()
        raise RuntimeError(f"sshd did not start: {self.log.read_text(errors='replace')[-500:]}")

    def _start(self) -> bool:
        # The privilege separation directory, which a machine without sshd running lacks.
        os.makedirs("/run/sshd", 0o755, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if self.process.poll() is None:
                    return True
            except OSError:
                time.sleep(0.02)
        self.stop()
        return False

    def new_host_key(self) -> None:
        """
        Restart sshd with a new host key, as a reinstalled or impostor host would have.
        """
        self.stop()
        for suffix in ("", ".pub"):
            os.unlink(f"{self.host_key}{suffix}")
        _keygen(self.host_key)
        self.start()

    def stop(self) -> None:
        """
        Kill sshd and every session it started (a session outlives a killed listener).
        """
        if self.process is None:
            return
        master = self.process.pid
        for pid in reversed(_descendants(master)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Let sshd reap its sessions first: orphaned, they would stay zombies in a container
        # whose init does not reap.
        deadline = time.monotonic() + 2
        while _children().get(master) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.process.kill()
        self.process.wait()
        self.process = None


class CountingReactor:
    """
    The real reactor, counting the processes spawned through it.
    """

    def __init__(self) -> None:
        self.spawned: list[list[str]] = []

    def spawnProcess(self, protocol, executable, args=(), *a, **kw):
        self.spawned.append(list(args))
        return reactor.spawnProcess(protocol, executable, args, *a, **kw)

    def __getattr__(self, name):
        return getattr(reactor, name)


def remote(line: str) -> ImageEntry:
    """
    The one entry an image_file of C{line} gives.
    """
    [entry] = parse_image_text(line)
    return entry


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


class ImageCacheOverSSHTests(TestCase):
    """
    L{ImageCache} fetching from a real sshd on loopback.
    """

    timeout = 60

    def setUp(self) -> None:
        why = sshd_unavailable()
        if why is None:
            self.dir = tmpdir(self)
            self.sshd = LoopbackSSHD(self.dir)
            try:
                self.sshd.start()
            except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
                why = f"cannot start a loopback sshd: {e}"
            else:
                self.addCleanup(self.sshd.stop)
        require(why)
        self.files = self.dir / "remote"
        self.files.mkdir()
        self.cache_dir = self.dir / "cache"
        self.known_hosts = self.dir / "known_hosts"
        self.reactor = CountingReactor()

    def cache(self, **kw) -> ImageCache:
        settings = dict(
            reactor=self.reactor,
            ssh_options=["-F", "/dev/null"],
            known_hosts=str(self.known_hosts),
            identity=str(self.sshd.client_key),
            port=self.sshd.port,
            timeout=30,
        )
        settings.update(kw)
        return ImageCache(str(self.cache_dir), **settings)

    def image(self, name: str = "disk.img", size: int = 3 * MIB) -> tuple[ImageEntry, str]:
        """
        A remote file of random bytes plus the vorchd boot sector; its entry and sha256.
        """
        data = os.urandom(size) + boot_sector()
        path = self.files / name
        path.write_bytes(data)
        return remote(f"root@127.0.0.1:{path}"), hashlib.sha256(data).hexdigest()

    def fifo(self, name: str = "pipe.img") -> tuple[ImageEntry, Path]:
        """
        A remote FIFO: a "file" whose bytes arrive only when the test writes them.
        """
        path = self.files / name
        os.mkfifo(path)
        # A remote cat still waiting for a writer would outlive its killed session: give it
        # a writer that closes at once, so it reads end-of-file and exits.
        self.addCleanup(self.release_fifo, path)
        return remote(f"root@127.0.0.1:{path}"), path

    def release_fifo(self, path: Path) -> None:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as e:
            # ENXIO: nobody has it open for reading any more.
            if e.errno != errno.ENXIO:
                raise

    async def open_writer(self, path: Path) -> int:
        """
        Open C{path} (a FIFO) for blocking writes once the remote cat has opened it.
        """
        deadline = time.monotonic() + 20
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise
                await sleep(0.02)
                continue
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            return fd

    def cached(self) -> list[str]:
        return sorted(os.listdir(self.cache_dir)) if self.cache_dir.exists() else []

    def digest(self, path: str) -> str:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    async def assertUnavailable(self, cache: ImageCache, entry: ImageEntry, reason: str) -> str:
        """
        Fetching C{entry} fails with C{reason} in a one-line message, leaving nothing cached.
        """
        with self.assertRaises(ImageUnavailable) as caught:
            await cache.local_path(entry)
        message = str(caught.exception)
        self.assertIn(reason, message)
        self.assertIn(entry.line, message)
        self.assertNotIn("\n", message)
        self.assertNotIn("Traceback", message)
        self.assertEqual(self.cached(), [])
        return message

    async def test_fetch_remote_image(self):
        """
        A remote image arrives byte for byte, mode 0644 whatever the umask, under a name made
        of the source's hash and base name; later calls answer without fetching again.
        """
        entry, digest = self.image()
        old = os.umask(0o077)
        self.addCleanup(os.umask, old)
        cache = self.cache()
        path = await cache.local_path(entry)
        self.assertEqual(self.digest(path), digest)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)
        self.assertEqual(stat.S_IMODE(os.stat(self.cache_dir).st_mode), 0o755)
        line_hash = hashlib.sha256(entry.line.encode()).hexdigest()[:16]
        self.assertEqual(os.path.basename(path), f"{line_hash}-disk.img")
        self.assertEqual(self.cached(), [os.path.basename(path)])
        self.sshd.stop()
        self.assertEqual(await cache.local_path(entry), path)
        # A new cache on the same directory (a restarted daemon) finds the copy too.
        self.assertEqual(await self.cache().local_path(entry), path)
        self.assertEqual(len(self.reactor.spawned), 1)

    async def test_local_entry_served_in_place(self):
        """
        A local image's own path is returned unchanged: nothing is copied or spawned.
        """
        entry = remote("/srv/images/cirros-0.3.4-x86_64-disk.img")
        self.assertEqual(await self.cache().local_path(entry), entry.path)
        self.assertEqual((self.reactor.spawned, self.cached()), ([], []))

    async def test_concurrent_calls_share_one_fetch(self):
        """
        10 concurrent calls for one source run one fetch and all get the same complete copy.
        """
        entry, digest = self.image()
        cache = self.cache()
        paths = await defer.gatherResults(
            [defer.ensureDeferred(cache.local_path(entry)) for _ in range(10)]
        )
        self.assertEqual(len(set(paths)), 1)
        self.assertEqual(self.digest(paths[0]), digest)
        self.assertEqual(len(self.reactor.spawned), 1)

    async def test_sources_fetch_in_parallel(self):
        """
        A slow source does not hold up another one: each has its own fetch.
        """
        slow, fifo = self.fifo()
        quick, digest = self.image(size=MIB)
        cache = self.cache()
        waiting = defer.ensureDeferred(cache.local_path(slow))
        self.assertEqual(self.digest(await cache.local_path(quick)), digest)
        self.assertFalse(waiting.called)
        fd = await self.open_writer(fifo)
        data = os.urandom(MIB)
        await deferToThread(os.write, fd, data)
        os.close(fd)
        self.assertEqual(self.digest(await waiting), hashlib.sha256(data).hexdigest())
        self.assertEqual(len(self.reactor.spawned), 2)

    async def test_forget(self):
        """
        A forgotten copy is gone and the next call fetches the source again.
        """
        entry, digest = self.image(size=MIB)
        cache = self.cache()
        await cache.local_path(entry)
        cache.forget(entry)
        self.assertEqual(self.cached(), [])
        self.assertEqual(self.digest(await cache.local_path(entry)), digest)
        self.assertEqual(len(self.reactor.spawned), 2)

    async def test_missing_file(self):
        """
        A source path that does not exist says so, and the failure is not remembered:
        once the file is there, it is fetched.
        """
        path = self.files / "later.img"
        entry = remote(f"root@127.0.0.1:{path}")
        cache = self.cache()
        await self.assertUnavailable(cache, entry, "No such file or directory")
        path.write_bytes(b"now it exists")
        self.assertEqual(Path(await cache.local_path(entry)).read_bytes(), b"now it exists")

    async def test_directory(self):
        """
        A source naming a directory is refused as such.
        """
        await self.assertUnavailable(
            self.cache(), remote(f"root@127.0.0.1:{self.files}"), "Is a directory"
        )

    async def test_wrong_key(self):
        """
        A key the host does not accept is refused by the host, without any prompt.
        """
        entry, _ = self.image(size=1024)
        cache = self.cache(identity=str(self.sshd.other_key))
        await self.assertUnavailable(cache, entry, "Permission denied (publickey)")

    async def test_unknown_host_key_under_strict_policy(self):
        """
        With host key policy "yes", a host missing from known_hosts is refused.
        """
        entry, _ = self.image(size=1024)
        self.known_hosts.write_text("")
        cache = self.cache(host_key_policy="yes")
        await self.assertUnavailable(cache, entry, "Host key verification failed")
        self.assertEqual(self.known_hosts.read_text(), "")

    async def test_changed_host_key_refused(self):
        """
        Under "accept-new", a host whose key changed since it was first seen is refused.
        """
        entry, _ = self.image(size=1024)
        cache = self.cache()
        self.assertTrue(await cache.local_path(entry))
        cache.forget(entry)
        self.sshd.new_host_key()
        await self.assertUnavailable(cache, entry, "Host key verification failed")

    async def test_nothing_listening(self):
        """
        A host that refuses the connection makes a clear failure.
        """
        entry, _ = self.image(size=1024)
        cache = self.cache(port=refused_port(self))
        await self.assertUnavailable(cache, entry, "Connection refused")

    async def test_cut_off_mid_transfer(self):
        """
        A fetch whose connection dies half way leaves nothing in the cache, complete-looking
        or not.
        """
        entry, fifo = self.fifo()
        cache = self.cache()
        fetching = defer.ensureDeferred(cache.local_path(entry))
        fd = await self.open_writer(fifo)
        self.addCleanup(os.close, fd)
        await deferToThread(os.write, fd, os.urandom(4 * MIB))
        # Wait until those bytes sit in the cache's temp file, so the cut is mid-transfer.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            sizes = [os.stat(self.cache_dir / name).st_size for name in self.cached()]
            if sizes and sizes[0] >= 4 * MIB:
                break
            await sleep(0.02)
        self.assertEqual(len(self.cached()), 1)
        self.assertTrue(self.cached()[0].startswith("."))
        self.assertFalse(os.path.exists(cache.cached_path(entry)))
        self.sshd.stop()
        with self.assertRaises(ImageUnavailable):
            await fetching
        self.assertEqual(self.cached(), [])

    async def test_timeout(self):
        """
        A fetch that takes longer than the timeout is killed and counted as failed.
        """
        entry, _ = self.fifo()
        # The fetch never ends by itself (a FIFO nobody writes): only its timeout ends
        # it, and the test's own timeout catches a fetch that hangs.
        await self.assertUnavailable(self.cache(timeout=1), entry, "timed out after 1 s")

    async def test_path_reaches_remote_shell_quoted(self):
        """
        A source path full of shell syntax is fetched as that one file, and runs nothing.
        """
        # The remote shell starts in root's home: that is where a relative touch would land.
        marker = f"vorchd-pwned-{os.urandom(4).hex()}"
        home = Path(pwd.getpwnam("root").pw_dir)
        self.addCleanup(lambda: (home / marker).unlink(missing_ok=True))
        entry, digest = self.image(
            name=f"a b;touch {marker};$(touch {marker}) `touch {marker}` 'q\".img"
        )
        self.assertEqual(self.digest(await self.cache().local_path(entry)), digest)
        self.assertFalse((home / marker).exists())

    async def test_option_injection_rejected(self):
        """
        A host or user that ssh would read as an option is refused before anything runs.
        """
        marker = self.files / "pwned"
        command = f"-oProxyCommand=touch {marker}"
        cache = self.cache()
        for host, user in ((command, None), ("127.0.0.1", command), ("-p1", "root")):
            entry = ImageEntry(
                line=f"{user}@{host}:/x.img",
                name="x",
                path="/x.img",
                host=host,
                user=user,
                lineno=1,
            )
            await self.assertUnavailable(cache, entry, "unsafe")
        self.assertEqual(self.reactor.spawned, [])
        self.assertFalse(marker.exists())


class ImageCacheSettingsTests(SynchronousTestCase):
    """
    Settings that can never work are refused when the cache is made.
    """

    def test_bad_host_key_policy(self):
        """
        A host key policy other than yes, accept-new or no is refused.
        """
        with self.assertRaises(ValueError):
            ImageCache("/nonexistent", host_key_policy="ask")

    def test_bad_timeout(self):
        """
        A timeout that is not a positive number of seconds is refused.
        """
        with self.assertRaises(ValueError):
            ImageCache("/nonexistent", timeout=0)

    def test_cache_names_are_distinct_and_bounded(self):
        """
        Two sources with one base name get different files; a very long name still fits
        in one directory entry.
        """
        cache = ImageCache("/cache")
        a = cache.cached_path(remote("a@h1:/x/disk.img"))
        b = cache.cached_path(remote("a@h2:/x/disk.img"))
        self.assertNotEqual(a, b)
        self.assertTrue(a.endswith("-disk.img") and b.endswith("-disk.img"))
        long = cache.cached_path(remote(f"h:/{'é' * 200}.img"))
        self.assertLessEqual(len(os.path.basename(long).encode()), 255)


class SweepTests(SynchronousTestCase):
    """
    Partial files that fetches cut short by a crash left in the cache are removed, and
    nothing else.
    """

    def setUp(self):
        self.dir = tmpdir(self)
        self.cache = ImageCache(self.dir / "cache", timeout=600)

    def _file(self, name: str, age: float) -> Path:
        path = self.dir / "cache" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * 10)
        then = time.time() - age
        os.utime(path, (then, then))
        return path

    def test_sweep(self):
        """
        A partial file untouched for longer than a fetch may run goes; a recent one (a
        fetch under way, maybe another daemon's) and complete images stay.
        """
        stale = self._file(".partial-0123456789abcdef-abc", age=3600)
        fresh = self._file(".partial-0123456789abcdef-def", age=30)
        image = self._file("0123456789abcdef-disk.img", age=86400)
        self.assertEqual(self.cache.sweep(), [str(stale)])
        self.assertFalse(stale.exists())
        self.assertTrue(fresh.exists() and image.exists())

    def test_no_cache_yet(self):
        """
        A cache directory not made yet has nothing to sweep.
        """
        self.assertEqual(self.cache.sweep(), [])


class SweepAtStartTests(TestCase):
    """
    The daemon sweeps its image cache as it starts.
    """

    async def test_swept_at_start(self):
        """
        A partial file an earlier daemon's crash left is gone once the daemon is up.
        """
        d = tmpdir(self)
        daemon = Daemon(
            d / "daemon", shared_redis().url, unique_prefix(), write_fleet(d, [(2, 2048)])
        )
        cache = d / "daemon" / "image-cache"
        cache.mkdir()
        stale = cache / ".partial-0123456789abcdef-x"
        stale.write_bytes(b"cut short")
        os.utime(stale, (time.time() - 86400,) * 2)
        await daemon.start()
        self.addCleanup(daemon.stop)
        await daemon.fleet_service.swept
        self.assertFalse(stale.exists())


class RemoteImageThroughAPITests(TestCase):
    """
    A daemon whose image_file names an image on another host, fetched over a real sshd.
    """

    timeout = 60

    async def setUp(self):
        require(sshd_unavailable())
        self.dir = tmpdir(self)
        self.sshd = LoopbackSSHD(self.dir)
        self.sshd.start()
        self.addCleanup(self.sshd.stop)
        self.remote = self.dir / "remote"
        self.remote.mkdir()
        write_image(self.remote / "guest.img")
        # "imagehost" is not this machine by name, so vorchd fetches it over ssh; ssh is
        # told where it really is.
        self.daemon = Daemon(
            self.dir / "daemon",
            shared_redis().url,
            unique_prefix(),
            write_fleet(self.dir, [(4, 4096), (4, 4096)]),
            image_lines=[
                f"root@imagehost:{self.remote / 'guest.img'}",
                f"root@imagehost:{self.remote / 'missing.img'}",
            ],
            images={
                "identity": self.sshd.client_key,
                "ssh_port": self.sshd.port,
                "known_hosts": self.dir / "known_hosts",
                "ssh_options": "-F /dev/null -o HostName=127.0.0.1",
            },
        )
        await self.daemon.start()
        self.addCleanup(self.daemon.stop)
        self.client = InMemoryClient(self.daemon)

    async def test_remote_image_fetched_once(self):
        """
        VMs of a remote image are created from one fetched copy in the image cache; the
        image is named after its file.
        """
        images = (await self.client.call("/image/list")).json["images"]
        self.assertEqual([i["name"] for i in images], ["guest", "missing"])
        for _ in range(2):
            vmid = (await self.client.call("/vm/create?name=r&instance_type=1&image_id=1")).json
            self.assertGreater(vmid["vmid"], 0)
        cached = list((self.daemon.dir / "image-cache").iterdir())
        self.assertEqual(len(cached), 1)
        self.assertEqual(cached[0].read_bytes(), (self.remote / "guest.img").read_bytes())
        self.sshd.stop()
        vmid = (await self.client.call("/vm/create?name=r&instance_type=1&image_id=1")).json
        self.assertGreater(vmid["vmid"], 0)

    async def test_unreadable_remote_image(self):
        """
        A remote image that cannot be read makes create answer {"vmid": 0} with the
        reason, and leaves nothing: no claim, no file in the cache.
        """
        answer = await self.client.call("/vm/create?name=r&instance_type=1&image_id=2")
        self.assertEqual(answer.json, {"vmid": 0})
        self.assertIn("No such file", answer.reason)
        self.assertEqual(list((self.daemon.dir / "image-cache").glob("*")), [])
        for pmid in (1, 2):
            pm = (await self.client.call(f"/pm/query?pmid={pmid}")).json
            self.assertEqual((pm["free"], pm["vms"]), (pm["capacity"], 0))
