"""
vorch: the command-line client of a vorchd's REST API.

    vorch vm create NAME --type T --image I   create a VM; waits until it runs
    vorch vm show VMID                        one VM
    vorch vm info VMID                        one VM as its hypervisor has it: state, domain
    vorch vm stop|start|reboot|suspend|resume VMID
                                              change a VM's state; waits until done
    vorch vm resize VMID TID                  give a VM another instance type
    vorch vm migrate VMID [PMID]              move a VM to a PM (without one, the policy's)
    vorch vm destroy VMID                     stop and delete a VM
    vorch vm list [--pm PMID]                 every VM (or those on one PM)
    vorch types                               the instance types
    vorch images                              the images
    vorch pm list                             every PM with its capacity, free room and VMs
    vorch pm show PMID                        one PM
    vorch pm vms PMID                         the vmids on one PM
    vorch volume create NAME --size GIB       create a block volume
    vorch volume show|detach|destroy VOLUMEID one volume; detach it; delete it
    vorch volume attach VOLUMEID VMID         attach a volume to a VM
    vorch volume list                         every volume
    vorch watch [--count N]                   the fleet's changes, one line each, as they come
    vorch completion bash                     a bash completion script

Output is a table or a line, or the daemon's JSON with C{--json} (for C{vm list} and C{pm
list}, a JSON array of the records of C{vm/query} and C{pm/query}; for C{watch}, one JSON
object a line per event). The server is C{--url}, else C{$VORCH_URL}, else C{http://localhost}.

Exit status: 0 done (C{watch}: also when interrupted), 1 failed (one line on stderr says
what and why: the daemon's C{X-Vorchd-Reason} when it gave one), 2 wrong usage.

The module reads top to bottom: talking to the daemon (calls, and its event stream); pure
formatters from answers and events to text; the commands; the command line and
completion; C{main}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from vorchd.cli import vorch_volumes
from vorchd.cli.exits import run_main
from vorchd.cli.vorch_client import (
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    PROG,
    URL_ENV,
    Client,
    VorchError,
)
from vorchd.cli.vorch_commands import (
    ACTIONS,
    images,
    pm_list,
    pm_show,
    pm_vms,
    types,
    vm_act,
    vm_create,
    vm_destroy,
    vm_info,
    vm_list,
    vm_migrate,
    vm_resize,
    vm_show,
)
from vorchd.cli.vorch_events import (
    watch,
)

# --- The command line -------------------------------------------------------------------

# The command tree, for the parser and for completion: group -> command -> its options.
TREE: dict[str, dict[str, tuple[str, ...]]] = {
    "vm": {
        "create": ("--type", "--image"),
        "show": (),
        "info": (),
        **dict.fromkeys(ACTIONS, ()),
        "resize": (),
        "migrate": (),
        "destroy": (),
        "list": ("--pm",),
    },
    "types": {},
    "images": {},
    "pm": {"list": (), "show": (), "vms": ()},
    "volume": vorch_volumes.COMMANDS,
    "watch": {},
    "completion": {"bash": ()},
}
# The options of the commands that are a group of their own (no subcommands).
GROUP_OPTIONS: dict[str, tuple[str, ...]] = {"watch": ("--count",)}
GLOBAL_OPTIONS = ("--url", "--timeout", "--json", "--help")
# The options followed by a value, which completion leaves to the user.
VALUE_OPTIONS = ("--url", "--timeout", "--type", "--image", "--pm", "--count", "--size")

EPILOG = f"""\
The server is --url, else ${URL_ENV}, else {DEFAULT_URL}. --url, --timeout and --json may
also follow the command (vorch vm list --json).

