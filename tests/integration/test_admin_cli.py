"""
vorchd-admin: its pure parts (settings, formatters, the prompt's parsing and completion)
in memory, and the real executable run against a real daemon (real Redis, test-driver
fleet), one-shot and with commands piped into its prompt.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.utils import getProcessOutputAndValue
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.clients import LoopbackClient
from tests.harness import REPO, Daemon, free_port, shared_redis, tmpdir, unique_prefix, write_fleet
from vorchd.admincmds import ALIASES
from vorchd.cli.admin import main
from vorchd.cli.admin_connect import (
    AdminCLIError,
    AdminConnection,
    Target,
    default_config,
    resolve_target,
)
from vorchd.cli.admin_format import (
    amount,
    format_policies,
    format_pruned,
    format_ratios,
    format_rediscovery,
    format_status,
)
from vorchd.cli.admin_parser import UsageError, build_parser
from vorchd.cli.admin_shell import Shell

EXE = str(Path(sys.executable).parent / "vorchd-admin")

# Three PMs, the last the roomiest: first-fit fills PM 1, worst-fit picks PM 3.
SIZES = [(2, 2048), (4, 4096), (8, 8192)]

STATUS = {
    "fleet": "f1",
    "policy": "first-fit",
    "policies": ["best-fit", "first-fit", "worst-fit"],
    "ratios": {"cpu": 2.5, "ram": 1.0, "disk": 1.0},
    "pms": [
        {
            "pmid": 1,
            "uri": "test:///pm1.xml",
            "state": "up",
            "up": True,
            "drained": False,
            "capacity": {"cpu": 2, "ram": 2048, "disk": 100},
            "free": {"cpu": 4, "ram": 1536, "disk": 99},
            "vms": 1,
            "missing": [],
        },
        {
            "pmid": 12,
            "uri": "qemu+ssh://h12/system",
            "state": "drained",
            "up": True,
            "drained": True,
            "capacity": {"cpu": 16, "ram": 65536, "disk": 2000},
            "free": {"cpu": 2.5, "ram": -512, "disk": 1990},
            "vms": 3,
            "missing": [7, 9],
        },
    ],
}


def options(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args([*argv, "status"])


class SettingsTests(SynchronousTestCase):
    """
    Where vorchd-admin connects and as whom, from the daemon's ini and password file.
    """

    def setUp(self):
        self.dir = tmpdir(self)
        self.passwd = self.dir / "admin.passwd"
        self.passwd.write_text("# who may log in\nalice:a-secret\nbob:b:x\n")
        self.ini = self.dir / "vorchd.ini"
        self.ini.write_text("[server]\nport = 8080\n[admin]\npasswd_file = admin.passwd\n")

    def test_defaults_from_ini(self):
        """
        With only --config, the admin port is the REST port + 10000 ("auto"), the host
        127.0.0.1, and the user the password file's first, with its password.
        """
        target = resolve_target(options("--config", str(self.ini)), {})
        self.assertEqual(target, Target("127.0.0.1", 18080, "alice", "a-secret"))

    def test_vorchd_port_and_config_from_environment(self):
        """
        VORCHD_CONFIG names the ini and VORCHD_PORT moves the admin port with the REST
        port, as they do for the daemon.
        """
        env = {"VORCHD_CONFIG": str(self.ini), "VORCHD_PORT": "9000"}
        self.assertEqual(resolve_target(options(), env).port, 19000)

    def test_user_and_password_choices(self):
        """
        --user picks a line of the password file (split on ":" as the daemon splits it);
        VORCHD_ADMIN_PASSWORD serves when no --password-file is given.
        """
        target = resolve_target(options("--config", str(self.ini), "--user", "bob"), {})
        self.assertEqual((target.user, target.password), ("bob", "b"))
        env = {"VORCHD_ADMIN_PASSWORD": "from-env"}
        target = resolve_target(options("--config", str(self.ini)), env)
        self.assertEqual((target.user, target.password), ("admin", "from-env"))

    def test_explicit_options_win(self):
        """
        --host, --port and --password-file override the ini.
        """
        other = self.dir / "other.passwd"
        other.write_text("root:r\n")
        argv = ["--config", str(self.ini), "--host", "10.0.0.1", "--port", "4000"]
        target = resolve_target(options(*argv, "--password-file", str(other)), {})
        self.assertEqual(target, Target("10.0.0.1", 4000, "root", "r"))

    def test_default_config(self):
        """
        With no ini named, etc/vorchd.ini in the current directory is read, else the one
        in the checkout vorchd runs from.
        """
        checkout = str(REPO / "etc" / "vorchd.ini")
        self.assertEqual(default_config(str(self.dir)), checkout)
        (self.dir / "etc").mkdir()
        (self.dir / "etc" / "vorchd.ini").write_text("")
        self.assertEqual(default_config(str(self.dir)), str(self.dir / "etc" / "vorchd.ini"))

    def test_unusable_settings(self):
        """
        An ephemeral or disabled admin port, an unreadable password file, an unknown user
        or a missing ini each give a message naming the problem.
        """
        cases = [
            ("[admin]\nport = 0\npasswd_file = admin.passwd\n", [], "[admin] port = 0"),
            ("[admin]\nport = off\n", [], "admin port is off"),
            ("[admin]\npasswd_file = nowhere\n", [], "nowhere"),
            ("[admin]\npasswd_file = admin.passwd\n", ["--user", "eve"], "'eve'"),
        ]
        for ini, argv, message in cases:
            self.ini.write_text(ini)
            with self.assertRaises(AdminCLIError) as e:
                resolve_target(options("--config", str(self.ini), *argv), {})
            self.assertIn(message, str(e.exception))
        with self.assertRaises(AdminCLIError) as e:
            resolve_target(options("--config", str(self.dir / "none.ini")), {})
        self.assertIn("none.ini", str(e.exception))


class FormatterTests(SynchronousTestCase):
    """
    The daemon's answers as text.
    """

    def test_status_table(self):
        """
        status shows one aligned row per PM (free/capacity of each resource, VMs, missing
        VMs, URI), then the fleet, policy and ratios.
        """
        lines = format_status(STATUS).splitlines()
        self.assertEqual(
            lines[0].split(),
            ["PM", "STATE", "CPU", "free/cap", "RAM", "MiB", "free/cap", "DISK", "GiB"]
            + ["free/cap", "VMS", "MISSING", "URI"],
        )
        self.assertEqual(
            lines[1].split(),
            ["1", "up", "4/2", "1536/2048", "99/100", "1", "-", "test:///pm1.xml"],
        )
        self.assertEqual(
            lines[2].split(),
            ["12", "drained", "2.5/16", "-512/65536", "1990/2000", "3", "7,9"]
            + ["qemu+ssh://h12/system"],
        )
        self.assertEqual(lines[0].index("URI"), lines[1].index("test:"))
        self.assertEqual(lines[0].index("URI"), lines[2].index("qemu"))
        self.assertEqual(
            lines[3:],
            ["", "fleet:  f1", "policy: first-fit", "ratios: cpu=2.5 ram=1.0 disk=1.0"],
        )
        self.assertTrue(all(line == line.rstrip() for line in lines))

    def test_empty_fleet(self):
        """
        A fleet with no PMs says so instead of printing an empty table.
        """
        self.assertEqual(format_status({**STATUS, "pms": []}).splitlines()[0], "no PMs")

    def test_amounts(self):
        """
        Amounts print as people write them: no ".0" on whole numbers, two decimals at most.
        """
        self.assertEqual([amount(x) for x in (2048, 4.0, 2.5, -1, 1 / 3)], [
            "2048", "4", "2.5", "-1", "0.33"
        ])  # fmt: skip

    def test_policies_ratios_rediscovery(self):
        """
        policies marks the one in force and notes aliases; ratios print in the form they
        are set in; rediscovery lists each PM's report or that it is unreachable.
        """
        self.assertEqual(
            format_policies(
                ["best-fit", "first-fit", "worst-fit"], "first-fit", ALIASES
            ).splitlines(),
            ["  best-fit  (alias: pack)", "* first-fit", "  worst-fit  (alias: spread)"],
        )
        self.assertEqual(format_ratios({"disk": 1, "cpu": 2.0, "ram": 1.5}), (
            "cpu=2.0 ram=1.5 disk=1.0"
        ))  # fmt: skip
        found = {3: None, 1: {"cpu": 2, "ram": 2048, "disk": 100}}
        self.assertEqual(
            format_rediscovery(found).splitlines(),
            ["PM 1: cpu 2, ram 2048 MiB, disk 100 GiB", "PM 3: unreachable"],
        )


class CommandLineTests(SynchronousTestCase):
    """
    Parsing the one-shot command line, without a daemon.
    """

    def test_arguments(self):
        """
        Policy aliases are resolved client-side, ratios parse to numbers, PM ids to ints.
        """
        parser = build_parser()
        self.assertEqual(parser.parse_args(["policy", "spread"]).name, "worst-fit")
        self.assertEqual(parser.parse_args(["policy", "pack"]).name, "best-fit")
        self.assertIsNone(parser.parse_args(["policy"]).name)
        ratios = parser.parse_args(["ratios", "cpu=2", "disk=1.5"]).wanted
        self.assertEqual(dict(ratios), {"cpu": 2.0, "disk": 1.5})
        self.assertEqual(parser.parse_args(["drain", "3"]).pmid, 3)
        self.assertIsNone(parser.parse_args(["rediscover"]).pmid)
        self.assertIsNone(parser.parse_args([]).command)

    def test_usage_errors(self):
        """
        Bad arguments exit 2 with argparse's usage and message, before any connection.
        """
        for argv in (["drain"], ["drain", "x"], ["ratios", "cpu"], ["ratios", "gpu=2"],
                     ["ratios", "cpu=many"], ["frobnicate"]):  # fmt: skip
            err = io.StringIO()
            self.patch(sys, "stderr", err)
            self.assertEqual(main(argv), 2, argv)
            self.assertIn("usage: vorchd-admin", err.getvalue())
            self.assertNotIn("Traceback", err.getvalue())
        with self.assertRaises(UsageError):
            build_parser().parse_args(["ratios", "ram:2"])


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class ShellTests(SynchronousTestCase):
    """
    The prompt's parsing, dispatch and completion, with the daemon stubbed out.
    """

    def setUp(self):
        self.calls = []
        self.out, self.err = io.StringIO(), io.StringIO()

    def daemon(self, name, values):
        self.calls.append((name, values))
        if values.get("name") == "nonsense":
            raise AdminCLIError("unknown policy 'nonsense'; known: first-fit")
        return f"ran {name}"

    def shell(self, stdin="", tty=False) -> Shell:
        policies = ["best-fit", "first-fit", "round-robin", "worst-fit"]
        stdin = (FakeTTY if tty else io.StringIO)(stdin)
        return Shell(self.daemon, policies, [1, 2, 12], stdin, self.out, self.err)

    def test_piped_commands(self):
        """
        Piped commands run in order with no prompt echoed; aliases, ratios and ids are
        parsed as on the command line; quit stops reading.
        """
        script = "status\npolicy spread\n\nratios cpu=2\ndrain 2\nrediscover\nquit\nstatus\n"
        self.assertEqual(self.shell(script).loop(), 0)
        self.assertEqual(
            self.calls,
            [
                ("status", {"json": False}),
                ("policy", {"name": "worst-fit"}),
                ("ratios", {"wanted": {"cpu": 2.0}}),
                ("drain", {"pmid": 2, "evacuate": False}),
                ("rediscover", {"pmid": None}),
            ],
        )
        self.assertEqual(self.out.getvalue(), "ran status\nran policy\nran ratios\n"
                         "ran drain\nran rediscover\n")  # fmt: skip

    def test_errors_do_not_end_the_session(self):
        """
        A usage error, an unknown command or a failed call is reported on stderr, the
        next command still runs, and the exit status is 1.
        """
        shell = self.shell("drain x\nfrobnicate\npolicy nonsense\nenable 1\n")
        self.assertEqual(shell.loop(), 1)
        self.assertEqual(self.calls, [("policy", {"name": "nonsense"}), ("enable", {"pmid": 1})])
        err = self.err.getvalue()
        self.assertIn("drain: argument PMID: PM id 'x' is not a number", err)
        self.assertIn("usage: drain [-h] [--evacuate] PMID", err)
        self.assertIn("unknown command 'frobnicate'", err)
        self.assertIn("known: first-fit", err)

    def test_tty_prompt_and_eof(self):
        """
        On a terminal the prompt is "vorchd> ", and end of input (Ctrl-D) leaves.
        """
        shell = self.shell("policy\n", tty=True)
        shell.use_rawinput = False  # read the fake terminal, not the real one
        self.assertEqual(shell.loop(), 0)
        self.assertEqual(self.out.getvalue(), "vorchd> ran policy\nvorchd> \n")

    def test_help(self):
        """
        help lists every command with what it does and the aliases; help COMMAND gives its
        arguments.
        """
        shell = self.shell()
        shell.onecmd("help")
        listing = self.out.getvalue()
        for name in ("status", "policies", "policy", "ratios", "drain", "enable"):
            self.assertIn(f"  {name} ", listing)
        self.assertIn("rediscover", listing)
        self.assertIn("spread = worst-fit", listing)
        shell.onecmd("help ratios")
        self.assertIn("usage: ratios [-h] [RESOURCE=RATIO ...]", self.out.getvalue())

    def test_complete_command_names(self):
        """
        Command names complete, quit and exit included, EOF not.
        """
        shell = self.shell()
        self.assertEqual(shell.completenames("p"), ["policies", "policy", "prune"])
        self.assertEqual(shell.completenames("po"), ["policies", "policy"])
        self.assertEqual(shell.completenames("e"), ["enable", "exit"])
        self.assertEqual(shell.completenames("E"), [])
        self.assertEqual(shell.complete_help("r", "help r", 5, 6), ["ratios", "rediscover"])

    def test_complete_policy(self):
        """
        policy completes the daemon's policy names and the aliases of those it has, for
        its one argument only.
        """
        shell = self.shell()
        complete = shell.completedefault
        self.assertEqual(complete("", "policy ", 7, 7), [
            "best-fit", "first-fit", "round-robin", "worst-fit", "spread", "pack"
        ])  # fmt: skip
        self.assertEqual(complete("worst-", "policy worst-", 7, 13), ["worst-fit"])
        self.assertEqual(complete("s", "policy s", 7, 8), ["spread"])
        self.assertEqual(complete("", "policy first-fit ", 17, 17), [])
        self.assertNotIn("pack", Shell(self.daemon, ["first-fit", "worst-fit"]).known["policies"])

    def test_complete_pmids_ratios_status(self):
        """
        drain, enable and rediscover complete PM ids; ratios the resources not yet set;
        status its --json flag, drain its --evacuate.
        """
        complete = self.shell().completedefault
        self.assertEqual(complete("1", "drain 1", 6, 7), ["1", "12"])
        self.assertEqual(complete("", "enable ", 7, 7), ["1", "2", "12"])
        self.assertEqual(complete("2", "rediscover 2", 11, 12), ["2"])
        self.assertEqual(complete("", "drain 1 ", 8, 8), ["--evacuate"])
        self.assertEqual(complete("", "drain 1 --evacuate ", 19, 19), [])
        self.assertEqual(complete("", "ratios ", 7, 7), ["cpu=", "ram=", "disk="])
        self.assertEqual(complete("", "ratios cpu=2 ", 13, 13), ["ram=", "disk="])
        self.assertEqual(complete("d", "ratios d", 7, 8), ["disk="])
        self.assertEqual(complete("-", "status -", 7, 8), ["--json"])
        self.assertEqual(complete("", "status --json ", 14, 14), [])
        self.assertEqual(complete("", "prune ", 6, 6), [])


class Piped(protocol.ProcessProtocol):
    """
    A child process fed C{stdin} and closed; C{ended} fires with (out, err, exit code).
    """

    def __init__(self, stdin: bytes):
        self.stdin = stdin
        self.out, self.err = [], []
        self.ended = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data):
        self.out.append(data)

    def errReceived(self, data):
        self.err.append(data)

    def processEnded(self, reason):
        code = reason.value.exitCode
        self.ended.callback((b"".join(self.out), b"".join(self.err), code))


class AdminExecutableTests(TestCase):
    """
    The installed vorchd-admin against a real daemon.
    """

    async def setUp(self):
        self.dir = tmpdir(self)
        self.uris = write_fleet(self.dir, SIZES)
        self.daemon = Daemon(self.dir / "d", shared_redis().url, unique_prefix(), self.uris)
        await self.daemon.start()
        self.addCleanup(self.daemon.stop)

    def argv(self, *args: str, port: int | None = None, passwd: Path | None = None):
        daemon = self.daemon
        return [
            "--config",
            str(daemon.ini),
            "--port",
            str(port or daemon.admin_port),
            "--password-file",
            str(passwd or daemon.dir / "admin.passwd"),
            *args,
        ]

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("VORCHD_")}

    async def admin(self, *args: str, **kw) -> tuple[str, str, int]:
        """
        Run vorchd-admin to its end without blocking the reactor (the daemon is in it).
        """
        out, err, code = await getProcessOutputAndValue(EXE, self.argv(*args, **kw), self.env())
        return out.decode(), err.decode(), code

    async def ok(self, *args: str) -> str:
        out, err, code = await self.admin(*args)
        self.assertEqual((code, err), (0, ""), out)
        return out

    async def failed(self, *args: str, **kw) -> str:
        out, err, code = await self.admin(*args, **kw)
        self.assertEqual((code, out), (1, ""), err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        return err

    async def server_status(self) -> dict:
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", self.daemon.admin_port, factory)

        async def close():
            factory.disconnect()
            await task.deferLater(reactor, 0.05, lambda: None)

        self.addCleanup(close)
        creds = UsernamePassword(b"admin", self.daemon.admin_password.encode())
        admin = await factory.login(creds)
        return await admin.callRemote("status")

    async def create_on(self) -> int:
        client = LoopbackClient(self.daemon)
        try:
            created = await client.call("/vm/create?name=a&instance_type=1&image_id=1")
            vmid = created.json["vmid"]
            self.assertGreater(vmid, 0, created)
            return (await client.call(f"/vm/query?vmid={vmid}")).json["pmid"]
        finally:
            await client.close()

    async def test_status(self):
        """
        status prints a row for each PM, with its URI and VM count, and the policy.
        """
        self.assertEqual(await self.create_on(), 1)
        lines = (await self.ok("status")).splitlines()
        self.assertEqual(lines[0].split()[:2], ["PM", "STATE"])
        rows = [line.split() for line in lines[1:4]]
        self.assertEqual([row[0] for row in rows], ["1", "2", "3"])
        self.assertEqual([row[1] for row in rows], ["up", "up", "up"])
        self.assertEqual([row[-1] for row in rows], self.uris)
        self.assertEqual(rows[0][2:4], ["1/2", "1536/2048"])
        self.assertEqual([row[5] for row in rows], ["1", "0", "0"])
        self.assertIn("policy: first-fit", lines)

    async def test_status_json(self):
        """
        status --json is the daemon's status answer, as JSON.
        """
        answer = json.loads(await self.ok("status", "--json"))
        self.assertEqual(answer, await self.server_status())

    async def test_switch_policy(self):
        """
        policy NAME switches the policy: status shows it and the next placement uses it;
        policy alone shows it.
        """
        self.assertEqual(await self.create_on(), 1)
        self.assertEqual(await self.ok("policy", "worst-fit"), "worst-fit\n")
        self.assertIn("policy: worst-fit", (await self.ok("status")).splitlines())
        self.assertEqual(await self.create_on(), 3)
        self.assertEqual(await self.ok("policy"), "worst-fit\n")
        self.assertEqual((await self.server_status())["policy"], "worst-fit")

    async def test_spread_alias(self):
        """
        "policy spread" selects worst-fit.
        """
        self.assertEqual(await self.ok("policy", "spread"), "worst-fit\n")
        self.assertEqual(await self.create_on(), 3)

    async def test_policies(self):
        """
        policies lists the daemon's policies with the one in force marked.
        """
        lines = (await self.ok("policies")).splitlines()
        self.assertIn("* first-fit", lines)
        self.assertIn("  worst-fit  (alias: spread)", lines)
        names = [line[2:].split()[0] for line in lines]
        self.assertEqual(names, (await self.server_status())["policies"])

    async def test_unknown_policy(self):
        """
        An unknown policy exits 1 with the daemon's message naming the known ones.
        """
        err = await self.failed("policy", "cleverest")
        self.assertIn("cleverest", err)
        self.assertIn("first-fit", err)
        self.assertEqual((await self.server_status())["policy"], "first-fit")

    async def test_ratios(self):
        """
        ratios sets the ratios given and prints those in force, which status then shows;
        a ratio the daemon refuses exits 1.
        """
        self.assertEqual(await self.ok("ratios", "cpu=2.5"), "cpu=2.5 ram=1.0 disk=1.0\n")
        self.assertEqual(await self.ok("ratios"), "cpu=2.5 ram=1.0 disk=1.0\n")
        status = await self.server_status()
        self.assertEqual(status["pms"][0]["free"]["cpu"], 5)
        self.assertIn("must be positive", await self.failed("ratios", "ram=0"))

    async def test_drain_and_enable(self):
        """
        drain closes a PM to new VMs (status says drained), enable opens it again; an
        unknown PM exits 1.
        """
        self.assertIn("PM 1 drained", await self.ok("drain", "1"))
        self.assertIn("drained", (await self.ok("status")).splitlines()[1].split())
        self.assertEqual(await self.create_on(), 2)
        self.assertIn("PM 1 enabled", await self.ok("enable", "1"))
        self.assertEqual(await self.create_on(), 1)
        self.assertIn("no PM 99", await self.failed("drain", "99"))

    async def test_rediscover(self):
        """
        rediscover reports what every PM (or the one named) reports.
        """
        out = await self.ok("rediscover")
        self.assertEqual(out.splitlines()[2], "PM 3: cpu 8, ram 8192 MiB, disk 100 GiB")
        self.assertEqual(await self.ok("rediscover", "2"), (
            "PM 2: cpu 4, ram 4096 MiB, disk 100 GiB\n"
        ))  # fmt: skip

    async def test_whatif(self):
        """
        vorchd-admin whatif replays a workload on the daemon's fleet as it is now under
        the policy in force and another, prints one row each as JSON when asked, changes
        nothing on the fleet; its own usage errors say what is wrong, exit 1; its --help
        is the simulation's.
        """
        await self.create_on()
        before = await self.server_status()
        out, err, code = await self.admin(
            "whatif", "worst-fit", "--generate", "400", "--seed", "5", "--json"
        )
        self.assertEqual(code, 0, err)
        # Progress (one line per policy) goes to stderr, the answer to stdout.
        self.assertEqual(len(err.splitlines()), 2, err)
        rows = json.loads(out)
        self.assertEqual([r["policy"] for r in rows], ["first-fit", "worst-fit"])
        for row in rows:
            self.assertGreater(row["placed"] + row["refused"], 0, row)
        self.assertEqual(await self.server_status(), before)
        out, err, code = await self.admin("whatif", "--generate", "many")
        self.assertEqual((code, out), (1, ""), err)
        self.assertIn("argument --generate", err)
        self.assertNotIn("Traceback", err)
        out = await self.ok("whatif", "--help")
        self.assertIn("--generate", out)

    async def test_wrong_password(self):
        """
        A wrong password exits 1 with one line saying so, and no traceback.
        """
        wrong = self.dir / "wrong.passwd"
        wrong.write_text("admin:not-the-password\n")
        err = await self.failed("status", passwd=wrong)
        self.assertIn("wrong user or password", err)
        # The daemon logs each refused login.
        self.flushLoggedErrors(UnauthorizedLogin)

    async def test_connection_refused(self):
        """
        Nobody listening on the port exits 1 with one line saying so.
        """
        err = await self.failed("status", port=free_port())
        self.assertIn("connection refused", err)

    async def test_login_again_after_a_lost_connection(self):
        """
        A session whose connection dropped (the daemon restarted under an open prompt)
        logs in again on its next command.
        """
        daemon = self.daemon
        target = Target("127.0.0.1", daemon.admin_port, "admin", daemon.admin_password)
        connection = AdminConnection(reactor, target)
        self.addCleanup(connection.close)
        await connection.open()
        self.assertEqual(await connection.run("policy", {}), "first-fit")
        connection._factory.disconnect()
        await task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(await connection.run("policy", {"name": "worst-fit"}), "worst-fit")

    async def test_prompt_from_stdin(self):
        """
        With no command, commands piped in run in order through the prompt.
        """
        piped = Piped(b"status\npolicy worst-fit\nhelp drain\npolicy\nquit\n")
        reactor.spawnProcess(piped, EXE, [EXE, *self.argv()], self.env())
        out, err, code = await piped.ended
        self.assertEqual((code, err), (0, b""), out)
        out = out.decode()
        order = [
            out.index("policy: first-fit\n"),
            out.index("\nworst-fit\n"),
            out.index("usage: drain [-h] [--evacuate] PMID"),
            out.rindex("\nworst-fit\n"),
        ]
        self.assertEqual(order, sorted(order), out)
        self.assertNotIn("vorchd>", out)
        self.assertEqual(await self.create_on(), 3)

    async def test_prompt_login_refused(self):
        """
        A prompt whose login is refused exits 1 before reading any command.
        """
        wrong = self.dir / "wrong.passwd"
        wrong.write_text("admin:nope\n")
        piped = Piped(b"status\n")
        reactor.spawnProcess(piped, EXE, [EXE, *self.argv(passwd=wrong)], self.env())
        out, err, code = await piped.ended
        self.assertEqual((code, out), (1, b""))
        self.assertIn(b"wrong user or password", err)
        self.assertNotIn(b"Traceback", err)
        self.flushLoggedErrors(UnauthorizedLogin)


class FormatPrunedTests(SynchronousTestCase):
    def test_format_pruned(self):
        """
        prune says, PM by PM, which base copies went, that none did, or that the PM was out
        of reach.
        """
        text = format_pruned({2: None, 1: ["vorchd-ab-image-1-0123.img"], 3: []})
        self.assertEqual(
            text.splitlines(),
            [
                "PM 1: vorchd-ab-image-1-0123.img",
                "PM 2: unreachable, nothing pruned",
                "PM 3: nothing to prune",
            ],
        )
