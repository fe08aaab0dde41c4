"""
The REST server's access log, and a cap on the daemon log's rotated files.

The access log is off by default: L{configure} then makes the L{Site}'s per-request
C{log} do nothing at all, where Twisted would otherwise format a line for every request
and send it through twisted.logger into the daemon log. With C{[logging] access_log}
set, each request writes one line in Twisted's combined log format to that file alone,
a L{LogFile} rotated at C{access_log_max_bytes} that keeps C{access_log_keep} rotated
files (C{access.log.1} newest).

twistd's C{--logfile} is a L{LogFile} rotated at 1 MB that keeps every rotated file.
L{cap_daemon_log} hands twistd, through the application's C{ILogObserver} component
(the hook twistd reads before falling back to C{--logfile}), an observer of the same
format on the same file, with the same C{SIGUSR1} rotation, rotated at
C{daemon_log_max_bytes} and keeping C{daemon_log_keep} rotated files.
"""

from __future__ import annotations

import signal

from twisted.application.service import IService
from twisted.logger import ILogObserver, textFileLogObserver
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile
from twisted.web.server import Site

from vorchd.config import Settings


def _discard(request) -> None:
    """
    The access log when it is off: nothing is formatted, written or logged.
    """


class _AccessLogOpener:
    """
    The L{Site}'s C{_openLogFile}: the rotated L{LogFile} for its access log.

    The first file is opened when the site is configured, so that a path that cannot be
    written fails there, naming it; a site stopped (which closes it) and started again
    opens it anew.
    """

    def __init__(self, path: str, max_bytes: int, keep: int):
        self.max_bytes = max_bytes
        self.keep = keep
        self.file: LogFile | None = self.open(path)

    def open(self, path: str) -> LogFile:
        return LogFile.fromFullPath(path, rotateLength=self.max_bytes, maxRotatedFiles=self.keep)

    def __call__(self, path: str) -> LogFile:
        file, self.file = self.file, None
        if file is None or file.closed:
            file = self.open(path)
        return file


def configure(site: Site, settings: Settings) -> None:
    """
    Set up C{site}'s access log from C{settings}, before the site listens.

    @raise OSError: the access log file cannot be opened for writing.
    """
    if not settings.access_log:
        # An instance attribute: HTTP requests call site.log(request) when they finish.
        site.log = _discard
        return
    site.logPath = settings.access_log
    # HTTPFactory.startFactory opens logPath with _openLogFile, the hook it offers for
    # twisted.python.logfile, and stopFactory closes it.
    site._openLogFile = _AccessLogOpener(
        settings.access_log, settings.access_log_max_bytes, settings.access_log_keep
    )


def _twistd_log_path(twistd) -> str | None:
    """
    The file twistd logs to with the options C{twistd} (the values of its command line),
    or None when it logs elsewhere (standard output, syslog, a C{--logger}), as twistd's
    UnixAppLogger decides.
    """
    if twistd.get("logger") or twistd.get("syslog"):
        return None
    path = twistd.get("logfile") or ""
    if path == "-" or (not path and twistd.get("nodaemon")):
        return None
    return path or "twistd.log"


def _rotate_on_sigusr1(logfile: LogFile) -> None:
    """
    Rotate C{logfile} on SIGUSR1 unless something else already handles it, as twistd
    does for its own --logfile.
    """
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum, frame):
            from twisted.internet import reactor

            reactor.callFromThread(logfile.rotate)

        signal.signal(signal.SIGUSR1, rotate)


def daemon_log_observer(path: str, settings: Settings) -> ILogObserver:
    """
    The daemon log on C{path} as twistd's C{--logfile} writes it, rotated at
    C{settings.daemon_log_max_bytes} and keeping C{settings.daemon_log_keep} rotated
    files; C{SIGUSR1} rotates it too.
    """
    logfile = LogFile.fromFullPath(
        path,
        rotateLength=settings.daemon_log_max_bytes,
        maxRotatedFiles=settings.daemon_log_keep,
    )
    _rotate_on_sigusr1(logfile)
    return textFileLogObserver(logfile)


def cap_daemon_log(service: IService, options) -> None:
    """
    Make twistd's C{--logfile} keep no more rotated files than the settings say, for
    C{service}, the one the plugin's C{makeService(options)} returns.

    twistd adds that service to its application, then starts logging: to the
    application's C{ILogObserver} component if it has one (unless C{--logger} names a
    factory), else to C{--logfile}. So when C{service} joins the application, this sets
    that component to the capped L{daemon_log_observer} on the C{--logfile} path. It
    changes nothing when twistd logs elsewhere (standard output, C{--syslog},
    C{--logger}), or when C{options} were not parsed by twistd (they have no parent).
    """
    twistd = getattr(options, "parent", None)
    if twistd is None:
        return
    path = _twistd_log_path(twistd)
    if path is None:
        return
    settings: Settings = options.settings
    join = service.setServiceParent

    def setServiceParent(parent) -> None:
        if isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, daemon_log_observer(path, settings))
        join(parent)

    # An instance attribute: twistd calls service.setServiceParent(application).
    service.setServiceParent = setServiceParent
