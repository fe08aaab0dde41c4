"""
vorch: its pure parts (formatters, parser, completion, progress) in memory, and the real
executable run against a real daemon (real Redis, test-driver fleet).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

from twisted.internet import defer, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.clients import LoopbackClient
from tests.harness import refused_port, start_daemon, tmpdir
from vorchd.cli.vorch import TREE, bash_completion, build_parser, main
from vorchd.cli.vorch_events import ServerEvent, event_json, format_event, parse_event_stream
from vorchd.cli.vorch_format import (
    Progress,
    cell,
    format_images,
    format_pms,
    format_table,
    format_types,
    format_vmids,
    format_vms,
)

EXE = str(Path(sys.executable).parent / "vorch")

SIZES = [(2, 2048), (4, 4096), (8, 8192)]

PM = {
    "pmid": 1,
    "capacity": {"cpu": 4, "ram": 4096, "disk": 160},
    "free": {"cpu": 2.5, "ram": 2048, "disk": 157},
    "vms": 1,
}


class NotVorchd(Resource):
    """
    A web server that answers every GET with a page of HTML.
    """

    isLeaf = True

    def render_GET(self, request):
        return b"<html>hello</html>"


class Watching(protocol.ProcessProtocol):
    """
    A running C{vorch watch}: its output as it comes, and its exit status (C{ended}).
    """

    def __init__(self):
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred[int] = defer.Deferred()
        self._waiting: list[tuple[object, defer.Deferred]] = []

    def lines(self) -> list[str]:
        return self.out.decode("utf-8").splitlines()

    def until(self, predicate, timeout: float = 30) -> defer.Deferred:
        """
        Fire with the lines printed so far once C{predicate(lines)} holds (fail if the
        process ends first, or after C{timeout} seconds).
        """
        if predicate(self.lines()):
            return defer.succeed(self.lines())
        d = defer.Deferred()
        self._waiting.append((predicate, d))
        return d.addTimeout(timeout, reactor)

    def outReceived(self, data: bytes) -> None:
        self.out += data
        for waiting in list(self._waiting):
            predicate, d = waiting
            if predicate(self.lines()):
                self._waiting.remove(waiting)
                d.callback(self.lines())

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:
        for _, d in self._waiting:
            d.errback(AssertionError(f"vorch ended first: {self.out!r} {self.err!r}"))
        self._waiting = []
        self.ended.callback(reason.value.exitCode)


class FormatterTests(SynchronousTestCase):
    """
    The pure formatters from answers to tables.
    """

    def test_table_aligns(self):
        """
        Columns sit two spaces apart, numbers right-aligned and text left-aligned.
        """
        text = format_table(("ID", "NAME"), [(1, "a"), (100, "long name")])
        self.assertEqual(text, "ID   NAME\n  1  a\n100  long name\n")

    def test_empty_table(self):
        """
        A table without rows is its header line.
        """
        self.assertEqual(format_table(("VMID",), []), "VMID\n")

    def test_cell(self):
        """
        Whole floats lose their point, others keep two places, control characters are
        escaped so a row stays on one line.
        """
        self.assertEqual([cell(2.0), cell(2.5), cell(1 / 3), cell(7)], ["2", "2.5", "0.33", "7"])
        self.assertEqual(cell("a\nb\tc"), "a\\nb\\tc")
        self.assertEqual(cell("héllo <&>"), "héllo <&>")

    def test_types(self):
        """
        vm/types as TID, CPU, RAM MiB, DISK GiB.
        """
        answer = {"types": [{"tid": 1, "cpu": 1, "ram": 512, "disk": 1}]}
        self.assertEqual(
            format_types(answer).splitlines(),
            ["TID  CPU  RAM MiB  DISK GiB", "  1    1      512         1"],
        )

    def test_images(self):
        """
        image/list as ID and NAME.
        """
        answer = {"images": [{"id": 1, "name": "cirros"}]}
        self.assertEqual(format_images(answer), "ID  NAME\n 1  cirros\n")

    def test_pms(self):
        """
        pm/query answers as one row each: capacity and free of each resource, then VMs.
        """
        lines = format_pms([PM]).splitlines()
        self.assertEqual(lines[0].split("  ")[0], "PMID")
        self.assertEqual(lines[1].split(), ["1", "4", "2.5", "4096", "2048", "160", "157", "1"])

    def test_vms(self):
        """
        vm/query answers as VMID, NAME, TYPE, PM.
        """
        vm = {"vmid": 38201, "name": "web 1", "instance_type": 3, "pmid": 2}
        self.assertEqual(
            format_vms([vm]).splitlines(), ["VMID   NAME   TYPE  PM", "38201  web 1     3   2"]
        )

    def test_vmids(self):
        """
        pm/listvms's vmids as one column.
        """
        self.assertEqual(format_vmids([3, 12]), "VMID\n   3\n  12\n")


class EventTests(SynchronousTestCase):
    """
    Reading a text/event-stream, and events as lines, in memory.
    """

    def test_parse(self):
        """
        A blank line ends an event; comments (keepalives) are skipped; data lines join
        with newlines; one space after the colon is dropped; an id stays until another
        one; an event without data is none; line ends may be CRLF.
        """
        stream = [
            "event: hello",
            'data: {"seq": 4}',
            "",
            ": keepalive",
            "",
            "id: 5",
            "event: vm_gone",
            'data:{"vmid": 7,',
            'data:  "pmid": 1}',
            "",
            "event: pm",
            "",
            "id: 6\r\n",
            "data: x\r\n",
            "retry: 100",
            "\r\n",
        ]
        self.assertEqual(
            list(parse_event_stream(stream)),
            [
                ServerEvent("hello", None, '{"seq": 4}'),
                ServerEvent("vm_gone", "5", '{"vmid": 7,\n "pmid": 1}'),
                ServerEvent("message", "6", "x"),
            ],
        )

    def test_json(self):
        """
        --json shows an event as its name, its id (a number where it is one) and its
        data (JSON, or the text when it is not).
        """
        self.assertEqual(
            event_json(ServerEvent("vm_gone", "12", '{"vmid": 7, "pmid": 1}')),
            {"event": "vm_gone", "id": 12, "data": {"vmid": 7, "pmid": 1}},
        )
        self.assertEqual(
            event_json(ServerEvent("odd", None, "not json")),
            {"event": "odd", "id": None, "data": "not json"},
        )

    def test_lines(self):
        """
        Each event is one line: the time, its id, and what changed; a VM's name is
        quoted and escaped, so that it stays on its line; an event vorch does not know,
        or cannot read, is shown as it came.
        """
        when = time.mktime((2024, 1, 2, 3, 4, 5, 0, 0, -1))
        vm = {"vmid": 7, "name": 'a "b"\nc\x9b', "instance_type": 1, "pmid": 2}
        events = {
            "hello": {"seq": 4},
            "pm": {**PM, "state": "drained", "vmids": [7]},
            "vm": {**vm, "image_id": 1, "state": "missing"},
            "vm_gone": {"vmid": 7, "pmid": 2},
            "catalog": {"types": [{"tid": 1}, {"tid": 2}], "images": [{"id": 1, "name": "c"}]},
            "settings": {"policy": "best-fit", "ratios": {"cpu": 4.0, "ram": 1.5}},
            "resync": {"seq": 40},
            "novel": {"x": 1},
            "volume": {"volumeid": 3, "name": "d\n", "size": 10, "status": "attached", "vmid": 7},
            "volume_gone": {"volumeid": 3},
        }
        lines = [
            format_event(ServerEvent(name, "9", json.dumps(data)), when)
            for name, data in events.items()
        ]
        lines.append(format_event(ServerEvent("pm", "10", '{"pmid": 1}'), when))
        self.assertEqual(
            lines,
            [
                "03:04:05 [9] hello: following the fleet's changes from seq 4",
                "03:04:05 [9] pm 1 drained: free cpu 2.5/4, ram 2048/4096 MiB,"
                " disk 157/160 GiB; 1 vm",
                '03:04:05 [9] vm 7 missing on pm 2: "a \\"b\\"\\nc\\x9b", type 1, image 1',
                "03:04:05 [9] vm 7 gone from pm 2",
                "03:04:05 [9] catalog: types 1, 2; images c",
                "03:04:05 [9] settings: policy best-fit, ratios cpu 4, ram 1.5",
                "03:04:05 [9] resync: the daemon took a fresh snapshot at seq 40",
                '03:04:05 [9] novel: {"x": 1}',
                '03:04:05 [9] volume 3 attached to vm 7: "d\\n", 10 GiB',
                "03:04:05 [9] volume 3 gone",
                '03:04:05 [10] pm: {"pmid": 1}',
            ],
        )


class CommandLineTests(SynchronousTestCase):
    """
    The parser, completion and progress indicator, in memory.
    """

    def test_options_before_or_after_the_command(self):
        """
        --json, --url and --timeout are taken before or after the command.
        """
        parser = build_parser()
        before = parser.parse_args(["--json", "--url", "http://h:1", "vm", "show", "3"])
        after = parser.parse_args(["vm", "show", "3", "--json", "--url", "http://h:1"])
        for options in (before, after):
            self.assertEqual((options.json, options.url, options.vmid), (True, "http://h:1", 3))
            self.assertEqual(options.timeout, 600)
        plain = parser.parse_args(["types"])
        self.assertEqual((plain.json, plain.url), (False, None))

    def test_usage_errors(self):
        """
        Wrong usage makes main answer 2; --help answers 0.
        """
        self.patch(sys, "stderr", io.StringIO())
        self.patch(sys, "stdout", io.StringIO())
        for argv in (
            [],
            ["vm"],
            ["vm", "show", "x"],
            ["vm", "create", "a", "--type", "1"],
            ["--url", "ftp://x", "types"],
            ["--timeout", "0", "types"],
            ["completion", "zsh"],
            ["watch", "--count", "0"],
            ["watch", "--count", "x"],
            ["watch", "more"],
        ):
            self.assertEqual(main(argv), 2, argv)
        self.assertEqual(main(["--help"]), 0)

    def test_completion_covers_the_tree(self):
        """
        The bash script registers _vorch and names every group, command and option.
        """
        script = bash_completion()
        self.assertIn("complete -F _vorch vorch", script)
        for group, commands in TREE.items():
            self.assertIn(group, script)
            for command, options in commands.items():
                self.assertIn(f'"{group} {command}"', script)
                for option in options:
                    self.assertIn(option, script)

    def test_progress_only_on_a_terminal(self):
        """
        The spinner writes elapsed seconds to a terminal, and nothing to anything else.
        """

        class TTY(io.StringIO):
            def isatty(self):
                return True

        tty, plain = TTY(), io.StringIO()
        with Progress("creating", tty, interval=0.01):
            with Progress("creating", plain, interval=0.01):
                time.sleep(0.1)
        self.assertIn("creating 0s", tty.getvalue())
        self.assertTrue(tty.getvalue().endswith("\r\033[K"))
        self.assertEqual(plain.getvalue(), "")


class VorchExecutableTests(TestCase):
    """
    The installed vorch against a real daemon.
    """

    async def setUp(self):
        self.dir = tmpdir(self)
        self.daemon = await start_daemon(self, SIZES)
        self.rest = LoopbackClient(self.daemon)
        self.addCleanup(self.rest.close)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "VORCH_URL"}
        return {**env, **extra}

    async def vorch(self, *args: str, url: str | None = None, env=None) -> tuple[str, str, int]:
        """
        Run vorch to its end without blocking the reactor (the daemon is in it).
        """
        argv = ["--url", url or self.daemon.url] if env is None else []
        out, err, code = await getProcessOutputAndValue(
            EXE, [*argv, *args], env if env is not None else self.env()
        )
        return out.decode(), err.decode(), code

    async def ok(self, *args: str, **kw) -> str:
        out, err, code = await self.vorch(*args, **kw)
        self.assertEqual((code, err), (0, ""), out)
        return out

    async def ok_json(self, *args: str):
        return json.loads(await self.ok(*args, "--json"))

    async def failed(self, *args: str, code: int = 1, **kw) -> str:
        out, err, status = await self.vorch(*args, **kw)
        self.assertEqual((status, out), (code, ""), err)
        self.assertNotIn("Traceback", err)
        if code == 1:
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertTrue(err.startswith("vorch: "), err)
        return err

    async def rest_json(self, path: str):
        return (await self.rest.call(path)).json

    def watch(self, *args: str) -> Watching:
        """
        Start C{vorch watch} with C{args} against the daemon; killed when the test ends if
        it is still running.
        """
        watching = Watching()
        process = reactor.spawnProcess(
            watching, EXE, [EXE, "--url", self.daemon.url, "watch", *args], env=self.env()
        )

        def stop():
            if process.pid is not None:
                process.signalProcess("KILL")
                return watching.ended

        self.addCleanup(stop)
        return watching

    async def test_types_and_images(self):
        """
        types and images: tables of the daemon's answers, and --json equal to them.
        """
        self.assertEqual(await self.ok_json("types"), await self.rest_json("/vm/types"))
        self.assertEqual(await self.ok_json("images"), await self.rest_json("/image/list"))
        types = await self.ok("types")
        self.assertEqual(
            types.splitlines()[0].split(), ["TID", "CPU", "RAM", "MiB", "DISK", "GiB"]
        )
        self.assertEqual(types.splitlines()[1].split(), ["1", "1", "512", "1"])
        self.assertEqual((await self.ok("images")).splitlines()[1].split(), ["1", "hello"])

    async def test_pm_commands(self):
        """
        pm list, pm show and pm vms, as tables and as the daemon's JSON.
        """
        pms = [await self.rest_json(f"/pm/query?pmid={i}") for i in (1, 2, 3)]
        self.assertEqual(await self.ok_json("pm", "list"), pms)
        self.assertEqual(await self.ok_json("pm", "show", "2"), pms[1])
        self.assertEqual(await self.ok_json("pm", "vms", "2"), {"vmids": []})
        rows = (await self.ok("pm", "list")).splitlines()
        self.assertEqual(len(rows), 4)
        self.assertEqual(rows[3].split()[:5], ["3", "8", "8", "8192", "8192"])
        self.assertEqual(
            (await self.ok("pm", "show", "1")).splitlines()[1].split()[:3], ["1", "2", "2"]
        )
        self.assertEqual(await self.ok("pm", "vms", "1"), "VMID\n")

    async def test_round_trip(self):
        """
        vm create -> show (with the VM's MAC and IP addresses) -> list -> pm vms -> destroy,
        each agreeing with the REST API.
        """
        created = await self.ok("vm", "create", "web <1> & é", "--type", "1", "--image", "1")
        header, row = created.splitlines()
        self.assertEqual(header.split(), ["VMID", "NAME", "TYPE", "PM"])
        vmid = int(row.split()[0])
        vm = await self.rest_json(f"/vm/query?vmid={vmid}")
        self.assertEqual(vm["name"], "web <1> & é")
        self.assertIn("web <1> & é", row)

        self.assertEqual(await self.ok_json("vm", "show", str(vmid)), vm)
        header, shown = (await self.ok("vm", "show", str(vmid))).splitlines()
        info = await self.rest_json(f"/vm/info?vmid={vmid}")
        self.assertEqual(header.split(), ["VMID", "NAME", "TYPE", "PM", "MAC", "ADDRESS"])
        self.assertEqual(shown[: len(row)], row)
        self.assertEqual(shown[len(row) :].split(), [info["mac"], ",".join(info["ips"]) or "-"])
        self.assertEqual(await self.ok_json("vm", "list"), [vm])
        self.assertEqual(await self.ok("vm", "list"), created)
        self.assertEqual(await self.ok_json("vm", "list", "--pm", str(vm["pmid"])), [vm])
        other = 1 if vm["pmid"] != 1 else 2
        self.assertEqual(await self.ok_json("vm", "list", "--pm", str(other)), [])
        self.assertEqual(
            await self.ok_json("pm", "vms", str(vm["pmid"])),
            await self.rest_json(f"/pm/listvms?pmid={vm['pmid']}"),
        )
        self.assertIn(str(vmid), await self.ok("pm", "vms", str(vm["pmid"])))
        self.assertEqual((await self.ok_json("pm", "show", str(vm["pmid"])))["vms"], 1)

        self.assertEqual(await self.ok("vm", "destroy", str(vmid)), f"destroyed vm {vmid}\n")
        self.assertEqual(await self.rest_json(f"/vm/query?vmid={vmid}"), 0)
        self.assertEqual(await self.ok_json("vm", "list"), [])

    async def test_create_json_and_destroy_json(self):
        """
        vm create --json prints the daemon's {"vmid": N}; vm destroy --json {"status": 1}.
        """
        created = await self.ok_json("vm", "create", "a", "--type", "2", "--image", "1")
        self.assertEqual(list(created), ["vmid"])
        self.assertEqual((await self.rest_json(f"/vm/query?vmid={created['vmid']}"))["name"], "a")
        self.assertEqual(await self.ok_json("vm", "destroy", str(created["vmid"])), {"status": 1})

    async def test_unknown_vmid(self):
        """
        show and destroy of an unknown vmid exit 1 with the daemon's reason.
        """
        answer = await self.rest.call("/vm/query?vmid=999999")
        err = await self.failed("vm", "show", "999999")
        self.assertTrue(answer.reason)
        self.assertEqual(err, f"vorch: cannot show vm 999999: {answer.reason}\n")
        answer = await self.rest.call("/vm/destroy?vmid=999999")
        err = await self.failed("vm", "destroy", "999999", "--json")
        self.assertTrue(answer.reason)
        self.assertEqual(err, f"vorch: cannot destroy vm 999999: {answer.reason}\n")

    async def test_running_vm_commands(self):
        """
        vm info, stop, start, suspend, resume, reboot, resize and migrate (of a stopped
        VM, which libvirt's test driver can move) against the daemon: each says what it
        did, and the REST API agrees.
        """
        created = await self.ok_json("vm", "create", "runner", "--type", "1", "--image", "1")
        vmid = str(created["vmid"])
        info = await self.rest_json(f"/vm/info?vmid={vmid}")
        self.assertEqual(await self.ok_json("vm", "info", vmid), info)
        header, row = (await self.ok("vm", "info", vmid)).splitlines()
        self.assertEqual(
            header.split(),
            ["VMID", "NAME", "TYPE", "PM", "IMAGE", "STATE", "DOMAIN", "MAC", "ADDRESS"],
        )
        self.assertEqual(row.split()[:6], [vmid, "runner", "1", str(info["pmid"]), "1", "running"])
        self.assertEqual(row.split()[7:], [info["mac"], ",".join(info["ips"]) or "-"])

        async def state() -> str:
            return (await self.rest_json(f"/vm/info?vmid={vmid}"))["state"]

        self.assertEqual(await self.ok("vm", "stop", vmid), f"stopped vm {vmid}\n")
        self.assertEqual(await state(), "shutoff")
        err = await self.failed("vm", "stop", vmid)
        self.assertTrue(err.startswith(f"vorch: cannot stop vm {vmid}: "), err)
        self.assertEqual(await self.ok_json("vm", "start", vmid), {"status": 1})
        self.assertEqual(await state(), "running")
        self.assertEqual(await self.ok("vm", "suspend", vmid), f"suspended vm {vmid}\n")
        self.assertEqual(await state(), "paused")
        self.assertEqual(await self.ok("vm", "resume", vmid), f"resumed vm {vmid}\n")
        self.assertEqual(await self.ok("vm", "reboot", vmid), f"rebooted vm {vmid}\n")
        self.assertEqual(await state(), "running")

        self.assertEqual(
            await self.ok("vm", "resize", vmid, "2"), f"resized vm {vmid} to type 2\n"
        )
        self.assertEqual((await self.rest_json(f"/vm/query?vmid={vmid}"))["instance_type"], 2)
        # libvirt's test driver moves a stopped VM only (cold).
        self.assertEqual(await self.ok("vm", "stop", vmid), f"stopped vm {vmid}\n")
        target = 3 if info["pmid"] != 3 else 2
        self.assertEqual(
            await self.ok("vm", "migrate", vmid, str(target)),
            f"migrated vm {vmid} to pm {target}\n",
        )
        self.assertEqual((await self.rest_json(f"/vm/query?vmid={vmid}"))["pmid"], target)
        out = await self.ok("vm", "migrate", vmid)
        moved = (await self.rest_json(f"/vm/query?vmid={vmid}"))["pmid"]
        self.assertEqual(out, f"migrated vm {vmid} to pm {moved}\n")
        self.assertNotEqual(moved, target)
        self.assertEqual(await self.ok("vm", "start", vmid), f"started vm {vmid}\n")
        self.assertEqual(await state(), "running")
        self.assertEqual(await self.ok("vm", "destroy", vmid), f"destroyed vm {vmid}\n")

    async def test_running_vm_failures(self):
        """
        The commands on running VMs exit 1 with one line carrying the daemon's reason for
        an unknown VM, type or PM and a non-positive id; wrong usage exits 2.
        """
        created = await self.ok_json("vm", "create", "f", "--type", "1", "--image", "1")
        vmid = created["vmid"]
        for argv, path, what in (
            (["vm", "info", "999999"], "/vm/info?vmid=999999", "show vm 999999"),
            (["vm", "stop", "999999"], "/vm/stop?vmid=999999", "stop vm 999999"),
            (["vm", "resume", "0"], "/vm/resume?vmid=0", "resume vm 0"),
            (
                ["vm", "resize", str(vmid), "99"],
                f"/vm/resize?vmid={vmid}&instance_type=99",
                f"resize vm {vmid} to type 99",
            ),
            (
                ["vm", "migrate", str(vmid), "42"],
                f"/vm/migrate?vmid={vmid}&pmid=42",
                f"migrate vm {vmid} to pm 42",
            ),
        ):
            answer = await self.rest.call(path)
            self.assertEqual(answer.json, 0 if "info" in path else {"status": 0}, path)
            self.assertTrue(answer.reason, path)
            self.assertEqual(await self.failed(*argv), f"vorch: cannot {what}: {answer.reason}\n")
        self.assertIn("VMID", await self.failed("vm", "stop", code=2))
        self.assertIn("TID", await self.failed("vm", "resize", str(vmid), code=2))
        self.assertIn("not an integer id", await self.failed("vm", "migrate", "1", "x", code=2))
        vm = await self.rest_json(f"/vm/query?vmid={vmid}")
        self.assertEqual((vm["instance_type"], vm["name"]), (1, "f"))

    async def test_volume_commands(self):
        """
        volume create, show, list, attach, detach and destroy against the daemon: each
        says what it did, the REST API agrees, and a refusal exits 1 with the daemon's
        reason.
        """
        vmid = str(
            (await self.ok_json("vm", "create", "v", "--type", "1", "--image", "1"))["vmid"]
        )
        created = await self.ok("volume", "create", "my data é", "--size", "3")
        header, row = created.splitlines()
        self.assertEqual(header.split(), ["VOLUMEID", "NAME", "SIZE", "GiB", "STATUS", "VM"])
        volumeid = row.split()[0]
        volume = await self.rest_json(f"/volume/query?volumeid={volumeid}")
        self.assertEqual((volume["name"], volume["size"]), ("my data é", 3))
        self.assertEqual(await self.ok_json("volume", "show", volumeid), volume)
        self.assertEqual(await self.ok_json("volume", "list"), [volume])
        self.assertEqual(
            await self.ok("volume", "attach", volumeid, vmid),
            f"attached volume {volumeid} to vm {vmid}\n",
        )
        attached = await self.rest_json(f"/volume/query?volumeid={volumeid}")
        self.assertEqual((attached["status"], attached["vmid"]), ("attached", int(vmid)))
        self.assertEqual(
            (await self.ok("volume", "show", volumeid)).split()[-2:], ["attached", vmid]
        )
        answer = await self.rest.call(f"/volume/destroy?volumeid={volumeid}")
        self.assertEqual(
            await self.failed("volume", "destroy", volumeid),
            f"vorch: cannot destroy volume {volumeid}: {answer.reason}\n",
        )
        self.assertEqual(
            await self.ok("volume", "detach", volumeid), f"detached volume {volumeid}\n"
        )
        self.assertEqual(await self.ok_json("volume", "destroy", volumeid), {"status": 1})
        self.assertEqual(await self.ok_json("volume", "list"), [])
        err = await self.failed("volume", "show", volumeid)
        self.assertTrue(err.startswith(f"vorch: cannot show volume {volumeid}: "), err)
        err = await self.failed("volume", "create", "big", "--size", "100000")
        self.assertTrue(err.startswith("vorch: cannot create volume 'big': "), err)
        self.assertIn("GIB", await self.failed("volume", "create", "x", code=2))

    async def test_unknown_pm(self):
        """
        pm show and pm vms of an unknown pmid exit 1 and say so.
        """
        self.assertIn("cannot show pm 42", await self.failed("pm", "show", "42"))
        self.assertIn("pm 42", await self.failed("pm", "vms", "42"))

    async def test_unknown_type(self):
        """
        Creating with an unknown type exits 1 with the daemon's reason, leaving no VM.
        """
        answer = await self.rest.call("/vm/create?name=x&instance_type=99&image_id=1")
        self.assertEqual(answer.json, {"vmid": 0})
        err = await self.failed("vm", "create", "x", "--type", "99", "--image", "1")
        self.assertIn("cannot create vm 'x'", err)
        self.assertTrue(answer.reason)
        self.assertIn(answer.reason, err)
        self.assertEqual(await self.ok_json("vm", "list"), [])

    async def test_connection_refused(self):
        """
        Nobody listening: exit 1 with a one-line message naming the URL.
        """
        url = f"http://127.0.0.1:{refused_port(self)}"
        err = await self.failed("pm", "list", url=url)
        self.assertIn(f"cannot reach vorchd at {url}: connection refused", err)

    async def test_not_json(self):
        """
        A server answering something other than JSON: exit 1, one line.
        """
        port = reactor.listenTCP(0, Site(NotVorchd()))
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"
        err = await self.failed("types", url=url)
        self.assertIn(f"vorchd at {url} answered /vm/types with something that is not JSON", err)

    async def test_bad_usage(self):
        """
        Wrong usage exits 2 with argparse's message.
        """
        self.assertIn("not an integer id", await self.failed("vm", "show", "abc", code=2))
        self.assertIn("--type", await self.failed("vm", "create", "a", "--image", "1", code=2))
        self.assertIn("required", await self.failed(code=2))

    async def test_vorch_url_environment(self):
        """
        VORCH_URL names the server when --url is not given, and --url wins over it.
        """
        env = self.env(VORCH_URL=self.daemon.url)
        out = await self.ok("pm", "list", "--json", env=env)
        self.assertEqual(len(json.loads(out)), 3)
        env = self.env(VORCH_URL=f"http://127.0.0.1:{refused_port(self)}")
        out, err, code = await getProcessOutputAndValue(
            EXE, ["--url", self.daemon.url, "types"], env
        )
        self.assertEqual((code, err), (0, b""))

    async def test_completion_is_valid_bash(self):
        """
        vorch completion bash passes bash -n, and completes the command tree.
        """
        script = await self.ok("completion", "bash")
        path = self.dir / "vorch.bash"
        path.write_text(script)
        out, err, code = await getProcessOutputAndValue("bash", ["-n", str(path)], self.env())
        self.assertEqual((code, err), (0, b""))
        probe = (
            f"source {path}; COMP_WORDS=(vorch vm c); COMP_CWORD=2; _vorch;"
            ' echo "${COMPREPLY[@]}";'
            " COMP_WORDS=(vorch pm ''); COMP_CWORD=2; _vorch; echo \"${COMPREPLY[@]}\";"
            ' COMP_WORDS=(vorch w); COMP_CWORD=1; _vorch; echo "${COMPREPLY[@]}";'
            ' COMP_WORDS=(vorch watch --c); COMP_CWORD=2; _vorch; echo "${COMPREPLY[@]}";'
            " COMPREPLY=(); COMP_WORDS=(vorch watch --count ''); COMP_CWORD=3; _vorch;"
            ' echo "${#COMPREPLY[@]}"'
        )
        out, err, code = await getProcessOutputAndValue("bash", ["-c", probe], self.env())
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(
            out.decode().splitlines(), ["create", "list show vms", "watch", "--count", "0"]
        )

    async def test_watch(self):
        """
        vorch watch prints a hello, then a line for each change as it happens (a VM
        created, with its name quoted, and destroyed), until Ctrl-C, which exits 0.
        """
        watching = self.watch()
        await watching.until(lambda lines: lines and "hello" in lines[0])
        created = await self.rest_json("/vm/create?name=w+%3C1%3E&instance_type=1&image_id=1")
        vmid = created["vmid"]
        vm = await self.rest_json(f"/vm/query?vmid={vmid}")
        shown = f'vm {vmid} active on pm {vm["pmid"]}: "w <1>", type 1, image 1'
        await watching.until(lambda lines: any(line.endswith(shown) for line in lines))
        self.assertEqual(await self.rest_json(f"/vm/destroy?vmid={vmid}"), {"status": 1})
        gone = f"vm {vmid} gone from pm {vm['pmid']}"
        await watching.until(lambda lines: any(line.endswith(gone) for line in lines))
        watching.transport.signalProcess("INT")
        self.assertEqual((await watching.ended, watching.err), (0, b""))
        for line in watching.lines():
            self.assertRegex(line, r"^\d\d:\d\d:\d\d \[\d+\] (hello:|pm|vm|vm_gone) ")

    async def test_watch_json_count(self):
        """
        vorch watch --json --count N prints the hello and N changes, each event as one
        JSON object, and exits 0: the changes a create makes, about that VM and its PM.
        """
        watching = self.watch("--json", "--count", "2")
        await watching.until(lambda lines: len(lines) == 1)
        created = await self.rest_json("/vm/create?name=j&instance_type=1&image_id=1")
        vm = await self.rest_json(f"/vm/query?vmid={created['vmid']}")
        self.assertEqual(await watching.ended.addTimeout(30, reactor), 0)
        hello, *changes = [json.loads(line) for line in watching.lines()]
        self.assertEqual((hello["event"], list(hello["data"])), ("hello", ["seq"]))
        self.assertEqual(len(changes), 2)
        for event in changes:
            self.assertIn(event["event"], ("pm", "vm"))
            self.assertGreater(event["id"], hello["data"]["seq"])
            self.assertEqual(event["data"]["pmid"], vm["pmid"])
        [vm_event] = [e["data"] for e in changes if e["event"] == "vm"] or [None]
        if vm_event is not None:
            self.assertEqual({k: vm_event[k] for k in vm}, vm)

    async def test_watch_without_events(self):
        """
        vorch watch exits 1 with one line when nothing listens, and when the server
        serves no event stream.
        """
        url = f"http://127.0.0.1:{refused_port(self)}"
        err = await self.failed("watch", url=url)
        self.assertIn(f"cannot reach vorchd at {url}: connection refused", err)
        port = reactor.listenTCP(0, Site(NotVorchd()))
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"
        err = await self.failed("watch", "--count", "1", url=url)
        self.assertIn(f"vorchd at {url} serves no event stream at /v1/events", err)
