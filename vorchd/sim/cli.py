"""
vorchd-sim: which allocation policy suits a fleet? Replay a workload on a simulated
fleet with the policy code the daemon runs, every policy over the same fleet and trace,
and see the difference. No daemon, Redis or libvirt is needed.

    vorchd-sim --pms '200x(32,131072,1000)' --generate 100000
    vorchd-sim --pm-file pm_file --flavor-file flavor_file --trace trace.csv --json
    vorchd-sim --from-url http://localhost --generate 20000 --plot whatif.png
    vorchd-sim --pms '50x(64,262144,2000)' --trace vmtable.csv --policies best-fit,worst-fit

The fleet is the sum of what C{--from-url} (a daemon's C{/v1/fleet}, VMs included),
C{--pm-file} (libvirt test-driver nodes) and C{--pms} give, numbered in that order. The
workload is a trace (vorchd's CSV, or the Azure public VM trace's C{vmtable.csv}) or
C{--generate N} events: Poisson arrivals of a flavor mix, each living a drawn lifetime,
at a rate that would keep C{--load} of the fleet's free room busy.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

import numpy as np

from vorchd.cli.exits import run_main
from vorchd.inventory import InputFileError, parse_flavor_file
from vorchd.model import RESOURCES, Flavor, Resources
from vorchd.sim import fleet as fleets
from vorchd.sim import report, traces
from vorchd.sim.fleet import SimError, SimFleet
from vorchd.sim.run import DEFAULT_SAMPLES, Outcome, compare, policy_names

PROG = "vorchd-sim"
DEFAULT_SEED = 1
DEFAULT_LIFETIME = "exp:3600"
DEFAULT_LOAD = 0.9
WORTH_PROCESSES = 500_000
"""Events times policies below which --jobs is not used: starting processes would cost
more than they save."""


def ratios_arg(text: str) -> dict[str, float]:
    """
    C{"cpu=4,ram=1.5"}: the ratios named (the others stay as they are).
    """
    ratios: dict[str, float] = {}
    for item in text.replace(" ", ",").split(","):
        if not item:
            continue
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not eq or name not in RESOURCES:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected RESOURCE=RATIO with RESOURCE one of {', '.join(RESOURCES)}"
            )
        try:
            ratio = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: {value!r} is not a number") from None
        if not ratio > 0 or ratio == float("inf"):
            raise argparse.ArgumentTypeError(f"{item!r}: a ratio is a positive number")
        ratios[name] = ratio
    return ratios


def option_arg(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key.strip(), value.strip()


def names_arg(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """
    The options saying what to replay and how, shared by C{vorchd-sim} and the admin's
    C{whatif}: the trace or its generation, the ratios, the policies' options, the output.
    """
    work = parser.add_argument_group("workload")
    source = work.add_mutually_exclusive_group()
    source.add_argument(
        "--trace",
        metavar="FILE",
        help="a trace: vorchd's CSV (time,event,vm,flavor) or the Azure vmtable.csv layout",
    )
    source.add_argument(
        "--generate",
        metavar="EVENTS",
        type=int,
        help="generate a trace of EVENTS creates and destroys (Poisson arrivals)",
    )
    work.add_argument(
        "--trace-format",
        choices=("auto", "csv", "azure"),
        default="auto",
        help="the trace's layout (auto: azure for 11 columns, else csv)",
    )
    work.add_argument(
        "--flavor-file",
        metavar="FILE",
        help="the flavors (default: the daemon's with --from-url, else a general-purpose set)",
    )
    work.add_argument("--seed", type=int, default=DEFAULT_SEED, help="for generation and random")
    work.add_argument(
        "--mix", metavar="TID:W,...", help="the generated flavor mix (default: by size)"
    )
    work.add_argument(
        "--lifetime",
        default=DEFAULT_LIFETIME,
        metavar="DIST",
        help="exp:MEAN, lognormal:MEAN,SIGMA, uniform:LOW,HIGH or fixed:S, in seconds"
        f" (default {DEFAULT_LIFETIME})",
    )
    rate = work.add_mutually_exclusive_group()
    rate.add_argument(
        "--load",
        type=float,
        default=DEFAULT_LOAD,
        help="arrivals keep this share of the fleet's free room busy on average"
        f" (default {DEFAULT_LOAD})",
    )
    rate.add_argument("--rate", type=float, help="arrivals per second instead of --load")
    work.add_argument("--save-trace", metavar="FILE.csv", help="write the trace replayed")
    run = parser.add_argument_group("run")
    run.add_argument(
        "--ratios",
        type=ratios_arg,
        default={},
        metavar="cpu=R,ram=R,disk=R",
        help="overcommit ratios (default: the daemon's with --from-url, else 1)",
    )
    run.add_argument(
        "--policy-option",
        type=option_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an [allocation] option for the policies (weights=cpu:1,ram:1)",
    )
    run.add_argument("--plugin-path", metavar="DIRS", help="where to look for plugin policies")
    run.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES, help="measurements over time per run"
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="policies replayed at once, each in a process (default: one per CPU; one at"
        f" a time below {WORTH_PROCESSES:,} events x policies); the results are the same"
        " as with 1",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print JSON, one object per policy")
    out.add_argument("--plot", metavar="FILE.png", help="draw a figure (needs matplotlib)")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def build_parser() -> argparse.ArgumentParser:
    """
    C{vorchd-sim}'s command line.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Replay a workload on a simulated fleet with every allocation policy"
        " (vorchd's own placement code) and compare them.",
    )
    where = parser.add_argument_group("fleet (any of them, added up in this order)")
    where.add_argument("--from-url", metavar="URL", help="a daemon's fleet now (GET /v1/fleet)")
    where.add_argument("--pm-file", metavar="FILE", help="a pm_file of test-driver node files")
    where.add_argument(
        "--pms",
        action="append",
        default=[],
        metavar="COUNTx(CPU,RAM_MIB,DISK_GIB)",
        help="PMs of a size, e.g. 200x(32,131072,1000); repeat or join with +",
    )
    parser.add_argument(
        "--policies",
        type=names_arg,
        metavar="A,B,...",
        help="the policies to compare (default: every built-in one and every plugin found)",
    )
    add_workload_arguments(parser)
    return parser


