"""
The fleet's state in Redis hashes, through txredisapi.

Every change that must not be torn (a claim, its commit, its release, id assignment)
is one Lua script, so it is atomic however many requests or daemons share the Redis.

Keys, under a prefix (C{vorchd} by default)::

    P:fleet                  this fleet's id, part of every libvirt name it makes
    P:vmid                   the vmid counter (INCR: never reused)
    P:vm:<vmid>              hash: name, instance_type, image_id, pmid, cpu, ram, disk,
                             domain, volume, state (creating | active | missing)
    P:vms                    set of every vmid that holds a claim
    P:pm:index  P:pm:next    hash pm_file line -> pmid, and the pmid counter
    P:pm:<pmid>              hash: line, uri, cap_cpu/ram/disk, used_cpu/ram/disk, drained
    P:pm:<pmid>:vms          set of the PM's VMs (created, not being created)
    P:pm:active              list of the pmids in the current pm_file, in file order
    P:image:index P:image:next P:image:<id> P:image:active    likewise for images
    P:flavor:<tid>           hash: cpu, ram, disk
    P:flavor:active          list of the tids in the current flavor_file
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterable, Mapping

import txredisapi
from twisted.internet import defer
from twisted.internet.error import TimeoutError as TwistedTimeoutError

from vorchd.config import RedisAddress
from vorchd.model import RESOURCES, Flavor, Host, Image, Resources


class StoreUnavailable(Exception):
    """
    Redis did not answer (down, unreachable or too slow): nothing was changed that the
    caller can rely on, and the caller answers with the seed API's failure value.
    """


class _Cancelled(StoreUnavailable):
    """
    The caller gave up waiting for Redis: whether the call took effect is unknown, as
    for any other L{StoreUnavailable}, but Redis may well be fine.
    """


# Register lines under stable ids: a known line keeps its id, a new one gets the next.
# KEYS: index hash, counter, active list. ARGV: prefix, kind, then line/extra pairs.
_REGISTER = """
local ids = {}
redis.call('DEL', KEYS[3])
for i = 3, #ARGV, 2 do
  local line = ARGV[i]
  local id = redis.call('HGET', KEYS[1], line)
  if not id then
    id = redis.call('INCR', KEYS[2])
    redis.call('HSET', KEYS[1], line, id)
  end
  local key = ARGV[1] .. ':' .. ARGV[2] .. ':' .. id
  redis.call('HSET', key, 'line', line, 'extra', ARGV[i + 1])
  redis.call('RPUSH', KEYS[3], id)
  table.insert(ids, tonumber(id))
end
return ids
"""

# Claim room on a PM for a VM, or say why not. Checks and writes in one step, so no two
# claims can both see the same free room.
# KEYS: pm hash, vm hash, all-vms set. ARGV: vmid, cpu, ram, disk, three ratios, then
# the vm record as field/value pairs.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown PM' end
if redis.call('HGET', KEYS[1], 'drained') == '1' then return 'PM drained' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'vmid taken' end
local names = {'cpu', 'ram', 'disk'}
for i, r in ipairs(names) do
  local cap = tonumber(redis.call('HGET', KEYS[1], 'cap_' .. r) or '0')
  local used = tonumber(redis.call('HGET', KEYS[1], 'used_' .. r) or '0')
  local limit = math.floor(cap * tonumber(ARGV[4 + i]))
  if used + tonumber(ARGV[1 + i]) > limit then
    return 'no room for ' .. r .. ': ' .. (limit - used) .. ' free'
  end
end
for i, r in ipairs(names) do redis.call('HINCRBY', KEYS[1], 'used_' .. r, ARGV[1 + i]) end
redis.call('HSET', KEYS[2], unpack(ARGV, 8))
redis.call('SADD', KEYS[3], ARGV[1])
return 'ok'
"""

# Turn a claim into a created VM. KEYS: vm hash, pm vms set. ARGV: vmid.
_COMMIT = """
if redis.call('HGET', KEYS[1], 'state') ~= 'creating' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'active')
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# Give a VM's room back and forget it. Idempotent: exactly one caller gets 1.
# KEYS: vm hash, all-vms set. ARGV: prefix, vmid.
_RELEASE = """
local vm = redis.call('HGETALL', KEYS[1])
if #vm == 0 then return 0 end
local f = {}
for i = 1, #vm, 2 do f[vm[i]] = vm[i + 1] end
local pm = ARGV[1] .. ':pm:' .. f['pmid']
for _, r in ipairs({'cpu', 'ram', 'disk'}) do
  redis.call('HINCRBY', pm, 'used_' .. r, -tonumber(f[r] or '0'))
