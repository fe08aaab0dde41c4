"""
The twistd plugin's C{Options} and C{makeService}: settings and input files in, a
service tree out: C{hypervisors} (the libvirt connections and their thread pool),
C{fleet} (the inventory's load and discovery, with the timers C{heartbeat},
C{reconcile} and C{undo}), C{rest} (the REST port, an endpoint service) and C{admin}
(the PB port).
"""

from __future__ import annotations

import gc
import os

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site

from vorchd import accesslog, inventory, listening
from vorchd.admin import AdminService, password_checker
from vorchd.config import ConfigError, RedisAddress, Settings, load_settings
from vorchd.fleet import Fleet, HostSettings
from vorchd.hypervisor.service import Hypervisors
from vorchd.images import ImageCache
from vorchd.listening import ListeningService
from vorchd.policies import UnknownPolicy, policy_named
from vorchd.rest import SeedAPI
from vorchd.store import Store, StoreUnavailable


class Options(usage.Options):
    """
    C{twistd vorchd} options. The ini file holds every setting; these override it.
    """

    optParameters = [
        ["config", "c", None, "The ini file (default: $VORCHD_CONFIG or etc/vorchd.ini)."],
        ["port", "p", None, "The REST port (overrides the ini and $VORCHD_PORT).", int],
        ["redis", None, None, "The Redis URL (overrides the ini and $VORCHD_REDIS)."],
        ["pm-file", None, None, "The pm_file (overrides the ini)."],
        ["image-file", None, None, "The image_file (overrides the ini)."],
        ["flavor-file", None, None, "The flavor_file (overrides the ini)."],
        [
            "network",
            None,
            None,
            "What VMs' NICs attach to: NAME (a libvirt network), bridge:NAME or none"
            " (overrides the ini's [network] attach).",
        ],
    ]

    def postOptions(self) -> None:
        """
        Read the settings and parse the three input files now, so that a bad one stops
        start-up with its name, line and reason before anything is stored.
        """
        overrides = {
            "port": self["port"],
            "redis": RedisAddress.from_url(self["redis"]) if self["redis"] else None,
            "pm_file": self["pm-file"],
            "image_file": self["image-file"],
            "flavor_file": self["flavor-file"],
            "network_attach": self["network"],
        }
        try:
            settings = load_settings(self["config"], overrides=overrides)
            policy_named(settings.policy, settings.allocation_options)
            if settings.admin_port is not None and os.path.exists(settings.admin_passwd_file):
                # A password file others can read is refused, not merely warned about.
                password_checker(settings.admin_passwd_file)
            missing = [
                k for k in ("pm_file", "image_file", "flavor_file") if not getattr(settings, k)
            ]
            if missing:
                raise ConfigError(f"no {', '.join(missing)} given (ini [inventory] or options)")
            self.settings = settings
            self.pms = inventory.parse_pm_file(
                settings.pm_file, ssh_template=settings.ssh_uri_template
            )
            self.images = inventory.parse_image_file(settings.image_file)
            self.flavors = inventory.parse_flavor_file(settings.flavor_file)
        except (ConfigError, UnknownPolicy, ValueError, inventory.InputFileError) as e:
            raise usage.UsageError(str(e)) from None


