"""
Tests for L{vorchd.inventory}: the pm_file, image_file and flavor_file parsers.

The field samples are checked three ways: from /work/shared/samples (when it sits beside the
repo), from the copies in tests/fixtures/inventory, and from the byte-exact copies in
L{SAMPLE_BYTES} below, so the tests stand even where neither directory survives intact.
"""

from __future__ import annotations

import json
import pickle
import shutil
import socket
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import require
from vorchd.inventory import (
    DEFAULT_SSH_TEMPLATE,
    LOCAL_URI,
    InputFileError,
    local_names,
    parse_flavor_file,
    parse_flavor_text,
    parse_image_file,
    parse_image_text,
    parse_pm_file,
    parse_pm_text,
)
from vorchd.model import Flavor, ImageEntry, PMEntry

SHARED_SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inventory"


def is_local(host: str) -> bool:
    # Deterministic: the machine running the tests must not change what a line means.
    return host in {"localhost", "127.0.0.1"}


# Byte-exact copies of the field samples: CRLF, missing final newlines and all.
SAMPLE_BYTES: dict[str, bytes] = {
    "flavor_file_json": (
        b'{\r\n    "types": [\r\n        {\r\n            "tid": 1,\r\n'
        b'            "cpu": 1,\r\n            "ram": 512,\r\n            "disk": 1\r\n'
        b'        },\r\n        {\r\n            "tid": 2,\r\n            "cpu": 2,\r\n'
        b'            "ram": 1024,\r\n            "disk": 2\r\n        },\r\n        {\r\n'
        b'            "tid": 3,\r\n            "cpu": 4,\r\n            "ram": 2048,\r\n'
        b'            "disk": 3\r\n        }\r\n    ]\r\n}\r\n\r\n'
    ),
    "flavor_file_json_one_line": (
        b'{ "types": [ { "tid": 1, "cpu": 1, "ram": 512, "disk": 1 },'
        b' { "tid": 2, "cpu": 2, "ram": 1024, "disk": 2 },'
        b' { "tid": 3, "cpu": 4, "ram": 2048, "disk": 3 } ] }\n'
    ),
    "flavor_file_no_tid": (
        b'{\n    "types": [\n        {\n            "cpu": 1,\n            "ram": 512,\n'
        b'            "disk": 1\n        },\n        {\n            \n'
        b'            "cpu": 2,\n            "ram": 1024,\n            "disk": 2\n'
        b'        },\n        {\n            \n            "cpu": 4,\n'
        b'            "ram": 2048,\n            "disk": 3\n        }\n    ]\n}\n'
    ),
    "flavor_file_seed_fragment": (
        b'"types": [\n        {\n            "cpu": 1,\n            "ram": 512,\n'
        b'            "disk": 1\n        },\n        {\n            "cpu": 2,\n'
        b'            "ram": 1024,\n            "disk": 2\n        },\n    ]\n'
    ),
    "image_file_local_paths": (
        b"/home/yash/ubuntu-14.04.2-desktop-amd64.iso\n/home/yash/cirros-0.3.4-x86_64-disk.img"
    ),
    "image_file_localhost": (
        b"akhil@localhost:/home/akhil/precise-server-cloudimg-amd64-disk1.img\n\n"
    ),
    "image_file_mixed_local_remote": (
        b"/home/shrenik/Desktop/disk.img\nroot@128.199.175.193:/home/test2/cd.img\n"
        b"root@128.199.175.192:/home/test2/cd.img"
    ),
    "image_file_remote_same_host": (
        b"root@10.1.35.78:/home/rocker/OS/VM1.img\r\nroot@10.1.35.78:/home/rocker/OS/VM2.img\r\n"
        b"root@10.1.35.78:/home/rocker/OS/VM3.img\r\nroot@10.1.35.78:/home/rocker/OS/VM4.img\r\n"
        b"root@10.1.35.78:/home/rocker/OS/VM5.img\r\n"
        b"root@10.1.35.146:/home/the_game/V1.img\r\nroot@10.1.35.146:/home/the_game/V2.img\r\n"
    ),
    "image_file_remote_user_at_host": (
        b"rashika@10.1.97.209:/home/rashika/Downloads/Vm-linux_64.img\n"
        b"chitra@10.1.97.218:/home/chitra/Downloads/Vm-linux_64.img\n"
        b"user1@10.2.3.5:/home/user1/Vm-linux_64.img\n"
        b"root@10.2.3.5:/home/root/Vm-linux-2_64.img\n"
    ),
    "pm_file_bare_ips": b"10.1.132.122\n10.1.132.148\n",
    "pm_file_localhost": b"akhil@localhost\n",
    "pm_file_root_at_ip": b"root@10.1.35.78\r\nroot@10.1.35.146\r\n",
    "pm_file_trailing_blank_lines": b"sneh@10.42.0.45\nyash@10.1.36.79\n\n\n",
    "pm_file_user_at_ip": b"rashika@10.1.97.209\nchitra@10.1.97.218\ngirish@10.1.97.7\n",
}


def _pm(line: str, uri: str, lineno: int) -> PMEntry:
    return PMEntry(line=line, uri=uri, lineno=lineno)