end
redis.call('SREM', pm .. ':vms', ARGV[2])
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""


# The current items of a kind (flavors, images) with their hashes, in one round trip:
# {id, {field, value, ...}} each, in order; with ARGV[2], only that id if it is current.
# KEYS: the kind's active list. ARGV: the kind's key prefix [, one id].
_ACTIVE = """
local out = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if ARGV[2] == nil or id == ARGV[2] then
    table.insert(out, {id, redis.call('HGETALL', ARGV[1] .. ':' .. id)})
  end
end
return out
"""

_HOST_FIELDS = ("cap_cpu", "cap_ram", "cap_disk", "used_cpu", "used_ram", "used_disk", "drained")
# Every current PM as one line of text (fewer replies to parse than whole hashes): its
# id, the fields of _HOST_FIELDS (empty if unset) and its number of VMs, space-separated.
# KEYS: the active list. ARGV: the key prefix, then _HOST_FIELDS.
_HOSTS = """
local fields = {unpack(ARGV, 2)}
local out = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. ':pm:' .. id
  local values = redis.call('HMGET', key, unpack(fields))
  local parts = {id}
  for i = 1, #fields do parts[#parts + 1] = values[i] or '' end
  parts[#parts + 1] = redis.call('SCARD', key .. ':vms')
  table.insert(out, table.concat(parts, ' '))
end
return out
"""


# Take the ini's values where the ini changed since they were last taken (an operator
# edited it), and keep what the admin set otherwise. KEYS: live hash, last-ini hash.
# ARGV: field/value pairs from the ini. Returns the live settings.
_ADOPT = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[i + 1] then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return redis.call('HGETALL', KEYS[1])
"""


# Put back the record of a VM whose domain a PM still runs but Redis forgot (say, Redis
# lost its last second), with its room, and keep the vmid counter past it so its id is
# never given again. KEYS: vm hash, pm hash, pm vms set, all-vms set, vmid counter.
# ARGV: vmid, cpu, ram, disk, then the record as field/value pairs.
_ADOPT_VM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('HINCRBY', KEYS[2], 'used_cpu', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'used_ram', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'used_disk', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
if tonumber(redis.call('GET', KEYS[5]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[5], ARGV[1])
end
return 1
"""


def limit(capacity: int, ratio: float) -> int:
    """
    How much of a resource may be handed out: capacity times the overcommit ratio,
    rounded down, exactly as the claim script computes it.
    """
    return math.floor(capacity * ratio)


def _host(pmid: int, rec: Mapping[str, str], vms: int, up: bool) -> Host:
    return Host(
        pmid=pmid,
        capacity=Resources(*(_int(rec.get(f"cap_{r}")) for r in RESOURCES)),
        used=Resources(*(_int(rec.get(f"used_{r}")) for r in RESOURCES)),
        vms=vms,
        up=up,
        drained=rec.get("drained") == "1",
    )


def _pairs(mapping: Mapping[str, object]) -> list[object]:
    """
    C{mapping} as Redis takes a hash: field, value, field, value, ...
    """
    return [x for item in mapping.items() for x in item]


def _mapping(flat: list) -> dict:
    """
    A hash as Redis gives it (field, value, ...) as a dict.
    """
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _int(value: object, default: int = 0) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


