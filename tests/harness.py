"""
Real parts for vorchd's tests: a real redis-server on a free port, fleets of libvirt
test-driver PMs of any size, and a whole daemon built from real settings and input files.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from twisted.internet import defer, reactor, task

from vorchd import bootimage, inventory, tap
from vorchd.config import load_settings
from vorchd.hypervisor.fake import FakeHypervisor
from vorchd.hypervisor.interface import IHypervisor
from vorchd.model import Resources

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """
    A TCP port nobody had bound a moment ago. Another process may take it before the
    caller binds it: only for a server that starts again on another port when its port
    is taken (L{RedisServer}). A daemon under test listens on port 0 instead and says
    which port it got (L{spawn_twistd}); a port where nothing must answer is
    L{refused_port}.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused_port(testcase) -> int:
    """
    A port on 127.0.0.1 that refuses every connection until C{testcase} ends: bound by
    this process but never listening, so no other process can take it meanwhile.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    testcase.addCleanup(s.close)
    return s.getsockname()[1]


REDIS_CONF = REPO / "etc" / "redis.conf"
"""The Redis settings install.sh starts vorchd's Redis with (AOF, its fsync)."""


class RedisServer:
    """
    A real redis-server in a temp dir, run with install.sh's own settings (L{REDIS_CONF}).
    """

    def __init__(self, port: int | None = None, directory: str | None = None):
        # A port chosen here may be taken by another process before redis-server binds
        # it: then another is chosen (a port given by the caller is kept).
        self._chosen = port is None
        self.port = port or free_port()
        self.dir = directory or tempfile.mkdtemp(prefix="vorchd-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (run ./install.sh test)")
        for _ in range(5 if self._chosen else 1):
            if self._start(exe):
                # Clients now name this port: a restart must come back on it.
                self._chosen = False
                return self
            if self._chosen:
                self.port = free_port()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _start(self, exe: str) -> bool:
        """
        Start redis-server on C{self.port}; whether it answers there (it, not another
        process that took the port first: the answer names its pid).
        """
        self.proc = subprocess.Popen(
            [
                exe,
                str(REDIS_CONF),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir,
                # No RDB snapshots: the AOF is what Redis loads, and snapshotting all the
                # tests' data at every stop would be slow.
                "--save",
                "",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        mine = f"process_id:{self.proc.pid}".encode()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # it could not bind the port, say
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"INFO server\r\n")
                    if mine in s.recv(65536):
                        # Ours; and done loading its AOF (PING answers LOADING till then).
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            return True
            except OSError:
                pass
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait(10)
        return False

    def ask(self, *command: str) -> str:
        """
        One command to it with redis-cli (blocking): its answer, stripped.
        """
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *command], capture_output=True, text=True
        ).stdout.strip()

    def keys(self, pattern: str) -> list[str]:
        """
        The keys matching C{pattern} now, read with redis-cli.
        """
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), "--scan", "--pattern", pattern],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return sorted(out.split())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """
        SIGKILL it: no shutdown, only what it already wrote to its files is left.
        """
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


_shared_redis: RedisServer | None = None


def shared_redis() -> RedisServer:
    """
    One Redis for the whole test run; tests keep apart by key prefix.
    """
    global _shared_redis
    if _shared_redis is None:
        _shared_redis = RedisServer().start()
        atexit.register(_shared_redis.stop)
        atexit.register(shutil.rmtree, _shared_redis.dir, True)
    return _shared_redis


# libvirt's test driver reports every pool as 100 GiB, whatever its XML says.
TEST_POOL_GIB = 100


def node_xml(cpus: int, ram_mib: int, with_pool: bool = True, networks=()) -> str:
    """
    A libvirt test-driver node with C{cpus} CPUs, C{ram_mib} MiB and, if C{with_pool},
    vorchd's pool already defined (else the daemon defines it), and the (active) libvirt
    networks named in C{networks}.
    """
    nets = "".join(
        # An address: the test driver makes its leases up from it.
        f"<network><name>{name}</name><uuid>{uuid.uuid4()}</uuid><bridge name='vt{i}'/>"
        "<ip address='192.0.2.1' prefix='24'/></network>"
        for i, name in enumerate(networks)
    )
    pool = ""
    if with_pool:
        pool = (
            "<pool type='dir'><name>vorchd</name>"
            f"<uuid>{uuid.uuid4()}</uuid>"
            "<target><path>/var/lib/vorchd/pool</path></target></pool>"
        )
    return (
        "<node><cpu><nodes>1</nodes><sockets>1</sockets>"
        f"<cores>{cpus}</cores><threads>1</threads><active>{cpus}</active>"
        "<mhz>2000</mhz><model>x86_64</model></cpu>"
        f"<memory>{ram_mib * 1024}</memory>{pool}{nets}</node>"
    )


