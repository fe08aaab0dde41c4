"""
Fleets of real, independent libvirtd hypervisors on this one machine, for vorchd's tests.

Each PM is a libvirtd (with its own virtlogd) in a mount and UTS namespace of its own, as
measured in /work/shared/libvirt-notes.md: private bind mounts over C{/run/libvirt},
C{/var/lib/libvirt}, C{/etc/libvirt} (a fresh copy of the top-level config files only),
C{/var/log/libvirt} and C{/var/cache/libvirt}, a hostname of its own, and a TCP listener on
a loopback address of its own, reached as C{qemu+tcp://ADDRESS/system}.

Unlike the notes, each PM also gets a PID namespace. Its init is a small Python reaper (the
namespace holder), which keeps the namespaces alive; the daemons are started in them with
C{nsenter}, so a test can kill a PM's libvirtd and start it again over the same state while
its guests keep running. The reaper is what makes C{virDomainDestroy} take 0.2 s instead of
2 s here (see L{_HOLDER_SCRIPT}), and killing it kills everything the PM ran.

With C{netns=True} each PM also gets a network namespace of its own, holding nothing but
its loopback and what its libvirt makes there (its networks' bridges, their dnsmasq, its
guests' taps), and a sysfs of that namespace (so libvirt sees its interfaces): guests on
a PM's libvirt network are reachable only from inside that PM (C{pm.nsenter(...)} runs
there). Its libvirtd listens on the namespace's own 127.0.0.1, and
a small forwarder (L{_FORWARDER_SCRIPT}) accepts the PM's connections on its loopback
address of the host, C{ADDRESS:16509}, and carries them into the namespace: the daemon under
test reaches the PM on C{qemu+tcp://ADDRESS/system} as before, and nothing leaves loopback.
Such PMs cannot migrate to each other (each one's ADDRESS means nothing inside another).

All state lives under one directory per fleet, C{/var/lib/vorchd-tests/fleet-XXXX/pmN}
(readable by the C{libvirt-qemu} user, unlike C{/tmp}). L{LibvirtdFleet.stop} removes it all
and is idempotent; it is also registered with C{atexit}, and a fleet found on disk whose
owning process is gone is cleaned up by the next fleet that starts.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

#: Where every fleet keeps its state; overridable for unusual machines.
ROOT = Path(os.environ.get("VORCHD_FLEET_ROOT", "/var/lib/vorchd-tests"))

#: libvirtd's TCP port; each PM listens on it at an address of its own.
LIBVIRTD_PORT = 16509

#: How long a PM may take to answer after its libvirtd is started.
START_TIMEOUT = 60.0

#: The host directories each PM gets a private copy of: (state subdir, mount point).
MOUNTS = (
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("etc", "/etc/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
)

#: The programs a fleet needs.
PROGRAMS = ("unshare", "nsenter", "mount", "libvirtd", "virtlogd", "virsh")

# The namespace holder: init (pid 1) of the PM's PID namespace, run by
# "unshare --mount --uts --pid --fork --mount-proc". It makes the bind mounts and sets the
# hostname, says "ready", then reaps every orphan in the namespace at once (daemonized
# libvirtd, virtlogd and QEMU are reparented to it). Prompt reaping matters: libvirt waits
# for a killed QEMU's pid to vanish, and this machine's own init reaps only every ~2 s.
# When it exits the kernel kills everything else in the namespace.
_HOLDER_SCRIPT = """\
import os, signal, socket, subprocess, sys

state, hostname, *mounts = sys.argv[1:]
for subdir, point in zip(mounts[::2], mounts[1::2]):
    if not os.path.exists(point):
        sys.exit(f"mount point {point} is missing")
    subprocess.run(["mount", "--bind", os.path.join(state, subdir), point], check=True)
socket.sethostname(hostname)
signals = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
signal.pthread_sigmask(signal.SIG_BLOCK, signals)
print("ready", flush=True)
devnull = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1):
    os.dup2(devnull, fd)
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    info = signal.sigtimedwait(signals, 5)
    if info is not None and info.si_signo != signal.SIGCHLD:
        sys.exit(0)
