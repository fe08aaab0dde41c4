"""
vorch watch: the daemon's event stream (Server-Sent Events) read, followed across
reconnections, and printed one line an event.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple, TextIO

from vorchd.cli.vorch_client import (
    EVENTS_PATH,
    PROG,
    REASON_HEADER,
    RECONNECT_FIRST,
    RECONNECT_MOST,
    SILENT_FOR,
    Client,
    VorchError,
    _why,
)
from vorchd.cli.vorch_format import cell


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
    if name == "volume":
        quoted = json.dumps(data["name"], ensure_ascii=False)
        label = "".join(c if c.isprintable() else repr(c)[1:-1] for c in quoted)
        where = f" to vm {data['vmid']}" if data["status"] == "attached" else ""
        return f"volume {data['volumeid']} {data['status']}{where}: {label}, {data['size']} GiB"
    if name == "volume_gone":
        return f"volume {data['volumeid']} gone"
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
