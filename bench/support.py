"""
The real parts bench/run.py drives: a redis-server, fleets of libvirt test-driver PMs,
C{twistd vorchd} processes started the way install.sh starts them, wrk runs, and the
table and JSON the figures go to.

Nothing here asserts: every function measures, or starts and stops what it measures.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.harness import RedisServer, free_port, node_xml  # noqa: E402
from vorchd.bootimage import write_image  # noqa: E402

PYTHON = sys.executable
TWISTD = str(Path(sys.executable).parent / "twistd")
WRK_SCRIPT = BENCH / "wrk.lua"

# libvirt's test driver reports every pool as 100 GiB, whatever its XML says, and a
# flavor's disk must be a positive integer. The pool also holds the image's base copy,
# so 100 overlays of 1 GiB do not fit in it. At commit 9bc158b vorchd's accounting still
# allowed the 100th: it failed in libvirt, and with first-fit every later create then
# failed on the first PMs in turn. So each PM gets 99 CPUs, and CPU (1 vCPU a VM) is
# what limits a PM to 99 VMs, on any version. RAM is never the limit.
PM_DISK_GIB = 100
PM_CPUS = 99
PM_RAM_MIB = 1024 * 1024
FLAVORS = [{"tid": 1, "cpu": 1, "ram": 512, "disk": 1}]
VMS_PER_PM = PM_CPUS // FLAVORS[0]["cpu"]


def log(message: str) -> None:
    """
    Progress, to stderr, so that stdout carries the table alone.
    """
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Processes this harness started, ended at exit by their own pids.

_started: dict[int, str] = {}


def remember(pid: int, what: str) -> None:
    _started[pid] = what


def forget(pid: int) -> None:
    _started.pop(pid, None)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except OSError:
        return False
    return False


def end_process(pid: int, deadline: float = 30) -> None:
    """
    SIGTERM C{pid}, wait for it to go, SIGKILL it after C{deadline} seconds.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        forget(pid)
        return
    end = time.monotonic() + deadline
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    if _alive(pid):
        log(f"pid {pid} ignored SIGTERM for {deadline:.0f} s: SIGKILL")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    forget(pid)


def end_all() -> None:
    for pid, what in list(_started.items()):
        log(f"stopping {what} (pid {pid})")
        end_process(pid, deadline=10)


# ---------------------------------------------------------------------------------------
# Tools