"""

# The forwarder of a PM in a network namespace of its own, run inside that namespace (and
# its PID namespace, so that it dies with the PM) by nsenter: it accepts connections on the
# listening socket it is given (made in the host's network namespace, on the PM's loopback
# address) and joins each to a connection of its own to libvirtd on the namespace's
# 127.0.0.1.
_FORWARDER_SCRIPT = """\
import socket, sys, threading

listener = socket.socket(fileno=int(sys.argv[1]))
port = int(sys.argv[2])


def pipe(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for s in (source, sink):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


while True:
    client, _ = listener.accept()
    try:
        server = socket.create_connection(("127.0.0.1", port), timeout=10)
        server.settimeout(None)
    except OSError:
        client.close()
        continue
    for a, b in ((client, server), (server, client)):
        threading.Thread(target=pipe, args=(a, b), daemon=True).start()
"""

# Run with the test's own interpreter against one PM: every domain destroyed and undefined,
# every volume of every pool deleted, and the pools stopped and undefined.
_CLEAN_SCRIPT = """\
import sys
import libvirt

libvirt.registerErrorHandler(lambda *args: None, None)
conn = libvirt.open(sys.argv[1])
undefine_flags = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)
for dom in conn.listAllDomains():
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError:
        pass
    try:
        dom.undefineFlags(undefine_flags)
    except libvirt.libvirtError:
        try:
            dom.undefine()
        except libvirt.libvirtError:
            pass
for pool in conn.listAllStoragePools():
    try:
        if not pool.isActive():
            pool.create()
        pool.refresh()
        for vol in pool.listAllVolumes():
            try:
                vol.delete()
            except libvirt.libvirtError:
                pass
    except libvirt.libvirtError:
        pass
    try:
        if pool.isActive():
            pool.destroy()
        pool.undefine()
    except libvirt.libvirtError:
        pass
conn.close()
"""

_random = random.SystemRandom()

_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def libvirtd_fleet_unavailable() -> str | None:
    """
    Why a L{LibvirtdFleet} cannot run on this machine, or None if it can.
    """
    if sys.platform != "linux":
        return "libvirtd fleets need Linux namespaces"
    if os.geteuid() != 0:
        return "libvirtd fleets need root"
    missing = [name for name in PROGRAMS if shutil.which(name, path=_ENV["PATH"]) is None]
    if missing:
        return f"libvirtd fleets need {', '.join(missing)} (not installed)"
    for _, mount_point in MOUNTS:
        if not os.path.isdir(mount_point):
            return f"libvirtd fleets need {mount_point} (is libvirt-daemon-system installed?)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirtd fleets need the libvirt Python binding"
    try:
        subprocess.run(
            ["unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc", "true"],
            check=True,
            capture_output=True,
            timeout=10,
            env=_ENV,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot make mount, UTS and PID namespaces here: {e}"
    return None


def netns_unavailable() -> str | None:
    """
    Why PMs in network namespaces of their own (C{netns=True}) cannot run here, or None.
    """
    why = libvirtd_fleet_unavailable()
    if why is not None:
        return why
    if shutil.which("ip", path=_ENV["PATH"]) is None:
        return "network namespaces need ip (iproute2)"
    if shutil.which("dnsmasq", path=_ENV["PATH"]) is None:
        return "libvirt networks with DHCP need dnsmasq (dnsmasq-base)"
    try:
        subprocess.run(
            ["unshare", "--net", "ip", "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
            timeout=10,
            env=_ENV,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot make a network namespace here: {e}"
    return None


def _alive(pid: int) -> bool:
    """
    Whether C{pid} runs (a zombie counts as gone: only its parent can reap it).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _has_mount(pid: int | str, marker: str) -> bool:
    """
    Whether process C{pid} has a mount whose source directory's path contains C{marker}.
    """
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            return any(marker in line.split(" ", 4)[3] + "/" for line in f)
    except (OSError, IndexError):
        return False


def _pids_mounting(marker: str) -> list[int]:
    """
    Every live process with a mount whose source directory's path contains C{marker}: the
    processes of a PM's namespace, and those of the namespaces libvirt makes for its QEMUs.
    """
    pids = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != me and _has_mount(entry.name, marker):
            pids.append(int(entry.name))
    return pids


