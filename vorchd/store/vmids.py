"""
vmids that are never given twice, even by a Redis that lost its last second.

Redis (as install.sh runs it: AOF, C{appendfsync everysec}) may lose the last second of
writes in a machine crash. The vmid counter's last C{INCR}s would go with it, and a VM
made and destroyed in that second leaves no domain to adopt back: the counter would give
its id again. So ids come in blocks, and a block's end is on disk before any id of it
is handed out (see L{vorchd.store.keys} for the keys):

 1. C{lua/vmid_reserve.lua} writes the block's end (C{reserved}), and
 2. a C{BGREWRITEAOF} that started after that write is waited for: its new AOF base is
    written and fsynced by Redis itself, so the reservation survives any crash (Redis
    7.0 has no C{WAITAOF}, and C{appendfsync} cannot be forced per command);
 3. only then C{lua/vmid_ceiling.lua} lets claims take ids up to it, in that Redis run
    (C{run_id}) only.

After any restart the counter is first moved past the durable reservation (which is at
or past every id handed out), so a restart skips the rest of the block: ids have gaps,
never repeats.

So that no create waits for a rewrite, the next block is reserved in the background
once fewer than L{VMID_REFILL} ids are left below the ceiling (and when the daemon
starts): claims go on taking the ids left while it is made durable, and then the
ceiling moves up by a block. Only when a burst uses those up too does a claim wait.
"""

from __future__ import annotations

import txredisapi
from twisted.internet import defer, task
from twisted.logger import Logger

from vorchd.store.client import StoreUnavailable

VMID_BLOCK = 1000
"""How many vmids a block holds: one AOF rewrite per block, a gap of up to this many
ids (and L{VMID_REFILL} more) at each Redis restart."""

VMID_REFILL = 200
"""How many ids may be left below the ceiling when the next block is reserved in the
background: what creates may take while its AOF rewrite runs (about 0.1 s)."""


class DurableVmids:
    """
    The vmid blocks of L{vorchd.store.Store} (a mixin of its Redis client).
    """

    _vmid_lock: defer.DeferredLock | None = None
    # The vmid from which the next block is reserved in the background (0: not known
    # yet), and that reservation while it runs.
    _vmid_refill_at: int = 0
    _vmid_refilling: defer.Deferred | None = None
    _vmid_log = Logger()

    @property
    def vmid_block_key(self) -> str:
        return self.keys("vmid", "block")

    async def next_vmid(self) -> int:
        """
        A vmid no VM of this fleet has ever had (creates take theirs in the claim).
        """
        while True:
            vmid = int(
                await self._script("next_vmid", [self.keys.vmid, self.vmid_block_key], [""])
            )
            if vmid:
                self.took_vmid(vmid)
                return vmid
            await self.reserve_vmids()

    async def disconnect(self) -> None:
        # A reservation under way ends first (it is quick, or fails fast once Redis is
        # gone): nothing of it is left running on the reactor.
        if self._vmid_refilling is not None:
            await self._vmid_refilling
        await super().disconnect()

    def took_vmid(self, vmid: int) -> None:
        """
        Note that C{vmid} was handed out (by L{next_vmid} or a claim): once few ids are
        left below the ceiling, the next block is reserved in the background.
        """
        if vmid >= self._vmid_refill_at:
            self.prepare_vmids()

    def prepare_vmids(self) -> None:
        """
        Reserve the next block of vmids in the background if fewer than L{VMID_REFILL}
        ids are left (a failure is logged: a claim that finds no id left reserves one).
        """
        if self._vmid_refilling is not None:
            return

        def failed(failure):
            self._vmid_log.warn(
                "reserving the next vmids ahead failed: {why}", why=failure.getErrorMessage()
            )

        def done(_):
            self._vmid_refilling = None

        d = defer.ensureDeferred(self.reserve_vmids(VMID_REFILL)).addErrback(failed)
        if not d.called:
            self._vmid_refilling = d
            d.addBoth(done)

    async def reserve_vmids(self, ahead: int = 0) -> None:
        """
        Make the next block of vmids durable and usable (one caller at a time: the others
        wait for it and then find the block there): when none is left, or when fewer
        than C{ahead} are.
        """
        if self._vmid_lock is None:
            self._vmid_lock = defer.DeferredLock()
        await self._vmid_lock.run(lambda: defer.ensureDeferred(self._reserve_vmids(ahead)))

    async def _reserve_vmids(self, ahead: int) -> None:
        keys = [self.keys.vmid, self.vmid_block_key]
        reserved, run, ceiling = await self._script(
            "vmid_reserve", keys, [self._prefix, VMID_BLOCK, ahead]
        )
        if int(reserved) == 0:
            self._vmid_refill_at = int(ceiling) - VMID_REFILL
            return
        await self._aof_rewritten()
        await self._script("vmid_ceiling", [self.vmid_block_key], [self._prefix, reserved, run])
        self._vmid_refill_at = int(reserved) - VMID_REFILL

    async def _aof_rewritten(self) -> None:
        """
        Wait until an AOF rewrite that started after this call's earlier writes has
        ended well: everything written before is then fsynced in its new base file.

        Redis is asked every few milliseconds on the global reactor: a wait for Redis'
        own work, not one of the store's timeouts (which may run on a test's clock).
        """
        from twisted.internet import reactor

        deadline = reactor.seconds() + 10 * self._timeout
        while True:
            try:
                await self._call("execute_command", "BGREWRITEAOF", patient=True)
                started = True
            except txredisapi.ResponseError as e:
                # One already under way may have forked before our write: wait it out,
                # then start our own.
                if "already in progress" not in str(e):
                    raise
                started = False
            while True:
                info = await self._call("execute_command", "INFO", "persistence", patient=True)
                fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
                if fields["aof_rewrite_in_progress"] == fields["aof_rewrite_scheduled"] == "0":
                    break
                if reactor.seconds() > deadline:
                    raise StoreUnavailable("redis: the AOF rewrite did not end")
                await task.deferLater(reactor, 0.01, lambda: None)
            # The last rewrite to end started no earlier than ours: its success is ours.
            if started and fields["aof_last_bgrewrite_status"] == "ok":
                return
            if reactor.seconds() > deadline:
                raise StoreUnavailable("redis: the AOF rewrite failed")
