"""
The access log and the daemon log's rotation (vorchd.accesslog): the [logging]
settings; a twisted.web Site over a trivial resource, configured from them and requested
over loopback (no access log at all by default, one combined-format line per request in
its own rotated file when on); the daemon log's cap, as twistd's application hands it
over, in this process and in a real daemonized twistd.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import treq
from twisted.application.service import Application, IServiceCollection, MultiService
from twisted.internet import endpoints, reactor
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from vorchd import accesslog
from vorchd.config import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]

# Twisted's combined log format: "ip" - - [date] "request line" status length "referer"
# "agent".
COMBINED = re.compile(
    r'^"127\.0\.0\.1" - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
    r'"GET (?P<uri>\S+) HTTP/1\.1" 200 5 "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$'
)


def tmpdir(testcase) -> Path:
    path = Path(tempfile.mkdtemp(prefix="vorchd-test-"))
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


def rotated(path: Path) -> list[str]:
    """
    The names of C{path}'s rotated files (C{name.1}, C{name.2}, ...), sorted.
    """
    return sorted(p.name for p in path.parent.glob(path.name + ".*"))


class SettingsTests(TestCase):
    """
    The [logging] section of the ini.
    """

    def setUp(self):
        self.dir = tmpdir(self)

    def load(self, text: str) -> Settings:
        ini = self.dir / "vorchd.ini"
        ini.write_text(text)
        return load_settings(str(ini), environ={})

    def test_defaults(self):
        """
        Without a [logging] section there is no access log; the shipped ini shows every
        [logging] setting with its default.
        """
        settings = self.load("[server]\nport = 8080\n")
        self.assertIsNone(settings.access_log)
        keys = (
            "access_log",
            "access_log_max_bytes",
            "access_log_keep",
            "daemon_log_max_bytes",
            "daemon_log_keep",
        )
        shipped = load_settings(str(REPO / "etc" / "vorchd.ini"), environ={})
        self.assertEqual(
            {k: getattr(shipped, k) for k in keys}, {k: getattr(Settings(), k) for k in keys}
        )
        self.assertEqual(
            {k: getattr(settings, k) for k in keys}, {k: getattr(Settings(), k) for k in keys}
        )

    def test_values(self):
        """
        The access log path is relative to the ini; sizes and counts are read as given.
        """
        settings = self.load(
            "[logging]\naccess_log = logs/access.log\naccess_log_max_bytes = 2048\n"
            "access_log_keep = 3\ndaemon_log_max_bytes = 4096\ndaemon_log_keep = 7\n"
        )
        self.assertEqual(settings.access_log, str(self.dir.resolve() / "logs" / "access.log"))
        self.assertEqual(
            (
                settings.access_log_max_bytes,
                settings.access_log_keep,
                settings.daemon_log_max_bytes,
                settings.daemon_log_keep,
            ),
            (2048, 3, 4096, 7),
        )
        absolute = self.load("[logging]\naccess_log = /var/log/vorchd/access.log\n")
        self.assertEqual(absolute.access_log, "/var/log/vorchd/access.log")

    def test_bad_values(self):
        """
        A size or count that is not a positive integer stops start-up, naming it.
        """
        for key in (
            "access_log_max_bytes",
            "access_log_keep",
            "daemon_log_max_bytes",
            "daemon_log_keep",
        ):
            for value in ("0", "-1", "ten", "1.5"):
                e = self.assertRaises(ConfigError, self.load, f"[logging]\n{key} = {value}\n")
                self.assertIn(key, str(e))


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello"


class AccessLogTests(TestCase):
    """
    A Site configured by L{accesslog.configure}, listening on loopback.
    """

    def setUp(self):
        self.dir = tmpdir(self)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    async def serve(self, site: Site) -> str:
        port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    async def configured(self, settings: Settings) -> tuple[Site, str]:
        site = Site(Hello())
        site.noisy = False
        accesslog.configure(site, settings)
        return site, await self.serve(site)

    async def get(self, url: str, **headers) -> None:
        response = await treq.get(
            url,
            pool=self.pool,
            headers={k.replace("_", "-"): [v] for k, v in headers.items()},
        )
        self.assertEqual(await treq.content(response), b"hello")

    def logged(self, marker: str) -> list[str]:
        return [formatEvent(e) for e in self.events if marker in formatEvent(e)]

    async def test_off_by_default(self):
        """
        Twisted's own Site logs each request through twisted.logger (into the daemon
        log); configured with the default settings, a request is logged nowhere.
        """
        _, plain = await self.configured_plain()
        await self.get(plain + "/plain")
        self.assertEqual(len(self.logged('"GET /plain HTTP/1.1" 200')), 1)

        site, url = await self.configured(Settings())
        del self.events[:]
        await self.get(url + "/hello?x=1")
        # Only the client's own factory says anything (starting, stopping).
        server_side = [
            e
            for e in self.events
            if not e.get("log_namespace", "").startswith("twisted.web.client")
        ]
        self.assertEqual(server_side, [])
        self.assertEqual(list(self.dir.iterdir()), [])
        self.assertIsNone(site.logPath)

    async def configured_plain(self) -> tuple[Site, str]:
        site = Site(Hello())
        site.noisy = False
        return site, await self.serve(site)

    async def test_one_line_per_request(self):
        """
        With C{access_log} set, a request writes one combined-format line to that file,
        and nothing through twisted.logger.
        """
        path = self.dir / "access.log"
        _, url = await self.configured(Settings(access_log=str(path)))
        await self.get(url + "/vm/query?vmid=7", user_agent="probe/1.0", referer="http://r/")
        [line] = path.read_text().splitlines()
        match = COMBINED.match(line)
        self.assertIsNotNone(match, line)
        self.assertEqual(
            match.group("uri", "referer", "agent"), ("/vm/query?vmid=7", "http://r/", "probe/1.0")
        )
        self.assertEqual(self.logged("/vm/query"), [])
        self.assertEqual(rotated(path), [])

    async def test_rotation_keeps_n_files(self):
        """
        Past C{access_log_max_bytes} the file is rotated, and only C{access_log_keep}
        rotated files are kept: the newest lines stay, the oldest go.
        """
        path = self.dir / "access.log"
        settings = Settings(access_log=str(path), access_log_max_bytes=300, access_log_keep=2)
        _, url = await self.configured(settings)
        for n in range(15):
            await self.get(f"{url}/hello?n={n}")
        self.assertEqual(rotated(path), ["access.log.1", "access.log.2"])
        kept = []
        for name in ("access.log.2", "access.log.1", "access.log"):
            lines = (self.dir / name).read_text().splitlines()
            self.assertTrue(lines, name)
            for line in lines:
                match = COMBINED.match(line)
                self.assertIsNotNone(match, line)
                kept.append(int(match.group("uri").rpartition("=")[2]))
        # In order, ending with the last request; the first ones were rotated away.
        self.assertEqual(kept, list(range(15 - len(kept), 15)))
        self.assertLess(len(kept), 15)

    async def test_restarted_site(self):
        """
        A site that stops listening closes its access log; started again, it logs again.
        """
        path = self.dir / "access.log"
        site = Site(Hello())
        site.noisy = False
        accesslog.configure(site, Settings(access_log=str(path)))
        endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await endpoint.listen(site)
        await self.get(f"http://127.0.0.1:{port.getHost().port}/first")
        await port.stopListening()
        self.assertIsNone(site._logFile)
        url = await self.serve(site)
        await self.get(url + "/second")
        uris = [COMBINED.match(x).group("uri") for x in path.read_text().splitlines()]
        self.assertEqual(uris, ["/first", "/second"])

    def test_unwritable(self):
        """
        An access log that cannot be opened fails when the site is configured, naming
        the file.
        """
        path = self.dir / "missing" / "access.log"
        e = self.assertRaises(
            OSError, accesslog.configure, Site(Hello()), Settings(access_log=str(path))
        )
        self.assertIn(str(path), str(e))


def twistd_options(*argv: str, max_bytes: int = 200, keep: int = 2) -> SimpleNamespace:
    """
    A plugin's parsed options as twistd hands them to makeService: its settings, and
    twistd's own options (parsed from C{argv}) as their parent.
    """
    twistd = ServerOptions()
    twistd.parseOptions(list(argv))
    settings = Settings(daemon_log_max_bytes=max_bytes, daemon_log_keep=keep)
    return SimpleNamespace(parent=twistd, settings=settings)


class CapInProcessTests(TestCase):
    """
    L{accesslog.cap_daemon_log} on a service that joins a twistd application here.
    """

    def setUp(self):
        self.dir = tmpdir(self)
        # Installing the SIGUSR1 rotation is part of what is tested: put it back after.
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def join(self, options) -> Application:
        """
        What twistd does with makeService's service: add it to a new application.
        """
        service = MultiService()
        accesslog.cap_daemon_log(service, options)
        application = Application("vorchd")
        service.setServiceParent(application)
        self.assertEqual(list(IServiceCollection(application)), [service])
        return application

    def test_capped(self):
        """
        With C{--logfile}, the application's log observer writes twistd's text format to
        that file, rotates it at C{daemon_log_max_bytes}, keeps C{daemon_log_keep}
        rotated files, and rotates it on SIGUSR1.
        """
        path = self.dir / "vorchd.log"
        application = self.join(twistd_options("--logfile", str(path)))
        observer = application.getComponent(ILogObserver)
        self.assertIsNotNone(observer)
        for n in range(40):
            observer({"log_format": "event {n} " + "x" * 40, "n": n, "log_time": time.time()})
        self.assertEqual(rotated(path), ["vorchd.log.1", "vorchd.log.2"])
        self.assertRegex(path.read_text(), r"(?m)^\S+ \[-#-\] event 39 x{40}$")
        self.assertNotEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_DFL)

    def test_elsewhere_untouched(self):
        """
        Logging to standard output, to syslog, through C{--logger}, or from options
        twistd did not parse, it leaves twistd's logging alone.
        """
        for argv in (
            ("--nodaemon", "--logfile=-"),
            ("--nodaemon",),
            ("--syslog",),
            ("--logger", "vorchd.logs.json_lines", "--logfile", str(self.dir / "x.log")),
        ):
            application = self.join(twistd_options(*argv))
            self.assertIsNone(application.getComponent(ILogObserver), argv)
        self.assertIsNone(
            self.join(SimpleNamespace(settings=Settings())).getComponent(ILogObserver)
        )
        self.assertEqual(list(self.dir.iterdir()), [])
        self.assertEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_DFL)


# A twistd plugin whose makeService calls cap_daemon_log as vorchd's does, and whose
# service logs LINES lines when it starts, then writes a marker file.
PROBE_PLUGIN = """
from twisted.application.service import ServiceMaker

