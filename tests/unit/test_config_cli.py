"""
C{python -m vorchd.config_cli}, the settings as install.sh reads them: run as a real
process, on real files in a temporary directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

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


def test_get_prints_one_line_per_key_in_order(tmp_path: Path) -> None:
    """get prints each asked key's value on a line of its own, in the order asked."""
    ini = write_ini(
        tmp_path,
        "[server]\nport = 8123\ninterface = 127.0.0.2\n"
        "[redis]\nurl = redis://:s3cret@10.0.0.7:6390/2\n"
        "[admin]\npasswd_file = admin.passwd\n",
    )
    done = config_cli("get", "--config", str(ini), *INSTALL_SH_KEYS, "redis.db")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.split("\n") == [
        "8123",
        "127.0.0.2",
        "10.0.0.7",
        "6390",
        "s3cret",
        "18123",
        str(tmp_path / "admin.passwd"),
        "2",
        "",
    ]


def test_get_unset_values_are_empty_lines(tmp_path: Path) -> None:
    """An unset value (no interface, no Redis password, admin port off) is an empty line."""
    ini = write_ini(tmp_path, "[admin]\nport = off\n")
    done = config_cli("get", "--config", str(ini), "interface", "redis.password", "admin_port")
    assert (done.returncode, done.stdout) == (0, "\n\n\n")


def test_get_applies_the_environment_like_the_daemon(tmp_path: Path) -> None:
    """VORCHD_PORT and VORCHD_REDIS override the ini, and VORCHD_CONFIG names it."""
    ini = write_ini(tmp_path, "[server]\nport = 8123\n")
    env = {"VORCHD_PORT": "8089", "VORCHD_REDIS": "redis://127.0.0.9:7000/0"}
    done = config_cli("get", "--config", str(ini), "port", "admin_port", "redis.host", env=env)
    assert done.stdout == "8089\n18089\n127.0.0.9\n"
    done = config_cli("get", "port", env={"VORCHD_CONFIG": str(ini)})
    assert done.stdout == "8123\n"


def test_get_mappings_as_json(tmp_path: Path) -> None:
    """A mapping is one line of JSON."""
    ini = write_ini(tmp_path, "[allocation]\ncpu_ratio = 4\n")
    done = config_cli("get", "--config", str(ini), "ratios")
    assert done.stdout == '{"cpu": 4.0, "ram": 1.0, "disk": 1.0}\n'


def test_get_every_key_known(tmp_path: Path) -> None:
    """Every field of Settings can be asked for, the Redis address by its parts."""
    parts = {"redis.host", "redis.port", "redis.db", "redis.password"}
    assert set(KEYS) == {a.name for a in attrs.fields(Settings)} - {"redis"} | parts
    ini = write_ini(tmp_path, "")
    done = config_cli("get", "--config", str(ini), *KEYS)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split("\n")) == len(KEYS) + 1


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[server]\nport = eighty\n", "[server] port = 'eighty' is not a number"),
        ("[redis]\nurl = http://x\n", "expected redis://host[:port][/db]"),
        ("not an ini\n", "File contains no section headers"),
    ],
)
def test_get_bad_ini_names_file_and_reason(tmp_path: Path, text: str, reason: str) -> None:
    """A setting vorchd cannot use exits 1, naming the file and what is wrong, printing no
    values."""
    ini = write_ini(tmp_path, text)
    done = config_cli("get", "--config", str(ini), "port")
    assert (done.returncode, done.stdout) == (1, "")
    assert f"config {ini}" in done.stderr
    assert reason in done.stderr
    assert "Traceback" not in done.stderr


def test_get_missing_ini(tmp_path: Path) -> None:
    """An ini that does not exist exits 1, naming it."""
    done = config_cli("get", "--config", str(tmp_path / "nope.ini"), "port")
    assert (done.returncode, done.stdout) == (1, "")
    assert f"config {tmp_path / 'nope.ini'}" in done.stderr


def test_get_bad_environment(tmp_path: Path) -> None:
    """A VORCHD_PORT that is not a port exits 1, saying so."""
    ini = write_ini(tmp_path, "")
    done = config_cli("get", "--config", str(ini), "port", env={"VORCHD_PORT": "http"})
    assert (done.returncode, done.stdout) == (1, "")
    assert "VORCHD_PORT='http' is not a port" in done.stderr


