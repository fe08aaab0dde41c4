"""
The VM half of L{vorchd.store.fake.FakeStore}: claims, commits, releases, changes of
running VMs, states and adoptions, as the Lua scripts in C{lua/} do them, with the same
change entries. A mixin: it works on the fake's own dicts.
"""

from __future__ import annotations

from collections.abc import Mapping

from vorchd import room
from vorchd.model import RESOURCES, Flavor, Resources
from vorchd.network import mac_of
from vorchd.room import Claimed, Refusal
from vorchd.store.hashes import pairs, resources, whole

# The fields of a VM's record that a change under way (begin_change) writes.
CHANGE_FIELDS = (
    "change_kind",
    "change_op",
    "change_owner",
    "change_pmid",
    "change_tid",
    *(f"{p}_{r}" for p in ("change", "hold") for r in RESOURCES),
)


class FakeVMs:
    """
    The VM operations of L{vorchd.store.fake.FakeStore} (see L{vorchd.store.Store} for
    what each does).
    """

    async def claim(
        self,
        vmid: int,
        pmid: int,
        wanted: Resources,
        ratios: Mapping[str, float],
        record: Mapping[str, object],
        name_prefix: str = "",
    ) -> Claimed:
        self._check()
        pm = self.items["pm"].get(pmid)
        if pm is None:
            return Claimed(vmid, Refusal(room.UNKNOWN_PM))
        if pm.get("drained") == "1":
            return Claimed(vmid, Refusal(room.DRAINED))
        if vmid == 0:
            # Redis' vmid blocks (vorchd.store.vmids) show only across its restarts,
            # which this store never has: its ids are those of a fresh Redis.
            self.vmid_counter += 1
            vmid = self.vmid_counter
        if vmid in self.vms:
            return Claimed(vmid, Refusal(room.VMID_TAKEN))
        free = room.free(resources(pm, "cap_"), resources(pm, "used_"), ratios)
        short = room.shortfall(free, wanted)
        if short is not None:
            return Claimed(vmid, Refusal(room.NO_ROOM, short))
        domain = f"{name_prefix}{vmid}"
        mac, again = mac_of(domain), 0
        while self.macs.get(mac, vmid) != vmid and self.macs[mac] in self.vms:
            again += 1
            mac = mac_of(domain, again)
        self.macs[mac] = vmid
        rec = {
            "vmid": str(vmid),
            "domain": domain,
            "volume": f"{domain}.qcow2",
            "mac": mac,
            **{r: str(getattr(wanted, r)) for r in RESOURCES},
            "state": "creating",
            **{k: str(v) for k, v in record.items()},
            "pmid": str(pmid),
        }
        self.vms[vmid] = rec
        self._add_used(pmid, rec, "", 1)
        seq = self._emit("vm", {"vm": [vmid, pairs(rec)], "pm": [pmid, pairs(pm)]})
        await self._written(seq)
        return Claimed(vmid, None, mac)

    async def commit(self, vmid: int, pmid: int, op: str = "") -> bool:
        self._check()
        rec = self.vms.get(vmid)
        if rec is None or rec.get("state") != "creating":
            return False
        if op and rec.get("op") != op:
            return False
        rec["state"] = "active"
        self.pm_vms.setdefault(pmid, set()).add(vmid)
        await self._written(self._emit("vm", {"vm": [vmid, pairs(rec)]}))
        return True

    async def release(self, vmid: int, acked: bool = False) -> bool:
        self._check()
        rec = self.vms.pop(vmid, None)
        if rec is None:
            return False
        if self.macs.get(rec.get("mac", "")) == vmid:
            del self.macs[rec["mac"]]
        pmid = whole(rec.get("pmid"))
        pm = self._add_used(pmid, rec, "", -1)
        held = []
        if rec.get("change_pmid"):
            hold_pmid = whole(rec["change_pmid"])
            hold_pm = self._add_used(hold_pmid, rec, "hold_", -1)
            if hold_pmid != pmid:
                held.append([hold_pmid, pairs(hold_pm)])
        self.pm_vms.get(pmid, set()).discard(vmid)
        data = {"vmid": vmid, "pm": [pmid, pairs(pm)], "pms": held}
        await self._written(self._emit("gone", data))
        return True

    def _add_used(self, pmid: int, rec: Mapping[str, str], prefix: str, sign: int) -> dict:
        """
        Add C{sign} times C{rec}'s C{prefix}cpu, ram, disk to PM C{pmid}'s use.
        """
        pm = self.items["pm"].setdefault(pmid, {})
        for r in RESOURCES:
            used = whole(pm.get(f"used_{r}")) + sign * whole(rec.get(prefix + r))
            pm[f"used_{r}"] = str(used)
        return pm

    async def begin_change(
        self, vmid: int, change: room.Change, ratios: Mapping[str, float]
    ) -> Refusal | None:
        self._check()
        rec = self.vms.get(vmid)
        if rec is None or rec.get("state") != "active":
            return Refusal(room.NO_VM)
        if rec.get("change_op"):
            return Refusal(room.BUSY, f"a {rec.get('change_kind')} of it is under way")
        pm = self.items["pm"].get(change.pmid)
        if pm is None:
            return Refusal(room.UNKNOWN_PM)
        if change.kind == "move" and pm.get("drained") == "1":
            return Refusal(room.DRAINED)
        free = room.free(resources(pm, "cap_"), resources(pm, "used_"), ratios)
        short = [
            f"{r} ({getattr(change.hold, r)} wanted, {getattr(free, r)} free)"
            for r in RESOURCES
            if getattr(change.hold, r) > 0 and getattr(change.hold, r) > getattr(free, r)
        ]
        if short:
            return Refusal(room.NO_ROOM, ", ".join(short))
        flavor, hold = change.flavor, change.hold
        rec.update(
            change_kind=change.kind,
            change_op=change.op,
            change_owner=change.owner,
            change_pmid=str(change.pmid),
            change_tid=str(flavor.tid),
            **{f"change_{r}": str(getattr(flavor, r)) for r in RESOURCES},
            **{f"hold_{r}": str(getattr(hold, r)) for r in RESOURCES},
        )
        self._add_used(change.pmid, rec, "hold_", 1)
        seq = self._emit("vm", {"vm": [vmid, pairs(rec)], "pm": [change.pmid, pairs(pm)]})
        await self._written(seq)
        return None

    async def end_change(self, vmid: int, op: str, done: bool) -> bool:
        self._check()
        rec = self.vms.get(vmid)
        if rec is None or rec.get("change_op") != op:
            return False
        old, new = whole(rec.get("pmid")), whole(rec.get("change_pmid"))
        self._add_used(new, rec, "hold_", -1)
        if done:
            self._add_used(old, rec, "", -1)
            self._add_used(new, rec, "change_", 1)
            if old != new:
                self.pm_vms.get(old, set()).discard(vmid)
                self.pm_vms.setdefault(new, set()).add(vmid)
            rec.update(
                pmid=rec["change_pmid"],
                instance_type=rec["change_tid"],
                **{r: rec[f"change_{r}"] for r in RESOURCES},
            )
        for field in CHANGE_FIELDS:
            rec.pop(field, None)
        pms = [[pmid, pairs(self.items["pm"][pmid])] for pmid in dict.fromkeys((old, new))]
        await self._written(self._emit("vm", {"vm": [vmid, pairs(rec)], "pms": pms}))
        return True

    async def set_vm_state(self, vmid: int, state: str) -> None:
        self._check()
        rec = self.vms.get(vmid)
        if rec is None or rec.get("state") in (None, "creating"):
            return
        rec["state"] = state
        await self._written(self._emit("vm", {"vm": [vmid, pairs(rec)]}))

    async def adopt(
        self, vmid: int, pmid: int, flavor: Flavor, record: Mapping[str, object]
    ) -> bool:
        self._check()
        if vmid in self.vms:
            return False
        rec = {
            **{k: str(v) for k, v in record.items()},
            "vmid": str(vmid),
            "pmid": str(pmid),
            "state": "active",
            "instance_type": str(flavor.tid),
            **{r: str(getattr(flavor, r)) for r in RESOURCES},
        }
        self.vms[vmid] = rec
        if rec.get("mac"):
            self.macs[rec["mac"]] = vmid
        pm = self._add_used(pmid, rec, "", 1)
        self.pm_vms.setdefault(pmid, set()).add(vmid)
        self.vmid_counter = max(self.vmid_counter, vmid)
        seq = self._emit("vm", {"vm": [vmid, pairs(rec)], "pm": [pmid, pairs(pm)]})
        await self._written(seq)
        return True