def ensure_wrk() -> str:
    """
    wrk's path, installed with apt-get if missing (after an apt-get update if the first
    install fails).
    """
    exe = shutil.which("wrk")
    if exe:
        return exe
    log("wrk is missing: apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)
    exe = shutil.which("wrk")
    if not exe:
        raise RuntimeError("wrk could not be installed")
    return exe


def ensure_py_spy() -> str:
    """
    py-spy's path (in the venv), pip-installed there if missing.
    """
    exe = Path(PYTHON).parent / "py-spy"
    if not exe.exists():
        log("py-spy is missing: pip install py-spy into the venv")
        subprocess.run(
            [PYTHON, "-m", "pip", "install", "-q", "py-spy"], check=True, capture_output=True
        )
    return str(exe)


# ---------------------------------------------------------------------------------------
# Fleets and daemons


def write_pms(directory: Path, n: int) -> list[str]:
    """
    C{n} test-driver node XMLs in C{directory}, and their test:// URIs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    xml = node_xml(PM_CPUS, PM_RAM_MIB)
    uris = []
    for i in range(1, n + 1):
        path = directory / f"pm{i}.xml"
        # Each PM's pool gets a uuid of its own, as in tests.harness.write_fleet.
        path.write_text(re.sub(r"<uuid>[^<]*</uuid>", f"<uuid>{uuid.uuid4()}</uuid>", xml))
        uris.append(f"test://{path}")
    return uris


def unique_prefix() -> str:
    return f"b{uuid.uuid4().hex[:10]}"


def boot_image(directory: Path) -> Path:
    path = directory / "hello.img"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        write_image(path)
    return path


class Daemon:
    """
    One C{twistd vorchd} process, started as install.sh starts it (twistd forks into the
    background with a pid file and a log file; cwd the repository), with an ini of its
    own in C{directory}.
    """

    def __init__(
        self,
        directory: Path,
        redis_url: str,
        prefix: str,
        pm_lines: Sequence[str],
        image: Path,
        flavors: Sequence[dict] = FLAVORS,
        port: int | None = None,
        libvirt: dict | None = None,
        allocation: dict | None = None,
    ):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.pm_count = len(pm_lines)
        self.pm_file = self.dir / "pm_file"
        self.image_file = self.dir / "image_file"
        self.flavor_file = self.dir / "flavor_file"
        self.pm_file.write_text("\n".join(pm_lines) + "\n")
        self.image_file.write_text(f"{image}\n")
        self.flavor_file.write_text(json.dumps({"types": list(flavors)}))
        self.pidfile = self.dir / "twistd.pid"
        self.logfile = self.dir / "vorchd.log"
        self.ini = self.dir / "vorchd.ini"
        libvirt_settings = {"pool_path": self.dir / "pool", **(libvirt or {})}
        self.ini.write_text(
            f"[server]\nport = {self.port}\ninterface = 127.0.0.1\n"
            f"[redis]\nurl = {redis_url}\nkey_prefix = {prefix}\n"
            "[admin]\nport = off\n"
            "[libvirt]\n"
            + "".join(f"{k} = {v}\n" for k, v in libvirt_settings.items())
            + f"[images]\ncache_dir = {self.dir / 'image-cache'}\n"
            + "[allocation]\n"
            + "".join(f"{k} = {v}\n" for k, v in (allocation or {}).items())
        )
        self.pid: int | None = None
        self.started_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            TWISTD,
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.logfile),
            "vorchd",
            "--config",
            str(self.ini),
            "--port",
            str(self.port),
            "--pm-file",
            str(self.pm_file),
            "--image-file",
            str(self.image_file),
            "--flavor-file",
            str(self.flavor_file),
        ]

    def start(self) -> float:
        """
        Start it; return the monotonic time just before twistd was run.
        """
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.started_at = time.monotonic()
        out = subprocess.run(
            self.command(),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"twistd vorchd exited {out.returncode}: {(out.stdout + out.stderr)[-2000:]}"
            )
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                self.pid = int(self.pidfile.read_text().strip())
                break
            except (OSError, ValueError):
                time.sleep(0.02)
        else:
            raise RuntimeError(f"twistd wrote no pid file {self.pidfile}")
        remember(self.pid, f"twistd vorchd on port {self.port}")
        return self.started_at

    def alive(self) -> bool:
        return self.pid is not None and _alive(self.pid)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_discovered(self, deadline: float = 600, poll: float = 0.05) -> float:
        """
        Wait until the last PM of the pm_file answers /pm/query with a capacity (the
        REST listener comes up once the inventory is loaded); return the seconds since
        L{start}.
        """
        end = time.monotonic() + deadline
        client = Http(self.url, timeout=10)
        path = f"/pm/query?pmid={self.pm_count}"
        while time.monotonic() < end:
            if not self.alive():
                raise RuntimeError(f"the daemon exited; its log ends:\n{self.log_tail()}")
            try:
                answer = client.get_json(path)
            except (OSError, http.client.HTTPException, ValueError):
                answer = None
            if isinstance(answer, dict) and answer.get("capacity", {}).get("cpu", 0) > 0:
                client.close()
                return time.monotonic() - self.started_at
            time.sleep(poll)
        client.close()
        raise RuntimeError(f"PM {self.pm_count} not discovered in {deadline:.0f} s")

    def log_count(self, *words: str) -> int:
        """
        How many lines of its log (rotated parts included) hold every one of C{words}.
        """
        n = 0
        for path in self.dir.glob("vorchd.log*"):
            with open(path, errors="replace") as f:
                n += sum(1 for line in f if all(w in line for w in words))
        return n

    def memory(self) -> dict[str, float]:
        """
        VmRSS and VmHWM (peak RSS) of the daemon, in MB (10^6 bytes).
        """
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024 / 1e6
        return out

    def stop(self) -> None:
        if self.pid is not None:
            end_process(self.pid)
            self.pid = None


class Redis:
    """
    tests.harness's RedisServer (AOF on, as vorchd runs it) on a free loopback port, in
    a directory of ours; remembered so that it is stopped at exit.
    """

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.server = RedisServer(directory=str(directory))

    def start(self) -> Redis:
        self.server.start()
        remember(self.server.proc.pid, "redis-server")
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        if self.server.proc is not None:
            forget(self.server.proc.pid)
        self.server.stop()


class Ceiling:
    """
    bench/ceiling.py, the bare Klein app, in a process of its own.
    """

    def __init__(self):
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Ceiling:
        self.proc = subprocess.Popen(
            [PYTHON, str(BENCH / "ceiling.py"), str(self.port)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        remember(self.proc.pid, "the Klein ceiling")
        client = Http(self.url)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                client.get("/")
                client.close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("bench/ceiling.py did not answer")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc.pid)
            self.proc.wait(10)
            self.proc = None


# ---------------------------------------------------------------------------------------
# HTTP from this process (set-up and checks, never the timed load)


class Http:
    """
    One keep-alive HTTP/1.1 connection to a daemon, reconnected when it drops.
    """

    def __init__(self, url: str, timeout: float = 30):
        hostport = url.split("://", 1)[1].rstrip("/")
        self.host, _, port = hostport.partition(":")
        self.port = int(port or 80)
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> bytes:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("GET", path)
                return self.conn.getresponse().read()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get_json(self, path: str):
        return json.loads(self.get(path))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def get_many(url: str, paths: Sequence[str], workers: int = 4) -> list:
    """
    The JSON answers to C{paths}, in order, over C{workers} keep-alive connections.
    """
    local = threading.local()
    clients: list[Http] = []

    def one(path: str):
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = Http(url)
            clients.append(client)
        return client.get_json(path)

    with ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(one, paths))
    for client in clients:
        client.close()
    return answers


# ---------------------------------------------------------------------------------------
# wrk


@dataclass
class WrkResult:
    answered: int
    ok: int
    refused: int
    elapsed: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict
    raw: dict = field(repr=False)

    @property
    def rate(self) -> float:
        """
        Answers per second, from the first request to the last answer.
        """
        return self.answered / self.elapsed if self.elapsed else 0.0

    @property
    def ok_rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def as_dict(self) -> dict:
        return {**self.raw, "rate": self.rate, "ok_rate": self.ok_rate}


def wrk(
    url: str,
    *,
    threads: int,
    connections: int,
    seconds: float,
    mode: str = "paths",
    paths: Iterable[str] | None = None,
    limit: int = 0,
    options: dict | None = None,
    timeout: float = 30,
    profile: tuple[int, Path] | None = None,
) -> WrkResult:
    """
    Run wrk with bench/wrk.lua against C{url} for at most C{seconds} and, if C{limit},
    at most about C{limit} answers (it is interrupted as soon as every thread has its
    share). C{profile}, a (pid, svg path), records that pid with py-spy meanwhile.
    """
    exe = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="vorchd-bench-wrk-"))
    try:
        markers = work / "markers"
        markers.mkdir()
        args = {"mode": mode, "threads": threads, "limit": limit, "markers": markers}
        if paths is not None:
            (work / "paths").write_text("\n".join(paths) + "\n")
            args["paths"] = work / "paths"
        args.update(options or {})
        command = [
            exe,
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, int(seconds))}s",
            "--timeout",
            f"{int(timeout)}s",
            "-s",
            str(WRK_SCRIPT),
            url,
            "--",
            *(f"{k}={v}" for k, v in args.items()),
        ]
        spy = None
        if profile is not None:
            pid, svg = profile
            spy = subprocess.Popen(
                [
                    ensure_py_spy(),
                    "record",
                    "--pid",
                    str(pid),
                    "--output",
                    str(svg),
                    "--duration",
                    str(max(1, int(seconds))),
                    "--rate",
                    "200",
                    "--nonblocking",
                    # Collapsed stacks (one line per stack with its count): readable as
                    # text, and the input of flamegraph.pl and speedscope.
                    "--format",
                    "raw" if str(svg).endswith(".txt") else "flamegraph",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            remember(spy.pid, "py-spy")
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        remember(proc.pid, "wrk")
        end = time.monotonic() + seconds + timeout + 30
        interrupted = False
        while proc.poll() is None:
            if not interrupted and limit and len(list(markers.iterdir())) >= threads:
                proc.send_signal(signal.SIGINT)
                interrupted = True
            if time.monotonic() > end:
                proc.kill()
                break
            time.sleep(0.02)
        stdout, stderr = proc.communicate()
        forget(proc.pid)
        if spy is not None:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
            try:
                _, spy_err = spy.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                _, spy_err = spy.communicate()
            forget(spy.pid)
            if spy.returncode not in (0, -signal.SIGINT):
                log(f"py-spy exited {spy.returncode}: {spy_err.strip()[-500:]}")
            else:
                log(f"flamegraph: {profile[1]}")
        line = next((x for x in stdout.splitlines() if x.startswith("VBENCH ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no result ({proc.returncode}): {stdout}\n{stderr}")
        raw = json.loads(line[len("VBENCH ") :])
        return WrkResult(
            answered=raw["answered"],
            ok=raw["ok"],
            refused=raw["refused"],
            elapsed=raw["elapsed"],
            p50_ms=raw["p50_us"] / 1000,
            p90_ms=raw["p90_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            max_ms=raw["max_us"] / 1000,
            errors=raw["errors"],
            raw=raw,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fill(
    url: str, vms: int, seconds: float, connections: int = 16, prefix: str = "f"
) -> WrkResult:
    """
    Create up to C{vms} VMs of flavor 1 through the API, C{connections} at a time, for at
    most C{seconds}.
    """
    return wrk(
        url,
        threads=2,
        connections=connections,
        seconds=seconds,
        mode="create",
        limit=vms,
        options={"instance_type": 1, "image_id": 1, "prefix": prefix},
        timeout=60,
    )


# ---------------------------------------------------------------------------------------
# Accounting check


def metric(url: str, name: str) -> float | None:
    """
    The value of the unlabelled sample C{name} in the daemon's /metrics, if any.
    """
    try:
        text = Http(url).get("/metrics").decode()
    except (OSError, http.client.HTTPException):
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def settle(url: str, at_least: float, deadline: float = 60) -> float:
    """
    Wait until the creates a finished wrk run left in flight are done: at least
    C{at_least} seconds, then until /metrics' vorchd_vms holds still for a second.
    Returns the seconds waited.
    """
    start = time.monotonic()
    time.sleep(at_least)
    last = metric(url, "vorchd_vms")
    while time.monotonic() - start < deadline:
        time.sleep(1)
        now = metric(url, "vorchd_vms")
        if now == last:
            break
        last = now
    return time.monotonic() - start


def accounting(url: str, pm_count: int) -> dict:
    """
    For every PM: /pm/query's free >= 0 for each resource (ratios are 1.0 here), and
    capacity - free and the VM count equal the flavors of /pm/listvms' VMs (each read
    with /vm/query). Returns the counts found, and what differed where.
    """
    flavors = {t["tid"]: t for t in Http(url).get_json("/vm/types")["types"]}
    pmids = list(range(1, pm_count + 1))
    queries = get_many(url, [f"/pm/query?pmid={p}" for p in pmids])
    listings = get_many(url, [f"/pm/listvms?pmid={p}" for p in pmids])
    vmids = [v for listing in listings if isinstance(listing, dict) for v in listing["vmids"]]
    vm_answers = dict(
        zip(vmids, get_many(url, [f"/vm/query?vmid={v}" for v in vmids]), strict=True)
    )
    oversubscribed, mismatched, unanswered = [], [], []
    for pmid, query, listing in zip(pmids, queries, listings, strict=True):
        if not isinstance(query, dict) or not isinstance(listing, dict):
            unanswered.append({"pmid": pmid, "query": query, "listvms": listing})
            continue
        if any(query["free"][r] < 0 for r in ("cpu", "ram", "disk")):
            oversubscribed.append({"pmid": pmid, "query": query})
        used = {"cpu": 0, "ram": 0, "disk": 0}
        lost = [v for v in listing["vmids"] if not isinstance(vm_answers.get(v), dict)]
        for vmid in listing["vmids"]:
            vm = vm_answers.get(vmid)
            if isinstance(vm, dict):
                for r in used:
                    used[r] += flavors[vm["instance_type"]][r]
        given = {r: query["capacity"][r] - query["free"][r] for r in used}
        if lost or given != used or query["vms"] != len(listing["vmids"]):
            mismatched.append(
                {
                    "pmid": pmid,
                    "capacity_minus_free": given,
                    "listvms_flavors": used,
                    "vms": query["vms"],
                    "listvms": len(listing["vmids"]),
                    "vm_query_0": lost,
                }
            )
    return {
        "pms": len(pmids),
        "vms": len(vmids),
        "oversubscribed": oversubscribed,
        "mismatched": mismatched,
        "unanswered": unanswered,
    }


# ---------------------------------------------------------------------------------------
# The table and the JSON


@dataclass
class Target:
    """
    A target figure: C{op} is ">=", "<=", "<" or "=="; the table shows value/target.
    """

    op: str
    value: float
    text: str | None = None

    def describe(self, unit: str) -> str:
        if self.text:
            return self.text
        return f"{self.op} {fmt(self.value)}{(' ' + unit) if unit else ''}"


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


class Report:
    """
    Figures as rows of a table (printed to stdout as each is measured, and again whole at
    the end) and a JSON document.
    """

    WIDTHS = (12, 54, 14, 24, 9)

    def __init__(self, meta: dict):
        self.meta = meta
        self.rows: list[dict] = []
        self.notes: list[dict] = []
        self.raw: dict[str, list] = {}
        self._header_printed = False

    def header(self) -> str:
        cells = ("benchmark", "figure", "value", "target", "vs target")
        return self._line(cells) + "\n" + "-" * (sum(self.WIDTHS) + len(self.WIDTHS) - 1)

    def _line(self, cells) -> str:
        a, b, c, d, e = self.WIDTHS
        bench, figure, value, target, ratio = cells
        return f"{bench:<{a}} {figure:<{b}} {value:>{c}} {target:<{d}} {ratio:>{e}}".rstrip()

    def _render(self, row: dict) -> str:
        value = fmt(row["value"]) + (f" {row['unit']}" if row["unit"] else "")
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else ""
        return self._line((row["bench"], row["figure"], value, row["target_text"] or "", ratio))

    def add(
        self,
        bench: str,
        figure: str,
        value,
        unit: str = "",
        target: Target | None = None,
        **extra,
    ) -> dict:
        ratio = None
        if target is not None and value is not None and target.value:
            ratio = value / target.value
        row = {
            "bench": bench,
            "figure": figure,
            "value": value,
            "unit": unit,
            "target": None if target is None else {"op": target.op, "value": target.value},
            "target_text": None if target is None else target.describe(unit),
            "ratio": ratio,
            **extra,
        }
        self.rows.append(row)
        if not self._header_printed:
            print(self.header(), flush=True)
            self._header_printed = True
        print(self._render(row), flush=True)
        return row

    def note(self, bench: str, text: str) -> None:
        self.notes.append({"bench": bench, "note": text})
        if not self._header_printed:
            print(self.header(), flush=True)
            self._header_printed = True
        print(f"{'':<{self.WIDTHS[0]}} note: {text}", flush=True)

    def keep(self, bench: str, label: str, data) -> None:
        """
        Raw measurements (wrk's output and such) for the JSON only.
        """
        self.raw.setdefault(bench, []).append({"label": label, "data": data})

    def table(self) -> str:
        lines = [self.header()]
        for row in self.rows:
            lines.append(self._render(row))
        if self.notes:
            lines.append("")
            lines.extend(f"note ({n['bench']}): {n['note']}" for n in self.notes)
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {**self.meta, "rows": self.rows, "notes": self.notes, "raw": self.raw}
        path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result