Exit status: 0 done, 1 failed (a one-line message says why), 2 wrong usage.
Shell completion: eval "$(vorch completion bash)"
"""


def url_arg(text: str) -> str:
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {text!r}")
    return text


def timeout_arg(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return seconds


def count_arg(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count <= 0:
        raise argparse.ArgumentTypeError(f"not a positive number of events: {text!r}")
    return count


def id_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer id: {text!r}") from None


def common_options(suppress: bool) -> argparse.ArgumentParser:
    """
    The options every command takes. On the commands they default to nothing, so that an
    option given before the command is not undone by the command's parser.
    """
    default: Callable[[Any], Any] = (lambda _: argparse.SUPPRESS) if suppress else (lambda v: v)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--url",
        type=url_arg,
        default=default(None),
        help=f"the daemon's REST API (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--timeout",
        type=timeout_arg,
        default=default(DEFAULT_TIMEOUT),
        metavar="SECONDS",
        help=f"how long to wait for an answer (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the daemon's JSON instead of a table",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """
    The command line's parser.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Command-line client of a vorchd's REST API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common_options(suppress=False)],
    )
    common = [common_options(suppress=True)]
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", title="commands")
    groups.required = True

    vm = groups.add_parser(
        "vm", help="create, show, change, move, destroy and list VMs"
    ).add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    create = vm.add_parser(
        "create", parents=common, help="create a VM and wait until it runs (prints it)"
    )
    create.add_argument("name", metavar="NAME", help="any text; names need not be unique")
    create.add_argument("--type", type=id_arg, required=True, metavar="TID", help="vorch types")
    create.add_argument("--image", type=id_arg, required=True, metavar="ID", help="vorch images")
    create.set_defaults(run=vm_create)
    show = vm.add_parser("show", parents=common, help="one VM, with its MAC and IP addresses")
    show.add_argument("vmid", type=id_arg, metavar="VMID")
    show.set_defaults(run=vm_show)
    info = vm.add_parser(
        "info",
        parents=common,
        help="one VM as its hypervisor has it now: its state, domain, MAC and IP addresses",
    )
    info.add_argument("vmid", type=id_arg, metavar="VMID")
    info.set_defaults(run=vm_info)
    for action, (does, _, _) in ACTIONS.items():
        acting = vm.add_parser(action, parents=common, help=does)
        acting.add_argument("vmid", type=id_arg, metavar="VMID")
        acting.set_defaults(run=vm_act)
    resize = vm.add_parser(
        "resize", parents=common, help="give a VM another instance type, on its PM"
    )
    resize.add_argument("vmid", type=id_arg, metavar="VMID")
    resize.add_argument("type", type=id_arg, metavar="TID", help="vorch types")
    resize.set_defaults(run=vm_resize)
    migrate = vm.add_parser(
        "migrate", parents=common, help="move a VM to another PM (live if it runs)"
    )
    migrate.add_argument("vmid", type=id_arg, metavar="VMID")
    migrate.add_argument(
        "pmid", type=id_arg, nargs="?", metavar="PMID", help="without it, the policy picks"
    )
    migrate.set_defaults(run=vm_migrate)
    destroy = vm.add_parser("destroy", parents=common, help="stop and delete a VM")
    destroy.add_argument("vmid", type=id_arg, metavar="VMID")
    destroy.set_defaults(run=vm_destroy)
    listing = vm.add_parser("list", parents=common, help="every VM (or those on one PM)")
    listing.add_argument("--pm", type=id_arg, metavar="PMID", help="only the VMs on this PM")
    listing.set_defaults(run=vm_list)

    groups.add_parser("types", parents=common, help="the instance types").set_defaults(run=types)
    groups.add_parser("images", parents=common, help="the images").set_defaults(run=images)

    pm = groups.add_parser("pm", help="list and show PMs").add_subparsers(
        dest="command", metavar="COMMAND", title="commands", required=True
    )
    pm.add_parser(
        "list", parents=common, help="every PM's capacity, free room and VMs"
    ).set_defaults(run=pm_list)
    show = pm.add_parser("show", parents=common, help="one PM")
    show.add_argument("pmid", type=id_arg, metavar="PMID")
    show.set_defaults(run=pm_show)
    vms = pm.add_parser("vms", parents=common, help="the vmids on one PM")
    vms.add_argument("pmid", type=id_arg, metavar="PMID")
    vms.set_defaults(run=pm_vms)

    vorch_volumes.add_parser(groups, common, id_arg)

    watching = groups.add_parser(
        "watch",
        parents=common,
        help="print the fleet's changes as they come (Ctrl-C ends it)",
        description="Print each change of the fleet as the daemon sends it on /v1/events: one "
        "line each, or one JSON object each with --json. Ctrl-C ends it (exit status 0).",
    )
    watching.add_argument(
        "--count",
        type=count_arg,
        metavar="N",
        help="stop after N changes (the hello that starts the stream is not one)",
    )

    completion = groups.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=["bash"], metavar="SHELL", help="bash")
    return parser


def bash_completion(
    tree: Mapping[str, Mapping[str, Sequence[str]]] = TREE,
    group_options: Mapping[str, Sequence[str]] = GROUP_OPTIONS,
) -> str:
    """
    A bash completion script for C{vorch}, from the command tree.
    """
    options = " ".join(GLOBAL_OPTIONS)
    cases = []
    for group, commands in tree.items():
        if commands:
            cases.append(f'        "{group}") words="{" ".join(commands)}" ;;')
        elif group in group_options:
            words = " ".join([*group_options[group], *GLOBAL_OPTIONS])
            cases.append(f'        "{group}") words="{words}" ;;')
        else:
            cases.append(f'        "{group}") words="" ;;')
        for command, command_options in commands.items():
            words = " ".join([*command_options, *GLOBAL_OPTIONS])
            cases.append(f'        "{group} {command}") words="{words}" ;;')
    case_lines = "\n".join(cases)
    values = "|".join(VALUE_OPTIONS)
    return f"""\
# bash completion for vorch; load with: eval "$(vorch completion bash)"
_vorch() {{
    local cur prev path words i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    case "$prev" in
        {values}) return 0 ;;
    esac
    path=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            {values}) ((i++)) ;;
            -*) ;;
            *) path="${{path:+$path }}${{COMP_WORDS[i]}}" ;;
        esac
    done
    case "$path" in
        "") words="{" ".join(tree)} {options}" ;;
{case_lines}
        *) words="{options}" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F _vorch vorch
"""


# --- main -------------------------------------------------------------------------------


def run(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> None:
    """
    Run the parsed command, printing its answer to C{out}.

    @raise VorchError: it failed.
    """
    if options.group == "completion":
        out.write(bash_completion())
        return
    url = options.url or environ.get(URL_ENV) or DEFAULT_URL
    try:
        url_arg(url)
    except argparse.ArgumentTypeError as e:
        raise VorchError(f"${URL_ENV}: {e}") from None
    client = Client(url, options.timeout)
    if options.group == "watch":
        watch(client, options, out)
        return
    try:
        answer, table = options.run(client, options)
    except (KeyError, TypeError, AttributeError) as e:
        where = f"vorchd at {client.url}"
        raise VorchError(f"{where} answered in a form vorch does not know ({e!r})") from None
    if options.json:
        out.write(json.dumps(answer, ensure_ascii=False) + "\n")
    else:
        out.write(table)
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """
    The C{vorch} console script.

    @return: the exit status: 0 done, 1 failed, 2 wrong usage.
    """
    return run_main(
        PROG,
        build_parser(),
        argv,
        lambda options: run(options, os.environ, sys.stdout),
        (VorchError,),
    )


if __name__ == "__main__":
    sys.exit(main())