class FleetService(MultiService):
    """
    Loads the inventory into Redis and discovers the PMs; its children are the timers
    of the daemon's periodic work (lease, reconciliation, undoing failed creates).

    If Redis is down at start-up, loading is retried until it succeeds.
    """

    log = Logger()
    retry_delay = 2.0

    def __init__(self, fleet: Fleet, settings: Settings, pms, images, flavors, reactor):
        super().__init__()
        self.fleet = fleet
        self.settings = settings
        self.inventory = (pms, images, flavors)
        self.reactor = reactor
        self.rest: ListeningService | None = None
        self.loaded = defer.Deferred()
        # Fires once the image cache has been swept of what crashed fetches left.
        self.swept = defer.succeed(None)
        self._stopping = False
        self._retry = None
        for name, interval, work in (
            # Renew the lease well before it runs out.
            ("heartbeat", settings.lease / 3, self.heartbeat),
            ("reconcile", settings.reconcile_interval, self.reconcile),
            # Failed creates Redis could not record are undone as soon as it answers.
            ("undo", 2.0, self.retry_undos),
        ):
            timer = TimerService(interval, work)
            timer.clock = reactor
            timer.setName(name)
            timer.setServiceParent(self)

    @property
    def port(self):
        """
        The REST port, once it listens.
        """
        return self.rest.port if self.rest is not None else None

    def startService(self) -> None:
        super().startService()
        self._started = defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        if self.fleet.images is not None:
            # Alongside the load: a cache on a hung mount must not keep the API down.
            self.swept = defer.ensureDeferred(self._sweep_image_cache(self.fleet.images))
        # The read model follows Redis from the start (the load's writes wait for it).
        self.fleet.feed.start()
        while not self._stopping:
            try:
                await self.fleet.load(*self.inventory)
                break
            except StoreUnavailable as e:
                self.log.warn("redis unavailable, retrying the inventory load: {e}", e=e)
                self._retry = task.deferLater(self.reactor, self.retry_delay, lambda: None)
                try:
                    await self._retry
                except defer.CancelledError:
                    return
        if self._stopping:
            return
        self.log.info("inventory loaded: {n} PMs", n=len(self.inventory[0]))
        # PMs are discovered in the background: the API answers meanwhile.
        await self.fleet.discover()
        # What start-up made (connections, the model of thousands of PMs) lives as long
        # as the daemon: out of the collector's way, so that its full passes, which
        # stall the reactor, do not grow with the fleet.
        gc.freeze()
        if not self.loaded.called:
            self.loaded.callback(None)
        # The first reconciliation at once; the timer does the next ones.
        self._first_round = defer.ensureDeferred(self.reconcile())

    async def _sweep_image_cache(self, images) -> None:
        try:
            removed = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), images.sweep
            )
        except OSError as e:
            self.log.warn("image cache {dir} not swept: {e}", dir=images.directory, e=e)
            return
        for path in removed:
            self.log.info("removed {path}, left by a fetch cut short", path=path)

    # The timers' work: an error is logged and the timer goes on (a LoopingCall whose
    # call fails stops for good).

    async def heartbeat(self) -> None:
        try:
            await self.fleet.store.heartbeat(self.fleet.daemon_id, self.settings.lease)
        except StoreUnavailable as e:
            self.log.warn("lease not renewed: {e}", e=e)
        except Exception:
            self.log.failure("lease not renewed")

    async def reconcile(self) -> None:
        if not self.loaded.called or self._stopping:
            return
        try:
            report = await self.fleet.reconcile()
        except StoreUnavailable as e:
            self.log.warn("reconciliation postponed: {e}", e=e)
            return
        except Exception:
            self.log.failure("reconciliation failed; next round in a while")
            return
        if any(report.values()):
            self.log.info("reconciled: {report}", report=report)

    async def retry_undos(self) -> None:
        if not self.loaded.called:
            return
        try:
            await self.fleet.retry_undos()
        except Exception:
            self.log.failure("undoing failed creates failed; next round in a while")

    async def _stop(self) -> None:
        self._stopping = True
        if self._retry is not None and not self._retry.called:
            self._retry.cancel()
        # The timers stop once their round in progress ends (not under its feet).
        await MultiService.stopService(self)
        await self._started
        if getattr(self, "_first_round", None) is not None:
            await self._first_round
        await self.fleet.feed.stop()
        await self.fleet.store.disconnect()

    def stopService(self):
        return defer.ensureDeferred(self._stop())


log = Logger()


def build(settings: Settings, pms, images, flavors, reactor=None) -> MultiService:
    """
    The daemon's service tree for C{settings} and the parsed input files.
    """
    if reactor is None:
        from twisted.internet import reactor
    top = MultiService()
    hypervisors = Hypervisors(
        reactor,
        threads=settings.threads,
        connect_timeout=settings.connect_timeout,
        call_timeout=settings.call_timeout,
        reconnect_max_delay=settings.reconnect_max_delay,
    )
    hypervisors.setName("hypervisors")
    hypervisors.setServiceParent(top)
    store = Store.connect(
        settings.redis,
        settings.key_prefix,
        min_replicas_acked=settings.min_replicas_acked,
        replicas_ack_timeout=settings.replicas_ack_timeout,
    )
    fleet = Fleet(
        store,
        hypervisors,
        settings.policy,
        settings.ratios,
        HostSettings(
            settings.pool_name,
            settings.pool_path,
            settings.domain_type,
            settings.console_log_dir,
            settings.stop_timeout,
            settings.migrate_timeout,
            settings.network,
        ),
        settings.max_attempts,
        inventory.this_machine(),
        settings.allocation_options,
        ImageCache(settings.image_cache_dir, reactor, **settings.image_fetch_options),
        settings.volume_backend,
        settings.ceph,
    )
    service = FleetService(fleet, settings, pms, images, flavors, reactor)
    service.setName("fleet")
    service.setServiceParent(top)
    site = Site(SeedAPI(fleet).resource())
    site.noisy = False
    try:
        accesslog.configure(site, settings)
    except OSError as e:
        log.error("cannot open the access log: {e}", e=e)
        raise SystemExit(f"vorchd: cannot open the access log: {e}") from None
    rest = ListeningService(
        listening.endpoint(reactor, settings.port, settings.interface),
        site,
        "the seed API",
        required=True,
    )
    rest.setName("rest")
    rest.setServiceParent(top)
    service.rest = rest
    if settings.admin_port is not None:
        try:
            checker = password_checker(settings.admin_passwd_file)
        except ValueError as e:
            log.warn("no admin port: {e} (write 'user:password' lines to it, mode 600)", e=e)
        else:
            admin = AdminService(
                fleet, settings.admin_port, settings.admin_interface, checker, reactor
            )
            admin.setName("admin")
            admin.setServiceParent(top)
    return top


def makeService(options: Options, reactor=None) -> MultiService:
    """
    The twistd entry point.
    """
    top = build(options.settings, options.pms, options.images, options.flavors, reactor)
    accesslog.cap_daemon_log(top, options)
    return top
