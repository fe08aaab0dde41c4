"""
The simulated fleet: PMs with a capacity and what is already used on them, from sizes
given on the command line, from a pm_file of libvirt test-driver nodes, or from a
running daemon's C{GET /v1/fleet}; and the L{HostTable} placement ranks, made from them.

Pure but for L{fetch_document} (one HTTP GET) and L{fleet_from_pm_file} (reading the
pm_file and its node files).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence

from attrs import evolve, field, frozen

from vorchd import room
from vorchd.inventory import InputFileError, parse_pm_file
from vorchd.model import RESOURCES, Flavor, Resources
from vorchd.state.table import HostTable

TEST_POOL_GIB = 100
"""The size libvirt's test driver reports for every storage pool, whatever its XML says."""

# libvirt's test driver when a node file leaves a field out (testParseNodeInfo): 2 NUMA
# nodes x 2 sockets x 2 cores x 2 threads, 3 GiB; <active> caps the product.
_TEST_DEFAULTS = {"nodes": 2, "sockets": 2, "cores": 2, "threads": 2}
_TEST_MEMORY_KIB = 3 * 1024 * 1024

_SIZE_RE = re.compile(r"\s*(?:(\d+)\s*[x*]\s*)?\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)\s*[+,;]?")


class SimError(ValueError):
    """
    Something the simulator cannot work with: a fleet, trace or option it cannot read.
    Its message is for the operator as it is.
    """


@frozen
class SimPM:
    """
    One simulated PM.

    @ivar capacity: what discovery would read (before overcommit).
    @ivar used: the flavors of the VMs already placed there (a live fleet's).
    @ivar vms: how many VMs are already there.
    @ivar source: where it came from, for people (a node file, a size, a daemon).
    """

    pmid: int
    capacity: Resources
    used: Resources = Resources()
    vms: int = 0
    up: bool = True
    drained: bool = False
    source: str = ""


@frozen
class SimFleet:
    """
    The PMs to simulate, in pmid order, and what their source said beside them (a daemon's
    flavors, ratios and policy), if anything.
    """

    pms: tuple[SimPM, ...] = field(converter=tuple)
    flavors: tuple[Flavor, ...] = field(default=(), converter=tuple)
    ratios: Mapping[str, float] | None = None
    policy: str | None = None

    def plus(self, more: Iterable[SimPM]) -> SimFleet:
        """
        This fleet with C{more} PMs after it, numbered on from its highest pmid, as new
        pm_file lines would be.
        """
        last = max((pm.pmid for pm in self.pms), default=0)
        added = [evolve(pm, pmid=last + i) for i, pm in enumerate(more, 1)]
        return evolve(self, pms=(*self.pms, *added))

    def table(self) -> HostTable:
        """
        A fresh L{HostTable} of these PMs, as a daemon's read model would hold them.
        """
        table = HostTable(pm.pmid for pm in self.pms)
        for pm in self.pms:
            table.set(
                pm.pmid,
                capacity=pm.capacity,
                used=pm.used,
                vms=pm.vms,
                up=pm.up,
                drained=pm.drained,
            )
        return table


# -- sizes on the command line ------------------------------------------------------------


def parse_sizes(text: str) -> list[Resources]:
    """
    The PM sizes of a C{--pms} value: C{COUNTx(CPU,RAM_MIB,DISK_GIB)}, several joined by
    C{+}, C{,} or spaces (C{"200x(32,131072,1000) + 10x(64,262144,2000)"}); C{COUNTx} may
    be left out for one PM.

    @raise SimError: the text is not of that form.
    """
    sizes: list[Resources] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _SIZE_RE.match(text, pos)
        if match is None or match.end() == pos:
            raise SimError(
                f"--pms {text!r}: cannot read {text[pos:]!r}; expected COUNTx(CPU,RAM_MIB,"
                "DISK_GIB), for example 200x(32,131072,1000)"
            )
        count, cpu, ram, disk = match.groups()
        sizes.extend([Resources(int(cpu), int(ram), int(disk))] * int(count or 1))
        pos = match.end()
    if not sizes:
        raise SimError(f"--pms {text!r}: no PMs")
    return sizes


def fleet_from_sizes(sizes: Sequence[Resources], source: str = "--pms") -> SimFleet:
    """
    Empty PMs of C{sizes}, with pmids 1..n.
    """
    return SimFleet(SimPM(pmid, capacity, source=source) for pmid, capacity in enumerate(sizes, 1))


# -- a pm_file of test-driver nodes -----------------------------------------------------


def _int_at(node: ET.Element, path: str, default: int, where: str) -> int:
    text = node.findtext(path)
    if text is None or not text.strip():
        return default
    try:
        return int(text.strip())
    except ValueError:
        raise SimError(f"{where}: <{path}> is {text.strip()!r}, not an integer") from None