# -- from options to a run ---------------------------------------------------------------


def load_fleet(options: argparse.Namespace) -> SimFleet:
    """
    The fleet C{--from-url}, C{--pm-file} and C{--pms} add up to.

    @raise SimError: none was given, or one cannot be read.
    """
    fleet = SimFleet(())
    if options.from_url:
        fleet = fleets.fleet_from_document(fleets.fetch_document(options.from_url))
    if options.pm_file:
        fleet = fleet.plus(fleets.fleet_from_pm_file(options.pm_file).pms)
    for spec in options.pms:
        fleet = fleet.plus(fleets.fleet_from_sizes(fleets.parse_sizes(spec), spec).pms)
    if not fleet.pms:
        raise SimError("no fleet: give --pms, --pm-file or --from-url")
    return fleet


def catalog(options: argparse.Namespace, fleet: SimFleet) -> tuple[Flavor, ...]:
    """
    The flavors: C{--flavor-file}, else the daemon's, else L{traces.DEFAULT_FLAVORS}.
    """
    if options.flavor_file:
        return tuple(parse_flavor_file(options.flavor_file))
    return fleet.flavors or traces.DEFAULT_FLAVORS


def effective_ratios(options: argparse.Namespace, fleet: SimFleet) -> dict[str, float]:
    """
    C{--ratios} over the daemon's ratios, over 1.
    """
    base = dict(fleet.ratios or dict.fromkeys(RESOURCES, 1.0))
    return {r: float(options.ratios.get(r, base.get(r, 1.0))) for r in RESOURCES}


def free_room(fleet: SimFleet, ratios: Mapping[str, float]) -> Resources:
    """
    The room left on the fleet's open PMs, by the room rule.
    """
    table = fleet.table()
    free = np.maximum(table.effective(ratios) - table.used, 0)[:, table.open].sum(axis=1)
    return Resources(*(int(x) for x in free))


