"""
The twistd plugin: options parsed and the service tree built without sockets, and the
real C{twistd vorchd} process as an operator runs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import IServiceMaker
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.spread import pb
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

import twisted.plugins
from tests.harness import (
    FOREGROUND,
    REPO,
    Daemon,
    get_json,
    listening_port,
    shared_redis,
    tmpdir,
    twistd_command,
    unique_prefix,
    wait_answering,
    write_fleet,
)
from vorchd import tap
from vorchd.rest import SeedResource


def _options(daemon: Daemon, *extra: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(["--config", str(daemon.ini), *extra])
    return options


class OptionsTests(TestCase):
    """
    C{twistd vorchd} options and C{makeService}, with no sockets opened.
    """

    def setUp(self):
        self.dir = tmpdir(self)
        self.daemon = Daemon(self.dir, "redis://127.0.0.1:1/0", "p", ["test:///default"])

    def test_plugin_found(self):
        """
        twistd finds the vorchd plugin, and it points at vorchd.tap.
        """
        makers = {m.tapname: m for m in getPlugins(IServiceMaker, twisted.plugins)}
        self.assertIn("vorchd", makers)
        self.assertEqual(makers["vorchd"].module, "vorchd.tap")

    def test_plugin_dir_has_no_init(self):
        """
        twisted/plugins is a drop-in directory, not a package of ours.
        """
        self.assertFalse(FilePath(str(REPO / "twisted" / "plugins" / "__init__.py")).exists())

    def test_service_tree(self):
        """
        makeService builds the libvirt service and then the fleet service, with the
        ini's settings, and the command line overrides the ini.
        """
        options = _options(self.daemon, "--port", "8123", "--redis", "redis://10.1.2.3:7000/2")
        service = tap.makeService(options)
        self.assertEqual([s.name for s in service], ["hypervisors", "fleet", "rest", "admin"])
        admin = service.getServiceNamed("admin")
        # The admin port: an endpoint service too, on loopback by default (an ephemeral
        # port in the harness's ini), serving PB.
        self.assertIsInstance(admin, StreamServerEndpointService)
        self.assertIsInstance(admin.factory, pb.PBServerFactory)
        self.assertEqual((admin.endpoint._interface, admin.endpoint._port), ("127.0.0.1", 0))
        # The REST port: an endpoint service on the port the command line gave, on the
        # ini's interface, serving the seed API's site.
        rest = service.getServiceNamed("rest")
        self.assertIsInstance(rest, StreamServerEndpointService)
        self.assertIsInstance(rest.endpoint, TCP4ServerEndpoint)
        self.assertEqual((rest.endpoint._interface, rest.endpoint._port), ("127.0.0.1", 8123))
        self.assertIsInstance(rest.factory, Site)
        self.assertIsInstance(rest.factory.resource, SeedResource)
        # The periodic work: timers under the fleet service, at the ini's intervals.
        fleet = service.getServiceNamed("fleet")
        timers = {s.name: s for s in fleet}
        self.assertEqual(set(timers), {"heartbeat", "reconcile", "undo"})
        for timer in timers.values():
            self.assertIsInstance(timer, TimerService)
        self.assertEqual(timers["heartbeat"].step, fleet.settings.lease / 3)
        self.assertEqual(timers["reconcile"].step, fleet.settings.reconcile_interval)
        settings = fleet.settings
        self.assertEqual(settings.port, 8123)
        self.assertEqual(
            (settings.redis.host, settings.redis.port, settings.redis.db), ("10.1.2.3", 7000, 2)
        )
        self.assertEqual(settings.pm_file, str(self.dir / "pm_file"))
        self.assertEqual([e.uri for e in options.pms], ["test:///default"])

    def test_no_password_file_no_admin_port(self):
        """
        Without a password file the daemon runs but opens no admin port.
        """
        (self.dir / "admin.passwd").unlink()
        service = tap.makeService(_options(self.daemon))
        self.assertEqual([s.name for s in service], ["hypervisors", "fleet", "rest"])

    def test_readable_password_file_refused(self):
        """
        A password file that others may read stops start-up.
        """
        (self.dir / "admin.passwd").chmod(0o644)
        e = self.assertRaises(usage.UsageError, _options, self.daemon)
        self.assertIn("chmod 600", str(e))

    def test_environment_overrides_ini(self):
        """
        VORCHD_PORT and VORCHD_REDIS override the ini; the command line overrides both.
        """
        self.patch(
            os,
            "environ",
            {**os.environ, "VORCHD_PORT": "9001", "VORCHD_REDIS": "redis://127.0.0.9:6390/1"},
        )
        settings = _options(self.daemon).settings
        self.assertEqual(
            (settings.port, settings.redis.host, settings.redis.port), (9001, "127.0.0.9", 6390)
        )
        self.assertEqual(_options(self.daemon, "--port", "9002").settings.port, 9002)

    def test_malformed_file_names_file_and_line(self):
        """
        A malformed input file stops start-up with the file, the line and the reason.
        """
        (self.dir / "flavor_file").write_text('{"types": [\n {"cpu": 1, "ram": 5},\n]}')
        e = self.assertRaises(usage.UsageError, _options, self.daemon)
        self.assertIn(str(self.dir / "flavor_file"), str(e))
        self.assertIn("line 2", str(e))
        self.assertIn("disk", str(e))

    def test_unknown_policy(self):
        """
        An unknown allocation policy stops start-up and names the known ones.
        """
        daemon = Daemon(
            self.dir / "d",
            "redis://127.0.0.1:1/0",
            "p",
            ["test:///default"],
            allocation={"policy": "cleverest"},
        )
        e = self.assertRaises(usage.UsageError, _options, daemon)
        self.assertIn("cleverest", str(e))
        self.assertIn("first-fit", str(e))


class TwistdProcessTests(TestCase):
    """
    C{twistd -n vorchd} as a real process, the way install.sh runs it.
    """

    timeout = 120

    def setUp(self):
        self.dir = tmpdir(self)
        self.redis = shared_redis()
        self.prefix = unique_prefix()
        self.uris = write_fleet(self.dir, [(4, 4096), (2, 2048)])

    def _spawn(self, daemon: Daemon, log: Path | None = None) -> subprocess.Popen:
        # On port 0 the daemon takes a port the system gives it, and logs it to C{log}
        # (listening_port); else it logs to its stdout.
        options = FOREGROUND if log is None else ("-n", "--pidfile=", f"--logfile={log}")
        argv, env = twistd_command(daemon.ini, 0, options)
        proc = subprocess.Popen(
            argv, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )

        def stop():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            proc.stdout.close()

        self.addCleanup(stop)
        return proc

    def test_two_daemons_one_fleet(self):
        """
        Two daemons on two ports sharing one Redis serve one fleet: a VM created
        through one is answered by the other; SIGTERM stops each cleanly.
        """
        daemon = Daemon(self.dir / "d", self.redis.url, self.prefix, self.uris)
        logs = [self.dir / f"twistd{i}.log" for i in range(2)]
        procs = [self._spawn(daemon, log) for log in logs]
        ports = [listening_port(log, proc) for proc, log in zip(procs, logs, strict=True)]
        for proc, port in zip(procs, ports, strict=True):
            wait_answering(f"http://127.0.0.1:{port}", proc)
        a, b = (f"http://127.0.0.1:{p}" for p in ports)
        vmid = get_json(f"{a}/vm/create?name=shared&instance_type=1&image_id=1")["vmid"]
        self.assertGreater(vmid, 0)
        self.assertEqual(
            get_json(f"{b}/vm/query?vmid={vmid}"),
            {"vmid": vmid, "name": "shared", "instance_type": 1, "pmid": 1},
        )
        self.assertEqual(get_json(f"{b}/pm/query?pmid=1"), get_json(f"{a}/pm/query?pmid=1"))
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            # twistd stops the reactor, then exits by the signal that stopped it.
            self.assertIn(proc.wait(30), (0, -signal.SIGTERM))
            log = logs[procs.index(proc)].read_text() + proc.stdout.read().decode()
            self.assertIn("Main loop terminated", log)
            self.assertNotIn("Traceback", log)

    def test_malformed_file_exits_nonzero(self):
        """
        twistd with a malformed pm_file exits non-zero naming the file and line, and
        stores nothing.
        """
        daemon = Daemon(self.dir / "d", self.redis.url, self.prefix, self.uris)
        (daemon.dir / "pm_file").write_text("good-host\nbad host name\n")
        proc = self._spawn(daemon)
        self.assertNotEqual(proc.wait(60), 0)
        output = proc.stdout.read().decode()
        self.assertIn(f"{daemon.dir / 'pm_file'}, line 2", output)
        self.assertEqual(self.redis.keys(f"{self.prefix}:*"), [])
