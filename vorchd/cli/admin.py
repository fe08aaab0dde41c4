"""
vorchd-admin: the administrator's console for a running vorchd's admin port.

    vorchd-admin COMMAND [ARGUMENTS]  run one command: its answer on stdout
    vorchd-admin                      a vorchd> prompt with the same commands
    vorchd-admin --help               the commands (vorchd.admincmds.COMMANDS)

Where to connect and as whom come from the daemon's own ini file and admin password
file, so on the daemon's machine, as root, C{vorchd-admin status} just works.

The console's parts, each in a module of its own:

  - L{vorchd.admincmds}: the table of commands (arguments, help, how answers print),
    which the daemon's avatar reads too;
  - L{vorchd.cli.admin_connect}: where to connect, the connection, error messages;
  - L{vorchd.cli.admin_format}: the daemon's answers as text (pure);
  - L{vorchd.cli.admin_parser}: the command line, built from the table;
  - L{vorchd.cli.admin_shell}: the prompt, its help and completion from the table;
  - this module: one command, or the prompt, and the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from twisted.internet import defer, task

from vorchd.cli.admin_connect import (
    AdminCLIError,
    AdminConnection,
    Target,
    explain,
    resolve_target,
)
from vorchd.cli.admin_parser import PROG, UsageError, build_parser, values_of
from vorchd.cli.admin_shell import prompt


def one_shot(target: Target, options: argparse.Namespace) -> None:
    """
    Run one command: its answer on stdout, or why it failed on stderr.

    @raise SystemExit: always (C{task.react}'s way), with 0 or 1.
    """

    async def run(reactor) -> None:
        connection = AdminConnection(reactor, target)
        try:
            await connection.open()
            print(await connection.run(options.command, values_of(options)))
        except Exception as e:
            print(f"{PROG}: {explain(e, target)}", file=sys.stderr)
            raise SystemExit(1) from None
        finally:
            connection.close()

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


def main(argv: Sequence[str] | None = None) -> int:
    """
    The C{vorchd-admin} console script.

    @return: the exit status: 0 done, 1 failed, 2 wrong usage (a one-shot command exits
        with it instead).
    """
    parser = build_parser()
    try:
        options = parser.parse_args(argv)
    except UsageError as e:
        usage_of = e.parser or parser
        usage_of.print_usage(sys.stderr)
        print(f"{usage_of.prog}: error: {e}", file=sys.stderr)
        return 2
    try:
        target = resolve_target(options, os.environ)
        if options.command is None:
            return prompt(target)
        one_shot(target, options)
    except AdminCLIError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