class Store:
    """
    The fleet's records in one Redis, read and changed through txredisapi.

    Every method returns a Deferred and fails with L{StoreUnavailable} when Redis does
    not answer within C{timeout} seconds, so no caller hangs on an outage.

    Once a call has gone unanswered, Redis counts as down: one call at a time goes on
    asking it (and waits up to the timeout), and every other call that would start new
    work fails at once rather than waiting too, until a call is answered again. Calls
    that finish or record work already done on a hypervisor (commit, release, adopt,
    capacity, VM state) and lease renewals always wait their full timeout instead: the
    work they record is not thrown away on a stall. A caller giving up (cancelling) says
    nothing of Redis.
    """

    def __init__(self, redis, prefix: str = "vorchd", timeout: float = 5.0, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout
        self._reactor = reactor
        # Why Redis counts as down (None while it answers), and whether a call is asking it.
        self._down: str | None = None
        self._probing = False

    @property
    def down(self) -> str | None:
        """
        Why Redis counts as down now, or None while it answers.
        """
        return self._down

    @classmethod
    def connect(
        cls, address: RedisAddress, prefix: str = "vorchd", timeout: float = 5.0, reactor=None
    ):
        """
        A store on a lazy, self-reconnecting connection pool to C{address}; its timeouts
        run on C{reactor} (the global one by default).
        """
        pool = txredisapi.lazyConnectionPool(
            host=address.host,
            port=address.port,
            dbid=address.db,
            password=address.password,
            poolsize=4,
            reconnect=True,
            connectTimeout=timeout,
            replyTimeout=timeout,
            convertNumbers=False,
        )
        return cls(pool, prefix, timeout, reactor)

    def disconnect(self) -> defer.Deferred:
        return self._redis.disconnect()

    def _key(self, *parts: object) -> str:
        return ":".join([self._prefix, *map(str, parts)])

    async def _call(self, method: str, *args, patient: bool = False):
        """
        Call C{method} of the Redis client; a C{patient} call waits its full timeout
        even while Redis counts as down.
        """
        probe = False
        if self._down is not None and not patient:
            if self._probing:
                raise StoreUnavailable(f"{self._down} (still down)")
            self._probing = probe = True
        try:
            result = await self._ask(method, *args)
        except _Cancelled:
            raise
        except StoreUnavailable as e:
            self._down = str(e)
            raise
        finally:
            if probe:
                self._probing = False
        self._down = None
        return result

    async def _ask(self, method: str, *args):
        d = defer.maybeDeferred(getattr(self._redis, method), *args)
        d.addTimeout(self._timeout, self._reactor)
        try:
            return await d
        except defer.CancelledError:
            # The caller gave up (addTimeout's own cancellation is a TimeoutError).
            raise _Cancelled("redis: the call was cancelled") from None
        except txredisapi.ResponseError as e:
            # Redis replaying its AOF after a restart, or stuck in a long script: not
            # an answer yet.
            if str(e).startswith(("LOADING", "BUSY", "MASTERDOWN")):
                raise StoreUnavailable(f"redis: {e}") from None
            raise
        except (
            TwistedTimeoutError,
            defer.TimeoutError,
            txredisapi.ConnectionError,
            txredisapi.TimeoutError,
            ConnectionError,
        ) as e:
            raise StoreUnavailable(f"redis: {e.__class__.__name__}: {e}") from None

    async def _eval(self, script: str, keys: list[str], args: list[object], patient: bool = False):
        return await self._call("eval", script, keys, [str(a) for a in args], patient=patient)

    # -- the fleet's identity and the id counter -------------------------------------

    async def fleet_id(self) -> str:
        """
        This fleet's short random id, made once and kept: it keeps the libvirt names of
        two fleets that share a hypervisor apart.
        """
        await self._call("set", self._key("fleet"), secrets.token_hex(4), None, None, True)
        return await self._call("get", self._key("fleet"))

    async def next_vmid(self) -> int:
        """
        A vmid no VM of this fleet has ever had.
        """
        return int(await self._call("incr", self._key("vmid")))

    # -- inventory ------------------------------------------------------------------------

    async def _register(self, kind: str, items: Iterable[tuple[str, str]]) -> list[int]:
        args: list[object] = [self._prefix, kind]
        for line, extra in items:
            args += [line, extra]
        ids = await self._eval(
            _REGISTER,
            [self._key(kind, "index"), self._key(kind, "next"), self._key(kind, "active")],
            args,
        )
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
        flavors = list(flavors)
        for f in flavors:
            await self._call(
                "hmset", self._key("flavor", f.tid), {"cpu": f.cpu, "ram": f.ram, "disk": f.disk}
            )
        active = self._key("flavor", "active")
        await self._eval(
            "redis.call('DEL', KEYS[1]) for i = 1, #ARGV do redis.call('RPUSH', KEYS[1],"
            " ARGV[i]) end return 1",
            [active],
            [f.tid for f in flavors],
        )

    async def _active(self, kind: str, only: int | None = None) -> list[tuple[int, dict]]:
        """
        The current items of C{kind} (C{flavor}, C{image}) and their records, in file
        order; with C{only}, just that one if it is current.
        """
        args = [self._key(kind)] + ([] if only is None else [only])
        rows = await self._eval(_ACTIVE, [self._key(kind, "active")], args)
        return [(int(i), _mapping(flat)) for i, flat in rows]

    @staticmethod
    def _flavors(rows) -> list[Flavor]:
        return [
            Flavor(tid, _int(f["cpu"]), _int(f["ram"]), _int(f["disk"])) for tid, f in rows if f
        ]

    async def flavors(self) -> list[Flavor]:
        """
        The current instance types, in file order.
        """
        return self._flavors(await self._active("flavor"))

    async def flavor(self, tid: int) -> Flavor | None:
        """
        The current instance type C{tid}, or C{None}.
        """
        return next(iter(self._flavors(await self._active("flavor", tid))), None)

    async def images(self) -> list[Image]:
        """
        The current images, in file order.
        """
        return [
            Image(i, rec.get("extra", ""), rec.get("line", ""))
            for i, rec in await self._active("image")
        ]

    async def image(self, image_id: int) -> Image | None:
        """
        The current image C{image_id}, or C{None}.
        """
        rows = await self._active("image", image_id)
        return next((Image(i, r.get("extra", ""), r.get("line", "")) for i, r in rows), None)

    async def pm_ids(self) -> list[int]:
        """
        The current PMs' ids, in file order.
        """
        return [int(i) for i in await self._call("lrange", self._key("pm", "active"), 0, -1)]

    async def retired_pms(self, current: Iterable[int]) -> list[tuple[int, str]]:
        """
        The PMs no longer among C{current} (their line left the pm_file, or changed) that
        still have VMs: C{(pmid, uri)} pairs, by id.
        """
        known = {int(i) for i in await self._call("hvals", self._key("pm", "index"))}
        out = []
        for pmid in sorted(known - set(current)):
            if not await self._call("scard", self._key("pm", pmid, "vms")):
                continue
            rec = await self.pm_record(pmid)
            if rec and rec.get("extra"):
                out.append((pmid, rec["extra"]))
        return out

    async def pm_record(self, pmid: int) -> dict[str, str] | None:
        """
        Everything stored for PM C{pmid}, or C{None} if the fleet never had it.
        """
        rec = await self._call("hgetall", self._key("pm", pmid))
        return rec or None

    async def set_capacity(self, pmid: int, capacity: Resources) -> None:
        """
        Record what discovery read of PM C{pmid}.
        """
        await self._call(
            "hmset",
            self._key("pm", pmid),
            {f"cap_{r}": getattr(capacity, r) for r in RESOURCES},
            patient=True,
        )

    async def host(self, pmid: int, up: bool = True) -> Host | None:
        """
        PM C{pmid} as placement sees it, or C{None} if the fleet never had it.
        """
        rec = await self.pm_record(pmid)
        if rec is None:
            return None
        vms = await self._call("scard", self._key("pm", pmid, "vms"))
        return _host(pmid, rec, int(vms), up)

    async def hosts(self, is_up: Callable[[int], bool]) -> list[Host]:
        """
        Every current PM as placement sees it, in file order, read in one round trip;
        C{is_up(pmid)} says whether this daemon reaches it now.
        """
        rows = await self._eval(_HOSTS, [self._key("pm", "active")], [self._prefix, *_HOST_FIELDS])
        out = []
        for row in rows:
            pmid, *values, vms = row.split(" ")
            rec = dict(zip(_HOST_FIELDS, values, strict=True))
            out.append(_host(int(pmid), rec, int(vms), is_up(int(pmid))))
        return out

    async def pm_vmids(self, pmid: int) -> list[int]:
        """
        The vmids of the VMs created on PM C{pmid}, in ascending order.
        """
        return sorted(int(v) for v in await self._call("smembers", self._key("pm", pmid, "vms")))

    # -- live settings (shared by every daemon on this Redis) ---------------------------

    async def adopt_settings(self, ini: Mapping[str, object]) -> dict[str, str]:
        """
        Start-up: take each ini value that changed since the ini was last read, keep
        what an admin set otherwise, and return the live settings.
        """
        flat = await self._eval(
            _ADOPT, [self._key("settings"), self._key("settings", "ini")], _pairs(ini)
        )
        return _mapping(flat)

    async def settings(self) -> dict[str, str]:
        """
        The live settings: policy name and overcommit ratios.
        """
        return await self._call("hgetall", self._key("settings"))

    async def set_setting(self, key: str, value: object) -> None:
        """
        Change a live setting; every daemon on this Redis uses it from its next request.
        """
        await self._call("hset", self._key("settings"), key, str(value))

    async def set_drained(self, pmid: int, drained: bool) -> bool:
        """
        Close PM C{pmid} to new VMs (its VMs stay) or open it again.

        @return: C{False} if the fleet has no such PM.
        """
        done = await self._eval(
            "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end"
            " redis.call('HSET', KEYS[1], 'drained', ARGV[1]) return 1",
            [self._key("pm", pmid)],
            ["1" if drained else "0"],
        )
        return bool(int(done))

    # -- VMs --------------------------------------------------------------------------

    async def claim(
        self,
        vmid: int,
        pmid: int,
        wanted: Resources,
        ratios: Mapping[str, float],
        record: Mapping[str, object],
    ) -> str | None:
        """
        Atomically reserve C{wanted} on PM C{pmid} for C{vmid} and write its record in
        state C{creating}.

        @return: C{None} when claimed, else why not (no room, drained, ...).
        """
        full = {**record, "vmid": vmid, "pmid": pmid, "state": "creating"}
        full.update(wanted.as_dict())
        answer = await self._eval(
            _CLAIM,
            [self._key("pm", pmid), self._key("vm", vmid), self._key("vms")],
            [vmid, wanted.cpu, wanted.ram, wanted.disk]
            + [repr(float(ratios[r])) for r in RESOURCES]
            + _pairs(full),
        )
        return None if answer == "ok" else answer

    async def commit(self, vmid: int, pmid: int) -> bool:
        """
        Mark a claimed VM as created; C{False} if its claim is gone.
        """
        done = await self._eval(
            _COMMIT, [self._key("vm", vmid), self._key("pm", pmid, "vms")], [vmid], patient=True
        )
        return bool(int(done))

    async def release(self, vmid: int) -> bool:
        """
        Give the room of VM C{vmid} back and forget it (a claim or a created VM).

        @return: C{True} for exactly one of any number of concurrent callers.
        """
        done = await self._eval(
            _RELEASE, [self._key("vm", vmid), self._key("vms")], [self._prefix, vmid], patient=True
        )
        return bool(int(done))

    async def vm(self, vmid: int) -> dict[str, str] | None:
        """
        The stored record of VM C{vmid} (in any state), or C{None}.
        """
        rec = await self._call("hgetall", self._key("vm", vmid))
        return rec or None

    async def set_vm_state(self, vmid: int, state: str) -> None:
        """
        Record C{state} for an existing VM (C{active} or C{missing}).
        """
        await self._eval(
            "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'state',"
            " ARGV[1]) end return 1",
            [self._key("vm", vmid)],
            [state],
            patient=True,
        )

    async def all_vmids(self) -> list[int]:
        """
        Every vmid holding a claim, created or being created.
        """
        return sorted(int(v) for v in await self._call("smembers", self._key("vms")))

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
        done = await self._eval(
            _ADOPT_VM,
            [
                self._key("vm", vmid),
                self._key("pm", pmid),
                self._key("pm", pmid, "vms"),
                self._key("vms"),
                self._key("vmid"),
            ],
            [vmid, flavor.cpu, flavor.ram, flavor.disk] + _pairs(full),
            patient=True,
        )
        return bool(int(done))

    # -- daemons' leases ------------------------------------------------------------------

    async def heartbeat(self, daemon_id: str, ttl: float) -> None:
        """
        Say that daemon C{daemon_id} is alive for the next C{ttl} seconds.
        """
        await self._call(
            "set", self._key("daemon", daemon_id), "1", None, int(ttl * 1000), patient=True
        )

    async def alive(self, daemon_id: str) -> bool:
        """
        Whether daemon C{daemon_id} renewed its lease in time.
        """
        return bool(int(await self._call("exists", self._key("daemon", daemon_id))))
