"""
vorchd-admin: the administrator's console for a running vorchd's admin port.

    vorchd-admin status [--json]      every PM, then the policy and ratios in force
    vorchd-admin policies             the policies the daemon can use
    vorchd-admin policy [NAME]        switch the policy, or show the one in force
    vorchd-admin ratios [cpu=R] [ram=R] [disk=R]
                                      set overcommit ratios, or show them
    vorchd-admin drain PMID           give a PM no new VMs (its VMs stay)
    vorchd-admin enable PMID          open a drained PM to new VMs again
    vorchd-admin rediscover [PMID]    reconnect to a PM (or all) and show what it reports
    vorchd-admin prune                delete image base copies no VM uses any more

With no command it opens a C{vorchd> } prompt offering the same commands, with help and
tab completion. Where to connect and as whom come from the daemon's own ini file and
admin password file, so on the daemon's machine, as root, C{vorchd-admin status} just
works.

The module reads top to bottom: where to connect; the connection (connect, log in,
call); pure formatters from answers to text; the commands both front ends share; the
command line; the prompt; C{main}.
"""

from __future__ import annotations

import argparse
import cmd
import json
import os
import shlex
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from attrs import field, frozen
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, error, task, threads
from twisted.spread import pb

import vorchd
from vorchd.config import DEFAULT_CONFIG, ConfigError, Settings, load_settings
from vorchd.model import RESOURCES

PROG = "vorchd-admin"
PASSWORD_ENV = "VORCHD_ADMIN_PASSWORD"
CONNECT_TIMEOUT = 10

# Client-side names for two policies, by what they do to the fleet.
ALIASES = {"spread": "worst-fit", "pack": "best-fit"}

# Remote exception types whose message is meant for the administrator as it is.
ADMIN_ERRORS = ("vorchd.admin.AdminError", "twisted.spread.pb.Error")


class AdminCLIError(Exception):
    """
    Something that ends a command with a one-line message (exit status 1).
    """


class UsageError(argparse.ArgumentTypeError):
    """
    A command given arguments it cannot take (exit status 2).

    It is an C{ArgumentTypeError} so that the argument converters below can raise it to
    argparse; L{Parser} raises it in turn, so the prompt reports it and carries on.
    """

    def __init__(self, message: str, parser: argparse.ArgumentParser | None = None):
        super().__init__(message)
        self.parser = parser


# --- Where to connect and as whom -------------------------------------------------------


@frozen
class Target:
    """
    A daemon's admin port and the user who logs in to it.
    """

    host: str
    port: int
    user: str
    password: str = field(repr=False)


def read_passwords(path: str) -> list[tuple[str, str]]:
    """
    The C{(user, password)} pairs of an admin password file, split the way the daemon's
    C{FilePasswordDB} splits them (so a line means the same to both).

    @raise OSError: the file cannot be read.
    """
    pairs = []
    with open(path, "rb") as f:
        for line in f:
            parts = line.rstrip().split(b":")
            if len(parts) >= 2:
                pairs.append((_text(parts[0]), _text(parts[1])))
    return pairs


def default_config(cwd: str = ".") -> str:
    """
    The ini file to read when none is named: C{etc/vorchd.ini} under C{cwd}, else the one
    in the checkout vorchd runs from (install.sh's), so that the daemon's settings are
    found from any directory.
    """
    here = os.path.normpath(os.path.join(cwd, DEFAULT_CONFIG))
    checkout = os.path.join(os.path.dirname(os.path.dirname(vorchd.__file__)), DEFAULT_CONFIG)
    return checkout if not os.path.exists(here) and os.path.exists(checkout) else here


