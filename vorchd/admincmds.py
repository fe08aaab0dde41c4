"""
The admin commands, in one table that both ends of the admin port read.

Each L{Command} of L{COMMANDS} is one thing an administrator can do: its name, a
one-line help, its arguments and what their values are (an L{Argument} of a L{Kind}),
and how vorchd-admin prints the daemon's answer. From this table alone:

  - the daemon's avatar (L{vorchd.admin.Admin}) takes a call only for a command of the
    table, with its arguments checked and named (L{bind}), and runs the avatar's method
    of the same name;
  - vorchd-admin builds its command line and its prompt's help and completion
    (L{vorchd.cli.admin_parser}, L{vorchd.cli.admin_shell}), makes the call
    (L{to_call}) and prints the answer (L{Command.show}).

Adding a command is one L{Command} here plus an C{async def} of the same name on
L{vorchd.admin.Admin} that takes the arguments by name.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import field, frozen

from vorchd.adminkinds import (  # noqa: F401 (the kinds, read from here too)
    ALIASES,
    FLAG,
    PMID,
    POLICY,
    RATIO,
    WORDS,
    BadArgument,
    Kind,
    is_whole_number,
    whole_number,
)
from vorchd.cli.admin_format import (
    format_drained,
    format_moved,
    format_policies,
    format_pruned,
    format_ratios,
    format_rediscovery,
    format_status,
    run_whatif,
)
from vorchd.model import RESOURCES

# --- Commands and their arguments ------------------------------------------------------------


@frozen
class Argument:
    """
    One argument of a command.

    @ivar name: the keyword the avatar's method takes it by.
    @ivar kind: what its values are.
    @ivar help: what it is, for C{help COMMAND}.
    @ivar optional: whether it may be left out; the method then gets C{None}.
    @ivar keys: for an argument typed as C{KEY=VALUE} words (any of them, in any order):
        the keys. Each travels as a keyword argument of the call, and the method gets
        those given as one dict, in this order.
    @ivar metavar: how usage lines show it, if not as its kind's metavar.

    An argument of kind L{FLAG} is typed as C{--name}, travels as a keyword argument
    when given, and the method gets C{True} or C{False}. A C{rest} argument takes every
    word left on the line (options included), as a list.
    """

    name: str
    kind: Kind
    help: str | None = None
    optional: bool = False
    keys: tuple[str, ...] = field(default=(), converter=tuple)
    metavar: str | None = None
    rest: bool = False

    @property
    def flag(self) -> bool:
        return self.kind is FLAG

    @property
    def shown(self) -> str:
        """
        How usage lines show it: C{PMID}, C{RESOURCE=RATIO}, C{--evacuate}.
        """
        if self.flag:
            return f"--{self.name}"
        return self.metavar or self.kind.metavar


@frozen
class Command:
    """
    One admin command.

    @ivar name: the word that runs it, and the name of the avatar's method.
    @ivar help: what it does, in one line.
    @ivar arguments: its arguments, the plain ones in the order they are typed and sent.
    @ivar format: the daemon's answer -> the text vorchd-admin prints.
    @ivar json: whether C{--json} prints the daemon's answer as JSON instead.
    @ivar asks: the command whose answer C{format} reads, if not this one's (it is called
        with no arguments).
    @ivar local: for a command vorchd-admin runs itself on what the daemon answers (its
        method is called with no arguments): the answer and the command's arguments ->
        the text to print.
    @ivar progress: for a long command that reports as it goes: one report -> the line
        vorchd-admin prints for it. The caller then passes a C{progress} keyword (a
        C{pb.Referenceable} whose C{remote_report} gets each report), and the avatar's
        method a C{progress} callable (or C{None}).
    """

    name: str
    help: str
    arguments: tuple[Argument, ...] = field(default=(), converter=tuple)
    format: Callable[[Any], str] = str
    json: bool = False
    asks: str | None = None
    progress: Callable[[Any], str] | None = None
    local: Callable[[Any, Mapping[str, object]], str] | None = None

    def __attrs_post_init__(self) -> None:
        if self.asks is not None and self.arguments:
            raise ValueError(f"{self.name}: a command that asks another takes no arguments")

    @property
    def plain(self) -> list[Argument]:
        """
        The arguments sent in order (those not made of C{KEY=VALUE} words, nor flags).
        """
        return [a for a in self.arguments if not a.keys and not a.flag]

    def usage(self) -> str:
        """
        Its usage line: C{rediscover [PMID]}.
        """
        words = [self.name, "[--json]"] if self.json else [self.name]
        for a in self.arguments:
            words.append(
                f"[{a.shown} ...]"
                if a.keys or a.rest
                else f"[{a.shown}]"
                if a.optional or a.flag
                else a.shown
            )
        return " ".join(words)

    def show(self, answer: object, as_json: bool = False) -> str:
        """
        The daemon's answer as vorchd-admin prints it.
        """
        return json.dumps(answer, indent=2) if as_json and self.json else self.format(answer)


def _commands(*commands: Command) -> dict[str, Command]:
    return {c.name: c for c in commands}


COMMANDS = _commands(
    Command(
        "status",
        "every PM's state, free room and VMs, then the policy and ratios in force",
        format=format_status,
        json=True,
    ),
    Command(
        "policies",
        "the placement policies the daemon can use (* marks the one in force)",
        format=lambda status: format_policies(status["policies"], status["policy"], ALIASES),
        # The daemon's own "policies" answers the names alone: status says which is in force.
        asks="status",
    ),
    Command(
        "policy",
        "switch to policy NAME from the next placement on, or show the one in force",
        [Argument("name", POLICY, "spread = worst-fit, pack = best-fit", optional=True)],
    ),
    Command(
        "ratios",
        "set overcommit ratios (free = capacity * ratio - used), or show them",
        [Argument("wanted", RATIO, "e.g. cpu=2.0", keys=RESOURCES, metavar="RESOURCE=RATIO")],
        format=format_ratios,
    ),
    Command(
        "drain",
        "give PM PMID no new VMs; its VMs stay, or with --evacuate move away one by one",
        [
            Argument("pmid", PMID),
            Argument(
                "evacuate",
                FLAG,
                "then move its VMs live to other PMs (rerun it to move what is left)",
            ),
        ],
        format=format_drained,
        progress=format_moved,
    ),
    Command(
        "enable",
        "open a drained PM to new VMs again",
        [Argument("pmid", PMID)],
        format=lambda pmid: f"PM {pmid} enabled: it takes new VMs again",
    ),
    Command(
        "rediscover",
        "reconnect to PM PMID (or every PM) and show what it reports",
        [Argument("pmid", PMID, optional=True)],
        format=format_rediscovery,
    ),
    Command(
        "whatif",
        "replay a workload on the fleet as it is now under the policy in force and others"
        " (nothing changes; whatif --help for its options)",
        [
            Argument(
                "argv",
                WORDS,
                "policies to compare, then vorchd-sim's workload options",
                optional=True,
                rest=True,
            )
        ],
        local=run_whatif,
    ),
    Command(
        "prune",
        "delete the image base copies that no VM uses any more, on every PM",
        format=format_pruned,
    ),
)


def command_named(name: str) -> Command:
    """
    The command called C{name}. @raise BadArgument: there is none.
    """
    try:
        return COMMANDS[name]
    except KeyError:
        raise BadArgument(
            f"unknown command {name!r}; the commands are {', '.join(COMMANDS)}"
        ) from None


# --- The call on the wire: made by vorchd-admin, checked by the daemon ------------------------


def to_call(command: Command, values: Mapping[str, object]) -> tuple[str, tuple, dict]:
    """
    The remote call that runs C{command} with C{values} (its arguments by name, as the
    parser gives them; those left out may be missing or C{None}).

    @return: the command the daemon is asked, its positional arguments (the plain ones,
        up to the last one given), and its keyword arguments (the keys given of a
        C{KEY=VALUE} argument).
    """
    if command.asks is not None:
        return command.asks, (), {}
    if command.local is not None:
        return command.name, (), {}
    args = [values.get(a.name) for a in command.plain]
    while args and args[-1] is None:
        args.pop()
    kw: dict[str, object] = {}
    for a in command.arguments:
        if a.keys:
            kw.update(values.get(a.name) or {})
        elif a.flag and values.get(a.name):
            kw[a.name] = True
    return command.name, tuple(args), kw


def bind(command: Command, args: Sequence, kw: Mapping[str, object]) -> dict[str, object]:
    """
    The arguments of a call of C{command} as the daemon received them (C{args}, C{kw}),
    checked and by name, for the avatar's method: an optional argument left out (or sent
    as C{None}) is C{None}, a C{KEY=VALUE} argument the dict of the keys given.

    @raise BadArgument: too many arguments, a missing, unknown or repeated one, or a value
        its kind refuses; the message says which.
    """
    plain = {a.name: a for a in command.plain}
    flags = {a.name for a in command.arguments if a.flag}
    if len(args) > len(plain):
        raise BadArgument(f"{command.name}: too many arguments; usage: {command.usage()}")
    received = dict(zip(plain, args, strict=False))
    keyed: dict[str, object] = {}
    for key, value in kw.items():
        if key in plain or key in flags:
            if key in received:
                raise BadArgument(f"{command.name}: {key} given twice")
            received[key] = value
        elif any(key in a.keys for a in command.arguments):
            keyed[key] = value
        else:
            raise BadArgument(f"{command.name}: no argument {key!r}; usage: {command.usage()}")
    values: dict[str, object] = {}
    for a in command.arguments:
        if a.keys:
            values[a.name] = {
                k: _checked(a, keyed[k], f"{k} ") for k in a.keys if keyed.get(k) is not None
            }
        elif received.get(a.name) is not None:
            values[a.name] = _checked(a, received[a.name])
        elif a.flag:
            values[a.name] = False
        elif a.optional:
            values[a.name] = None
        else:
            raise BadArgument(f"{command.name}: {a.shown} missing; usage: {command.usage()}")
    return values


def _checked(argument: Argument, value: object, key: str = "") -> object:
    try:
        return argument.kind.check(value)
    except BadArgument as e:
        raise BadArgument(f"{key}{argument.kind.noun} {e}") from None
