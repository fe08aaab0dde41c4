"""
The fleet as users see it through the API, and the acts that change it.

L{Fleet} holds the shared parts (L{parts}) and one object per job, each in a module of
its own, none calling back up to the fleet: L{startup} (inventory, connections),
L{discovery} (capacity, domains present), L{create}, L{destroy}, L{undo},
L{reconcile}, L{running} (state changes of running VMs), L{move} (resize, migrate,
evacuate), and L{settings} (the live policy and ratios). Reads answer from the read
model (L{vorchd.state}).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine, Mapping, Sequence

from twisted.internet import defer
from twisted.python.failure import Failure

from vorchd.fleet import discovery, running
from vorchd.fleet.create import Creator
from vorchd.fleet.destroy import destroy
from vorchd.fleet.move import Mover
from vorchd.fleet.parts import HostSettings, Parts, Refused
from vorchd.fleet.reconcile import Reconciler
from vorchd.fleet.settings import LiveSettings
from vorchd.fleet.settle import settle_change
from vorchd.fleet.startup import Startup
from vorchd.fleet.undo import Undo
from vorchd.fleet.volumes import Volumes
from vorchd.hypervisor.service import Hypervisors
from vorchd.images import ImageCache
from vorchd.model import Flavor, Image, ImageEntry, PMEntry, Resources
from vorchd.policies import IAllocationPolicy
from vorchd.state import views
from vorchd.state.model import FleetState
from vorchd.store import Store
from vorchd.volume_xml import CephPool

__all__ = ["Fleet", "HostSettings", "Refused"]

_DEFAULT_HOST_SETTINGS = HostSettings()


class Fleet:
    """
    The fleet: its parts, its jobs, and the answers the API reads.
    """

    def __init__(
        self,
        store: Store,
        hypervisors: Hypervisors,
        policy: str,
        ratios: Mapping[str, float],
        host_settings: HostSettings = _DEFAULT_HOST_SETTINGS,
        max_attempts: int = 3,
        is_local: Callable[[str], bool] = lambda host: False,
        policy_options: Mapping[str, str] | None = None,
        images: ImageCache | None = None,
        volume_backend: str = "local",
        ceph: CephPool | None = None,
    ):
        self.parts = parts = Parts(
            store, hypervisors, host_settings, max_attempts, is_local, images
        )
        self.settings = LiveSettings(policy, ratios, policy_options)
        self.startup = Startup(parts, self.settings.ini)
        self.undo = Undo(parts)
        self.creator = Creator(parts, self.settings, self.undo)
        self.mover = Mover(parts, self.settings, self.creator)
        self.volumes = Volumes(parts, self.settings, volume_backend, self.creator.in_flight, ceph)
        self.mover.before_move = self.volumes.before_move
        self.reconciler = Reconciler(
            parts,
            self.creator.in_flight,
            self.connected_pmids,
            functools.partial(settle_change, parts),
            self.volumes.settle,
        )
        hypervisors.on_up = self._discovered
        hypervisors.on_state = parts.state.set_up
        self._view_cache: tuple[tuple, bytes] | None = None

    # -- the parts, by name ----------------------------------------------------------

    @property
    def store(self) -> Store:
        return self.parts.store

    @property
    def hypervisors(self) -> Hypervisors:
        return self.parts.hypervisors

    @property
    def state(self) -> FleetState:
        return self.parts.state

    @property
    def feed(self):
        return self.parts.feed

    @property
    def metrics(self):
        return self.parts.metrics

    @property
    def images(self) -> ImageCache | None:
        return self.parts.images

    @property
    def fleet_id(self) -> str | None:
        return self.parts.fleet_id

    @property
    def daemon_id(self) -> str:
        return self.parts.daemon_id

    @property
    def policy_options(self) -> dict[str, str]:
        return self.settings.policy_options

    @property
    def retired(self) -> list[tuple[int, str]]:
        return self.startup.retired

    @property
    def last_reconcile(self) -> dict[str, list[int]]:
        return self.reconciler.last

    # -- start-up and discovery ------------------------------------------------------

    async def load(
        self, pms: Sequence[PMEntry], images: Sequence[ImageEntry], flavors: Sequence[Flavor]
    ) -> None:
        await self.startup.load(pms, images, flavors)
        # The image_file's lines, parsed once here, are what creates read.
        self.creator.sources.remember(images)

    async def discover(self) -> None:
        await self.startup.discover()

    def connected_pmids(self) -> list[int]:
        return self.startup.connected_pmids()

    async def _discovered(self, pmid: int, capacity: Resources) -> None:
        await discovery.discovered(self.parts, pmid, capacity)

    async def check_domains(self, pmid: int, present: set[str] | None = None) -> list[int]:
        return await discovery.check_domains(self.parts, pmid, present)

    # -- live settings -----------------------------------------------------------------

    def current(self) -> tuple[IAllocationPolicy, dict[str, float]]:
        """
        The policy and overcommit ratios in force now.
        """
        return self.settings.current(self.parts.state)

    # -- acting ------------------------------------------------------------------------

    def create(self, name: str, instance_type: int, image_id: int) -> defer.Deferred:
        """
        L{Creator.create}, carried through to the end even if the caller gives up (an
        HTTP client gone): a create cut short would leave its claim, or a domain, behind.
        """
        return _finish(self.creator.create(name, instance_type, image_id))

    def destroy(self, vmid: int) -> defer.Deferred:
        """
        L{destroy}, carried through to the end even if the caller gives up; the volumes
        attached to the VM are detached first, and stay.
        """

        async def work():
            if self.parts.ready().vms.get(vmid) is not None:
                await self.volumes.detach_all(vmid)
            await destroy(self.parts, vmid)

        return _finish(work())

    # -- block volumes (vorchd.fleet.volumes) ------------------------------------------

    def volume_create(self, name: str, size: int) -> defer.Deferred:
        return _finish(self.volumes.create(name, size))

    def volume_attach(self, vmid: int, volumeid: int) -> defer.Deferred:
        return _finish(self.volumes.attach(vmid, volumeid))

    def volume_detach(self, volumeid: int) -> defer.Deferred:
        return _finish(self.volumes.detach(volumeid))

    def volume_destroy(self, volumeid: int) -> defer.Deferred:
        return _finish(self.volumes.destroy(volumeid))

    def volume(self, volumeid: int) -> dict[str, object] | None:
        """
        C{volume/query}'s answer for volume C{volumeid}, or C{None}.
        """
        vol = self.ready().volumes.get(volumeid)
        return None if vol is None else views.volume_view(vol)

    def volume_ids(self) -> list[int]:
        return sorted(self.ready().volumes)

    def act(self, vmid: int, action: str) -> defer.Deferred:
        """
        Change VM C{vmid}'s state (L{running.act}): C{action} is one of
        L{running.ACTIONS}. Fails with L{Refused} when it cannot.
        """
        return _finish(running.act(self.parts, vmid, action))

    def info(self, vmid: int) -> defer.Deferred:
        """
        VM C{vmid} as its hypervisor has it now (L{running.info}): a dict with C{vmid},
        C{name}, C{instance_type}, C{pmid}, C{image_id}, C{state} and C{domain}. Fails
        with L{Refused} when there is no such VM.
        """
        return defer.ensureDeferred(running.info(self.parts, vmid))

    def resize(self, vmid: int, instance_type: int) -> defer.Deferred:
        """
        Give VM C{vmid} flavor C{instance_type} on its PM. Fails with L{Refused} (nothing
        changed) when it cannot.
        """
        return _finish(self.mover.resize(vmid, instance_type))

    def migrate(self, vmid: int, pmid: int | None = None) -> defer.Deferred:
        """
        Move VM C{vmid} to PM C{pmid} (live if it runs), or to the PM the active policy
        picks when C{pmid} is None. Fails with L{Refused} (the VM where it was) when it
        cannot.
        """
        return _finish(self.mover.migrate(vmid, pmid))

    def evacuate(self, pmid: int, progress=None) -> defer.Deferred:
        """
        Close PM C{pmid} to new VMs and move its VMs away (L{Mover.evacuate}).
        """
        return _finish(self.mover.evacuate(pmid, progress))

    async def retry_undos(self) -> list[int]:
        return await self.undo.retry()

    async def reconcile(self) -> dict[str, list[int]]:
        return await self.reconciler.reconcile()

    # -- reading (from the model: no Redis round trip) -----------------------------

    def ready(self) -> FleetState:
        """
        The read model while it follows Redis (see L{Parts.ready}); else
        L{StoreUnavailable}, so that reads answer their failure values.
        """
        return self.parts.ready()

    def vm(self, vmid: int) -> dict[str, object] | None:
        """
        The seed API's view of VM C{vmid}, or C{None} if there is no such VM.
        """
        return views.vm_answer(self.ready(), vmid)

    def pm(self, pmid: int) -> dict[str, object] | None:
        """
        The seed API's view of PM C{pmid}, or C{None} if the fleet never had it.
        """
        return views.pm_answer(self.ready(), pmid, self.current()[1])

    def pm_vmids(self, pmid: int) -> list[int] | None:
        """
        The VMs on PM C{pmid}, or C{None} if the fleet never had it.
        """
        return views.pm_vmids(self.ready(), pmid)

    def pm_ids(self) -> list[int]:
        return list(self.ready().pm_ids)

    def flavors(self) -> list[Flavor]:
        return list(self.ready().flavors)

    def images_list(self) -> list[Image]:
        return list(self.ready().images)

    def view(self) -> dict:
        """
        The whole fleet (C{/v1/fleet}).
        """
        state = self.ready()
        policy, ratios = self.current()
        return views.fleet(state, policy.name, ratios)

    def view_json(self) -> bytes:
        """
        L{view} as the JSON C{/v1/fleet} answers, made once per change of the model.
        """
        state = self.ready()
        policy, ratios = self.current()
        key = (state.version, state.seq, policy.name, tuple(sorted(ratios.items())))
        if self._view_cache is None or self._view_cache[0] != key:
            doc = views.fleet(state, policy.name, ratios)
            self._view_cache = (key, json.dumps(doc).encode("ascii"))
        return self._view_cache[1]


def _finish(work: Coroutine) -> defer.Deferred:
    """
    A Deferred of C{work}'s result that the caller may cancel (it then fails with
    C{CancelledError}) without cancelling C{work}, which runs to its end regardless.
    """
    running = defer.ensureDeferred(work)
    answer: defer.Deferred = defer.Deferred(lambda d: None)

    def done(result):
        if not answer.called:
            answer.callback(result)
        elif isinstance(result, Failure):
            # The caller is gone; the work's own failure was logged where it happened.
            result.trap(Exception)

    running.addBoth(done)
    return answer
