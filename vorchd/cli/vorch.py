"""
vorch: the command-line client of a vorchd's REST API.

    vorch vm create NAME --type T --image I   create a VM; waits until it runs
    vorch vm show VMID                        one VM
    vorch vm destroy VMID                     stop and delete a VM
    vorch vm list [--pm PMID]                 every VM (or those on one PM)
    vorch types                               the instance types
    vorch images                              the images
    vorch pm list                             every PM with its capacity, free room and VMs
    vorch pm show PMID                        one PM
    vorch pm vms PMID                         the vmids on one PM
    vorch watch [--count N]                   the fleet's changes, one line each, as they come
    vorch completion bash                     a bash completion script

Output is a table, or the daemon's JSON with C{--json} (for C{vm list} and C{pm list}, a
JSON array of the records of C{vm/query} and C{pm/query}; for C{watch}, one JSON object a
line per event). The server is C{--url}, else C{$VORCH_URL}, else C{http://localhost}.

Exit status: 0 done (C{watch}: also when interrupted), 1 failed (one line on stderr says
what and why: the daemon's C{X-Vorchd-Reason} when it gave one), 2 wrong usage.

The module reads top to bottom: talking to the daemon (calls, and its event stream); pure
formatters from answers and events to text; the commands; the command line and
completion; C{main}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TextIO

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


class ServerEvent(NamedTuple):
    """
    One Server-Sent Event: its name (C{event:}), its id (C{id:}, or None) and its data (the
    C{data:} lines joined).
    """

    name: str
    id: str | None
    data: str


def parse_event_stream(lines: Iterable[str]) -> Iterator[ServerEvent]:
    """
    The events in a C{text/event-stream}, given line by line (line ends are dropped), as
    the HTML standard reads them: a blank line ends an event, a line starting with C{:} is
    a comment (the keepalives), C{field: value} sets a field (one space after the colon is
    not part of the value), and an event without data is no event. Unknown fields are
    ignored; an id stays until another one is given.
    """
    name, data, last_id = "", [], None
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield ServerEvent(name or "message", last_id, "\n".join(data))
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            last_id = value or None


def _stream_lines(response: http.client.HTTPResponse) -> Iterator[str]:
    # The stream is UTF-8; a line of anything else is shown as best it can be.
    while line := response.readline():
        yield line.decode("utf-8", "replace")


def follow_events(client: Client) -> Iterator[ServerEvent]:
    """
    Connect to the daemon's event stream and give its events as they arrive, until it
    ends (the iterator is then exhausted).

    @raise VorchError: the daemon could not be reached, or does not serve an event
        stream there (connecting), or the stream broke or went silent (later).
    """
    url = urllib.parse.urlsplit(f"{client.url}/{EVENTS_PATH}")
    where = f"vorchd at {client.url}"
    kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    connection = kind(url.hostname, url.port, timeout=client.timeout)
    try:
        try:
            connection.request(
                "GET",
                url.path,
                headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"},
            )
            response = connection.getresponse()
        except TimeoutError:
            raise VorchError(f"{where} gave no answer within {client.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            raise VorchError(f"cannot reach {where}: {_why(e)}") from None
        content_type = response.getheader("content-type") or ""
        if response.status != 200 or not content_type.startswith("text/event-stream"):
            reason = response.getheader(REASON_HEADER)
            answer = reason or f"HTTP {response.status}, {content_type or 'no content type'}"
            raise VorchError(f"{where} serves no event stream at /{EVENTS_PATH}: {answer}")
        if connection.sock is not None:
            connection.sock.settimeout(SILENT_FOR)
        try:
            yield from parse_event_stream(_stream_lines(response))
        except TimeoutError:
            raise VorchError(f"{where} sent nothing for {SILENT_FOR:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            raise VorchError(f"{where} broke the event stream: {_why(e)}") from None
    finally:
        connection.close()


class Progress:
    """
    An elapsed-seconds spinner on C{stream} while a slow call runs, if C{stream} is a
    terminal; nothing otherwise. Use as a context manager.
    """

    FRAMES = "|/-\\"

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 0.1):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        if tty:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def _spin(self) -> None:
        start = time.monotonic()
        frame = 0
        while not self._stop.wait(self.interval):
            elapsed = time.monotonic() - start
            spinner = self.FRAMES[frame % len(self.FRAMES)]
            self.stream.write(f"\r{spinner} {self.label} {elapsed:.0f}s")
            self.stream.flush()
            frame += 1

    def __exit__(self, *exc_info) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.stream.write("\r\033[K")
            self.stream.flush()


# --- Formatters: answers to text (pure) -------------------------------------------------


def cell(value: Any) -> str:
    """
    A value as table text: whole numbers without a point, other numbers to two places,
    and text with its control characters escaped so that a row stays one line.
    """
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}".rstrip("0")
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """
    A plain-text table: a header line, then one line per row, columns two spaces apart;
    numbers align right, text left. Ends with a newline.
    """
    rows = [list(row) for row in rows]
    texts = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in texts:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))

    def line(values: Sequence[str], raw: Sequence[Any] | None) -> str:
        parts = []
        for i, text in enumerate(values):
            number = raw is not None and _is_number(raw[i])
            parts.append(text.rjust(widths[i]) if number else text.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    lines = [line(list(headers), None)]
    lines += [line(text, row) for text, row in zip(texts, rows, strict=True)]
    return "\n".join(lines) + "\n"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


VM_HEADERS = ("VMID", "NAME", "TYPE", "PM")


def format_vms(vms: Iterable[Mapping[str, Any]]) -> str:
    """
    C{vm/query} answers as a table.
    """
    return format_table(
        VM_HEADERS, [(v["vmid"], v["name"], v["instance_type"], v["pmid"]) for v in vms]
    )


def format_types(answer: Mapping[str, Any]) -> str:
    """
    A C{vm/types} answer as a table.
    """
    return format_table(
        ("TID", "CPU", "RAM MiB", "DISK GiB"),
        [(t["tid"], t["cpu"], t["ram"], t["disk"]) for t in answer["types"]],
    )


def format_images(answer: Mapping[str, Any]) -> str:
    """
    An C{image/list} answer as a table.
    """
    return format_table(("ID", "NAME"), [(i["id"], i["name"]) for i in answer["images"]])


PM_HEADERS = (
    "PMID",
    "CPU",
    "FREE CPU",
    "RAM MiB",
    "FREE RAM",
    "DISK GiB",
    "FREE DISK",
    "VMS",
)


def format_pms(pms: Iterable[Mapping[str, Any]]) -> str:
    """
    C{pm/query} answers as a table: each resource's capacity, then what is free of it.
    """
    rows = []
    for pm in pms:
        capacity, free = pm["capacity"], pm["free"]
        row = [pm["pmid"]]
        for resource in ("cpu", "ram", "disk"):
            row += [capacity[resource], free[resource]]
        rows.append([*row, pm["vms"]])
    return format_table(PM_HEADERS, rows)


def format_vmids(vmids: Iterable[int]) -> str:
    """
    A C{pm/listvms} answer's vmids as a one-column table.
    """
    return format_table(("VMID",), [(vmid,) for vmid in vmids])


def event_data(event: ServerEvent) -> Any:
    """
    An event's data: its JSON, or the text itself where it is not JSON.
    """
    try:
        return json.loads(event.data)
    except ValueError:
        return event.data


def event_json(event: ServerEvent) -> dict[str, Any]:
    """
    An event as one JSON object: its name, its id (a number where it is one) and its data.
    """
    ident: int | str | None = event.id
    if ident is not None and ident.isascii() and ident.isdigit():
        ident = int(ident)
    return {"event": event.name, "id": ident, "data": event_data(event)}


def _room(pm: Mapping[str, Any]) -> str:
    parts = []
    for resource, unit in (("cpu", ""), ("ram", " MiB"), ("disk", " GiB")):
        free, capacity = cell(pm["free"][resource]), cell(pm["capacity"][resource])
        parts.append(f"{resource} {free}/{capacity}{unit}")
    return ", ".join(parts)


def _describe(name: str, data: Any) -> str:
    if name == "hello":
        return f"hello: following the fleet's changes from seq {cell(data['seq'])}"
    if name == "pm":
        vms = len(data["vmids"])
        return f"pm {data['pmid']} {data['state']}: free {_room(data)}; {vms} vm" + (
            "" if vms == 1 else "s"
        )
    if name == "vm":
        # The name is free text: quoted and escaped (what JSON leaves, too), so that the
        # line stays one line and nothing in it reaches the terminal as a control.
        quoted = json.dumps(data["name"], ensure_ascii=False)
        label = "".join(c if c.isprintable() else repr(c)[1:-1] for c in quoted)
        return (
            f"vm {data['vmid']} {data['state']} on pm {data['pmid']}: {label},"
            f" type {data['instance_type']}, image {data.get('image_id')}"
        )
    if name == "vm_gone":
        return f"vm {data['vmid']} gone from pm {data['pmid']}"
    if name == "catalog":
        types, images = data["types"], data["images"]
        return (
            f"catalog: types {', '.join(str(t['tid']) for t in types) or 'none'};"
            f" images {', '.join(cell(i['name']) for i in images) or 'none'}"
        )
    if name == "settings":
        ratios = ", ".join(f"{r} {cell(v)}" for r, v in data["ratios"].items())
        return f"settings: policy {cell(data['policy'])}, ratios {ratios}"
    if name == "resync":
        return f"resync: the daemon took a fresh snapshot at seq {cell(data['seq'])}"
    raise KeyError(name)


def format_event(event: ServerEvent, when: float | None = None) -> str:
    """
    One line for an event: the local time (C{when}, else now), its id in brackets if it
    has one, and what changed. An event this client does not know, or whose data it cannot
    read, shows its name and data as they came.
    """
    stamp = time.strftime("%H:%M:%S", time.localtime(when))
    ident = f" [{event.id}]" if event.id is not None else ""
    try:
        text = _describe(event.name, event_data(event))
    except (KeyError, TypeError, AttributeError):
        text = f"{event.name}: {cell(event.data)}"
    return f"{stamp}{ident} {text}"


# --- The commands -----------------------------------------------------------------------
#
# Each takes the client and the parsed options and answers (the JSON to print with
# --json, the table to print otherwise).


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


def vm_create(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    params = {"name": options.name, "instance_type": options.type, "image_id": options.image}
    with Progress(f"creating vm {options.name!r}..."):
        answer, reason = client.get("vm/create", **params)
    if not isinstance(answer, dict) or not answer.get("vmid"):
        raise failure(f"cannot create vm {options.name!r}", reason, answer)
    if options.json:
        return answer, ""
    return answer, format_vms([query_vm(client, answer["vmid"])])


def vm_show(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    vm = query_vm(client, options.vmid)
    return vm, format_vms([vm])


def vm_destroy(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    answer, reason = client.get("vm/destroy", vmid=options.vmid)
    if not isinstance(answer, dict) or answer.get("status") != 1:
        raise failure(f"cannot destroy vm {options.vmid}", reason, answer)
    return answer, f"destroyed vm {options.vmid}\n"


def vm_list(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    pmids = [options.pm] if options.pm is not None else list_pmids(client)
    vms = []
    for pmid in pmids:
        for vmid in list_pm_vms(client, pmid):
            answer, _ = client.get("vm/query", vmid=vmid)
            # A VM destroyed between the two calls is simply no longer listed.
            if isinstance(answer, dict):
                vms.append(answer)
    vms.sort(key=lambda vm: vm["vmid"])
    return vms, format_vms(vms)


def types(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    answer, reason = client.get("vm/types")
    if not isinstance(answer, dict) or "types" not in answer:
        raise failure("cannot list the types", reason, answer)
    return answer, format_types(answer)


def images(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    answer, reason = client.get("image/list")
    if not isinstance(answer, dict) or "images" not in answer:
        raise failure("cannot list the images", reason, answer)
    return answer, format_images(answer)


def pm_list(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    pms = [query_pm(client, pmid) for pmid in list_pmids(client)]
    return pms, format_pms(pms)


def pm_show(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    pm = query_pm(client, options.pmid)
    return pm, format_pms([pm])


def pm_vms(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    answer, reason = client.get("pm/listvms", pmid=options.pmid)
    if not isinstance(answer, dict) or not isinstance(answer.get("vmids"), list):
        raise failure(f"cannot list the vms of pm {options.pmid}", reason, answer)
    return answer, format_vmids(answer["vmids"])


def watch(client: Client, options: argparse.Namespace, out: TextIO) -> None:
    """
    Print the daemon's events as they come, one line each (with --json, one JSON object
    each), until interrupted or, with --count N, until N changes (any event but hello)
    have been printed. A stream that is lost is followed again, its new hello printed;
    only a first connection that fails is a failure.

    @raise VorchError: the first connection failed.
    """
    changes = 0
    connected = False
    delay = RECONNECT_FIRST
    try:
        while True:
            try:
                for event in follow_events(client):
                    connected, delay = True, RECONNECT_FIRST
                    if options.json:
                        line = json.dumps(event_json(event), ensure_ascii=False)
                    else:
                        line = format_event(event)
                    out.write(line + "\n")
                    out.flush()
                    if event.name != "hello":
                        changes += 1
                        if options.count is not None and changes >= options.count:
                            return
                why = f"vorchd at {client.url} ended the event stream"
            except VorchError as e:
                if not connected:
                    raise
                why = str(e)
            print(f"{PROG}: {why}; following it again in {delay:g} s", file=sys.stderr)
            time.sleep(delay)
            delay = min(delay * 2, RECONNECT_MOST)
    except KeyboardInterrupt:
        return  # how a watch is meant to end


# --- The command line -------------------------------------------------------------------

# The command tree, for the parser and for completion: group -> command -> its options.
TREE: dict[str, dict[str, tuple[str, ...]]] = {
    "vm": {
        "create": ("--type", "--image"),
        "show": (),
        "destroy": (),
        "list": ("--pm",),
    },
    "types": {},
    "images": {},
    "pm": {"list": (), "show": (), "vms": ()},
    "watch": {},
    "completion": {"bash": ()},
}
# The options of the commands that are a group of their own (no subcommands).
GROUP_OPTIONS: dict[str, tuple[str, ...]] = {"watch": ("--count",)}
GLOBAL_OPTIONS = ("--url", "--timeout", "--json", "--help")
# The options followed by a value, which completion leaves to the user.
VALUE_OPTIONS = ("--url", "--timeout", "--type", "--image", "--pm", "--count")

EPILOG = f"""\
The server is --url, else ${URL_ENV}, else {DEFAULT_URL}. --url, --timeout and --json may
also follow the command (vorch vm list --json).

