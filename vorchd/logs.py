"""
Logs as data: C{twistd --logger vorchd.logs.json_lines vorchd ...} writes every log
event as one JSON object (twisted.logger's JSON format, one record a line) instead of
text, so that the fields of vorchd's events (C{event}, C{outcome}, C{vmid}, C{pmid},
C{policy}, C{duration}, ...) reach a log pipeline as fields.

The file is C{$VORCHD_LOG_JSON} (C{-} for standard output; C{vorchd.json} in twistd's
working directory by default). It is appended to, a line at a time, and never rotated
by vorchd: rotate it with logrotate's C{copytruncate}. Read it back with
L{twisted.logger.eventsFromJSONLogFile}.
"""

from __future__ import annotations

import os
import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json_lines() -> ILogObserver:
    """
    A log observer writing JSON records to C{$VORCHD_LOG_JSON}: the factory named by
    twistd's C{--logger} option.
    """
    path = os.environ.get("VORCHD_LOG_JSON", "vorchd.json")
    out = sys.stdout if path == "-" else open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
    return jsonFileLogObserver(out)
