"""
The failover benchmark: how long creates fail around a kill -9 of the Redis master, and
of one of two daemons, with no acknowledged VM lost (bench/run.py --only failover).

Each round sets up what `./install.sh ha` sets up, on loopback ports in a temp dir: a
Redis master with two replicas (so that the promoted one still has a replica to confirm
writes), three redis-sentinel (down-after-milliseconds 1000), two real `twistd vorchd`
daemons (min_replicas_acked = 1, lease 2 s, reconcile every 1 s) on test-driver PMs, and
HAProxy in front of them (etc/ha/haproxy.cfg). Four clients create VMs through HAProxy
(each one every 0.1 s at most); the master is killed, then, once creates succeed again,
one daemon. A create "failed" if it answered {"vmid": 0} or HAProxy an error; the window
is from the first failed create's start to the last one's end. Afterwards every
acknowledged vmid is asked of the surviving daemon: one it does not know is lost.
"""

from __future__ import annotations

import os
import signal
import time

from support import Daemon, Target, log, unique_prefix

from tests.burst import Burst, acked, failure_window, summary
from tests.ha import HAProxy, ReplicatedRedis
from tests.harness import get_json

ROUNDS = {"quick": 1, "full": 3}


class _Cleanups:
    """
    What tests.ha's parts register to be undone (a TestCase's addCleanup), run at the end.
    """

    def __init__(self):
        self._calls = []

    def addCleanup(self, f, *args) -> None:  # noqa: N802 (TestCase's name)
        self._calls.append((f, args))

    def run(self) -> None:
        for f, args in reversed(self._calls):
            try:
                f(*args)
            except Exception as e:  # cleaning up: report, go on
                log(f"cleanup {f}: {e}")


def _ha_daemon(ctx, name: str, url: str, prefix: str) -> Daemon:
    daemon = Daemon(ctx.work / "daemons" / name, url, prefix, ctx.fleet(10), ctx.image)
    daemon.ini.write_text(
        daemon.ini.read_text()
        .replace("[server]\n", "[server]\nlease = 2\nreconcile_interval = 1\n")
        .replace("[redis]\n", "[redis]\nmin_replicas_acked = 1\n")
    )
    return daemon


def _until_recovered(burst: Burst, since: float, quiet: float = 2.0, deadline: float = 60):
    """
    Wait until creates have succeeded for C{quiet} seconds after the last failure.
    """
    end = since + deadline
    while time.monotonic() < end:
        last = max(burst.last_failure_end() or since, since)
        if time.monotonic() - last > quiet and burst.succeeded_since(last):
            return
        time.sleep(0.1)


def _lost(url: str, told: dict[int, str]) -> int:
    return sum(1 for vmid in told if not get_json(f"{url}/vm/query?vmid={vmid}"))


def bench_replica_cost(ctx) -> None:
    """
    What waiting for a replica costs a create: creates/s and p50 from 16 clients
    straight to one daemon, with min_replicas_acked 0 and then 1, on one replicated
    Redis (Sentinel URL) and a fresh key prefix each.
    """
    r = ctx.report
    seconds = 3.0 if ctx.args.quick else 8.0
    cleanups = _Cleanups()
    rates = {}
    try:
        redis = ReplicatedRedis(cleanups, replicas=1)
        for acked in (0, 1):
            daemon = Daemon(
                ctx.work / "daemons" / f"acked{acked}",
                redis.url(),
                unique_prefix(),
                ctx.fleet(50),
                ctx.image,
            )
            daemon.ini.write_text(
                daemon.ini.read_text().replace(
                    "[redis]\n", f"[redis]\nmin_replicas_acked = {acked}\n"
                )
            )
            cleanups.addCleanup(daemon.stop)
            ctx.started(daemon)
            # Untimed first: every PM's first create uploads the image's base copy.
            warm = Burst(daemon.url, threads=16, pace=0.0, tag=f"warm{acked}").start()
            time.sleep(1.0)
            warm.stop()
            burst = Burst(daemon.url, threads=16, pace=0.0, tag=f"acked{acked}").start()
            time.sleep(seconds)
            outcomes = burst.stop()
            daemon.stop()
            done = sorted(o.end - o.start for o in outcomes if o.vmid)
            span = max(o.end for o in outcomes) - min(o.start for o in outcomes)
            rates[acked] = len(done) / span
            label = f"min_replicas_acked = {acked}, 16 clients"
            r.add("failover", f"{label}: creates/s", rates[acked], "/s")
            r.add("failover", f"{label}: p50", 1000 * done[len(done) // 2], "ms")
    finally:
        cleanups.run()
    r.add("failover", "creates/s acked by a replica / not", rates[1] / rates[0])


def bench_failover(ctx) -> None:
    r = ctx.report
    rounds = ROUNDS["quick" if ctx.args.quick else "full"]
    windows: dict[str, list[float]] = {"master": [], "daemon": []}
    lost = 0
    for n in range(1, rounds + 1):
        cleanups = _Cleanups()
        try:
            redis = ReplicatedRedis(cleanups, replicas=2)
            prefix = unique_prefix()
            daemons = [_ha_daemon(ctx, f"ha{n}-{x}", redis.url(), prefix) for x in "ab"]
            for daemon in daemons:
                cleanups.addCleanup(daemon.stop)
                ctx.started(daemon)
            proxy = HAProxy(cleanups, [d.port for d in daemons])
            burst = Burst(proxy.url, threads=4, pace=0.1, tag=f"ha{n}")
            cleanups.addCleanup(burst.stop)
            burst.start()
            time.sleep(1.0)
            killed = time.monotonic()
            redis.master.kill()
            _until_recovered(burst, killed)
            master_kill = [o for o in burst.outcomes if o.start < time.monotonic()]
            cut = time.monotonic()
            log(f"round {n}, master kill: {summary(master_kill, killed)}")
            windows["master"].append(failure_window(master_kill))
            killed = time.monotonic()
            victim = daemons[1]
            os.kill(victim.pid, signal.SIGKILL)
            _until_recovered(burst, killed)
            outcomes = burst.stop()
            daemon_kill = [o for o in outcomes if o.start >= cut]
            log(f"round {n}, daemon kill: {summary(daemon_kill, killed)}")
            windows["daemon"].append(failure_window(daemon_kill))
            lost += _lost(daemons[0].url, acked(outcomes))
        finally:
            cleanups.run()
    for kind, target in (("master", 5.0), ("daemon", 2.0)):
        values = windows[kind]
        if not values:
            continue
        r.add(
            "failover",
            f"{kind} kill -9: creates failed for (worst of {len(values)})",
            max(values),
            "s",
            Target("<", target),
        )
        r.note("failover", f"{kind} kill windows: {', '.join(f'{v:.2f} s' for v in values)}")
    r.add("failover", "acknowledged VMs lost", lost, "", Target("<=", 0))
    bench_replica_cost(ctx)
