"""
Start-up: the parsed input files become the fleet's inventory, and every PM gets its
connection.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet import defer
from twisted.logger import Logger

from vorchd.fleet.parts import Parts
from vorchd.hypervisor.host import LibvirtHost
from vorchd.model import Flavor, ImageEntry, PMEntry


class Startup:
    """
    Loads the inventory and connects the PMs.

    @ivar retired: the PMs out of the pm_file that still have VMs, as C{(pmid, uri)}.
    """

    log = Logger()

    def __init__(self, parts: Parts, ini_settings: dict[str, str]):
        self.parts = parts
        self.ini_settings = ini_settings
        self.retired: list[tuple[int, str]] = []
        self.hosts: list[tuple[int, str]] = []

    async def load(
        self, pms: Sequence[PMEntry], images: Sequence[ImageEntry], flavors: Sequence[Flavor]
    ) -> None:
        """
        Make the parsed input files the fleet's inventory (ids kept by line), and make
        each PM's connection (L{discover} connects them).

        A PM whose line left the pm_file while it still has VMs is I{retired}: it takes no
        new VMs and is out of C{pm/list}, but stays connected, so that its VMs can still
        be destroyed and reconciled, until the daemon next starts without VMs there.
        """
        parts, store = self.parts, self.parts.store
        parts.fleet_id = await store.fleet_id()
        await store.adopt_settings(self.ini_settings)
        pmids = await store.register_pms((e.line, e.uri) for e in pms)
        await store.register_images((e.line, e.name) for e in images)
        await store.set_flavors(flavors)
        # The first creates should not wait for a block of vmids to be made durable.
        store.prepare_vmids()
        # A fleet whose VMs were made before claims indexed their MACs: index them once.
        added = await store.index_macs()
        if added:
            self.log.info("indexed the MAC addresses of {n} VMs", n=added)
        self.retired = [(p, parts.state.pms[p].uri) for p in parts.state.retired()]
        in_file = list(zip(pmids, (e.uri for e in pms), strict=True))
        current = {uri: pmid for pmid, uri in in_file}
        for pmid, uri in self.retired:
            self.log.warn(
                "PM {pmid} ({uri}) is no longer in the pm_file but still has VMs: kept"
                " connected so that they can be destroyed; it takes no new VMs",
                pmid=pmid,
                uri=uri,
            )
            if uri in current:
                self.log.warn(
                    "PM {pmid} and PM {now} are the same hypervisor ({uri}), its line having"
                    " changed: PM {now} does not count PM {pmid}'s VMs, so destroy or"
                    " drain them before filling it",
                    pmid=pmid,
                    now=current[uri],
                    uri=uri,
                )
        s = parts.host_settings
        self.hosts = [*in_file, *self.retired]
        for pmid, uri in self.hosts:
            if parts.hypervisors.host(pmid) is None:
                parts.hypervisors.add(
                    pmid,
                    LibvirtHost(
                        uri,
                        s.pool_name,
                        s.pool_path,
                        s.domain_type,
                        s.console_log_dir,
                        s.network.for_uri(uri),
                    ),
                )

    async def discover(self) -> None:
        """
        Connect to and discover every PM L{load} named, at once; returns when each has
        been reached or failed (and is retried in the background).
        """
        await defer.DeferredList(
            [defer.ensureDeferred(self.parts.hypervisors.connect(p)) for p, _ in self.hosts],
            consumeErrors=True,
        )

    def connected_pmids(self) -> list[int]:
        """
        Every PM this daemon keeps connected: the pm_file's, in its order, then the retired.
        """
        return [*self.parts.state.pm_ids, *(pmid for pmid, _ in self.retired)]
