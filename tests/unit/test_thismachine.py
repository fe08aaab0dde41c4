"""
L{vorchd.thismachine}: whether a host named in an input file is this machine, and when
the DNS lookups that takes are made (never at import, never for a pm_file that needs none).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from vorchd import thismachine
from vorchd.inventory import LOCAL_URI, parse_pm_text

REPO = Path(__file__).resolve().parents[2]

LOOKUPS = ("gethostname", "getfqdn", "getaddrinfo", "gethostbyname", "gethostbyaddr")


class ThisMachineTests(SynchronousTestCase):
    def record_lookups(self) -> list[str]:
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

            self.patch(socket, name, record)
        return made

    def test_import_looks_nothing_up(self) -> None:
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
        self.assertEqual((done.returncode, done.stderr), (0, ""))

    def test_uris_and_loopback_lines_look_nothing_up(self) -> None:
        """A pm_file of full URIs and loopback addresses is read without any lookup, with the
        default is_local."""
        lookups = self.record_lookups()
        text = "test:///default\nqemu+tcp://10.0.0.5/system\n127.0.0.1\nroot@[::1]\n127.0.0.9\n"
        # Lines 3 to 5 are all this machine: one PM may not be listed twice, so one at a time.
        for line in text.split()[2:]:
            self.assertEqual([e.uri for e in parse_pm_text(line)], [LOCAL_URI], line)
        self.assertEqual(len(parse_pm_text(text.split("127.0.0.1")[0])), 2)
        self.assertEqual(lookups, [])

    def test_default_is_local_looks_up_once_on_first_need(self) -> None:
        """The default is_local looks this machine's names up on the first host that is not a
        loopback address, and only once."""
        lookups = self.record_lookups()
        is_local = thismachine.default_is_local()
        self.assertTrue(is_local("127.0.0.1"))
        self.assertEqual(lookups, [])
        self.assertFalse(is_local("192.0.2.1"))
        asked = len(lookups)
        self.assertGreater(asked, 0)
        self.assertTrue(is_local(socket.gethostname().upper()))
        self.assertFalse(is_local("198.51.100.7"))
        self.assertEqual(len(lookups), asked + 1)  # the test's own gethostname() only

    def test_this_machine_forms(self) -> None:
        """this_machine knows loopback in every form, this machine's name in any case, and no
        outside address."""
        is_local = thismachine.this_machine()
        for host in ("localhost", "LOCALHOST", "127.0.0.1", "127.3.2.1", "::1", "0:0::1"):
            self.assertTrue(is_local(host), host)
        self.assertTrue(is_local("::ffff:127.0.0.1"))
        self.assertTrue(is_local(socket.gethostname().upper()))
        for host in ("192.0.2.1", "2001:db8::1", "example.invalid", "::ffff:192.0.2.1"):
            self.assertFalse(is_local(host), host)

    def test_addresses(self) -> None:
        """canonical_ip compresses IPv6 and refuses names; is_loopback is for addresses only."""
        self.assertEqual(thismachine.canonical_ip("0:0:0:0:0:0:0:1"), "::1")
        self.assertEqual(thismachine.canonical_ip("10.0.0.1"), "10.0.0.1")
        self.assertIsNone(thismachine.canonical_ip("localhost"))
        self.assertTrue(thismachine.is_loopback("127.255.0.1"))
        self.assertTrue(thismachine.is_loopback("::ffff:127.0.0.1"))
        self.assertFalse(thismachine.is_loopback("localhost"))
        self.assertFalse(thismachine.is_loopback("10.0.0.1"))

    def test_local_names_without_dns(self) -> None:
        """A machine whose own name does not resolve still knows its loopback names."""

        def fail(*args):
            raise OSError("no DNS here")

        self.patch(socket, "getaddrinfo", fail)
        self.patch(socket, "gethostname", lambda: "Lonely-Host")
        self.patch(socket, "getfqdn", fail)
        self.assertEqual(
            thismachine.local_names(), {"localhost", "127.0.0.1", "::1", "lonely-host"}
        )
