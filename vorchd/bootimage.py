"""
A tiny bootable disk image, built without an assembler, for booting real guests in tests.

The image is one hand-encoded x86 real-mode MBR boot sector, padded with zeros. Once SeaBIOS
loads it at 0000:7C00 it first writes L{WRITTEN_SECTOR} (which starts with L{DISK_MARKER}) to
its own disk at LBA L{MARKER_LBA}, with BIOS int 13h, then writes a message to COM1 and halts
forever. A test that reads the guest's serial log and finds the message therefore knows the
whole chain worked: image upload, overlay volume, domain definition, BIOS, disk and serial
console; and that the guest's disk now holds the marker, which it did not before the boot
(the image is zeros there), so a test can check that whatever carried the disk (a live
migration, say) carried what the guest wrote. Should the write fail, the guest prints
L{DISK_ERROR_MESSAGE} instead of the message.

The guest writes through QEMU's disk cache, and never flushes it: a raw image file shows the
sector as soon as the message is printed, but a qcow2 overlay may not until QEMU has flushed
its metadata, which it does when it exits cleanly (SIGTERM, C{virsh destroy}), not when it
is killed with SIGKILL.

Run C{python -m vorchd.bootimage PATH [--size BYTES]} to write an image from the shell.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

#: What the guest writes to its first serial port once it has booted (and written its disk).
BOOT_MESSAGE = b"vorchd guest booted\r\n"

#: What the guest writes to its first serial port instead, if the BIOS failed its disk write.
DISK_ERROR_MESSAGE = b"vorchd guest disk write failed\r\n"

#: What the sector the guest writes to its disk at boot starts with.
DISK_MARKER = b"vorchd guest wrote this sector\r\n"

#: Size of a disk sector, and of the MBR boot sector the BIOS loads.
SECTOR_SIZE = 512

#: The sector the guest writes (LBA 1: CHS cylinder 0, head 0, sector 2), the first after its
#: boot sector; it is at byte C{MARKER_LBA * SECTOR_SIZE} of the image.
MARKER_LBA = 1

#: The smallest image: the boot sector and the sector the guest writes.
MIN_IMAGE_SIZE = (MARKER_LBA + 1) * SECTOR_SIZE

#: The BIOS loads the boot sector here (segment 0), so the code's absolute addresses start here.
LOAD_ADDRESS = 0x7C00

#: The BIOS only boots a sector whose last two bytes are this signature.
BOOT_SIGNATURE = b"\x55\xaa"

#: I/O port of COM1's transmit register.
COM1_PORT = 0x3F8

# The code below is exactly this long; the error message follows it, then the message.
_CODE_LENGTH = 0x35

# Offset of the error message in the sector, and of the message after its NUL terminator.
_ERROR_OFFSET = _CODE_LENGTH
_MESSAGE_OFFSET = _ERROR_OFFSET + len(DISK_ERROR_MESSAGE) + 1

# Where an MBR's disk signature starts, and then its partition table: left zero (no
# partitions), so that nothing reading the table (QEMU guessing a disk's geometry, say) takes
# the marker for partitions.
_PARTITION_TABLE_OFFSET = 0x1B8

# Offset of the marker in the sector: right before the disk signature. The guest writes a
# sector's worth of memory from there: the rest of the boot sector (the marker, zeros and the
# boot signature), then the _MARKER_OFFSET bytes past it (from 0x7E00), which it zeroes first.
_MARKER_OFFSET = _PARTITION_TABLE_OFFSET - len(DISK_MARKER)

#: Exactly what the guest writes to its disk at LBA L{MARKER_LBA}, whatever its message.
WRITTEN_SECTOR = (
    DISK_MARKER.ljust(SECTOR_SIZE - _MARKER_OFFSET - len(BOOT_SIGNATURE), b"\x00")
    + BOOT_SIGNATURE
    + bytes(_MARKER_OFFSET)
)

#: The longest message that fits between the error message, its own NUL terminator and the
#: marker.
MAX_MESSAGE_LENGTH = _MARKER_OFFSET - _MESSAGE_OFFSET - 1


def _code() -> bytes:
    """
    The boot code, hand-encoded 16-bit x86: it writes the sector at C{_MARKER_OFFSET} to
    LBA 1 of the boot drive, then prints the NUL-terminated string at C{_MESSAGE_OFFSET} (or,
    if the write failed, the one at C{_ERROR_OFFSET}) to COM1, and halts.
    """
    error_address = LOAD_ADDRESS + _ERROR_OFFSET
    message_address = LOAD_ADDRESS + _MESSAGE_OFFSET
    marker_address = LOAD_ADDRESS + _MARKER_OFFSET
    after_sector = LOAD_ADDRESS + SECTOR_SIZE
    code = b"".join(
        [
            # 0x00 cli: nothing runs but this code until it calls the BIOS.
            b"\xfa",
            # 0x01 xor ax, ax: AX = 0 (and AL = 0 for the stosb below).
            b"\x31\xc0",
            # 0x03 mov ds, ax: the BIOS leaves DS undefined; lodsb reads from DS:SI.
            b"\x8e\xd8",
            # 0x05 mov es, ax: stosb writes to ES:DI; int 13h reads its buffer from ES:BX.
            b"\x8e\xc0",
            # 0x07 cld: stosb and lodsb must walk forwards.
            b"\xfc",
            # 0x08 mov di, 0x7E00: the memory right after the boot sector, where the buffer
            # int 13h writes from runs on past the marker and the signature.
            b"\xbf" + after_sector.to_bytes(2, "little"),
            # 0x0B mov cx, _MARKER_OFFSET: the buffer's bytes past the boot sector.
            b"\xb9" + _MARKER_OFFSET.to_bytes(2, "little"),
            # 0x0E rep stosb: zero them (AL = 0), so the written sector is known in full.
            b"\xf3\xaa",
            # 0x10 mov bx, marker_address: int 13h writes the sector from ES:BX (ES = 0).
            b"\xbb" + marker_address.to_bytes(2, "little"),
            # 0x13 mov ax, 0x0301: AH = 03h, write sectors; AL = 1 sector.
            b"\xb8\x01\x03",
            # 0x16 mov cx, 0x0002: CH = cylinder 0; CL = sector 2 (CHS sectors count from 1).
            b"\xb9\x02\x00",
            # 0x19 mov dh, 0: head 0. DL is still the boot drive the BIOS passed in DL.
            b"\xb6\x00",
            # 0x1B sti: the BIOS disk service needs interrupts; the stack the BIOS left us
            # (SS:SP untouched) holds their handlers' frames.
            b"\xfb",
            # 0x1C int 13h: write LBA 1; the carry flag is set if it failed.
            b"\xcd\x13",
            # 0x1E cli: nothing may wake the final hlt (cli and mov leave the carry flag).
            b"\xfa",
            # 0x1F mov si, message_address: absolute, because DS is 0 and we run at 0x7C00.
            b"\xbe" + message_address.to_bytes(2, "little"),
            # 0x22 jnc com1 (+3, to 0x27): the write worked; print the message.
            b"\x73\x03",
            # 0x24 mov si, error_address: it failed; print the error message instead.
            b"\xbe" + error_address.to_bytes(2, "little"),
            # 0x27 com1: mov dx, 0x3F8: COM1; QEMU's UART transmits without initialisation.
            b"\xba" + COM1_PORT.to_bytes(2, "little"),
            # 0x2A print: lodsb ; al = [ds:si], si += 1
            b"\xac",
            # 0x2B test al, al: the string ends at its NUL terminator.
            b"\x84\xc0",
            # 0x2D jz halt (+3, to 0x32)
            b"\x74\x03",
            # 0x2F out dx, al: one byte to COM1.
            b"\xee",
            # 0x30 jmp print (-8, to 0x2A)
            b"\xeb\xf8",
            # 0x32 halt: hlt
            b"\xf4",
            # 0x33 jmp halt (-3, to 0x32): an NMI or SMI can still end hlt; halt again.
            b"\xeb\xfd",
        ]
    )
    # Catch an edit to the code that forgets to move the data (and the jumps) with it.
    assert len(code) == _CODE_LENGTH, len(code)
    return code


def boot_sector(message: bytes = BOOT_MESSAGE) -> bytes:
    """
    A 512-byte MBR boot sector that writes L{WRITTEN_SECTOR} to LBA L{MARKER_LBA} of its
    disk, then writes C{message} to COM1 (L{DISK_ERROR_MESSAGE} if the disk write failed) and
    halts forever.

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
    body = _code() + DISK_ERROR_MESSAGE + b"\x00" + bytes(message) + b"\x00"
    sector = (body.ljust(_MARKER_OFFSET, b"\x00") + DISK_MARKER).ljust(
        SECTOR_SIZE - len(BOOT_SIGNATURE), b"\x00"
    ) + BOOT_SIGNATURE
    assert len(sector) == SECTOR_SIZE
    assert sector[_MARKER_OFFSET:] + bytes(_MARKER_OFFSET) == WRITTEN_SECTOR
    return sector


