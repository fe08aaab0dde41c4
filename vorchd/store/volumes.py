"""
The volume half of L{vorchd.store.Store}: block volumes' records (C{P:volume:<id>}), each
change one Lua script (C{lua/volume_*.lua}) that also appends it to the change stream.

A volume's life: created C{available}; an attach (L{StoreVolumes.attach_volume}) makes
it C{attaching} and, when its data must be made on or moved to the VM's PM, claims its
size there; a detach or a destroy (L{StoreVolumes.begin_volume}) makes it C{detaching} or
C{destroying}; L{StoreVolumes.end_volume} ends each change, done or undone.
"""

from __future__ import annotations

from vorchd.room import Refusal

#: What a volume's status is while a change of it is under way, and what it was before.
BEGIN = {"detaching": "attached", "destroying": "available"}


class StoreVolumes:
    """
    The volume operations of L{vorchd.store.Store} (a mixin over its C{_write} and
    C{_call}).
    """

    async def create_volume(self, name: str, size: int, backend: str) -> int:
        """
        Record a new available volume of C{size} GiB and return its id, one no volume of
        this fleet ever had.
        """
        volumeid, _seq = await self._write(
            "volume_create", [self.keys.volid, self.keys.volumes], [name, size, backend]
        )
        return int(volumeid)

    async def attach_volume(
        self, volumeid: int, vmid: int, disk_ratio: float, op: str, owner: str = ""
    ) -> tuple[int, int, Refusal | None]:
        """
        Atomically begin attaching volume C{volumeid} to VM C{vmid}, claiming its size on
        the VM's PM when its data is not there yet; C{op} is the attach's token, C{owner}
        the daemon making it.

        @return: the PM its data is on (0: nowhere yet), the VM's PM (0 for an rbd
            volume, which no PM holds), and C{None} when begun or why not (no_volume,
            busy, no_vm, no_room).
        """
        kind, detail, source, target, _seq = await self._write(
            "volume_attach",
            [self.keys.volume(volumeid), self.keys.vm(vmid)],
            [volumeid, vmid, repr(float(disk_ratio)), op, owner],
        )
        return int(source), int(target), (None if kind == "ok" else Refusal(kind, detail))

    async def begin_volume(
        self, volumeid: int, status: str, op: str, owner: str = ""
    ) -> Refusal | None:
        """
        Begin a change that gives volume C{volumeid} the status C{status}
        (C{detaching} or C{destroying}), if it has the one before it (L{BEGIN}).

        @return: C{None} when begun, else why not (no_volume, busy).
        """
        kind, detail, _seq = await self._write(
            "volume_begin",
            [self.keys.volume(volumeid)],
            [volumeid, BEGIN[status], status, op, owner],
        )
        return None if kind == "ok" else Refusal(kind, detail)

    async def end_volume(self, volumeid: int, op: str, done: bool) -> bool:
        """
        End volume C{volumeid}'s change C{op}: done, or undone (see
        C{lua/volume_end.lua}).

        @return: C{False} if it had no such change.
        """
        seq = await self._write(
            "volume_end",
            [self.keys.volume(volumeid), self.keys.volumes],
            [volumeid, op, "done" if done else "undo"],
            patient=True,
        )
        return bool(int(seq))

    async def volume(self, volumeid: int) -> dict[str, str] | None:
        """
        The stored record of volume C{volumeid}, or C{None}.
        """
        return (await self._call("hgetall", self.keys.volume(volumeid))) or None

    async def volume_ids(self) -> list[int]:
        """
        Every volume's id, in ascending order.
        """
        return sorted(int(v) for v in await self._call("smembers", self.keys.volumes))