def resolve_target(options: argparse.Namespace, environ: Mapping[str, str]) -> Target:
    """
    Where to connect and as whom, from the command-line C{options}, the daemon's ini file
    and password file, and C{environ}.

    The port is the ini's admin port as the daemon computes it (C{auto} follows the REST
    port, C{VORCHD_PORT} included). The password comes from C{--password-file}, else
    C{VORCHD_ADMIN_PASSWORD}, else the ini's password file; the user defaults to the
    first one in that file, else C{admin}.

    @raise AdminCLIError: something needed is missing or unreadable; the message says what.
    """
    path = options.config or environ.get("VORCHD_CONFIG") or default_config()
    try:
        settings = load_settings(path, environ)
    except ConfigError as e:
        # With no ini at the default place, everything can still come from the options.
        if options.config or "VORCHD_CONFIG" in environ or options.port is None:
            raise AdminCLIError(f"{e} (give --config, or --port)") from None
        settings = Settings()

    port = options.port
    if port is None:
        if settings.admin_port is None:
            raise AdminCLIError(f"config {path}: the admin port is off ([admin] port)")
        if settings.admin_port == 0:
            raise AdminCLIError(
                f"config {path}: the daemon picks its admin port at start ([admin] port = 0);"
                " give --port"
            )
        port = settings.admin_port

    host = options.host or settings.admin_interface
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"

    if options.password_file is None and PASSWORD_ENV in environ:
        return Target(host, port, options.user or "admin", environ[PASSWORD_ENV])
    passwd_file = options.password_file or settings.admin_passwd_file
    try:
        pairs = read_passwords(passwd_file)
    except OSError as e:
        raise AdminCLIError(
            f"admin password file {passwd_file}: {e.strerror}"
            f" (give --password-file, or set {PASSWORD_ENV})"
        ) from None
    users = [u for u, _ in pairs if not u.startswith("#")]
    user = options.user or (users[0] if users else "admin")
    for u, password in pairs:
        if u == user:
            return Target(host, port, user, password)
    raise AdminCLIError(f"admin password file {passwd_file} has no line for user {user!r}")


# --- The connection ---------------------------------------------------------------------


class AdminConnection:
    """
    A logged-in session on a daemon's admin port: each L{call} is one remote call to the
    daemon's L{vorchd.admin.Admin} avatar.
    """

    def __init__(self, reactor, target: Target):
        self.reactor = reactor
        self.target = target
        self._factory: pb.PBClientFactory | None = None
        self._avatar: pb.RemoteReference | None = None

    async def open(self) -> None:
        """
        Connect and log in.

        @raise twisted.internet.error.ConnectError: nobody listens there.
        @raise UnauthorizedLogin: wrong user or password.
        """
        self.close()
        factory = pb.PBClientFactory()
        self.reactor.connectTCP(
            self.target.host, self.target.port, factory, timeout=CONNECT_TIMEOUT
        )
        credentials = UsernamePassword(_bytes(self.target.user), _bytes(self.target.password))
        try:
            self._avatar = await factory.login(credentials)
        except BaseException:
            factory.disconnect()
            raise
        self._factory = factory

    async def call(self, name: str, *args, **kwargs):
        """
        Call the avatar's remote method C{name}; answer its result.
        """
        if self._avatar is None:
            await self.open()
        try:
            return await self._avatar.callRemote(name, *args, **kwargs)
        except pb.DeadReferenceError:
            # The daemon went away since the login (restarted under an open prompt):
            # log in again, once, rather than make the administrator start over.
            await self.open()
            return await self._avatar.callRemote(name, *args, **kwargs)

    def close(self) -> None:
        """
        Hang up, if connected.
        """
        if self._factory is not None:
            self._factory.disconnect()
        self._factory = self._avatar = None


def explain(e: BaseException, target: Target) -> str:
    """
    A one-line message for the administrator saying why a call to C{target} failed.
    """
    where = f"{target.host}:{target.port}"
    if isinstance(e, error.ConnectionRefusedError):
        return f"cannot connect to vorchd's admin port at {where}: connection refused"
    if isinstance(e, error.TimeoutError):
        return f"cannot connect to vorchd's admin port at {where}: no answer"
    if isinstance(e, error.DNSLookupError):
        return f"cannot connect to vorchd's admin port at {where}: unknown host"
    if isinstance(e, error.ConnectError):
        return f"cannot connect to vorchd's admin port at {where}: {e}"
    # The daemon's exceptions arrive as RemoteError, naming the type they had there.
    remote = _text(e.remoteType) if isinstance(e, pb.RemoteError) else None
    if isinstance(e, UnauthorizedLogin) or remote == "twisted.cred.error.UnauthorizedLogin":
        return f"login to {where} as {target.user!r} refused: wrong user or password"
    if remote in ADMIN_ERRORS:
        return str(e)
    if remote is not None:
        return f"the daemon failed ({remote.rpartition('.')[2]}: {e}); see its log"
    if isinstance(e, pb.Error):
        return str(e)
    if isinstance(
        e, (pb.DeadReferenceError, pb.PBConnectionLost, error.ConnectionLost, error.ConnectionDone)
    ):
        return f"lost the connection to {where}"
    return f"unexpected error: {e!r}"


# --- Formatters: answers to text (pure) -------------------------------------------------


