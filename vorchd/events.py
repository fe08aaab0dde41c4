"""
C{GET /v1/events}: the fleet's changes as Server-Sent Events, made from the read model
as it applies each change (see L{vorchd.state.model.FleetState.listen}).

Events (each with C{id: <seq>}, the change it comes from, shared by the events of one
change, and one line of JSON): C{hello} ({seq}) first, then
C{pm} and C{vm} (the objects of C{/v1/fleet}), C{vm_gone} ({vmid, pmid}), C{volume} (as
C{volume/query} answers it), C{volume_gone} ({volumeid}), C{catalog}
({types, images}), C{settings} ({policy, ratios}, followed by every PM, whose free room
changed with the ratios), and C{resync} ({seq}: the model was replaced by a snapshot;
reload C{/v1/fleet}). A comment line every C{KEEPALIVE} seconds keeps proxies from
closing an idle stream.

A client that reads slower than changes come does not make the daemon buffer them
without end: the stream is a push producer, so while the connection's buffer is full
(Twisted pauses it) events are dropped, and when it drains the client gets a
C{resync} ({seq}) first: reload C{/v1/fleet}, as after a snapshot.
"""

from __future__ import annotations

import json

from twisted.internet import task
from twisted.internet.interfaces import IPushProducer
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from vorchd.state import views

EVENTS_PATH = b"/v1/events"
KEEPALIVE = 15.0


@implementer(IPushProducer)
class EventStream:
    """
    One client's event stream, open until the client goes; paused while the client's
    connection cannot take more (L{IPushProducer}).
    """

    def __init__(self, fleet, request, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.fleet = fleet
        self.request = request
        self.reactor = reactor
        self._stop_listening = None
        self._keepalive = None
        # Paused by the connection; and whether an event was dropped meanwhile.
        self._paused = False
        self._missed = False

    def start(self):
        request = self.request
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        state = self.fleet.state
        self._send(state.seq, "hello", {"seq": state.seq})
        self._stop_listening = state.listen(self._changed)
        self._keepalive = task.LoopingCall(self._ping)
        self._keepalive.clock = self.reactor
        self._keepalive.start(KEEPALIVE, now=False)
        request.notifyFinish().addBoth(self._gone)
        request.registerProducer(self, True)
        return NOT_DONE_YET

    # -- IPushProducer: the connection's buffer is full, has drained, or is gone ----------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._missed:
            self._missed = False
            seq = self.fleet.state.seq
            self._send(seq, "resync", {"seq": seq})

    def stopProducing(self) -> None:
        self._gone(None)

    def _gone(self, _result) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()

    def _ping(self) -> None:
        if not self._paused:
            self.request.write(b": keepalive\n\n")

    def _send(self, seq: int, event: str, data) -> None:
        if self._paused:
            self._missed = True
            return
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        self.request.write(f"id: {seq}\nevent: {event}\ndata: {body}\n\n".encode())

    def _changed(self, seq: int, event: str, key) -> None:
        if self._paused:
            self._missed = True
            return
        state = self.fleet.state
        _policy, ratios = self.fleet.current()
        if event == "pm":
            if key in state.pms:
                self._send(seq, "pm", views.pm_view(state, key, ratios))
        elif event == "vm":
            vm = state.vms.get(key)
            if vm is not None and vm.visible:
                self._send(seq, "vm", views.vm_view(vm))
        elif event == "vm_gone":
            vmid, pmid = key
            self._send(seq, "vm_gone", {"vmid": vmid, "pmid": pmid})
        elif event == "catalog":
            self._send(seq, "catalog", views.catalog(state))
        elif event == "settings":
            policy, ratios = self.fleet.current()
            self._send(seq, "settings", {"policy": policy.name, "ratios": ratios})
            for pmid in [*state.pm_ids, *state.retired()]:
                if pmid in state.pms:
                    self._send(seq, "pm", views.pm_view(state, pmid, ratios))
        elif event == "volume":
            volume = state.volumes.get(key)
            if volume is not None:
                self._send(seq, "volume", views.volume_view(volume))
        elif event == "volume_gone":
            self._send(seq, "volume_gone", {"volumeid": key})
        elif event == "resync":
            self._send(seq, "resync", {"seq": seq})