def write_image(
    path: str | os.PathLike[str], message: bytes = BOOT_MESSAGE, size: int = 1024 * 1024
) -> None:
    """
    Write a raw disk image of C{size} bytes to C{path}: the boot sector, then zeros (so
    LBA L{MARKER_LBA}, where the guest writes L{WRITTEN_SECTOR} when it boots, is zeros).

    The file appears atomically (written to a temporary file in the same directory, then
    renamed over C{path}), so a concurrent reader never sees a partial image. Its mode is
    0644, whatever the umask: the hypervisor usually reads it as another user.

    @raise ValueError: if C{size} is below L{MIN_IMAGE_SIZE} (1024: the boot sector and the
        sector the guest writes) or not a multiple of 512 (disks have whole sectors), or if
        the message is rejected by L{boot_sector}.
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int, not {type(size).__name__}")
    if size < MIN_IMAGE_SIZE or size % SECTOR_SIZE:
        raise ValueError(
            f"size must be a multiple of {SECTOR_SIZE} bytes, at least {MIN_IMAGE_SIZE}"
            f" (the boot sector and the sector the guest writes), not {size}"
        )
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
        description=(
            "Write a raw disk image whose boot sector writes a marker to the disk's second"
            " sector, then prints a message to COM1."
        ),
    )
    parser.add_argument("path", help="where to write the image")
    parser.add_argument(
        "--size",
        type=int,
        default=1024 * 1024,
        help="image size in bytes, a multiple of 512, at least 1024 (default: 1 MiB)",
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
