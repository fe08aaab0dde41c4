"""
A tiny bootable disk image, built without an assembler, for booting real guests in tests.

The image is one hand-encoded x86 real-mode MBR boot sector, padded with zeros. Once SeaBIOS
loads it at 0000:7C00 it writes a message to COM1 and halts forever. A test that reads the
guest's serial log and finds the message therefore knows the whole chain worked: image upload,
overlay volume, domain definition, BIOS, disk and serial console.

Run C{python -m vorchd.bootimage PATH [--size BYTES]} to write an image from the shell.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

#: What the guest writes to its first serial port once it has booted.
BOOT_MESSAGE = b"vorchd guest booted\r\n"

#: Size of a disk sector, and of the MBR boot sector the BIOS loads.
SECTOR_SIZE = 512

#: The BIOS loads the boot sector here (segment 0), so the code's absolute addresses start here.
LOAD_ADDRESS = 0x7C00

#: The BIOS only boots a sector whose last two bytes are this signature.
BOOT_SIGNATURE = b"\x55\xaa"

#: I/O port of COM1's transmit register.
COM1_PORT = 0x3F8

# Offset of the message in the sector: the code below is exactly this long.
_MESSAGE_OFFSET = 0x17

#: The longest message that fits between the code, its NUL terminator and the signature.
MAX_MESSAGE_LENGTH = SECTOR_SIZE - len(BOOT_SIGNATURE) - _MESSAGE_OFFSET - 1


def _code() -> bytes:
    """
    The boot code, hand-encoded 16-bit x86, that prints the NUL-terminated string at
    C{_MESSAGE_OFFSET} to COM1 and halts.
    """
    message_address = LOAD_ADDRESS + _MESSAGE_OFFSET
    code = b"".join(
        [
            # 0x00 cli: nothing may wake the final hlt, and no stack is set up for handlers.
            b"\xfa",
            # 0x01 xor ax, ax
            b"\x31\xc0",
            # 0x03 mov ds, ax: the BIOS leaves DS undefined; lodsb reads from DS:SI.
            b"\x8e\xd8",
            # 0x05 cld: lodsb must walk the message forwards.
            b"\xfc",
            # 0x06 mov si, message_address: absolute, because DS is 0 and we run at 0x7C00.
            b"\xbe" + message_address.to_bytes(2, "little"),
            # 0x09 mov dx, 0x3F8: COM1; QEMU's UART transmits without any initialisation.
            b"\xba" + COM1_PORT.to_bytes(2, "little"),
            # 0x0C print: lodsb ; al = [ds:si], si += 1
            b"\xac",
            # 0x0D test al, al: the message ends at its NUL terminator.
            b"\x84\xc0",
            # 0x0F jz halt (+3, to 0x14)
            b"\x74\x03",
            # 0x11 out dx, al: one byte to COM1.
            b"\xee",
            # 0x12 jmp print (-8, to 0x0C)
            b"\xeb\xf8",
            # 0x14 halt: hlt
            b"\xf4",
            # 0x15 jmp halt (-3, to 0x14): an NMI or SMI can still end hlt; halt again.
            b"\xeb\xfd",
        ]
    )
    # Catch an edit to the code that forgets to move the message (and the jumps) with it.
    assert len(code) == _MESSAGE_OFFSET, len(code)
    return code


def boot_sector(message: bytes = BOOT_MESSAGE) -> bytes:
    """
    A 512-byte MBR boot sector that writes C{message} to COM1 and then halts forever.

    @raise TypeError: if C{message} is not bytes.
    @raise ValueError: if C{message} contains a NUL byte (the code stops at the first one) or
        is longer than L{MAX_MESSAGE_LENGTH}.
    """
    if not isinstance(message, (bytes, bytearray)):
        raise TypeError(f"message must be bytes, not {type(message).__name__}")
    if b"\x00" in message:
        raise ValueError("message must not contain a NUL byte: it terminates the message")
    if len(message) > MAX_MESSAGE_LENGTH:
        raise ValueError(
            f"message is {len(message)} bytes; at most {MAX_MESSAGE_LENGTH} fit in a boot sector"
        )
    body = _code() + bytes(message) + b"\x00"
    sector = body.ljust(SECTOR_SIZE - len(BOOT_SIGNATURE), b"\x00") + BOOT_SIGNATURE
    assert len(sector) == SECTOR_SIZE
    return sector


def write_image(
    path: str | os.PathLike[str], message: bytes = BOOT_MESSAGE, size: int = 1024 * 1024
) -> None:
    """
    Write a raw disk image of C{size} bytes to C{path}: the boot sector, then zeros.

    The file appears atomically (written to a temporary file in the same directory, then
    renamed over C{path}), so a concurrent reader never sees a partial image. Its mode is
    0644, whatever the umask: the hypervisor usually reads it as another user.

    @raise ValueError: if C{size} is below 512 or not a multiple of 512 (disks have whole
        sectors), or if the message is rejected by L{boot_sector}.
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int, not {type(size).__name__}")
    if size < SECTOR_SIZE or size % SECTOR_SIZE:
        raise ValueError(f"size must be a positive multiple of {SECTOR_SIZE} bytes, not {size}")
    sector = boot_sector(message)
    target = Path(path)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(sector)
            # Extending with truncate leaves the zeros as a hole: a large image costs no disk.
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """
    Command line: C{python -m vorchd.bootimage PATH [--size BYTES]}; write the image, print
    its path, and return the exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m vorchd.bootimage",
        description="Write a raw disk image whose boot sector prints a message to COM1.",
    )
    parser.add_argument("path", help="where to write the image")
    parser.add_argument(
        "--size",
        type=int,
        default=1024 * 1024,
        help="image size in bytes, a multiple of 512 (default: 1 MiB)",
    )
    args = parser.parse_args(argv)
    try:
        write_image(args.path, size=args.size)
    except (OSError, ValueError) as e:
        parser.error(str(e))
    print(args.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
