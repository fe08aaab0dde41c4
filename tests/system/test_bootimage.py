"""
Tests for L{vorchd.bootimage}: the hand-made boot sector, the image writer, its command line,
and real boots under QEMU (TCG and KVM, raw and qcow2 overlay disks, and through libvirt) that
show the guest writes its marker sector to its disk before it prints its message.

(tests/unit/test_bootimage_code.py runs the boot code on a model machine.)
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import require
from tests.libvirtd_fleet import LibvirtdFleet, libvirtd_fleet_unavailable
from vorchd.bootimage import (
    BOOT_MESSAGE,
    DISK_ERROR_MESSAGE,
    DISK_MARKER,
    LOAD_ADDRESS,
    MARKER_LBA,
    MAX_MESSAGE_LENGTH,
    MIN_IMAGE_SIZE,
    SECTOR_SIZE,
    WRITTEN_SECTOR,
    boot_sector,
    main,
    write_image,
)
from vorchd.hypervisor.host import kvm_usable_here

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


def qemu_or_fail() -> str:
    """
    The path of qemu-system-x86_64 (and qemu-img must be there too); the test fails (or
    skips, see L{require}) without them.
    """
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None or shutil.which("qemu-img") is None:
        require("qemu-system-x86_64 or qemu-img is not installed")
    return qemu


def kvm_or_fail() -> None:
    """
    Fail the test (or skip it, see L{require}) unless this process can run KVM guests.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        require("/dev/kvm is missing or not usable here: KVM guests cannot run")


def make_overlay(base: Path, overlay: Path) -> None:
    """
    Create C{overlay}, a qcow2 image backed by the raw image C{base}, as vorchd's volumes are.
    """
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(overlay)],
        check=True,
        timeout=60,
    )


