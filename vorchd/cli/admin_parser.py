"""
vorchd-admin's command line (argparse), built from the table of admin commands
(L{vorchd.admincmds.COMMANDS}): one sub-command each, its arguments typed by their kinds.
The prompt parses its lines with the same parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from vorchd.admincmds import COMMANDS, Argument, BadArgument
from vorchd.cli.admin_connect import PASSWORD_ENV
from vorchd.config import DEFAULT_CONFIG

PROG = "vorchd-admin"

# The parser's own names: a command's argument may not take one of them.
RESERVED = {"command", "json", "help", "config", "host", "port", "user", "password_file"}


class UsageError(argparse.ArgumentTypeError):
    """
    A command given arguments it cannot take (exit status 2).

    It is an C{ArgumentTypeError} so that the argument converters can raise it to
    argparse; L{Parser} raises it in turn, so the prompt reports it and carries on.
    """

    def __init__(self, message: str, parser: argparse.ArgumentParser | None = None):
        super().__init__(message)
        self.parser = parser


class Parser(argparse.ArgumentParser):
    """
    argparse, but a usage error raises L{UsageError} (so the prompt reports it and goes
    on); C{commands} holds the parser of each command, by name.
    """

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str):
        raise UsageError(message, self)


EPILOG = f"""\
With no command, {PROG} opens a prompt (vorchd> ) with the same commands.

Policies: first-fit, best-fit, worst-fit, round-robin, random, least-vms, weighted (the
daemon says which it has); "spread" is an alias of worst-fit, "pack" of best-fit.

Where to connect comes from the daemon's ini file (--config, else $VORCHD_CONFIG, else
{DEFAULT_CONFIG} here or in vorchd's checkout): its [admin] interface and port (auto:
the REST port + 10000, $VORCHD_PORT included). The password comes from --password-file,
else ${PASSWORD_ENV}, else the ini's [admin] passwd_file; never from the command line.
Exit status: 0 done, 1 failed (the message says why), 2 wrong usage."""


def build_parser(prog: str | None = PROG) -> Parser:
    """
    The command line's parser. With C{prog=None}, the parser of the prompt's commands:
    their usage lines then read C{drain PMID}, not C{vorchd-admin drain PMID}.
    """
    parser = Parser(
        prog=prog or PROG,
        description="Tune a running vorchd through its admin port.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", help=f"the daemon's ini file (default: $VORCHD_CONFIG, else {DEFAULT_CONFIG})"
    )
    parser.add_argument("--host", help="the admin port's address (default: from the ini)")
    parser.add_argument("--port", type=int, help="the admin port (default: from the ini)")
    parser.add_argument("--user", help="who logs in (default: the password file's first)")
    parser.add_argument(
        "--password-file", help="user:password lines (default: the ini's passwd_file)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    parser.commands = {}
    for command in COMMANDS.values():
        # A command that takes the rest of the line takes its options too (--help
        # included): no word of it is an option of this parser's.
        rest = any(a.rest for a in command.arguments)
        each = sub.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            prog=f"{prog} {command.name}" if prog else command.name,
            **({"prefix_chars": "\0", "add_help": False} if rest else {}),
        )
        if command.json:
            each.add_argument("--json", action="store_true", help="the daemon's answer as JSON")
        for argument in command.arguments:
            if argument.name in RESERVED:
                raise ValueError(f"{command.name}: an argument may not be named {argument.name}")
            if argument.flag:
                each.add_argument(f"--{argument.name}", action="store_true", help=argument.help)
                continue
            if argument.rest:
                each.add_argument(
                    argument.name,
                    nargs=argparse.REMAINDER,
                    metavar=argument.shown,
                    help=argument.help,
                )
                continue
            each.add_argument(
                argument.name,
                nargs="*" if argument.keys else "?" if argument.optional else None,
                type=_converter(argument),
                metavar=argument.shown,
                help=argument.help,
            )
        parser.commands[command.name] = each
    return parser


def _converter(argument: Argument) -> Callable[[str], object]:
    """
    The argparse type of C{argument}: a word to its value, or a C{KEY=VALUE} word to a
    C{(key, value)} pair. It raises L{UsageError} saying what is wrong with the word.
    """
    kind, keys = argument.kind, argument.keys

    def plain(word: str) -> object:
        try:
            return kind.parse(word)
        except BadArgument as e:
            raise UsageError(f"{kind.noun} {e}") from None

    def pair(word: str) -> tuple[str, object]:
        key, equals, value = word.partition("=")
        if not equals or key not in keys:
            forms = [f"{k}={kind.metavar}" for k in keys]
            raise UsageError(f"{word!r}: expected {', '.join(forms[:-1])} or {forms[-1]}")
        try:
            return key, kind.parse(value)
        except BadArgument as e:
            raise UsageError(f"{word!r}: {e}") from None

    return pair if keys else plain


def values_of(options: argparse.Namespace) -> dict[str, object]:
    """
    The arguments of the command C{options} name, by name (a C{KEY=VALUE} argument as a
    dict), and C{json} for a command that takes C{--json}.
    """
    command = COMMANDS[options.command]
    values: dict[str, object] = {}
    for argument in command.arguments:
        value = getattr(options, argument.name)
        values[argument.name] = dict(value or ()) if argument.keys else value
    if command.json:
        values["json"] = options.json
    return values
