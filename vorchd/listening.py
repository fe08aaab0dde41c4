"""
A port the daemon listens on, as a service: Twisted's endpoint service, which also
keeps the port it got (tests and logs want its number).
"""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.logger import Logger


def endpoint(reactor, port: int, interface: str | None):
    """
    A TCP server endpoint on C{port} and C{interface} (every address if empty), made
    from its description as twistd's own C{--listen} does.
    """
    description = f"tcp:{int(port)}"
    if interface:
        escaped = interface.replace("\\", "\\\\").replace(":", "\\:")
        description += f":interface={escaped}"
    return endpoints.serverFromString(reactor, description)


class ListeningService(StreamServerEndpointService):
    """
    Listens on C{endpoint} with C{factory} while running.

    @ivar what: what the port is for, for the log.
    @ivar port: the listening port, once listening.
    """

    log = Logger()

    def __init__(self, endpoint, factory, what: str, required: bool = False):
        super().__init__(endpoint, factory)
        self.what = what
        self.port = None
        # A port that must open stops start-up when it cannot; another is logged.
        self._raiseSynchronously = required

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port):
        self.port = port
        address = port.getHost()
        self.log.info(
            "{what} on {host}:{port}", what=self.what, host=address.host, port=address.port
        )
        return port