def _remote(line: str, lineno: int, name: str) -> ImageEntry:
    spec, path = line.split(":", 1)
    user, host = spec.split("@")
    return ImageEntry(line=line, name=name, path=path, host=host, user=user, lineno=lineno)


def _local(line: str, lineno: int, name: str) -> ImageEntry:
    return ImageEntry(line=line, name=name, path=line, host=None, user=None, lineno=lineno)


THREE_FLAVORS = [Flavor(1, 1, 512, 1), Flavor(2, 2, 1024, 2), Flavor(3, 4, 2048, 3)]

EXPECTED: dict[str, list] = {
    "flavor_file_json": THREE_FLAVORS,
    "flavor_file_json_one_line": THREE_FLAVORS,
    "flavor_file_no_tid": THREE_FLAVORS,
    "flavor_file_seed_fragment": THREE_FLAVORS[:2],
    "image_file_local_paths": [
        _local("/home/yash/ubuntu-14.04.2-desktop-amd64.iso", 1, "ubuntu-14.04.2-desktop-amd64"),
        _local("/home/yash/cirros-0.3.4-x86_64-disk.img", 2, "cirros-0.3.4-x86_64-disk"),
    ],
    "image_file_localhost": [
        _remote(
            "akhil@localhost:/home/akhil/precise-server-cloudimg-amd64-disk1.img",
            1,
            "precise-server-cloudimg-amd64-disk1",
        ),
    ],
    "image_file_mixed_local_remote": [
        _local("/home/shrenik/Desktop/disk.img", 1, "disk"),
        _remote("root@128.199.175.193:/home/test2/cd.img", 2, "cd"),
        _remote("root@128.199.175.192:/home/test2/cd.img", 3, "cd"),
    ],
    "image_file_remote_same_host": [
        *(_remote(f"root@10.1.35.78:/home/rocker/OS/VM{i}.img", i, f"VM{i}") for i in range(1, 6)),
        _remote("root@10.1.35.146:/home/the_game/V1.img", 6, "V1"),
        _remote("root@10.1.35.146:/home/the_game/V2.img", 7, "V2"),
    ],
    "image_file_remote_user_at_host": [
        _remote("rashika@10.1.97.209:/home/rashika/Downloads/Vm-linux_64.img", 1, "Vm-linux_64"),
        _remote("chitra@10.1.97.218:/home/chitra/Downloads/Vm-linux_64.img", 2, "Vm-linux_64"),
        _remote("user1@10.2.3.5:/home/user1/Vm-linux_64.img", 3, "Vm-linux_64"),
        _remote("root@10.2.3.5:/home/root/Vm-linux-2_64.img", 4, "Vm-linux-2_64"),
    ],
    "pm_file_bare_ips": [
        _pm("10.1.132.122", "qemu+ssh://10.1.132.122/system", 1),
        _pm("10.1.132.148", "qemu+ssh://10.1.132.148/system", 2),
    ],
    "pm_file_localhost": [_pm("akhil@localhost", LOCAL_URI, 1)],
    "pm_file_root_at_ip": [
        _pm("root@10.1.35.78", "qemu+ssh://root@10.1.35.78/system", 1),
        _pm("root@10.1.35.146", "qemu+ssh://root@10.1.35.146/system", 2),
    ],
    "pm_file_trailing_blank_lines": [
        _pm("sneh@10.42.0.45", "qemu+ssh://sneh@10.42.0.45/system", 1),
        _pm("yash@10.1.36.79", "qemu+ssh://yash@10.1.36.79/system", 2),
    ],
    "pm_file_user_at_ip": [
        _pm("rashika@10.1.97.209", "qemu+ssh://rashika@10.1.97.209/system", 1),
        _pm("chitra@10.1.97.218", "qemu+ssh://chitra@10.1.97.218/system", 2),
        _pm("girish@10.1.97.7", "qemu+ssh://girish@10.1.97.7/system", 3),
    ],
}


def parse_sample(name: str, path: Path) -> list:
    """
    Parse one sample file with the parser its name calls for.
    """
    if name.startswith("pm_file"):
        return parse_pm_file(path, is_local=is_local)
    if name.startswith("image_file"):
        return parse_image_file(path)
    return parse_flavor_file(path)


# -- the field samples ----------------------------------------------------------------------


