"""
C{python -m vorchd.linuximage PATH}, as install.sh runs it: a bootable FAT disk image
holding syslinux, this machine's kernel and the initramfs, the same bytes when built
again. (That it boots and serves its page: L{tests.system.test_reachable_vms}.)
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import REPO, require, tmpdir
from vorchd.linuximage import PACKAGES


def missing() -> str | None:
    tools = [t for t in ("mformat", "mcopy", "mdir", "syslinux") if shutil.which(t) is None]
    if tools or not Path("/bin/busybox").exists() or not glob.glob("/boot/vmlinuz-*"):
        return f"the Linux example needs {' '.join(PACKAGES)} (install.sh installs them)"
    return None


class LinuxImageCommandTests(SynchronousTestCase):
    def build(self, path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "vorchd.linuximage", str(path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )

    def test_builds_bootable_image(self):
        """
        The command prints the image's path; the image is a FAT file system whose boot
        sector is syslinux's (the BIOS boot signature at its end), holding syslinux's
        loader, its configuration, the kernel and the initramfs; built again, it is the
        same bytes.
        """
        require(missing())
        directory = Path(tmpdir(self))
        one, two = directory / "one.img", directory / "two.img"
        done = self.build(one)
        self.assertEqual((done.returncode, done.stdout, done.stderr), (0, f"{one}\n", ""))
        self.assertEqual(self.build(two).returncode, 0)
        self.assertEqual(one.read_bytes(), two.read_bytes())
        boot = one.read_bytes()[:512]
        self.assertEqual(boot[510:], b"\x55\xaa")
        self.assertIn(b"SYSLINUX", one.read_bytes()[:4096])
        listing = subprocess.run(
            ["mdir", "-a", "-b", "-i", str(one), "::/"], capture_output=True, text=True, check=True
        ).stdout.lower()
        for name in ("ldlinux.sys", "ldlinux.c32", "syslinux.cfg", "vmlinuz", "initrd.gz"):
            self.assertIn(f"::/{name}", listing)

    def test_bad_path(self):
        """
        A path it cannot write fails with a message and a non-zero status.
        """
        require(missing())
        done = self.build(Path("/nonexistent/dir/x.img"))
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("python -m vorchd.linuximage", done.stderr)