def test_get_refuses_a_value_with_a_line_break(tmp_path: Path) -> None:
    """A value spanning lines (an indented ini continuation) would shift every value after
    it: it is refused, not printed."""
    ini = write_ini(tmp_path, "[libvirt]\nssh_uri_template = qemu+ssh://{host}/system\n  more\n")
    done = config_cli("get", "--config", str(ini), "ssh_uri_template", "port")
    assert (done.returncode, done.stdout) == (1, "")
    assert "ssh_uri_template holds a line break" in done.stderr


def test_get_unknown_key_is_a_usage_error(tmp_path: Path) -> None:
    """An unknown key exits 2, listing the known ones; so does no key at all."""
    ini = write_ini(tmp_path, "")
    done = config_cli("get", "--config", str(ini), "port", "prot")
    assert (done.returncode, done.stdout) == (2, "")
    assert "unknown setting 'prot'" in done.stderr
    assert "redis.host" in done.stderr
    assert config_cli("get", "--config", str(ini)).returncode == 2


def test_usage() -> None:
    """No command, or an unknown one, exits 2 with the usage; --help exits 0 with it."""
    for args in ([], ["set", "port"]):
        done = config_cli(*args)
        assert (done.returncode, done.stdout) == (2, "")
        assert "usage: python -m vorchd.config_cli get" in done.stderr
    done = config_cli("--help")
    assert done.returncode == 0
    assert "check [DAEMON OPTIONS...]" in done.stdout


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


def test_check_good_inputs(tmp_path: Path) -> None:
    """check accepts the settings and three good files silently, exit 0."""
    done = config_cli("check", *write_inputs(tmp_path))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_check_malformed_flavor_file(tmp_path: Path) -> None:
    """A malformed file exits 1 with the daemon's own message: file, line and reason."""
    options = write_inputs(tmp_path)
    (tmp_path / "flavor_file").write_text(
        '{"types": [\n'
        '  {"cpu": 1, "ram": 512, "disk": 1},\n'
        '  {"cpu": 0, "ram": 1, "disk": 1}\n'
        "]}\n"
    )
    done = config_cli("check", *options)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vorchd: flavor_file {tmp_path / 'flavor_file'}, line 3:"
        " flavor 2: 'cpu' must be a positive integer, not 0\n"
    )


def test_check_bad_settings_and_missing_files(tmp_path: Path) -> None:
    """A bad setting or a missing input file is refused as the daemon refuses it."""
    options = write_inputs(tmp_path)
    done = config_cli("check", *options, "--port", "x")
    assert done.returncode == 1
    assert done.stderr.startswith("vorchd: ")
    (tmp_path / "pm_file").unlink()
    done = config_cli("check", *options)
    assert done.returncode == 1
    assert f"vorchd: pm_file {tmp_path / 'pm_file'}: cannot read" in done.stderr


def unused_port() -> int:
    """
    A TCP port nothing listens on, and no install.sh pid file names.
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
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


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root")
def test_install_sh_stop_reads_the_ini_through_config_cli(tmp_path: Path) -> None:
    """install.sh stop learns the port from the ini through config_cli; without the venv
    it reads no ini and takes VORCHD_PORT. No daemon runs there: it says so, exit 0."""
    port, other = unused_port(), unused_port()
    ini = write_ini(tmp_path, f"[server]\nport = {port}\n")
    done = install_sh_stop({"VORCHD_CONFIG": str(ini)})
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"install.sh: no vorchd running on port {port}\n"

    done = install_sh_stop(
        {
            "VORCHD_CONFIG": str(ini),
            "VORCHD_VENV": str(tmp_path / "no-venv"),
            "VORCHD_PORT": str(other),
        }
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"install.sh: no vorchd running on port {other}\n"

    bad = write_ini(tmp_path, "[server]\nport = eighty\n")
    done = install_sh_stop({"VORCHD_CONFIG": str(bad)})
    assert done.returncode == 1
    assert f"config {bad}: [server] port = 'eighty' is not a number" in done.stderr