def amount(value: float) -> str:
    """
    An amount as a person writes it: C{2048}, C{2.5}, C{-1} (no trailing C{.0}).
    """
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()):
    """
    C{rows} under C{headers} in aligned columns (those numbered in C{right} aligned
    right), as a list of lines with no trailing spaces.
    """
    rows = [list(map(str, row)) for row in rows]
    right = set(right)
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


STATUS_HEADERS = (
    "PM",
    "STATE",
    "CPU free/cap",
    "RAM MiB free/cap",
    "DISK GiB free/cap",
    "VMS",
    "MISSING",
    "URI",
)


def status_row(pm: Mapping) -> list[str]:
    """
    One PM of a status answer as the cells of a L{STATUS_HEADERS} row.
    """
    room = [f"{amount(pm['free'][r])}/{amount(pm['capacity'][r])}" for r in RESOURCES]
    missing = ",".join(str(vmid) for vmid in pm["missing"]) or "-"
    return [str(pm["pmid"]), pm["state"], *room, str(pm["vms"]), missing, pm["uri"]]


def format_ratios(ratios: Mapping[str, float]) -> str:
    """
    Overcommit ratios as they are set: C{cpu=2.0 ram=1.0 disk=1.0}.
    """
    return " ".join(f"{r}={float(ratios[r])!r}" for r in RESOURCES if r in ratios)


def format_status(status: Mapping) -> str:
    """
    A status answer as text: a table of the PMs, then the fleet, policy and ratios.
    """
    pms = status["pms"]
    if pms:
        lines = table(STATUS_HEADERS, map(status_row, pms), right=(0, 2, 3, 4, 5))
    else:
        lines = ["no PMs"]
    return "\n".join(
        [
            *lines,
            "",
            f"fleet:  {status['fleet']}",
            f"policy: {status['policy']}",
            f"ratios: {format_ratios(status['ratios'])}",
        ]
    )


def format_policies(names: Iterable[str], current: str | None = None) -> str:
    """
    Policy names one a line, the one in force marked C{*}, each alias noted.
    """
    alias_of = {name: alias for alias, name in ALIASES.items()}
    lines = []
    for name in names:
        mark = "*" if name == current else " "
        alias = f"  (alias: {alias_of[name]})" if name in alias_of else ""
        lines.append(f"{mark} {name}{alias}")
    return "\n".join(lines)


def format_rediscovery(found: Mapping[int, Mapping | None]) -> str:
    """
    What each PM reported when rediscovered, one a line, or that it is unreachable.
    """
    lines = []
    for pmid in sorted(found):
        capacity = found[pmid]
        if capacity is None:
            lines.append(f"PM {pmid}: unreachable")
        else:
            lines.append(
                f"PM {pmid}: cpu {amount(capacity['cpu'])}, ram {amount(capacity['ram'])} MiB,"
                f" disk {amount(capacity['disk'])} GiB"
            )
    return "\n".join(lines)


def format_pruned(pruned: Mapping[int, list[str] | None]) -> str:
    """
    The base copies deleted on each PM, or that it could not be reached.
    """
    lines = []
    for pmid in sorted(pruned):
        names = pruned[pmid]
        if names is None:
            lines.append(f"PM {pmid}: unreachable, nothing pruned")
        else:
            lines.append(f"PM {pmid}: " + (", ".join(names) if names else "nothing to prune"))
    return "\n".join(lines)


# --- The commands -----------------------------------------------------------------------


class Commands:
    """
    Each admin command as its remote calls and its answer as text; the one-shot command
    line and the prompt both run these.
    """

    def __init__(self, connection: AdminConnection):
        self.connection = connection

    async def status(self, as_json: bool = False) -> str:
        """Every PM as a table, then the policy and ratios; or the whole answer as JSON."""
        status = await self.connection.call("status")
        return json.dumps(status, indent=2) if as_json else format_status(status)

    async def policies(self) -> str:
        """The daemon's policies, the one in force marked."""
        status = await self.connection.call("status")
        return format_policies(status["policies"], status["policy"])

    async def policy(self, name: str | None = None) -> str:
        """Switch to policy C{name}, or (no name) show the one in force."""
        if name is None:
            return (await self.connection.call("status"))["policy"]
        return await self.connection.call("policy", name)

    async def ratios(self, wanted: Mapping[str, float]) -> str:
        """Set the ratios in C{wanted} (maybe none); show those in force."""
        return format_ratios(await self.connection.call("ratios", **wanted))

    async def drain(self, pmid: int) -> str:
        """Give PM C{pmid} no new VMs."""
        await self.connection.call("drain", pmid)
        return f"PM {pmid} drained: it gets no new VMs and keeps its own"

    async def enable(self, pmid: int) -> str:
        """Open PM C{pmid} to new VMs again."""
        await self.connection.call("enable", pmid)
        return f"PM {pmid} enabled: it takes new VMs again"

    async def rediscover(self, pmid: int | None = None) -> str:
        """Reconnect to PM C{pmid} (or every PM); show what each reports."""
        return format_rediscovery(await self.connection.call("rediscover", pmid))

    async def prune(self) -> str:
        """Delete unused image base copies on every PM; say what went where."""
        return format_pruned(await self.connection.call("prune"))

    async def completions(self) -> tuple[list[str], list[int]]:
        """
        The policy names and PM ids the prompt completes; none if the daemon cannot say.
        """
        try:
            status = await self.connection.call("status")
        except (pb.Error, pb.RemoteError):
            return [], []
        return list(status["policies"]), [pm["pmid"] for pm in status["pms"]]


