"""
The API's OpenAPI document (the seed API and the calls beside it): valid OpenAPI 3.1, served
by the daemon at
GET /openapi.json, and true to what the daemon answers (every answer of every call, success
and failure, fits the document's schema for it, and only the right branch of it).

The validation needs openapi-spec-validator (which brings openapi-schema-validator); the
structural tests run without it.
"""

from __future__ import annotations

import json
import urllib.parse

from twisted.trial.unittest import TestCase

from tests.clients import InMemoryClient, LoopbackClient
from tests.harness import FLAVORS, require, start_daemon
from vorchd import openapi, rest
from vorchd.fleet import running
from vorchd.rest import CALLS

try:
    from openapi_schema_validator import OAS31Validator
    from openapi_spec_validator import validate as validate_spec
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
except ImportError:  # not installed: only the structural tests run
    OAS31Validator = validate_spec = OpenAPIValidationError = None

DOC = openapi.DOCUMENT
SCHEMAS = DOC["components"]["schemas"]

# Each call's query parameters and their JSON types, and its own failure value (None: the
# call cannot fail but by not being a call, or fails with 0).
PARAMETERS = {
    "/vm/create": {"name": "string", "instance_type": "integer", "image_id": "integer"},
    "/vm/query": {"vmid": "integer"},
    "/vm/destroy": {"vmid": "integer"},
    "/vm/types": {},
    "/pm/list": {},
    "/pm/listvms": {"pmid": "integer"},
    "/pm/query": {"pmid": "integer"},
    "/image/list": {},
    "/openapi.json": {},
    "/v1/fleet": {},
    "/v1/events": {},
    "/vm/info": {"vmid": "integer"},
    "/vm/stop": {"vmid": "integer"},
    "/vm/start": {"vmid": "integer"},
    "/vm/reboot": {"vmid": "integer"},
    "/vm/suspend": {"vmid": "integer"},
    "/vm/resume": {"vmid": "integer"},
    "/vm/resize": {"vmid": "integer", "instance_type": "integer"},
    "/vm/migrate": {"vmid": "integer", "pmid": "integer"},
    "/volume/create": {"name": "string", "size": "integer"},
    "/volume/query": {"volumeid": "integer"},
    "/volume/destroy": {"volumeid": "integer"},
    "/volume/attach": {"vmid": "integer", "volumeid": "integer"},
    "/volume/detach": {"volumeid": "integer"},
    "/volume/list": {},
}
# The only parameters a call may go without.
OPTIONAL = {("/vm/migrate", "pmid")}
# Answered as a stream of events, not one JSON document.
STREAMS = {"/v1/events"}
RUNNING = ["/vm/info", "/vm/stop", "/vm/start", "/vm/reboot", "/vm/suspend", "/vm/resume"]
RUNNING += ["/vm/resize", "/vm/migrate"]
# The calls whose failure value is not 0.
FAILURES = {
    "/vm/create": {"vmid": 0},
    "/vm/destroy": {"status": 0},
    "/pm/listvms": {"vmids": 0},
    # vm/info fails with 0, as vm/query does (contract section 6).
    **{path: {"status": 0} for path in RUNNING if path != "/vm/info"},
    "/volume/create": {"volumeid": 0},
    **{f"/volume/{c}": {"status": 0} for c in ("destroy", "attach", "detach")},
}
# The calls whose failure is not one constant: volume/query's names the id asked for.
FAILURE_PATTERNS = {"/volume/query": ("error", "^volumeid : .* does not exist$")}
# The calls that change state (a HEAD of one does nothing).
VOLUME_CHANGES = {"/volume/create", "/volume/destroy", "/volume/attach", "/volume/detach"}
CHANGING = {"/vm/create", "/vm/destroy", *RUNNING, *VOLUME_CHANGES} - {"/vm/info"}


def need_validators():
    if validate_spec is None:
        require("openapi-spec-validator is not installed (pip install -e .[test])")


