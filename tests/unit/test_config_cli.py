"""
C{python -m vorchd.config_cli}, the settings as install.sh reads them: run as a real
process, on real files in a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import attrs
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import refused_port, require
from vorchd.config import Settings
from vorchd.config_cli import KEYS

REPO = Path(__file__).resolve().parents[2]

INSTALL_SH_KEYS = [
    "port",
    "interface",
    "redis.host",
    "redis.port",
    "redis.password",
    "admin_port",
    "admin_passwd_file",
]


def config_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """
    Run C{python -m vorchd.config_cli ARGS} from the repository, as install.sh does, with
    none of the caller's C{VORCHD_*} variables unless C{env} gives them.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VORCHD_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "vorchd.config_cli", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_ini(directory: Path, text: str) -> Path:
    ini = directory / "vorchd.ini"
    ini.write_text(text)
    return ini


def temp_dir(case: SynchronousTestCase) -> Path:
    """
    A new empty directory, removed when C{case} is done.
    """
    path = Path(tempfile.mkdtemp(prefix="vorchd-test-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path


class GetTests(SynchronousTestCase):
    def test_get_prints_one_line_per_key_in_order(self) -> None:
        """get prints each asked key's value on a line of its own, in the order asked."""
        tmp_path = temp_dir(self)
        ini = write_ini(
            tmp_path,
            "[server]\nport = 8123\ninterface = 127.0.0.2\n"
            "[redis]\nurl = redis://:s3cret@10.0.0.7:6390/2\n"
            "[admin]\npasswd_file = admin.passwd\n",
        )
        done = config_cli("get", "--config", str(ini), *INSTALL_SH_KEYS, "redis.db")
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertEqual(
            done.stdout.split("\n"),
            [
                "8123",
                "127.0.0.2",
                "10.0.0.7",
                "6390",
                "s3cret",
                "18123",
                str(tmp_path / "admin.passwd"),
                "2",
                "",
            ],
        )

    def test_get_unset_values_are_empty_lines(self) -> None:
        """An unset value (no interface, no Redis password, admin port off) is an empty line."""
        tmp_path = temp_dir(self)
        ini = write_ini(tmp_path, "[admin]\nport = off\n")
        done = config_cli("get", "--config", str(ini), "interface", "redis.password", "admin_port")
        self.assertEqual((done.returncode, done.stdout), (0, "\n\n\n"))

    def test_get_applies_the_environment_like_the_daemon(self) -> None:
        """VORCHD_PORT and VORCHD_REDIS override the ini, and VORCHD_CONFIG names it."""
        tmp_path = temp_dir(self)
        ini = write_ini(tmp_path, "[server]\nport = 8123\n")
        env = {"VORCHD_PORT": "8089", "VORCHD_REDIS": "redis://127.0.0.9:7000/0"}
        done = config_cli("get", "--config", str(ini), "port", "admin_port", "redis.host", env=env)
        self.assertEqual(done.stdout, "8089\n18089\n127.0.0.9\n")
        done = config_cli("get", "port", env={"VORCHD_CONFIG": str(ini)})
        self.assertEqual(done.stdout, "8123\n")

    def test_get_mappings_as_json(self) -> None:
        """A mapping is one line of JSON."""
        tmp_path = temp_dir(self)
        ini = write_ini(tmp_path, "[allocation]\ncpu_ratio = 4\n")
        done = config_cli("get", "--config", str(ini), "ratios")
        self.assertEqual(done.stdout, '{"cpu": 4.0, "ram": 1.0, "disk": 1.0}\n')

    def test_get_every_key_known(self) -> None:
        """Every field of Settings can be asked for, the Redis address by its parts."""
        tmp_path = temp_dir(self)
        parts = {"redis.host", "redis.port", "redis.db", "redis.password"}
        parts |= {"redis.master", "redis.sentinels"}
        self.assertEqual(set(KEYS), {a.name for a in attrs.fields(Settings)} - {"redis"} | parts)
        ini = write_ini(tmp_path, "")
        done = config_cli("get", "--config", str(ini), *KEYS)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(len(done.stdout.split("\n")), len(KEYS) + 1)

    def test_get_bad_ini_names_file_and_reason(self) -> None:
        """A setting vorchd cannot use exits 1, naming the file and what is wrong, printing no
        values."""
        for text, reason in [
            ("[server]\nport = eighty\n", "[server] port = 'eighty' is not a number"),
            ("[redis]\nurl = http://x\n", "expected redis://host[:port][/db]"),
            ("not an ini\n", "File contains no section headers"),
        ]:
            tmp_path = temp_dir(self)
            ini = write_ini(tmp_path, text)
            done = config_cli("get", "--config", str(ini), "port")
            self.assertEqual((done.returncode, done.stdout), (1, ""), (text, reason))
            self.assertIn(f"config {ini}", done.stderr, (text, reason))
            self.assertIn(reason, done.stderr, (text, reason))
            self.assertNotIn("Traceback", done.stderr, (text, reason))

    def test_get_missing_ini(self) -> None:
        """An ini that does not exist exits 1, naming it."""
        tmp_path = temp_dir(self)
        done = config_cli("get", "--config", str(tmp_path / "nope.ini"), "port")
        self.assertEqual((done.returncode, done.stdout), (1, ""))
        self.assertIn(f"config {tmp_path / 'nope.ini'}", done.stderr)

    def test_get_bad_environment(self) -> None:
        """A VORCHD_PORT that is not a port exits 1, saying so."""
        tmp_path = temp_dir(self)
        ini = write_ini(tmp_path, "")
        done = config_cli("get", "--config", str(ini), "port", env={"VORCHD_PORT": "http"})
        self.assertEqual((done.returncode, done.stdout), (1, ""))
        self.assertIn("VORCHD_PORT='http' is not a port", done.stderr)

    def test_get_refuses_a_value_with_a_line_break(self) -> None:
        """A value spanning lines (an indented ini continuation) would shift every value after
        it: it is refused, not printed."""
        tmp_path = temp_dir(self)
        ini = write_ini(
            tmp_path, "[libvirt]\nssh_uri_template = qemu+ssh://{host}/system\n  more\n"
        )
        done = config_cli("get", "--config", str(ini), "ssh_uri_template", "port")
        self.assertEqual((done.returncode, done.stdout), (1, ""))
        self.assertIn("ssh_uri_template holds a line break", done.stderr)

    def test_get_unknown_key_is_a_usage_error(self) -> None:
        """An unknown key exits 2, listing the known ones; so does no key at all."""
        tmp_path = temp_dir(self)
        ini = write_ini(tmp_path, "")
        done = config_cli("get", "--config", str(ini), "port", "prot")
        self.assertEqual((done.returncode, done.stdout), (2, ""))
        self.assertIn("unknown setting 'prot'", done.stderr)
        self.assertIn("redis.host", done.stderr)
        self.assertEqual(config_cli("get", "--config", str(ini)).returncode, 2)

    def test_usage(self) -> None:
        """No command, or an unknown one, exits 2 with the usage; --help exits 0 with it."""
        for args in ([], ["set", "port"]):
            done = config_cli(*args)
            self.assertEqual((done.returncode, done.stdout), (2, ""))
            self.assertIn("usage: python -m vorchd.config_cli get", done.stderr)
        done = config_cli("--help")
        self.assertEqual(done.returncode, 0)
        self.assertIn("check [DAEMON OPTIONS...]", done.stdout)


def write_inputs(directory: Path) -> list[str]:
    """
    An ini without an admin port, and three good input files: the options C{check} and
    C{twistd vorchd} take for them.
    """
    ini = write_ini(directory, "[admin]\nport = off\n")
    (directory / "pm_file").write_text("test:///default\n")
    (directory / "image_file").write_text("/srv/images/cirros-0.3.4-x86_64-disk.img\n")
    (directory / "flavor_file").write_text('{"types": [{"cpu": 1, "ram": 512, "disk": 1}]}\n')
    return [
        "--config",
        str(ini),
        "--pm-file",
        str(directory / "pm_file"),
        "--image-file",
        str(directory / "image_file"),
        "--flavor-file",
        str(directory / "flavor_file"),
    ]


class CheckTests(SynchronousTestCase):
    def test_check_good_inputs(self) -> None:
        """check accepts the settings and three good files silently, exit 0."""
        tmp_path = temp_dir(self)
        done = config_cli("check", *write_inputs(tmp_path))
        self.assertEqual((done.returncode, done.stdout, done.stderr), (0, "", ""))

    def test_check_malformed_flavor_file(self) -> None:
        """A malformed file exits 1 with the daemon's own message: file, line and reason."""
        tmp_path = temp_dir(self)
        options = write_inputs(tmp_path)
        (tmp_path / "flavor_file").write_text(
            '{"types": [\n'
            '  {"cpu": 1, "ram": 512, "disk": 1},\n'
            '  {"cpu": 0, "ram": 1, "disk": 1}\n'
            "]}\n"
        )
        done = config_cli("check", *options)
        self.assertEqual((done.returncode, done.stdout), (1, ""))
        self.assertEqual(
            done.stderr,
            f"vorchd: flavor_file {tmp_path / 'flavor_file'}, line 3:"
            " flavor 2: 'cpu' must be a positive integer, not 0\n",
        )

    def test_check_bad_settings_and_missing_files(self) -> None:
        """A bad setting or a missing input file is refused as the daemon refuses it."""
        tmp_path = temp_dir(self)
        options = write_inputs(tmp_path)
        done = config_cli("check", *options, "--port", "x")
        self.assertEqual(done.returncode, 1)
        self.assertTrue(done.stderr.startswith("vorchd: "))
        (tmp_path / "pm_file").unlink()
        done = config_cli("check", *options)
        self.assertEqual(done.returncode, 1)
        self.assertIn(f"vorchd: pm_file {tmp_path / 'pm_file'}: cannot read", done.stderr)


def unused_port(testcase) -> int:
    """
    A TCP port nothing listens on until C{testcase} ends (L{refused_port}), and that no
    install.sh pid file names.
    """
    while True:
        port = refused_port(testcase)
        if not Path(f"/run/vorchd-{port}.pid").exists():
            return port


def install_sh_stop(env: dict[str, str]) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VORCHD_")}
    return subprocess.run(
        ["bash", str(REPO / "install.sh"), "stop"],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


class InstallShTests(SynchronousTestCase):
    def test_install_sh_stop_reads_the_ini_through_config_cli(self) -> None:
        """install.sh stop learns the port from the ini through config_cli; without the venv
        it reads no ini and takes VORCHD_PORT. No daemon runs there: it says so, exit 0."""
        require(None if os.geteuid() == 0 else "install.sh runs as root")
        tmp_path = temp_dir(self)
        port, other = unused_port(self), unused_port(self)
        ini = write_ini(tmp_path, f"[server]\nport = {port}\n")
        done = install_sh_stop({"VORCHD_CONFIG": str(ini)})
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertEqual(done.stdout, f"install.sh: no vorchd running on port {port}\n")

        done = install_sh_stop(
            {
                "VORCHD_CONFIG": str(ini),
                "VORCHD_VENV": str(tmp_path / "no-venv"),
                "VORCHD_PORT": str(other),
            }
        )
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertEqual(done.stdout, f"install.sh: no vorchd running on port {other}\n")

        bad = write_ini(tmp_path, "[server]\nport = eighty\n")
        done = install_sh_stop({"VORCHD_CONFIG": str(bad)})
        self.assertEqual(done.returncode, 1)
        self.assertIn(f"config {bad}: [server] port = 'eighty' is not a number", done.stderr)