Exit status: 0 done, 1 failed (a one-line message says why), 2 wrong usage.
Shell completion: eval "$(vorch completion bash)"
"""


def url_arg(text: str) -> str:
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {text!r}")
    return text


def timeout_arg(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return seconds


def count_arg(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count <= 0:
        raise argparse.ArgumentTypeError(f"not a positive number of events: {text!r}")
    return count


def id_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer id: {text!r}") from None


def common_options(suppress: bool) -> argparse.ArgumentParser:
    """
    The options every command takes. On the commands they default to nothing, so that an
    option given before the command is not undone by the command's parser.
    """
    default: Callable[[Any], Any] = (lambda _: argparse.SUPPRESS) if suppress else (lambda v: v)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--url",
        type=url_arg,
        default=default(None),
        help=f"the daemon's REST API (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--timeout",
        type=timeout_arg,
        default=default(DEFAULT_TIMEOUT),
        metavar="SECONDS",
        help=f"how long to wait for an answer (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the daemon's JSON instead of a table",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """
    The command line's parser.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Command-line client of a vorchd's REST API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common_options(suppress=False)],
    )
    common = [common_options(suppress=True)]
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", title="commands")
    groups.required = True

    vm = groups.add_parser("vm", help="create, show, destroy and list VMs").add_subparsers(
        dest="command", metavar="COMMAND", title="commands", required=True
    )
    create = vm.add_parser(
        "create", parents=common, help="create a VM and wait until it runs (prints it)"
    )
    create.add_argument("name", metavar="NAME", help="any text; names need not be unique")
    create.add_argument("--type", type=id_arg, required=True, metavar="TID", help="vorch types")
    create.add_argument("--image", type=id_arg, required=True, metavar="ID", help="vorch images")
    create.set_defaults(run=vm_create)
    show = vm.add_parser("show", parents=common, help="one VM")
    show.add_argument("vmid", type=id_arg, metavar="VMID")
    show.set_defaults(run=vm_show)
    destroy = vm.add_parser("destroy", parents=common, help="stop and delete a VM")
    destroy.add_argument("vmid", type=id_arg, metavar="VMID")
    destroy.set_defaults(run=vm_destroy)
    listing = vm.add_parser("list", parents=common, help="every VM (or those on one PM)")
    listing.add_argument("--pm", type=id_arg, metavar="PMID", help="only the VMs on this PM")
    listing.set_defaults(run=vm_list)

    groups.add_parser("types", parents=common, help="the instance types").set_defaults(run=types)
    groups.add_parser("images", parents=common, help="the images").set_defaults(run=images)

    pm = groups.add_parser("pm", help="list and show PMs").add_subparsers(
        dest="command", metavar="COMMAND", title="commands", required=True
    )
    pm.add_parser(
        "list", parents=common, help="every PM's capacity, free room and VMs"
    ).set_defaults(run=pm_list)
    show = pm.add_parser("show", parents=common, help="one PM")
    show.add_argument("pmid", type=id_arg, metavar="PMID")
    show.set_defaults(run=pm_show)
    vms = pm.add_parser("vms", parents=common, help="the vmids on one PM")
    vms.add_argument("pmid", type=id_arg, metavar="PMID")
    vms.set_defaults(run=pm_vms)

    watching = groups.add_parser(
        "watch",
        parents=common,
        help="print the fleet's changes as they come (Ctrl-C ends it)",
        description="Print each change of the fleet as the daemon sends it on /v1/events: one "
        "line each, or one JSON object each with --json. Ctrl-C ends it (exit status 0).",
    )
    watching.add_argument(
        "--count",
        type=count_arg,
        metavar="N",
        help="stop after N changes (the hello that starts the stream is not one)",
    )

    completion = groups.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=["bash"], metavar="SHELL", help="bash")
    return parser