# --- The command line -------------------------------------------------------------------


def pmid_arg(word: str) -> int:
    """
    A PM id argument. @raise UsageError: not a whole number.
    """
    try:
        return int(word)
    except ValueError:
        raise UsageError(f"PM id {word!r} is not a number") from None


def policy_arg(word: str) -> str:
    """
    A policy name argument, an alias (L{ALIASES}) replaced by what it names.
    """
    return ALIASES.get(word, word)


def ratio_arg(word: str) -> tuple[str, float]:
    """
    A C{resource=ratio} argument, such as C{cpu=2.0}. @raise UsageError: anything else.
    """
    resource, equals, value = word.partition("=")
    if not equals or resource not in RESOURCES:
        raise UsageError(f"{word!r}: expected cpu=RATIO, ram=RATIO or disk=RATIO")
    try:
        return resource, float(value)
    except ValueError:
        raise UsageError(f"{word!r}: {value!r} is not a number") from None


class Parser(argparse.ArgumentParser):
    """
    argparse, but a usage error raises L{UsageError} (so the prompt reports it and goes
    on); C{commands} holds the parser of each command, by name.
    """

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str):
        raise UsageError(message, self)


COMMANDS = {
    "status": "every PM's state, free room and VMs, then the policy and ratios in force",
    "policies": "the placement policies the daemon can use (* marks the one in force)",
    "policy": "switch to policy NAME from the next placement on, or show the one in force",
    "ratios": "set overcommit ratios (free = capacity * ratio - used), or show them",
    "drain": "give PM PMID no new VMs; its VMs stay",
    "enable": "open a drained PM to new VMs again",
    "rediscover": "reconnect to PM PMID (or every PM) and show what it reports",
    "prune": "delete the image base copies that no VM uses any more, on every PM",
}

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
    for name, summary in COMMANDS.items():
        parser.commands[name] = sub.add_parser(
            name,
            help=summary,
            description=summary,
            prog=f"{prog} {name}" if prog else name,
        )
    commands = parser.commands
    commands["status"].add_argument(
        "--json", action="store_true", help="the daemon's answer as JSON"
    )
    commands["policy"].add_argument(
        "name",
        nargs="?",
        type=policy_arg,
        metavar="NAME",
        help="spread = worst-fit, pack = best-fit",
    )
    commands["ratios"].add_argument(
        "wanted", nargs="*", type=ratio_arg, metavar="RESOURCE=RATIO", help="e.g. cpu=2.0"
    )
    for name in ("drain", "enable"):
        commands[name].add_argument("pmid", type=pmid_arg, metavar="PMID")
    commands["rediscover"].add_argument("pmid", nargs="?", type=pmid_arg, metavar="PMID")
    return parser


def arguments(options: argparse.Namespace) -> tuple:
    """
    The arguments of the L{Commands} method named C{options.command}.
    """
    match options.command:
        case "status":
            return (options.json,)
        case "policy":
            return (options.name,)
        case "ratios":
            return (dict(options.wanted),)
        case "drain" | "enable" | "rediscover":
            return (options.pmid,)
        case _:
            return ()


def one_shot(target: Target, options: argparse.Namespace) -> None:
    """
    Run one command: its answer on stdout, or why it failed on stderr.

    @raise SystemExit: always (C{task.react}'s way), with 0 or 1.
    """

    async def run(reactor) -> None:
        connection = AdminConnection(reactor, target)
        try:
            await connection.open()
            command = getattr(Commands(connection), options.command)
            print(await command(*arguments(options)))
        except Exception as e:
            print(f"{PROG}: {explain(e, target)}", file=sys.stderr)
            raise SystemExit(1) from None
        finally:
            connection.close()

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


