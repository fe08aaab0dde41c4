"""
The REST API's front door (L{SeedResource}): whatever bytes arrive, it matches the path
exactly against the calls of the OpenAPI document, parses the query itself (L{parse_query})
and hands each call to the Klein app of L{vorchd.rest}, or answers at once: C{0} for what
is not a call of the API (an unknown path, another method, a Host header Klein cannot
route), the dashboard's files, the event stream. It counts and times every request by
endpoint and outcome. Also what both it and the app answer with (L{answer}, L{document}).
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger
from twisted.web.resource import Resource
from werkzeug.exceptions import BadHost, HTTPException

from vorchd import metrics, openapi, ui
from vorchd.events import EVENTS_PATH, EventStream

if TYPE_CHECKING:
    from vorchd.fleet import Fleet

# An integer argument as people write one; longer than this is not a number anyone meant.
INTEGER = re.compile(rb"-?[0-9]{1,1000}")
ALLOWED_METHODS = (b"GET", b"HEAD")
# A call that changes state does nothing on HEAD: its answer would never be seen.
CHANGING_METHODS = (b"GET",)
# The largest id there can be (ids are Redis counters, signed 64-bit integers).
MAX_ID = 2**63 - 1

# Every path the API answers, matched byte for byte as sent: its OpenAPI document's.
CALLS = frozenset(path.encode("ascii") for path in openapi.PATHS)
# The calls that change state, and what a GET of each call answers when it fails.
CHANGING = frozenset(path.encode("ascii") for path in openapi.CHANGING)
FAILURES = {path.encode("ascii"): value for path, value in openapi.FAILURES.items()}
# Served too, but not a call of the API (nor in its OpenAPI document).
METRICS = b"/metrics"
SERVED = CALLS | {METRICS}

# The request attribute where the answer's outcome (a metrics.OUTCOMES label) is noted.
_OUTCOME = "_vorchd_outcome"


class NotACall(Exception):
    """
    Not a call of the API at all (a method other than GET or HEAD, a HEAD of a call that
    changes state): answered with a plain C{0}, like an unknown path.
    """


class BadRequest(Exception):
    """
    A call that cannot succeed as asked (an argument missing, empty, repeated, not an
    integer or out of range, an empty name): answered with the call's own failure value.
    """


def is_call(request) -> bool:
    """
    Whether C{request} is a call of the API: a GET of one of its paths, or a HEAD of one
    that changes nothing.
    """
    if request.path not in CALLS:
        return False
    return request.method == b"GET" or (request.method == b"HEAD" and request.path not in CHANGING)


_UNPRINTABLE = re.compile(rb"[^\x20-\x7e]")


def printable(data: bytes) -> str:
    """
    C{data} as printable ASCII, anything else escaped as C{\\xNN}.
    """
    return _UNPRINTABLE.sub(lambda m: b"\\x%02x" % m[0][0], data).decode("ascii")


def _reason_header(reason: str) -> bytes:
    # Header values must be one line of latin-1; keep them short, printable, plain ASCII.
    text = " ".join(reason.split())
    return printable(text.encode("ascii", "backslashreplace"))[:300].encode("ascii")


def parse_query(uri: bytes) -> dict[bytes, list[bytes]]:
    """
    The arguments in C{uri}'s query, parsed as C{application/x-www-form-urlencoded} is in
    the WHATWG URL standard: C{&} separates arguments (C{;} is an ordinary character, so a
    name may hold one, unlike Twisted's own C{request.args}), C{+} is a space, C{%XX} any
    byte, and an argument without C{=} has an empty value. Values stay bytes: each call
    decides what it accepts.
    """
    query = uri.partition(b"?")[2]
    args: dict[bytes, list[bytes]] = {}
    for item in query.split(b"&"):
        if not item:
            continue
        key, _, value = item.partition(b"=")
        key = unquote_to_bytes(key.replace(b"+", b" "))
        args.setdefault(key, []).append(unquote_to_bytes(value.replace(b"+", b" ")))
    return args


class SeedResource(Resource):
    """
    The front door of the API: answers 0 itself for a path that is not exactly one of
    L{SERVED}, and the call's failure value (L{SeedAPI._fail}) for a Host header Klein
    cannot route (not UTF-8, or not a host name at all: Klein would answer a 400 or 500
    page and log a traceback); replaces C{request.args} with L{parse_query}'s, and hands
    every call to the Klein app.

    Every request is counted in C{metrics} by endpoint and outcome, and timed from here
    to its answer written.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        klein_resource: Resource,
        counters: metrics.Metrics | None = None,
        fleet: Fleet | None = None,
    ):
        super().__init__()
        self._klein = klein_resource
        self.metrics = counters if counters is not None else metrics.Metrics()
        self._fleet = fleet

    def render(self, request):
        started = time.perf_counter()
        endpoint = metrics.endpoint_of(request.path)
        request.notifyFinish().addBoth(self._finished, request, endpoint, started)
        body = self._route(request)
        if request.method == b"HEAD" and isinstance(body, bytes):
            # The headers of the answer, with its length, and no body (which Twisted would
            # drop, logging that it did).
            request.setHeader(b"content-length", b"%d" % len(body))
            return b""
        return body

    def _finished(self, _result, request, endpoint: str, started: float) -> None:
        # A connection lost before the answer counts as failed; the failure is not an error.
        outcome = getattr(request, _OUTCOME, "failed")
        self.metrics.request_done(endpoint, outcome, time.perf_counter() - started)

    def _route(self, request):
        if request.path in ui.FILES:
            return self._dashboard(request)
        if request.path not in SERVED:
            return answer(request, 0, f"no such call: {printable(request.path)}")
        if request.path == EVENTS_PATH and self._fleet is not None:
            if request.method != b"GET":
                return answer(request, 0, f"method {printable(request.method)} not allowed")
            setattr(request, _OUTCOME, "ok")
            return EventStream(self._fleet, request).start()
        try:
            request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            return fail(request, "the Host header is not UTF-8")
        request.args = parse_query(request.uri)
        try:
            return self._klein.render(request)
        except BadHost:
            # Routing refused the Host (werkzeug wants an IDNA host name: no label over
            # 63 characters, none empty) before any call ran.
            return fail(request, "the Host header is not a host name")
        except HTTPException as e:
            return fail(request, f"not routed: {e.code} {e.name}")
        except Exception as e:
            self.log.failure("unexpected error routing {uri}", uri=request.uri)
            return fail(request, f"internal error: {e.__class__.__name__}")

    @staticmethod
    def _dashboard(request):
        """
        A file of the dashboard (L{vorchd.ui}).
        """
        if request.method not in ALLOWED_METHODS:
            return answer(request, 0, f"method {printable(request.method)} not allowed")
        content_type, body = ui.FILES[request.path]
        return document(request, content_type, body, ui.HEADERS)


def answer(request, value, reason: str | None = None, outcome: str = "malformed") -> bytes:
    """
    Answer C{value} as JSON, with C{reason} in a header; C{outcome} (ok, failed, or
    malformed: a plain 0 for what is not a call) is what the request counts as.
    """
    setattr(request, _OUTCOME, outcome)
    request.setHeader(b"content-type", b"application/json")
    request.setResponseCode(200)
    if reason:
        request.setHeader(b"x-vorchd-reason", _reason_header(reason))
    return json.dumps(value).encode("ascii")


def document(request, content_type: bytes, body: bytes, headers=None) -> bytes:
    """
    Answer C{body}, a document other than a call's JSON (a file of the dashboard,
    the metrics), as C{content_type} with C{headers}; the request counts as ok.
    """
    setattr(request, _OUTCOME, "ok")
    request.setResponseCode(200)
    request.setHeader(b"content-type", content_type)
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    return body


def fail(request, reason: str) -> bytes:
    """
    Answer C{request}'s failure with C{reason}: a call's own failure value (counted as
    failed), or, for what is not a call, 0.
    """
    if is_call(request):
        return answer(request, FAILURES.get(request.path, 0), reason, outcome="failed")
    return answer(request, 0, reason)
