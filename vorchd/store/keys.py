"""
Every Redis key vorchd uses, in one place. All of them start with a prefix
(C{[redis] key_prefix}, C{vorchd} by default), written C{P} here::

    P:fleet                  this fleet's short random id, part of every libvirt name it makes
    P:vmid                   the vmid counter (INCR in the claim script: never reused)
    P:vmid:block             hash: reserved (the end of the block of vmids being made
                             durable), ceiling (the end of the block claims may use: on
                             disk before any id of it is handed out), run (the Redis
                             run_id that made it so); see vorchd/store/vmids.py for why a
                             Redis that lost its last second still never gives an id twice
    P:vm:<vmid>              hash: vmid, name, instance_type, image_id, pmid, cpu, ram, disk,
                             domain, volume, owner (the creating daemon), op (the
                             create's own token),
                             state (creating | active | missing);
                             while a resize or move is under way (lua/change_begin.lua):
                             change_kind (resize | move), change_op, change_owner,
                             change_pmid, change_tid, change_cpu/ram/disk (what it will
                             have), hold_cpu/ram/disk (what is held on change_pmid)
    P:vms                    set of every vmid that holds a claim (in any state)
    P:macs                   hash: MAC address -> vmid, of every VM that has one: a claim
                             gives a new VM a MAC no other VM has (lua/claim.lua)
    P:macs:indexed           set once P:macs holds the MACs of VMs made before it existed
    P:pm:index  P:pm:next    hash pm_file line -> pmid, and the pmid counter
    P:pm:<pmid>              hash: line, extra (its URI), cap_cpu/ram/disk, used_cpu/ram/disk,
                             drained ("1" or "0")
    P:pm:<pmid>:vms          set of the PM's created VMs (active or missing, not creating)
    P:pm:active              list of the pmids in the current pm_file, in file order
    P:image:index P:image:next P:image:<id> P:image:active
                             likewise for images (extra: the image's name)
    P:flavor:<tid>           hash: cpu, ram, disk
    P:flavor:active          list of the tids in the current flavor_file
    P:settings               hash: the live settings (policy, cpu_ratio, ram_ratio, disk_ratio)
    P:settings:ini           hash: the ini's values as last read (see lua/settings.lua)
    P:volid                  the volume id counter (INCR in lua/volume_create.lua: never reused)
    P:volume:<id>            hash: volumeid, name, size (GiB), backend (local | rbd),
                             status (available | attaching | attached | detaching |
                             destroying), vmid (0 if none), pmid (the PM holding a local
                             volume's data and its claim, 0 before its first attach);
                             while a change is under way: op (its token), owner (the
                             daemon making it), and for an attach to_pmid
    P:volumes                set of every volume id
    P:daemon:<id>            a daemon's lease (expires unless renewed)
    P:seq                    the number of the last change (INCR in every changing script)
    P:changes                the change stream: one entry per change, {s: seq, o: op,
                             d: JSON}, trimmed to about STREAM_MAXLEN entries
                             (see vorchd.state for the ops and how they are applied)
"""

from __future__ import annotations

STREAM_MAXLEN = 100_000
"""About how many entries the change stream keeps; a reader further behind resyncs."""


class Keys:
    """
    The keys of one fleet, under C{prefix}.
    """

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.fleet = f"{prefix}:fleet"
        self.vmid = f"{prefix}:vmid"
        self.vms = f"{prefix}:vms"
        self.macs = f"{prefix}:macs"
        self.volid = f"{prefix}:volid"
        self.volumes = f"{prefix}:volumes"
        self.settings = f"{prefix}:settings"
        self.settings_ini = f"{prefix}:settings:ini"
        self.seq = f"{prefix}:seq"
        self.changes = f"{prefix}:changes"

    def __call__(self, *parts: object) -> str:
        """
        C{P:part:part...}, for the keys of one thing: C{keys("vm", 7)} is C{P:vm:7}.
        """
        return ":".join([self.prefix, *map(str, parts)])

    def vm(self, vmid: int) -> str:
        return self("vm", vmid)

    def volume(self, volumeid: int) -> str:
        return self("volume", volumeid)

    def pm(self, pmid: int) -> str:
        return self("pm", pmid)

    def pm_vms(self, pmid: int) -> str:
        return self("pm", pmid, "vms")

    def index(self, kind: str) -> str:
        return self(kind, "index")

    def counter(self, kind: str) -> str:
        return self(kind, "next")

    def active(self, kind: str) -> str:
        return self(kind, "active")

    def daemon(self, daemon_id: str) -> str:
        return self("daemon", daemon_id)
