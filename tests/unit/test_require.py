"""
One way for a test to need a real part: tests.harness.require fails loudly unless the
local opt-out is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.harness import REPO, require


class RequireTests(SynchronousTestCase):
    def setUp(self):
        saved = os.environ.pop("VORCHD_ALLOW_MISSING", None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, "VORCHD_ALLOW_MISSING", saved)

    def test_nothing_missing_passes(self):
        require(None)

    def test_missing_part_fails(self):
        with self.assertRaises(AssertionError) as caught:
            require("no libvirtd here")
        self.assertIn("no libvirtd here", str(caught.exception))
        self.assertIn("VORCHD_ALLOW_MISSING", str(caught.exception))

    def test_opt_out_skips(self):
        os.environ["VORCHD_ALLOW_MISSING"] = "1"
        self.addCleanup(os.environ.pop, "VORCHD_ALLOW_MISSING", None)
        with self.assertRaises(SkipTest):
            require("no libvirtd here")


# A machine without libvirtd (nor its sockets) and without redis-server, made in a mount
# namespace of its own: the programs hidden under /dev/null, /run/libvirt emptied.
_HIDE = (
    "set -e; mount -t tmpfs none /run/libvirt; "
    "for p in /usr/sbin/libvirtd /usr/sbin/virtlogd /usr/sbin/virtqemud "
    "/usr/bin/redis-server; do [ -e $p ] && mount --bind /dev/null $p; done; "
    'exec "$@"'
)


class MissingPartsTests(SynchronousTestCase):
    """
    The tiers as a plain pytest runs them on a machine that lacks libvirtd and Redis.
    """

    def setUp(self):
        require(
            None
            if os.geteuid() == 0 and shutil.which("unshare")
            else "needs root and unshare to hide libvirtd and Redis"
        )

    def pytest(self, *args: str, allow: bool = False) -> subprocess.CompletedProcess:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("VORCHD_ALLOW_MISSING", "VORCHD_REQUIRE_LIBVIRTD")
        }
        env["PYTHONPATH"] = str(REPO)
        if allow:
            env["VORCHD_ALLOW_MISSING"] = "1"
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _HIDE, "sh", *argv],
            cwd=str(REPO),
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def test_libvirtd_tiers_fail_without_libvirtd(self):
        """
        Tests that need libvirtd (a fleet of PMs, this machine's qemu:///system) fail,
        saying what is missing, rather than pass with skips; with the opt-out they skip.
        """
        files = ["tests/system/test_failed_start.py", "tests/system/test_end_to_end.py"]
        done = self.pytest(*files)
        self.assertNotEqual(done.returncode, 0, done.stdout)
        self.assertIn("a real part is missing", done.stdout)
        self.assertIn("4 failed", done.stdout)
        self.assertNotIn("skipped", done.stdout)
        allowed = self.pytest(*files, allow=True)
        self.assertEqual(allowed.returncode, 0, allowed.stdout)
        self.assertIn("4 skipped", allowed.stdout)

    def test_unit_tier_needs_neither_libvirtd_nor_redis(self):
        """
        tests/unit passes whole where neither libvirtd nor redis-server exists, without
        the opt-out: nothing in it needs them.
        """
        done = self.pytest("tests/unit", "--ignore=tests/unit/test_require.py")
        self.assertEqual(done.returncode, 0, done.stdout[-3000:])
        self.assertNotIn("skipped", done.stdout)