def write_fleet(directory: Path, sizes) -> list[str]:
    """
    Write one node XML per C{(cpus, ram_mib)} or C{(cpus, ram_mib, with_pool)} and return
    their test:// URIs.
    """
    uris = []
    for i, size in enumerate(sizes, 1):
        path = directory / f"pm{i}.xml"
        path.write_text(node_xml(*size))
        uris.append(f"test://{path}")
    return uris


def fake_hosts(uris, sizes) -> dict[int, FakeHypervisor]:
    """
    In-memory PMs standing in for the test-driver PMs C{uris} of C{sizes} (as
    L{write_fleet}), by pmid (1..n in order), for L{Daemon}'s C{hosts}.
    """
    return {
        pmid: FakeHypervisor(uri, Resources(cpu=size[0], ram=size[1], disk=TEST_POOL_GIB))
        for pmid, (uri, size) in enumerate(zip(uris, sizes, strict=True), 1)
    }


FLAVORS = [
    {"tid": 1, "cpu": 1, "ram": 512, "disk": 1},
    {"tid": 2, "cpu": 2, "ram": 1024, "disk": 2},
    {"tid": 3, "cpu": 4, "ram": 2048, "disk": 3},
]


class Daemon:
    """
    A whole vorchd (its twistd service tree) in this process, built from an ini file and
    input files written to C{directory}, against real Redis and the given PM URIs.

    C{hosts} (pmid -> an L{IHypervisor}, such as L{fake_hosts}) stand in for the PMs of
    those ids: the daemon is given them before it starts, and keeps a PM's hypervisor it
    already has when it loads the inventory. PM ids are the pm_file's line numbers on a
    fresh key prefix.
    """

    def __init__(
        self,
        directory: Path,
        redis_url: str,
        prefix: str,
        pm_lines,
        flavors=FLAVORS,
        image_lines=None,
        libvirt: dict | None = None,
        allocation: dict | None = None,
        images: dict | None = None,
        hosts: dict[int, IHypervisor] | None = None,
        network: dict | None = None,
        volumes: dict | None = None,
    ):
        self.hosts = hosts or {}
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        image = self.dir / "images" / "hello.img"
        if not image.exists():
            image.parent.mkdir(exist_ok=True)
            bootimage.write_image(image)
        (self.dir / "pm_file").write_text("\n".join(pm_lines) + "\n")
        (self.dir / "image_file").write_text("\n".join(image_lines or [str(image)]) + "\n")
        (self.dir / "flavor_file").write_text(json.dumps({"types": flavors}))
        allocation = allocation or {}
        images = {"cache_dir": self.dir / "image-cache", **(images or {})}
        libvirt_settings = {
            "pool_path": self.dir / "pool",
            "connect_timeout": 5,
            "call_timeout": 30,
            **(libvirt or {}),
        }
        self.admin_user, self.admin_password = "admin", f"pw-{uuid.uuid4().hex}"
        passwd = self.dir / "admin.passwd"
        passwd.write_text(f"{self.admin_user}:{self.admin_password}\n")
        passwd.chmod(0o600)
        self.ini = self.dir / "vorchd.ini"
        self.ini.write_text(
            f"[server]\nport = 0\ninterface = 127.0.0.1\n"
            f"[redis]\nurl = {redis_url}\nkey_prefix = {prefix}\n"
            f"[inventory]\npm_file = pm_file\nimage_file = image_file\n"
            f"flavor_file = flavor_file\n"
            "[admin]\nport = 0\npasswd_file = admin.passwd\n"
            "[libvirt]\n"
            + "".join(f"{k} = {v}\n" for k, v in libvirt_settings.items())
            + "[images]\n"
            + "".join(f"{k} = {v}\n" for k, v in images.items())
            + "[allocation]\n"
            + "".join(f"{k} = {v}\n" for k, v in allocation.items())
            + "[network]\n"
            + "".join(f"{k} = {v}\n" for k, v in (network or {}).items())
            + "[volumes]\n"
            + "".join(f"{k} = {v}\n" for k, v in (volumes or {}).items())
        )
        self.service = None

    @property
    def fleet_service(self):
        return self.service.getServiceNamed("fleet")

    @property
    def fleet(self):
        return self.fleet_service.fleet

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.fleet_service.port.getHost().port}"

    @property
    def admin_port(self) -> int:
        return self.service.getServiceNamed("admin").port.getHost().port

    def launch(self) -> None:
        """
        Build the daemon's service tree from its files, as twistd would, and start it
        without waiting for anything.
        """
        settings = load_settings(str(self.ini), environ={})
        self.service = tap.build(
            settings,
            inventory.parse_pm_file(settings.pm_file),
            inventory.parse_image_file(settings.image_file),
            inventory.parse_flavor_file(settings.flavor_file),
            reactor,
        )
        hypervisors = self.service.getServiceNamed("hypervisors")
        for pmid, host in self.hosts.items():
            hypervisors.add(pmid, host)
        self.service.startService()

    async def start(self) -> Daemon:
        """
        L{launch} it, then wait until the inventory is loaded and both ports listen.
        """
        self.launch()
        await self.fleet_service.loaded
        # The listener comes up right after the inventory is loaded.
        admin = self.service.getServiceNamed("admin")
        while self.fleet_service.port is None or admin.port is None:
            await task.deferLater(reactor, 0.01, lambda: None)
        return self

    async def stop(self) -> None:
        if self.service is not None and self.service.running:
            await defer.maybeDeferred(self.service.stopService)