def workload(
    options: argparse.Namespace,
    fleet: SimFleet,
    flavors: Sequence[Flavor],
    ratios: Mapping[str, float],
) -> traces.Trace:
    """
    The trace C{--trace} reads or C{--generate} makes.

    @raise SimError: neither was given, or an option is malformed.
    @raise InputFileError: the trace file is malformed.
    """
    if options.trace:
        layout = options.trace_format
        if layout == "auto":
            layout = traces.detect_layout(options.trace)
        read = traces.read_azure_trace if layout == "azure" else traces.read_csv_trace
        return read(options.trace, flavors)
    if options.generate is None:
        raise SimError("no workload: give --trace FILE or --generate EVENTS")
    mix = traces.parse_mix(options.mix, flavors) if options.mix else traces.default_mix(flavors)
    lifetime = traces.parse_lifetime(options.lifetime)
    if options.rate is not None:
        rate = options.rate
    else:
        if not options.load > 0:
            raise SimError(f"--load {options.load}: must be positive")
        rate = traces.offered_rate(free_room(fleet, ratios), flavors, mix, lifetime, options.load)
    return traces.generate(options.generate, flavors, mix, rate, lifetime, options.seed)


def policy_options(options: argparse.Namespace) -> dict[str, str]:
    """
    The C{[allocation]} options the policies are made with: C{seed} (from C{--seed}),
    C{plugin_path}, and every C{--policy-option}.
    """
    out = {"seed": str(options.seed)}
    if options.plugin_path:
        out["plugin_path"] = options.plugin_path
    out.update(options.policy_option)
    return out


def simulate(
    options: argparse.Namespace,
    fleet: SimFleet,
    names: Sequence[str] | None,
    err: TextIO,
) -> tuple[traces.Trace, dict[str, float], list[Outcome]]:
    """
    Everything between the fleet and the output: the trace (saved if asked), the ratios,
    and a run of each policy, with progress on C{err}.

    @param names: the policies, or C{None} for every one available.
    """
    flavors = catalog(options, fleet)
    ratios = effective_ratios(options, fleet)
    trace = workload(options, fleet, flavors, ratios)
    if options.save_trace:
        try:
            traces.write_csv_trace(trace, options.save_trace)
        except OSError as e:
            raise SimError(f"--save-trace {options.save_trace}: {e.strerror or e}") from None
    allocation = policy_options(options)
    try:
        wanted = policy_names(names, allocation)
    except ValueError as e:
        raise SimError(str(e)) from None

    def progress(outcome: Outcome) -> None:
        if not options.quiet:
            print(
                f"{PROG}: {outcome.policy}: {outcome.decisions:,} decisions in"
                f" {outcome.seconds:.2f} s",
                file=err,
                flush=True,
            )

    # Processes only where they pay for their start (about a second each).
    jobs = options.jobs if len(trace) * len(wanted) >= WORTH_PROCESSES else 1
    outcomes = compare(wanted, fleet, trace, ratios, allocation, options.samples, progress, jobs)
    return trace, ratios, outcomes


def output(
    options: argparse.Namespace,
    fleet: SimFleet,
    trace: traces.Trace,
    ratios: Mapping[str, float],
    outcomes: Sequence[Outcome],
    out: TextIO,
    err: TextIO,
    current: str | None = None,
) -> None:
    """
    The table (or with C{--json} the JSON) on C{out}, and the figure C{--plot} asks for.

    @param current: the policy in force, marked in the table.
    """
    if options.json:
        print(report.outcomes_json(outcomes), file=out)
    else:
        print(report.report(fleet, trace, ratios, outcomes, current), file=out)
    if options.plot:
        from vorchd.sim.plot import plot

        title = f"{len(fleet.pms):,} PMs, {len(trace):,} events: {trace.source}"
        plot(outcomes, options.plot, title)
        if not options.quiet:
            print(f"{PROG}: figure written to {options.plot}", file=err)


def main(argv: Sequence[str] | None = None) -> int:
    """
    The C{vorchd-sim} console script.

    @return: the exit status: 0 done, 1 failed (a file or option it cannot use), 2 wrong
        usage.
    """

    def work(options: argparse.Namespace) -> None:
        fleet = load_fleet(options)
        trace, ratios, outcomes = simulate(options, fleet, options.policies, sys.stderr)
        output(options, fleet, trace, ratios, outcomes, sys.stdout, sys.stderr)

    return run_main(PROG, build_parser(), argv, work, (SimError, InputFileError))


if __name__ == "__main__":
    sys.exit(main())
