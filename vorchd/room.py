"""
The room rule, written once: how much of a PM may be handed out, what is free, and why
a PM cannot take a flavor. Placement, the read model and every answer about free room
use these functions; the claim script (C{store/lua/claim.lua}) computes the same in Lua
at the authority, and C{tests/unit/test_room.py} holds the two together.

    limit = floor(capacity * ratio)        per resource (cpu, ram, disk)
    free  = limit - used                   negative where a ratio was lowered
    fits  = every wanted <= free
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from attrs import frozen

from vorchd.model import RESOURCES, Flavor, Resources


def limit(capacity: int, ratio: float) -> int:
    """
    How much of one resource may be handed out: capacity times the overcommit ratio,
    rounded down.
    """
    return math.floor(capacity * ratio)


def effective(capacity: Resources, ratios: Mapping[str, float]) -> Resources:
    """
    What may be handed out of C{capacity} under C{ratios}.
    """
    return Resources(*(limit(getattr(capacity, r), ratios[r]) for r in RESOURCES))


def free(capacity: Resources, used: Resources, ratios: Mapping[str, float]) -> Resources:
    """
    What is left for new VMs.
    """
    return effective(capacity, ratios) - used


def shortfall(room: Resources, wanted: Resources) -> str | None:
    """
    Which resources C{room} lacks for C{wanted}, worded as the claim script words them,
    or C{None} if it has enough of each.
    """
    short = [
        f"{r} ({getattr(wanted, r)} wanted, {getattr(room, r)} free)"
        for r in RESOURCES
        if getattr(room, r) < getattr(wanted, r)
    ]
    return ", ".join(short) if short else None


# Refusal kinds: why one PM cannot take one request.
DOWN = "down"  # this daemon cannot reach its hypervisor
DRAINED = "drained"  # an admin closed it to new VMs
NO_ROOM = "no_room"  # not enough free room under the ratios
UNKNOWN_PM = "unknown_pm"  # the fleet has no such PM (any more)
VMID_TAKEN = "vmid_taken"  # the vmid asked for holds a record already
FAILED = "failed"  # its hypervisor failed to make the VM
# Why a running VM's change (a resize, a move) cannot begin.
NO_VM = "no_vm"  # no created, active VM of that vmid
BUSY = "busy"  # another change of that VM (or volume) is under way
NO_VOLUME = "no_volume"  # no volume of that id
KINDS = (DOWN, DRAINED, NO_ROOM, UNKNOWN_PM, VMID_TAKEN, FAILED, NO_VM, BUSY, NO_VOLUME)


@frozen
class Refusal:
    """
    Why one PM did not take one request: a C{kind} of L{KINDS} and a C{detail} for people.
    """

    kind: str
    detail: str = ""

    def __str__(self) -> str:
        words = {
            DOWN: "down",
            DRAINED: "drained",
            NO_ROOM: "no room for ",
            UNKNOWN_PM: "unknown PM",
            VMID_TAKEN: "vmid taken",
            FAILED: "",
            NO_VM: "no such active VM",
            BUSY: "busy",
            NO_VOLUME: "no such volume",
        }[self.kind]
        if self.kind == NO_ROOM:
            return words + self.detail
        return f"{words}: {self.detail}" if self.detail and words else (self.detail or words)


class Claimed(tuple):
    """
    What a claim answers: C{(vmid, why)}, C{why} a L{Refusal} or C{None} when claimed,
    and, as C{mac}, the MAC address the claim gave the VM ("" when refused): its name's,
    unless another VM of the fleet had that one.
    """

    mac: str

    def __new__(cls, vmid: int, why: Refusal | None, mac: str = "") -> Claimed:
        claimed = super().__new__(cls, (vmid, why))
        claimed.mac = mac
        return claimed


def refusal(
    capacity: Resources,
    used: Resources,
    wanted: Resources,
    ratios: Mapping[str, float],
    up: bool = True,
    drained: bool = False,
) -> Refusal | None:
    """
    Why a PM of C{capacity} with C{used} handed out cannot take C{wanted}, or C{None}.
    """
    if not up:
        return Refusal(DOWN)
    if drained:
        return Refusal(DRAINED)
    short = shortfall(free(capacity, used, ratios), wanted)
    return None if short is None else Refusal(NO_ROOM, short)


@frozen
class Change:
    """
    A change of a running VM that holds room until it is done or undone: a C{resize}
    (on its own PM: the hold is what each resource grows by) or a C{move} (to another
    PM: the hold is its whole flavor there).

    @ivar pmid: the PM the VM is on once the change is done.
    @ivar flavor: its flavor once the change is done.
    @ivar op: the change's own token; C{owner}: the daemon making it.
    """

    kind: str
    pmid: int
    flavor: Flavor
    hold: Resources
    op: str
    owner: str

    @classmethod
    def resize(cls, pmid: int, old: Resources, flavor: Flavor, op: str, owner: str) -> Change:
        new = flavor.resources
        hold = Resources(*(max(getattr(new, r) - getattr(old, r), 0) for r in RESOURCES))
        return cls("resize", pmid, flavor, hold, op, owner)

    @classmethod
    def move(cls, pmid: int, flavor: Flavor, op: str, owner: str) -> Change:
        return cls("move", pmid, flavor, flavor.resources, op, owner)
