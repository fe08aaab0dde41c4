"""
A one-node Ceph cluster on this machine (a monitor and one OSD) for trying the C{rbd}
volume backend, and for the tests: everything under a state directory of its own, with its
own C{ceph.conf}, so nothing goes to /etc/ceph and several clusters can run side by side on
other ports. /work/shared/ceph-notes.md has what was measured.

    cluster = CephCluster(directory).start()   # about 10 s; the pool made, ready for RBD
    cluster.monitor, cluster.key, cluster.pool, cluster.keyring
    cluster.rbd("ls")                          # the rbd CLI against it
    cluster.stop()                             # the OSD, then the monitor (state kept)

Each daemon's pid is kept in C{run/NAME.pid} under the directory, so that another process
(a second C{./install.sh ceph}, or C{./install.sh ceph stop}) finds a cluster it did not
start. L{CephCluster.start} of a directory that holds a cluster already starts its daemons
again over the same state (the same port, keys and data), or leaves them be if they run.

C{python -m vorchd.cephlocal_cli up|down|status --dir DIR} is that for install.sh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["BINARIES", "CephCluster", "ceph_unavailable"]

#: The Ceph programs a cluster needs (Debian's ceph-mon, ceph-osd and ceph-common).
BINARIES = ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph-authtool", "monmaptool", "ceph", "rbd")

GIB = 1 << 30

#: What QEMU is given with each disk: bounded waits if the cluster goes away.
CLIENT_CONF = (
    "[global]\nrados osd op timeout = 5\nrados mon op timeout = 5\nclient mount timeout = 10\n"
)

#: The daemons, in the order they start (and stop in reverse).
DAEMONS = (
    ("ceph-mon", "mon.a", ("-i", "a")),
    # The manager: without it the cluster reports no capacity (what a create is checked
    # against) and RBD works all the same.
    ("ceph-mgr", "mgr.x", ("-i", "x")),
    ("ceph-osd", "osd.0", ("-i", "0")),
)


MGR_CAPS = ("mon", "allow profile mgr", "osd", "allow *", "mds", "allow *")


def ceph_unavailable() -> str | None:
    """
    Why a Ceph cluster cannot be started here, or None.
    """
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"Ceph is not installed (no {', '.join(missing)}): ./install.sh ceph"
    if os.geteuid() != 0:
        return "a Ceph cluster needs root"
    return None


def free_port(preferred: int | None = None) -> int:
    """
    C{preferred} if nothing listens on it on 127.0.0.1 and it can be bound, else a port
    nobody had bound a moment ago.
    """
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")


def port_taken(port: int) -> bool:
    """
    Whether something accepts connections on 127.0.0.1:C{port}.
    """
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int, exe: str, conf: Path) -> bool:
    """
    Whether process C{pid} runs C{exe} with the conf C{conf} (not another cluster's, nor
    another program that got the pid since) and is not a zombie (daemons are reaped late
    here: a zombie still answers C{kill -0}).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return (
        state not in ("Z", "X")
        and cmdline[0].endswith(exe.encode())
        and str(conf).encode() in cmdline
    )


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not ours: init reaps it