def temp_dir(case: SynchronousTestCase) -> Path:
    """
    A new empty directory, removed when C{case} is done.
    """
    path = Path(tempfile.mkdtemp(prefix="vorchd-test-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path


class FieldSampleTests(SynchronousTestCase):
    def test_sample_bytes_parse(self) -> None:
        """Each field sample, byte for byte as found, parses to the expected entries."""
        for name in sorted(EXPECTED):
            tmp_path = temp_dir(self)
            path = tmp_path / name
            path.write_bytes(SAMPLE_BYTES[name])
            self.assertEqual(parse_sample(name, path), EXPECTED[name], name)

    def test_fixture_files_parse(self) -> None:
        """Each copy in tests/fixtures/inventory parses to the expected entries."""
        for name in sorted(EXPECTED):
            self.assertEqual(parse_sample(name, FIXTURES / name), EXPECTED[name], name)

    def test_shared_samples_parse(self) -> None:
        """Each file in shared/samples parses to the expected entries."""
        for name in sorted(EXPECTED):
            require(
                None if SHARED_SAMPLES.is_dir() else f"{SHARED_SAMPLES} is not beside the repo"
            )
            self.assertEqual(parse_sample(name, SHARED_SAMPLES / name), EXPECTED[name], name)

    def test_every_shared_sample_is_covered(self) -> None:
        """A sample added to shared/samples fails here until it has an expectation and a copy."""
        require(None if SHARED_SAMPLES.is_dir() else f"{SHARED_SAMPLES} is not beside the repo")
        names = {p.name for p in SHARED_SAMPLES.iterdir()}
        self.assertEqual(names, set(EXPECTED))
        for name in names:
            self.assertEqual((SHARED_SAMPLES / name).read_bytes(), SAMPLE_BYTES[name], name)

    def test_fixture_dir_holds_every_sample(self) -> None:
        """tests/fixtures/inventory holds a copy of every sample, so tests need no shared/."""
        self.assertEqual({p.name for p in FIXTURES.iterdir()}, set(EXPECTED))

    def test_samples_really_have_their_quirks(self) -> None:
        """The byte copies keep the CRLF, missing final newline and fragment the tests rely on."""
        self.assertIn(b"\r\n", SAMPLE_BYTES["pm_file_root_at_ip"])
        self.assertIn(b"\r\n", SAMPLE_BYTES["flavor_file_json"])
        self.assertFalse(SAMPLE_BYTES["image_file_local_paths"].endswith(b"\n"))
        self.assertTrue(SAMPLE_BYTES["pm_file_trailing_blank_lines"].endswith(b"\n\n\n"))
        self.assertTrue(SAMPLE_BYTES["flavor_file_seed_fragment"].startswith(b'"types"'))


# -- pm_file --------------------------------------------------------------------------------


class PmFileTests(SynchronousTestCase):
    def test_pm_full_uris_comments_and_line_numbers(self) -> None:
        """Full URIs are kept as is, comments and blanks are skipped, linenos are the file's."""
        text = (
            "# the fleet\r\n"
            "\r\n"
            "qemu+tcp://10.0.0.5/system\r\n"
            "   # indented comment\r\n"
            "test:///var/lib/vorchd/node1.xml\r\n"
            "test:///var/lib/vorchd/node2.xml\r\n"
            "  root@10.0.0.6  \r\n"
            "qemu:///system\r\n"
        )
        self.assertEqual(
            parse_pm_text(text, is_local=is_local),
            [
                _pm("qemu+tcp://10.0.0.5/system", "qemu+tcp://10.0.0.5/system", 3),
                _pm("test:///var/lib/vorchd/node1.xml", "test:///var/lib/vorchd/node1.xml", 5),
                _pm("test:///var/lib/vorchd/node2.xml", "test:///var/lib/vorchd/node2.xml", 6),
                _pm("root@10.0.0.6", "qemu+ssh://root@10.0.0.6/system", 7),
                _pm("qemu:///system", "qemu:///system", 8),
            ],
        )

    def test_pm_host_forms(self) -> None:
        """Names, users, IPv6 (bare or bracketed) and local hosts become the right URI."""
        for line, uri in [
            ("node1.example.com", "qemu+ssh://node1.example.com/system"),
            ("ops_user@node-2", "qemu+ssh://ops_user@node-2/system"),
            ("a.b-c@10.0.0.1", "qemu+ssh://a.b-c@10.0.0.1/system"),
            ("2001:db8::5", "qemu+ssh://[2001:db8::5]/system"),
            ("[2001:db8::5]", "qemu+ssh://[2001:db8::5]/system"),
            ("root@[2001:db8::5]", "qemu+ssh://root@[2001:db8::5]/system"),
            ("root@localhost", LOCAL_URI),
            ("127.0.0.1", LOCAL_URI),
        ]:
            self.assertEqual(
                parse_pm_text(line, is_local=is_local), [_pm(line, uri, 1)], (line, uri)
            )

    def test_pm_is_local_sees_bare_ipv6(self) -> None:
        """is_local is asked about an IPv6 host without its brackets."""
        asked: list[str] = []

        def spy(host: str) -> bool:
            asked.append(host)
            return False

        parse_pm_text("[::1]\nroot@fe80::2", is_local=spy)
        self.assertEqual(asked, ["::1", "fe80::2"])

    def test_pm_ssh_template(self) -> None:
        """A custom ssh_template shapes the URI of every remote host line, and only those."""
        text = "root@h1\nh2\nlocalhost\nqemu+tcp://h3/system"
        template = "qemu+ssh://{userat}{host}:2222/system?keyfile=/etc/vorchd/id"
        self.assertEqual(
            [e.uri for e in parse_pm_text(text, is_local=is_local, ssh_template=template)],
            [
                "qemu+ssh://root@h1:2222/system?keyfile=/etc/vorchd/id",
                "qemu+ssh://h2:2222/system?keyfile=/etc/vorchd/id",
                LOCAL_URI,
                "qemu+tcp://h3/system",
            ],
        )
        self.assertEqual(DEFAULT_SSH_TEMPLATE.format(userat="", host="h"), "qemu+ssh://h/system")

    def test_pm_bad_ssh_template(self) -> None:
        """A template asking for fields we do not have is a setting error, not a file error."""
        with self.assertRaises(ValueError) as info:
            parse_pm_text("h", ssh_template="qemu+ssh://{port}/system")
        self.assertRegex(str(info.exception), "ssh_template")
        self.assertFalse(isinstance(info.exception, InputFileError))

    def test_pm_default_is_local(self) -> None:
        """Without is_local, localhost, all of 127/8, ::1 and this machine's name are local."""
        hostname = socket.gethostname()
        text = f"localhost\n127.0.0.9\n::1\n{hostname}\n"
        # Each line is its own file: all four are the same PM, which one file may not repeat.
        for line in text.split():
            self.assertEqual(parse_pm_text(line), [_pm(line, LOCAL_URI, 1)])
        self.assertEqual(
            parse_pm_text("192.0.2.1"), [_pm("192.0.2.1", "qemu+ssh://192.0.2.1/system", 1)]
        )

    def test_local_names(self) -> None:
        """local_names holds the loopback names and this machine's own name, lowercased."""
        names = local_names()
        self.assertTrue(isinstance(names, frozenset))
        self.assertLessEqual(
            {"localhost", "127.0.0.1", "::1", socket.gethostname().lower()}, names
        )
        self.assertTrue(all(n == n.lower() for n in names))

    def test_pm_same_machine_twice(self) -> None:
        """Lines reaching one machine twice are refused; distinct test:/// nodes are fine."""
        fine = "test:///n1.xml\ntest:///n2.xml\n10.0.0.1\n10.0.0.2\n"
        self.assertEqual(len(parse_pm_text(fine, is_local=is_local)), 4)
        for text, lineno, earlier in [
            ("10.0.0.1\n\n10.0.0.1", 3, 1),
            ("test:///n1.xml\ntest:///n1.xml", 2, 1),
            ("localhost\n127.0.0.1", 2, 1),
            ("qemu:///system\n# again\nakhil@localhost", 3, 1),
            ("qemu+ssh://h/system\nh", 2, 1),
            ("root@h\nh", 2, 1),
            ("root@Node1\nnode1", 2, 1),
            ("2001:db8::1\n[2001:db8:0::1]", 2, 1),
        ]:
            with self.assertRaises(InputFileError) as info:
                parse_pm_text(text, path="pms", is_local=is_local)
            self.assertEqual(info.exception.lineno, lineno, text)
            self.assertIn(f"same PM as line {earlier}", info.exception.reason, text)


# -- image_file -----------------------------------------------------------------------------


class ImageFileTests(SynchronousTestCase):
    def test_image_names(self) -> None:
        """An image's name is its base name without the last extension, never empty."""
        for path, name in [
            ("/srv/images/cirros-0.3.4-x86_64-disk.img", "cirros-0.3.4-x86_64-disk"),
            ("/iso/Ubuntu-12.04-amd64.iso", "Ubuntu-12.04-amd64"),
            ("/srv/vmlinuz", "vmlinuz"),
            ("/srv/archive.tar.gz", "archive.tar"),
            ("/srv/.hidden", ".hidden"),
            ("/srv/.hidden.qcow2", ".hidden"),
            ("/srv/trailing.", "trailing"),
            ("/srv/my images/disk one.img", "disk one"),
            ("/srv/ünïcode.img", "ünïcode"),
        ]:
            self.assertEqual(parse_image_text(path), [_local(path, 1, name)], (path, name))

    def test_image_remote_forms(self) -> None:
        """Remote lines split into user, host and path; IPv6 hosts come back without brackets."""
        text = (
            "# remote images\n"
            "store.example.com:/pub/a.img\n"
            "root@[2001:db8::7]:/pub/b.img\n"
            "u@h:/pub/c@d:e.img\n"
            "/local/with:colon.img\n"
        )
        self.assertEqual(
            parse_image_text(text),
            [
                ImageEntry(
                    "store.example.com:/pub/a.img", "a", "/pub/a.img", "store.example.com", None, 2
                ),
                ImageEntry(
                    "root@[2001:db8::7]:/pub/b.img", "b", "/pub/b.img", "2001:db8::7", "root", 3
                ),
                ImageEntry("u@h:/pub/c@d:e.img", "c@d:e", "/pub/c@d:e.img", "h", "u", 4),
                _local("/local/with:colon.img", 5, "with:colon"),
            ],
        )

    def test_image_remote_localhost_kept(self) -> None:
        """A remote line naming this machine keeps its host and user: the caller decides."""
        [entry] = parse_image_text("akhil@localhost:/home/akhil/x.img")
        self.assertEqual((entry.host, entry.user, entry.is_remote), ("localhost", "akhil", True))

    def test_image_same_name_different_lines(self) -> None:
        """Two different lines may give the same name; the identical line twice is refused."""
        self.assertEqual(
            [e.name for e in parse_image_text("/a/x.img\n/b/x.img\nh:/a/x.img")], ["x"] * 3
        )
        with self.assertRaises(InputFileError) as caught:
            parse_image_text("# c\n/a/x.img\n/b/x.img\n  /a/x.img\r\n")
        self.assertRegex(str(caught.exception), r"line 4: same image as line 2")

    def test_image_missing_files_are_not_checked(self) -> None:
        """Images on other machines (or not there yet) are not looked for."""
        tmp_path = temp_dir(self)
        missing = str(tmp_path / "nope.img")
        self.assertEqual(parse_image_text(missing), [_local(missing, 1, "nope")])


# -- flavor_file ----------------------------------------------------------------------------


class FlavorFileTests(SynchronousTestCase):
    def test_flavor_python_literal(self) -> None:
        """A Python literal (single quotes, comments, tuples, trailing commas) is accepted."""
        text = (
            "# instance types\n"
            "{\n"
            "    'types': (\n"
            "        {'tid': 7, 'cpu': 1, 'ram': 512, 'disk': 1, 'name': 'm1.tiny',},\n"
            "        {'cpu': 2, 'ram': 1_024, 'disk': 20, 'burst': True, 'note': None},  # 2nd\n"
            "    ),\n"
            "}\n"
        )
        self.assertEqual(parse_flavor_text(text), [Flavor(7, 1, 512, 1), Flavor(2, 2, 1024, 20)])

    def test_flavor_fragment_edges(self) -> None:
        """The bare fragment works after a comment, with CRLF, and ending in a comment."""
        text = '# seed form\r\n"types": [\r\n {"cpu": 1, "ram": 2, "disk": 3},\r\n]\r\n# end'
        self.assertEqual(parse_flavor_text(text), [Flavor(1, 1, 2, 3)])

    def test_flavor_json_names_harmless_and_extra_keys(self) -> None:
        """JSON true/false/null are fine in ignored keys; unknown keys and top keys are ignored."""
        text = (
            '{"version": 2, "types": [{"cpu": 1, "ram": 2, "disk": 3,'
            ' "public": true, "gpu": null, "x": [1, {"y": false}], "tid": 5}]}'
        )
        self.assertEqual(parse_flavor_text(text), [Flavor(5, 1, 2, 3)])

    def test_flavor_mixed_tids_keep_file_order(self) -> None:
        """Explicit and implied tids mix; flavors come back in file order, not tid order."""
        text = (
            '{"types": [{"tid": 9, "cpu": 1, "ram": 1, "disk": 1},'
            ' {"cpu": 2, "ram": 2, "disk": 2}]}'
        )
        self.assertEqual(parse_flavor_text(text), [Flavor(9, 1, 1, 1), Flavor(2, 2, 2, 2)])


# -- malformed files ------------------------------------------------------------------------

GOOD = '{"cpu": 1, "ram": 512, "disk": 1}'

BAD_CASES = [
    # (id, kind, text, line, a piece of the reason)
    ("pm bad host chars", "pm_file", "10.0.0.1\nho$t.example\n", 2, "bad host 'ho$t.example'"),
    ("pm underscore host", "pm_file", "bad_host\n", 1, "bad host"),
    ("pm space inside", "pm_file", "# x\n\nroot @10.0.0.1\n", 3, "whitespace inside"),
    ("pm trailing comment", "pm_file", "h1 # rack 3\n", 1, "comments must be on a line"),
    ("pm two ats", "pm_file", "a@b@c\n", 1, "more than one '@'"),
    ("pm empty user", "pm_file", "@10.0.0.1\n", 1, "empty user"),
    ("pm empty host", "pm_file", "root@\n", 1, "empty host"),
    ("pm bad user", "pm_file", "9root@h\n", 1, "bad user '9root'"),
    ("pm host port", "pm_file", "h:22\n", 1, "':' in host 'h:22'"),
    ("pm host port path", "pm_file", "h\nhost:22/junk\n", 2, "neither host"),
    ("pm bad ipv4", "pm_file", "10.0.0.256\n", 1, "bad IPv4 address"),
    ("pm bad ipv6", "pm_file", "[fe80::1::2]\n", 1, "bad IPv6 address"),
    ("pm half bracket", "pm_file", "[::1\n", 1, "unbalanced brackets"),
    ("pm upper scheme", "pm_file", "QEMU+SSH://h/system\n", 1, "bad URI scheme"),
    ("pm empty scheme", "pm_file", "://h/system\n", 1, "bad URI scheme"),
    ("pm space in uri", "pm_file", "qemu+ssh://h/sys tem\n", 1, "whitespace inside the URI"),
    ("pm nothing after", "pm_file", "qemu://\n", 1, "nothing after"),
    ("pm dup", "pm_file", "h1\nh2\nh1\n", 3, "same PM as line 1"),
    ("pm comments only", "pm_file", "# a\n\n  # b\n", None, "no PMs"),
    ("pm empty", "pm_file", "", None, "no PMs"),
    ("image relative", "image_file", "/ok.img\nimages/x.img\n", 2, "relative path"),
    ("image tilde", "image_file", "~/x.img\n", 1, "relative path"),
    ("image remote relative", "image_file", "u@h:x.img\n", 1, "not absolute"),
    ("image empty remote", "image_file", "u@h:\n", 1, "empty path after ':'"),
    ("image bare ipv6", "image_file", "fe80::1:/x.img\n", 1, "IPv6 host in brackets"),
    ("image nul", "image_file", "/a\nb\x00.img\n/c\n", 2, "NUL"),
    ("image nul path", "image_file", "/a/b\x00.img\n", 1, "NUL"),
    ("image directory", "image_file", "/srv/images/\n", 1, "names a directory"),
    ("image dotdot", "image_file", "/srv/..\n", 1, "names a directory"),
    ("image bad host", "image_file", "u@h!st:/x.img\n", 1, "bad host"),
    ("image url", "image_file", "http://h/x.img\n", 1, "is a URL"),
    ("image dup", "image_file", "/a.img\r\n/b.img\r\n/a.img\r\n", 3, "same image as line 1"),
    ("image empty", "image_file", "\n\n", None, "no images"),
    ("flavor missing ram", "flavor_file", '{"types": [\n{"cpu": 1, "disk": 1}]}', 2, "no 'ram'"),
    (
        "flavor ram string",
        "flavor_file",
        '{"types": [\n {"cpu": 1,\n  "ram": "512", "disk": 1}]}',
        3,
        "not the string '512'",
    ),
    ("flavor ram 0", "flavor_file", '"types": [\n{"cpu": 1, "ram": 0, "disk": 1}]', 2, "not 0"),
    ("flavor ram -1", "flavor_file", '"types": [\n{"cpu": 1, "ram": -1, "disk": 1}]', 2, "-1"),
    ("flavor ram 1.5", "flavor_file", '{"types": [{"cpu":1, "ram":1.5, "disk":1}]}', 1, "1.5"),
    ("flavor cpu 2.0", "flavor_file", '{"types": [{"cpu":2.0, "ram":1, "disk":1}]}', 1, "2.0"),
    ("flavor cpu true", "flavor_file", '{"types": [{"cpu":true, "ram":1, "disk":1}]}', 1, "true"),
    ("flavor cpu True", "flavor_file", "{'types': [{'cpu':True, 'ram':1, 'disk':1}]}", 1, "true"),
    ("flavor disk null", "flavor_file", '{"types": [{"cpu":1, "ram":1, "disk":null}]}', 1, "null"),
    (
        "flavor tid 0",
        "flavor_file",
        '{"types": [{"tid":0, "cpu":1, "ram":1, "disk":1}]}',
        1,
        "'tid'",
    ),
    ("flavor huge", "flavor_file", '{"types": [{"cpu":1, "ram":1, "disk":1e999}]}', 1, "float"),
    (
        "flavor too big",
        "flavor_file",
        '{"types": [{"cpu":1, "ram":1, "disk":2**64}]}',
        1,
        "literal",
    ),
    (
        "flavor int too big",
        "flavor_file",
        '{"types": [{"cpu":1, "ram":1, "disk":99999999999999999999}]}',
        1,
        "below 2**63",
    ),
    (
        "flavor duplicate tid",
        "flavor_file",
        f'{{"types": [\n{GOOD},\n{{"tid": 3, "cpu": 1, "ram": 1, "disk": 1}},\n'
        f'{{"tid": 1,\n "cpu": 1, "ram": 1, "disk": 1}}]}}',
        4,
        "tid 1, already used by flavor 1 (line 2)",
    ),
    (
        "flavor implied tid clash",
        "flavor_file",
        f'{{"types": [\n{{"tid": 2, "cpu": 1, "ram": 1, "disk": 1}},\n{GOOD}]}}',
        3,
        "tid 2, already used by flavor 1",
    ),
    (
        "flavor key twice",
        "flavor_file",
        '{"types": [{"cpu":1,"ram":1,\n"cpu":2,"disk":1}]}',
        2,
        "'cpu' twice",
    ),
    ("flavor types twice", "flavor_file", '{"types": [],\n"types": []}', 2, "'types' twice"),
    ("flavor not a dict", "flavor_file", f"[{GOOD}]", 1, "must hold a dict"),
    ("flavor a string", "flavor_file", '"types"', 1, "must hold a dict"),
    ("flavor no types", "flavor_file", '{"flavors": []}', 1, "no 'types' key"),
    ("flavor types not list", "flavor_file", '{\n"types":\n {"a": 1}}', 3, "not a dict"),
    ("flavor types string", "flavor_file", '{"types": "m1.tiny"}', 1, "'types' must be a list"),
    ("flavor types empty", "flavor_file", '{"types": [\n]}', 1, "no flavors"),
    ("flavor item not dict", "flavor_file", f'{{"types": [{GOOD},\n[1, 2]]}}', 2, "flavor 2 must"),
    ("flavor int key", "flavor_file", '{"types": [{1: 2, "cpu":1}]}', 1, "not a string"),
    ("flavor set", "flavor_file", '{"types": [{1, 2}]}', 1, "not a literal"),
    (
        "flavor syntax line 4",
        "flavor_file",
        '{\n  "types": [\n    {"cpu": 1, "ram": 512, "disk": 1},\n'
        '    {"cpu": 2 "ram": 1024, "disk": 2}\n  ]\n}\n',
        4,
        "syntax error",
    ),
    (
        "fragment syntax line 4",
        "flavor_file",
        '"types": [\n  {"cpu": 1, "ram": 512, "disk": 1},\n\n'
        '  {"cpu": 2, "ram": 1024 "disk": 2},\n]',
        4,
        "syntax error",
    ),
    (
        "flavor error after comment",
        "flavor_file",
        '# types\n  # more\n{"types": [\n{"cpu": 1 "ram": 1}]}',
        4,
        "Perhaps you forgot a comma",
    ),
    ("flavor only comments", "flavor_file", "# a\n# b\n", None, "no flavors"),
    ("flavor unclosed", "flavor_file", '{"types": [\n' + GOOD + ",\n", 1, "'[' was never closed"),
    ("fragment unclosed", "flavor_file", '"types": [\n' + GOOD + ",\n", 1, "'[' was never closed"),
    ("fragment unclosed 2", "flavor_file", '"types": [\n{"cpu": 1,\n', 1, "'[' was never closed"),
    ("fragment extra close", "flavor_file", '"types": [\n' + GOOD + "]]\n", 2, "does not match"),
    ("fragment extra brace", "flavor_file", '"types": [\n]}\n\n', 2, "brackets do not balance"),
    ("flavor call", "flavor_file", '{"types": [{"cpu": int("1"), "ram":1, "disk":1}]}', 1, "call"),
    ("flavor name", "flavor_file", '{"types": [{"cpu": one, "ram":1, "disk":1}]}', 1, "'one'"),
    ("flavor expr", "flavor_file", '{"types": [{"cpu": 1+1, "ram":1, "disk":1}]}', 1, "literal"),
    ("flavor complex", "flavor_file", '{"types": [{"cpu": 1j, "ram":1, "disk":1}]}', 1, "complex"),
    ("flavor unpack", "flavor_file", '{"types": [{**x, "cpu": 1}]}', 1, "'**'"),
    ("flavor star", "flavor_file", '{"types": [*x]}', 1, "'*'"),
    ("flavor nul", "flavor_file", '{"types": [\n]}\x00', 2, "NUL"),
    ("flavor empty", "flavor_file", "", None, "no flavors"),
    ("flavor blank", "flavor_file", " \r\n\n", None, "no flavors"),
]

PARSERS = {
    "pm_file": parse_pm_file,
    "image_file": parse_image_file,
    "flavor_file": parse_flavor_file,
}


def _parse_file(kind: str, path: Path) -> list:
    if kind == "pm_file":
        return parse_pm_file(path, is_local=is_local)
    return PARSERS[kind](path)


class MalformedFilesTests(SynchronousTestCase):
    def test_malformed_files(self) -> None:
        """A malformed file's error names the kind, the file, the line and what is wrong."""
        for case_id, kind, text, lineno, reason in BAD_CASES:
            tmp_path = temp_dir(self)
            path = tmp_path / kind
            path.write_text(text, encoding="utf-8", newline="")
            with self.assertRaises(InputFileError) as info:
                _parse_file(kind, path)
            error = info.exception
            self.assertEqual(
                (error.kind, error.path, error.lineno), (kind, str(path), lineno), case_id
            )
            self.assertIn(reason, error.reason, case_id)
            where = f"{kind} {path}" + ("" if lineno is None else f", line {lineno}")
            self.assertEqual(str(error), f"{where}: {error.reason}", case_id)

    def test_undecodable_bytes_name_the_line(self) -> None:
        """Bytes that are not UTF-8 are an error naming the line they stand on."""
        for kind in sorted(PARSERS):
            tmp_path = temp_dir(self)
            path = tmp_path / "latin1"
            path.write_bytes(b"# ok\r\n# fine\r\n/caf\xe9.img\r\n")
            with self.assertRaises(InputFileError) as info:
                _parse_file(kind, path)
            self.assertEqual(info.exception.lineno, 3, kind)
            self.assertIn("UTF-8", info.exception.reason, kind)
            self.assertTrue(str(info.exception).startswith(f"{kind} {path}, line 3: "), kind)

    def test_unreadable_files(self) -> None:
        """A missing file or a directory is an error with no line and the OS's reason."""
        for kind in sorted(PARSERS):
            tmp_path = temp_dir(self)
            missing = tmp_path / "no-such-file"
            with self.assertRaises(InputFileError) as info:
                _parse_file(kind, missing)
            self.assertEqual(
                (info.exception.lineno, info.exception.path), (None, str(missing)), kind
            )
            self.assertEqual(
                str(info.exception),
                f"{kind} {missing}: cannot read: No such file or directory",
                kind,
            )
            with self.assertRaises(InputFileError) as caught:
                _parse_file(kind, tmp_path)
            self.assertRegex(str(caught.exception), "Is a directory", kind)

    def test_utf8_bom_accepted(self) -> None:
        """A UTF-8 BOM (Windows editors add one) is not part of the first line."""
        tmp_path = temp_dir(self)
        for kind, text, first in [
            ("pm_file", "10.0.0.1\r\n", "10.0.0.1"),
            ("image_file", "/srv/a.img\r\n", "/srv/a.img"),
        ]:
            path = tmp_path / kind
            path.write_bytes(b"\xef\xbb\xbf" + text.encode())
            self.assertEqual(_parse_file(kind, path)[0].line, first)
        path = tmp_path / "flavors"
        path.write_bytes(b'\xef\xbb\xbf"types": [{"cpu": 1, "ram": 1, "disk": 1}]')
        self.assertEqual(parse_flavor_file(path), [Flavor(1, 1, 1, 1)])
        self.assertEqual(parse_pm_text("\ufeffh1", is_local=is_local)[0].line, "h1")

    def test_input_file_error_shape(self) -> None:
        """InputFileError is a ValueError with its parts as attributes, and survives pickling."""
        error = InputFileError("image_file", "/etc/images", 3, "relative path 'x'")
        self.assertTrue(isinstance(error, ValueError))
        self.assertEqual(str(error), "image_file /etc/images, line 3: relative path 'x'")
        copy = pickle.loads(pickle.dumps(error))
        self.assertEqual(
            (copy.kind, copy.path, copy.lineno, copy.reason, str(copy)),
            (
                "image_file",
                "/etc/images",
                3,
                "relative path 'x'",
                str(error),
            ),
        )
        self.assertEqual(str(InputFileError("pm_file", "p", None, "no PMs")), "pm_file p: no PMs")


# -- no eval --------------------------------------------------------------------------------


class NoEvalTests(SynchronousTestCase):
    def test_flavor_file_is_never_evaluated(self) -> None:
        """Code in a flavor file, even under a key that would be ignored, is refused, not run."""
        for template in [
            "__import__('os').system('touch {marker}')",
            '{{"types": [{{"cpu": 1, "ram": 1, "disk": 1,'
            " \"x\": __import__('os').system('touch {marker}')}}]}}",
            "\"types\": [(lambda: __import__('os').system('touch {marker}'))()]",
            "{{'types': [{{'cpu': [open('{marker}', 'w')][0], 'ram': 1, 'disk': 1}}]}}",
        ]:
            tmp_path = temp_dir(self)
            marker = tmp_path / "pwned"
            path = tmp_path / "flavors"
            path.write_text(template.format(marker=marker))
            with self.assertRaises(InputFileError) as caught:
                parse_flavor_file(path)
            self.assertRegex(str(caught.exception), "not a literal", template)
            self.assertFalse(marker.exists(), template)


# -- round trips ----------------------------------------------------------------------------

_numbers = st.integers(min_value=1, max_value=2**40)
_flavor_dicts = st.fixed_dictionaries(
    {"cpu": _numbers, "ram": _numbers, "disk": _numbers},
    optional={
        "tid": st.integers(min_value=1, max_value=40),
        "name": st.text(max_size=12),
        "public": st.booleans(),
    },
)


def _expected(dicts: list[dict]) -> list[Flavor]:
    return [Flavor(d.get("tid", i), d["cpu"], d["ram"], d["disk"]) for i, d in enumerate(dicts, 1)]


def _as_json(dicts: list[dict], indent: int | None) -> str:
    return json.dumps({"types": dicts}, indent=indent, ensure_ascii=indent is None)


def _as_fragment(dicts: list[dict]) -> str:
    # The seed's form: no outer braces, one flavor a line, a trailing comma after each.
    return '"types": [\n' + "".join(f"    {json.dumps(d)},\n" for d in dicts) + "]\n"


def _as_python(dicts: list[dict]) -> str:
    return "{'types': [\n" + "".join(f"    {d!r},\n" for d in dicts) + "],}\n"


class RoundTripTests(SynchronousTestCase):
    @settings(max_examples=150, suppress_health_check=[HealthCheck.filter_too_much])
    @given(st.lists(_flavor_dicts, min_size=1, max_size=8), st.sampled_from([None, 2, 4]))
    def test_flavor_forms_round_trip(self, dicts: list[dict], indent: int | None) -> None:
        """Any flavor list, written as JSON, as the bare fragment or as Python, reads back
        equal."""
        expected = _expected(dicts)
        assume(len({f.tid for f in expected}) == len(expected))
        for text in (_as_json(dicts, indent), _as_fragment(dicts), _as_python(dicts)):
            self.assertEqual(parse_flavor_text(text), expected, text)
            self.assertEqual(parse_flavor_text(text.replace("\n", "\r\n")), expected, text)

    @given(
        st.lists(
            st.fixed_dictionaries({"cpu": _numbers, "ram": _numbers, "disk": _numbers}), min_size=1
        ),
        st.data(),
    )
    def test_flavor_error_line_in_fragment(self, dicts: list[dict], data: st.DataObject) -> None:
        """In the brace-less fragment, a bad flavor's error names its own line of the file."""
        bad = data.draw(st.integers(min_value=0, max_value=len(dicts) - 1))
        key = data.draw(st.sampled_from(["cpu", "ram", "disk"]))
        dicts[bad] = {**dicts[bad], key: data.draw(st.sampled_from([0, -3, 1.5, "2", True, None]))}
        with self.assertRaises(InputFileError) as info:
            parse_flavor_text(_as_fragment(dicts))
        # Line 1 is '"types": [', so flavor k (0-based) stands on line k + 2.
        self.assertEqual(info.exception.lineno, bad + 2)
        self.assertIn(f"flavor {bad + 1}: {key!r}", info.exception.reason)

    @given(st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=10, unique=True))
    def test_pm_ips_round_trip(self, addresses: list[str]) -> None:
        """Any list of distinct remote IPv4 addresses gives one ssh PM per line, in order."""
        addresses = [a for a in addresses if not is_local(a)]
        assume(addresses)
        text = "\n".join(f"root@{a}" for a in addresses)
        self.assertEqual(
            parse_pm_text(text, is_local=is_local),
            [
                _pm(f"root@{a}", f"qemu+ssh://root@{a}/system", i)
                for i, a in enumerate(addresses, 1)
            ],
        )
