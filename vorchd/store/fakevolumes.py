"""
The volume half of L{vorchd.store.fake.FakeStore}: what C{lua/volume_*.lua} do, with the
same answers and change entries. A mixin: it works on the fake's own dicts.
"""

from __future__ import annotations

import math

from vorchd import room
from vorchd.room import Refusal
from vorchd.store.hashes import pairs, whole
from vorchd.store.volumes import BEGIN


class FakeVolumes:
    """
    The volume operations of L{vorchd.store.fake.FakeStore} (see
    L{vorchd.store.volumes.StoreVolumes} for what each does).
    """

    async def create_volume(self, name: str, size: int, backend: str) -> int:
        self._check()
        self.volid_counter += 1
        volumeid = self.volid_counter
        rec = {
            "volumeid": str(volumeid),
            "name": name,
            "size": str(size),
            "status": "available",
            "pmid": "0",
            "vmid": "0",
            "backend": backend,
        }
        self.volumes[volumeid] = rec
        await self._written(self._emit("volume", {"volume": [volumeid, pairs(rec)]}))
        return volumeid

    async def attach_volume(
        self, volumeid: int, vmid: int, disk_ratio: float, op: str, owner: str = ""
    ) -> tuple[int, int, Refusal | None]:
        self._check()
        rec = self.volumes.get(volumeid)
        if rec is None:
            return 0, 0, Refusal(room.NO_VOLUME)
        if rec["status"] != "available":
            return 0, 0, Refusal(room.BUSY, f"volume {volumeid} is {rec['status']}")
        vm = self.vms.get(vmid)
        if vm is None or vm.get("state") != "active":
            return 0, 0, Refusal(room.NO_VM)
        if vm.get("change_op"):
            return 0, 0, Refusal(room.BUSY, f"a change of VM {vmid} is under way")
        source, target = whole(rec["pmid"]), whole(vm["pmid"])
        if rec.get("backend") == "rbd":
            target = 0  # in Ceph: no PM's disk is claimed
        data: dict = {}
        if source != target:
            size = whole(rec["size"])
            pm = self.items["pm"].setdefault(target, {})
            limit = math.floor(whole(pm.get("cap_disk")) * float(disk_ratio))
            used = whole(pm.get("used_disk"))
            if used + size > limit:
                why = f"disk ({size} wanted, {limit - used} free)"
                return 0, 0, Refusal(room.NO_ROOM, why)
            pm["used_disk"] = str(used + size)
            data["pm"] = [target, pairs(pm)]
        rec.update(status="attaching", vmid=str(vmid), to_pmid=str(target), op=op, owner=owner)
        data["volume"] = [volumeid, pairs(rec)]
        await self._written(self._emit("volume", data))
        return source, target, None

    async def begin_volume(
        self, volumeid: int, status: str, op: str, owner: str = ""
    ) -> Refusal | None:
        self._check()
        rec = self.volumes.get(volumeid)
        if rec is None:
            return Refusal(room.NO_VOLUME)
        if rec["status"] != BEGIN[status]:
            return Refusal(room.BUSY, f"volume {volumeid} is {rec['status']}")
        rec.update(status=status, op=op, owner=owner)
        await self._written(self._emit("volume", {"volume": [volumeid, pairs(rec)]}))
        return None

    async def end_volume(self, volumeid: int, op: str, done: bool) -> bool:
        self._check()
        rec = self.volumes.get(volumeid)
        if rec is None or rec.get("op") != op:
            return False
        size, pmid, target = whole(rec["size"]), whole(rec["pmid"]), whole(rec.get("to_pmid"))
        touched = []

        def give_back(where: int) -> None:
            if where:
                pm = self.items["pm"].setdefault(where, {})
                pm["used_disk"] = str(whole(pm.get("used_disk")) - size)
                touched.append(where)

        status = rec["status"]
        if status == "attaching":
            if done:
                if pmid != target:
                    give_back(pmid)
                rec.update(status="attached", pmid=str(target))
            else:
                if pmid != target:
                    give_back(target)
                rec.update(status="available", vmid="0")
        elif status == "detaching":
            rec.update(status="available", vmid="0") if done else rec.update(status="attached")
        elif status == "destroying":
            if done:
                give_back(pmid)
                del self.volumes[volumeid]
            else:
                rec.update(status="available")
        else:
            return False
        pms = [[p, pairs(self.items["pm"][p])] for p in touched]
        if volumeid not in self.volumes:
            seq = self._emit("volume_gone", {"volumeid": volumeid, "pms": pms})
        else:
            for field in ("op", "to_pmid", "owner"):
                rec.pop(field, None)
            seq = self._emit("volume", {"volume": [volumeid, pairs(rec)], "pms": pms})
        await self._written(seq)
        return True

    async def volume(self, volumeid: int) -> dict[str, str] | None:
        self._check()
        rec = self.volumes.get(volumeid)
        return dict(rec) if rec else None

    async def volume_ids(self) -> list[int]:
        self._check()
        return sorted(self.volumes)