def _kill_all_mounting(marker: str, timeout: float = 15.0) -> None:
    """
    SIGKILL every process L{_pids_mounting} finds for C{marker} until none is left.
    """
    deadline = time.monotonic() + timeout
    while True:
        pids = [pid for pid in _pids_mounting(marker) if _alive(pid)]
        if not pids:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of {marker} survive SIGKILL: {pids}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return children


def _address_in_use(address: str) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((address, LIBVIRTD_PORT)) == 0


def reap_stale_fleets(root: Path = ROOT) -> list[str]:
    """
    Remove the fleets under C{root} whose owning process is gone (a test run that was killed
    before its cleanup ran): kill their processes and delete their state. Returns their paths.
    """
    reaped = []
    if not root.is_dir():
        return reaped
    for path in root.glob("fleet-*"):
        try:
            pid_text, start = (path / "owner").read_text().split()
            if _start_time(int(pid_text)) == start:
                continue
        except FileNotFoundError:
            # Being created right now, or a crash between mkdir and writing the owner.
            if time.time() - path.stat().st_mtime < 600:
                continue
        except (OSError, ValueError):
            pass
        _kill_all_mounting(f"/{path.name}/")
        shutil.rmtree(path, ignore_errors=True)
        reaped.append(str(path))
    return reaped


def new_fleet_dir(root: Path = ROOT) -> Path:
    """
    A new directory C{fleet-XXXXXXXXXX} under C{root} (the fleets of dead test runs reaped
    first), owned by this process (its C{owner} file names it, for L{reap_stale_fleets}).
    """
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    reap_stale_fleets(root)
    # Not mkdtemp: its names may hold "_", and the name is part of the PMs' hostnames.
    while True:
        path = root / f"fleet-{uuid.uuid4().hex[:10]}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        break
    path.chmod(0o755)
    me = os.getpid()
    (path / "owner").write_text(f"{me} {_start_time(me)}\n")
    return path


def start_holder(
    state_dir: Path, hostname: str, mounts: list[str], net: bool, log: Path
) -> tuple[subprocess.Popen, int | None]:
    """
    Start a namespace holder (mount, UTS and PID namespaces, and a network one if C{net})
    over C{state_dir}, binding each (subdirectory, mount point) pair of C{mounts}, its
    stderr in C{log}. It, and the pid of its namespaces' init once it is ready (None if
    it failed: C{log} says why).
    """
    with open(log, "wb") as err:
        holder = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc"]
            + (["--net"] if net else [])
            + ["--propagation", "private", sys.executable, "-I", "-S", "-c"]
            + [_HOLDER_SCRIPT, str(state_dir), hostname, *mounts],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=_ENV,
            cwd="/",
            # Outside the test's session: a ^C must leave it for the cleanup to use.
            start_new_session=True,
        )
    line = holder.stdout.readline()
    holder.stdout.close()
    children = _children(holder.pid) if line.strip() == b"ready" else []
    return holder, (children[0] if len(children) == 1 else None)


def own_network(run: Callable[..., subprocess.CompletedProcess], who: str) -> None:
    """
    In a network namespace of its own (C{run} runs a command there): its loopback up,
    and a sysfs of its own, since libvirt reads the interfaces (and whether a bridge
    exists) from /sys/class/net, which otherwise shows the machine's.

    @raise RuntimeError: either failed (C{who} names the namespace).
    """
    result = run("ip", "link", "set", "lo", "up")
    if result.returncode != 0:
        raise RuntimeError(f"{who}: no loopback in its namespace: {result.stderr}")
    result = run("mount", "-t", "sysfs", "sysfs", "/sys")
    if result.returncode != 0:
        raise RuntimeError(f"{who}: cannot mount its sysfs: {result.stderr}")


