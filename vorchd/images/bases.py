"""
The fleet's side of base copies: an image's copy in a PM's pool, which every VM disk
of that image on that PM is an overlay on.
"""

from __future__ import annotations

from twisted.internet import defer

from vorchd.hypervisor.service import Hypervisors

# Seconds a base copy found on a PM is used without asking the PM again.
BASE_TRUSTED = 5.0


class BaseCopies:
    """
    Gets base copies made on PMs: one upload per image and PM however many creates wait
    for it, and a copy found trusted for L{BASE_TRUSTED} seconds before the PM is asked
    again (which also notices an image file changed since, or a copy deleted), so that a
    burst of creates on one PM costs one check rather than one each.
    """

    def __init__(self, hypervisors: Hypervisors, reactor):
        self.hypervisors = hypervisors
        self.reactor = reactor
        self._locks: dict[tuple[int, int], defer.DeferredLock] = {}
        # (pmid, image_id, source) -> (path, format, trusted until)
        self._known: dict[tuple[int, int, str], tuple[str, str, float]] = {}

    async def ensure(self, fleet: str, pmid: int, image_id: int, source: str) -> tuple[str, str]:
        """
        The image's base copy on PM C{pmid} (its path and format), uploaded if missing.
        """
        key = (pmid, image_id, source)
        now = self.reactor.seconds()
        known = self._known.get(key)
        if known is not None and known[2] > now:
            return known[0], known[1]
        lock = self._locks.setdefault((pmid, image_id), defer.DeferredLock())
        path, fmt = await lock.run(self.hypervisors.on(pmid).ensure_base, fleet, image_id, source)
        self._known[key] = (path, fmt, now + BASE_TRUSTED)
        return path, fmt

    def forget(self, pmid: int | None = None) -> None:
        """
        Ask the PM (every PM) again before trusting its base copies (they were pruned, or
        a VM built on one failed).
        """
        for key in [k for k in self._known if pmid is None or k[0] == pmid]:
            del self._known[key]
