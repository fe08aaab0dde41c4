"""
Logs an operator reads: one structured event per create and destroy (ids, PM, policy,
outcome, duration) through twisted.logger; twistd's --logfile and --pidfile with a
daemonized vorchd; and the same events as JSON through --logger vorchd.logs.json_lines.
Against real Redis and libvirt test-driver PMs.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

from twisted.logger import eventsFromJSONLogFile, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.clients import InMemoryClient
from tests.harness import (
    REPO,
    Daemon,
    get_json,
    listening_port,
    shared_redis,
    start_daemon,
    tmpdir,
    twistd_command,
    unique_prefix,
    wait_answering,
    write_fleet,
)

# One PM: flavor 3 (4 CPUs) does not fit.
SIZES = [(2, 4096)]


def vm_events(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e.get("event") == kind]


class EventTests(TestCase):
    """
    The events of creates and destroys, as a daemon in this process logs them.
    """

    async def setUp(self):
        self.daemon = await start_daemon(self, SIZES)
        self.client = InMemoryClient(self.daemon)
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    async def call(self, path: str):
        return (await self.client.call(path)).json

    async def test_created_and_destroyed(self):
        """
        A create logs one C{vm_create} event with its vmid, PM, policy, domain type and
        duration; a destroy one C{vm_destroy} event with its vmid, PM and duration.
        """
        vmid = (await self.call("/vm/create?name=a&instance_type=2&image_id=1"))["vmid"]
        self.assertGreater(vmid, 0)
        pmid = (await self.call(f"/vm/query?vmid={vmid}"))["pmid"]
        [created] = vm_events(self.events, "vm_create")
        self.assertEqual(
            {k: created[k] for k in ("outcome", "vmid", "pmid", "tid", "image_id", "policy")},
            {
                "outcome": "created",
                "vmid": vmid,
                "pmid": pmid,
                "tid": 2,
                "image_id": 1,
                "policy": "first-fit",
            },
        )
        self.assertIn(created["kind"], ("test", "kvm", "qemu"))
        self.assertIsInstance(created["duration"], float)
        self.assertGreater(created["duration"], 0)
        text = formatEvent(created)
        self.assertRegex(text, rf"^vm {vmid} created on PM {pmid} \(\w+\), flavor 2, image 1,")
        self.assertRegex(text, r"policy first-fit, in \d+\.\d{3} s$")

        self.assertEqual(await self.call(f"/vm/destroy?vmid={vmid}"), {"status": 1})
        [destroyed] = vm_events(self.events, "vm_destroy")
        self.assertEqual(
            {k: destroyed[k] for k in ("outcome", "vmid", "pmid")},
            {"outcome": "destroyed", "vmid": vmid, "pmid": pmid},
        )
        self.assertGreater(destroyed["duration"], 0)
        self.assertRegex(
            formatEvent(destroyed), rf"^vm {vmid} destroyed on PM {pmid} in \d+\.\d{{3}} s$"
        )

    async def test_refused(self):
        """
        A refused create or destroy logs one event too, saying why and how long it took;
        a create's refusal carries its reason class (as in /metrics).
        """
        answers = [
            await self.call("/vm/create?name=big&instance_type=3&image_id=1"),
            await self.call("/vm/create?name=odd&instance_type=99&image_id=1"),
            await self.call("/vm/destroy?vmid=12345"),
        ]
        self.assertEqual(answers, [{"vmid": 0}, {"vmid": 0}, {"status": 0}])
        no_room, unknown = vm_events(self.events, "vm_create")
        self.assertEqual(
            [(e["outcome"], e["reason_class"], e["vmid"]) for e in (no_room, unknown)],
            [("refused", "no_room", 0), ("refused", "bad_request", 0)],
        )
        self.assertEqual(no_room["policy"], "first-fit")
        self.assertIn("no room for cpu", no_room["reason"])
        self.assertIn("no instance_type 99", unknown["reason"])
        [not_destroyed] = vm_events(self.events, "vm_destroy")
        self.assertEqual(
            (not_destroyed["outcome"], not_destroyed["vmid"], not_destroyed["reason"]),
            ("refused", 12345, "no VM 12345"),
        )
        for event in (no_room, unknown, not_destroyed):
            self.assertGreaterEqual(event["duration"], 0)
            self.assertRegex(formatEvent(event), r" in \d+\.\d{3} s")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class TwistdLogTests(TestCase):
    """
    C{twistd vorchd} as a real process, logging as an operator sets it up.
    """

    timeout = 120

    def setUp(self):
        self.dir = tmpdir(self)
        self.daemon = Daemon(
            self.dir / "d", shared_redis().url, unique_prefix(), write_fleet(self.dir, SIZES)
        )

    def create_and_destroy(self, url: str) -> int:
        vmid = get_json(f"{url}/vm/create?name=logged&instance_type=1&image_id=1")["vmid"]
        self.assertGreater(vmid, 0)
        self.assertEqual(get_json(f"{url}/vm/destroy?vmid={vmid}"), {"status": 1})
        return vmid

    def test_daemon_logfile_pidfile(self):
        """
        Daemonized (no C{-n}), twistd writes the daemon's pid to C{--pidfile} and its
        log to C{--logfile}, where each create and destroy shows with its duration;
        SIGTERM to that pid stops it and removes the pidfile.
        """
        pidfile, logfile = self.dir / "vorchd.pid", self.dir / "vorchd.log"
        argv, env = twistd_command(
            self.daemon.ini, 0, (f"--pidfile={pidfile}", f"--logfile={logfile}")
        )
        # The parent returns once the daemon has started (or failed to).
        done = subprocess.run(argv, cwd=str(REPO), env=env, capture_output=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr.decode() + done.stdout.decode())
        pid = int(pidfile.read_text())
        self.addCleanup(lambda: _gone(pid) or os.kill(pid, signal.SIGKILL))
        url = f"http://127.0.0.1:{listening_port(logfile)}"
        wait_answering(url)
        vmid = self.create_and_destroy(url)
        log = logfile.read_text()
        self.assertRegex(log, rf"vm {vmid} created on PM 1 \(\w+\), .* in \d+\.\d{{3}} s")
        self.assertRegex(log, rf"vm {vmid} destroyed on PM 1 in \d+\.\d{{3}} s")
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 30
        while not _gone(pid) and time.monotonic() < end:
            time.sleep(0.1)
        self.assertTrue(_gone(pid), "SIGTERM did not stop the daemon")
        self.assertFalse(pidfile.exists(), "the pidfile was left behind")
        self.assertIn("Main loop terminated", logfile.read_text())
        self.assertNotIn("Traceback", logfile.read_text())

    def test_json_logger(self):
        """
        C{--logger vorchd.logs.json_lines} writes JSON records to C{$VORCHD_LOG_JSON}:
        the create and destroy events come back with their fields.
        """
        out = self.dir / "vorchd.json"
        argv, env = twistd_command(
            self.daemon.ini, 0, ("-n", "--pidfile=", "--logger=vorchd.logs.json_lines")
        )
        env = {**env, "VORCHD_LOG_JSON": str(out)}
        proc = subprocess.Popen(argv, cwd=str(REPO), env=env, stdout=subprocess.DEVNULL)
        self.addCleanup(lambda: proc.poll() is not None or (proc.kill(), proc.wait()))
        url = f"http://127.0.0.1:{listening_port(out, proc)}"
        wait_answering(url, proc)
        vmid = self.create_and_destroy(url)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        with open(out) as f:
            events = list(eventsFromJSONLogFile(io.StringIO(f.read())))
        [created] = vm_events(events, "vm_create")
        [destroyed] = vm_events(events, "vm_destroy")
        self.assertEqual(
            (created["outcome"], created["vmid"], created["pmid"], created["policy"]),
            ("created", vmid, 1, "first-fit"),
        )
        self.assertEqual((destroyed["outcome"], destroyed["vmid"]), ("destroyed", vmid))
        for event in (created, destroyed):
            self.assertGreater(event["duration"], 0)
        self.assertIn(f"vm {vmid} created on PM 1", formatEvent(created))
        self.assertTrue(Path(out).read_text().startswith("\x1e{"))
