"""
vorch's side of the conversation with a vorchd: the calls, their failures, and the
few reads every command makes.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

PROG = "vorch"
URL_ENV = "VORCH_URL"
DEFAULT_URL = "http://localhost"
DEFAULT_TIMEOUT = 600.0
REASON_HEADER = "X-Vorchd-Reason"
EVENTS_PATH = "v1/events"
# The daemon sends a keepalive every 15 s: a stream silent for this long is dead.
SILENT_FOR = 60.0
# Seconds between attempts to follow a stream again once it was lost: first, most.
RECONNECT_FIRST, RECONNECT_MOST = 0.5, 10.0


class VorchError(Exception):
    """
    Something that ends a command with a one-line message (exit status 1).
    """


# --- Talking to the daemon --------------------------------------------------------------


class Client:
    """
    Calls to one daemon's seed API, one HTTP GET each.
    """

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str, **params: Any) -> tuple[Any, str | None]:
        """
        GET C{path} with C{params} as its query.

        @return: the JSON answer and the C{X-Vorchd-Reason} header (or None).
        @raise VorchError: the daemon could not be reached, or answered something other
            than HTTP 200 with a JSON body.
        """
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/{path}" + (f"?{query}" if query else "")
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        where = f"vorchd at {self.url}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
                reason = response.headers.get(REASON_HEADER)
        except urllib.error.HTTPError as e:
            raise VorchError(f"{where} answered HTTP {e.code} {e.reason} to /{path}") from None
        except urllib.error.URLError as e:
            raise VorchError(f"cannot reach {where}: {_why(e.reason)}") from None
        except TimeoutError:
            raise VorchError(f"{where} gave no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            raise VorchError(f"cannot talk to {where}: {_why(e)}") from None
        try:
            return json.loads(body), reason
        except ValueError:
            raise VorchError(f"{where} answered /{path} with something that is not JSON") from None


def _why(reason: object) -> str:
    """
    A short phrase for a connection failure.
    """
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is vorchd running there? see --url)"
    if isinstance(reason, TimeoutError):
        return "no answer (timed out)"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[0].lower() + reason.strerror[1:]
    return str(reason) or type(reason).__name__


def failure(what: str, reason: str | None, answer: Any) -> VorchError:
    """
    The error for a call the daemon answered with its failure value.
    """
    because = reason or f"the daemon answered {json.dumps(answer)} and gave no reason"
    return VorchError(f"{what}: {because}")


def query_vm(client: Client, vmid: int) -> dict:
    answer, reason = client.get("vm/query", vmid=vmid)
    if not isinstance(answer, dict):
        raise failure(f"cannot show vm {vmid}", reason, answer)
    return answer


def query_pm(client: Client, pmid: int) -> dict:
    answer, reason = client.get("pm/query", pmid=pmid)
    if not isinstance(answer, dict):
        raise failure(f"cannot show pm {pmid}", reason, answer)
    return answer


def list_pm_vms(client: Client, pmid: int) -> list[int]:
    answer, reason = client.get("pm/listvms", pmid=pmid)
    if not isinstance(answer, dict) or not isinstance(answer.get("vmids"), list):
        raise failure(f"cannot list the vms of pm {pmid}", reason, answer)
    return answer["vmids"]


def list_pmids(client: Client) -> list[int]:
    answer, reason = client.get("pm/list")
    if not isinstance(answer, dict) or not isinstance(answer.get("pmids"), list):
        raise failure("cannot list the pms", reason, answer)
    return answer["pmids"]