probe = ServiceMaker("logcap-probe", "vorchd_logcap_probe", "test probe", "logcap-probe")
"""

PROBE_MODULE = """
from pathlib import Path

from twisted.application.service import MultiService, Service
from twisted.logger import Logger
from twisted.python import usage

from vorchd import accesslog
from vorchd.config import Settings


class Options(usage.Options):
    optParameters = [
        ["max-bytes", None, 1000, "", int],
        ["keep", None, 3, "", int],
        ["lines", None, 50, "", int],
        ["marker", None, None, ""],
    ]

    def postOptions(self):
        self.settings = Settings(
            daemon_log_max_bytes=self["max-bytes"], daemon_log_keep=self["keep"]
        )


class Chatty(Service):
    log = Logger()

    def __init__(self, lines, marker):
        self.lines, self.marker = lines, marker

    def startService(self):
        super().startService()
        for n in range(self.lines):
            self.log.info("probe line {n} " + "y" * 150, n=n)
        Path(self.marker).write_text("started")


def makeService(options):
    top = MultiService()
    Chatty(options["lines"], options["marker"]).setServiceParent(top)
    accesslog.cap_daemon_log(top, options)
    return top
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait(condition, what: str, deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


class CapDaemonTests(TestCase):
    """
    A real daemonized twistd with C{--logfile} and C{--pidfile}, running a plugin that
    calls L{accesslog.cap_daemon_log} in its makeService as vorchd's does.
    """

    timeout = 120

    def test_daemon_log_capped(self):
        """
        The log rotates at the plugin's size and keeps its count of rotated files, in
        twistd's format; SIGUSR1 rotates it; SIGTERM stops the daemon, which removes its
        pid file.
        """
        root = tmpdir(self)
        (root / "twisted" / "plugins").mkdir(parents=True)
        (root / "twisted" / "plugins" / "vorchd_logcap_probe_plugin.py").write_text(PROBE_PLUGIN)
        (root / "vorchd_logcap_probe.py").write_text(PROBE_MODULE)
        log, pidfile, marker = root / "d.log", root / "d.pid", root / "started"
        argv = [
            str(Path(sys.executable).parent / "twistd"),
            f"--pidfile={pidfile}",
            f"--logfile={log}",
            "logcap-probe",
            f"--marker={marker}",
            "--max-bytes=1000",
            "--keep=3",
            "--lines=60",
        ]
        env = {**os.environ, "PYTHONPATH": f"{root}:{REPO}"}
        done = subprocess.run(argv, cwd=str(root), env=env, capture_output=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr.decode() + done.stdout.decode())
        pid = int(pidfile.read_text())
        self.addCleanup(lambda: _gone(pid) or os.kill(pid, signal.SIGKILL))
        _wait(marker.exists, "the probe service started")
        # 60 lines of ~200 bytes: many rotations, three rotated files kept.
        self.assertEqual(rotated(log), ["d.log.1", "d.log.2", "d.log.3"])
        self.assertRegex(
            log.read_text(), r"(?m)^\S+ \[vorchd_logcap_probe\.Chatty#info\] probe line 59 y{150}$"
        )
        for name in rotated(log):
            size = (root / name).stat().st_size
            self.assertTrue(1000 <= size < 1000 + 400, (name, size))

        os.kill(pid, signal.SIGUSR1)
        _wait(lambda: "probe line 59" in (root / "d.log.1").read_text(), "SIGUSR1 rotated")
        self.assertEqual(rotated(log), ["d.log.1", "d.log.2", "d.log.3"])

        os.kill(pid, signal.SIGTERM)
        _wait(lambda: _gone(pid), "SIGTERM stopped the daemon", 30)
        self.assertFalse(pidfile.exists(), "the pidfile was left behind")
        self.assertIn("Main loop terminated", log.read_text())
        self.assertEqual(rotated(log), ["d.log.1", "d.log.2", "d.log.3"])
        for name in ("d.log", *rotated(log)):
            self.assertNotIn("Traceback", (root / name).read_text())
