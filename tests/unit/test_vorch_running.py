"""
vorch's commands on running VMs (vm info, stop, start, reboot, suspend, resume, resize,
migrate) against a stand-in daemon: a small HTTP server in a thread that answers each call
as it is told and records what vorch asked. What a real daemon answers is in
tests/integration/test_vorch_cli.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twisted.trial.unittest import SynchronousTestCase

from vorchd.cli.vorch import TREE, bash_completion, build_parser, main
from vorchd.cli.vorch_commands import ACTIONS
from vorchd.cli.vorch_format import format_info

INFO = {
    "vmid": 7,
    "name": "web 1",
    "instance_type": 2,
    "pmid": 3,
    "image_id": 1,
    "state": "running",
    "domain": "vorchd-ab12-7",
    "mac": "02:aa:bb:cc:dd:ee",
    "ips": [],
}
MAC = INFO["mac"]


class StandIn:
    """
    An HTTP server on 127.0.0.1 answering GET C{path} with C{answers[path]}: a JSON value,
    or a (JSON value, reason) pair whose reason goes in X-Vorchd-Reason; anything else with
    0 and "no such call". C{asked} records each request as (path, query arguments).
    """

    def __init__(self):
        self.answers: dict[str, object] = {}
        self.asked: list[tuple[str, dict[str, str]]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                stand_in.asked.append((url.path, dict(urllib.parse.parse_qsl(url.query))))
                answer = stand_in.answers.get(url.path, (0, "no such call"))
                value, reason = answer if isinstance(answer, tuple) else (answer, None)
                body = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if reason:
                    self.send_header("X-Vorchd-Reason", reason)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class RunningCommandTests(SynchronousTestCase):
    """
    The commands, run through vorch's main against the stand-in.
    """

    def setUp(self):
        self.daemon = StandIn()
        self.addCleanup(self.daemon.stop)

    def vorch(self, *args: str) -> tuple[int, str, str]:
        """
        Run vorch's main with C{args} against the stand-in: its exit status, stdout and
        stderr.
        """
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        code = main(["--url", self.daemon.url, *args])
        return code, out.getvalue(), err.getvalue()

    def test_info(self):
        """
        vm info asks /vm/info and prints its nine keys as a table (no address yet: -), or
        the daemon's object with --json.
        """
        self.daemon.answers["/vm/info"] = INFO
        code, out, err = self.vorch("vm", "info", "7")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(self.daemon.asked, [("/vm/info", {"vmid": "7"})])
        header, row = out.splitlines()
        self.assertEqual(
            header.split(),
            ["VMID", "NAME", "TYPE", "PM", "IMAGE", "STATE", "DOMAIN", "MAC", "ADDRESS"],
        )
        self.assertEqual(
            row.split(),
            ["7", "web", "1", "2", "3", "1", "running", "vorchd-ab12-7", MAC, "-"],
        )
        code, out, err = self.vorch("vm", "info", "7", "--json")
        self.assertEqual((code, json.loads(out), err), (0, INFO, ""))

    def test_info_failed(self):
        """
        vm info of a VM the daemon does not have exits 1 with its reason, on one line.
        """
        self.daemon.answers["/vm/info"] = ({"status": 0}, "no VM 7")
        self.assertEqual(
            self.vorch("vm", "info", "7"), (1, "", "vorch: cannot show vm 7: no VM 7\n")
        )

    def test_actions(self):
        """
        Each action asks /vm/<action> with the vmid, and says what it did: a line, or the
        daemon's {"status": 1} with --json.
        """
        for action, (_, _, done) in ACTIONS.items():
            self.daemon.asked.clear()
            self.daemon.answers[f"/vm/{action}"] = {"status": 1}
            self.assertEqual(self.vorch("vm", action, "12"), (0, f"{done} vm 12\n", ""))
            self.assertEqual(self.daemon.asked, [(f"/vm/{action}", {"vmid": "12"})])
            code, out, _ = self.vorch("vm", action, "12", "--json")
            self.assertEqual((code, json.loads(out)), (0, {"status": 1}))
        self.assertEqual(set(ACTIONS), {"stop", "start", "reboot", "suspend", "resume"})

    def test_actions_failed(self):
        """
        A refused action exits 1 with one line carrying the daemon's reason; an answer
        without one says what the daemon answered; a call the daemon does not know (an
        older vorchd answering 0) fails the same way.
        """
        self.daemon.answers["/vm/stop"] = ({"status": 0}, "VM 12 is not running (shutoff)")
        self.assertEqual(
            self.vorch("vm", "stop", "12"),
            (1, "", "vorch: cannot stop vm 12: VM 12 is not running (shutoff)\n"),
        )
        self.daemon.answers["/vm/reboot"] = {"status": 0}
        code, out, err = self.vorch("vm", "reboot", "12", "--json")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(
            err,
            'vorch: cannot reboot vm 12: the daemon answered {"status": 0} and gave no reason\n',
        )
        code, out, err = self.vorch("vm", "suspend", "12")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, "vorch: cannot suspend vm 12: no such call\n")

    def test_resize(self):
        """
        vm resize VMID TID asks /vm/resize with both, and says what it did or why not.
        """
        self.daemon.answers["/vm/resize"] = {"status": 1}
        self.assertEqual(self.vorch("vm", "resize", "7", "2"), (0, "resized vm 7 to type 2\n", ""))
        self.assertEqual(self.daemon.asked, [("/vm/resize", {"vmid": "7", "instance_type": "2"})])
        self.daemon.answers["/vm/resize"] = ({"status": 0}, "no instance type 9")
        self.assertEqual(
            self.vorch("vm", "resize", "7", "9"),
            (1, "", "vorch: cannot resize vm 7 to type 9: no instance type 9\n"),
        )

    def test_migrate(self):
        """
        vm migrate VMID PMID asks /vm/migrate with both; without PMID, with the vmid
        alone (the policy picks), and then says where the VM went, from vm/query.
        """
        self.daemon.answers["/vm/migrate"] = {"status": 1}
        self.daemon.answers["/vm/query"] = {"vmid": 7, "name": "a", "instance_type": 1, "pmid": 4}
        self.assertEqual(self.vorch("vm", "migrate", "7", "4"), (0, "migrated vm 7 to pm 4\n", ""))
        self.assertEqual(self.daemon.asked[0], ("/vm/migrate", {"vmid": "7", "pmid": "4"}))
        self.daemon.asked.clear()
        self.assertEqual(self.vorch("vm", "migrate", "7"), (0, "migrated vm 7 to pm 4\n", ""))
        self.assertEqual(
            self.daemon.asked, [("/vm/migrate", {"vmid": "7"}), ("/vm/query", {"vmid": "7"})]
        )
        self.daemon.asked.clear()
        code, out, _ = self.vorch("vm", "migrate", "7", "--json")
        self.assertEqual((code, json.loads(out)), (0, {"status": 1}))
        self.assertEqual(self.daemon.asked, [("/vm/migrate", {"vmid": "7"})])
        self.daemon.answers["/vm/migrate"] = ({"status": 0}, "no PM 9")
        self.assertEqual(
            self.vorch("vm", "migrate", "7", "9"),
            (1, "", "vorch: cannot migrate vm 7 to pm 9: no PM 9\n"),
        )
        self.daemon.answers["/vm/migrate"] = ({"status": 0}, "no PM has room")
        self.assertEqual(
            self.vorch("vm", "migrate", "7"),
            (1, "", "vorch: cannot migrate vm 7: no PM has room\n"),
        )

    def test_not_json(self):
        """
        An answer in a form vorch does not know is one line and exit status 1, never a
        traceback.
        """
        self.daemon.answers["/vm/info"] = {"vmid": 7}
        code, out, err = self.vorch("vm", "info", "7")
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(err.startswith("vorch: vorchd at "), err)
        self.assertNotIn("Traceback", err)

    def test_usage(self):
        """
        A missing or non-integer VMID, TID or PMID, or an extra argument, is wrong usage:
        exit status 2, and nothing asked.
        """
        for argv in (
            ["vm", "stop"],
            ["vm", "start", "x"],
            ["vm", "reboot", "1", "2"],
            ["vm", "info"],
            ["vm", "resize", "1"],
            ["vm", "resize", "1", "two"],
            ["vm", "migrate"],
            ["vm", "migrate", "1", "x"],
            ["vm", "migrate", "1", "2", "3"],
        ):
            with contextlib.redirect_stderr(io.StringIO()):
                code, out, _ = self.vorch(*argv)
            self.assertEqual((code, out), (2, ""), argv)
        self.assertEqual(self.daemon.asked, [])


class RunningParserTests(SynchronousTestCase):
    """
    The new commands in the parser, completion and formatters.
    """

    def test_parsed(self):
        """
        The commands take their ids as integers; migrate's PMID is optional.
        """
        parser = build_parser()
        options = parser.parse_args(["vm", "migrate", "3"])
        self.assertEqual((options.vmid, options.pmid), (3, None))
        options = parser.parse_args(["vm", "migrate", "3", "4", "--json"])
        self.assertEqual((options.vmid, options.pmid, options.json), (3, 4, True))
        options = parser.parse_args(["vm", "resize", "3", "2"])
        self.assertEqual((options.vmid, options.type), (3, 2))
        for action in ACTIONS:
            self.assertEqual(parser.parse_args(["vm", action, "5"]).vmid, 5)

    def test_completion(self):
        """
        Completion offers every new command under vm.
        """
        script = bash_completion()
        for command in ("info", *ACTIONS, "resize", "migrate"):
            self.assertIn(command, TREE["vm"])
            self.assertIn(f'"vm {command}"', script)

    def test_format_info(self):
        """
        vm/info answers as a table, names escaped so a row stays one line, the guest's
        addresses comma-separated.
        """
        ips = ["10.0.0.5", "fd00::5"]
        text = format_info([{**INFO, "name": "a\nb", "state": "paused", "ips": ips}])
        self.assertEqual(
            text.splitlines(),
            [
                "VMID  NAME  TYPE  PM  IMAGE  STATE   DOMAIN         MAC" + " " * 16 + "ADDRESS",
                f"   7  a\\nb     2   3      1  paused  vorchd-ab12-7  {MAC}  10.0.0.5,fd00::5",
            ],
        )
