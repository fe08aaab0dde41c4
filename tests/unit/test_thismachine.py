"""
L{vorchd.thismachine}: whether a host named in an input file is this machine, and when
the DNS lookups that takes are made (never at import, never for a pm_file that needs none).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vorchd import thismachine
from vorchd.inventory import LOCAL_URI, parse_pm_text

REPO = Path(__file__).resolve().parents[2]

LOOKUPS = ("gethostname", "getfqdn", "getaddrinfo", "gethostbyname", "gethostbyaddr")


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """
    Every name lookup made through the socket module, recorded (and answered as the real
    ones would, so the code under test runs on).
    """
    made: list[str] = []
    for name in LOOKUPS:
        real = getattr(socket, name)

        def record(*args, _name=name, _real=real):
            made.append(_name)
            return _real(*args)

        monkeypatch.setattr(socket, name, record)
    return made


def test_import_looks_nothing_up() -> None:
    """Importing vorchd.inventory, vorchd.thismachine or the daemon's plugin options makes
    no name lookup: the lookups come when a pm_file needs them."""
    program = (
        "import socket, sys\n"
        f"for name in {LOOKUPS!r}:\n"
        "    def refuse(*args, _name=name):\n"
        "        sys.exit('looked up at import: ' + _name)\n"
        "    setattr(socket, name, refuse)\n"
        "import vorchd.inventory, vorchd.thismachine, vorchd.config_cli\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_uris_and_loopback_lines_look_nothing_up(lookups: list[str]) -> None:
    """A pm_file of full URIs and loopback addresses is read without any lookup, with the
    default is_local."""
    text = "test:///default\nqemu+tcp://10.0.0.5/system\n127.0.0.1\nroot@[::1]\n127.0.0.9\n"
    # Lines 3 to 5 are all this machine: one PM may not be listed twice, so one at a time.
    for line in text.split()[2:]:
        assert [e.uri for e in parse_pm_text(line)] == [LOCAL_URI]
    assert len(parse_pm_text(text.split("127.0.0.1")[0])) == 2
    assert lookups == []


def test_default_is_local_looks_up_once_on_first_need(lookups: list[str]) -> None:
    """The default is_local looks this machine's names up on the first host that is not a
    loopback address, and only once."""
    is_local = thismachine.default_is_local()
    assert is_local("127.0.0.1")
    assert lookups == []
    assert not is_local("192.0.2.1")
    asked = len(lookups)
    assert asked > 0
    assert is_local(socket.gethostname().upper())
    assert not is_local("198.51.100.7")
    assert len(lookups) == asked + 1  # the test's own gethostname() only


def test_this_machine_forms() -> None:
    """this_machine knows loopback in every form, this machine's name in any case, and no
    outside address."""
    is_local = thismachine.this_machine()
    for host in ("localhost", "LOCALHOST", "127.0.0.1", "127.3.2.1", "::1", "0:0::1"):
        assert is_local(host), host
    assert is_local("::ffff:127.0.0.1")
    assert is_local(socket.gethostname().upper())
    for host in ("192.0.2.1", "2001:db8::1", "example.invalid", "::ffff:192.0.2.1"):
        assert not is_local(host), host


def test_addresses() -> None:
    """canonical_ip compresses IPv6 and refuses names; is_loopback is for addresses only."""
    assert thismachine.canonical_ip("0:0:0:0:0:0:0:1") == "::1"
    assert thismachine.canonical_ip("10.0.0.1") == "10.0.0.1"
    assert thismachine.canonical_ip("localhost") is None
    assert thismachine.is_loopback("127.255.0.1")
    assert thismachine.is_loopback("::ffff:127.0.0.1")
    assert not thismachine.is_loopback("localhost")
    assert not thismachine.is_loopback("10.0.0.1")


def test_local_names_without_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose own name does not resolve still knows its loopback names."""

    def fail(*args):
        raise OSError("no DNS here")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    monkeypatch.setattr(socket, "gethostname", lambda: "Lonely-Host")
    monkeypatch.setattr(socket, "getfqdn", fail)
    assert thismachine.local_names() == {"localhost", "127.0.0.1", "::1", "lonely-host"}
