"""
Two ways to call a daemon's seed API, with one interface, so that every API test runs
both in memory (StubTreq over the Klein resource) and over a real loopback port.
"""

from __future__ import annotations

import json

import treq
from treq.testing import StubTreq
from twisted.internet import reactor, task
from twisted.web.client import HTTPConnectionPool

from vorchd.rest import SeedAPI


class Answer:
    """
    One HTTP answer: status, the X-Vorchd-Reason header, and the body, parsed when its
    content type says it is JSON (C{json} is None otherwise).
    """

    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.raw = body
        json_type = headers.getRawHeaders("content-type") == ["application/json"]
        self.json = json.loads(body) if body and json_type else None

    @property
    def reason(self) -> str | None:
        values = self.headers.getRawHeaders("x-vorchd-reason")
        return values[0] if values else None

    def __repr__(self) -> str:
        return f"<Answer {self.status} {self.raw!r} reason={self.reason!r}>"


class InMemoryClient:
    """
    Calls the Klein resource through StubTreq: no sockets on the HTTP side.
    """

    def __init__(self, daemon):
        self.stub = StubTreq(SeedAPI(daemon.fleet).resource())

    async def _pump(self, d):
        # The resource answers later (after Redis and libvirt answer on the real
        # reactor), so keep moving bytes between the in-memory client and server.
        # (d.called is already true while d waits on a chained Deferred: watch for
        # the real result instead.)
        outcome = []
        d.addBoth(lambda r: outcome.append(r) or r)
        while not outcome:
            self.stub.flush()
            await task.deferLater(reactor, 0.002, lambda: None)
        return await d

    async def call(self, path: str, method: str = "GET") -> Answer:
        response = await self._pump(
            self.stub.request(method, "http://vorchd" + path, allow_redirects=False)
        )
        body = await self._pump(self.stub.content(response))
        return Answer(response.code, response.headers, body)

    async def close(self) -> None:
        pass


class LoopbackClient:
    """
    Calls the daemon's real listening port over TCP.
    """

    def __init__(self, daemon):
        self.base = daemon.url
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    async def call(self, path: str, method: str = "GET") -> Answer:
        response = await treq.request(
            method, self.base + path, pool=self.pool, allow_redirects=False
        )
        body = await treq.content(response)
        return Answer(response.code, response.headers, body)

    async def close(self) -> None:
        await self.pool.closeCachedConnections()