async def start_daemon(testcase, sizes, fake: bool = False, **options) -> Daemon:
    """
    A daemon in this process over test-driver PMs of C{sizes} (as L{write_fleet}), or
    in-memory ones if C{fake} (L{fake_hosts}), in a fresh directory, on the shared Redis
    under a key prefix of its own: started, and stopped when C{testcase} ends. C{options}
    go to L{Daemon}.
    """
    directory = tmpdir(testcase)
    uris = write_fleet(directory, sizes)
    if fake:
        options["hosts"] = fake_hosts(uris, sizes)
    daemon = Daemon(directory / "daemon", shared_redis().url, unique_prefix(), uris, **options)
    await daemon.start()
    testcase.addCleanup(daemon.stop)
    return daemon


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def tmpdir(testcase) -> Path:
    path = Path(tempfile.mkdtemp(prefix="vorchd-test-"))
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


def require_root_libvirtd() -> str | None:
    """
    Why qemu:///system cannot be used here, or None if it can.
    """
    if os.geteuid() != 0:
        return "needs root"
    try:
        import libvirt

        conn = libvirt.open("qemu:///system")
        conn.close()
    except Exception as e:  # libvirt not installed or libvirtd not running
        return f"qemu:///system unavailable: {e}"
    return None


def require(why: str | None) -> None:
    """
    Fail the test if a real part it needs is missing here (C{why} says which): every
    real part must run, so a machine without one fails loudly instead of passing with
    skips. For a local run that knowingly lacks one, C{VORCHD_ALLOW_MISSING=1} makes
    such a test skip instead.
    """
    if why is None:
        return
    if not os.environ.get("VORCHD_ALLOW_MISSING"):
        raise AssertionError(
            f"a real part is missing: {why} (set VORCHD_ALLOW_MISSING=1 to skip such tests)"
        )
    from twisted.trial.unittest import SkipTest

    raise SkipTest(why)


FOREGROUND = ("-n", "--pidfile=", "--logfile=-")


def twistd_command(
    ini: Path, port: int, twistd_options=FOREGROUND
) -> tuple[list[str], dict[str, str]]:
    """
    The argv and environment that run C{twistd vorchd} with the settings in C{ini} and
    the REST port C{port}; with C{twistd_options} (by default in the foreground,
    logging to stdout).
    """
    argv = [
        str(Path(sys.executable).parent / "twistd"),
        *twistd_options,
        "vorchd",
        "--config",
        str(ini),
        "--port",
        str(port),
    ]
    return argv, {**os.environ, "PYTHONPATH": str(REPO)}