def node_capacity(path: str) -> Resources:
    """
    The capacity libvirt's test driver gives the node described by the XML file at
    C{path}, as vorchd's discovery reads it: CPUs (the topology's product, capped by
    C{<active>}), memory in MiB (the file gives KiB), and L{TEST_POOL_GIB} of disk.

    @raise SimError: the file cannot be read or is not a test-driver node.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise SimError(f"node file {path}: {e}") from None
    if root.tag != "node":
        raise SimError(f"node file {path}: the root is <{root.tag}>, not <node>")
    cpus = 1
    for key, default in _TEST_DEFAULTS.items():
        cpus *= _int_at(root, f"cpu/{key}", default, f"node file {path}")
    active = _int_at(root, "cpu/active", cpus, f"node file {path}")
    memory_kib = _int_at(root, "memory", _TEST_MEMORY_KIB, f"node file {path}")
    return Resources(min(cpus, active), memory_kib // 1024, TEST_POOL_GIB)


def _node_path(uri: str) -> str | None:
    """
    The node file a test-driver URI names, C{""} for the driver's built-in node, or
    C{None} if C{uri} is not the test driver's.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "test":
        return None
    return "" if parts.path == "/default" else urllib.parse.unquote(parts.path)


def fleet_from_pm_file(path: str | os.PathLike[str]) -> SimFleet:
    """
    The PMs of a pm_file whose lines are libvirt test-driver nodes
    (C{test:///path/node.xml}, or C{test:///default}), empty, with the pmids a daemon
    gives them (1..n in file order).

    @raise InputFileError: the pm_file is malformed, has a line that is not a test-driver
        node, or names a node file that cannot be read.
    """
    entries = parse_pm_file(path, is_local=lambda host: False)
    pms = []
    for pmid, entry in enumerate(entries, 1):
        node = _node_path(entry.uri)
        if node is None:
            raise InputFileError(
                "pm_file",
                os.fspath(path),
                entry.lineno,
                f"{entry.line!r} is not a libvirt test-driver node (test:///path/node.xml):"
                " the simulator knows a PM's size only from its node file; give sizes"
                " with --pms instead",
            )
        try:
            capacity = node_capacity(node) if node else Resources(16, 3072, TEST_POOL_GIB)
        except SimError as e:
            raise InputFileError("pm_file", os.fspath(path), entry.lineno, str(e)) from None
        pms.append(SimPM(pmid, capacity, source=entry.uri))
    return SimFleet(pms)


# -- a running daemon's /v1/fleet -------------------------------------------------------


def fleet_url(url: str) -> str:
    """
    The C{/v1/fleet} URL of a daemon named by its base URL (C{http://host:port}), or
    C{url} itself if it names that path already.
    """
    if urllib.parse.urlsplit(url).path.rstrip("/").endswith("/v1/fleet"):
        return url
    return url.rstrip("/") + "/v1/fleet"


def fetch_document(url: str, timeout: float = 30.0) -> dict:
    """
    The C{/v1/fleet} document of the daemon at C{url} (see L{fleet_url}).

    @raise SimError: it cannot be fetched, or is not JSON.
    """
    target = fleet_url(url)
    try:
        with urllib.request.urlopen(target, timeout=timeout) as answer:
            body = answer.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise SimError(f"GET {target}: {getattr(e, 'reason', None) or e}") from None
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise SimError(f"GET {target}: not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise SimError(f"GET {target}: answered {body[:40]!r}, not a fleet document")
    return doc


def _resources(d: Mapping) -> Resources:
    return Resources(*(int(d[r]) for r in RESOURCES))


def fleet_from_document(doc: Mapping) -> SimFleet:
    """
    The fleet as a daemon's C{/v1/fleet} document shows it, VMs included: every PM but the
    retired, down and drained ones as they are, each with the room its VMs take (the
    document's C{free} under its C{ratios}, taken back from the limit), and the
    document's flavors, ratios and policy.

    @raise SimError: C{doc} is not a fleet document.
    """
    try:
        ratios = {r: float(doc["ratios"][r]) for r in RESOURCES}
        pms = []
        for pm in doc["pms"]:
            if pm["state"] == "retired":
                continue
            capacity = _resources(pm["capacity"])
            used = room.effective(capacity, ratios) - _resources(pm["free"])
            pms.append(
                SimPM(
                    int(pm["pmid"]),
                    capacity,
                    used,
                    len(pm["vmids"]),
                    up=pm["state"] != "down",
                    drained=pm["state"] == "drained",
                    source="/v1/fleet",
                )
            )
        flavors = [
            Flavor(int(t["tid"]), int(t["cpu"]), int(t["ram"]), int(t["disk"]))
            for t in doc["types"]
        ]
        policy = str(doc["policy"])
    except (KeyError, TypeError, ValueError) as e:
        raise SimError(f"not a /v1/fleet document: {type(e).__name__} {e}") from None
    return SimFleet(sorted(pms, key=lambda pm: pm.pmid), flavors, ratios, policy)