def response_schema(path: str) -> dict:
    return DOC["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


def validator(schema: dict):
    """
    A JSON Schema validator for C{schema}, its $refs resolved in the document.
    """
    return OAS31Validator({**schema, "components": DOC["components"]})


def refs(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


class DocumentTests(TestCase):
    """
    The document itself.
    """

    def test_valid_openapi(self):
        """openapi-spec-validator accepts the document as OpenAPI 3.1 and rejects a broken copy."""
        need_validators()
        self.assertEqual(DOC["openapi"], "3.1.0")
        validate_spec(openapi.document())
        broken = openapi.document()
        broken["paths"]["/vm/query"]["get"]["parameters"][0]["in"] = "body"
        with self.assertRaises(OpenAPIValidationError):
            validate_spec(broken)

    def test_every_call_documented(self):
        """The document's paths are exactly vorchd's calls: GET, typed required parameters."""
        self.assertEqual(set(DOC["paths"]), {c.decode() for c in CALLS})
        self.assertEqual(set(DOC["paths"]), set(PARAMETERS))
        for path, params in PARAMETERS.items():
            self.assertEqual(set(DOC["paths"][path]), {"get"}, path)
            got = {p["name"]: p["schema"]["type"] for p in DOC["paths"][path]["get"]["parameters"]}
            self.assertEqual(got, params, path)
            for p in DOC["paths"][path]["get"]["parameters"]:
                required = (path, p["name"]) not in OPTIONAL
                self.assertEqual((p["in"], p["required"]), ("query", required), (path, p))

    def test_failure_table(self):
        """
        FAILURES, which the daemon answers a failed GET with, is each call's own failure
        value as its schema says (0 where it has none); the state-changing calls are
        those the fleet's actions name, and their descriptions say HEAD does nothing.
        """
        expected = {p: FAILURES.get(p, 0) for p in PARAMETERS if p not in STREAMS}
        expected["/volume/query"] = {"error": "volumeid :  does not exist"}
        self.assertEqual(openapi.FAILURES, expected)
        self.assertEqual(rest.FAILURES, {p.encode(): v for p, v in expected.items()})
        self.assertEqual(set(openapi.CHANGING), CHANGING)
        self.assertEqual(openapi.ACTIONS, running.ACTIONS)
        for path in PARAMETERS:
            if path in STREAMS:
                continue
            description = DOC["paths"][path]["get"]["description"]
            self.assertEqual("a HEAD of it does nothing" in description, path in CHANGING, path)

    def test_always_200_json_with_reason_header(self):
        """Every operation answers 200 JSON: success, own failure or 0; X-Vorchd-Reason."""
        for path in DOC["paths"]:
            responses = DOC["paths"][path]["get"]["responses"]
            self.assertEqual(set(responses), {"200"}, path)
            if path in STREAMS:
                self.assertEqual(set(responses["200"]["content"]), {"text/event-stream"}, path)
                continue
            self.assertEqual(set(responses["200"]["content"]), {"application/json"}, path)
            self.assertIn("X-Vorchd-Reason", responses["200"]["headers"], path)
            shapes = response_schema(path)["anyOf"]
            self.assertEqual(shapes[-1], {"$ref": "#/components/schemas/NotACall"}, path)
            own_failure = path in FAILURES or path in FAILURE_PATTERNS
            self.assertEqual(len(shapes), 3 if own_failure else 2, path)
        self.assertEqual(SCHEMAS["NotACall"]["const"], 0)

    def test_failure_values(self):
        """The failure schemas are exactly {"vmid": 0}, {"status": 0}, {"vmids": 0} and 0."""
        for path, failure in FAILURES.items():
            name = response_schema(path)["anyOf"][1]["$ref"].rpartition("/")[2]
            [(key, value)] = failure.items()
            self.assertEqual(SCHEMAS[name]["properties"], {key: {"const": value}}, path)
            self.assertEqual(SCHEMAS[name]["required"], [key], path)
            self.assertFalse(SCHEMAS[name]["additionalProperties"], path)
        for path, (key, pattern) in FAILURE_PATTERNS.items():
            name = response_schema(path)["anyOf"][1]["$ref"].rpartition("/")[2]
            self.assertEqual(SCHEMAS[name]["properties"][key]["pattern"], pattern, path)
            self.assertEqual(SCHEMAS[name]["required"], [key], path)

    def test_refs_resolve(self):
        """Every $ref points at a defined schema, and every defined schema is used."""
        used = {r.rpartition("/")[2] for r in refs(DOC)}
        for ref in refs(DOC):
            self.assertTrue(ref.startswith("#/components/schemas/"), ref)
        self.assertEqual(used, set(SCHEMAS))

    def test_served_bytes(self):
        """The served bytes are ASCII JSON of the document; document() is an independent copy."""
        self.assertEqual(json.loads(openapi.document_bytes().decode("ascii")), DOC)
        copy = openapi.document()
        copy["paths"].clear()
        self.assertEqual(set(DOC["paths"]), set(PARAMETERS))

    def test_schemas_reject_wrong_shapes(self):
        """The response schemas refuse shapes the API must never answer."""
        need_validators()
        wrong = {
            "/vm/create": ["0", {"vmid": -1}, {"vmid": 1, "x": 1}, {"vmid": 1.5}, None],
            "/vm/query": [{"vmid": 1}, {"vmid": 1, "name": 1, "instance_type": 1, "pmid": 1}],
            "/vm/destroy": [{"status": 2}, {"status": "1"}, {}],
            "/pm/listvms": [{"vmids": [0]}, {"vmids": 1}, {"vmids": None}],
            "/pm/query": [{"pmid": 1}, 1, []],
            "/pm/list": [{"pmids": [0]}, {"pmids": 0}],
            "/vm/types": [{"types": [{"tid": 1}]}, {"types": 0}],
            "/image/list": [{"images": [{"id": 1}]}, {"images": 0}],
            "/vm/info": [
                {"vmid": 1},
                {"status": 1},
                {
                    "vmid": 1,
                    "name": "a",
                    "instance_type": 1,
                    "pmid": 1,
                    "image_id": 1,
                    "state": "running",
                    "domain": "d",
                    "extra": 1,
                },
            ],
            "/vm/stop": [{"status": 2}, {"status": 1, "vmid": 1}, {}, 1],
            "/vm/migrate": [{"status": "1"}, {"pmid": 2}],
            "/v1/fleet": [
                {"pms": []},
                {
                    "seq": 0,
                    "policy": "p",
                    "ratios": {"cpu": 1, "ram": 1, "disk": 1},
                    "types": [],
                    "images": [],
                    "pms": [{"pmid": 1, "state": "sideways"}],
                    "vms": [],
                },
            ],
        }
        for path, values in wrong.items():
            check = validator(response_schema(path))
            for value in values:
                self.assertFalse(check.is_valid(value), (path, value))


class ServedDocumentTestsMixin:
    """
    The daemon serves the document and answers as it says; subclasses say how the API is
    reached.
    """

    client_type: type

    async def setUp(self):
        self.daemon = await start_daemon(self, [(4, 4096), (2, 2048)])
        self.client = self.client_type(self.daemon)
        self.addCleanup(self.client.close)

    async def test_served(self):
        """GET /openapi.json answers the document, HEAD headers only, anything near it 0."""
        answer = await self.client.call("/openapi.json")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(answer.json, DOC)
        self.assertIsNone(answer.reason)
        head = await self.client.call("/openapi.json", "HEAD")
        self.assertEqual((head.status, head.raw), (200, b""))
        for path, method in [
            ("/openapi.json", "POST"),
            ("/openapi.json", "DELETE"),
            ("/openapi.json/", "GET"),
            ("/openapi", "GET"),
            ("/OPENAPI.JSON", "GET"),
        ]:
            answer = await self.client.call(path, method)
            self.assertEqual((answer.status, answer.json), (200, 0), (path, method))
            self.assertTrue(answer.reason, (path, method))

    async def test_answers_fit_document(self):
        """Real successes and failures of each call fit only the matching branch of its schema."""
        need_validators()

        def q(**args):
            return "?" + urllib.parse.urlencode(args)

        create = q(name="doc", instance_type=1, image_id=1)
        answer = await self.client.call("/vm/create" + create)
        vmid = answer.json["vmid"]
        seen = [("/vm/create", create, True, answer)]
        calls = [
            ("/vm/create", q(name="", instance_type=1, image_id=1), False),
            ("/vm/create", q(name="x", instance_type=9, image_id=1), False),
            ("/vm/create", q(name="x", instance_type="one", image_id=1), False),
            ("/vm/query", q(vmid=vmid), True),
            ("/vm/query", q(vmid=999999), False),
            ("/vm/query", q(vmid="x"), False),
            ("/pm/listvms", q(pmid=1), True),
            ("/pm/listvms", q(pmid=9), False),
            ("/pm/listvms", "", False),
            ("/pm/query", q(pmid=1), True),
            ("/pm/query", q(pmid=9), False),
            ("/vm/types", "", True),
            ("/pm/list", "", True),
            ("/image/list", "", True),
            ("/openapi.json", "", True),
            ("/v1/fleet", "", True),
            ("/vm/info", q(vmid=999999), False),
            ("/vm/info", q(vmid=0), False),
            ("/vm/stop", q(vmid="abc"), False),
            ("/vm/start", "", False),
            ("/vm/resize", q(vmid=vmid, instance_type=99), False),
            ("/vm/migrate", q(vmid=vmid, pmid=99), False),
            ("/vm/migrate", q(vmid=vmid, pmid=""), False),
            ("/volume/create", q(name="doc", size=1), True),
            ("/volume/create", q(name="doc", size=0), False),
            ("/volume/create", q(name="", size=1), False),
            ("/volume/query", q(volumeid=1), True),
            ("/volume/query", q(volumeid=99), False),
            ("/volume/query", q(volumeid="x"), False),
            ("/volume/list", "", True),
            ("/volume/attach", q(vmid=vmid, volumeid=1), True),
            ("/volume/query", q(volumeid=1), True),
            ("/volume/attach", q(vmid=vmid, volumeid=1), False),
            ("/volume/destroy", q(volumeid=1), False),
            ("/volume/detach", q(volumeid=1), True),
            ("/volume/detach", q(volumeid=1), False),
            ("/volume/destroy", q(volumeid=1), True),
            ("/volume/destroy", q(volumeid=1), False),
            ("/volume/attach", q(vmid=999999, volumeid=1), False),
            ("/vm/destroy", q(vmid=vmid), True),
            ("/vm/destroy", q(vmid=vmid), False),
            ("/vm/destroy", q(vmid="1.0"), False),
            ("/vm/destroy", "", False),
        ]
        for path, query, success in calls:
            seen.append((path, query, success, await self.client.call(path + query)))
        for path, query, success, answer in seen:
            where = (path, query, answer)
            self.assertEqual(answer.status, 200, where)
            success_schema, *failure_schemas = response_schema(path)["anyOf"]
            self.assertTrue(validator(response_schema(path)).is_valid(answer.json), where)
            self.assertEqual(validator(success_schema).is_valid(answer.json), success, where)
            fails = any(validator(s).is_valid(answer.json) for s in failure_schemas)
            self.assertEqual(fails, not success, where)
            self.assertEqual(answer.reason is None, success, where)
        types = [a.json for p, _, _, a in seen if p == "/vm/types"]
        self.assertEqual(types, [{"types": FLAVORS}])

    async def test_info_fits_document(self):
        """A real VM's vm/info fits the success branch of its schema, only."""
        need_validators()
        answer = await self.client.call("/vm/create?name=doc&instance_type=1&image_id=1")
        vmid = answer.json["vmid"]
        answer = await self.client.call(f"/vm/info?vmid={vmid}")
        success_schema, failure_schema = response_schema("/vm/info")["anyOf"]
        self.assertTrue(validator(success_schema).is_valid(answer.json), answer)
        self.assertFalse(validator(failure_schema).is_valid(answer.json), answer)
        self.assertIsNone(answer.reason)


class InMemoryServedDocumentTests(ServedDocumentTestsMixin, TestCase):
    """
    The document through StubTreq over the Klein resource.
    """

    client_type = InMemoryClient


class LoopbackServedDocumentTests(ServedDocumentTestsMixin, TestCase):
    """
    The document over a real TCP port on 127.0.0.1.
    """

    client_type = LoopbackClient
