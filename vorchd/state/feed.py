"""
Keeps a daemon's read model (L{FleetState}) up to date: one snapshot of the whole
state with the change stream's position it was taken at, then a blocking C{XREAD} from
that position applying each entry in order.

Every entry is numbered (C{s}) by a counter the same scripts increment, so a gap (the
stream trimmed past our position, a Redis that restarted or failed over and lost
changes) shows as a number skipped; a gap, or any lost connection, means a fresh
snapshot, never a silent drift.
"""

from __future__ import annotations

import heapq
import itertools

from twisted.internet import defer, task
from twisted.logger import Logger

from vorchd.state.model import FleetState
from vorchd.store import Store, StoreUnavailable


class ChangeFeed:
    """
    Feeds C{state} from C{store}'s change stream while started, and lets a writer wait
    (L{settled}) until the state holds its change.
    """

    log = Logger()

    def __init__(
        self,
        store: Store,
        state: FleetState,
        reactor,
        block_ms: int = 2000,
        retry_delay: float = 0.5,
        settle_timeout: float = 5.0,
    ):
        self.store = store
        self.state = state
        self.reactor = reactor
        self.block_ms = block_ms
        self.retry_delay = retry_delay
        self.settle_timeout = settle_timeout
        self.snapshots = 0
        self.gaps = 0
        # Whether the last read of the stream was answered.
        self.connected = False
        self._running = False
        self._loop: defer.Deferred | None = None
        self._waiters: list[tuple[int, int, defer.Deferred]] = []
        self._order = itertools.count()
        self._resync = True
        # The store's count of master changes when the last snapshot was taken.
        self._failovers = 0
        store.settled = self.settled

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._resync = True
        self._loop = defer.ensureDeferred(self._run())

    async def stop(self) -> None:
        self._running = False
        if self._loop is not None:
            self._loop.cancel()
            try:
                await self._loop
            except defer.CancelledError:
                pass

    def resync(self) -> None:
        """
        Take a fresh snapshot before the next read (after a failover, say).
        """
        self._resync = True

    # -- read-your-writes ---------------------------------------------------------------

    def settled(self, seq: int) -> defer.Deferred:
        """
        Fires once the state holds change C{seq}, or after C{settle_timeout} seconds
        (the change is in Redis either way; the model is lagging, and says so in the log).
        """
        if self.state.ready and self.state.seq >= seq:
            return defer.succeed(None)
        d = defer.Deferred()
        heapq.heappush(self._waiters, (seq, next(self._order), d))

        def late(failure):
            failure.trap(defer.TimeoutError)
            self.log.warn(
                "read model behind: change {seq} not applied after {t} s (at {at})",
                seq=seq,
                t=self.settle_timeout,
                at=self.state.seq,
            )

        d.addTimeout(self.settle_timeout, self.reactor)
        d.addErrback(late)
        return d

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.state.seq:
            _, _, d = heapq.heappop(self._waiters)
            if not d.called:
                d.callback(None)

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while self._running:
            try:
                if self.store.failovers != self._failovers:
                    # A new master may lack changes this model has (the last ones
                    # before the failover): only a snapshot of it is the truth.
                    self.log.warn("read model: the Redis master changed: a fresh snapshot")
                    self._resync = True
                if self._resync:
                    await self._snapshot()
                entries = await self.store.read_changes(self.state.last_id, self.block_ms)
                self.connected = True
                self._apply(entries)
            except StoreUnavailable as e:
                self.connected = False
                if not self._running:
                    return
                if not self._resync:
                    self.log.warn("change stream lost ({e}): a fresh snapshot follows", e=e)
                self._resync = True
                await task.deferLater(self.reactor, self.retry_delay, lambda: None)
            except defer.CancelledError:
                return
            except Exception:
                if not self._running:
                    return
                self.log.failure("read model: unexpected error; taking a fresh snapshot")
                self._resync = True
                await task.deferLater(self.reactor, self.retry_delay, lambda: None)

    async def _snapshot(self) -> None:
        self._failovers = self.store.failovers
        doc = await self.store.snapshot()
        self.state.load(doc)
        self.snapshots += 1
        self._resync = False
        self.connected = True
        self.log.info(
            "read model: snapshot at change {seq}: {pms} PMs, {vms} VMs",
            seq=self.state.seq,
            pms=len(self.state.pms),
            vms=len(self.state.vms),
        )
        self._wake()

    def _apply(self, entries) -> None:
        state = self.state
        for entry_id, fields in entries:
            seq = int(fields["s"])
            # An entry after our position is always the next change: anything else (a
            # trimmed stream, a Redis that lost changes and counts again) is a gap.
            if seq != state.seq + 1:
                self.gaps += 1
                self.log.warn(
                    "read model: change {seq} follows {at}: a gap, taking a fresh snapshot",
                    seq=seq,
                    at=state.seq,
                )
                self._resync = True
                break
            state.apply(seq, fields["o"], fields["d"])
            state.last_id = entry_id
        self._wake()