def read_sector(image: Path, lba: int, fmt: str = "raw") -> bytes:
    """
    Sector C{lba} of the disk image C{image} (of format C{fmt}), as a guest reads it: a qcow2
    overlay is read through qemu-img, so its backing file shows where it has no data.
    """
    if fmt == "raw":
        with open(image, "rb") as f:
            f.seek(lba * SECTOR_SIZE)
            return f.read(SECTOR_SIZE)
    with tempfile.TemporaryDirectory(prefix="vorchd-test-") as directory:
        raw = Path(directory) / "disk.raw"
        subprocess.run(
            ["qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(raw)],
            check=True,
            timeout=60,
        )
        return read_sector(raw, lba)


def wait_for_serial(serial: Path, alive=lambda: True) -> bytes:
    """
    The serial log C{serial} once it holds L{BOOT_MESSAGE} or L{DISK_ERROR_MESSAGE}, or
    when C{alive()} says the guest is gone, or after L{BOOT_TIMEOUT}.
    """
    output = b""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if serial.exists():
            output = serial.read_bytes()
            if BOOT_MESSAGE in output or DISK_ERROR_MESSAGE in output:
                break
        if not alive():
            break
        time.sleep(0.05)
    return output


def boot_qemu(drive: str, directory: Path, accel: str = "tcg") -> tuple[bytes, str]:
    """
    Boot QEMU from the disk C{drive} (a C{-drive} option) with C{accel}, until the guest has
    printed its message (or failed to); then stop QEMU cleanly (SIGTERM), so it flushes the
    disk, as libvirt's destroy does.

    @return: what the guest printed to COM1, and what QEMU printed.
    """
    serial = directory / f"serial-{time.monotonic_ns()}.log"
    # stdin from /dev/null: QEMU must not touch the terminal pytest runs in.
    process = subprocess.Popen(
        [
            qemu_or_fail(),
            "-nodefaults",
            "-machine",
            "pc",
            "-accel",
            accel,
            "-display",
            "none",
            "-m",
            "16",
            "-drive",
            drive,
            "-serial",
            f"file:{serial}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output = wait_for_serial(serial, lambda: process.poll() is None)
        process.send_signal(signal.SIGTERM)
        qemu_output = process.communicate(timeout=30)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return output, qemu_output.decode(errors="replace")


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
        # The code starts: cli; xor ax,ax; mov ds,ax; mov es,ax; cld.
        self.assertEqual(sector[:8], b"\xfa\x31\xc0\x8e\xd8\x8e\xc0\xfc")
        # After int 13h (CD 13) and cli: mov si, imm16 (BE lo hi).
        self.assertEqual(sector[0x1C:0x20], b"\xcd\x13\xfa\xbe")
        address = int.from_bytes(sector[0x20:0x22], "little")
        offset = address - LOAD_ADDRESS
        self.assertEqual(sector[offset : offset + 6], b"hello\x00")

    def test_sector_code_points_at_marker(self) -> None:
        """
        The `mov bx, imm16` operand (int 13h's buffer) is DISK_MARKER's address once loaded
        at 0x7C00; int 13h writes 1 sector (AX 0x0301) to cylinder 0, sector 2 (CX 0x0002).
        """
        sector = boot_sector()
        self.assertEqual(sector[0x10], 0xBB)
        offset = int.from_bytes(sector[0x11:0x13], "little") - LOAD_ADDRESS
        self.assertEqual(sector[offset : offset + len(DISK_MARKER)], DISK_MARKER)
        self.assertEqual(sector[0x13:0x19], b"\xb8\x01\x03\xb9\x02\x00")
        self.assertEqual(MARKER_LBA, 1)

    def test_written_sector_starts_with_marker(self) -> None:
        """The sector the guest writes is one sector starting with DISK_MARKER."""
        self.assertEqual(DISK_MARKER, b"vorchd guest wrote this sector\r\n")
        self.assertEqual(len(WRITTEN_SECTOR), SECTOR_SIZE)
        self.assertTrue(WRITTEN_SECTOR.startswith(DISK_MARKER))

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
        """
        The default image is 1 MiB: the boot sector followed only by zeros (so no marker
        where the guest will write it).
        """
        tmp_path = temp_dir(self)
        path = tmp_path / "disk.img"
        write_image(path)
        data = path.read_bytes()
        self.assertEqual(len(data), 1024 * 1024)
        self.assertEqual(data[:512], boot_sector())
        self.assertEqual(data[512:], bytes(len(data) - 512))
        self.assertFalse(DISK_MARKER in data[512:], "marker on the disk before boot")

    def test_write_image_custom_size(self) -> None:
        """
        An image of any multiple of 512 bytes, down to two sectors (the boot sector and the
        one the guest writes), has exactly that size.
        """
        self.assertEqual(MIN_IMAGE_SIZE, 1024)
        for size in [1024, 1536, 64 * 1024]:
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
        write_image(path, message=b"other\r\n", size=1024)
        self.assertEqual(path.read_bytes(), boot_sector(b"other\r\n") + bytes(512))

    def test_write_image_rejects_bad_size(self) -> None:
        """
        A size below two sectors (1024) or not a multiple of 512 raises ValueError and writes
        nothing: an image of one sector has no room for what the guest writes.
        """
        for size in [0, 511, 512, 513, 1000, 1025, -512]:
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
        """
        main() exits with status 2 (usage error) for a size that is not a multiple of 512,
        or below 1024.
        """
        for size in ["1000", "512"]:
            tmp_path = temp_dir(self)
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            with self.assertRaises(SystemExit) as excinfo:
                main([str(tmp_path / "disk.img"), "--size", size])
            self.assertEqual(excinfo.exception.code, 2)
            self.assertIn("at least 1024", stderr.getvalue())
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

    # -- real boots --------------------------------------------------------------------

    def assert_booted(self, output: bytes, qemu_output: str) -> None:
        self.assertIn(BOOT_MESSAGE, output, f"serial output {output!r}; qemu said {qemu_output!r}")

    def assert_boots_and_writes(self, accel: str) -> None:
        """
        QEMU with C{accel} boots a raw image from IDE; the guest writes WRITTEN_SECTOR to
        LBA 1, which was zeros, and prints BOOT_MESSAGE; nothing else on the disk changes.
        """
        tmp_path = temp_dir(self)
        image = tmp_path / "disk.img"
        write_image(image)
        before = image.read_bytes()
        self.assertEqual(read_sector(image, MARKER_LBA), bytes(SECTOR_SIZE))
        self.assertFalse(DISK_MARKER in before[SECTOR_SIZE:], "marker on the disk before boot")
        output, qemu_output = boot_qemu(f"file={image},format=raw", tmp_path, accel)
        self.assert_booted(output, qemu_output)
        self.assertEqual(output, BOOT_MESSAGE)
        after = image.read_bytes()
        self.assertEqual(read_sector(image, MARKER_LBA), WRITTEN_SECTOR)
        start, end = MARKER_LBA * SECTOR_SIZE, (MARKER_LBA + 1) * SECTOR_SIZE
        self.assertTrue(
            after[:start] + after[end:] == before[:start] + before[end:],
            "the guest changed its disk outside LBA 1",
        )

    def test_image_boots_under_qemu(self) -> None:
        """
        QEMU (TCG, no /dev/kvm needed) boots the image: the guest writes its marker sector to
        LBA 1 of its disk, then BOOT_MESSAGE reaches COM1.
        """
        self.assert_boots_and_writes("tcg")

    def test_image_boots_under_kvm(self) -> None:
        """Under KVM too, the guest writes its marker sector, then prints BOOT_MESSAGE."""
        kvm_or_fail()
        self.assert_boots_and_writes("kvm")

    def test_overlay_gets_the_write(self) -> None:
        """
        Booted from a qcow2 overlay on a virtio disk (as vorchd runs its VMs), the guest's
        write lands in the overlay, and its raw base image keeps zeros at LBA 1.
        """
        tmp_path = temp_dir(self)
        base, overlay = tmp_path / "base.img", tmp_path / "overlay.qcow2"
        write_image(base)
        make_overlay(base, overlay)
        self.assertEqual(read_sector(overlay, MARKER_LBA, "qcow2"), bytes(SECTOR_SIZE))
        output, qemu_output = boot_qemu(f"file={overlay},format=qcow2,if=virtio", tmp_path, "tcg")
        self.assert_booted(output, qemu_output)
        self.assertEqual(read_sector(overlay, MARKER_LBA, "qcow2"), WRITTEN_SECTOR)
        self.assertEqual(read_sector(overlay, 0, "qcow2"), boot_sector())
        self.assertEqual(read_sector(base, MARKER_LBA), bytes(SECTOR_SIZE))

    def test_smallest_image_boots(self) -> None:
        """An image of MIN_IMAGE_SIZE boots, and the guest writes its last sector."""
        tmp_path = temp_dir(self)
        image = tmp_path / "disk.img"
        write_image(image, size=MIN_IMAGE_SIZE)
        output, qemu_output = boot_qemu(f"file={image},format=raw", tmp_path)
        self.assert_booted(output, qemu_output)
        self.assertEqual(image.read_bytes(), boot_sector() + WRITTEN_SECTOR)

    def test_read_only_disk(self) -> None:
        """
        On a disk it cannot write (read-only virtio), the guest prints DISK_ERROR_MESSAGE and
        not BOOT_MESSAGE: seeing BOOT_MESSAGE means the write worked.
        """
        tmp_path = temp_dir(self)
        image = tmp_path / "disk.img"
        write_image(image)
        output, qemu_output = boot_qemu(
            f"file={image},format=raw,if=virtio,readonly=on", tmp_path, "tcg"
        )
        self.assertEqual(output, DISK_ERROR_MESSAGE, qemu_output)
        self.assertEqual(read_sector(image, MARKER_LBA), bytes(SECTOR_SIZE))


def _guest_xml(name: str, domain_type: str, disk: Path, console_log: Path) -> str:
    """
    A domain like vorchd's own (see L{vorchd.domain.domain_xml}): a pc machine booting from a
    qcow2 disk on virtio, its serial console logged to a file.
    """
    return f"""
<domain type='{domain_type}'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'>
      <log file='{console_log}' append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
"""


class LibvirtBootTests(SynchronousTestCase):
    """
    The image booted by a real libvirtd (one PM of a L{LibvirtdFleet}) from a qcow2 overlay:
    the guest's write is in the overlay once libvirt has destroyed the domain.
    """

    def boot(self, domain_type: str) -> None:
        require(libvirtd_fleet_unavailable())
        qemu_or_fail()
        import libvirt

        fleet = LibvirtdFleet(1).start()
        self.addCleanup(fleet.stop)
        images = fleet.dir / "images"
        images.mkdir(mode=0o755)
        base, overlay = images / "base.img", images / "guest.qcow2"
        console_log = images / "guest-serial.log"
        write_image(base)
        make_overlay(base, overlay)
        self.assertEqual(read_sector(overlay, MARKER_LBA, "qcow2"), bytes(SECTOR_SIZE))
        conn = libvirt.open(fleet.pms[0].uri)
        self.addCleanup(conn.close)
        dom = conn.createXML(_guest_xml("boot-guest", domain_type, overlay, console_log))
        try:
            output = wait_for_serial(console_log, dom.isActive)
        finally:
            # A transient domain: destroying it (SIGTERM: QEMU flushes the disk) removes it.
            dom.destroy()
        self.assertIn(BOOT_MESSAGE, output, f"serial output {output!r}")
        self.assertNotIn(DISK_ERROR_MESSAGE, output)
        self.assertEqual(read_sector(overlay, MARKER_LBA, "qcow2"), WRITTEN_SECTOR)
        self.assertEqual(read_sector(base, MARKER_LBA), bytes(SECTOR_SIZE))

    def test_qemu_domain(self) -> None:
        """A plain-emulation (type qemu) domain writes its marker sector, then prints."""
        self.boot("qemu")

    def test_kvm_domain(self) -> None:
        """A KVM domain writes its marker sector, then prints."""
        kvm_or_fail()
        if kvm_usable_here() is False:
            require("libvirt's QEMU user cannot open /dev/kvm: KVM domains cannot run")
        self.boot("kvm")
