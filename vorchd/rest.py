"""
The REST API: HTTP in, fleet calls, JSON out. It only translates.

The calls are the seed API's (vm/create, vm/query, vm/destroy, vm/types, pm/list,
pm/listvms, pm/query, image/list) and, beside them under paths of their own, the fleet view
(v1/fleet, v1/events) and the calls on running VMs (vm/info, vm/stop, vm/start, vm/reboot,
vm/suspend, vm/resume, vm/resize, vm/migrate) and block volumes (volume/create, query,
destroy, attach, detach, list), which never add a key to a seed answer.

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

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource

from vorchd import frontdoor, metrics, openapi
from vorchd.fleet import Fleet, Refused
from vorchd.frontdoor import (  # noqa: F401 (CALLS, SERVED, SeedResource: read from here)
    ALLOWED_METHODS,
    CALLS,
    CHANGING,
    CHANGING_METHODS,
    FAILURES,
    INTEGER,
    MAX_ID,
    SERVED,
    BadRequest,
    NotACall,
    SeedResource,
    printable,
)
from vorchd.store import StoreUnavailable


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

    _answer = staticmethod(frontdoor.answer)
    _document = staticmethod(frontdoor.document)

    _fail = staticmethod(frontdoor.fail)

    @staticmethod
    def _check_method(request) -> None:
        changes = request.path in CHANGING
        if request.method not in (CHANGING_METHODS if changes else ALLOWED_METHODS):
            raise NotACall(f"method {printable(request.method)} not allowed")

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
        if not INTEGER.fullmatch(raw):
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

    @staticmethod
    def _name_arg(request) -> str:
        """
        The C{name} argument: free text, non-empty UTF-8, given once.
        """
        names = request.args.get(b"name") or [b""]
        if len(names) > 1:
            raise BadRequest(f"argument name given {len(names)} times")
        try:
            name = names[0].decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("name is not valid UTF-8") from None
        if not name:
            raise BadRequest("name is empty or missing")
        return name

    async def _serve(self, request, work, failure=None):
        """
        Run C{work()} and answer its value, or the call's failure value (L{FAILURES})
        with the reason. A call that changes state (L{CHANGING}) answers 0 to HEAD
        without doing anything.
        """
        failure = FAILURES[request.path] if failure is None else failure
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
                name = self._name_arg(request)
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

    # -- block volumes ----------------------------------------------------------------------

    @app.route("/volume/create")
    def volume_create(self, request):
        async def work():
            name = self._name_arg(request)
            size = self._int_arg(request, "size")
            if size <= 0:
                raise BadRequest("size must be positive")
            return {"volumeid": await self.fleet.volume_create(name, size)}

        return self._serve(request, work)

    @app.route("/volume/query")
    def volume_query(self, request):
        given = request.args.get(b"volumeid") or [b""]
        shown = printable(b",".join(given))[:64]

        async def work():
            volumeid = self._int_arg(request, "volumeid")
            volume = self.fleet.volume(volumeid)
            if volume is None:
                raise Refused(f"no volume {volumeid}")
            return volume

        return self._serve(request, work, {"error": f"volumeid : {shown} does not exist"})

    @app.route("/volume/destroy")
    def volume_destroy(self, request):
        async def work():
            await self.fleet.volume_destroy(self._id_arg(request, "volumeid"))
            return {"status": 1}

        return self._serve(request, work)

    @app.route("/volume/attach")
    def volume_attach(self, request):
        async def work():
            vmid = self._id_arg(request, "vmid")
            await self.fleet.volume_attach(vmid, self._id_arg(request, "volumeid"))
            return {"status": 1}

        return self._serve(request, work)

    @app.route("/volume/detach")
    def volume_detach(self, request):
        async def work():
            await self.fleet.volume_detach(self._id_arg(request, "volumeid"))
            return {"status": 1}

        return self._serve(request, work)

    @app.route("/volume/list")
    def volume_list(self, request):
        async def work():
            fleet = self.fleet
            return {"volumes": [fleet.volume(v) for v in fleet.volume_ids()]}

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
        if request.method not in ALLOWED_METHODS:
            return self._answer(request, 0, f"method {printable(request.method)} not allowed")
        return self._document(request, metrics.CONTENT_TYPE, await metrics.scrape(self.fleet))

    @app.handle_errors(Exception)
    def error(self, request, failure):
        # Klein's own failures (a routing error, say) never show a traceback either.
        self.log.failure("error answering {uri}", failure, uri=request.uri)
        return self._fail(request, "internal error")