def bash_completion(
    tree: Mapping[str, Mapping[str, Sequence[str]]] = TREE,
    group_options: Mapping[str, Sequence[str]] = GROUP_OPTIONS,
) -> str:
    """
    A bash completion script for C{vorch}, from the command tree.
    """
    options = " ".join(GLOBAL_OPTIONS)
    cases = []
    for group, commands in tree.items():
        if commands:
            cases.append(f'        "{group}") words="{" ".join(commands)}" ;;')
        elif group in group_options:
            words = " ".join([*group_options[group], *GLOBAL_OPTIONS])
            cases.append(f'        "{group}") words="{words}" ;;')
        else:
            cases.append(f'        "{group}") words="" ;;')
        for command, command_options in commands.items():
            words = " ".join([*command_options, *GLOBAL_OPTIONS])
            cases.append(f'        "{group} {command}") words="{words}" ;;')
    case_lines = "\n".join(cases)
    values = "|".join(VALUE_OPTIONS)
    return f"""\
# bash completion for vorch; load with: eval "$(vorch completion bash)"
_vorch() {{
    local cur prev path words i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    case "$prev" in
        {values}) return 0 ;;
    esac
    path=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            {values}) ((i++)) ;;
            -*) ;;
            *) path="${{path:+$path }}${{COMP_WORDS[i]}}" ;;
        esac
    done
    case "$path" in
        "") words="{" ".join(tree)} {options}" ;;
{case_lines}
        *) words="{options}" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F _vorch vorch
"""


# --- main -------------------------------------------------------------------------------


def run(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> None:
    """
    Run the parsed command, printing its answer to C{out}.

    @raise VorchError: it failed.
    """
    if options.group == "completion":
        out.write(bash_completion())
        return
    url = options.url or environ.get(URL_ENV) or DEFAULT_URL
    try:
        url_arg(url)
    except argparse.ArgumentTypeError as e:
        raise VorchError(f"${URL_ENV}: {e}") from None
    client = Client(url, options.timeout)
    if options.group == "watch":
        watch(client, options, out)
        return
    try:
        answer, table = options.run(client, options)
    except (KeyError, TypeError, AttributeError) as e:
        where = f"vorchd at {client.url}"
        raise VorchError(f"{where} answered in a form vorch does not know ({e!r})") from None
    if options.json:
        out.write(json.dumps(answer, ensure_ascii=False) + "\n")
    else:
        out.write(table)
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """
    The C{vorch} console script.

    @return: the exit status: 0 done, 1 failed, 2 wrong usage.
    """
    try:
        options = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or wrong usage (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        run(options, os.environ, sys.stdout)
    except VorchError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (vorch vm list | head): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
