"""
C{vorchd-admin whatif [POLICY...]}: what a switch of policy would do to the fleet as it
is now, before making it. The live fleet (a daemon's C{/v1/fleet} document, VMs
included) takes a generated or given trace once under the policy in force and once under
each policy named (by default every one the daemon could use); the table marks the one in
force.

The admin console only fetches the document (and the daemon's C{[allocation]} options)
and hands them to L{whatif} with the command's arguments; everything else is here. The
table is C{vorchd-sim}'s, with the policy in force marked C{(now)}; ratios are the
daemon's unless C{--ratios} says otherwise, so a change of ratios can be tried too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from vorchd.inventory import InputFileError
from vorchd.sim import cli
from vorchd.sim.fleet import SimError, fleet_from_document
from vorchd.sim.run import Outcome

DEFAULT_EVENTS = 20_000
"""How many events C{whatif} generates when given no trace."""


def build_parser(prog: str = "vorchd-admin whatif") -> argparse.ArgumentParser:
    """
    C{whatif}'s arguments: the policies, then C{vorchd-sim}'s workload options.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Replay a workload on the fleet as it is now under the policy in force"
        " and under others, and compare (nothing on the fleet changes).",
    )
    parser.add_argument(
        "policies",
        nargs="*",
        metavar="POLICY",
        help="policies to compare with the one in force (default: every one available)",
    )
    cli.add_workload_arguments(parser)
    return parser


def policies_for(document: Mapping, wanted: Sequence[str]) -> list[str] | None:
    """
    The policy in force first, then those C{wanted} (C{None}: every one available).
    """
    if not wanted:
        return None
    current = str(document.get("policy") or "")
    return ([current] if current and current not in wanted else []) + list(wanted)


def whatif(
    document: Mapping,
    argv: Sequence[str] = (),
    policy_options: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> list[Outcome]:
    """
    Run C{whatif} with C{argv} (its arguments, after the word C{whatif}) on the fleet of
    C{document}: print the comparison (or with C{--json} the JSON) on C{out}, progress on
    C{err}. With neither C{--trace} nor C{--generate}, L{DEFAULT_EVENTS} are generated.

    @param document: the daemon's C{/v1/fleet} (L{vorchd.fleet.Fleet.view}).
    @param policy_options: the daemon's C{[allocation]} options (C{weights},
        C{plugin_path}, ...), under what C{argv} says.
    @return: the runs, the policy in force first when policies are named.
    @raise SimError: an argument, the document or the trace is unusable; its message is
        for the administrator.
    @raise InputFileError: the trace or flavor file is malformed.
    @raise SystemExit: C{argv} is malformed or asks for C{--help} (argparse's).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    options = build_parser().parse_args(list(argv))
    if options.trace is None and options.generate is None:
        options.generate = DEFAULT_EVENTS
    base = dict(policy_options or {})
    options.policy_option = list(base.items()) + list(options.policy_option)
    if options.plugin_path is None and base.get("plugin_path"):
        options.plugin_path = base["plugin_path"]
    fleet = fleet_from_document(document)
    current = fleet.policy
    trace, ratios, outcomes = cli.simulate(
        options, fleet, policies_for(document, options.policies), err
    )
    cli.output(options, fleet, trace, ratios, outcomes, out, err, current)
    return outcomes


def main_with_document(
    document: Mapping, argv: Sequence[str], policy_options: Mapping[str, str] | None = None
) -> int:
    """
    L{whatif} as a one-shot command: its exit status (0 done, 1 failed, 2 wrong usage),
    messages on stderr.
    """
    try:
        whatif(document, argv, policy_options)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    except (SimError, InputFileError) as e:
        print(f"whatif: {e}", file=sys.stderr)
        return 1
    return 0
