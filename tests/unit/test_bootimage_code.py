"""
The hand-encoded boot code of L{vorchd.bootimage}, without QEMU: its immediates decoded from
the bytes, and the code run on a model of just enough of a 16-bit x86 and its BIOS, to show
that it writes its marker sector to LBA 1 of the boot drive before it prints its message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vorchd.bootimage import (
    BOOT_MESSAGE,
    BOOT_SIGNATURE,
    COM1_PORT,
    DISK_ERROR_MESSAGE,
    DISK_MARKER,
    LOAD_ADDRESS,
    MARKER_LBA,
    MAX_MESSAGE_LENGTH,
    SECTOR_SIZE,
    WRITTEN_SECTOR,
    boot_sector,
)

# The registers, in the order x86 numbers them (in ModRM bytes and B8+r / B0+r opcodes).
REGS16 = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
REGS8 = ("al", "cl", "dl", "bl", "ah", "ch", "dh", "bh")
SEGMENTS = ("es", "cs", "ss", "ds")

# Instruction lengths, by opcode, of every instruction the boot code may use; all of them
# are what this module's machine models. (B0-B7 mov r8, imm8; B8-BF mov r16, imm16.)
LENGTHS = {
    0xFA: 1,  # cli
    0xFB: 1,  # sti
    0xFC: 1,  # cld
    0x31: 2,  # xor r/m16, r16
    0x8E: 2,  # mov Sreg, r/m16
    0xF3: 2,  # rep (with stosb: F3 AA)
    0xCD: 2,  # int imm8
    0x73: 2,  # jnc rel8
    0x74: 2,  # jz rel8
    0xEB: 2,  # jmp rel8
    0xAC: 1,  # lodsb
    0x84: 2,  # test r/m8, r8
    0xEE: 1,  # out dx, al
    0xF4: 1,  # hlt
    **{0xB0 + r: 2 for r in range(8)},
    **{0xB8 + r: 3 for r in range(8)},
}

# The geometry the model BIOS gives the disk, for int 13h's CHS addresses.
HEADS = 16
SECTORS_PER_TRACK = 63


def decode(sector: bytes) -> list[tuple[int, bytes]]:
    """
    The instructions of C{sector}'s code, in order, as (offset, bytes), up to and including
    its final C{hlt; jmp hlt} loop.
    """
    instructions = []
    offset = 0
    while True:
        opcode = sector[offset]
        if opcode not in LENGTHS:
            raise AssertionError(f"unknown opcode {opcode:#04x} at {offset:#x}")
        length = LENGTHS[opcode]
        instructions.append((offset, sector[offset : offset + length]))
        if sector[offset : offset + 3] == b"\xf4\xeb\xfd":  # halt: hlt; jmp halt
            instructions.append((offset + 1, sector[offset + 1 : offset + 3]))
            return instructions
        offset += length


def immediates(sector: bytes, opcode: int) -> list[int]:
    """
    The 16-bit immediates of C{sector}'s instructions C{opcode} (a C{mov r16, imm16}), in
    order, decoded little-endian.
    """
    return [int.from_bytes(code[1:3], "little") for _, code in decode(sector) if code[0] == opcode]


@dataclass
class Machine:
    """
    Just enough of a PC in real mode to run the boot sector as SeaBIOS would: the
    instructions in L{LENGTHS}, int 13h function 03h (write sectors) on the boot drive, and
    COM1. Memory outside the boot sector is full of garbage, the segment and other
    registers too, so that only what the code itself sets up can work.

    @ivar events: what the code did to the world, in order: C{("write", drive, lba, data,
        interrupts_enabled)} and C{("serial", byte)}.
    """

    sector: bytes
    drive: int = 0x80
    disk_fails: bool = False
    memory: bytearray = field(default_factory=lambda: bytearray(b"\xcc" * 0x100000))
    events: list[tuple] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.memory[LOAD_ADDRESS : LOAD_ADDRESS + SECTOR_SIZE] = self.sector
        # What SeaBIOS passes: DL the boot drive, and AX 0xAA55; the rest is anything.
        self.regs = {
            "ax": 0xAA55,
            "cx": 0x1111,
            "dx": 0x3300 | self.drive,
            "bx": 0x4444,
            "sp": 0x6F00,
            "bp": 0x5555,
            "si": 0x6666,
            "di": 0x7777,
        }
        self.segments = {"es": 0x1234, "cs": 0, "ss": 0, "ds": 0x4321}
        self.ip = LOAD_ADDRESS
        self.interrupts = True
        self.direction = True  # std: walking backwards, until the code says cld
        self.carry = self.zero = False
        self.halted = False

    def reg8(self, name: str) -> int:
        index = REGS8.index(name)
        value = self.regs[REGS16[index % 4]]
        return value >> 8 if index >= 4 else value & 0xFF

    def set_reg8(self, name: str, value: int) -> None:
        index = REGS8.index(name)
        reg = REGS16[index % 4]
        if index >= 4:
            self.regs[reg] = (self.regs[reg] & 0x00FF) | (value << 8)
        else:
            self.regs[reg] = (self.regs[reg] & 0xFF00) | value

    def linear(self, segment: str, offset: int) -> int:
        return (self.segments[segment] << 4) + offset

    def step(self) -> None:
        code = bytes(self.memory[self.ip : self.ip + 3])
        opcode = code[0]
        if opcode not in LENGTHS:
            raise AssertionError(f"unknown opcode {opcode:#04x} at {self.ip:#x}")
        length = LENGTHS[opcode]
        self.ip += length
        imm8 = code[1]
        imm16 = int.from_bytes(code[1:3], "little")
        rel8 = imm8 - 0x100 if imm8 & 0x80 else imm8
        if opcode == 0xFA:
            self.interrupts = False
        elif opcode == 0xFB:
            self.interrupts = True
        elif opcode == 0xFC:
            self.direction = False
        elif opcode == 0x31:
            assert code[1] == 0xC0, code  # xor ax, ax
            self.regs["ax"] = 0
            self.zero, self.carry = True, False
        elif opcode == 0x8E:
            assert code[1] >> 6 == 3, code  # register operand
            self.segments[SEGMENTS[(code[1] >> 3) & 7]] = self.regs[REGS16[code[1] & 7]]
        elif 0xB0 <= opcode <= 0xB7:
            self.set_reg8(REGS8[opcode - 0xB0], imm8)
        elif 0xB8 <= opcode <= 0xBF:
            self.regs[REGS16[opcode - 0xB8]] = imm16
        elif opcode == 0xF3:
            assert code[1] == 0xAA, code  # rep stosb
            step = -1 if self.direction else 1
            while self.regs["cx"]:
                self.memory[self.linear("es", self.regs["di"])] = self.reg8("al")
                self.regs["di"] = (self.regs["di"] + step) & 0xFFFF
                self.regs["cx"] -= 1
        elif opcode == 0xCD:
            assert imm8 == 0x13, code
            self.int13()
        elif opcode in (0x73, 0x74, 0xEB):
            taken = {0x73: not self.carry, 0x74: self.zero, 0xEB: True}[opcode]
            if taken:
                self.ip += rel8
        elif opcode == 0xAC:
            self.set_reg8("al", self.memory[self.linear("ds", self.regs["si"])])
            self.regs["si"] = (self.regs["si"] + (-1 if self.direction else 1)) & 0xFFFF
        elif opcode == 0x84:
            assert code[1] == 0xC0, code  # test al, al
            self.zero, self.carry = self.reg8("al") == 0, False
        elif opcode == 0xEE:
            assert self.regs["dx"] == COM1_PORT, hex(self.regs["dx"])
            self.events.append(("serial", self.reg8("al")))
        elif opcode == 0xF4:
            self.halted = True

    def int13(self) -> None:
        """
        The BIOS disk service: only function 03h (write sectors) is modelled. It clobbers
        nothing the code relies on but AX and the carry flag, as a BIOS may.
        """
        assert self.reg8("ah") == 0x03, hex(self.regs["ax"])
        count = self.reg8("al")
        cylinder = self.reg8("ch") | (self.reg8("cl") & 0xC0) << 2
        sector = self.reg8("cl") & 0x3F
        head = self.reg8("dh")
        assert 1 <= sector <= SECTORS_PER_TRACK and head < HEADS, (cylinder, head, sector)
        lba = (cylinder * HEADS + head) * SECTORS_PER_TRACK + sector - 1
        start = self.linear("es", self.regs["bx"])
        data = bytes(self.memory[start : start + count * SECTOR_SIZE])
        self.events.append(("write", self.reg8("dl"), lba, data, self.interrupts))
        self.carry = self.disk_fails
        self.regs["ax"] = 0x0400 if self.disk_fails else count

    def run(self, limit: int = 100_000) -> Machine:
        """
        Run until the code halts, then check that it stays halted: the instruction after
        its C{hlt} (as if an NMI ended it) goes back to it.
        """
        for _ in range(limit):
            self.step()
            if self.halted:
                break
        else:
            raise AssertionError(f"no hlt after {limit} instructions")
        halt = self.ip - 1
        self.step()
        assert self.ip == halt, (hex(self.ip), hex(halt))
        return self

    @property
    def serial(self) -> bytes:
        return bytes(event[1] for event in self.events if event[0] == "serial")

    @property
    def writes(self) -> list[tuple]:
        return [event[1:] for event in self.events if event[0] == "write"]


class EncodingTests(SynchronousTestCase):
    def test_known_instructions_only(self):
        """
        The code decodes into instructions of known lengths, ending in the C{hlt} loop, and
        fits before the data it points at.
        """
        sector = boot_sector()
        instructions = decode(sector)
        self.assertEqual(instructions[-2:], [(0x32, b"\xf4"), (0x33, b"\xeb\xfd")])
        end = instructions[-1][0] + 2
        self.assertLessEqual(end, min(immediates(sector, 0xBE)) - LOAD_ADDRESS)

    def test_marker_where_bx_points(self):
        """
        The C{mov bx, imm16} before int 13h (the buffer int 13h writes from) holds the
        address of L{DISK_MARKER} in the loaded sector; the sector's worth of memory from
        there is the sector's tail, which ends with the signature, then what the
        C{mov di; mov cx; rep stosb} before it zeroes: exactly the memory past the sector up
        to the end of the buffer.
        """
        sector = boot_sector()
        [bx] = immediates(sector, 0xBB)
        offset = bx - LOAD_ADDRESS
        self.assertEqual(sector[offset : offset + len(DISK_MARKER)], DISK_MARKER)
        self.assertEqual(sector[offset:].rstrip(b"\x00\x55\xaa"), DISK_MARKER)
        [di] = immediates(sector, 0xBF)
        zero_count, chs = immediates(sector, 0xB9)
        self.assertEqual(di, LOAD_ADDRESS + SECTOR_SIZE)
        self.assertEqual(di + zero_count, bx + SECTOR_SIZE)
        self.assertEqual(sector[offset:] + bytes(zero_count), WRITTEN_SECTOR)
        # CH = cylinder 0, CL = sector 2: LBA 1. AH = 03h (write), AL = one sector.
        self.assertEqual(chs, 0x0002)
        self.assertEqual(immediates(sector, 0xB8), [0x0301])
        self.assertEqual(MARKER_LBA, 1)
        self.assertIn((0x19, b"\xb6\x00"), decode(sector))  # mov dh, 0: head 0

    def test_messages_where_si_points(self):
        """
        The two C{mov si, imm16} hold the addresses of the NUL-terminated message (printed
        after a good write) and of L{DISK_ERROR_MESSAGE} (after a failed one).
        """
        sector = boot_sector(b"hello\r\n")
        message, error = (address - LOAD_ADDRESS for address in immediates(sector, 0xBE))
        self.assertEqual(sector[message : message + 8], b"hello\r\n\x00")
        end = error + len(DISK_ERROR_MESSAGE) + 1
        self.assertEqual(sector[error:end], DISK_ERROR_MESSAGE + b"\x00")

    def test_longest_message_leaves_marker_and_signature(self):
        """
        The longest message ends (with its NUL) right before the marker, which is left
        whole, and so is the signature.
        """
        message = bytes(range(1, 256)) + b"x" * (MAX_MESSAGE_LENGTH - 255)
        sector = boot_sector(message)
        [address, _] = immediates(sector, 0xBE)
        [bx] = immediates(sector, 0xBB)
        offset = address - LOAD_ADDRESS
        self.assertEqual(offset + len(message) + 1, bx - LOAD_ADDRESS)
        self.assertEqual(sector[offset : offset + len(message) + 1], message + b"\x00")
        self.assertEqual(sector[bx - LOAD_ADDRESS :].rstrip(b"\x00\x55\xaa"), DISK_MARKER)
        self.assertEqual(sector[-2:], BOOT_SIGNATURE)

    def test_mbr_partition_table_is_empty(self):
        """
        The disk signature and partition table (bytes 0x1B8 to 0x1FD) are zero, so nothing
        takes the marker or a long message for partitions.
        """
        for message in [BOOT_MESSAGE, b"x" * MAX_MESSAGE_LENGTH]:
            self.assertEqual(boot_sector(message)[0x1B8:0x1FE], bytes(0x1FE - 0x1B8))

    def test_written_sector(self):
        """
        L{WRITTEN_SECTOR} is one sector: L{DISK_MARKER}, then zeros but for a copy of the
        boot signature.
        """
        self.assertEqual(len(WRITTEN_SECTOR), SECTOR_SIZE)
        self.assertTrue(WRITTEN_SECTOR.startswith(DISK_MARKER))
        self.assertEqual(
            WRITTEN_SECTOR.replace(BOOT_SIGNATURE, b"", 1).strip(b"\x00"), DISK_MARKER
        )
        self.assertEqual(DISK_MARKER, b"vorchd guest wrote this sector\r\n")


class RunTests(SynchronousTestCase):
    def test_writes_then_prints(self):
        """
        The code writes L{WRITTEN_SECTOR} to LBA 1 of the drive it booted from, with
        interrupts enabled, and only then prints L{BOOT_MESSAGE} to COM1; it halts with
        interrupts disabled.
        """
        machine = Machine(boot_sector()).run()
        self.assertEqual(machine.events[0], ("write", 0x80, 1, WRITTEN_SECTOR, True))
        self.assertEqual(machine.writes, [(0x80, 1, WRITTEN_SECTOR, True)])
        self.assertEqual(machine.serial, BOOT_MESSAGE)
        self.assertFalse(machine.interrupts)

    def test_boot_drive(self):
        """It writes to whichever drive the BIOS booted it from (DL at entry)."""
        for drive in [0x80, 0x81, 0x00]:
            machine = Machine(boot_sector(), drive=drive).run()
            self.assertEqual(machine.writes, [(drive, 1, WRITTEN_SECTOR, True)], drive)

    def test_failed_write(self):
        """If the BIOS fails the write (carry set), it prints L{DISK_ERROR_MESSAGE} only."""
        machine = Machine(boot_sector(), disk_fails=True).run()
        self.assertEqual(machine.serial, DISK_ERROR_MESSAGE)
        self.assertEqual(len(machine.writes), 1)

    @given(st.binary(max_size=MAX_MESSAGE_LENGTH).map(lambda m: m.replace(b"\x00", b"\x01")))
    def test_any_message(self, message):
        """Whatever the message, the guest writes the same sector, then prints the message."""
        machine = Machine(boot_sector(message)).run()
        self.assertEqual(machine.writes, [(0x80, 1, WRITTEN_SECTOR, True)])
        self.assertEqual(machine.serial, message)