def listening_port(log: Path, proc: subprocess.Popen | None = None, deadline: float = 60) -> int:
    """
    The port the daemon logging to C{log} (text or JSON lines) serves the seed API on, as
    it logs once it listens (given C{--port 0}, the system chose it): wait for that line,
    failing after C{deadline} seconds (a bound that only catches a hang) or if its
    process C{proc} exits first.
    """
    said = re.compile(r"the seed API on [^ ]*?:(\d+)")
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        text = log.read_text() if log.exists() else ""
        for line in text.replace("\x1e", "\n").splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("what") == "the seed API" and "port" in event:
                    return int(event["port"])
            elif found := said.search(line):
                return int(found.group(1))
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the daemon exited {proc.returncode}:\n{text}")
        time.sleep(0.05)
    raise AssertionError(f"the daemon never said where it listens (log: {log})")


def spawn_twistd(testcase, ini: Path, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """
    Start C{twistd vorchd} with the settings in C{ini} in the foreground, on a REST port
    the system chooses (C{--port 0}: nothing can take it first), logging to C{log} (a
    fresh file by default); return the process and its URL once it listens. It is killed
    when C{testcase} ends (woken first if it was stopped).
    """
    if log is None:
        log = tmpdir(testcase) / "twistd.log"
    argv, env = twistd_command(ini, 0, ("-n", "--pidfile=", f"--logfile={log}"))
    proc = subprocess.Popen(
        argv, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env
    )

    def kill():
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()

    testcase.addCleanup(kill)
    return proc, f"http://127.0.0.1:{listening_port(log, proc)}"


def get_json(url: str):
    """
    GET C{url} and its JSON answer (blocking: for a daemon in another process, or from
    a thread).
    """
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def wait_answering(url: str, proc: subprocess.Popen | None = None, deadline: float = 60):
    """
    Wait (blocking) until the daemon at C{url} serves its fleet with every PM reached:
    C{/v1/fleet} answers with its flavors, and no PM is down (the daemon listens at once,
    and discovers its PMs meanwhile). Fail if that does not happen within C{deadline}
    seconds, or if its process C{proc} exits first.
    """
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            output = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"the daemon exited {proc.returncode}: {output}")
        try:
            fleet = get_json(url + "/v1/fleet")
            # Its flavors too: the inventory is stored PMs first, then images and flavors.
            if fleet and fleet.get("types") and all(pm["state"] != "down" for pm in fleet["pms"]):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the daemon at {url} never served its fleet")


async def daemon_domains(daemon: Daemon, pmid: int) -> dict[str, dict]:
    """
    The domains PM C{pmid} really has, read through C{daemon}'s own libvirt connection
    (a test-driver PM's state lives in the connection that made it), or from the fake PM
    itself: by name, with their vorchd metadata and whether they run.
    """
    from twisted.internet.threads import deferToThread

    from vorchd.domain import parse_metadata

    host = daemon.fleet.hypervisors.host(pmid)

    def read():
        if isinstance(host, FakeHypervisor):
            with host.lock:
                domains = list(host.domains.items())
            return {name: {**d.metadata, "running": d.running} for name, d in domains}
        out = {}
        for dom in host.conn.listAllDomains(0):
            meta = parse_metadata(dom.XMLDesc(0))
            meta["running"] = dom.isActive() == 1
            out[dom.name()] = meta
        return out

    return await deferToThread(read)


async def snapshot(json) -> dict:
    """
    Every answer a grader could ask for, read with C{json(path)}: the listings, each PM's
    query and VM list, and each VM's query.
    """
    out = {p: await json(p) for p in ("/pm/list", "/vm/types", "/image/list")}
    for pmid in out["/pm/list"]["pmids"]:
        for call in ("/pm/query", "/pm/listvms"):
            out[f"{call}?pmid={pmid}"] = await json(f"{call}?pmid={pmid}")
        for vmid in out[f"/pm/listvms?pmid={pmid}"]["vmids"]:
            out[f"/vm/query?vmid={vmid}"] = await json(f"/vm/query?vmid={vmid}")
    return out
