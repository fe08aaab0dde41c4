"""
The admin port: Perspective Broker behind twisted.cred, in the daemon's own reactor.

An administrator logs in with a user and password from a password file and runs the
commands of L{vorchd.admincmds.COMMANDS} on the running fleet: status, policy,
overcommit ratios, drain and enable, rediscovery, pruning.
Changes are stored in Redis, so they apply from the next request, reach every daemon
sharing that Redis, and survive restarts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from twisted.cred import checkers, portal
from twisted.internet import defer
from twisted.logger import Logger
from twisted.spread import pb
from zope.interface import implementer

from vorchd import listening, room
from vorchd.admincmds import BadArgument, bind, command_named
from vorchd.fleet import Fleet, Refused
from vorchd.listening import ListeningService
from vorchd.model import RESOURCES
from vorchd.policies import UnknownPolicy, available_policies, policy_named
from vorchd.state import views


class AdminError(pb.Error):
    """
    An admin request that cannot be done; the message says why. The client gets it as a
    C{pb.RemoteError} carrying that message, with no traceback.
    """


def password_checker(path: str) -> checkers.FilePasswordDB:
    """
    Users and passwords from C{path}, one C{user:password} a line.

    PB's challenge-response login needs the password itself on the server, so the file
    holds it in clear: it must be readable by root alone.

    @raise ValueError: the file is missing or others may read it.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ValueError(f"admin password file {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"admin password file {path}: others may read it (chmod 600 it)")
    return checkers.FilePasswordDB(path, cache=False)


class Admin(pb.Avatar):
    """
    What a logged-in administrator may do: the commands of the table
    (L{vorchd.admincmds.COMMANDS}), each an C{async} method of the same name that takes
    the command's arguments by name, already checked against the table.
    """

    log = Logger()

    def __init__(self, fleet: Fleet, user: str):
        self.fleet = fleet
        self.user = user

    def perspectiveMessageReceived(self, broker, message, args, kw):
        """
        Run the command C{message} of the table, its arguments checked and named by the
        table (L{bind}); refuse anything else with an L{AdminError} saying why.
        """
        args = broker.unserialize(args, self)
        kw = broker.unserialize(kw, self)
        try:
            command = command_named(message)
            reporter = kw.pop("progress", None) if command.progress else None
            values = bind(command, args, kw)
        except BadArgument as e:
            raise AdminError(str(e)) from None
        if command.progress:
            values["progress"] = _reporting(reporter)
        method = getattr(self, command.name)
        return broker.serialize(defer.ensureDeferred(method(**values)), self, method, args, kw)

    def _audit(self, message: str, **kw) -> None:
        self.log.info("admin {user}: " + message, user=self.user, **kw)

    async def status(self) -> dict:
        """
        Every PM (capacity, free, VMs, missing VMs, up / down / drained, or retired: out
        of the pm_file but still holding VMs) and the policy and ratios in force.
        """
        fleet = self.fleet
        policy, ratios = fleet.current()
        state = fleet.ready()
        pms = []
        for pmid in [*state.pm_ids, *state.retired()]:
            pm = state.pms.get(pmid)
            if pm is None:
                continue
            up = state.is_up(pmid)
            missing = [
                v for v in sorted(pm.vmids) if v in state.vms and state.vms[v].state == "missing"
            ]
            pms.append(
                {
                    "pmid": pmid,
                    "uri": pm.uri,
                    "state": views.pm_state(state, pmid),
                    "up": up,
                    "drained": pm.drained,
                    "capacity": pm.capacity.as_dict(),
                    "free": room.free(pm.capacity, pm.used, ratios).as_dict(),
                    "vms": len(pm.vmids),
                    "missing": missing,
                }
            )
        return {
            "fleet": fleet.fleet_id,
            "policy": policy.name,
            "policies": available_policies(fleet.policy_options),
            "ratios": ratios,
            "pms": pms,
            "reconciled": fleet.last_reconcile,
        }

    # tests/integration/test_reconcile.py calls the status answer by its former name.
    _status = status

    async def policies(self) -> list[str]:
        """
        The names of the policies this daemon can use.
        """
        return available_policies(self.fleet.policy_options)

    async def policy(self, name: str | None) -> str:
        """
        Switch the allocation policy for every later request; with no name, answer the
        one in force.
        """
        if name is None:
            return self.fleet.current()[0].name
        try:
            policy_named(name, self.fleet.policy_options)
        except (UnknownPolicy, ValueError) as e:
            raise AdminError(str(e)) from None
        await self.fleet.store.set_setting("policy", name)
        self._audit("policy set to {name}", name=name)
        return name

    async def ratios(self, wanted: dict[str, float]) -> dict:
        """
        Set the overcommit ratios C{wanted} (maybe none); answer the ratios now in force.
        """
        for r, ratio in wanted.items():
            await self.fleet.store.set_setting(f"{r}_ratio", repr(ratio))
        if wanted:
            self._audit("ratios set: {ratios}", ratios=wanted)
        _, ratios = self.fleet.current()
        return {r: ratios[r] for r in RESOURCES}

    async def drain(self, pmid: int, evacuate: bool, progress=None) -> int | dict:
        """
        Give PM C{pmid} no new VMs; its VMs stay, or with C{evacuate} are moved away one
        by one (each reported to C{progress} as it goes).
        """
        if not evacuate:
            return await self._drain(pmid, True)
        self._audit("PM {pmid}: evacuating", pmid=pmid)

        def moved(vmid: int, target: int | None, reason: str) -> bool:
            # False (stop after this VM) once the admin has gone: Ctrl-C interrupts.
            return progress is None or progress(
                {"vmid": vmid, "pmid": target or 0, "reason": reason}
            )

        try:
            report = await self.fleet.evacuate(pmid, moved)
        except Refused as e:
            raise AdminError(str(e)) from None
        self._audit("PM {pmid} evacuated: {report}", pmid=pmid, report=report)
        return {"pmid": pmid, **report}

    async def enable(self, pmid: int) -> int:
        """
        Open a drained PM to new VMs again.
        """
        return await self._drain(pmid, False)

    async def _drain(self, pmid: int, drained: bool) -> int:
        if not await self.fleet.store.set_drained(pmid, drained):
            raise AdminError(f"no PM {pmid!r}")
        self._audit("PM {pmid} {change}", pmid=pmid, change="drained" if drained else "enabled")
        return pmid

    async def whatif(self, argv: list[str] | None) -> dict:
        """
        What C{vorchd-admin whatif} simulates on (it runs the simulation itself, off the
        daemon's reactor): the fleet as it is now (C{/v1/fleet}) and the C{[allocation]}
        options policies are made with. C{argv} is vorchd-admin's own.
        """
        return {"fleet": self.fleet.view(), "options": dict(self.fleet.policy_options)}

    async def prune(self) -> dict:
        """
        Delete the image base copies no VM uses any more on every reachable PM; answer
        what was deleted where.
        """
        fleet, out = self.fleet, {}
        for pmid in fleet.pm_ids():
            if fleet.hypervisors.is_up(pmid):
                fleet.creator.forget_bases(pmid)
                out[pmid] = await fleet.hypervisors.on(pmid).prune_bases(fleet.fleet_id)
                fleet.creator.forget_bases(pmid)
            else:
                out[pmid] = None
        self._audit("pruned base copies: {out}", out=out)
        return out

    async def rediscover(self, pmid: int | None) -> dict:
        """
        Reconnect to and rediscover PM C{pmid} (or every PM); answer what each reports.
        """
        pmids = self.fleet.connected_pmids()
        if pmid is not None:
            if pmid not in pmids:
                raise AdminError(f"no PM {pmid!r}")
            pmids = [pmid]
        self._audit("rediscovery of {pmids}", pmids=pmids)
        out = {}
        for p in pmids:
            capacity = await self.fleet.hypervisors.connect(p)
            out[p] = capacity.as_dict() if capacity is not None else None
        return out


@implementer(portal.IRealm)
class AdminRealm:
    """
    Every authenticated user gets an L{Admin} avatar over the fleet.
    """

    def __init__(self, fleet: Fleet):
        self.fleet = fleet

    def requestAvatar(self, avatarId, mind, *interfaces):
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("vorchd's admin realm only speaks PB")
        user = avatarId.decode("utf-8", "replace") if isinstance(avatarId, bytes) else avatarId
        return pb.IPerspective, Admin(self.fleet, user), lambda: None


class AdminService(ListeningService):
    """
    Listens for admin logins on C{interface}:C{port} (127.0.0.1 unless configured).
    """

    def __init__(self, fleet: Fleet, port: int, interface: str, checker, reactor):
        factory = pb.PBServerFactory(portal.Portal(AdminRealm(fleet), [checker]))
        super().__init__(listening.endpoint(reactor, port, interface), factory, "admin port")


def _reporting(reporter) -> Callable[[object], bool] | None:
    """
    A callable that sends each report to the admin's C{reporter} (a remote reference)
    and answers whether the admin is still there to get it (never failing the command
    when not); C{None} for no reporter.
    """
    if not isinstance(reporter, pb.RemoteReference):
        return None

    def report(item: object) -> bool:
        try:
            reporter.callRemote("report", item).addErrback(lambda _f: None)
        except pb.DeadReferenceError:
            return False
        return True

    return report
