"""
vorchd-admin's C{vorchd> } prompt: the commands of the table
(L{vorchd.admincmds.COMMANDS}), with help and tab completion drawn from it, and the
reactor in a thread beside it.
"""

from __future__ import annotations

import cmd
import shlex
import sys
import threading
from collections.abc import Callable, Iterable, Mapping

from twisted.internet import defer, threads
from twisted.spread import pb

from vorchd.admincmds import ALIASES, COMMANDS
from vorchd.cli.admin_connect import AdminCLIError, AdminConnection, Target, explain
from vorchd.cli.admin_parser import UsageError, build_parser, values_of


class Shell(cmd.Cmd):
    """
    The C{vorchd> } prompt: the one-shot commands, with help, and tab completion of
    command names and of each argument by its kind (policy names, PM ids, C{KEY=}).

    @param run: C{run(name, values)} runs the command C{name} with C{values} (its
        arguments by name) and answers its text, or raises L{AdminCLIError}.
    @param policies: the policy names to complete (the daemon's, fetched once).
    @param pmids: the PM ids to complete.
    """

    prompt = "vorchd> "
    QUIT = ("quit", "exit")

    def __init__(
        self,
        run: Callable[[str, Mapping[str, object]], str],
        policies: Iterable[str] = (),
        pmids: Iterable[int] = (),
        stdin=None,
        stdout=None,
        stderr=None,
    ):
        super().__init__(stdin=stdin, stdout=stdout)
        self.stderr = stderr or sys.stderr
        self.run = run
        policies = list(policies)
        # The words that complete an argument, by the name its kind gives (Kind.completes).
        self.known = {
            "policies": policies + [a for a, name in ALIASES.items() if name in policies],
            "pmids": [str(pmid) for pmid in pmids],
        }
        self.parser = build_parser(prog=None)
        self.failed = False
        if not self.stdin.isatty():
            # Commands piped in: no prompt echoed into the output, no line editing.
            self.use_rawinput = False
            self.prompt = ""

    def loop(self) -> int:
        """
        Read and run commands until quit, exit or end of input.

        @return: the exit status: 1 if any command failed.
        """
        while True:
            try:
                self.cmdloop()
                break
            except KeyboardInterrupt:
                # Ctrl-C drops the line being typed, as in a shell.
                self.stdout.write("^C\n")
        return 1 if self.failed else 0

    def preloop(self) -> None:
        if self.use_rawinput and self.completekey:
            try:
                import readline
            except ImportError:
                return
            # Policy names hold dashes and ratios "=": complete whole words.
            readline.set_completer_delims(" \t\n")

    def command(self, name: str, line: str) -> None:
        """
        Run command C{name} with the arguments typed in C{line}, printing its answer or
        why it failed.
        """
        try:
            options = self.parser.parse_args([name, *shlex.split(line)])
        except (UsageError, ValueError) as e:
            usage = self.parser.commands[name].format_usage().strip()
            self._fail(f"{name}: {e}\n{usage}")
            return
        except SystemExit:  # argparse exits after printing --help
            return
        try:
            self.stdout.write(self.run(name, values_of(options)) + "\n")
        except AdminCLIError as e:
            self._fail(str(e))
        except KeyboardInterrupt:
            self._fail("interrupted")

    def _fail(self, message: str) -> None:
        self.failed = True
        self.stderr.write(message + "\n")
        self.stderr.flush()

    def default(self, line: str) -> None:
        # cmd.Cmd comes here for every word without a do_ method: the table's commands.
        name, arg, _ = self.parseline(line)
        if name in COMMANDS:
            self.command(name, arg or "")
        else:
            self._fail(f"unknown command {line.split()[0]!r} (try help)")

    def do_quit(self, line: str) -> bool:
        """quit: leave the prompt"""
        return True

    do_exit = do_quit

    def do_EOF(self, line: str) -> bool:
        """End of input (Ctrl-D) leaves the prompt."""
        if self.prompt:  # end the prompt's line
            self.stdout.write("\n")
        return True

    def do_help(self, arg: str) -> None:
        """help [COMMAND]: what the commands do"""
        name = arg.strip()
        if name in self.parser.commands:
            self.stdout.write(self.parser.commands[name].format_help())
            return
        if name and name not in ("help", *self.QUIT):
            self._fail(f"no command {name!r}")
        width = max(map(len, COMMANDS))
        lines = [f"  {c.name:<{width}}  {c.help}" for c in COMMANDS.values()]
        lines += [
            f"  {'help':<{width}}  help COMMAND: its arguments",
            f"  {'quit':<{width}}  leave (also exit, Ctrl-D)",
            "Policy aliases: spread = worst-fit, pack = best-fit.",
        ]
        self.stdout.write("\n".join(lines) + "\n")

    def emptyline(self) -> None:
        # cmd.Cmd repeats the last command on an empty line: not for "drain".
        pass

    def completenames(self, text: str, *ignored) -> list[str]:
        return [n for n in [*COMMANDS, "help", *self.QUIT] if n.startswith(text)]

    def complete_help(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self.completenames(text) if _argument_index(line, begidx) == 0 else []

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        """
        The words that complete the word at C{begidx} of a command's line: its flag, the
        known words of the plain argument in that place, the keys not yet given.
        """
        words = line.split()
        command = COMMANDS.get(words[0]) if words else None
        if command is None:
            return []
        before = line[:begidx].split()[1:]
        offered = ["--json"] if command.json and "--json" not in before else []
        offered += [a.shown for a in command.arguments if a.flag and a.shown not in before]
        plain = command.plain
        index = len([w for w in before if not w.startswith("-")])
        if index < len(plain):
            offered += self.known.get(plain[index].kind.completes or "", [])
        given = {w.partition("=")[0] for w in before}
        for argument in command.arguments:
            offered += [f"{k}=" for k in argument.keys if k not in given]
        return [w for w in offered if w.startswith(text)]


def _argument_index(line: str, begidx: int) -> int:
    """
    Which argument (from 0) of the command on C{line} the word at C{begidx} is.
    """
    return len(line[:begidx].split()) - 1


async def known_words(connection: AdminConnection) -> tuple[list[str], list[int]]:
    """
    The policy names and PM ids the prompt completes; none if the daemon cannot say.
    """
    try:
        status = await connection.call("status")
    except (pb.Error, pb.RemoteError):
        return [], []
    return list(status["policies"]), [pm["pmid"] for pm in status["pms"]]


def prompt(target: Target) -> int:
    """
    Log in, then run the prompt until the administrator leaves.

    The prompt blocks, so it has the main thread, where Ctrl-C and readline's terminal
    handling belong; the reactor runs in a thread beside it, and each command waits for
    its answer with C{blockingCallFromThread}.

    @return: the exit status.
    @raise AdminCLIError: the login failed.
    """
    from twisted.internet import reactor

    thread = threading.Thread(
        target=reactor.run,
        kwargs={"installSignalHandlers": False},
        name="reactor",
        daemon=True,
    )
    thread.start()
    connection = AdminConnection(reactor, target)

    def blocking(function, *args):
        try:
            return threads.blockingCallFromThread(
                reactor, lambda: defer.ensureDeferred(function(*args))
            )
        except Exception as e:
            raise AdminCLIError(explain(e, target)) from None

    try:
        blocking(connection.open)
        policies, pmids = blocking(known_words, connection)
        return Shell(
            lambda name, values: blocking(connection.run, name, values), policies, pmids
        ).loop()
    finally:
        reactor.callFromThread(connection.close)
        reactor.callFromThread(reactor.stop)
        thread.join(5)
