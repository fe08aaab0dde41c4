"""
C{python -m vorchd.cephlocal_cli ini}, as install.sh ceph runs it: a copy of the user's ini
with its C{[volumes]} on the one-node cluster, read by the daemon's own settings code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import tmpdir
from vorchd.cephlocal_cli import with_rbd_volumes
from vorchd.config import load_settings

REPO = Path(__file__).resolve().parents[2]
RBD = {
    "rbd_monitors": "127.0.0.1:6790",
    "rbd_pool": "vorchd",
    "rbd_user": "vorchd",
    "rbd_keyring": "/k",
    "rbd_client_conf": "/q.conf",
}


class WithRbdVolumesTests(SynchronousTestCase):
    def test_replaces_in_the_section_only(self):
        """
        The settings replace the lines that set them in [volumes] (a commented line and
        the same key in another section are left as they are); every other line stays.
        """
        ini = "[server]\nport = 80\n[volumes]\n# backend = x\nbackend=local\nrbd_pool = old\n"
        ini += "[other]\nbackend = local\n"
        self.assertEqual(
            with_rbd_volumes(ini, RBD),
            "[server]\nport = 80\n[volumes]\nrbd_monitors = 127.0.0.1:6790\n"
            "rbd_user = vorchd\nrbd_keyring = /k\nrbd_client_conf = /q.conf\n"
            "# backend = x\nbackend = rbd\nrbd_pool = vorchd\n[other]\nbackend = local\n",
        )

    def test_adds_the_section(self):
        """
        An ini without [volumes] gets one at its end.
        """
        self.assertEqual(
            with_rbd_volumes("[server]\nport = 80", RBD),
            "[server]\nport = 80\n\n[volumes]\nbackend = rbd\n"
            + "".join(f"{k} = {v}\n" for k, v in RBD.items()),
        )

    def test_cli_writes_what_the_daemon_reads(self):
        """
        The documented ini, copied by the CLI, is read by the daemon's settings code as
        the rbd backend on the cluster given, everything else as it was; the copy is as
        readable as the ini it came from.
        """
        directory = tmpdir(self)
        source, out = directory / "vorchd.ini", directory / "ceph" / "vorchd.ini"
        source.write_text((REPO / "etc" / "vorchd.ini").read_text())
        source.chmod(0o640)
        keyring = directory / "ceph.client.vorchd.keyring"
        keyring.write_text("[client.vorchd]\n\tkey = QUJDRA==\n")
        done = subprocess.run(
            [sys.executable, "-m", "vorchd.cephlocal_cli", "ini", "--config", str(source)]
            + ["--out", str(out), "--monitor", "127.0.0.1:6790", "--keyring", str(keyring)]
            + ["--client-conf", str(directory / "q.conf")],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        settings = load_settings(str(out), environ={})
        self.assertEqual(settings.volume_backend, "rbd")
        self.assertEqual(settings.ceph.monitors, (("127.0.0.1", 6790),))
        self.assertEqual((settings.ceph.pool, settings.ceph.user), ("vorchd", "vorchd"))
        self.assertEqual(settings.ceph.key, "QUJDRA==")
        self.assertEqual(settings.ceph.client_conf, str(directory / "q.conf"))
        self.assertEqual(settings.port, load_settings(str(source), environ={}).port)
        self.assertEqual(out.stat().st_mode & 0o777, 0o640)
