"""
vorchd-sim at the size of the target: 10,000 PMs and a trace of 1,000,000 events,
simulated for every built-in policy in under a minute (all of them together) on this
machine. Figures beside the target, never pass/fail.

    /opt/vorchd/venv/bin/python bench/sim.py [--pms SPEC] [--events N] [--policies A,B]
        [--seed S] [--quick] [--profile FILE.svg] [--json FILE]

It builds the fleet and the generated trace as C{vorchd-sim --pms SPEC --generate N}
does (Poisson arrivals of the default flavor mix, exponential lifetimes of an hour, at
the rate that keeps 90 % of the fleet busy), then replays the trace with each policy and
prints, per policy, the seconds, the microseconds per event, the decisions (creates)
per second and the CPU seconds (process time: what the figure would be on an idle
machine, when others share it), then the total beside the 60 s target. C{--quick}:
1,000 PMs, 100,000 events. C{--profile FILE.svg} runs the same under py-spy and writes
its flamegraph.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vorchd.policies.builtin import BUILTIN  # noqa: E402
from vorchd.sim import cli, traces  # noqa: E402
from vorchd.sim.fleet import fleet_from_sizes, parse_sizes  # noqa: E402
from vorchd.sim.run import compare  # noqa: E402

TARGET_SECONDS = 60.0
FULL = ("10000x(32,131072,1000)", 1_000_000)
QUICK = ("1000x(32,131072,1000)", 100_000)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def profile(argv: list[str], svg: str) -> int:
    """
    Run this benchmark again under py-spy, writing its flamegraph to C{svg}.
    """
    py_spy = Path(sys.executable).with_name("py-spy")
    command = [str(py_spy), "record", "--rate", "200", "-o", svg, "--", sys.executable]
    return subprocess.call(command + [os.path.abspath(__file__), *argv])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/sim.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pms", help=f"the fleet (default {FULL[0]})")
    parser.add_argument("--events", type=int, help=f"trace length (default {FULL[1]:,})")
    parser.add_argument("--policies", help="default: every built-in policy")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK[0]}, {QUICK[1]:,} events")
    parser.add_argument("--profile", metavar="FILE.svg", help="record a py-spy flamegraph")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="policies replayed at once, as vorchd-sim --jobs (default 1: one after another)",
    )
    options = parser.parse_args(argv)
    if options.profile:
        rest = list(argv if argv is not None else sys.argv[1:])
        k = rest.index("--profile")
        return profile(rest[:k] + rest[k + 2 :], options.profile)
    spec, events = QUICK if options.quick else FULL
    spec = options.pms or spec
    events = options.events if options.events is not None else events
    names = options.policies.split(",") if options.policies else list(BUILTIN)

    started = time.perf_counter()
    fleet = fleet_from_sizes(parse_sizes(spec))
    ratios = {"cpu": 1.0, "ram": 1.0, "disk": 1.0}
    flavors = traces.DEFAULT_FLAVORS
    mix = traces.default_mix(flavors)
    lifetime = traces.parse_lifetime(cli.DEFAULT_LIFETIME)
    rate = traces.offered_rate(
        cli.free_room(fleet, ratios), flavors, mix, lifetime, cli.DEFAULT_LOAD
    )
    trace = traces.generate(events, flavors, mix, rate, lifetime, options.seed)
    setup = time.perf_counter() - started
    log(
        f"{len(fleet.pms):,} PMs, {len(trace):,} events ({trace.slots:,} creates),"
        f" made in {setup:.2f} s; {len(names)} policies"
    )

    rows = []

    def progress(outcome) -> None:
        per_event = outcome.seconds / max(len(trace), 1) * 1e6
        rows.append(
            {
                "policy": outcome.policy,
                "seconds": outcome.seconds,
                "cpu_seconds": outcome.cpu_seconds,
                "us_per_event": per_event,
                "decisions_per_s": outcome.decisions_per_s,
                "placed": outcome.placed,
                "refused": outcome.refused,
                "pms_used": outcome.pms_used,
            }
        )
        log(
            f"  {outcome.policy:<12} {outcome.seconds:8.2f} s  {per_event:7.1f} us/event"
            f"  {outcome.decisions_per_s:10,.0f} decisions/s  ({outcome.cpu_seconds:.2f} s CPU)"
        )

    replays = time.perf_counter()
    compare(
        names,
        fleet,
        trace,
        ratios,
        {"seed": str(options.seed)},
        progress=progress,
        jobs=options.jobs,
    )
    replays = time.perf_counter() - replays
    total = sum(r["seconds"] for r in rows)
    total_cpu = sum(r["cpu_seconds"] for r in rows)
    wall = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"sim: {len(fleet.pms):,} PMs, {len(trace):,} events, seed {options.seed}")
    print(
        f"{'policy':<14}{'seconds':>10}{'us/event':>10}{'decisions/s':>14}{'refused':>10}"
        f"{'CPU s':>8}"
    )
    for r in rows:
        print(
            f"{r['policy']:<14}{r['seconds']:>10.2f}{r['us_per_event']:>10.1f}"
            f"{r['decisions_per_s']:>14,.0f}{r['refused']:>10,}{r['cpu_seconds']:>8.2f}"
        )
    print(
        f"{'total':<14}{total:>10.2f}    target < {TARGET_SECONDS:.0f} s    vs target"
        f" {total / TARGET_SECONDS:.2f}x"
    )
    if options.jobs > 1:
        print(
            f"{'wall, ' + str(options.jobs) + ' jobs':<14}{replays:>10.2f}    (the replays side by"
            f" side; vs target {replays / TARGET_SECONDS:.2f}x)"
        )
    print(
        f"(CPU {total_cpu:.2f} s, load average {os.getloadavg()[0]:.2f}; fleet and trace made"
        f" in {setup:.2f} s; wall {wall:.2f} s; peak RSS {rss:,.0f} MiB)"
    )
    if options.json:
        Path(options.json).write_text(
            json.dumps(
                {
                    "pms": len(fleet.pms),
                    "events": len(trace),
                    "seed": options.seed,
                    "setup_seconds": setup,
                    "total_seconds": total,
                    "total_cpu_seconds": total_cpu,
                    "jobs": options.jobs,
                    "replays_wall_seconds": replays,
                    "target_seconds": TARGET_SECONDS,
                    "peak_rss_mib": rss,
                    "load": os.getloadavg(),
                    "policies": rows,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
