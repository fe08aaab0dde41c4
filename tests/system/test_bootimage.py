"""
Tests for L{vorchd.bootimage}: the hand-made boot sector, the image writer, its command line,
and a real boot under QEMU.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture
def umask_077() -> Iterator[None]:
    """
    Run the test under a restrictive umask, so a mode that merely follows the umask shows.
    """
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def test_sector_is_512_bytes() -> None:
    """The boot sector is exactly one 512-byte sector."""
    assert len(boot_sector()) == 512


def test_sector_ends_with_boot_signature() -> None:
    """The sector ends with 0x55 0xAA, without which the BIOS will not boot it."""
    assert boot_sector()[510:] == b"\x55\xaa"


def test_sector_contains_default_message() -> None:
    """By default the sector carries BOOT_MESSAGE, NUL-terminated."""
    assert BOOT_MESSAGE == b"vorchd guest booted\r\n"
    assert BOOT_MESSAGE + b"\x00" in boot_sector()


def test_sector_code_points_at_message() -> None:
    """The `mov si, imm16` operand is the message's address once loaded at 0x7C00."""
    sector = boot_sector(b"hello")
    # The code starts: cli; xor ax,ax; mov ds,ax; cld; mov si, imm16 (BE lo hi).
    assert sector[:6] == b"\xfa\x31\xc0\x8e\xd8\xfc"
    assert sector[6] == 0xBE
    address = int.from_bytes(sector[7:9], "little")
    offset = address - LOAD_ADDRESS
    assert sector[offset : offset + 6] == b"hello\x00"


def test_sector_writes_to_com1_and_halts() -> None:
    """The code loads DX with COM1 (0x3F8) and ends with a `hlt` loop."""
    sector = boot_sector()
    assert b"\xba\xf8\x03" in sector  # mov dx, 0x3F8
    assert b"\xf4\xeb\xfd" in sector  # hlt; jmp back to the hlt


def test_sector_custom_message() -> None:
    """A custom message replaces the default one."""
    sector = boot_sector(b"custom\n")
    assert b"custom\n\x00" in sector
    assert BOOT_MESSAGE not in sector
    assert len(sector) == 512


def test_sector_longest_message_fits() -> None:
    """A message of MAX_MESSAGE_LENGTH bytes fits and leaves the signature intact."""
    message = b"x" * MAX_MESSAGE_LENGTH
    sector = boot_sector(message)
    assert len(sector) == 512
    assert sector[510:] == b"\x55\xaa"
    assert message + b"\x00" in sector


def test_sector_rejects_too_long_message() -> None:
    """A message one byte over MAX_MESSAGE_LENGTH raises ValueError."""
    with pytest.raises(ValueError):
        boot_sector(b"x" * (MAX_MESSAGE_LENGTH + 1))


def test_sector_rejects_nul_in_message() -> None:
    """A message containing NUL raises ValueError: the code would stop printing there."""
    with pytest.raises(ValueError):
        boot_sector(b"abc\x00def")


def test_sector_rejects_str_message() -> None:
    """A str message raises TypeError rather than being encoded implicitly."""
    with pytest.raises(TypeError):
        boot_sector("text")  # type: ignore[arg-type]


def test_write_image_default_size_and_padding(tmp_path: Path) -> None:
    """The default image is 1 MiB: the boot sector followed only by zeros."""
    path = tmp_path / "disk.img"
    write_image(path)
    data = path.read_bytes()
    assert len(data) == 1024 * 1024
    assert data[:512] == boot_sector()
    assert data[512:] == bytes(len(data) - 512)


@pytest.mark.parametrize("size", [512, 1024, 64 * 1024])
def test_write_image_custom_size(tmp_path: Path, size: int) -> None:
    """An image of any multiple of 512 bytes (down to one sector) has exactly that size."""
    path = tmp_path / "disk.img"
    write_image(path, size=size)
    data = path.read_bytes()
    assert len(data) == size
    assert data[:512] == boot_sector()


def test_write_image_custom_message(tmp_path: Path) -> None:
    """The image's boot sector carries the given message."""
    path = tmp_path / "disk.img"
    write_image(path, message=b"other\r\n", size=512)
    assert path.read_bytes() == boot_sector(b"other\r\n")


@pytest.mark.parametrize("size", [0, 511, 513, 1000, -512])
def test_write_image_rejects_bad_size(tmp_path: Path, size: int) -> None:
    """A size below 512 or not a multiple of 512 raises ValueError and writes nothing."""
    with pytest.raises(ValueError):
        write_image(tmp_path / "disk.img", size=size)
    assert list(tmp_path.iterdir()) == []


def test_write_image_mode_0644(tmp_path: Path, umask_077: None) -> None:
    """The image is mode 0644 even under umask 077, so the hypervisor's user can read it."""
    path = tmp_path / "disk.img"
    write_image(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_image_replaces_existing_file(tmp_path: Path) -> None:
    """An existing file is replaced whole (by rename: a new inode), leaving no temp files."""
    path = tmp_path / "disk.img"
    path.write_bytes(b"old contents" * 100_000)
    old_inode = path.stat().st_ino
    write_image(path, size=4096)
    assert path.read_bytes()[:512] == boot_sector()
    assert path.stat().st_size == 4096
    assert path.stat().st_ino != old_inode
    assert [p.name for p in tmp_path.iterdir()] == ["disk.img"]


def test_write_image_failure_leaves_old_file(tmp_path: Path) -> None:
    """A rejected message leaves an existing image untouched and no temp file behind."""
    path = tmp_path / "disk.img"
    path.write_bytes(b"old")
    with pytest.raises(ValueError):
        write_image(path, message=b"bad\x00")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["disk.img"]


def test_write_image_failed_rename_cleans_up(tmp_path: Path) -> None:
    """If the final rename fails (target is a directory), the error propagates, no temp file."""
    target = tmp_path / "disk.img"
    target.mkdir()
    with pytest.raises(OSError):
        write_image(target)
    assert [p.name for p in tmp_path.iterdir()] == ["disk.img"]
    assert target.is_dir()


def test_main_writes_image_and_prints_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() writes the image of the requested size, prints its path and returns 0."""
    path = tmp_path / "disk.img"
    assert main([str(path), "--size", "2048"]) == 0
    assert capsys.readouterr().out == f"{path}\n"
    data = path.read_bytes()
    assert len(data) == 2048
    assert data[:512] == boot_sector()


def test_main_rejects_bad_size(tmp_path: Path) -> None:
    """main() exits with status 2 (usage error) for a size that is not a multiple of 512."""
    with pytest.raises(SystemExit) as excinfo:
        main([str(tmp_path / "disk.img"), "--size", "1000"])
    assert excinfo.value.code == 2
    assert list(tmp_path.iterdir()) == []


def test_module_command_line(tmp_path: Path) -> None:
    """`python -m vorchd.bootimage PATH` writes a 1 MiB image and prints PATH."""
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
    assert result.stdout == f"{path}\n"
    assert path.stat().st_size == 1024 * 1024
    assert path.read_bytes()[:512] == boot_sector()


def test_image_boots_under_qemu(tmp_path: Path) -> None:
    """QEMU (TCG, no /dev/kvm needed) boots the image and BOOT_MESSAGE reaches COM1."""
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
    assert BOOT_MESSAGE in output, (
        f"serial output {output!r}; qemu said {qemu_output.decode(errors='replace')!r}"
    )