class LibvirtdPM:
    """
    One independent hypervisor: a libvirtd and a virtlogd in a mount+UTS namespace of their
    own, listening on C{qemu+tcp://ADDRESS/system}. State in C{state_dir}.
    """

    def __init__(
        self,
        index: int,
        address: str,
        state_dir: Path,
        hostname: str,
        netns: bool = False,
        own_kvm: bool = False,
    ):
        self.index = index
        self.address = address
        # Whether it has a network namespace of its own (see the module's docstring).
        self.netns = netns
        # Whether it gets a /dev/kvm of its own (see LibvirtdFleet).
        self.own_kvm = own_kvm
        self.forwarder: subprocess.Popen | None = None
        self.uri = f"qemu+tcp://{address}/system"
        self.state_dir = Path(state_dir)
        self.hostname = hostname
        self.host_uuid = str(uuid.uuid4())
        # The "unshare" process, and the init of the PID namespace it made.
        self.holder: subprocess.Popen | None = None
        self.init_pid: int | None = None
        # Mount roots of this PM's processes contain this (see _pids_mounting).
        self.marker = f"/{self.state_dir.parent.name}/{self.state_dir.name}/"

    def __repr__(self) -> str:
        return f"<LibvirtdPM {self.index} {self.uri} {self.state_dir}>"

    # -- paths and processes --------------------------------------------------------------

    def path(self, subdir: str, *rest: str) -> Path:
        """
        The host path of a file in one of the PM's private directories, e.g.
        C{pm.path("run", "qemu")} for what the PM sees as C{/run/libvirt/qemu}.
        """
        return self.state_dir.joinpath(subdir, *rest)

    @property
    def libvirtd_log(self) -> Path:
        return self.path("log", "libvirtd.log")

    def _pidfile(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid"

    def holder_alive(self) -> bool:
        """
        Whether the PM's namespaces (and so possibly its daemons and guests) exist.
        """
        return (
            self.holder is not None
            and self.holder.poll() is None
            and self.init_pid is not None
            and _alive(self.init_pid)
        )

    def processes(self) -> dict[int, int]:
        """
        The live processes of the PM's PID namespace: host pid by pid inside the namespace.
        """
        if not self.holder_alive():
            return {}
        try:
            ns = os.readlink(f"/proc/{self.init_pid}/ns/pid")
        except OSError:
            return {}
        found = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry.name}/ns/pid") != ns:
                    continue
                with open(f"/proc/{entry.name}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            found[int(line.split()[-1])] = int(entry.name)
                            break
            except (OSError, ValueError):
                continue
        return {ns_pid: pid for ns_pid, pid in found.items() if _alive(pid)}

    def _pid_from_file(self, pidfile: Path, comm_prefix: str, processes=None) -> int | None:
        try:
            ns_pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        pid = (self.processes() if processes is None else processes).get(ns_pid)
        if pid is not None and _comm(pid).startswith(comm_prefix):
            return pid
        return None

    def libvirtd_pid(self) -> int | None:
        """
        The host pid of this PM's running libvirtd, or None.
        """
        return self._pid_from_file(self._pidfile("libvirtd"), "libvirtd")

    def virtlogd_pid(self) -> int | None:
        """
        The host pid of this PM's running virtlogd, or None.
        """
        return self._pid_from_file(self._pidfile("virtlogd"), "virtlogd")

    def qemu_pids(self) -> dict[str, int]:
        """
        The host pids of the running QEMUs of this PM's guests, by domain name.
        """
        processes = self.processes()
        found = {}
        for pidfile in self.path("run", "qemu").glob("*.pid"):
            pid = self._pid_from_file(pidfile, "qemu", processes)
            if pid is not None:
                found[pidfile.stem] = pid
        return found

    def nsenter(self, *command: str, **kwargs) -> subprocess.CompletedProcess:
        """
        Run C{command} inside this PM's namespaces (as root) and return its result.
        """
        if not self.holder_alive():
            raise RuntimeError(f"{self}: its namespace holder is not running")
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("env", _ENV)
        kwargs.setdefault("cwd", "/")
        namespaces = ["-m", "-u", "-p", *(["-n"] if self.netns else [])]
        return subprocess.run(
            ["nsenter", "-t", str(self.init_pid), *namespaces, "--", *command], **kwargs
        )

    def virsh(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """
        Run C{virsh -c URI ARGS} from the host side, as a client over TCP.
        """
        return subprocess.run(
            ["virsh", "-q", "-c", self.uri, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_ENV,
        )

    def answers(self, timeout: float = 10) -> bool:
        """
        Whether C{virsh -c URI version} succeeds now.
        """
        try:
            return self.virsh("version", timeout=timeout).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    # -- life cycle ----------------------------------------------------------------------

    def _prepare(self) -> None:
        for subdir, _ in MOUNTS:
            self.path(subdir).mkdir(parents=True, exist_ok=True)
            # libvirt-qemu must traverse these to reach its sockets, logs and disks.
            self.path(subdir).chmod(0o755)
        self.state_dir.chmod(0o755)
        # The empty directories the packages make (e.g. /var/log/libvirt/qemu, where serial
        # console files usually go): libvirtd does not make them all itself.
        for subdir in ("lib", "log", "cache"):
            for entry in os.scandir(dict(MOUNTS)[subdir]):
                if entry.is_dir(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    target = self.path(subdir, entry.name)
                    target.mkdir(exist_ok=True)
                    os.chown(target, st.st_uid, st.st_gid)
                    target.chmod(st.st_mode & 0o7777)
        etc = self.path("etc")
        # Only the top-level config files: the host's domains, networks, pools, secrets and
        # hooks must not appear (or autostart) in a PM.
        for entry in os.scandir("/etc/libvirt"):
            if entry.is_file(follow_symlinks=False):
                shutil.copy2(entry.path, etc / entry.name)
        for subdir in ("qemu/networks/autostart", "qemu/autostart", "storage/autostart"):
            (etc / subdir).mkdir(parents=True, exist_ok=True)
        # In a network namespace of its own, it listens on that namespace's loopback.
        listen = "127.0.0.1" if self.netns else self.address
        (etc / "libvirtd.conf").write_text(
            "listen_tls = 0\n"
            "listen_tcp = 1\n"
            f'listen_addr = "{listen}"\n'
            f'tcp_port = "{LIBVIRTD_PORT}"\n'
            'auth_tcp = "none"\n'
            f'host_uuid = "{self.host_uuid}"\n'
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
        )
        # Without cgroup_controllers all PMs share the host's cgroup tree, and equal domain
        # names collide. The migration settings make an incoming live migration (and its
        # disk copy) listen on, and be reached at, the PM's own address: by default the
        # target offers its hostname, which nothing resolves. (A PM in a network namespace
        # of its own cannot migrate, and libvirt refuses 127.0.0.1 there.)
        migration = (
            ""
            if self.netns
            else f'migration_host = "{self.address}"\nmigration_address = "{self.address}"\n'
        )
        (etc / "qemu.conf").write_text("cgroup_controllers = [ ]\n" + migration)
        (etc / "qemu.conf").chmod(0o600)
        # QEMU's capabilities, probed once by the host's libvirtd: each PM would take about
        # 4 s to probe them again. libvirtd checks the cache and probes anew if it is stale.
        host_caps = Path("/var/cache/libvirt/qemu/capabilities")
        if host_caps.is_dir():
            shutil.copytree(host_caps, self.path("cache", "qemu", "capabilities"))

    def _start_holder(self) -> None:
        mounts = [item for subdir, point in MOUNTS for item in (subdir, point)]
        log = self.state_dir / "holder.log"
        self.holder, self.init_pid = start_holder(
            self.state_dir, self.hostname, mounts, self.netns, log
        )
        if self.init_pid is not None:
            if self.netns:
                self._start_forwarder()
            return
        self.holder.kill()
        self.holder.wait(10)
        raise RuntimeError(f"{self}: namespace setup failed: " + log.read_text(errors="replace"))

    def _start_forwarder(self) -> None:
        own_network(self.nsenter, str(self))
        listener = socket.socket()
        try:
            listener.bind((self.address, LIBVIRTD_PORT))
            listener.listen(64)
            command = [sys.executable, "-I", "-S", "-c", _FORWARDER_SCRIPT]
            self.forwarder = subprocess.Popen(
                ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-p", "-n", "--", *command]
                + [str(listener.fileno()), str(LIBVIRTD_PORT)],
                pass_fds=[listener.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=_ENV,
                cwd="/",
                start_new_session=True,
            )
        finally:
            listener.close()

    def _bind_own_kvm(self) -> None:
        # A device node of its own for the machine's KVM device, root:kvm 0660, bound over
        # /dev/kvm in its mount namespace before libvirtd starts: another test closing the
        # machine's /dev/kvm (chmod) leaves this PM's alone.
        node = self.state_dir / "kvm"
        os.mknod(node, 0o660 | stat.S_IFCHR, os.stat("/dev/kvm").st_rdev)
        shutil.chown(node, "root", "kvm")
        node.chmod(0o660)
        result = self.nsenter("mount", "--bind", str(node), "/dev/kvm")
        if result.returncode != 0:
            raise RuntimeError(f"{self}: cannot bind its /dev/kvm: {result.stderr}")

    def _start_virtlogd(self) -> None:
        if self.virtlogd_pid() is not None:
            return
        result = self.nsenter("virtlogd", "-d", "-p", str(self._pidfile("virtlogd")))
        if result.returncode != 0:
            raise RuntimeError(f"{self}: virtlogd failed: {result.stderr.strip()}")

    def _start_libvirtd(self) -> None:
        result = self.nsenter("libvirtd", "-d", "-l", "-p", str(self._pidfile("libvirtd")))
        if result.returncode != 0:
            raise RuntimeError(
                f"{self}: libvirtd failed: {result.stderr.strip()}\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.libvirtd_log.read_text(errors="replace")
        except OSError:
            return "(no libvirtd log)"
        return "\n".join(text.splitlines()[-lines:])

    def launch(self) -> None:
        """
        Make the namespace and start virtlogd and libvirtd in it, without waiting for them
        to answer (see L{wait_ready}).
        """
        if self.holder is not None:
            raise RuntimeError(f"{self} was already started")
        self._prepare()
        self._start_holder()
        if self.own_kvm:
            self._bind_own_kvm()
        self._start_virtlogd()
        self._start_libvirtd()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """
        Block until C{virsh -c URI version} works, or raise after C{timeout} seconds.
        """
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if self.answers(timeout=max(1.0, min(10.0, deadline - time.monotonic()))):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self} did not answer in {timeout} s\n{self._log_tail()}")
            if self.libvirtd_pid() is None and time.monotonic() - started > 2:
                # "libvirtd -d" returned long ago, so its pidfile is written: it died.
                raise RuntimeError(f"{self}: libvirtd exited\n{self._log_tail()}")
            time.sleep(0.05)

    def start(self) -> None:
        """
        Start this PM and block until it answers on its URI.
        """
        self.launch()
        self.wait_ready()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """
        Send C{sig} to this PM's libvirtd only; its guests (and virtlogd) keep running.
        For SIGKILL and SIGTERM, block until libvirtd has exited.
        """
        pid = self.libvirtd_pid()
        if pid is None:
            raise RuntimeError(f"{self}: libvirtd is not running")
        os.kill(pid, sig)
        if sig not in (signal.SIGKILL, signal.SIGTERM):
            return
        # Gone from /proc, not just a zombie: a zombie leader's other threads may still hold
        # the listening socket, and a connect then gets "reset" instead of "refused". The
        # namespace's init reaps at once.
        deadline = time.monotonic() + 30
        # In a network namespace of its own, its address is the forwarder's: always there.
        while os.path.exists(f"/proc/{pid}") or (not self.netns and _address_in_use(self.address)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self}: libvirtd {pid} survives signal {sig}")
            time.sleep(0.005)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """
        Start libvirtd again in the same namespace, over the same state (stopping it first
        if it still runs, and starting virtlogd too if it is gone), and block until it
        answers. It reattaches to the guests that survived.
        """
        pid = self.libvirtd_pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
            self.kill(signal.SIGTERM)
        self._start_virtlogd()
        self._start_libvirtd()
        self.wait_ready(timeout)

    def _clean_domains_and_pools(self) -> None:
        subprocess.run(
            [sys.executable, "-c", _CLEAN_SCRIPT, self.uri],
            capture_output=True,
            timeout=120,
            env={**_ENV, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )

    def stop(self) -> None:
        """
        Destroy and undefine every domain of this PM and delete every volume of its pools
        (point its pools only at directories the test owns), then kill everything in its
        namespaces and remove its state. Idempotent.
        """
        try:
            if self.holder_alive():
                pid = self.libvirtd_pid()
                if pid is not None:
                    os.kill(pid, signal.SIGCONT)
                else:
                    try:
                        self.restart(timeout=20)
                    except Exception:
                        pass
                if self.answers(timeout=10):
                    try:
                        self._clean_domains_and_pools()
                    except subprocess.TimeoutExpired:
                        pass
            if self.init_pid is not None and self.holder is not None:
                # The kernel kills the rest of the PID namespace with its init.
                if self.holder.poll() is None:
                    os.kill(self.init_pid, signal.SIGKILL)
                self.holder.wait(30)
            _kill_all_mounting(self.marker)
        finally:
            if self.holder is not None:
                if self.holder.poll() is None:
                    self.holder.kill()
                self.holder.wait(10)
            if self.forwarder is not None:
                # nsenter itself, outside the namespace, waited for the forwarder.
                if self.forwarder.poll() is None:
                    self.forwarder.kill()
                self.forwarder.wait(10)
            shutil.rmtree(self.state_dir, ignore_errors=True)


class LibvirtdFleet:
    """
    C{n} independent L{LibvirtdPM}s, each in a network namespace of its own if C{netns},
    and with a C{/dev/kvm} of its own if C{own_kvm} (a node for the machine's KVM device,
    root:kvm 0660, which other tests' changes to the machine's /dev/kvm leave alone).
    PM I{i} (from 1) listens on C{BLOCK.(10+i)}; the address block C{"127.A.B"} is random
    unless given, so concurrent fleets do not collide.
    The fleet's state goes in a new C{fleet-XXXXXXXXXX} directory (C{dir}) under
    C{base_dir} (default L{ROOT}), which the C{libvirt-qemu} user must be able to traverse:
    disk images for guests can go in C{dir} too, and are removed with it.
    """

    def __init__(
        self,
        n: int,
        base_dir: str | os.PathLike[str] | None = None,
        block: str | None = None,
        netns: bool = False,
        own_kvm: bool = False,
    ):
        if n < 1 or n > 200:
            raise ValueError(f"a fleet has 1 to 200 PMs, not {n}")
        self.n = n
        self.netns = netns
        self.own_kvm = own_kvm
        self.root = Path(base_dir) if base_dir is not None else ROOT
        self.block = block
        self.dir: Path | None = None
        self.pms: list[LibvirtdPM] = []
        self._stopped = False

    @property
    def uris(self) -> list[str]:
        return [pm.uri for pm in self.pms]

    def _addresses(self, block: str) -> list[str]:
        return [f"{block}.{10 + i}" for i in range(1, self.n + 1)]

    def _choose_block(self) -> str:
        if self.block is not None:
            busy = [a for a in self._addresses(self.block) if _address_in_use(a)]
            if busy:
                raise RuntimeError(f"something already listens on {busy[0]}:{LIBVIRTD_PORT}")
            return self.block
        for _ in range(20):
            # Not the random module's shared generator: a test may have seeded it, and then
            # concurrent runs would pick the same block.
            block = f"127.{_random.randint(2, 250)}.{_random.randint(0, 255)}"
            if not any(_address_in_use(a) for a in self._addresses(block)):
                return block
        raise RuntimeError("no free loopback address block for a libvirtd fleet")

    def start(self) -> LibvirtdFleet:
        """
        Start every PM (in parallel) and block until all answer. On failure, clean up and
        raise.
        """
        if self.dir is not None:
            raise RuntimeError("this fleet was already started")
        self.dir = new_fleet_dir(self.root)
        atexit.register(self.stop)
        try:
            self.block = self._choose_block()
            for i, address in enumerate(self._addresses(self.block), 1):
                hostname = f"pm{i}.{self.dir.name}.vorchd.test"
                self.pms.append(
                    LibvirtdPM(i, address, self.dir / f"pm{i}", hostname, self.netns, self.own_kvm)
                )
            for pm in self.pms:
                pm.launch()
            for pm in self.pms:
                pm.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """
        Stop every PM (see L{LibvirtdPM.stop}) and remove the fleet's directory. Idempotent.
        """
        if self._stopped or self.dir is None:
            return
        self._stopped = True
        errors = []
        for pm in self.pms:
            try:
                pm.stop()
            except Exception as e:  # keep going: the other PMs must go too
                errors.append(e)
        try:
            _kill_all_mounting(f"/{self.dir.name}/")
        except Exception as e:
            errors.append(e)
        shutil.rmtree(self.dir, ignore_errors=True)
        atexit.unregister(self.stop)
        if errors:
            raise errors[0]

    def __enter__(self) -> LibvirtdFleet:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
