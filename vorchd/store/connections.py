"""
Opening connections to the state store: to one Redis at a fixed address, or to whichever
Redis the Sentinels name as the master now (C{redis+sentinel://} URLs).

txredisapi does the Sentinel work: before every connection attempt it asks the Sentinels
for the master's address, and it accepts a connection only from a Redis whose C{ROLE} is
master. What is tuned here is how fast that follows a failover, and what tells the rest
of vorchd that the master changed.
"""

from __future__ import annotations

import txredisapi
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger

from vorchd.config import RedisAddress


class _KeepTrying:
    """
    A txredisapi factory that never stops reconnecting by itself.

    txredisapi stops a whole pool reconnecting, for good, when AUTH or SELECT on a new
    connection fails for any reason, also when the reason is only that Redis stalled or
    went away during that handshake (a Redis shutting down still accepts connections, a
    paused or loading one answers late): every call after that fails with "Not
    connected" until the daemon restarts. Here that connection is dropped all the same
    and its slot tries again after its back-off (a wrong password is logged at each
    try). vorchd stops a pool only by disconnecting it.
    """

    def stopTrying(self):
        return defer.succeed(None)


class _PoolFactory(_KeepTrying, txredisapi.RedisFactory):
    """
    The connections of a pool to one Redis at a fixed address.
    """


class _MasterFactory(_KeepTrying, txredisapi.SentinelConnectionFactory):
    """
    Tries to reconnect to the master every 0.25 s at most: txredisapi's default backs
    off up to 10 s, which would add as much to a failover (each try asks the Sentinels
    first, which costs them little). txredisapi uses C{maxDelay} as the connect timeout
    to the address the Sentinels gave: 1 s, for a network slower than loopback.
    """

    maxDelay = 1.0
    retry_cap = 0.25

    def retryDelay(self, attempt):
        return min(super().retryDelay(attempt), self.retry_cap)


class Sentinels(txredisapi.Sentinel):
    """
    The Sentinels of one URL, shared by every connection a client opens to the master,
    counting the changes of master they report (L{failovers}).

    @ivar master: the master's C{(host, port)} as last reported, or None before the first.
    @ivar failovers: how many times the reported master changed since the first report.
    """

    log = Logger()

    # With the master down but not yet replaced, every Sentinel reports it down and
    # txredisapi waits this long for a better answer before the connection attempt
    # fails and is retried: keep it short so that the new master is found at once.
    discovery_timeout = 0.5

    def __init__(self, address: RedisAddress, timeout: float):
        super().__init__(
            list(address.sentinels),
            connectTimeout=timeout,
            replyTimeout=timeout,
        )
        self.master: tuple[str, int] | None = None
        self.failovers = 0

    def discover_master(self, service_name):
        return super().discover_master(service_name).addCallback(self._reported)

    def _reported(self, addr):
        addr = (addr[0], int(addr[1]))
        if self.master is not None and addr != self.master:
            self.failovers += 1
            self.log.warn(
                "redis: the Sentinels name a new master: {new} (was {old})",
                new=f"{addr[0]}:{addr[1]}",
                old=f"{self.master[0]}:{self.master[1]}",
            )
        self.master = addr
        return addr


def open_redis(
    address: RedisAddress,
    reply_timeout: float,
    poolsize: int,
    sentinels: Sentinels | None = None,
):
    """
    A lazy, self-reconnecting txredisapi connection (pool) to the Redis of C{address}:
    through C{sentinels} to the current master when the address is a Sentinel URL.
    """
    if address.master:
        if sentinels is None:
            raise ValueError("a Sentinel address needs its Sentinels")
        return sentinels.master_for(
            address.master,
            factory_class=_MasterFactory,
            poolsize=poolsize,
            dbid=address.db,
            password=address.password,
            replyTimeout=reply_timeout,
            convertNumbers=False,
        )
    from twisted.internet import reactor

    # txredisapi.lazyConnectionPool, with a factory that keeps trying (L{_KeepTrying}).
    factory = _PoolFactory(
        f"{address.host}:{address.port}",
        address.db,
        poolsize,
        isLazy=True,
        password=address.password,
        replyTimeout=reply_timeout,
        convertNumbers=False,
    )
    factory.startConnecting(
        HostnameEndpoint(reactor, address.host, address.port, timeout=reply_timeout)
    )
    return factory.handler
