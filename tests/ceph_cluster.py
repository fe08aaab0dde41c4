"""
A throwaway one-node Ceph cluster for tests (a monitor and one memstore OSD), everything
under a state directory of its own, on a free port: nothing goes to /etc/ceph, and several
can run side by side. See ../shared/ceph-notes.md for what was measured.

    cluster = CephCluster(directory).start()   # about 10 s; HEALTH_OK, pool "rbd" ready
    cluster.monitor, cluster.key, cluster.pool
    cluster.rbd("ls")                          # the rbd CLI against it
    cluster.stop()
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from tests.harness import free_port

BINARIES = ("ceph-mon", "ceph-osd", "ceph-authtool", "monmaptool", "ceph", "rbd")


def ceph_unavailable() -> str | None:
    """
    Why a Ceph cluster cannot be started here, or None.
    """
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"Ceph is not installed (no {', '.join(missing)}): ./install.sh ceph"
    if os.geteuid() != 0:
        return "a Ceph cluster for tests needs root"
    return None


class CephCluster:
    """
    A monitor and one OSD under C{directory}, the pool C{pool} made and initialised for RBD.
    """

    pool = "rbd"
    user = "admin"

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.port = free_port()
        self.monitor = f"127.0.0.1:{self.port}"
        self.conf = self.dir / "ceph.conf"
        self.keyring = self.dir / "ceph.client.admin.keyring"
        self.client_conf = self.dir / "qemu-client.conf"
        self.procs: list[subprocess.Popen] = []
        self.key = ""

    def run(self, *args: str, timeout: float = 60, check: bool = True, **kw):
        done = subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout, cwd=self.dir, **kw
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.returncode} {done.stderr.strip()}")
        return done

    def ceph(self, *args: str, **kw):
        return self.run("ceph", "--conf", str(self.conf), *args, **kw)

    def rbd(self, *args: str, **kw):
        return self.run("rbd", "--conf", str(self.conf), "--pool", self.pool, *args, **kw)

    def start(self) -> CephCluster:
        self.dir.mkdir(parents=True, exist_ok=True)
        fsid = str(uuid.uuid4())
        d = self.dir
        self.conf.write_text(
            f"""[global]
fsid = {fsid}
mon host = {self.monitor}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd objectstore = memstore
memstore device bytes = 2147483648
osd mon shutdown timeout = 2
client mount timeout = 20
keyring = {self.keyring}
run dir = {d}/run
log file = {d}/log/$name.log
admin socket = {d}/run/$name.asok
mon data = {d}/mon/$cluster-$id
osd data = {d}/osd/$cluster-$id
mon osd full ratio = .99
mon osd nearfull ratio = .98
osd pool default pg autoscale mode = off

[osd]
keyring = {d}/osd/$cluster-$id/keyring
"""
        )
        for sub in ("run", "log", "mon", "osd/ceph-0"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        mon_keyring = d / "mon.keyring"
        self.run(
            "ceph-authtool",
            "--create-keyring",
            str(mon_keyring),
            "--gen-key",
            "-n",
            "mon.",
            "--cap",
            "mon",
            "allow *",
        )
        self.run(
            "ceph-authtool",
            "--create-keyring",
            str(self.keyring),
            "--gen-key",
            "-n",
            "client.admin",
            "--cap",
            "mon",
            "allow *",
            "--cap",
            "osd",
            "allow *",
            "--cap",
            "mgr",
            "allow *",
            "--cap",
            "mds",
            "allow *",
        )
        self.run("ceph-authtool", str(mon_keyring), "--import-keyring", str(self.keyring))
        monmap = d / "monmap"
        self.run("monmaptool", "--create", "--add", "a", self.monitor, "--fsid", fsid, str(monmap))
        self.run(
            "ceph-mon",
            "--conf",
            str(self.conf),
            "--mkfs",
            "-i",
            "a",
            "--monmap",
            str(monmap),
            "--keyring",
            str(mon_keyring),
        )
        self.procs.append(self._daemon("ceph-mon", "-i", "a"))
        self._until(
            lambda: (
                self.ceph("status", "--connect-timeout", "5", check=False, timeout=15).returncode
                == 0
            ),
            "the monitor answers",
        )
        osd_uuid, osd_keyring = str(uuid.uuid4()), str(d / "osd" / "ceph-0" / "keyring")
        self.run("ceph-authtool", "--create-keyring", osd_keyring, "--gen-key", "-n", "osd.0")
        osd_id = self.ceph("osd", "new", osd_uuid).stdout.strip()
        assert osd_id == "0", osd_id
        self.ceph(
            "auth", "add", "osd.0", "osd", "allow *", "mon", "allow profile osd", "-i", osd_keyring
        )
        self.run(
            "ceph-osd",
            "--conf",
            str(self.conf),
            "-i",
            "0",
            "--mkfs",
            "--osd-uuid",
            osd_uuid,
            "--keyring",
            osd_keyring,
        )
        self.procs.append(self._daemon("ceph-osd", "-i", "0"))
        self._until(lambda: " 1 up" in self.ceph("osd", "stat").stdout, "the OSD up")
        self.ceph("osd", "pool", "create", self.pool, "8")
        self.rbd("pool", "init", timeout=120)
        text = self.keyring.read_text()
        self.key = re.search(r"key = (\S+)", text)[1]
        # What QEMU is given with each disk: bounded waits if the cluster goes away.
        self.client_conf.write_text(
            "[global]\nrados osd op timeout = 5\nrados mon op timeout = 5\n"
            "client mount timeout = 10\n"
        )
        os.chmod(self.dir, 0o755)
        os.chmod(self.client_conf, 0o644)
        return self

    def _daemon(self, exe: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [exe, "--conf", str(self.conf), "-f", *args],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "log" / f"{exe}.out", "ab"),
            cwd=self.dir,
        )

    def _until(self, condition, what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ceph at {self.dir}: not {what} within {seconds} s")
            time.sleep(0.2)

    def stop(self) -> None:
        # The OSD first, then the monitor (ceph-notes: a clean stop in about 2 s).
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs = []


_shared: CephCluster | None = None


def shared_ceph() -> CephCluster:
    """
    One cluster for the whole test run, started on first use (about 10 s) and stopped
    when the run ends.

    @raise SkipTest or fail (through L{tests.harness.require}): Ceph cannot run here.
    """
    global _shared
    if _shared is None:
        import atexit
        import tempfile

        from tests.harness import require

        require(ceph_unavailable())
        directory = Path(tempfile.mkdtemp(prefix="vorchd-ceph-"))
        cluster = CephCluster(directory)
        try:
            cluster.start()
        except Exception:
            cluster.stop()
            raise
        atexit.register(lambda: (cluster.stop(), shutil.rmtree(directory, True)))
        _shared = cluster
    return _shared


def ceph_pool(cluster: CephCluster):
    """
    The L{vorchd.volume_xml.CephPool} of C{cluster}'s pool, as the daemon is given it.
    """
    from vorchd.volume_xml import CephPool

    host, port = cluster.monitor.split(":")
    return CephPool(
        ((host, int(port)),), cluster.pool, cluster.user, cluster.key, str(cluster.client_conf)
    )
