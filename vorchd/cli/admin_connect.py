"""
How vorchd-admin reaches a daemon's admin port: where to connect and as whom (from the
daemon's own ini and password file), the logged-in connection, and one-line messages
for what went wrong.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping

from attrs import field, frozen
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import error
from twisted.spread import pb

import vorchd
from vorchd.admincmds import COMMANDS, to_call
from vorchd.config import DEFAULT_CONFIG, ConfigError, Settings, load_settings

PASSWORD_ENV = "VORCHD_ADMIN_PASSWORD"
CONNECT_TIMEOUT = 10

# Remote exception types whose message is meant for the administrator as it is.
ADMIN_ERRORS = ("vorchd.admin.AdminError", "twisted.spread.pb.Error")


class AdminCLIError(Exception):
    """
    Something that ends a command with a one-line message (exit status 1).
    """


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
        # Where a long command's reports are printed as they come.
        self.progress_out: Callable[[str], object] = lambda line: print(line, flush=True)

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

    async def run(self, name: str, values: Mapping[str, object]) -> str:
        """
        Run the admin command C{name} (of L{COMMANDS}) with C{values}, its arguments by
        name (and C{json}: the answer as JSON): one remote call; answer what to print.
        """
        command = COMMANDS[name]
        remote, args, kw = to_call(command, values)
        if command.progress is not None:
            kw["progress"] = Reporter(lambda item: self.progress_out(command.progress(item)))
        answer = await self.call(remote, *args, **kw)
        if command.local is not None:
            return command.local(answer, values)
        return command.show(answer, as_json=bool(values.get("json")))

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
    if isinstance(e, AdminCLIError):
        return str(e)
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


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class Reporter(pb.Referenceable):
    """
    Passed with a long command: the daemon calls C{report} with each step's report.
    """

    def __init__(self, out: Callable[[object], object]):
        self.out = out

    def remote_report(self, item: object) -> None:
        self.out(item)