# --- The prompt -------------------------------------------------------------------------


class Shell(cmd.Cmd):
    """
    The C{vorchd> } prompt: the one-shot commands, with help, and tab completion of
    command names, policy names and PM ids.

    @param run: C{run(command, *args)} runs the L{Commands} method named C{command} and
        answers its text, or raises L{AdminCLIError}.
    @param policies: the policy names to complete (the daemon's, fetched once).
    @param pmids: the PM ids to complete.
    """

    prompt = "vorchd> "
    QUIT = ("quit", "exit")

    def __init__(
        self,
        run: Callable[..., str],
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
        self.policies = policies + [a for a, name in ALIASES.items() if name in policies]
        self.pmids = [str(pmid) for pmid in pmids]
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
            self.stdout.write(self.run(name, *arguments(options)) + "\n")
        except AdminCLIError as e:
            self._fail(str(e))
        except KeyboardInterrupt:
            self._fail("interrupted")

    def _fail(self, message: str) -> None:
        self.failed = True
        self.stderr.write(message + "\n")
        self.stderr.flush()

    def do_status(self, line: str) -> None:
        """status [--json]"""
        self.command("status", line)

    def do_policies(self, line: str) -> None:
        """policies"""
        self.command("policies", line)

    def do_policy(self, line: str) -> None:
        """policy [NAME]"""
        self.command("policy", line)

    def do_ratios(self, line: str) -> None:
        """ratios [cpu=R] [ram=R] [disk=R]"""
        self.command("ratios", line)

    def do_drain(self, line: str) -> None:
        """drain PMID"""
        self.command("drain", line)

    def do_enable(self, line: str) -> None:
        """enable PMID"""
        self.command("enable", line)

    def do_rediscover(self, line: str) -> None:
        """rediscover [PMID]"""
        self.command("rediscover", line)

    def do_prune(self, line: str) -> None:
        """prune"""
        self.command("prune", line)

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
        lines = [f"  {n:<{width}}  {summary}" for n, summary in COMMANDS.items()]
        lines += [
            f"  {'help':<{width}}  help COMMAND: its arguments",
            f"  {'quit':<{width}}  leave (also exit, Ctrl-D)",
            "Policy aliases: spread = worst-fit, pack = best-fit.",
        ]
        self.stdout.write("\n".join(lines) + "\n")

    def emptyline(self) -> None:
        # cmd.Cmd repeats the last command on an empty line: not for "drain".
        pass

    def default(self, line: str) -> None:
        self._fail(f"unknown command {line.split()[0]!r} (try help)")

    def completenames(self, text: str, *ignored) -> list[str]:
        return [n for n in [*COMMANDS, "help", *self.QUIT] if n.startswith(text)]

    def complete_help(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self.completenames(text) if _argument_index(line, begidx) == 0 else []

    def complete_status(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return [w for w in ("--json",) if w.startswith(text)]

    def complete_policy(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        if _argument_index(line, begidx) != 0:
            return []
        return [name for name in self.policies if name.startswith(text)]

    def complete_ratios(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        given = {word.partition("=")[0] for word in line[:begidx].split()[1:]}
        return [f"{r}=" for r in RESOURCES if r not in given and f"{r}=".startswith(text)]

    def complete_drain(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        if _argument_index(line, begidx) != 0:
            return []
        return [pmid for pmid in self.pmids if pmid.startswith(text)]

    complete_enable = complete_rediscover = complete_drain


def _argument_index(line: str, begidx: int) -> int:
    """
    Which argument (from 0) of the command on C{line} the word at C{begidx} is.
    """
    return len(line[:begidx].split()) - 1


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
    commands = Commands(connection)

    def blocking(function, *args):
        try:
            return threads.blockingCallFromThread(
                reactor, lambda: defer.ensureDeferred(function(*args))
            )
        except Exception as e:
            raise AdminCLIError(explain(e, target)) from None

    try:
        blocking(connection.open)
        policies, pmids = blocking(commands.completions)

        def run(name: str, *args) -> str:
            return blocking(getattr(commands, name), *args)

        return Shell(run, policies, pmids).loop()
    finally:
        reactor.callFromThread(connection.close)
        reactor.callFromThread(reactor.stop)
        thread.join(5)


# --- main -------------------------------------------------------------------------------


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


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


if __name__ == "__main__":
    sys.exit(main())
