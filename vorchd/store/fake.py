"""
An in-memory L{Store}: the same operations, the same answers and the same change
entries as the Lua scripts in C{lua/} give, with no Redis, for unit tests of the fleet's
logic (tests/unit). It exists only because it passes the store's interface tests
(tests/integration/test_store.py, run against both); anything it does differently is a bug in it.

Every operation completes before it returns (as a script is atomic), and, like the real
store, a write waits for C{settled(seq)} when a read model is attached.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping

from twisted.internet import defer

from vorchd.model import RESOURCES, Flavor, Image, Resources
from vorchd.store.client import StoreUnavailable
from vorchd.store.fakevms import FakeVMs
from vorchd.store.fakevolumes import FakeVolumes
from vorchd.store.hashes import pairs, whole
from vorchd.store.keys import STREAM_MAXLEN, Keys


class FakeStore(FakeVMs, FakeVolumes):
    """
    The fleet's state in dicts. C{fail} set to a message makes every call fail with
    L{StoreUnavailable} (Redis down), as the real store does on an outage.
    """

    settled: Callable[[int], Awaitable[object]] | None = None
    # No Sentinels here: the master never changes.
    failovers = 0

    def __init__(self, prefix: str = "vorchd", reactor=None, timeout: float = 5.0):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._timeout = timeout
        self._prefix = prefix
        self.keys = Keys(prefix)
        self.fail: str | None = None
        self.fleet: str | None = None
        self.vmid_counter = 0
        self.seq = 0
        self.index: dict[str, dict[str, int]] = {"pm": {}, "image": {}}
        self.counters: dict[str, int] = {"pm": 0, "image": 0}
        self.active: dict[str, list[int]] = {"pm": [], "image": [], "flavor": []}
        self.items: dict[str, dict[int, dict[str, str]]] = {"pm": {}, "image": {}, "flavor": {}}
        self.pm_vms: dict[int, set[int]] = {}
        self.vms: dict[int, dict[str, str]] = {}
        # MAC address -> vmid (P:macs)
        self.macs: dict[str, int] = {}
        self.volid_counter = 0
        self.volumes: dict[int, dict[str, str]] = {}
        self.live: dict[str, str] = {}
        self.ini: dict[str, str] = {}
        self.leases: dict[str, float] = {}
        # The change stream: (id, fields), and who waits for the next entry.
        self.stream: list[tuple[str, dict[str, str]]] = []
        self._waiting: list[defer.Deferred] = []
        self._stream_ms = 0

    @property
    def down(self) -> str | None:
        return self.fail

    def _check(self) -> None:
        if self.fail is not None:
            raise StoreUnavailable(self.fail)

    async def disconnect(self) -> None:
        for d in self._waiting:
            if not d.called:
                d.callback(None)
        self._waiting = []

    # -- the change stream ---------------------------------------------------------------

    def _emit(self, op: str, data) -> int:
        self.seq += 1
        self._stream_ms += 1
        entry_id = f"{self._stream_ms}-0"
        self.stream.append((entry_id, {"s": str(self.seq), "o": op, "d": json.dumps(data)}))
        if len(self.stream) > STREAM_MAXLEN:
            del self.stream[: len(self.stream) - STREAM_MAXLEN]
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:
                d.callback(None)
        return self.seq

    async def _written(self, seq: int) -> None:
        if seq and self.settled is not None:
            await self.settled(seq)

    async def read_changes(self, after: str, block_ms: int = 2000, count: int = 1000):
        self._check()

        def newer():
            ms = int(after.split("-")[0])
            return [(i, dict(f)) for i, f in self.stream if int(i.split("-")[0]) > ms][:count]

        entries = newer()
        if entries:
            return entries
        d = defer.Deferred()
        self._waiting.append(d)
        timer = self._reactor.callLater(block_ms / 1000, lambda: d.called or d.callback(None))
        try:
            await d
        except defer.CancelledError:
            # The reader gave up (it is stopping): as the real client says it.
            raise StoreUnavailable("the read was cancelled") from None
        finally:
            if timer.active():
                timer.cancel()
            if d in self._waiting:
                self._waiting.remove(d)
        self._check()
        return newer()

    async def snapshot(self) -> dict:
        self._check()
        return {
            "seq": self.seq,
            "last": self.stream[-1][0] if self.stream else "0-0",
            "fleet": self.fleet or "",
            "settings": pairs(self.live),
            "pms": {
                "active": list(self.active["pm"]),
                "recs": [
                    [pmid, pairs(rec), [str(v) for v in self.pm_vms.get(pmid, ())]]
                    for pmid, rec in self.items["pm"].items()
                ],
            },
            "images": {
                "active": list(self.active["image"]),
                "recs": [[i, pairs(self.items["image"][i])] for i in self.active["image"]],
            },
            "flavors": [[t, pairs(self.items["flavor"][t])] for t in self.active["flavor"]],
            "vms": [[v, pairs(rec)] for v, rec in self.vms.items()],
            "volumes": [[v, pairs(rec)] for v, rec in self.volumes.items()],
        }

    # -- identity ------------------------------------------------------------------------

    async def fleet_id(self) -> str:
        self._check()
        if self.fleet is None:
            self.fleet = secrets.token_hex(4)
        return self.fleet

    async def next_vmid(self) -> int:
        self._check()
        self.vmid_counter += 1
        return self.vmid_counter

    async def index_macs(self) -> int:
        """
        Nothing to index: this store has kept its MACs' index from its start.
        """
        self._check()
        return 0

    def prepare_vmids(self) -> None:
        """
        Nothing to prepare: the fake's counter has no blocks (L{vorchd.store.vmids}).
        """

    # -- inventory -----------------------------------------------------------------------

    async def _register(self, kind: str, items: Iterable[tuple[str, str]]) -> list[int]:
        self._check()
        ids, recs = [], []
        for line, extra in items:
            if line not in self.index[kind]:
                self.counters[kind] += 1
                self.index[kind][line] = self.counters[kind]
            i = self.index[kind][line]
            rec = self.items[kind].setdefault(i, {})
            rec.update(line=line, extra=extra)
            ids.append(i)
            recs.append([i, pairs(rec)])
        self.active[kind] = ids
        await self._written(self._emit(f"{kind}s", {"ids": ids, "recs": recs}))
        return ids

    async def register_pms(self, entries: Iterable[tuple[str, str]]) -> list[int]:
        return await self._register("pm", entries)

    async def register_images(self, entries: Iterable[tuple[str, str]]) -> list[int]:
        return await self._register("image", entries)

    async def set_flavors(self, flavors: Iterable[Flavor]) -> None:
        self._check()
        out = []
        self.active["flavor"] = []
        for f in flavors:
            self.items["flavor"][f.tid] = {
                "cpu": str(f.cpu),
                "ram": str(f.ram),
                "disk": str(f.disk),
            }
            self.active["flavor"].append(f.tid)
            out.append([f.tid, f.cpu, f.ram, f.disk])
        await self._written(self._emit("flavors", out))

    async def _pm_set(self, pmid: int, fields: Mapping[str, object]) -> int:
        self._check()
        rec = self.items["pm"].get(pmid)
        if rec is None:
            return 0
        rec.update({k: str(v) for k, v in fields.items()})
        seq = self._emit("pm", {"pm": [pmid, pairs(rec)]})
        await self._written(seq)
        return seq

    async def set_capacity(self, pmid: int, capacity: Resources) -> None:
        await self._pm_set(pmid, {f"cap_{r}": getattr(capacity, r) for r in RESOURCES})

    async def set_drained(self, pmid: int, drained: bool) -> bool:
        return bool(await self._pm_set(pmid, {"drained": "1" if drained else "0"}))

    # -- settings ------------------------------------------------------------------------

    async def adopt_settings(self, ini: Mapping[str, object]) -> dict[str, str]:
        self._check()
        for key, value in ini.items():
            if self.ini.get(key) != str(value):
                self.ini[key] = str(value)
                self.live[key] = str(value)
        await self._written(self._emit("settings", pairs(self.live)))
        return dict(self.live)

    async def set_setting(self, key: str, value: object) -> None:
        self._check()
        self.live[key] = str(value)
        await self._written(self._emit("settings", pairs(self.live)))

    async def settings(self) -> dict[str, str]:
        self._check()
        return dict(self.live)

    # -- reads ------------------------------------------------------------------------------

    async def flavors(self) -> list[Flavor]:
        self._check()
        return [self._flavor(t) for t in self.active["flavor"]]

    def _flavor(self, tid: int) -> Flavor:
        f = self.items["flavor"][tid]
        return Flavor(tid, whole(f["cpu"]), whole(f["ram"]), whole(f["disk"]))

    async def flavor(self, tid: int) -> Flavor | None:
        self._check()
        return self._flavor(tid) if tid in self.active["flavor"] else None

    async def images(self) -> list[Image]:
        self._check()
        return [self._image(i) for i in self.active["image"]]

    def _image(self, i: int) -> Image:
        rec = self.items["image"][i]
        return Image(i, rec.get("extra", ""), rec.get("line", ""))

    async def image(self, image_id: int) -> Image | None:
        self._check()
        return self._image(image_id) if image_id in self.active["image"] else None

    async def pm_ids(self) -> list[int]:
        self._check()
        return list(self.active["pm"])

    async def pm_record(self, pmid: int) -> dict[str, str] | None:
        self._check()
        rec = self.items["pm"].get(pmid)
        return dict(rec) if rec else None

    async def pm_vmids(self, pmid: int) -> list[int]:
        self._check()
        return sorted(self.pm_vms.get(pmid, ()))

    async def vm(self, vmid: int) -> dict[str, str] | None:
        self._check()
        rec = self.vms.get(vmid)
        return dict(rec) if rec else None

    async def all_vmids(self) -> list[int]:
        self._check()
        return sorted(self.vms)

    # -- leases ------------------------------------------------------------------------------

    async def heartbeat(self, daemon_id: str, ttl: float) -> None:
        self._check()
        self.leases[daemon_id] = self._reactor.seconds() + ttl

    async def alive(self, daemon_id: str) -> bool:
        self._check()
        return self.leases.get(daemon_id, 0) > self._reactor.seconds()
