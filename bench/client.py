"""
Small clients bench/run.py runs in a process of their own, for what wrk cannot do. Each
prints one JSON object on stdout.

    python bench/client.py crossdaemon --a URL --b URL [--n 200] [--deadline 5]
        Create a VM through daemon A, then ask daemon B for it (/vm/query) in a tight
        loop until it answers; the delay is from A's answer to B's first real answer.
        One request in flight at a time, over keep-alive connections.

    python bench/client.py sequential --url URL --path PATH [--n 20]
        GET PATH (with {i} replaced by 1..n) one at a time; the seconds each took, and
        the answers.

    python bench/client.py direct --domain NAME [--n 3] [--uri qemu:///system]
        The same creation as vorchd's, straight through libvirt-python: read the
        domain NAME that vorchd made (its inactive XML, and its disk's volume), then n
        times make a qcow2 overlay over the same base copy, define a copy of the domain
        (renamed, without vorchd's metadata) and start it; the seconds each took. Each
        copy is destroyed, undefined and its disk deleted afterwards, untimed.

    python bench/client.py testdriver --fleet-dir DIR --pms N --vms V
        What libvirt's test driver alone holds in a process for a fleet like the RSS
        run's: N test:///DIR/pmI.xml connections, each PM's pool looked up, then V
        VMs placed 99 a PM in pmid order (as first-fit does), each an overlay volume
        over the PM's base volume and a defined, started domain, with the XML vorchd
        sends (vorchd.domain). RSS (MB) before the connections, after them, and after
        the VMs.

    python bench/client.py drop-pool --pool NAME [--uri qemu:///system]
        Delete every volume of storage pool NAME, then stop and undefine the pool.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
import uuid
import xml.etree.ElementTree as ET


class Http:
    def __init__(self, url: str, timeout: float = 60):
        hostport = url.split("://", 1)[1].rstrip("/")
        host, _, port = hostport.partition(":")
        self.conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path)
        return self.conn.getresponse().read()


def crossdaemon(args) -> dict:
    a, b = Http(args.a), Http(args.b)
    delays, creates, polls, failed, lost = [], [], [], 0, 0
    for i in range(args.n):
        t0 = time.perf_counter()
        vmid = json.loads(a.get(f"/vm/create?name=x{i}&instance_type=1&image_id=1"))["vmid"]
        t1 = time.perf_counter()
        creates.append(t1 - t0)
        if not vmid:
            failed += 1
            continue
        n = 0
        while True:
            n += 1
            answer = json.loads(b.get(f"/vm/query?vmid={vmid}"))
            t2 = time.perf_counter()
            if isinstance(answer, dict) and answer.get("vmid") == vmid:
                delays.append(t2 - t1)
                polls.append(n)
                break
            if t2 - t1 > args.deadline:
                lost += 1
                break
    return {"delays": delays, "creates": creates, "polls": polls, "failed": failed, "lost": lost}


def sequential(args) -> dict:
    client = Http(args.url)
    times, answers = [], []
    for i in range(1, args.n + 1):
        t0 = time.perf_counter()
        body = client.get(args.path.replace("{i}", str(i)))
        times.append(time.perf_counter() - t0)
        answers.append(json.loads(body))
    return {"times": times, "answers": answers}


def _copy_domain(xml: str, name: str, disk: str, console: str | None) -> str:
    root = ET.fromstring(xml)
    for tag in ("uuid", "metadata"):
        for el in root.findall(tag):
            root.remove(el)
    root.find("name").text = name
    for source in root.findall("./devices/disk/source"):
        if "file" in source.attrib:
            source.set("file", disk)
    for log in root.iter("log"):
        if console is not None and "file" in log.attrib:
            log.set("file", console)
    # MAC addresses are made anew by libvirt when left out.
    for iface in root.findall("./devices/interface"):
        for mac in iface.findall("mac"):
            iface.remove(mac)
    return ET.tostring(root, encoding="unicode")


def direct(args) -> dict:
    import libvirt

    from vorchd.domain import overlay_volume_xml

    conn = libvirt.open(args.uri)
    template = conn.lookupByName(args.domain)
    xml = template.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    root = ET.fromstring(xml)
    disk_path = root.find("./devices/disk/source").get("file")
    vol = conn.storageVolLookupByPath(disk_path)
    pool = vol.storagePoolLookupByVolume()
    vol_root = ET.fromstring(vol.XMLDesc(0))
    base_path = vol_root.find("./backingStore/path").text
    base_format = vol_root.find("./backingStore/format").get("type")
    size_gib = int(vol_root.find("capacity").text) // (1024**3)
    console = None
    for log in root.iter("log"):
        console = log.get("file")
    times = []
    for i in range(args.n):
        name = f"vbench-direct-{uuid.uuid4().hex[:8]}-{i}"
        t0 = time.perf_counter()
        overlay = pool.createXML(
            overlay_volume_xml(f"{name}.qcow2", size_gib, base_path, base_format), 0
        )
        dom = conn.defineXML(
            _copy_domain(xml, name, overlay.path(), console and console.replace(args.domain, name))
        )
        dom.create()
        times.append(time.perf_counter() - t0)
        try:
            dom.destroy()
        finally:
            dom.undefine()
            overlay.delete(0)
            if console:
                try:
                    os.unlink(console.replace(args.domain, name))
                except OSError:
                    pass
    conn.close()
    return {"times": times, "domain_type": root.get("type")}


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def testdriver(args) -> dict:
    import libvirt

    from vorchd import domain
    from vorchd.model import Flavor

    libvirt.registerErrorHandler(lambda *a: None, None)
    flavor = Flavor(tid=1, cpu=1, ram=512, disk=1)
    before = _rss_mb()
    t0 = time.perf_counter()
    pools = []
    conns = []
    for i in range(1, args.pms + 1):
        conn = libvirt.open(f"test://{args.fleet_dir}/pm{i}.xml")
        conns.append(conn)
        pools.append(conn.storagePoolLookupByName("vorchd"))
    connected = _rss_mb()
    t1 = time.perf_counter()
    fleet = "testdriver"
    for vmid in range(1, args.vms + 1):
        row = (vmid - 1) // args.per_pm
        conn, pool = conns[row], pools[row]
        if (vmid - 1) % args.per_pm == 0:
            base = pool.createXML(domain.base_volume_xml(f"{fleet}-base.img", 1 << 20), 0)
        overlay = pool.createXML(
            domain.overlay_volume_xml(domain.volume_name(fleet, vmid), 1, base.path(), "raw"), 0
        )
        spec = domain.VMSpec(
            fleet=fleet,
            vmid=vmid,
            name=f"f{vmid}",
            flavor=flavor,
            image_id=1,
            pmid=row + 1,
            domain_type="test",
            disk_path=overlay.path(),
        )
        conn.defineXML(domain.domain_xml(spec)).create()
    return {
        "rss_before": before,
        "rss_connected": connected,
        "rss_after": _rss_mb(),
        "connect_seconds": t1 - t0,
        "vm_seconds": time.perf_counter() - t1,
    }


def drop_pool(args) -> dict:
    import libvirt

    conn = libvirt.open(args.uri)
    try:
        pool = conn.storagePoolLookupByName(args.pool)
    except libvirt.libvirtError:
        return {"dropped": False}
    deleted = []
    if pool.isActive():
        pool.refresh(0)
        for vol in pool.listAllVolumes(0):
            deleted.append(vol.name())
            vol.delete(0)
        pool.destroy()
    pool.undefine()
    conn.close()
    return {"dropped": True, "volumes": deleted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("crossdaemon")
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--deadline", type=float, default=5.0)
    p = sub.add_parser("sequential")
    p.add_argument("--url", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--n", type=int, default=20)
    p = sub.add_parser("direct")
    p.add_argument("--domain", required=True)
    p.add_argument("--n", type=int, default=3)
    p.add_argument("--uri", default="qemu:///system")
    p = sub.add_parser("testdriver")
    p.add_argument("--fleet-dir", required=True)
    p.add_argument("--pms", type=int, required=True)
    p.add_argument("--vms", type=int, required=True)
    p.add_argument("--per-pm", type=int, default=99)
    p = sub.add_parser("drop-pool")
    p.add_argument("--pool", required=True)
    p.add_argument("--uri", default="qemu:///system")
    args = parser.parse_args()
    run = {
        "crossdaemon": crossdaemon,
        "sequential": sequential,
        "direct": direct,
        "testdriver": testdriver,
        "drop-pool": drop_pool,
    }
    json.dump(run[args.command](args), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