class CephCluster:
    """
    A monitor and one OSD under C{directory}, the pool C{pool} made and initialised for
    RBD, and the client C{user}'s key in C{keyring}.

    @param port: the monitor's port when the cluster is made (a free one if None or
        taken); a cluster made before keeps its own.
    @param user: C{admin}, or a client of its own allowed RBD on the pool alone.
    @param objectstore: C{memstore} (in RAM, about twice what is written; quickest) or
        C{bluestore} (on a sparse file of C{store_bytes} in the directory).
    """

    def __init__(
        self,
        directory: Path | str,
        port: int | None = None,
        pool: str = "rbd",
        user: str = "admin",
        objectstore: str = "memstore",
        store_bytes: int = 2 * GIB,
    ):
        self.dir = Path(directory).absolute()
        self.conf = self.dir / "ceph.conf"
        self.admin_keyring = self.dir / "ceph.client.admin.keyring"
        self.keyring = self.dir / f"ceph.client.{user}.keyring"
        self.client_conf = self.dir / "qemu-client.conf"
        self.pool, self.user = pool, user
        self.objectstore, self.store_bytes = objectstore, store_bytes
        self.port = self._made_port() or free_port(port)
        self.monitor = f"127.0.0.1:{self.port}"
        self.key = self._read_key()

    # -- what is there -----------------------------------------------------------------------

    def made(self) -> bool:
        """
        Whether the directory holds a cluster made before (its monitor's store at least).
        """
        return self.conf.exists() and (self.dir / "mon" / "ceph-a" / "store.db").exists()

    def _made_port(self) -> int | None:
        try:
            found = re.search(r"^mon host = \S+:(\d+)$", self.conf.read_text(), re.M)
        except OSError:
            return None
        return int(found[1]) if found else None

    def _read_key(self) -> str:
        try:
            found = re.search(r"key = (\S+)", self.keyring.read_text())
        except OSError:
            return ""
        return found[1] if found else ""

    def pidfile(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.pid"

    def pids(self) -> dict[str, int]:
        """
        The daemons of this cluster that run, by name (C{mon.a}, C{osd.0}): their pid
        files name a live process of theirs.
        """
        alive = {}
        for exe, name, _args in DAEMONS:
            try:
                pid = int(self.pidfile(name).read_text().strip())
            except (OSError, ValueError):
                continue
            if _alive(pid, exe, self.conf):
                alive[name] = pid
        return alive

    def running(self) -> bool:
        """
        Whether both daemons run and the monitor answers.
        """
        return len(self.pids()) == len(DAEMONS) and self.answers()

    def answers(self) -> bool:
        done = self.ceph("status", "--connect-timeout", "5", check=False, timeout=15)
        return done.returncode == 0

    # -- the CLIs ------------------------------------------------------------------------------

    def run(self, *args: str, timeout: float = 60, check: bool = True, **kw):
        done = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            **kw,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def ceph(self, *args: str, **kw):
        """
        The ceph CLI against this cluster, as client.admin.
        """
        return self.run(
            "ceph", "--conf", str(self.conf), "--keyring", str(self.admin_keyring), *args, **kw
        )

    def rbd(self, *args: str, **kw):
        """
        The rbd CLI against this cluster's pool, as the client user with its keyring.
        """
        return self.run(
            "rbd",
            "--conf",
            str(self.conf),
            "--id",
            self.user,
            "--keyring",
            str(self.keyring),
            "--pool",
            self.pool,
            *args,
            **kw,
        )

    # -- start and stop ------------------------------------------------------------------------

    def start(self) -> CephCluster:
        """
        Make the cluster (if the directory holds none) or start its daemons again (those
        that do not run), and wait until the pool can be used.

        @raise RuntimeError: a step failed or timed out (what was started keeps running:
            L{stop} stops it).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.made():
            self._restart()
        else:
            self._make()
        # The manager's first report of the OSD's room lags the pool's readiness.
        self._until(self._capacity_known, "reporting its capacity (ceph df)")
        self.client_conf.write_text(CLIENT_CONF)
        # QEMU runs as libvirt-qemu: the client conf must be readable by it (keys stay 0600).
        os.chmod(self.dir, 0o755)
        os.chmod(self.client_conf, 0o644)
        for keyring in {self.keyring, self.admin_keyring}:
            os.chmod(keyring, 0o600)
        self.key = self._read_key()
        return self

    def _restart(self) -> None:
        if port_taken(self.port) and "mon.a" not in self.pids():
            raise RuntimeError(
                f"Ceph at {self.dir}: its monitor's port {self.port} is taken by another program"
            )
        for exe, name, args in DAEMONS:
            if name not in self.pids():
                self._daemon(exe, name, *args)
            if name == "mon.a":
                self._until(self.answers, "the monitor answering")
        self._until(self._osd_up, "the OSD up")
        # A write to the pool answers once its placement groups are active again.
        self._until(
            lambda: self.rbd("ls", check=False, timeout=30).returncode == 0, "the pool usable", 90
        )

    def _osd_up(self) -> bool:
        return " 1 up" in self.ceph("osd", "stat", check=False, timeout=30).stdout

    def _conf_text(self, fsid: str) -> str:
        d = self.dir
        if self.objectstore == "bluestore":
            store = (
                f"osd objectstore = bluestore\nbluestore block path = {d}/osd-0.block\n"
                f"bluestore block create = true\nbluestore block size = {self.store_bytes}\n"
                "osd memory target = 939524096\nbluestore cache autotune = false\n"
                "bluestore cache size = 134217728\n"
            )
        else:
            store = f"osd objectstore = memstore\nmemstore device bytes = {self.store_bytes}\n"
        return f"""[global]
fsid = {fsid}
mon host = {self.monitor}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
{store}osd mon shutdown timeout = 2
client mount timeout = 20
keyring = {self.admin_keyring}
run dir = {d}/run
log file = {d}/log/$name.log
admin socket = {d}/run/$name.asok
mon data = {d}/mon/$cluster-$id
osd data = {d}/osd/$cluster-$id
mgr data = {d}/mgr/$cluster-$id
mon osd full ratio = .99
mon osd nearfull ratio = .98
mon osd backfillfull ratio = .985
mon data avail warn = 5
osd pool default pg autoscale mode = off

[osd]
keyring = {d}/osd/$cluster-$id/keyring

[mgr]
keyring = {d}/mgr/$cluster-$id/keyring
"""

    def _make(self) -> None:
        d, fsid = self.dir, str(uuid.uuid4())
        if port_taken(self.port):
            self.port = free_port()
            self.monitor = f"127.0.0.1:{self.port}"
        for sub in ("run", "log", "mon", "mgr/ceph-x", "osd/ceph-0"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        # A half-made cluster of an earlier run that failed: made again from scratch.
        shutil.rmtree(d / "mon" / "ceph-a", ignore_errors=True)
        (d / "osd-0.block").unlink(missing_ok=True)
        self.conf.write_text(self._conf_text(fsid))
        mon_keyring = d / "mon.keyring"
        authtool = ("ceph-authtool", "--create-keyring")
        self.run(*authtool, str(mon_keyring), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *")
        caps = [a for c in ("mon", "osd", "mgr", "mds") for a in ("--cap", c, "allow *")]
        self.run(*authtool, str(self.admin_keyring), "--gen-key", "-n", "client.admin", *caps)
        self.run("ceph-authtool", str(mon_keyring), "--import-keyring", str(self.admin_keyring))
        monmap = d / "monmap"
        self.run("monmaptool", "--create", "--add", "a", self.monitor, "--fsid", fsid, str(monmap))
        mkfs = ("--conf", str(self.conf), "--mkfs")
        self.run(
            "ceph-mon", *mkfs, "-i", "a", "--monmap", str(monmap), "--keyring", str(mon_keyring)
        )
        self._daemon("ceph-mon", "mon.a", "-i", "a")
        self._until(self.answers, "the monitor answering")
        mgr_keyring = str(d / "mgr" / "ceph-x" / "keyring")
        self.ceph("auth", "get-or-create", "mgr.x", *MGR_CAPS, "-o", mgr_keyring)
        self._daemon("ceph-mgr", "mgr.x", "-i", "x")
        osd_uuid, osd_keyring = str(uuid.uuid4()), str(d / "osd" / "ceph-0" / "keyring")
        self.run(*authtool, osd_keyring, "--gen-key", "-n", "osd.0")
        osd_id = self.ceph("osd", "new", osd_uuid).stdout.strip()
        if osd_id != "0":
            raise RuntimeError(f"Ceph at {d}: the new OSD got id {osd_id!r}, not 0")
        self.ceph(
            "auth", "add", "osd.0", "osd", "allow *", "mon", "allow profile osd", "-i", osd_keyring
        )
        self.run("ceph-osd", *mkfs, "-i", "0", "--osd-uuid", osd_uuid, "--keyring", osd_keyring)
        self._daemon("ceph-osd", "osd.0", "-i", "0")
        self._until(self._osd_up, "the OSD up")
        self.ceph("osd", "pool", "create", self.pool, "8")
        if self.user != "admin":
            self.ceph(
                "auth",
                "get-or-create",
                f"client.{self.user}",
                "mon",
                "profile rbd",
                "osd",
                f"profile rbd pool={self.pool}",
                "mgr",
                f"profile rbd pool={self.pool}",
                "-o",
                str(self.keyring),
            )
        admin = ("--conf", str(self.conf), "--keyring", str(self.admin_keyring))
        self.run("rbd", *admin, "--pool", self.pool, "pool", "init", timeout=120)

    def _daemon(self, exe: str, name: str, *args: str) -> None:
        with open(self.dir / "log" / f"{exe}.out", "ab") as out:
            proc = subprocess.Popen(
                [exe, "--conf", str(self.conf), "-f", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=out,
                cwd=self.dir,
                # Its own session: it outlives the command that started it (install.sh).
                start_new_session=True,
            )
        self.pidfile(name).write_text(f"{proc.pid}\n")

    def _until(self, condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ceph at {self.dir}: not {what} within {seconds} s")
            time.sleep(0.2)

    def stop(self, seconds: float = 10) -> list[str]:
        """
        Stop the daemons that run (the OSD first, then the monitor: a clean stop in about
        2 s; killed if still there after C{seconds}). Their state is kept.

        @return: the names of the daemons stopped.
        """
        stopped = []
        for exe, name, _args in reversed(DAEMONS):
            pid = self.pids().get(name)
            if pid is None:
                continue
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if _alive(pid, exe, self.conf):
                    os.kill(pid, sig)
                deadline = time.monotonic() + seconds
                while _alive(pid, exe, self.conf) and time.monotonic() < deadline:
                    _reap(pid)
                    time.sleep(0.1)
            _reap(pid)
            if _alive(pid, exe, self.conf):
                raise RuntimeError(f"Ceph at {self.dir}: {name} (pid {pid}) outlived SIGKILL")
            self.pidfile(name).unlink(missing_ok=True)
            stopped.append(name)
        return stopped

    def room(self) -> tuple[int, int]:
        """
        The cluster's raw capacity and what is available, in bytes (C{ceph df}; 0 until
        the manager has reported them).
        """
        stats = json.loads(self.ceph("df", "--format", "json", timeout=30).stdout)["stats"]
        return int(stats["total_bytes"]), int(stats["total_avail_bytes"])

    def _capacity_known(self) -> bool:
        try:
            return self.room()[0] > 0
        except (RuntimeError, ValueError, KeyError):
            return False
