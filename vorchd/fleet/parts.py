"""
What every job of the fleet shares: the state store, the hypervisors, the read model
and its feed, this daemon's identity and counters. The jobs (L{startup}, L{discovery},
L{create}, L{destroy}, L{undo}, L{reconcile}) each take these parts, never the
L{vorchd.fleet.Fleet} that holds them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from attrs import frozen

from vorchd.hypervisor.service import Hypervisors, ThreadedHypervisor
from vorchd.images import ImageCache
from vorchd.metrics import Metrics
from vorchd.network import NetworkSettings
from vorchd.state.feed import ChangeFeed
from vorchd.state.model import FleetState
from vorchd.store import Store, StoreUnavailable


class Refused(Exception):
    """
    A request vorchd answers with the seed API's failure value; the message says why,
    C{kind} which class of reason it is (a L{vorchd.metrics.PLACEMENT_REASONS} label).
    """

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind


@frozen
class HostSettings:
    """
    How each PM's libvirt side is set up (from the ini's [libvirt] section).
    """

    pool_name: str = "vorchd"
    pool_path: str = "/var/lib/vorchd/pool"
    domain_type: str = "auto"
    console_log_dir: str | None = None
    # Seconds a guest is given to shut down before it is forced off (stop, resize).
    stop_timeout: float = 60.0
    # Seconds a migration (its disk copied) may take.
    migrate_timeout: float = 600.0
    # What each PM's VMs attach their NIC to (the ini's [network]).
    network: NetworkSettings = NetworkSettings()


class Parts:
    """
    The fleet's shared parts.

    @ivar fleet_id: the fleet's short id, known once the inventory is loaded.
    @ivar daemon_id: stamps this daemon's claims, so that another daemon (or this one,
        restarted) can tell a claim whose creator died from one still being made.
    """

    def __init__(
        self,
        store: Store,
        hypervisors: Hypervisors,
        host_settings: HostSettings = HostSettings(),
        max_attempts: int = 3,
        is_local: Callable[[str], bool] = lambda host: False,
        images: ImageCache | None = None,
    ):
        self.store = store
        self.hypervisors = hypervisors
        self.host_settings = host_settings
        self.max_attempts = max_attempts
        self.is_local = is_local
        self.images = images
        self.fleet_id: str | None = None
        self.daemon_id = secrets.token_hex(6)
        # This daemon's counters, served at /metrics.
        self.metrics = Metrics()
        # The fleet in memory, fed from Redis' change stream: every read answers from it.
        self.state = FleetState()
        self.feed = ChangeFeed(store, self.state, store._reactor, settle_timeout=store._timeout)

    def stopping(
        self, pmid: int, finished: Callable[[], object] | None = None
    ) -> ThreadedHypervisor:
        """
        PM C{pmid}'s hypervisor for a call that may shut a guest down first (stop,
        resize): given the guest's C{stop_timeout} on top of the usual call timeout.
        C{finished} is called when the call's thread is done, in time or not.
        """
        patience = self.host_settings.stop_timeout + self.hypervisors.call_timeout
        return self.hypervisors.on(pmid, timeout=patience, finished=finished)

    def ready(self) -> FleetState:
        """
        The read model, if it is following Redis now: before its first snapshot, and
        from a lost change stream until a fresh snapshot, reads fail as they would with
        Redis down, rather than answer what may be stale.
        """
        if not self.state.ready:
            raise StoreUnavailable("the read model has no snapshot of the fleet yet")
        if not self.feed.connected:
            raise StoreUnavailable("the read model lost Redis' change stream; resyncing")
        return self.state
