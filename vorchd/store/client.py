"""
The connection to Redis: calls with a timeout and a breaker for outages, the Lua scripts
run by SHA1, and a connection of its own for reading the change stream (a blocking
C{XREAD} must not hold up other calls). Behind Redis Sentinel, every connection goes to
whichever Redis is the master now (L{vorchd.store.connections}); writes acknowledged to
a client can wait until replicas have them (L{RedisClient.min_replicas_acked}).
"""

from __future__ import annotations

import txredisapi
from twisted.internet import defer
from twisted.internet.error import TimeoutError as TwistedTimeoutError

from vorchd.config import RedisAddress
from vorchd.store.connections import Sentinels, open_redis
from vorchd.store.hashes import mapping
from vorchd.store.keys import Keys
from vorchd.store.scripts import SCRIPTS


class StoreUnavailable(Exception):
    """
    Redis did not answer (down, unreachable or too slow): nothing was changed that the
    caller can rely on, and the caller answers with the seed API's failure value.
    """


class _Cancelled(StoreUnavailable):
    """
    The caller gave up waiting for Redis: whether the call took effect is unknown, as
    for any other L{StoreUnavailable}, but Redis may well be fine.
    """


class NotReplicated(StoreUnavailable):
    """
    Redis made the change, but fewer replicas than asked confirmed it in time: a
    failover could lose it, so it is not acknowledged to anyone. Redis itself answers
    (this does not count as an outage).
    """


# Replies that mean "not an answer yet": a Redis replaying its AOF after a restart, stuck
# in a long script, a replica without its master, or a master demoted to replica by a
# failover (its clients are about to be moved to the new master).
_NOT_YET = ("LOADING", "BUSY", "MASTERDOWN", "READONLY", "NOREPLICAS")


