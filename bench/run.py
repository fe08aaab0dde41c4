"""
vorchd's benchmark harness: figures and ratios, never pass/fail.

    /opt/vorchd/venv/bin/python bench/run.py [--quick] [--only NAME[,NAME...]]
        [--seconds S] [--vms N] [--read-vms N] [--fill-seconds S] [--profile] [--keep]

Every benchmark but placement drives real C{twistd vorchd} processes, started as
install.sh starts them (in the background with a pid file and a log file, cwd the
repository), against a redis-server this harness starts in a temp dir on a free loopback
port, over fleets of libvirt test-driver PMs (test:///.../pmN.xml). The load comes from
other processes: wrk (bench/wrk.lua) and bench/client.py. Benchmarks, by NAME:

  create       creates/s, p50 and p99 at 1 and 16 in flight on 50, 1,000 and 10,000 PMs
               (--quick: 50 and 1,000), then every PM's accounting: free >= 0 and
               capacity - free = the flavors of its /pm/listvms
  placement    time per placement decision of every built-in policy at 1,000, 10,000 and
               100,000 PMs (--quick: the first two), in this process (bench/decide.py)
  reads        /vm/query, /pm/query and /v1/fleet req/s and p99 at 16 connections on
               1,000 PMs holding 10,000 VMs (--quick: 2,000), beside bench/ceiling.py
  crossdaemon  two daemons on one Redis: create through one, poll the other until it
               answers; p50/p99 of that delay over 200 creates (--quick: 100)
  discovery    start to every PM known at 1,000 and 10,000 PMs (--quick: 1,000), then
               RSS at 10,000 PMs with 100,000 VMs (--quick: 1,000 PMs, 2,000 VMs)
  kvm          a create through vorchd on this machine's qemu:///system vs the same
               domain created straight through libvirt-python
  failover     creates through HAProxy in front of two daemons while the Redis master
               (Sentinel), then one daemon, is killed with kill -9: how long creates
               failed, and acknowledged VMs lost (bench/failover.py; 3 rounds, --quick 1)

--seconds bounds each timed wrk run (default 10, --quick 3). --vms sets the VM count of
the RSS run, --read-vms that of reads; --fill-seconds bounds the time spent creating
VMs for either (default 3600, --quick 120).
--profile records the daemon with py-spy during the 16-in-flight create runs and the
read runs: SVG flamegraphs land in bench/results/. --keep keeps the temp dirs (logs).

Each figure is printed as it is measured, beside its target and value/target; the
whole table is printed again at the end and written, with every raw wrk figure, to
bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
VENV_PYTHON = "/opt/vorchd/venv/bin/python"

try:
    import twisted  # noqa: F401
except ImportError:  # not the venv's python: run again with it
    if os.path.exists(VENV_PYTHON) and os.path.realpath(sys.executable) != os.path.realpath(
        VENV_PYTHON
    ):
        os.execv(VENV_PYTHON, [VENV_PYTHON, *sys.argv])
    raise

import support  # noqa: E402
from support import (  # noqa: E402
    PYTHON,
    REPO,
    VMS_PER_PM,
    Ceiling,
    Daemon,
    Http,
    Redis,
    Report,
    Target,
    accounting,
    boot_image,
    fill,
    log,
    settle,
    unique_prefix,
    write_pms,
    wrk,
)

RESULTS = BENCH / "results"

QUICK = {
    "create_fleets": [50, 1000],
    "placement_fleets": [1000, 10000],
    "reads": (1000, 2000),
    "crossdaemon": 100,
    "discovery_fleets": [1000],
    "rss": (1000, 2000),
    "kvm": 3,
    "seconds": 3,
    "fill_seconds": 120,
}
FULL = {
    "create_fleets": [50, 1000, 10000],
    "placement_fleets": [1000, 10000, 100000],
    "reads": (1000, 10000),
    "crossdaemon": 200,
    "discovery_fleets": [1000, 10000],
    "rss": (10000, 100000),
    "kvm": 10,
    "seconds": 10,
    "fill_seconds": 3600,
}


class Context:
    """
    What every benchmark shares: options, sizes, the report, one Redis, a work dir.
    """

    def __init__(self, args, report: Report, stamp: str):
        self.args = args
        self.sizes = dict(QUICK if args.quick else FULL)
        if args.create_fleets:
            self.sizes["create_fleets"] = [int(n) for n in args.create_fleets.split(",")]
        self.seconds = args.seconds or self.sizes["seconds"]
        self.fill_seconds = args.fill_seconds or self.sizes["fill_seconds"]
        self.report = report
        self.stamp = stamp
        self.work = Path(tempfile.mkdtemp(prefix="vorchd-bench-"))
        self._redis: Redis | None = None
        self.image = boot_image(self.work / "images")

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            self._redis = Redis(self.work / "redis").start()
            log(f"redis-server on {self._redis.url}")
        return self._redis

    def fleet(self, n: int) -> list[str]:
        """
        The test:// URIs of a fleet of C{n} PMs (written once per size, reused).
        """
        directory = self.work / f"fleet-{n}"
        if directory.exists():
            return [f"test://{directory}/pm{i}.xml" for i in range(1, n + 1)]
        return write_pms(directory, n)

    def daemon(self, name: str, pms: int, **options) -> Daemon:
        return Daemon(
            self.work / "daemons" / name,
            self.redis.url,
            options.pop("prefix", None) or unique_prefix(),
            self.fleet(pms),
            self.image,
            **options,
        )

    def started(self, daemon: Daemon, deadline: float | None = None) -> float:
        """
        Start C{daemon} and wait for its last PM (by default for 2 minutes plus 60 ms a
        PM); return the seconds that took.
        """
        if deadline is None:
            deadline = 120 + 0.06 * daemon.pm_count
        daemon.start()
        took = daemon.wait_discovered(deadline=deadline)
        log(f"daemon on {daemon.url}: {daemon.pm_count} PMs discovered in {took:.1f} s")
        return took

    def profile(self, daemon: Daemon, label: str):
        if not self.args.profile:
            return None
        RESULTS.mkdir(parents=True, exist_ok=True)
        return daemon.pid, RESULTS / f"{self.stamp}-{label}.{self.args.profile_format}"

    def close(self) -> None:
        if self._redis is not None:
            self._redis.stop()
        if self.args.keep:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# 1. create


def bench_create(ctx: Context) -> None:
    r = ctx.report
    rates16: dict[int, float] = {}
    for n in ctx.sizes["create_fleets"]:
        daemon = ctx.daemon(f"create-{n}", n)
        try:
            took = ctx.started(daemon)
            r.note("create", f"{n:,} PMs: discovered in {took:.1f} s")
            capacity = n * VMS_PER_PM
            # At most 40% of the fleet's room for the sequential run and 50% for 16 in
            # flight, so that neither run meets a full fleet.
            runs = [
                ("1 in flight", 1, 1, int(capacity * 0.4)),
                ("16 in flight", 2, 16, int(capacity * 0.5)),
            ]
            for label, threads, conns, limit in runs:
                profile = ctx.profile(daemon, f"create-{n}-c{conns}")
                res = wrk(
                    daemon.url,
                    threads=threads,
                    connections=conns,
                    seconds=ctx.seconds,
                    mode="create",
                    limit=limit,
                    options={"instance_type": 1, "image_id": 1, "prefix": f"c{conns}-"},
                    profile=profile,
                )
                r.keep("create", f"{n} PMs, {label}", res.as_dict())
                fig = f"{n:,} PMs, {label}"
                if conns == 1:
                    r.add("create", f"{fig}: creates/s", res.ok_rate, "/s", Target(">=", 400))
                    r.add("create", f"{fig}: p50", res.p50_ms, "ms", Target("<=", 2.5))
                    r.add("create", f"{fig}: p99", res.p99_ms, "ms")
                else:
                    rates16[n] = res.ok_rate
                    base = rates16.get(50) if n != 50 else None
                    if n == 50:
                        target = Target(">=", 600)
                    elif base:
                        share = 0.9 if n <= 1000 else 0.75
                        target = Target(
                            ">=", share * base, f">= {share:.0%} of 50 PMs' {base:,.0f}/s"
                        )
                    else:
                        target = None
                    r.add("create", f"{fig}: creates/s", res.ok_rate, "/s", target)
                    if base:
                        r.add(
                            "create",
                            f"{fig}: rate / 50-PM rate",
                            res.ok_rate / base,
                            "",
                            Target(">=", 0.9 if n <= 1000 else 0.75),
                        )
                    r.add("create", f"{fig}: p50", res.p50_ms, "ms")
                    r.add("create", f"{fig}: p99", res.p99_ms, "ms")
                if res.refused:
                    r.note("create", f"{fig}: {res.refused} creates refused ({{'vmid': 0}})")
                errors = {k: v for k, v in res.errors.items() if v}
                if errors:
                    r.note("create", f"{fig}: wrk errors {errors}")
            waited = settle(daemon.url, at_least=max(1.0, 2 * res.max_ms / 1000))
            log(f"checking the accounting of {n:,} PMs (settled in {waited:.1f} s)")
            t0 = time.monotonic()
            check = accounting(daemon.url, n)
            r.keep("create", f"{n} PMs accounting", check)
            r.add(
                "create",
                f"{n:,} PMs: oversubscribed PMs",
                len(check["oversubscribed"]),
                "",
                Target("==", 0, "0"),
            )
            r.add(
                "create",
                f"{n:,} PMs: PMs whose listvms sum != capacity - free",
                len(check["mismatched"]) + len(check["unanswered"]),
                "",
                Target("==", 0, "0"),
            )
            for bad in (check["oversubscribed"] + check["mismatched"] + check["unanswered"])[:3]:
                r.note("create", f"{n:,} PMs: {bad}")
            cancelled = daemon.log_count("vm not created", "ancelled")
            if cancelled:
                r.note(
                    "create",
                    f"{n:,} PMs: {cancelled} creates were cancelled (the daemon's log), by"
                    " wrk closing its connections with requests in flight at the end of a"
                    " run; today their claims stay until the next reconciliation (60 s)",
                )
            r.note(
                "create",
                f"{n:,} PMs: checked {check['pms']:,} PMs holding {check['vms']:,} VMs"
                f" in {time.monotonic() - t0:.1f} s",
            )
        finally:
            daemon.stop()


# ---------------------------------------------------------------------------------------
# 2. placement


def bench_placement(ctx: Context) -> None:
    import decide

    r = ctx.report
    paths = [ctx.args.placement_path] if ctx.args.placement_path else list(decide.PATHS)
    r.note("placement", f"paths {', '.join(paths)} (bench/decide.py), in this process")
    for path in paths:
        for n in ctx.sizes["placement_fleets"]:
            for policy in decide.POLICIES:
                one = decide.decide(policy, n, path)
                one()  # warm up
                times = []
                budget = time.perf_counter() + max(0.3, ctx.seconds / 10)
                while len(times) < 3 or (time.perf_counter() < budget and len(times) < 1000):
                    t0 = time.perf_counter()
                    one()
                    times.append(time.perf_counter() - t0)
                ms = statistics.median(times) * 1000
                target = Target("<", 1.0) if n == 10000 else None
                figure = f"{path}, {n:,} PMs, {policy}: per decision"
                r.add("placement", figure, ms, "ms", target)
                r.keep(
                    "placement",
                    f"{path} {n} {policy}",
                    {"runs": len(times), "min_s": min(times), "max_s": max(times)},
                )


# ---------------------------------------------------------------------------------------
# 3. reads


def bench_reads(ctx: Context) -> None:
    r = ctx.report
    pms, vms = ctx.sizes["reads"]
    if ctx.args.read_vms:
        vms = ctx.args.read_vms
    ceiling = Ceiling().start()
    daemon = ctx.daemon("reads", pms)
    try:
        ctx.started(daemon)
        log(f"creating {vms:,} VMs on {pms:,} PMs (16 in flight)")
        res = fill(daemon.url, vms, ctx.fill_seconds)
        r.keep("reads", "fill", res.as_dict())
        r.note(
            "reads",
            f"{res.ok:,} VMs created on {pms:,} PMs in {res.elapsed:.1f} s"
            f" ({res.ok_rate:.0f}/s, 16 in flight)",
        )
        listings = support.get_many(
            daemon.url, [f"/pm/listvms?pmid={p}" for p in range(1, pms + 1)]
        )
        vmids = [v for x in listings if isinstance(x, dict) for v in x["vmids"]]
        random.Random(1).shuffle(vmids)
        pmids = list(range(1, pms + 1))
        random.Random(2).shuffle(pmids)

        def run(url: str, paths: list[str], label: str, profile=None):
            res = wrk(
                url, threads=2, connections=16, seconds=ctx.seconds, paths=paths, profile=profile
            )
            r.keep("reads", label, res.as_dict())
            if res.refused:
                r.note("reads", f"{label}: {res.refused:,} answers were a bare 0")
            return res

        top = run(ceiling.url, ["/vm/query?vmid=1"], "ceiling")
        r.add("reads", "bare Klein ceiling: req/s", top.rate, "/s")
        r.add("reads", "bare Klein ceiling: p99", top.p99_ms, "ms")
        endpoints = [
            ("/vm/query", [f"/vm/query?vmid={v}" for v in vmids] or ["/vm/query?vmid=1"]),
            ("/pm/query", [f"/pm/query?pmid={p}" for p in pmids]),
            ("/v1/fleet", ["/v1/fleet"]),
        ]
        for name, paths in endpoints:
            if name == "/v1/fleet" and Http(daemon.url).get("/v1/fleet").strip() == b"0":
                r.note("reads", "/v1/fleet answers 0 (not there yet): skipped")
                continue
            label = name.strip("/").replace("/", "-")
            res = run(daemon.url, paths, name, ctx.profile(daemon, f"reads-{label}"))
            # The targets are the seed reads'; /v1/fleet (the whole fleet, about 1 MB
            # at this size) has none: its figures are for the record.
            seed = name != "/v1/fleet"
            r.add("reads", f"{name}: req/s", res.rate, "/s")
            r.add(
                "reads",
                f"{name}: share of the Klein ceiling",
                res.rate / top.rate if top.rate else None,
                "",
                Target(">=", 0.75) if seed else None,
            )
            r.add("reads", f"{name}: p99", res.p99_ms, "ms", Target("<", 20) if seed else None)
    finally:
        daemon.stop()
        ceiling.stop()


# ---------------------------------------------------------------------------------------
# 4. crossdaemon


def bench_crossdaemon(ctx: Context) -> None:
    r = ctx.report
    n = ctx.sizes["crossdaemon"]
    prefix = unique_prefix()
    a = ctx.daemon("cross-a", 50, prefix=prefix)
    b = ctx.daemon("cross-b", 50, prefix=prefix)
    try:
        ctx.started(a)
        ctx.started(b)
        out = subprocess.run(
            [PYTHON, str(BENCH / "client.py"), "crossdaemon", "--a", a.url, "--b", b.url]
            + ["--n", str(n)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )
        if out.returncode != 0:
            raise RuntimeError(f"bench/client.py crossdaemon failed: {out.stderr[-2000:]}")
        data = support.json.loads(out.stdout)
        r.keep("crossdaemon", "client", data)
        delays = sorted(d * 1000 for d in data["delays"])
        if not delays:
            r.note("crossdaemon", "no create was seen by the other daemon")
            return
        r.add("crossdaemon", f"{len(delays)} creates: visible on B, p50", pct(delays, 50), "ms")
        r.add(
            "crossdaemon",
            f"{len(delays)} creates: visible on B, p99",
            pct(delays, 99),
            "ms",
            Target("<", 50),
        )
        creates = sorted(c * 1000 for c in data["creates"])
        r.add("crossdaemon", "create through A (1 in flight), p50", pct(creates, 50), "ms")
        r.note(
            "crossdaemon",
            f"B answered at its first poll {data['polls'].count(1)} times of {len(delays)};"
            f" creates failed: {data['failed']}, never seen on B: {data['lost']}",
        )
    finally:
        a.stop()
        b.stop()


def pct(sorted_values: list[float], p: float) -> float:
    """
    The p-th percentile (nearest rank) of already sorted values.
    """
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


# ---------------------------------------------------------------------------------------
# 5. discovery


def bench_discovery(ctx: Context) -> None:
    r = ctx.report
    sizes = ctx.sizes["discovery_fleets"]
    rss_pms, rss_vms = ctx.sizes["rss"]
    if ctx.args.vms:
        rss_vms = ctx.args.vms
    targets = {1000: 5.0, 10000: 60.0}
    for n in sorted(set(sizes) | {rss_pms}):
        log(f"writing a fleet of {n:,} PMs")
        ctx.fleet(n)
        daemon = ctx.daemon(f"discovery-{n}", n)
        try:
            took = ctx.started(daemon)
            if n in sizes:
                target = Target("<", targets[n]) if n in targets else None
                r.add("discovery", f"{n:,} PMs: start to last PM known", took, "s", target)
                metrics = Http(daemon.url).get("/metrics").decode()
                up = sum(
                    1
                    for line in metrics.splitlines()
                    if line.startswith("vorchd_pm_up{") and line.rstrip().endswith(" 1")
                )
                r.note("discovery", f"{n:,} PMs: /metrics then showed {up:,} PMs up")
            if n != rss_pms:
                continue
            mem = daemon.memory()
            r.add("discovery", f"{n:,} PMs, no VMs: RSS", mem["VmRSS"], "MB")
            log(f"creating {rss_vms:,} VMs on {n:,} PMs for the RSS figure (16 in flight)")
            res = fill(daemon.url, rss_vms, ctx.fill_seconds)
            r.keep("discovery", "fill", res.as_dict())
            r.note(
                "discovery",
                f"{res.ok:,} VMs created on {n:,} PMs in {res.elapsed:.1f} s"
                f" ({res.ok_rate:.0f}/s, 16 in flight)"
                + ("" if res.ok >= rss_vms else f": stopped by --fill-seconds {ctx.fill_seconds}"),
            )
            mem = daemon.memory()
            label = f"{n:,} PMs, {res.ok:,} VMs"
            target = Target("<", 300) if (n, rss_vms) == (10000, 100000) else None
            r.add("discovery", f"{label}: RSS (VmRSS)", mem["VmRSS"], "MB", target)
            r.add("discovery", f"{label}: peak RSS (VmHWM)", mem["VmHWM"], "MB", target)
            daemon.stop()
            # The test driver keeps every simulated PM, volume and domain in the
            # daemon's own process: measure what it alone takes for the same fleet.
            log(f"measuring the test driver alone with {n:,} PMs and {res.ok:,} VMs")
            out = subprocess.run(
                [PYTHON, str(BENCH / "client.py"), "testdriver"]
                + ["--fleet-dir", str(ctx.work / f"fleet-{n}"), "--pms", str(n)]
                + ["--vms", str(res.ok), "--per-pm", str(VMS_PER_PM)],
                capture_output=True,
                text=True,
                timeout=1800,
                cwd=REPO,
            )
            if out.returncode != 0:
                r.note("discovery", f"test driver alone not measured: {out.stderr[-500:]}")
                continue
            sim = support.json.loads(out.stdout)
            r.keep("discovery", "test driver alone", sim)
            sim_mb = sim["rss_after"] - sim["rss_before"]
            r.add("discovery", f"{label}: test driver alone", sim_mb, "MB")
            r.add(
                "discovery",
                f"{label}: RSS less test driver (est.)",
                mem["VmRSS"] - sim_mb,
                "MB",
                target,
            )
        finally:
            daemon.stop()


# ---------------------------------------------------------------------------------------
# 6. kvm


def libvirtd_answers() -> str | None:
    """
    Why qemu:///system cannot be used, or None if it answers.
    """
    out = subprocess.run(
        [PYTHON, "-c", "import libvirt; libvirt.open('qemu:///system').close()"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode == 0:
        return None
    return (out.stderr.strip().splitlines() or ["qemu:///system does not answer"])[-1]


def start_libvirtd() -> str | None:
    """
    As install.sh's start_libvirtd does without systemd: virtlogd -d and libvirtd -d
    where their sockets are dead, then wait for qemu:///system. Why not, or None.
    """
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("libvirtd"):
        return "libvirtd is not installed"

    def socket_alive(path: str) -> bool:
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(path)
                return True
            except OSError:
                return False

    if not socket_alive("/run/libvirt/virtlogd-sock"):
        log("starting virtlogd -d (left running, as install.sh leaves it)")
        subprocess.run(["virtlogd", "-d"], check=False)
    if not socket_alive("/run/libvirt/libvirt-sock"):
        log("starting libvirtd -d (left running, as install.sh leaves it)")
        subprocess.run(["libvirtd", "-d"], check=False)
    end = time.monotonic() + 30
    why = libvirtd_answers()
    while why and time.monotonic() < end:
        time.sleep(0.5)
        why = libvirtd_answers()
    return why


def bench_kvm(ctx: Context) -> None:
    r = ctx.report
    why = libvirtd_answers()
    if why:
        why = start_libvirtd()
    if why:
        r.note("kvm", f"skipped: qemu:///system unavailable ({why})")
        return
    n = ctx.sizes["kvm"]
    work = ctx.work / "kvm"
    for d in (work, work / "pool", work / "console", work / "images"):
        d.mkdir(parents=True, exist_ok=True)
    # qemu runs as another user: it must reach the image and the pool.
    for d in (ctx.work, work, work / "pool", work / "console", work / "images"):
        d.chmod(0o755)
    image = boot_image(work / "images")
    pool = f"vbench-{unique_prefix()}"
    daemon = Daemon(
        work / "daemon",
        ctx.redis.url,
        unique_prefix(),
        ["qemu:///system"],
        image,
        flavors=[{"tid": 1, "cpu": 1, "ram": 64, "disk": 1}],
        libvirt={
            "pool_name": pool,
            "pool_path": work / "pool",
            "console_log_dir": work / "console",
        },
    )
    vmids = []
    try:
        ctx.started(daemon, deadline=120)
        client = Http(daemon.url, timeout=300)
        times = []
        for i in range(n + 1):
            t0 = time.perf_counter()
            answer = client.get_json(f"/vm/create?name=k{i}&instance_type=1&image_id=1")
            times.append(time.perf_counter() - t0)
            if not answer.get("vmid"):
                r.note("kvm", f"vorchd refused the create: {answer}; log:\n{daemon.log_tail()}")
                return
            vmids.append(answer["vmid"])
            if i < n:
                # This machine's few CPUs hold few VMs: each goes before the next comes,
                # but the last stays, for its domain XML.
                client.get_json(f"/vm/destroy?vmid={vmids.pop()}")
        cold, warm = times[0] * 1000, sorted(t * 1000 for t in times[1:])
        fleet = Http(daemon.url).get_json(f"/vm/query?vmid={vmids[-1]}")
        # The domain's serial log, <console_log_dir>/<domain>-serial.log, names it.
        domain = next(
            p.name[: -len("-serial.log")]
            for p in (work / "console").iterdir()
            if p.name.endswith(f"-{vmids[-1]}-serial.log")
        )
        out = subprocess.run(
            [PYTHON, str(BENCH / "client.py"), "direct", "--domain", domain, "--n", str(n)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )
        if out.returncode != 0:
            r.note("kvm", f"the direct create failed: {out.stderr.strip()[-1500:]}")
            return
        data = support.json.loads(out.stdout)
        direct = sorted(t * 1000 for t in data["times"])
        r.keep("kvm", "times", {"vorchd": times, "direct": data, "vm": fleet})
        v50, d50 = statistics.median(warm), statistics.median(direct)
        r.add(
            "kvm", f"vorchd create, first (uploads the image), {data['domain_type']}", cold, "ms"
        )
        r.add(
            "kvm",
            f"vorchd create, median of {len(warm)}",
            v50,
            "ms",
            Target("<=", 1.2 * d50 + 50, f"<= 1.2 x direct + 50 = {1.2 * d50 + 50:.0f} ms"),
        )
        r.add("kvm", f"direct libvirt-python create, median of {len(direct)}", d50, "ms")
        r.add("kvm", "vorchd / direct", v50 / d50 if d50 else None, "")
    finally:
        for vmid in vmids:
            try:
                Http(daemon.url, timeout=120).get_json(f"/vm/destroy?vmid={vmid}")
            except Exception as e:  # the daemon may be gone: the pool drop below cleans up
                log(f"destroy of vm {vmid} failed: {e}")
        daemon.stop()
        out = subprocess.run(
            [PYTHON, str(BENCH / "client.py"), "drop-pool", "--pool", pool],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        if out.returncode != 0:
            log(f"pool {pool} not dropped: {out.stderr.strip()[-500:]}")


# ---------------------------------------------------------------------------------------


def bench_outage(ctx: Context) -> None:
    """
    Redis stopped under a daemon: how long each seed call takes to answer its failure
    value (README: within the store's 5 s timeout), once alone and then with every call
    at once; and how long until the daemon serves again once Redis is back. The tests
    only catch hangs here (tests/integration/test_outage.py).
    """
    from concurrent.futures import ThreadPoolExecutor

    r = ctx.report
    redis = Redis(ctx.work / "outage-redis").start()
    daemon = Daemon(
        ctx.work / "daemons" / "outage",
        redis.server.url,
        unique_prefix(),
        ctx.fleet(4),
        ctx.image,
    )
    paths = [
        "/vm/create?name=during&instance_type=1&image_id=1",
        "/vm/query?vmid=1",
        "/vm/destroy?vmid=1",
        "/vm/types",
        "/pm/list",
        "/pm/listvms?pmid=1",
        "/pm/query?pmid=1",
        "/image/list",
    ]

    def timed(path: str) -> float:
        started = time.monotonic()
        Http(daemon.url, timeout=120).get(path)
        return time.monotonic() - started

    try:
        ctx.started(daemon)
        Http(daemon.url).get_json("/vm/create?name=before&instance_type=1&image_id=1")
        redis.server.stop()
        r.add("outage", "Redis down: first call answers", timed("/pm/list"), "s", Target("<=", 5))
        with ThreadPoolExecutor(len(paths)) as pool:
            took = dict(zip(paths, pool.map(timed, paths), strict=True))
        for path, secs in took.items():
            call = path.split("?", 1)[0]
            r.add("outage", f"Redis down, all at once: {call}", secs, "s", Target("<=", 5))
        redis.server.start()
        started = time.monotonic()
        while not Http(daemon.url).get_json("/pm/list"):
            if time.monotonic() - started > 120:
                r.note("outage", "the daemon did not serve again within 120 s of Redis")
                return
            time.sleep(0.05)
        r.add("outage", "Redis back: serving again after", time.monotonic() - started, "s")
    finally:
        daemon.stop()
        redis.server.stop()


from failover import bench_failover  # noqa: E402

BENCHMARKS = {
    "create": bench_create,
    "placement": bench_placement,
    "reads": bench_reads,
    "crossdaemon": bench_crossdaemon,
    "discovery": bench_discovery,
    "kvm": bench_kvm,
    "outage": bench_outage,
    "failover": bench_failover,
}


def git_commit() -> str | None:
    out = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "vorchd", "twisted"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def main() -> int:
    parser = argparse.ArgumentParser(
        description="vorchd's benchmarks: figures and ratios, never pass/fail.",
        epilog="See the docstring of bench/run.py and bench/README.md.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller fleets, 3-s runs")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help=f"benchmarks to run (repeat or comma-separate): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--seconds", type=float, help="each timed wrk run (default 10, quick 3)")
    parser.add_argument("--vms", type=int, help="VMs for the RSS figure (discovery)")
    parser.add_argument("--read-vms", type=int, help="VMs the reads benchmark creates first")
    parser.add_argument(
        "--fill-seconds", type=float, help="most time spent creating VMs to fill a fleet"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy flamegraphs")
    parser.add_argument(
        "--profile-format",
        choices=("svg", "txt"),
        default="svg",
        help="svg flamegraphs, or txt collapsed stacks (for reading or flamegraph.pl)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs and logs")
    parser.add_argument(
        "--placement-path", help="one bench/decide.py PATHS key (default: every one)"
    )
    parser.add_argument(
        "--create-fleets",
        help="comma-separated fleet sizes for the create benchmark (default 50,1000,10000)",
    )
    args = parser.parse_args()
    only = [name for item in args.only for name in item.split(",") if name]
    unknown = [name for name in only if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    args.only_list = only or list(BENCHMARKS)
    if args.placement_path is not None:
        import decide

        if args.placement_path not in decide.PATHS:
            parser.error(f"--placement-path: one of {', '.join(decide.PATHS)}")

    def terminated(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGTERM (timeout(1), kill) cleans up as Ctrl-C does: every process started is ended.
    signal.signal(signal.SIGTERM, terminated)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv[1:],
        "quick": args.quick,
        "commit": git_commit(),
        "host": {
            "cpus": os.cpu_count(),
            "load": os.getloadavg(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
    }
    report = Report(meta)
    if args.profile:
        support.ensure_py_spy()
    ctx = Context(args, report, stamp)
    failed = []
    start = time.monotonic()
    try:
        for name in args.only_list:
            log(f"--- {name}")
            t0 = time.monotonic()
            try:
                BENCHMARKS[name](ctx)
            except Exception as e:
                traceback.print_exc()
                report.note(name, f"did not complete: {type(e).__name__}: {e}")
                failed.append(name)
            report.keep(name, "wall seconds", time.monotonic() - t0)
    except KeyboardInterrupt as e:
        report.note("run", f"interrupted ({e or 'Ctrl-C'})")
        failed.append("interrupted")
    finally:
        support.end_all()
        ctx.close()
    meta["wall_seconds"] = time.monotonic() - start
    out = RESULTS / f"{stamp}.json"
    report.write_json(out)
    print()
    print(report.table())
    print(f"\n{len(report.rows)} figures in {meta['wall_seconds']:.0f} s; JSON: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
