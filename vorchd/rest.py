"""
The REST API: HTTP in, fleet calls, JSON out. It only translates.

The calls are the seed API's (vm/create, vm/query, vm/destroy, vm/types, pm/list,
pm/listvms, pm/query, image/list) and, beside them under paths of their own, the fleet view
(v1/fleet, v1/events) and the calls on running VMs (vm/info, vm/stop, vm/start, vm/reboot,
vm/suspend, vm/resume, vm/resize, vm/migrate), which never add a key to a seed answer.

Every answer is HTTP 200 with a JSON body. A GET of a call that fails, for whatever reason
(a missing, empty, repeated, non-integer or out-of-range argument included), answers that
call's own failure value (C{{"vmid": 0}}, C{{"status": 0}}, C{{"vmids": 0}}, C{0}: see
L{vorchd.openapi.FAILURES}); what is not a call of the API at all (an unknown path, a method
other than GET or HEAD, a HEAD of a call that changes state, which does nothing) answers
C{0}. Failures carry the reason in an C{X-Vorchd-Reason} header for people using curl.

Whatever bytes arrive, the answer is one of those: a front door (L{SeedResource}) matches
the path exactly and parses the query itself before Klein sees the request, so no request
reaches Klein's own error pages (a non-UTF-8 path there is a 400 and a logged traceback).
The API's OpenAPI document (L{vorchd.openapi}) is served at C{GET /openapi.json}, and
Prometheus metrics (L{vorchd.metrics}) at C{GET /metrics}, and the web dashboard
(L{vorchd.ui}) at C{GET /ui/}: the front door counts and times every request it gets, by
endpoint and outcome.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import unquote_to_bytes

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from werkzeug.exceptions import BadHost, HTTPException

from vorchd import metrics, openapi, ui
from vorchd.events import EVENTS_PATH, EventStream
from vorchd.fleet import Fleet, Refused
from vorchd.store import StoreUnavailable

# An integer argument as people write one; longer than this is not a number anyone meant.
_INTEGER = re.compile(rb"-?[0-9]{1,1000}")
_ALLOWED_METHODS = (b"GET", b"HEAD")
# A call that changes state does nothing on HEAD: its answer would never be seen.
_CHANGING_METHODS = (b"GET",)
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


def _printable(data: bytes) -> str:
    """
    C{data} as printable ASCII, anything else escaped as C{\\xNN}.
    """
    return _UNPRINTABLE.sub(lambda m: b"\\x%02x" % m[0][0], data).decode("ascii")


def _reason_header(reason: str) -> bytes:
    # Header values must be one line of latin-1; keep them short, printable, plain ASCII.
    text = " ".join(reason.split())
    return _printable(text.encode("ascii", "backslashreplace"))[:300].encode("ascii")


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
            return SeedAPI._answer(request, 0, f"no such call: {_printable(request.path)}")
        if request.path == EVENTS_PATH and self._fleet is not None:
            if request.method != b"GET":
                return SeedAPI._answer(
                    request, 0, f"method {_printable(request.method)} not allowed"
                )
            setattr(request, _OUTCOME, "ok")
            return EventStream(self._fleet, request).start()
        try:
            request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            return SeedAPI._fail(request, "the Host header is not UTF-8")
        request.args = parse_query(request.uri)
        try:
            return self._klein.render(request)
        except BadHost:
            # Routing refused the Host (werkzeug wants an IDNA host name: no label over
            # 63 characters, none empty) before any call ran.
            return SeedAPI._fail(request, "the Host header is not a host name")
        except HTTPException as e:
            return SeedAPI._fail(request, f"not routed: {e.code} {e.name}")
        except Exception as e:
            self.log.failure("unexpected error routing {uri}", uri=request.uri)
            return SeedAPI._fail(request, f"internal error: {e.__class__.__name__}")

    @staticmethod
    def _dashboard(request):
        """
        A file of the dashboard (L{vorchd.ui}).
        """
        if request.method not in _ALLOWED_METHODS:
            return SeedAPI._answer(request, 0, f"method {_printable(request.method)} not allowed")
        content_type, body = ui.FILES[request.path]
        return SeedAPI._document(request, content_type, body, ui.HEADERS)


class SeedAPI:
    """
    The Klein application serving the API (the seed API and the calls beside it) over a
    L{Fleet}.
    """

    app = Klein()
    log = Logger()

    def __init__(self, fleet: Fleet):
        self.fleet = fleet

    def resource(self) -> Resource:
        return SeedResource(self.app.resource(), self.fleet.metrics, self.fleet)

    # -- translation helpers ---------------------------------------------------------------

    @staticmethod
    def _answer(request, value, reason: str | None = None, outcome: str = "malformed") -> bytes:
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

    @staticmethod
    def _document(request, content_type: bytes, body: bytes, headers=None) -> bytes:
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

    @classmethod
    def _fail(cls, request, reason: str) -> bytes:
        """
        Answer C{request}'s failure with C{reason}: a call's own failure value (counted as
        failed), or, for what is not a call, 0.
        """
        if is_call(request):
            return cls._answer(request, FAILURES.get(request.path, 0), reason, outcome="failed")
        return cls._answer(request, 0, reason)

    @staticmethod
    def _check_method(request) -> None:
        changes = request.path in CHANGING
        if request.method not in (_CHANGING_METHODS if changes else _ALLOWED_METHODS):
            raise NotACall(f"method {_printable(request.method)} not allowed")

    @staticmethod
    def _arg(request, name: str) -> bytes:
        values = request.args.get(name.encode("ascii"))
        if not values:
            raise BadRequest(f"missing argument {name}")
        if len(values) > 1:
            raise BadRequest(f"argument {name} given {len(values)} times")
        return values[0]

    @classmethod
    def _int_arg(cls, request, name: str) -> int:
        raw = cls._arg(request, name)
        if not raw:
            raise BadRequest(f"argument {name} is empty")
        if not _INTEGER.fullmatch(raw):
            raise BadRequest(f"argument {name} is not an integer")
        return int(raw)

    @classmethod
    def _id_arg(cls, request, name: str) -> int:
        """
        The id in argument C{name}: an integer from 1 to L{MAX_ID}.
        """
        value = cls._int_arg(request, name)
        if value <= 0:
            raise BadRequest(f"argument {name} must be positive")
        if value > MAX_ID:
            raise BadRequest(f"argument {name} is out of range")
        return value

    async def _serve(self, request, work):
        """
        Run C{work()} and answer its value, or the call's failure value (L{FAILURES})
        with the reason. A call that changes state (L{CHANGING}) answers 0 to HEAD
        without doing anything.
        """
        failure = FAILURES[request.path]
        try:
            self._check_method(request)
            return self._answer(request, await work(), outcome="ok")
        except NotACall as e:
            return self._answer(request, 0, str(e))
        except (BadRequest, Refused, StoreUnavailable) as e:
            return self._answer(request, failure, str(e), outcome="failed")
        except defer.CancelledError:
            # The client went away; nobody is left to answer (the work goes on).
            raise
        except Exception as e:
            self.log.failure("unexpected error answering {uri}", uri=request.uri)
            return self._answer(
                request, failure, f"internal error: {e.__class__.__name__}", outcome="failed"
            )

    # -- the seed API ------------------------------------------------------------------------

    @app.route("/vm/create")
    def vm_create(self, request):
        async def work():
            try:
                tid = self._int_arg(request, "instance_type")
                image_id = self._int_arg(request, "image_id")
                names = request.args.get(b"name") or [b""]
                if len(names) > 1:
                    raise BadRequest(f"argument name given {len(names)} times")
                try:
                    name = names[0].decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRequest("name is not valid UTF-8") from None
                if not name:
                    raise BadRequest("name is empty or missing")
                if tid <= 0 or image_id <= 0:
                    raise BadRequest("instance_type and image_id must be positive")
            except BadRequest:
                self.fleet.metrics.placement_failed("bad_request")
                raise
            return {"vmid": await self.fleet.create(name, tid, image_id)}

        return self._serve(request, work)

    @app.route("/vm/query")
    def vm_query(self, request):
        async def work():
            vmid = self._int_arg(request, "vmid")
            vm = self.fleet.vm(vmid)
            if vm is None:
                raise Refused(f"no VM {vmid}")
            return vm

        return self._serve(request, work)

    @app.route("/vm/destroy")
    def vm_destroy(self, request):
        async def work():
            await self.fleet.destroy(self._int_arg(request, "vmid"))
            return {"status": 1}

        return self._serve(request, work)

    @app.route("/vm/types")
    def vm_types(self, request):
        async def work():
            return {"types": [f.as_dict() for f in self.fleet.flavors()]}

        return self._serve(request, work)

    @app.route("/pm/list")
    def pm_list(self, request):
        async def work():
            return {"pmids": self.fleet.pm_ids()}

        return self._serve(request, work)

    @app.route("/pm/listvms")
    def pm_listvms(self, request):
        async def work():
            pmid = self._int_arg(request, "pmid")
            vmids = self.fleet.pm_vmids(pmid)
            if vmids is None:
                raise Refused(f"no PM {pmid}")
            return {"vmids": vmids}

        return self._serve(request, work)

    @app.route("/pm/query")
    def pm_query(self, request):
        async def work():
            pmid = self._int_arg(request, "pmid")
            pm = self.fleet.pm(pmid)
            if pm is None:
                raise Refused(f"no PM {pmid}")
            return pm

        return self._serve(request, work)

    @app.route("/image/list")
    def image_list(self, request):
        async def work():
            images = self.fleet.images_list()
            return {"images": [{"id": i.id, "name": i.name} for i in images]}

        return self._serve(request, work)

    # -- running VMs ------------------------------------------------------------------------

    @app.route("/vm/info")
    def vm_info(self, request):
        async def work():
            return await self.fleet.info(self._id_arg(request, "vmid"))

        return self._serve(request, work)

    def vm_act(self, request):
        """
        C{/vm/<action>}: one of L{openapi.ACTIONS}, the last segment of the path.
        """
        action = request.path.rpartition(b"/")[2].decode("ascii")

        async def work():
            await self.fleet.act(self._id_arg(request, "vmid"), action)
            return {"status": 1}

        return self._serve(request, work)

    for _action in openapi.ACTIONS:
        app.route(f"/vm/{_action}")(vm_act)
    del _action

    @app.route("/vm/resize")
    def vm_resize(self, request):
        async def work():
            vmid = self._id_arg(request, "vmid")
            await self.fleet.resize(vmid, self._id_arg(request, "instance_type"))
            return {"status": 1}

        return self._serve(request, work)

    @app.route("/vm/migrate")
    def vm_migrate(self, request):
        async def work():
            vmid = self._id_arg(request, "vmid")
            # Without a pmid the active policy picks the target; an empty one is no id.
            pmid = self._id_arg(request, "pmid") if b"pmid" in request.args else None
            await self.fleet.migrate(vmid, pmid)
            return {"status": 1}

        return self._serve(request, work)

    # -- the fleet view, the documents ------------------------------------------------------

    @app.route("/v1/fleet")
    def fleet_view(self, request):
        try:
            self._check_method(request)
            body = self.fleet.view_json()
        except NotACall as e:
            return self._answer(request, 0, str(e))
        except StoreUnavailable as e:
            return self._answer(request, 0, str(e), outcome="failed")
        return self._document(request, b"application/json", body)

    @app.route("/openapi.json")
    def openapi_document(self, request):
        async def work():
            return openapi.DOCUMENT

        return self._serve(request, work)

    @app.route("/metrics")
    async def metrics_text(self, request):
        # Not a call of the seed API: other methods answer its plain 0 like unknown paths.
        if request.method not in _ALLOWED_METHODS:
            return self._answer(request, 0, f"method {_printable(request.method)} not allowed")
        return self._document(request, metrics.CONTENT_TYPE, await metrics.scrape(self.fleet))

    @app.handle_errors(Exception)
    def error(self, request, failure):
        # Klein's own failures (a routing error, say) never show a traceback either.
        self.log.failure("error answering {uri}", failure, uri=request.uri)
        return self._fail(request, "internal error")
