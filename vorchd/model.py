"""
Frozen value types shared by every part of vorchd.

Nothing here does I/O: these are the nouns the pure decisions (parsing, placement,
domain XML) work on, and what the shells (libvirt, Redis, HTTP) translate to and from.
"""

from __future__ import annotations

from attrs import fields, frozen


@frozen
class Resources:
    """
    An amount of each resource vorchd accounts: vCPUs, RAM in MiB, disk in GiB.
    """

    cpu: int = 0
    ram: int = 0
    disk: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.ram + other.ram, self.disk + other.disk)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.ram - other.ram, self.disk - other.disk)

    def covers(self, wanted: Resources) -> bool:
        """
        Whether every resource here is at least what C{wanted} asks for.
        """
        return self.cpu >= wanted.cpu and self.ram >= wanted.ram and self.disk >= wanted.disk

    def as_dict(self) -> dict[str, int]:
        """
        The seed API's shape: C{{"cpu": ..., "ram": ..., "disk": ...}}.
        """
        return {"cpu": self.cpu, "ram": self.ram, "disk": self.disk}


RESOURCES: tuple[str, ...] = tuple(f.name for f in fields(Resources))
"""The resources vorchd accounts, as they are spelt everywhere (settings, Redis, JSON)."""


@frozen
class Flavor:
    """
    An instance type: C{tid} and the resources a VM of this type gets.
    """

    tid: int
    cpu: int
    ram: int
    disk: int

    @property
    def resources(self) -> Resources:
        return Resources(self.cpu, self.ram, self.disk)

    def as_dict(self) -> dict[str, int]:
        """
        The seed API's shape for C{/vm/types}.
        """
        return {"tid": self.tid, "cpu": self.cpu, "ram": self.ram, "disk": self.disk}


@frozen
class PMEntry:
    """
    One physical machine as a pm_file names it.

    @ivar line: the line as written (stripped), which keeps the PM's id stable.
    @ivar uri: the libvirt URI vorchd connects to.
    @ivar lineno: where in the file it stood (1-based), for messages.
    """

    line: str
    uri: str
    lineno: int


@frozen
class ImageEntry:
    """
    One image as an image_file names it.

    @ivar line: the line as written (stripped), which keeps the image's id stable.
    @ivar name: the file's base name without its last extension.
    @ivar path: the absolute path of the image file on C{host}.
    @ivar host: C{None} for a file on this machine, else the host to fetch it from.
    @ivar user: the ssh user for C{host}, or C{None}.
    @ivar lineno: where in the file it stood (1-based), for messages.
    """

    line: str
    name: str
    path: str
    host: str | None
    user: str | None
    lineno: int

    @property
    def is_remote(self) -> bool:
        return self.host is not None


@frozen
class Image:
    """
    An image as the fleet knows it: its stable id, its name and its source line.
    """

    id: int
    name: str
    source: str


@frozen
class Host:
    """
    A PM as placement sees it at one moment.

    @ivar capacity: what discovery read (before overcommit).
    @ivar used: the sum of the flavors of the VMs placed (or being placed) there.
    @ivar up: whether this daemon can reach its hypervisor now.
    @ivar drained: whether an admin closed it to new VMs.
    """

    pmid: int
    capacity: Resources
    used: Resources
    vms: int = 0
    up: bool = True
    drained: bool = False
