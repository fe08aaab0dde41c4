"""
The admin port's realm and avatar over an in-memory pump (no network, no daemon, no
Redis), as Twisted's own spread/test/test_pb.py tests PB: logins through the real
password checker, and every command of the table dispatched to a fake fleet with its
arguments checked.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile

from twisted.cred import portal
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address
from twisted.spread import pb
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from vorchd.admin import Admin, AdminError, AdminRealm, password_checker
from vorchd.admincmds import COMMANDS, bind, to_call
from vorchd.model import RESOURCES, Resources
from vorchd.policies import available_policies, policy_named
from vorchd.state import views
from vorchd.state.model import FleetState

PASSWORD = b"s3cret"
ADDRESS = IPv4Address("TCP", "127.0.0.1", 10080)


def _pm(uri: str, capacity: tuple, used: tuple, drained: bool = False) -> list[str]:
    flat = ["line", uri, "extra", uri, "drained", "1" if drained else "0"]
    for prefix, amounts in (("cap_", capacity), ("used_", used)):
        for r, value in zip(RESOURCES, amounts, strict=True):
            flat += [f"{prefix}{r}", str(value)]
    return flat


def fleet_state() -> FleetState:
    """
    Four PMs: 1 up with VM 10, 2 drained, 3 down, and 4 retired (out of the pm_file)
    still holding VM 11, whose domain went missing.
    """
    state = FleetState()
    state.load(
        {
            "seq": 5,
            "last": "5-0",
            "fleet": "f1",
            "settings": [],
            "pms": {
                "recs": [
                    [1, _pm("test:///pm1", (2, 2048, 100), (1, 512, 1)), [10]],
                    [2, _pm("test:///pm2", (4, 4096, 100), (0, 0, 0), drained=True), []],
                    [3, _pm("test:///pm3", (8, 8192, 100), (0, 0, 0)), []],
                    [4, _pm("test:///pm4", (2, 2048, 100), (1, 512, 1)), [11]],
                ],
                "active": [1, 2, 3],
            },
            "images": {"recs": [], "active": []},
            "flavors": [],
            "vms": [
                [10, ["state", "active", "pmid", "1"]],
                [11, ["state", "missing", "pmid", "4"]],
            ],
        }
    )
    for pmid in (1, 2, 4):
        state.set_up(pmid, True)
    return state


class FakeStore:
    def __init__(self, fleet: FakeFleet):
        self.fleet = fleet
        self.drained: list[tuple[int, bool]] = []

    async def set_setting(self, key: str, value: object) -> None:
        self.fleet.settings[key] = str(value)

    async def set_drained(self, pmid: int, drained: bool) -> bool:
        if pmid not in self.fleet.state.pms:
            return False
        self.drained.append((pmid, drained))
        return True


class FakeHypervisors:
    def __init__(self, state: FleetState):
        self.state = state
        self.calls: list[tuple] = []

    def is_up(self, pmid: int) -> bool:
        return self.state.is_up(pmid)

    def on(self, pmid: int):
        """
        PM C{pmid}'s operations, as the real service's adapter gives them (those the
        avatar uses).
        """
        calls = self.calls

        class Operations:
            async def prune_bases(self, fleet: str) -> list[str]:
                calls.append((pmid, "prune_bases", fleet))
                return [f"vorchd-f1-image-{pmid}.img"]

        return Operations()

    async def connect(self, pmid: int) -> Resources | None:
        self.calls.append((pmid, "connect"))
        return self.state.pms[pmid].capacity if self.state.is_up(pmid) else None


class FakeCreator:
    def __init__(self):
        self.forgotten: list[int] = []

    def forget_bases(self, pmid: int) -> None:
        self.forgotten.append(pmid)


class FakeFleet:
    """
    Just what the admin avatar uses of L{vorchd.fleet.Fleet}, recording what it is told.
    """

    fleet_id = "f1"
    policy_options: dict[str, str] = {}
    last_reconcile = {"rolled_back": [], "adopted": [], "missing": [11]}

    def __init__(self):
        self.state = fleet_state()
        self.settings = {"policy": "first-fit", **{f"{r}_ratio": "1.0" for r in RESOURCES}}
        self.store = FakeStore(self)
        self.hypervisors = FakeHypervisors(self.state)
        self.creator = FakeCreator()

    def current(self):
        ratios = {r: float(self.settings[f"{r}_ratio"]) for r in RESOURCES}
        return policy_named(self.settings["policy"], self.policy_options), ratios

    def ready(self) -> FleetState:
        return self.state

    def pm_ids(self) -> list[int]:
        return list(self.state.pm_ids)

    def view(self) -> dict:
        policy, ratios = self.current()
        return views.fleet(self.state, policy.name, ratios)

    def connected_pmids(self) -> list[int]:
        return [1, 2, 3, 4]


class AdminPortTestCase(SynchronousTestCase):
    """
    A PB server for a L{FakeFleet} behind the real password checker, and a client,
    joined by an in-memory pump.
    """

    def setUp(self):
        self.fleet = FakeFleet()
        directory = tempfile.mkdtemp(prefix="vorchd-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        passwd = os.path.join(directory, "admin.passwd")
        with open(passwd, "wb") as f:
            f.write(b"admin:" + PASSWORD + b"\n")
        os.chmod(passwd, 0o600)
        server = pb.PBServerFactory(
            portal.Portal(AdminRealm(self.fleet), [password_checker(passwd)])
        )
        self.client = pb.PBClientFactory()
        _, _, self.pump = iosim.connectedServerAndClient(
            lambda: server.buildProtocol(ADDRESS), lambda: self.client.buildProtocol(ADDRESS)
        )
        self.addCleanup(self.hang_up)

    def hang_up(self):
        self.client.disconnect()
        self.pump.flush()

    def login(self, user: bytes = b"admin", password: bytes = PASSWORD):
        d = self.client.login(UsernamePassword(user, password))
        self.pump.flush()
        return d

    def call(self, name: str, *args, **kw):
        """
        Log in (once) and call C{name}; the Deferred of its answer.
        """
        if not hasattr(self, "avatar"):
            self.avatar = self.successResultOf(self.login())
        d = self.avatar.callRemote(name, *args, **kw)
        self.pump.flush()
        return d

    def answer(self, name: str, *args, **kw):
        return self.successResultOf(self.call(name, *args, **kw))

    def refusal(self, name: str, *args, **kw) -> str:
        """
        The message of the L{AdminError} that C{name} is refused with.
        """
        failure = self.failureResultOf(self.call(name, *args, **kw))
        self.assertTrue(failure.check(AdminError), failure)
        return failure.getErrorMessage()


class LoginTests(AdminPortTestCase):
    """
    Who may log in.
    """

    def test_wrong_password_refused(self):
        """
        A wrong password, or a user the password file lacks, is refused; the right one
        gets the avatar.
        """
        for user, password in ((b"admin", b"wrong"), (b"root", PASSWORD)):
            self.failureResultOf(self.login(user, password), UnauthorizedLogin)
        self.assertEqual(len(self.flushLoggedErrors(UnauthorizedLogin)), 2)
        self.assertIsInstance(self.successResultOf(self.login()), pb.RemoteReference)


# Each command of the table: arguments to send, and the answer they must get.
CASES = {
    "status": ((), {}, None),  # checked in full by test_status
    "policies": ((), {}, available_policies()),
    "policy": (("worst-fit",), {}, "worst-fit"),
    "ratios": ((), {"cpu": 2.5}, {"cpu": 2.5, "ram": 1.0, "disk": 1.0}),
    "drain": ((1,), {}, 1),
    "enable": ((), {"pmid": 2}, 2),
    "rediscover": ((2,), {}, {2: {"cpu": 4, "ram": 4096, "disk": 100}}),
    "prune": ((), {}, {1: ["vorchd-f1-image-1.img"], 2: ["vorchd-f1-image-2.img"], 3: None}),
    "whatif": ((), {}, None),  # checked in full by test_whatif_runs_here
}


class DispatchTests(AdminPortTestCase):
    """
    Every command of the table reaches the avatar's method of its name, its arguments
    checked against the table first; nothing else is reachable.
    """

    def test_every_command_has_its_method(self):
        """
        Each command of the table has an async method on the avatar taking its arguments
        by name, and a case here.
        """
        for name, command in COMMANDS.items():
            method = getattr(Admin, name)
            self.assertTrue(inspect.iscoroutinefunction(method), name)
            parameters = list(inspect.signature(method).parameters)[1:]
            progress = ["progress"] if command.progress else []
            self.assertEqual(parameters, [a.name for a in command.arguments] + progress, name)
        self.assertEqual(set(CASES), set(COMMANDS))

    def test_each_command_dispatched(self):
        """
        Each command, called with arguments the table allows, answers what its method
        does, and the fleet is told what the command means.
        """
        for name, (args, kw, expected) in CASES.items():
            answer = self.answer(name, *args, **kw)
            if expected is not None:
                self.assertEqual(answer, expected, name)
        self.assertEqual(self.fleet.settings["policy"], "worst-fit")
        self.assertEqual(self.fleet.settings["cpu_ratio"], "2.5")
        self.assertEqual(self.fleet.store.drained, [(1, True), (2, False)])
        self.assertEqual(self.fleet.creator.forgotten, [1, 1, 2, 2])
        self.assertIn((1, "prune_bases", "f1"), self.fleet.hypervisors.calls)

    def test_whatif_runs_here(self):
        """
        whatif asks the daemon only for its fleet and policy options, whatever words it
        is given (they stay with vorchd-admin); vorchd-admin simulates on them and prints
        the comparison, the policy in force marked.
        """
        command = COMMANDS["whatif"]
        values = {"argv": ["worst-fit", "--generate", "300", "--seed", "3"]}
        self.assertEqual(to_call(command, values), ("whatif", (), {}))
        answer = self.answer("whatif")
        self.assertEqual(answer["fleet"], self.fleet.view())
        self.assertEqual(answer["options"], {})
        text = command.local(answer, values)
        self.assertIn("first-fit (now)", text)
        self.assertIn("worst-fit", text)

    def test_status(self):
        """
        status lists the current PMs, then the retired ones, each with its state, room
        and missing VMs, and the policy, ratios and last reconcile.
        """
        status = self.answer("status")
        self.assertEqual(
            status["pms"][0],
            {
                "pmid": 1,
                "uri": "test:///pm1",
                "state": "up",
                "up": True,
                "drained": False,
                "capacity": {"cpu": 2, "ram": 2048, "disk": 100},
                "free": {"cpu": 1, "ram": 1536, "disk": 99},
                "vms": 1,
                "missing": [],
            },
        )
        self.assertEqual(
            [(pm["pmid"], pm["state"], pm["missing"]) for pm in status["pms"]],
            [(1, "up", []), (2, "drained", []), (3, "down", []), (4, "retired", [11])],
        )
        self.assertEqual(
            {k: status[k] for k in ("fleet", "policy", "ratios", "reconciled")},
            {
                "fleet": "f1",
                "policy": "first-fit",
                "ratios": {"cpu": 1.0, "ram": 1.0, "disk": 1.0},
                "reconciled": FakeFleet.last_reconcile,
            },
        )

    def test_optional_arguments(self):
        """
        An optional argument may be left out or sent as None (as vorchd-admin used to):
        policy then answers the one in force, rediscover covers every PM.
        """
        self.assertEqual(self.answer("policy"), "first-fit")
        self.assertEqual(self.answer("policy", None), "first-fit")
        self.assertEqual(sorted(self.answer("rediscover")), [1, 2, 3, 4])
        self.assertIsNone(self.answer("rediscover", None)[3])
        self.assertEqual(self.answer("ratios"), {"cpu": 1.0, "ram": 1.0, "disk": 1.0})

    def test_arguments_checked(self):
        """
        Missing, extra, unknown, repeated and ill-typed arguments are refused with a
        message naming the argument, before the fleet is told anything.
        """
        refusals = [
            (("drain",), {}, "drain: PMID missing; usage: drain PMID [--evacuate]"),
            (("drain", 1, 2), {}, "drain: too many arguments; usage: drain PMID [--evacuate]"),
            (("drain", "1"), {}, "PM id '1' is not a number"),
            (("enable", True), {}, "PM id True is not a number"),
            (("drain", 1), {"pmid": 1}, "drain: pmid given twice"),
            (("rediscover", 1.5), {}, "PM id 1.5 is not a number"),
            (("policy", 3), {}, "policy 3 is not a name"),
            (("ratios",), {"ram": "x"}, "ram ratio 'x' is not a number"),
            (("ratios",), {"cpu": 2, "ram": 0}, "ram ratio must be positive, not 0"),
            (
                ("ratios",),
                {"gpu": 2},
                "ratios: no argument 'gpu'; usage: ratios [RESOURCE=RATIO ...]",
            ),
            (
                ("ratios", 2.0),
                {},
                "ratios: too many arguments; usage: ratios [RESOURCE=RATIO ...]",
            ),
            (("status", "--json"), {}, "status: too many arguments; usage: status [--json]"),
            (("prune",), {"all": True}, "prune: no argument 'all'; usage: prune"),
        ]
        for (name, *args), kw, message in refusals:
            self.assertEqual(self.refusal(name, *args, **kw), message)
        self.assertEqual(self.fleet.store.drained, [])
        self.assertEqual(self.fleet.settings["cpu_ratio"], "1.0")
        self.assertEqual(self.fleet.hypervisors.calls, [])

    def test_fleet_refusals(self):
        """
        What the fleet refuses comes back as a message too: an unknown PM, an unknown
        policy (with the known ones).
        """
        self.assertEqual(self.refusal("drain", 99), "no PM 99")
        self.assertEqual(self.refusal("rediscover", 99), "no PM 99")
        message = self.refusal("policy", "cleverest")
        self.assertIn("cleverest", message)
        self.assertIn("first-fit", message)
        self.assertEqual(self.fleet.settings["policy"], "first-fit")

    def test_unknown_command(self):
        """
        A command not in the table is refused with the commands there are, whatever the
        avatar has by that name.
        """
        known = ", ".join(COMMANDS)
        for name in ("frobnicate", "_status", "_audit", "perspectiveMessageReceived", "log"):
            self.assertEqual(
                self.refusal(name), f"unknown command {name!r}; the commands are {known}"
            )


class WireTests(SynchronousTestCase):
    """
    The call vorchd-admin makes for a command is the one the daemon takes.
    """

    def test_round_trip(self):
        """
        The values the command line gives, made into a call (L{to_call}) and bound by
        the daemon (L{bind}), arrive as they were; policies asks status.
        """
        given = {
            "status": {},
            "policy": {"name": "best-fit"},
            "ratios": {"wanted": {"cpu": 2.0, "disk": 1.5}},
            "drain": {"pmid": 3, "evacuate": False},
            "enable": {"pmid": 3},
            "rediscover": {"pmid": None},
            "prune": {},
            "whatif": {"argv": None},
        }
        for name, values in given.items():
            remote, args, kw = to_call(COMMANDS[name], values)
            self.assertEqual(remote, name)
            self.assertEqual(bind(COMMANDS[name], args, kw), values, name)
        self.assertEqual(to_call(COMMANDS["policies"], {}), ("status", (), {}))
        self.assertEqual(to_call(COMMANDS["rediscover"], {"pmid": None}), ("rediscover", (), {}))
        self.assertEqual(
            to_call(COMMANDS["drain"], {"pmid": 3, "evacuate": True}),
            ("drain", (3,), {"evacuate": True}),
        )
        self.assertEqual(
            bind(COMMANDS["drain"], (3,), {"evacuate": True}), {"pmid": 3, "evacuate": True}
        )
