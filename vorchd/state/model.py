"""
A daemon's read model of the fleet: the whole state in memory, built from one snapshot
and kept up to date by applying the change stream's entries in order.

Pure: no I/O. L{vorchd.state.feed} feeds it; the seed API's reads, placement and the
fleet view answer from it.

The change stream's ops (written by the scripts in C{vorchd/store/lua/}), each with its
data as JSON; a hash is a flat list (field, value, ...) as Redis gives it:

    pms / images   {ids: [current ids in order], recs: [[id, hash], ...]}
    flavors        [[tid, cpu, ram, disk], ...]  the current flavors in order
    pm             {pm: [pmid, hash]}
    vm             {vm: [vmid, hash], pm?: [pmid, hash], pms?: [[pmid, hash], ...]}
    gone           {vmid, pm: [pmid, hash], pms?: [[pmid, hash], ...]}
    volume         {volume: [volumeid, hash], pm?: [pmid, hash], pms?: [[pmid, hash], ...]}
    volume_gone    {volumeid, pms: [[pmid, hash], ...]}
    settings       hash
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from attrs import define, field, frozen

from vorchd.model import RESOURCES, Flavor, Image, Resources
from vorchd.state.table import HostTable
from vorchd.store.hashes import mapping, resources, whole

# Only these states are VMs a user sees; "creating" is a claim whose create has not answered.
VISIBLE = ("active", "missing")


@define
class PMState:
    """
    What the fleet knows of one PM.

    @ivar vmids: its created VMs (active or missing), not those being created.
    """

    pmid: int
    line: str = ""
    uri: str = ""
    capacity: Resources = Resources()
    used: Resources = Resources()
    drained: bool = False
    vmids: set[int] = field(factory=set)

    def update(self, rec: Mapping[str, str]) -> None:
        self.line = rec.get("line", self.line)
        self.uri = rec.get("extra", self.uri)
        self.capacity = resources(rec, "cap_")
        self.used = resources(rec, "used_")
        self.drained = rec.get("drained") == "1"


@frozen
class VMRecord:
    """
    One VM's stored record (in any state).
    """

    vmid: int
    name: str
    instance_type: int
    image_id: int
    pmid: int
    state: str
    owner: str
    op: str
    domain: str
    volume: str
    resources: Resources
    # Its NIC's MAC address ("" for a VM recorded before VMs had one).
    mac: str = ""
    # A change under way (lua/change_begin.lua), or "" and 0.
    change_kind: str = ""
    change_op: str = ""
    change_owner: str = ""
    change_pmid: int = 0
    change_tid: int = 0

    @classmethod
    def from_hash(cls, vmid: int, rec: Mapping[str, str]) -> VMRecord:
        return cls(
            vmid=vmid,
            name=rec.get("name", ""),
            instance_type=whole(rec.get("instance_type")),
            image_id=whole(rec.get("image_id")),
            pmid=whole(rec.get("pmid")),
            state=rec.get("state", ""),
            owner=rec.get("owner", ""),
            op=rec.get("op", ""),
            domain=rec.get("domain", ""),
            volume=rec.get("volume", ""),
            resources=resources(rec, ""),
            mac=rec.get("mac", ""),
            change_kind=rec.get("change_kind", ""),
            change_op=rec.get("change_op", ""),
            change_owner=rec.get("change_owner", ""),
            change_pmid=whole(rec.get("change_pmid")),
            change_tid=whole(rec.get("change_tid")),
        )

    @property
    def visible(self) -> bool:
        return self.state in VISIBLE


@frozen
class VolumeRecord:
    """
    One block volume's stored record (L{vorchd.store.keys}: C{P:volume:<id>}).
    """

    volumeid: int
    name: str
    size: int
    status: str
    vmid: int
    pmid: int
    backend: str
    # A change under way (store/lua/volume_attach.lua, volume_begin.lua), or "" and 0.
    op: str = ""
    owner: str = ""
    to_pmid: int = 0

    @classmethod
    def from_hash(cls, volumeid: int, rec: Mapping[str, str]) -> VolumeRecord:
        return cls(
            volumeid=volumeid,
            name=rec.get("name", ""),
            size=whole(rec.get("size")),
            status=rec.get("status", ""),
            vmid=whole(rec.get("vmid")),
            pmid=whole(rec.get("pmid")),
            backend=rec.get("backend", ""),
            op=rec.get("op", ""),
            owner=rec.get("owner", ""),
            to_pmid=whole(rec.get("to_pmid")),
        )

    @property
    def attached(self) -> bool:
        """
        Whether a user sees it attached (a detach under way has not answered yet).
        """
        return self.status in ("attached", "detaching")


class FleetState:
    """
    The fleet at change C{seq}.

    Listeners (L{listen}) are told of every change applied, as C{(seq, event, key)}:
    C{("pm", pmid)}, C{("vm", vmid)}, C{("vm_gone", (vmid, pmid))}, C{("catalog", None)},
    C{("settings", None)}, C{("volume", volumeid)}, C{("volume_gone", volumeid)}, or
    C{("resync", None)} when the whole state was replaced.
    """

    def __init__(self) -> None:
        self.ready = False
        self.seq = 0
        # Counts every change told to listeners (this daemon's reach included): a view
        # made at one version holds until the next.
        self.version = 0
        self.last_id = "0-0"
        self.fleet_id = ""
        self.settings: dict[str, str] = {}
        self.pm_ids: list[int] = []
        self.pms: dict[int, PMState] = {}
        self.vms: dict[int, VMRecord] = {}
        self.volumes: dict[int, VolumeRecord] = {}
        self.flavors: list[Flavor] = []
        self.images: list[Image] = []
        self._flavor: dict[int, Flavor] = {}
        self._image: dict[int, Image] = {}
        # This daemon's own view: which PMs it reaches now (not shared through Redis).
        self.up: dict[int, bool] = {}
        self.table = HostTable()
        self._listeners: list[Callable[[int, str, object], None]] = []

    # -- listeners ----------------------------------------------------------------------

    def listen(self, listener: Callable[[int, str, object], None]) -> Callable[[], None]:
        """
        Call C{listener(seq, event, key)} for every change from now on; returns a
        function that stops it.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _tell(self, event: str, key: object = None) -> None:
        self.version += 1
        for listener in list(self._listeners):
            listener(self.seq, event, key)

    # -- lookups --------------------------------------------------------------------------

    def flavor(self, tid: int) -> Flavor | None:
        return self._flavor.get(tid)

    def image(self, image_id: int) -> Image | None:
        return self._image.get(image_id)

    def is_up(self, pmid: int) -> bool:
        return self.up.get(pmid, False)

    def retired(self) -> list[int]:
        """
        The PMs out of the pm_file that still have VMs, by id.
        """
        current = set(self.pm_ids)
        return sorted(p for p, pm in self.pms.items() if p not in current and pm.vmids)

    # -- this daemon's reach -------------------------------------------------------------

    def set_up(self, pmid: int, up: bool) -> None:
        """
        Record whether this daemon reaches PM C{pmid} now.
        """
        if self.up.get(pmid) == up:
            return
        self.up[pmid] = up
        self.table.set(pmid, up=up)
        if pmid in self.pms:
            self._tell("pm", pmid)

    # -- the snapshot ---------------------------------------------------------------------

    def load(self, doc: Mapping) -> None:
        """
        Replace everything with the snapshot C{doc} (C{store/lua/snapshot.lua}'s shape).
        """
        self.seq = int(doc["seq"])
        self.last_id = doc["last"]
        self.fleet_id = doc.get("fleet") or ""
        self.settings = mapping(doc.get("settings"))
        pms = doc["pms"]
        self.pms = {}
        for pmid, flat, members in pms["recs"] or ():
            pm = PMState(int(pmid), vmids={int(v) for v in members or ()})
            pm.update(mapping(flat))
            self.pms[pm.pmid] = pm
        self.pm_ids = [int(p) for p in pms["active"] or ()]
        images = doc["images"]
        recs = {int(i): mapping(flat) for i, flat in images["recs"] or ()}
        self._set_images([(i, recs.get(i, {})) for i in images["active"] or ()])
        self._set_flavors(
            [
                (int(tid), *(whole(mapping(flat).get(r)) for r in RESOURCES))
                for tid, flat in doc["flavors"] or ()
            ]
        )
        self.vms = {
            int(v): VMRecord.from_hash(int(v), mapping(flat)) for v, flat in doc["vms"] or ()
        }
        self.volumes = {
            int(v): VolumeRecord.from_hash(int(v), mapping(flat))
            for v, flat in doc.get("volumes") or ()
        }
        self._rebuild_table()
        self.ready = True
        self._tell("resync")

    # -- applying changes ---------------------------------------------------------------

    def apply(self, seq: int, op: str, data: str | Mapping | list) -> None:
        """
        Apply the change numbered C{seq} (the next one: the caller checks for gaps).
        """
        if isinstance(data, str):
            data = json.loads(data)
        self.seq = seq
        getattr(self, f"_apply_{op}")(data)

    def _apply_pms(self, data) -> None:
        for pmid, flat in data.get("recs") or ():
            pm = self.pms.setdefault(int(pmid), PMState(int(pmid)))
            pm.update(mapping(flat))
        self.pm_ids = [int(p) for p in data.get("ids") or ()]
        self._rebuild_table()
        self._tell("resync")

    def _apply_images(self, data) -> None:
        recs = {int(i): mapping(flat) for i, flat in data.get("recs") or ()}
        self._set_images([(i, recs.get(i, {})) for i in map(int, data.get("ids") or ())])
        self._tell("catalog")

    def _apply_flavors(self, data) -> None:
        self._set_flavors([tuple(map(int, row)) for row in data or ()])
        self._tell("catalog")

    def _apply_pm(self, data) -> None:
        self._pm_hash(data["pm"])

    def _apply_vm(self, data) -> None:
        vmid, flat = data["vm"]
        vm = VMRecord.from_hash(int(vmid), mapping(flat))
        old = self.vms.get(vm.vmid)
        self.vms[vm.vmid] = vm
        touched = set()
        if old is not None and old.pmid != vm.pmid and old.pmid in self.pms:
            self.pms[old.pmid].vmids.discard(vm.vmid)
            touched.add(old.pmid)
        pm = self.pms.get(vm.pmid)
        if pm is not None:
            (pm.vmids.add if vm.visible else pm.vmids.discard)(vm.vmid)
            touched.add(vm.pmid)
        for pair in ([data["pm"]] if data.get("pm") else []) + list(data.get("pms") or ()):
            self._pm_hash(pair, tell=False)
            touched.add(int(pair[0]))
        for pmid in touched:
            self.table.set(pmid, vms=len(self.pms[pmid].vmids))
            self._tell("pm", pmid)
        if vm.visible or (old is not None and old.visible):
            self._tell("vm", vm.vmid)

    def _apply_gone(self, data) -> None:
        vmid = int(data["vmid"])
        old = self.vms.pop(vmid, None)
        pmid = int(data["pm"][0])
        pm = self.pms.get(pmid)
        if pm is not None:
            pm.vmids.discard(vmid)
        self._pm_hash(data["pm"], tell=False)
        if pm is not None:
            self.table.set(pmid, vms=len(pm.vmids))
            self._tell("pm", pmid)
        for pair in data.get("pms") or ():
            self._pm_hash(pair)
        if old is not None and old.visible:
            self._tell("vm_gone", (vmid, pmid))

    def _apply_volume(self, data) -> None:
        volumeid, flat = data["volume"]
        vol = VolumeRecord.from_hash(int(volumeid), mapping(flat))
        self.volumes[vol.volumeid] = vol
        for pair in ([data["pm"]] if data.get("pm") else []) + list(data.get("pms") or ()):
            self._pm_hash(pair)
        self._tell("volume", vol.volumeid)

    def _apply_volume_gone(self, data) -> None:
        volumeid = int(data["volumeid"])
        self.volumes.pop(volumeid, None)
        for pair in data.get("pms") or ():
            self._pm_hash(pair)
        self._tell("volume_gone", volumeid)

    def _apply_settings(self, data) -> None:
        self.settings = mapping(data)
        self._tell("settings")

    # -- helpers --------------------------------------------------------------------------

    def _pm_hash(self, pair, tell: bool = True) -> None:
        pmid, flat = int(pair[0]), mapping(pair[1])
        pm = self.pms.setdefault(pmid, PMState(pmid))
        pm.update(flat)
        self.table.set(pmid, capacity=pm.capacity, used=pm.used, drained=pm.drained)
        if tell:
            self._tell("pm", pmid)

    def _set_images(self, rows) -> None:
        self.images = [Image(i, rec.get("extra", ""), rec.get("line", "")) for i, rec in rows]
        self._image = {i.id: i for i in self.images}

    def _set_flavors(self, rows) -> None:
        self.flavors = [Flavor(*row) for row in rows]
        self._flavor = {f.tid: f for f in self.flavors}

    def _rebuild_table(self) -> None:
        table = HostTable(self.pm_ids)
        for pmid in self.pm_ids:
            pm = self.pms.get(pmid)
            if pm is None:
                continue
            table.set(
                pmid,
                capacity=pm.capacity,
                used=pm.used,
                vms=len(pm.vmids),
                up=self.up.get(pmid, False),
                drained=pm.drained,
            )
        self.table = table
