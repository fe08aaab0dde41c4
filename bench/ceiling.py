"""
The ceiling for vorchd's read benchmarks: a bare Klein app, with no twistd, no Redis and
no access log, answering every GET with one fixed JSON object the size of a /vm/query
answer. Whatever vorchd's reads reach is compared with what this reaches, measured with
the same wrk settings in the same run, on the same reactor (Twisted's default: epoll).

    python bench/ceiling.py PORT [--interface 127.0.0.1]

It serves until it is sent SIGTERM or SIGINT. bench/run.py starts it in its own process.
"""

from __future__ import annotations

import argparse
import json

from klein import Klein
from twisted.internet import reactor
from twisted.web.server import Site

ANSWER = json.dumps({"vmid": 1, "name": "test_vm", "instance_type": 1, "pmid": 1}).encode()

app = Klein()


@app.route("/", branch=True)
def fixed(request):
    request.setHeader(b"content-type", b"application/json")
    return ANSWER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--interface", default="127.0.0.1")
    args = parser.parse_args()
    site = Site(app.resource())
    site.noisy = False
    # No access log: vorchd's Site writes one line a request to its twistd log, which
    # is part of the gap this ceiling shows.
    site.log = lambda request: None
    reactor.listenTCP(args.port, site, interface=args.interface)
    reactor.run()


if __name__ == "__main__":
    main()
