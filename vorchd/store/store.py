"""
The fleet's records in Redis hashes (L{vorchd.store.keys}), read and changed through
txredisapi.

Every change that must not be torn (a claim, its commit, its release, id assignment) is
one Lua script, so it is atomic however many requests or daemons share the Redis; every
script that changes state also appends the change to the change stream, from which each
daemon's read model (L{vorchd.state}) follows the fleet.

A write returns once Redis has it and, when a read model is attached (C{settled}), once
that model holds it too: a request that changed state answers only after its own
daemon would answer reads with the change (read-your-writes).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping

from vorchd.model import RESOURCES, Flavor, Image, Resources
from vorchd.room import Change, Claimed, Refusal
from vorchd.store.client import RedisClient
from vorchd.store.hashes import mapping, pairs, whole
from vorchd.store.vmids import DurableVmids
from vorchd.store.volumes import StoreVolumes


class Store(StoreVolumes, DurableVmids, RedisClient):
    """
    The fleet's state in one Redis: the writes (each a script with its change entry),
    the snapshot a read model starts from, and the few reads that must ask the authority.
    """

    # Called with the seq of each change this store wrote; waited for before the write
    # returns. Set by the read model (L{vorchd.state.feed.ChangeFeed}).
    settled: Callable[[int], Awaitable[object]] | None = None

    async def _write(
        self, name: str, keys: list[str], args: list[object], patient=False, acked=False
    ):
        """
        Run the changing script C{name}; C{args} come after the prefix. Its answer is
        C{seq} or C{[..., seq]}: a seq of 0 means nothing changed. An C{acked} change
        (one a client is told of) returns only once C{min_replicas_acked} replicas have
        it, and raises L{NotReplicated} if they do not confirm it in time.
        """
        conn = self._acked_connection() if acked else None
        answer = await self._script(name, keys, [self._prefix, *args], patient=patient, conn=conn)
        seq = int(answer[-1] if isinstance(answer, list) else answer)
        if seq and conn is not None:
            await self._replicated(conn)
        if seq and self.settled is not None:
            await self.settled(seq)
        return answer

    # -- the fleet's identity (its vmids: vorchd.store.vmids) -----------------------

    async def fleet_id(self) -> str:
        """
        This fleet's short random id, made once and kept: it keeps the libvirt names of
        two fleets that share a hypervisor apart.
        """
        await self._call("set", self.keys.fleet, secrets.token_hex(4), None, None, True)
        return await self._call("get", self.keys.fleet)

    # -- the snapshot ------------------------------------------------------------------

    async def snapshot(self) -> dict:
        """
        The whole state at one instant, with the change stream's position then (see
        C{lua/snapshot.lua} for its shape).
        """
        return json.loads(await self._script("snapshot", [], [self._prefix]))

    # -- inventory ------------------------------------------------------------------------

    async def _register(self, kind: str, items: Iterable[tuple[str, str]]) -> list[int]:
        args: list[object] = [kind]
        for line, extra in items:
            args += [line, extra]
        keys = [self.keys.index(kind), self.keys.counter(kind), self.keys.active(kind)]
        ids, _seq = await self._write("register", keys, args)
        return [int(i) for i in ids]

    async def register_pms(self, entries: Iterable[tuple[str, str]]) -> list[int]:
        """
        Make C{(line, uri)} pairs the fleet's current PMs, in order, and return their
        ids: a line seen before keeps its id, a new line gets a new one.
        """
        return await self._register("pm", entries)

    async def register_images(self, entries: Iterable[tuple[str, str]]) -> list[int]:
        """
        Make C{(line, name)} pairs the fleet's current images; ids as for PMs.
        """
        return await self._register("image", entries)

    async def set_flavors(self, flavors: Iterable[Flavor]) -> None:
        """
        Make C{flavors} the current instance types (VMs keep the resources they got).
        """
        args = [x for f in flavors for x in (f.tid, f.cpu, f.ram, f.disk)]
        await self._write("flavors", [self.keys.active("flavor")], args)

    async def set_capacity(self, pmid: int, capacity: Resources) -> None:
        """
        Record what discovery read of PM C{pmid}.
        """
        fields = {f"cap_{r}": getattr(capacity, r) for r in RESOURCES}
        await self._write("pm_set", [self.keys.pm(pmid)], [pmid, *pairs(fields)], patient=True)

    async def set_drained(self, pmid: int, drained: bool) -> bool:
        """
        Close PM C{pmid} to new VMs (its VMs stay) or open it again.

        @return: C{False} if the fleet has no such PM.
        """
        seq = await self._write(
            "pm_set", [self.keys.pm(pmid)], [pmid, "drained", "1" if drained else "0"]
        )
        return bool(int(seq))

    # -- live settings (shared by every daemon on this Redis) ---------------------------

    async def adopt_settings(self, ini: Mapping[str, object]) -> dict[str, str]:
        """
        Start-up: take each ini value that changed since the ini was last read, keep
        what an admin set otherwise, and return the live settings.
        """
        keys = [self.keys.settings, self.keys.settings_ini]
        live, _seq = await self._write("settings", keys, ["ini", *pairs(ini)])
        return mapping(live)

    async def index_macs(self) -> int:
        """
        Start-up, once per fleet: index the MACs of VMs made before claims kept an index
        of them (so that no new VM gets one of theirs); how many were added.
        """
        keys = [self.keys.vms, self.keys.macs, self.keys("macs", "indexed")]
        return int(await self._script("index_macs", keys, [self._prefix]))

    async def set_setting(self, key: str, value: object) -> None:
        """
        Change a live setting; every daemon on this Redis uses it from its next request.
        """
        keys = [self.keys.settings, self.keys.settings_ini]
        await self._write("settings", keys, ["admin", key, str(value)])

    async def settings(self) -> dict[str, str]:
        """
        The live settings as Redis has them now: policy name and overcommit ratios.
        """
        return await self._call("hgetall", self.keys.settings)

    # -- VMs --------------------------------------------------------------------------

    async def claim(
        self,
        vmid: int,
        pmid: int,
        wanted: Resources,
        ratios: Mapping[str, float],
        record: Mapping[str, object],
        name_prefix: str = "",
    ) -> Claimed:
        """
        Atomically reserve C{wanted} on PM C{pmid} and write the VM's record in state
        C{creating}: for VM C{vmid}, or with C{vmid} 0 for a new vmid from the counter.
        Its domain is named C{name_prefix + vmid}; its MAC is one no other VM has.

        @return: the vmid, and C{None} when claimed or why not (no room, drained, ...);
            its C{mac}, the VM's MAC address.
        """
        full = {**record, "pmid": pmid}
        while True:
            kind, detail, got, *mac, _seq = await self._write(
                "claim",
                [self.keys.pm(pmid), self.keys.vms, self.keys.vmid, self.vmid_block_key],
                [vmid, wanted.cpu, wanted.ram, wanted.disk]
                + [repr(float(ratios[r])) for r in RESOURCES]
                + [name_prefix, *pairs(full)],
            )
            if kind == "reserve":
                await self.reserve_vmids()
                continue
            if kind != "ok":
                return Claimed(int(got), Refusal(kind, detail))
            if not vmid:
                self.took_vmid(int(got))
            return Claimed(int(got), None, mac[0])

    async def commit(self, vmid: int, pmid: int, op: str = "") -> bool:
        """
        Mark a claimed VM as created; C{False} if its claim is gone (or, given the
        create's token C{op}, is another create's). The user is told of it: it returns
        once C{min_replicas_acked} replicas have it.

        @raise NotReplicated: the commit is made but too few replicas confirmed it.
        """
        seq = await self._write(
            "commit",
            [self.keys.vm(vmid), self.keys.pm_vms(pmid)],
            [vmid, op],
            patient=True,
            acked=True,
        )
        return bool(int(seq))

    async def release(self, vmid: int, acked: bool = False) -> bool:
        """
        Give the room of VM C{vmid} back and forget it (a claim or a created VM). An
        C{acked} release (a destroy the user is told of) returns once
        C{min_replicas_acked} replicas have it.

        @return: C{True} for exactly one of any number of concurrent callers.
        @raise NotReplicated: the release is made but too few replicas confirmed it.
        """
        seq = await self._write(
            "release", [self.keys.vm(vmid), self.keys.vms], [vmid], patient=True, acked=acked
        )
        return bool(int(seq))

    async def begin_change(
        self,
        vmid: int,
        change: Change,
        ratios: Mapping[str, float],
    ) -> Refusal | None:
        """
        Atomically hold the room C{change} needs on its PM and mark it under way on VM
        C{vmid} (which keeps its PM, flavor and room until L{end_change}).

        @return: C{None} when held, else why not (no such active VM, another change
            under way, unknown or drained PM, no room).
        """
        flavor, hold = change.flavor, change.hold
        kind, detail, _seq = await self._write(
            "change_begin",
            [self.keys.vm(vmid), self.keys.pm(change.pmid)],
            [vmid, change.pmid, change.kind, change.op, change.owner, flavor.tid]
            + [flavor.cpu, flavor.ram, flavor.disk, hold.cpu, hold.ram, hold.disk]
            + [repr(float(ratios[r])) for r in RESOURCES],
        )
        return None if kind == "ok" else Refusal(kind, detail)

    async def end_change(self, vmid: int, op: str, done: bool) -> bool:
        """
        End VM C{vmid}'s change C{op}: C{done} makes its PM and flavor the VM's (and
        gives the old PM's room back), else the held room is given back.

        @return: C{False} if the VM had no such change (ended already).
        """
        seq = await self._write(
            "change_end",
            [self.keys.vm(vmid)],
            [vmid, op, "done" if done else "undo"],
            patient=True,
        )
        return bool(int(seq))

    async def set_vm_state(self, vmid: int, state: str) -> None:
        """
        Record C{state} for an existing VM (C{active} or C{missing}).
        """
        await self._write("vm_state", [self.keys.vm(vmid)], [vmid, state], patient=True)

    async def adopt(
        self, vmid: int, pmid: int, flavor: Flavor, record: Mapping[str, object]
    ) -> bool:
        """
        Record VM C{vmid}, found running on PM C{pmid}, as active with its flavor's room
        (even past capacity: it runs there), unless Redis already knows it.

        @return: whether it was adopted.
        """
        full = {
            **record,
            "vmid": vmid,
            "pmid": pmid,
            "state": "active",
            "instance_type": flavor.tid,
            **flavor.resources.as_dict(),
        }
        seq = await self._write(
            "adopt_vm",
            [
                self.keys.vm(vmid),
                self.keys.pm(pmid),
                self.keys.pm_vms(pmid),
                self.keys.vms,
                self.keys.vmid,
            ],
            [vmid, flavor.cpu, flavor.ram, flavor.disk, *pairs(full)],
            patient=True,
        )
        return bool(int(seq))

    # -- reads at the authority (the read model answers the API; these are for the
    # -- start-up, the admin and tests that compare the model with Redis) ---------------

    async def _active(self, kind: str, only: int | None = None) -> list[tuple[int, dict]]:
        args = [self._key(kind)] + ([] if only is None else [only])
        rows = await self._script("active", [self.keys.active(kind)], args)
        return [(int(i), mapping(flat)) for i, flat in rows]

    async def flavors(self) -> list[Flavor]:
        """
        The current instance types, in file order.
        """
        return [
            Flavor(tid, whole(f["cpu"]), whole(f["ram"]), whole(f["disk"]))
            for tid, f in await self._active("flavor")
            if f
        ]

    async def flavor(self, tid: int) -> Flavor | None:
        """
        The current instance type C{tid}, or C{None}.
        """
        rows = await self._active("flavor", tid)
        return next(
            (Flavor(t, whole(f["cpu"]), whole(f["ram"]), whole(f["disk"])) for t, f in rows if f),
            None,
        )

    async def image(self, image_id: int) -> Image | None:
        """
        The current image C{image_id}, or C{None}.
        """
        rows = await self._active("image", image_id)
        return next((Image(i, r.get("extra", ""), r.get("line", "")) for i, r in rows), None)

    async def images(self) -> list[Image]:
        """
        The current images, in file order.
        """
        return [
            Image(i, rec.get("extra", ""), rec.get("line", ""))
            for i, rec in await self._active("image")
        ]

    async def pm_ids(self) -> list[int]:
        """
        The current PMs' ids, in file order.
        """
        return [int(i) for i in await self._call("lrange", self.keys.active("pm"), 0, -1)]

    async def pm_record(self, pmid: int) -> dict[str, str] | None:
        """
        Everything stored for PM C{pmid}, or C{None} if the fleet never had it.
        """
        rec = await self._call("hgetall", self.keys.pm(pmid))
        return rec or None

    async def pm_vmids(self, pmid: int) -> list[int]:
        """
        The vmids of the VMs created on PM C{pmid}, in ascending order.
        """
        return sorted(int(v) for v in await self._call("smembers", self.keys.pm_vms(pmid)))

    async def vm(self, vmid: int) -> dict[str, str] | None:
        """
        The stored record of VM C{vmid} (in any state), or C{None}.
        """
        rec = await self._call("hgetall", self.keys.vm(vmid))
        return rec or None

    async def all_vmids(self) -> list[int]:
        """
        Every vmid holding a claim, created or being created.
        """
        return sorted(int(v) for v in await self._call("smembers", self.keys.vms))

    # -- daemons' leases ------------------------------------------------------------------

    async def heartbeat(self, daemon_id: str, ttl: float) -> None:
        """
        Say that daemon C{daemon_id} is alive for the next C{ttl} seconds.
        """
        await self._call(
            "set", self.keys.daemon(daemon_id), "1", None, int(ttl * 1000), patient=True
        )

    async def alive(self, daemon_id: str) -> bool:
        """
        Whether daemon C{daemon_id} renewed its lease in time.
        """
        return bool(int(await self._call("exists", self.keys.daemon(daemon_id))))
