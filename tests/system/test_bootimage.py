"""
Tests for L{vorchd.bootimage}: the hand-made boot sector, the image writer, its command line,
and a real boot under QEMU.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import require
from vorchd.bootimage import (
    BOOT_MESSAGE,
    LOAD_ADDRESS,
    MAX_MESSAGE_LENGTH,
    boot_sector,
    main,
    write_image,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Generous, because SeaBIOS under TCG on a loaded CI machine can be slow; it is a deadline for
# polling, not a sleep, so a healthy run finishes in well under a second.
BOOT_TIMEOUT = 60.0


def umask_077(case: SynchronousTestCase) -> None:
    """
    Run the rest of C{case} under a restrictive umask, so a mode that merely follows the
    umask shows.
    """
    old = os.umask(0o077)
    case.addCleanup(os.umask, old)


def temp_dir(case: SynchronousTestCase) -> Path:
    """
    A new empty directory, removed when C{case} is done.
    """
    path = Path(tempfile.mkdtemp(prefix="vorchd-test-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path


class BootImageTests(SynchronousTestCase):
    def test_sector_is_512_bytes(self) -> None:
        """The boot sector is exactly one 512-byte sector."""
        self.assertEqual(len(boot_sector()), 512)

    def test_sector_ends_with_boot_signature(self) -> None:
        """The sector ends with 0x55 0xAA, without which the BIOS will not boot it."""
        self.assertEqual(boot_sector()[510:], b"\x55\xaa")

    def test_sector_contains_default_message(self) -> None:
        """By default the sector carries BOOT_MESSAGE, NUL-terminated."""
        self.assertEqual(BOOT_MESSAGE, b"vorchd guest booted\r\n")
        self.assertIn(BOOT_MESSAGE + b"\x00", boot_sector())

    def test_sector_code_points_at_message(self) -> None:
        """The `mov si, imm16` operand is the message's address once loaded at 0x7C00."""
        sector = boot_sector(b"hello")
        # The code starts: cli; xor ax,ax; mov ds,ax; cld; mov si, imm16 (BE lo hi).
        self.assertEqual(sector[:6], b"\xfa\x31\xc0\x8e\xd8\xfc")
        self.assertEqual(sector[6], 0xBE)
        address = int.from_bytes(sector[7:9], "little")
        offset = address - LOAD_ADDRESS
        self.assertEqual(sector[offset : offset + 6], b"hello\x00")

    def test_sector_writes_to_com1_and_halts(self) -> None:
        """The code loads DX with COM1 (0x3F8) and ends with a `hlt` loop."""
        sector = boot_sector()
        self.assertIn(b"\xba\xf8\x03", sector)  # mov dx, 0x3F8
        self.assertIn(b"\xf4\xeb\xfd", sector)  # hlt; jmp back to the hlt

    def test_sector_custom_message(self) -> None:
        """A custom message replaces the default one."""
        sector = boot_sector(b"custom\n")
        self.assertIn(b"custom\n\x00", sector)
        self.assertNotIn(BOOT_MESSAGE, sector)
        self.assertEqual(len(sector), 512)

    def test_sector_longest_message_fits(self) -> None:
        """A message of MAX_MESSAGE_LENGTH bytes fits and leaves the signature intact."""
        message = b"x" * MAX_MESSAGE_LENGTH
        sector = boot_sector(message)
        self.assertEqual(len(sector), 512)
        self.assertEqual(sector[510:], b"\x55\xaa")
        self.assertIn(message + b"\x00", sector)

    def test_sector_rejects_too_long_message(self) -> None:
        """A message one byte over MAX_MESSAGE_LENGTH raises ValueError."""
        with self.assertRaises(ValueError):
            boot_sector(b"x" * (MAX_MESSAGE_LENGTH + 1))

    def test_sector_rejects_nul_in_message(self) -> None:
        """A message containing NUL raises ValueError: the code would stop printing there."""
        with self.assertRaises(ValueError):
            boot_sector(b"abc\x00def")

    def test_sector_rejects_str_message(self) -> None:
        """A str message raises TypeError rather than being encoded implicitly."""
        with self.assertRaises(TypeError):
            boot_sector("text")  # type: ignore[arg-type]

    def test_write_image_default_size_and_padding(self) -> None:
        """The default image is 1 MiB: the boot sector followed only by zeros."""
        tmp_path = temp_dir(self)
        path = tmp_path / "disk.img"
        write_image(path)
        data = path.read_bytes()
        self.assertEqual(len(data), 1024 * 1024)
        self.assertEqual(data[:512], boot_sector())
        self.assertEqual(data[512:], bytes(len(data) - 512))

    def test_write_image_custom_size(self) -> None:
        """An image of any multiple of 512 bytes (down to one sector) has exactly that size."""
        for size in [512, 1024, 64 * 1024]:
            tmp_path = temp_dir(self)
            path = tmp_path / "disk.img"
            write_image(path, size=size)
            data = path.read_bytes()
            self.assertEqual(len(data), size, size)
            self.assertEqual(data[:512], boot_sector(), size)

    def test_write_image_custom_message(self) -> None:
        """The image's boot sector carries the given message."""
        tmp_path = temp_dir(self)
        path = tmp_path / "disk.img"
        write_image(path, message=b"other\r\n", size=512)
        self.assertEqual(path.read_bytes(), boot_sector(b"other\r\n"))

    def test_write_image_rejects_bad_size(self) -> None:
        """A size below 512 or not a multiple of 512 raises ValueError and writes nothing."""
        for size in [0, 511, 513, 1000, -512]:
            tmp_path = temp_dir(self)
            with self.assertRaises(ValueError):
                write_image(tmp_path / "disk.img", size=size)
            self.assertEqual(list(tmp_path.iterdir()), [], size)

    def test_write_image_mode_0644(self) -> None:
        """The image is mode 0644 even under umask 077, so the hypervisor's user can read it."""
        tmp_path = temp_dir(self)
        umask_077(self)
        path = tmp_path / "disk.img"
        write_image(path)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o644)

    def test_write_image_replaces_existing_file(self) -> None:
        """An existing file is replaced whole (by rename: a new inode), leaving no temp files."""
        tmp_path = temp_dir(self)
        path = tmp_path / "disk.img"
        path.write_bytes(b"old contents" * 100_000)
        old_inode = path.stat().st_ino
        write_image(path, size=4096)
        self.assertEqual(path.read_bytes()[:512], boot_sector())
        self.assertEqual(path.stat().st_size, 4096)
        self.assertNotEqual(path.stat().st_ino, old_inode)
        self.assertEqual([p.name for p in tmp_path.iterdir()], ["disk.img"])

    def test_write_image_failure_leaves_old_file(self) -> None:
        """A rejected message leaves an existing image untouched and no temp file behind."""
        tmp_path = temp_dir(self)
        path = tmp_path / "disk.img"
        path.write_bytes(b"old")
        with self.assertRaises(ValueError):
            write_image(path, message=b"bad\x00")
        self.assertEqual(path.read_bytes(), b"old")
        self.assertEqual([p.name for p in tmp_path.iterdir()], ["disk.img"])

    def test_write_image_failed_rename_cleans_up(self) -> None:
        """If the final rename fails (target is a directory), the error propagates, no temp
        file."""
        tmp_path = temp_dir(self)
        target = tmp_path / "disk.img"
        target.mkdir()
        with self.assertRaises(OSError):
            write_image(target)
        self.assertEqual([p.name for p in tmp_path.iterdir()], ["disk.img"])
        self.assertTrue(target.is_dir())

    def test_main_writes_image_and_prints_path(self) -> None:
        """main() writes the image of the requested size, prints its path and returns 0."""
        tmp_path = temp_dir(self)
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        path = tmp_path / "disk.img"
        self.assertEqual(main([str(path), "--size", "2048"]), 0)
        self.assertEqual(stdout.getvalue(), f"{path}\n")
        data = path.read_bytes()
        self.assertEqual(len(data), 2048)
        self.assertEqual(data[:512], boot_sector())

    def test_main_rejects_bad_size(self) -> None:
        """main() exits with status 2 (usage error) for a size that is not a multiple of 512."""
        tmp_path = temp_dir(self)
        with self.assertRaises(SystemExit) as excinfo:
            main([str(tmp_path / "disk.img"), "--size", "1000"])
        self.assertEqual(excinfo.exception.code, 2)
        self.assertEqual(list(tmp_path.iterdir()), [])

    def test_module_command_line(self) -> None:
        """`python -m vorchd.bootimage PATH` writes a 1 MiB image and prints PATH."""
        tmp_path = temp_dir(self)
        path = tmp_path / "disk.img"
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        result = subprocess.run(
            [sys.executable, "-m", "vorchd.bootimage", str(path)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.assertEqual(result.stdout, f"{path}\n")
        self.assertEqual(path.stat().st_size, 1024 * 1024)
        self.assertEqual(path.read_bytes()[:512], boot_sector())

    def test_image_boots_under_qemu(self) -> None:
        """QEMU (TCG, no /dev/kvm needed) boots the image and BOOT_MESSAGE reaches COM1."""
        tmp_path = temp_dir(self)
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            require("qemu-system-x86_64 is not installed")
        image = tmp_path / "disk.img"
        serial = tmp_path / "serial.log"
        write_image(image)
        # stdin from /dev/null: QEMU must not touch the terminal pytest runs in.
        process = subprocess.Popen(
            [
                qemu,
                "-nodefaults",
                "-machine",
                "pc",
                "-accel",
                "tcg",
                "-display",
                "none",
                "-m",
                "16",
                "-drive",
                f"file={image},format=raw",
                "-serial",
                f"file:{serial}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output = b""
        try:
            deadline = time.monotonic() + BOOT_TIMEOUT
            while time.monotonic() < deadline:
                if serial.exists():
                    output = serial.read_bytes()
                    if BOOT_MESSAGE in output:
                        break
                if process.poll() is not None:
                    break
                time.sleep(0.05)
        finally:
            process.kill()
            qemu_output = process.communicate()[0]
        self.assertIn(
            BOOT_MESSAGE,
            output,
            f"serial output {output!r}; qemu said {qemu_output.decode(errors='replace')!r}",
        )
