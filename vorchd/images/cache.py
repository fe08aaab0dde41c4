"""
The image cache: remote image sources fetched once over ssh, then served like local files.

An image_file line C{[user@]host:/abs/path} names a file on another machine. Before a PM can
get a base copy of it, the daemon fetches it once into its own cache directory, without
blocking the reactor, and from then on hands out the cached copy's path. A local line is
served in place.

The fetch runs the OpenSSH client as C{ssh [options] -- host cat -- '/abs/path'}: argv lists
only, never a local shell, and the one string the remote shell sees is the path, quoted. ssh
writes the bytes straight into a temp file in the cache directory, renamed into place only
once the whole file is there, so a fetch cut off half way never leaves a file that looks
complete.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Sequence

from twisted.internet import defer, error, protocol, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from vorchd.model import ImageEntry

#: The values OpenSSH's StrictHostKeyChecking takes that make sense for a daemon.
HOST_KEY_POLICIES = ("yes", "accept-new", "no")

# How much of ssh's stderr is kept to explain a failure: its last lines say why.
_STDERR_KEPT = 16 * 1024

# Longest reason quoted from ssh's stderr, so a chatty remote cannot flood the logs.
_REASON_MAX = 240

# A cache file name: the source's hash, a dash and the source's base name, within NAME_MAX.
_NAME_MAX = 255
_HASH_CHARS = 16


class ImageUnavailable(Exception):
    """
    An image source that cannot be read (missing, unreadable, unreachable host, refused
    key, ...). The message says why in one line: no traceback text and no secrets.
    """


class _SshCat(protocol.ProcessProtocol):
    """
    Collect ssh's stderr (its stdout goes straight to a file) and report how it ended.
    """

    def __init__(self, ended: defer.Deferred) -> None:
        self.stderr = bytearray()
        self._ended = ended

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def errReceived(self, data: bytes) -> None:
        self.stderr += data
        del self.stderr[:-_STDERR_KEPT]

    def processEnded(self, reason: Failure) -> None:
        self._ended.callback(reason.value)


class ImageCache:
    """
    Local paths for image sources: local ones as they are, remote ones fetched once over ssh
    into C{directory}.

    Concurrent requests for the same remote source share one fetch; different sources fetch
    in parallel. A fetch that fails leaves nothing in C{directory}.

    @param directory: where fetched images are kept (created, mode 0755, when first needed).
    @param reactor: provides process spawning, time and threads; the global one by default.
    @param ssh_options: extra ssh arguments, placed before vorchd's own options so that an
        C{-o Option=value} here wins (ssh keeps the first value it sees).
    @param host_key_policy: ssh's C{StrictHostKeyChecking}: C{"yes"}, C{"accept-new"} or
        C{"no"}.
    @param known_hosts: ssh's C{UserKnownHostsFile}, or C{None} for ssh's default.
    @param identity: the private key file to log in with, or C{None} for ssh's defaults.
    @param port: the ssh port of every image host, or C{None} for ssh's default.
    @param timeout: seconds one fetch may take before it is killed and counted as failed.
    """

    log = Logger()

    def __init__(
        self,
        directory: str,
        reactor=None,
        ssh_options: Sequence[str] = (),
        host_key_policy: str = "accept-new",
        known_hosts: str | None = None,
        identity: str | None = None,
        port: int | None = None,
        timeout: float = 600,
    ) -> None:
        if host_key_policy not in HOST_KEY_POLICIES:
            expected = ", ".join(HOST_KEY_POLICIES)
            raise ValueError(f"host key policy {host_key_policy!r}: expected one of {expected}")
        if timeout <= 0:
            raise ValueError(f"timeout {timeout!r}: expected a positive number of seconds")
        if reactor is None:
            from twisted.internet import reactor
        self.directory = os.path.abspath(directory)
        self._reactor = reactor
        self._ssh_options = list(ssh_options)
        self._host_key_policy = host_key_policy
        self._known_hosts = known_hosts
        self._identity = identity
        self._port = port
        self._timeout = timeout
        # Source line -> the Deferreds of the callers waiting for its fetch in flight.
        self._waiting: dict[str, list[defer.Deferred]] = {}

    def cached_path(self, entry: ImageEntry) -> str:
        """
        Where the fetched copy of a remote C{entry} is (or will be) kept.

        The name starts with a hash of the source line, so two sources with the same base
        name never share a file, and ends with the base name, so a person can tell them apart.
        """
        digest = hashlib.sha256(entry.line.encode("utf-8")).hexdigest()[:_HASH_CHARS]
        base = os.path.basename(entry.path)
        room = _NAME_MAX - _HASH_CHARS - 1
        base = base.encode("utf-8")[:room].decode("utf-8", "ignore")
        return os.path.join(self.directory, f"{digest}-{base}")

    async def local_path(self, entry: ImageEntry) -> str:
        """
        A path on this machine holding C{entry}'s bytes.

        A local entry's own path is returned unchanged (nothing is copied). A remote entry is
        fetched into the cache the first time, and its cached copy's path returned at once
        after that.

        @raise ImageUnavailable: the source cannot be read; nothing was left in the cache.
        """
        if not entry.is_remote:
            return entry.path
        final = self.cached_path(entry)
        if os.path.isfile(final):
            # Only a complete fetch is ever renamed to this name.
            return final
        waiting = self._waiting.get(entry.line)
        first = waiting is None
        if waiting is None:
            waiting = self._waiting[entry.line] = []
        # A caller that gives up (its Deferred cancelled) stops waiting; the fetch goes on
        # for the others and for the next create.
        mine: defer.Deferred = defer.Deferred(waiting.remove)
        waiting.append(mine)
        if first:
            # Started after joining: a fetch that fails at once still finds its caller.
            fetch = defer.ensureDeferred(self._fetch(entry, final))
            fetch.addBoth(self._landed, entry.line)
        return await mine

    def forget(self, entry: ImageEntry) -> None:
        """
        Remove the cached copy of a remote C{entry}, if there is one, so the next use
        fetches it afresh. A local entry's file is never touched.
        """
        if not entry.is_remote:
            return
        try:
            os.unlink(self.cached_path(entry))
        except FileNotFoundError:
            pass

    def sweep(self, now: float | None = None) -> list[str]:
        """
        Remove what fetches cut short by a crash left behind: partial files nobody has
        written to for longer than a fetch may run (so never one a live fetch, of this
        daemon or another sharing the cache, is still writing). Blocking: run it in a
        thread.

        @return: the paths removed.
        """
        now = time.time() if now is None else now
        removed = []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return removed
        for name in names:
            if not name.startswith(".partial-"):
                continue
            path = os.path.join(self.directory, name)
            try:
                if now - os.lstat(path).st_mtime > self._timeout + 60:
                    os.unlink(path)
                    removed.append(path)
            except FileNotFoundError:
                pass
        return removed

    def _landed(self, result: str | Failure, line: str) -> None:
        for waiter in self._waiting.pop(line):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _fetch(self, entry: ImageEntry, final: str) -> str:
        argv = self._argv(entry)
        where = f"cannot fetch image {entry.line}"
        try:
            self._make_directory()
            fd, partial = tempfile.mkstemp(
                dir=self.directory, prefix=f".partial-{os.path.basename(final)[:_HASH_CHARS]}-"
            )
        except OSError as e:
            raise ImageUnavailable(
                f"{where}: image cache {self.directory}: {_strerror(e)}"
            ) from None
        try:
            try:
                await self._run(argv, fd, where)
                os.fchmod(fd, 0o644)
                # The data must be on disk before the name says the file is complete.
                await threads.deferToThreadPool(
                    self._reactor, self._reactor.getThreadPool(), os.fsync, fd
                )
            finally:
                os.close(fd)
            os.replace(partial, final)
        except BaseException as e:
            try:
                os.unlink(partial)
            except FileNotFoundError:
                pass
            if isinstance(e, OSError):
                raise ImageUnavailable(f"{where}: image cache: {_strerror(e)}") from None
            raise
        self.log.info("image {line} fetched into {path}", line=entry.line, path=final)
        return final

    def _argv(self, entry: ImageEntry) -> list[str]:
        host, user = entry.host or "", entry.user
        for what, value in (("host", host), ("user", user)):
            if value is None:
                continue
            # A leading "-" would be read by ssh as an option (-oProxyCommand=...).
            if not value or value.startswith("-") or not value.isprintable() or " " in value:
                raise ImageUnavailable(f"cannot fetch image {entry.line}: unsafe {what} {value!r}")
        if "\x00" in entry.path or not entry.path.startswith("/"):
            raise ImageUnavailable(f"cannot fetch image {entry.line}: bad path {entry.path!r}")
        ssh = shutil.which("ssh")
        if ssh is None:
            raise ImageUnavailable(
                f"cannot fetch image {entry.line}: no ssh client here (install openssh-client)"
            )
        connect = max(1, min(30, int(self._timeout)))
        argv = [ssh, *self._ssh_options]
        argv += ["-n", "-T", "-x", "-a"]
        for option in (
            "BatchMode=yes",
            f"StrictHostKeyChecking={self._host_key_policy}",
            f"ConnectTimeout={connect}",
            "ServerAliveInterval=15",
            "ServerAliveCountMax=4",
            # A shared master would outlive this fetch and hold its stderr open.
            "ControlPath=none",
            # Keep banners and "Permanently added" notes out of the failure reasons.
            "LogLevel=ERROR",
        ):
            argv += ["-o", option]
        if self._known_hosts is not None:
            argv += ["-o", f"UserKnownHostsFile={_ssh_file(self._known_hosts)}"]
        if self._identity is not None:
            argv += ["-i", _ssh_file(self._identity), "-o", "IdentitiesOnly=yes"]
        if self._port is not None:
            argv += ["-p", str(int(self._port))]
        if user is not None:
            argv += ["-l", user]
        # ssh hands the command to the remote user's shell as one string: quote the path.
        argv += ["--", host, f"cat -- {shlex.quote(entry.path)}"]
        return argv

    async def _run(self, argv: list[str], fd: int, where: str) -> None:
        ended: defer.Deferred = defer.Deferred()
        cat = _SshCat(ended)
        env = dict(os.environ, LC_ALL="C")
        process = self._reactor.spawnProcess(
            cat, argv[0], argv, env=env, childFDs={0: "w", 1: fd, 2: "r"}
        )
        timed_out = []

        def kill() -> None:
            timed_out.append(True)
            try:
                process.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass

        timer = self._reactor.callLater(self._timeout, kill)
        try:
            how = await ended
        finally:
            if timer.active():
                timer.cancel()
        if timed_out:
            raise ImageUnavailable(f"{where}: timed out after {self._timeout:g} s")
        if isinstance(how, error.ProcessDone):
            return
        raise ImageUnavailable(f"{where}: {_reason(bytes(cat.stderr), how)}")

    def _make_directory(self) -> None:
        try:
            os.mkdir(self.directory, 0o755)
        except FileExistsError:
            return
        except FileNotFoundError:
            os.makedirs(self.directory, 0o755, exist_ok=True)
        # mkdir's mode is filtered by the umask; the cache must be readable by libvirt's user.
        os.chmod(self.directory, 0o755)


def _ssh_file(path: str) -> str:
    # ssh expands %-tokens in file options: a literal "%" must be doubled.
    return os.path.abspath(path).replace("%", "%%")


def _strerror(e: OSError) -> str:
    return e.strerror or errno.errorcode.get(e.errno or 0, str(e))


def _reason(stderr: bytes, how: BaseException) -> str:
    """
    One line saying why ssh failed: its last meaningful stderr line, else its exit status.
    """
    text = stderr.decode("utf-8", "replace").replace("\r", "\n")
    lines = []
    for raw in text.split("\n"):
        line = "".join(c if c.isprintable() else " " for c in raw).strip()
        if line and not line.startswith(("Warning:", "**")):
            lines.append(line)
    if lines:
        line = lines[-1]
        if line.startswith("cat: "):
            line = line[len("cat: ") :]
        if len(line) > _REASON_MAX:
            line = line[: _REASON_MAX - 3] + "..."
        return line
    status = getattr(how, "exitCode", None)
    signal = getattr(how, "signal", None)
    if signal is not None:
        return f"ssh killed by signal {signal}"
    return f"ssh exited with status {status}"