class RedisClient:
    """
    Calls to one Redis, each returning a Deferred that fails with L{StoreUnavailable}
    when Redis does not answer within C{timeout} seconds, so no caller hangs on an outage.

    Once a call has gone unanswered, Redis counts as down: one call at a time goes on
    asking it (and waits up to the timeout), and every other call that would start new
    work fails at once rather than waiting too, until a call is answered again. Calls
    that finish or record work already done on a hypervisor (commit, release, adopt,
    capacity, VM state) and lease renewals always wait their full timeout instead: the
    work they record is not thrown away on a stall. A caller giving up (cancelling) says
    nothing of Redis.

    Behind Sentinel (C{sentinels}), a failover is such an outage, for as long as it
    lasts: calls fail until the connections reach the new master. Writes a client is
    told of (C{acked}) wait until C{min_replicas_acked} replicas confirm them, up to
    C{replicas_ack_timeout} seconds (L{NotReplicated} if they do not).
    """

    def __init__(
        self,
        redis,
        prefix: str = "vorchd",
        timeout: float = 5.0,
        reactor=None,
        address: RedisAddress | None = None,
        sentinels: Sentinels | None = None,
        min_replicas_acked: int = 0,
        replicas_ack_timeout: float = 1.0,
    ):
        if reactor is None:
            from twisted.internet import reactor
        self._redis = redis
        self._prefix = prefix
        self.keys = Keys(prefix)
        self._timeout = timeout
        self._reactor = reactor
        self._address = address
        self._stream_conn = None
        self._sentinels = sentinels
        self.min_replicas_acked = min_replicas_acked
        self.replicas_ack_timeout = replicas_ack_timeout
        # Acknowledged writes and their WAIT share one connection: WAIT counts the
        # replicas that have the writes made on the connection it is sent on.
        self._acked_conn = None
        # Why Redis counts as down (None while it answers), and whether a call is asking it.
        self._down: str | None = None
        self._probing = False

    @property
    def down(self) -> str | None:
        """
        Why Redis counts as down now, or None while it answers.
        """
        return self._down

    @property
    def failovers(self) -> int:
        """
        How many times the Sentinels named a new master since this client started (0
        for a plain Redis URL).
        """
        return self._sentinels.failovers if self._sentinels is not None else 0

    @classmethod
    def connect(
        cls,
        address: RedisAddress,
        prefix: str = "vorchd",
        timeout: float = 5.0,
        reactor=None,
        min_replicas_acked: int = 0,
        replicas_ack_timeout: float = 1.0,
    ):
        """
        A client on a lazy, self-reconnecting connection pool to C{address} (to the
        current master, for a Sentinel URL); its timeouts run on C{reactor} (the global
        one by default).
        """
        sentinels = Sentinels(address, timeout) if address.master else None
        pool = open_redis(address, timeout, 4, sentinels)
        return cls(
            pool,
            prefix,
            timeout,
            reactor,
            address,
            sentinels,
            min_replicas_acked,
            replicas_ack_timeout,
        )

    async def disconnect(self) -> None:
        for name in ("_stream_conn", "_acked_conn"):
            conn = getattr(self, name)
            if conn is not None:
                setattr(self, name, None)
                await conn.disconnect()
        await self._redis.disconnect()
        if self._sentinels is not None:
            await self._sentinels.disconnect()

    def _key(self, *parts: object) -> str:
        return self.keys(*parts)

    async def _call(
        self, method: str, *args, patient: bool = False, conn=None, timeout: float | None = None
    ):
        """
        Call C{method} of the Redis client (or of C{conn}); a C{patient} call waits its
        full timeout even while Redis counts as down.
        """
        probe = False
        if self._down is not None and not patient:
            if self._probing:
                raise StoreUnavailable(f"{self._down} (still down)")
            self._probing = probe = True
        try:
            result = await self._ask(conn or self._redis, timeout or self._timeout, method, *args)
        except _Cancelled:
            raise
        except StoreUnavailable as e:
            self._down = str(e)
            raise
        finally:
            if probe:
                self._probing = False
        self._down = None
        return result

    async def _ask(self, conn, timeout: float, method: str, *args):
        d = defer.maybeDeferred(getattr(conn, method), *args)
        d.addTimeout(timeout, self._reactor)
        try:
            return await d
        except defer.CancelledError:
            # The caller gave up (addTimeout's own cancellation is a TimeoutError).
            raise _Cancelled("redis: the call was cancelled") from None
        except txredisapi.ResponseError as e:
            # Redis replaying its AOF after a restart, or stuck in a long script: not
            # an answer yet.
            if str(e).startswith(_NOT_YET):
                raise StoreUnavailable(f"redis: {e}") from None
            raise
        except (
            TwistedTimeoutError,
            defer.TimeoutError,
            txredisapi.ConnectionError,
            txredisapi.TimeoutError,
            ConnectionError,
        ) as e:
            raise StoreUnavailable(f"redis: {e.__class__.__name__}: {e}") from None

    async def _script(
        self, name: str, keys: list[str], args: list[object], patient=False, conn=None
    ):
        """
        Run the script C{name} of C{lua/} by its SHA1 (on C{conn}, if given), loading it
        first where Redis does not have it (a fresh or restarted Redis).
        """
        script = SCRIPTS[name]
        args = [str(a) for a in args]
        call = ("execute_command", "EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self._call(*call, patient=patient, conn=conn)
        except txredisapi.ResponseError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        await self._call("script_load", script.text, patient=patient, conn=conn)
        return await self._call(*call, patient=patient, conn=conn)

    def _acked_connection(self):
        """
        The connection for writes that must reach C{min_replicas_acked} replicas (None
        when none must): its own, so that its C{WAIT} covers exactly those writes.
        """
        if not self.min_replicas_acked or self._address is None:
            return None
        if self._acked_conn is None:
            self._acked_conn = open_redis(self._address, self._timeout, 1, self._sentinels)
        return self._acked_conn

    async def _replicated(self, conn) -> None:
        """
        Wait until C{min_replicas_acked} replicas have every write made on C{conn} so far
        (and so everything written before them), up to C{replicas_ack_timeout}.

        @raise NotReplicated: fewer replicas confirmed them in time.
        @raise StoreUnavailable: Redis did not answer.
        """
        wanted = self.min_replicas_acked
        ms = max(1, int(self.replicas_ack_timeout * 1000))
        acked = await self._call(
            "execute_command",
            "WAIT",
            wanted,
            ms,
            patient=True,
            conn=conn,
            timeout=self._timeout + self.replicas_ack_timeout,
        )
        acked = int(acked)
        if acked < wanted:
            raise NotReplicated(
                f"redis: {acked} of the {wanted} replicas asked for confirmed the change"
                f" within {self.replicas_ack_timeout} s"
            )

    async def read_changes(self, after: str, block_ms: int = 2000, count: int = 1000):
        """
        The change stream's entries after id C{after}, waiting up to C{block_ms} for one:
        a list of C{(id, {field: value})}, empty if none came. Read on a connection of
        its own, made on first use.

        @raise StoreUnavailable: the connection is lost or Redis does not answer.
        """
        if self._stream_conn is None:
            if self._address is None:
                raise StoreUnavailable("no address to open a stream connection to")
            self._stream_conn = open_redis(
                self._address, self._timeout + block_ms / 1000, 1, self._sentinels
            )
        reply = await self._ask(
            self._stream_conn,
            self._timeout + block_ms / 1000,
            "execute_command",
            "XREAD",
            "COUNT",
            count,
            "BLOCK",
            block_ms,
            "STREAMS",
            self.keys.changes,
            after,
        )
        if not reply:
            return []
        [[_key, entries]] = reply
        return [(entry_id, mapping(fields)) for entry_id, fields in entries]
