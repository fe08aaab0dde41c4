"""
One set of tests for every provider of L{IHypervisor}: the in-memory fake, libvirt's test
driver, and real libvirtd PMs (in namespaces of their own, L{tests.libvirtd_fleet}).

The fake is trusted to stand in for a PM only because it passes the tests the real ones
pass. Each failure a real PM can have is caused for real where the PM can have it (an
address nobody listens on, a start that cannot open the guest's console file, a killed
libvirtd) and switched on in the fake.

The tests of a VM's life once made (L{tests.system.test_hypervisor_life}) and of moving it
between PMs (L{tests.system.test_hypervisor_moves}) are kept in modules of their own, and
mixed into the class made here.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.harness import TEST_POOL_GIB, node_xml, require, tmpdir
from tests.libvirtd_fleet import LibvirtdFleet, LibvirtdPM, libvirtd_fleet_unavailable
from tests.system.test_hypervisor_life import FLAVOR, VMLifeTests
from tests.system.test_hypervisor_moves import MoveTests
from tests.system.test_hypervisor_nics import NicTests
from tests.system.test_hypervisor_volumes import BlockVolumeTests
from vorchd.bootimage import write_image
from vorchd.domain import VM, base_volume_name
from vorchd.hypervisor.events import start_event_loop
from vorchd.hypervisor.fake import FakeHypervisor
from vorchd.hypervisor.host import LibvirtHost
from vorchd.hypervisor.interface import HostUnreachable, HypervisorError, IHypervisor
from vorchd.images.copies import source_digest
from vorchd.model import Flavor, Resources
from vorchd.network import NETWORK, Attachment
from vorchd.volume_xml import CephPool

GIB = 1024**3

#: The libvirt network the makers' networked PMs have.
NET = "vorchd-test-net"


class Maker:
    """
    How to get one kind of hypervisor for a test (made for each test, given the
    testcase): C{make()} a fresh one for the test's PM, not connected; C{make_second()}
    one for another PM of the same kind (its pmid 2), and C{make_shared()} one for each of
    two PMs whose pools are one directory; C{unreachable()} one for a PM that cannot be
    reached; C{break_start(hv)} makes the PM's next domain fail to start once defined;
    C{kill(hv)} makes the PM go away under an open connection, and C{revive(hv)} brings it
    back.

    What a test reads back from a PM beyond the interface: C{size(hv, domain)}, a domain's
    vCPUs and MiB of memory; C{capacity_of(hv, volume)}, a volume's bytes;
    C{digest_of(hv, volume)}, the sha256 of its content (None where it holds none); and
    C{copy_token(hv, path)}, which changes when the base copy at C{path} is written again.

    @ivar kinds: the domain types its VMs may run under.
    @ivar capacity: what L{IHypervisor.discover} must answer, or None where the machine
        decides.
    @ivar cannot_fail_start: why its domains cannot fail to start once defined, if so.
    @ivar cannot_go_away: why its PM cannot go away under an open connection, if so.
    @ivar cannot_migrate: why it cannot migrate a VM live, if so.
    @ivar cannot_share_pool: why two of its PMs cannot share a pool, if so.
    @ivar cannot_grow_disk: why its VM disks cannot grow, if so.
    @ivar cannot_fail_resize: why its resizes cannot fail once begun, if so.
    @ivar ignores_acpi: whether its guests ignore a shutdown request (after
        C{ignore_acpi(hv)}).
    @ivar cannot_rbd: why it cannot hold RBD volumes, if so; else C{ceph()} gives the
        L{CephPool} of a cluster its PMs reach (the fake's, or a real one-node cluster
        started once per test run).
    """

    kinds: set[str]
    capacity: Resources | None = None
    cannot_fail_start: str | None = None
    cannot_go_away: str | None = None
    cannot_migrate: str | None = None
    cannot_share_pool: str | None = None
    cannot_grow_disk: str | None = None
    cannot_fail_resize: str | None = None
    ignores_acpi = False
    #: Whether a running VM with a NIC has an address at once (a made-up lease).
    leases_at_once = False
    cannot_rbd: str | None = None

    def __init__(self, testcase: SynchronousTestCase):
        pass

    def networked(self, testcase, network: str | None, second: bool) -> IHypervisor:
        """
        A hypervisor (not connected) of the test's PM, or the second PM, whose VMs attach
        to the libvirt network C{network}, by default C{NETWORK}, which the PM has, active.
        """
        raise NotImplementedError

    def set_network(self, hypervisor: IHypervisor, active: bool) -> None:
        """
        Start or stop the PM's network C{hypervisor.network}.
        """
        raise NotImplementedError

    def domain_xml(self, hypervisor: IHypervisor, domain_name: str) -> str:
        """
        The domain's definition as the PM has it.
        """
        raise NotImplementedError

    @classmethod
    def tear_down_class(cls) -> None:
        """
        Called once the tests of a class are done: give up what they shared.
        """

    def ignore_acpi(self, hypervisor: IHypervisor) -> None:
        """
        Make the PM's guests ignore a shutdown request (they may already).
        """

    def break_resize(self, hypervisor: IHypervisor) -> Flavor | None:
        """
        Make the PM's next resize fail after the shutdown: by a switch (None), or by the
        flavor it is then given (one the PM will not run).
        """
        return None


def scsi_disks_of(domain_xml: str) -> dict[str, str]:
    """
    The SCSI disks of C{domain_xml}: target -> source file.
    """
    disks = ET.fromstring(domain_xml).findall("devices/disk")
    return {
        d.find("target").get("dev"): d.find("source").get("file") or d.find("source").get("name")
        for d in disks
        if d.find("target").get("bus") == "scsi"
    }


class LibvirtReading:
    """
    What a test reads back from a L{LibvirtHost}, through its own connection.
    """

    def size(self, hypervisor: LibvirtHost, domain_name: str) -> tuple[int, int]:
        info = hypervisor.conn.lookupByName(domain_name).info()
        return info[3], info[1] // 1024

    def capacity_of(self, hypervisor: LibvirtHost, volume_name: str) -> int:
        return hypervisor.pool().storageVolLookupByName(volume_name).info()[1]

    def domain_xml(self, hypervisor: LibvirtHost, domain_name: str) -> str:
        return hypervisor.conn.lookupByName(domain_name).XMLDesc(0)

    def set_network(self, hypervisor: LibvirtHost, active: bool) -> None:
        net = hypervisor.conn.networkLookupByName(hypervisor.network.source)
        if active:
            net.create()
        else:
            net.destroy()

    def ceph(self):
        if self.cannot_rbd:
            raise SkipTest(self.cannot_rbd)
        from tests.ceph_cluster import ceph_pool, shared_ceph

        return ceph_pool(shared_ceph())

    def scsi_disks(self, hypervisor: LibvirtHost, domain_name: str) -> dict[str, str]:
        import libvirt

        dom = hypervisor.conn.lookupByName(domain_name)
        # The test driver changes only a domain's definition (it cannot attach).
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if hypervisor.is_test_driver else 0
        return scsi_disks_of(dom.XMLDesc(flags))


class FakeMaker(Maker):
    """
    L{FakeHypervisor}s, their failures switched on.
    """

    kinds = {"fake"}
    capacity = Resources(cpu=4, ram=4096, disk=100)
    ignores_acpi = True
    leases_at_once = True

    def networked(self, testcase, network: str | None, second: bool) -> IHypervisor:
        nic = Attachment(NETWORK, network or NET)
        uri = "fake:///pm2" if second else "fake:///pm1"
        return FakeHypervisor(uri, self.capacity, network=nic, networks={NET: True})

    def set_network(self, hypervisor: FakeHypervisor, active: bool) -> None:
        hypervisor.networks[hypervisor.network.source] = active

    def domain_xml(self, hypervisor: FakeHypervisor, domain_name: str) -> str:
        return hypervisor.domains[domain_name].xml

    def make(self) -> IHypervisor:
        return FakeHypervisor("fake:///pm1", self.capacity)

    def make_second(self) -> IHypervisor:
        return FakeHypervisor("fake:///pm2", self.capacity)

    def make_shared(self) -> tuple[IHypervisor, IHypervisor]:
        pools = {}
        one = FakeHypervisor("fake:///pm1", self.capacity, pools=pools)
        return one, FakeHypervisor("fake:///pm2", self.capacity, pools=pools)

    def ignore_acpi(self, hypervisor: FakeHypervisor) -> None:
        hypervisor.ignores_acpi = True

    def break_resize(self, hypervisor: FakeHypervisor) -> None:
        hypervisor.resize_failure = "could not define it"

    def size(self, hypervisor: FakeHypervisor, domain_name: str) -> tuple[int, int]:
        # What its definition says, as libvirt's would.
        root = ET.fromstring(hypervisor.domains[domain_name].xml)
        memory = root.find("memory")
        kib = int(memory.text) * {"MiB": 1024, "KiB": 1}[memory.get("unit", "KiB")]
        return int(root.findtext("vcpu")), kib // 1024

    def ceph(self):
        return CephPool((("fake-mon", 6789),), f"pool-{uuid.uuid4().hex[:6]}", "admin", "a2V5")

    def scsi_disks(self, hypervisor: FakeHypervisor, domain_name: str) -> dict[str, str]:
        with hypervisor.lock:
            return scsi_disks_of(hypervisor.domains[domain_name].xml)

    def capacity_of(self, hypervisor: FakeHypervisor, volume_name: str) -> int:
        return hypervisor.pools[hypervisor.pool_name][volume_name].capacity

    def digest_of(self, hypervisor: FakeHypervisor, volume_name: str) -> str:
        data = hypervisor.pools[hypervisor.pool_name][volume_name].data
        return hashlib.sha256(data).hexdigest()

    def copy_token(self, hypervisor: FakeHypervisor, path: str) -> object:
        [copy] = [v for v in hypervisor.pools[hypervisor.pool_name].values() if v.path == path]
        return id(copy)

    def unreachable(self) -> IHypervisor:
        fake = FakeHypervisor("fake:///gone")
        fake.reachable = False
        return fake

    def break_start(self, hypervisor: FakeHypervisor) -> None:
        hypervisor.start_failure = "could not open the console file"

    def kill(self, hypervisor: FakeHypervisor) -> None:
        hypervisor.die()

    def revive(self, hypervisor: FakeHypervisor) -> None:
        hypervisor.reachable = True


class LibvirtTestDriverMaker(LibvirtReading, Maker):
    """
    libvirt's test driver, from a node XML without vorchd's pool: it runs no guest, and
    its PM lives in its connection (it can neither fail a start nor go away, nor share
    anything with another). Its volumes hold nothing and cannot be resized.
    """

    kinds = {"test"}
    capacity = Resources(cpu=4, ram=4096, disk=TEST_POOL_GIB)
    cannot_fail_start = "libvirt's test driver starts every domain it defines"
    cannot_go_away = "a test-driver PM lives in its connection"
    cannot_migrate = "libvirt's test driver has no migration"
    cannot_share_pool = "a test-driver PM's pool lives in its connection"
    cannot_rbd = "libvirt's test driver has no RBD storage"
    cannot_grow_disk = "libvirt's test driver cannot resize a volume"
    cannot_fail_resize = "libvirt's test driver defines and starts whatever it is given"
    leases_at_once = True

    def __init__(self, testcase):
        super().__init__(testcase)
        self.nodes = tmpdir(testcase)
        for name in ("pm1.xml", "pm2.xml"):
            (self.nodes / name).write_text(node_xml(4, 4096, with_pool=False, networks=[NET]))

    def networked(self, testcase, network: str | None, second: bool) -> IHypervisor:
        node = self.nodes / ("pm2.xml" if second else "pm1.xml")
        return LibvirtHost(f"test://{node}", network=Attachment(NETWORK, network or NET))

    def make(self) -> IHypervisor:
        return LibvirtHost(f"test://{self.nodes / 'pm1.xml'}")

    def make_second(self) -> IHypervisor:
        return LibvirtHost(f"test://{self.nodes / 'pm2.xml'}")

    def unreachable(self) -> IHypervisor:
        return LibvirtHost(f"test://{self.nodes}/no-such-node.xml")

    def digest_of(self, hypervisor: LibvirtHost, volume_name: str) -> None:
        return None


class LibvirtdMaker(LibvirtReading, Maker):
    """
    Two real libvirtd PMs, reached over TCP; guests run emulated, their consoles logged on
    the PM. The test's PM is the first; the second is there to move VMs to, and both can
    use a pool in one shared directory of the fleet's.

    The PMs are shared by the tests of a class (a fleet takes seconds to start and stop):
    each test keeps to VMs, base copies and marks of its own fleet id, and a libvirtd a
    test killed is started again for the next.
    """

    kinds = {"qemu"}
    # The test guests, bare boot sectors, ignore ACPI.
    ignores_acpi = True
    pool_path = "/var/lib/libvirt/vorchd-pool"
    _fleet: LibvirtdFleet | None = None

    def __init__(self, testcase):
        super().__init__(testcase)
        require(libvirtd_fleet_unavailable())
        # Close callbacks come through libvirt's event loop, as in the daemon.
        start_event_loop()
        if LibvirtdMaker._fleet is None:
            LibvirtdMaker._fleet = LibvirtdFleet(2).start()
        self.fleet = LibvirtdMaker._fleet
        self.pm, self.pm2 = self.fleet.pms
        for pm in self.fleet.pms:
            if pm.libvirtd_pid() is None:
                pm.restart()

    @classmethod
    def tear_down_class(cls) -> None:
        fleet, LibvirtdMaker._fleet = LibvirtdMaker._fleet, None
        if fleet is not None:
            fleet.stop()

    def host(self, pm: LibvirtdPM, **kwargs) -> LibvirtHost:
        kwargs.setdefault("pool_path", self.pool_path)
        return LibvirtHost(
            pm.uri, domain_type="qemu", console_log_dir="/var/log/libvirt/qemu", **kwargs
        )

    def make(self) -> IHypervisor:
        return self.host(self.pm)

    def make_second(self) -> IHypervisor:
        return self.host(self.pm2)

    def networked(self, testcase, network: str | None, second: bool) -> IHypervisor:
        pm = self.pm2 if second else self.pm
        if network is None:
            network = NET
            # Isolated, without an address or DHCP: the bridge (in this machine's network
            # namespace, like the PM) carries nothing of the host's.
            bridge = f"vz{uuid.uuid4().hex[:8]}{pm.index}"
            conn = libvirt.open(pm.uri)
            testcase.addCleanup(conn.close)
            net = conn.networkDefineXML(
                f"<network><name>{NET}</name><bridge name='{bridge}' stp='off'/></network>"
            )
            testcase.addCleanup(net.undefine)
            net.create()
            testcase.addCleanup(lambda: net.isActive() and net.destroy())
        return self.host(pm, network=Attachment(NETWORK, network))

    def make_shared(self) -> tuple[IHypervisor, IHypervisor]:
        # Outside the PMs' private mounts, so both see it; libvirt-qemu may read it.
        shared = str(self.fleet.dir / "shared-pool")
        return tuple(
            self.host(pm, pool_name="vorchd-shared", pool_path=shared)
            for pm in (self.pm, self.pm2)
        )

    def unreachable(self) -> IHypervisor:
        return LibvirtHost(f"qemu+tcp://{self.pm.address}:1/system")

    def pm_of(self, hypervisor: LibvirtHost) -> LibvirtdPM:
        [pm] = [pm for pm in self.fleet.pms if pm.uri == hypervisor.uri]
        return pm

    def break_start(self, hypervisor: LibvirtHost) -> None:
        # Defined without complaint; QEMU then cannot open the console file.
        hypervisor.console_log_dir = "/nonexistent/console"

    def break_resize(self, hypervisor: LibvirtHost) -> Flavor:
        # More vCPUs than the machine type "pc" takes: refused once shut down.
        return Flavor(9, 1000, 128, 1)

    def kill(self, hypervisor: LibvirtHost) -> None:
        self.pm_of(hypervisor).kill()

    def revive(self, hypervisor: LibvirtHost) -> None:
        self.pm_of(hypervisor).restart()

    def digest_of(self, hypervisor: LibvirtHost, volume_name: str) -> str:
        pool = Path(hypervisor.pool_path).relative_to("/var/lib/libvirt")
        data = self.pm_of(hypervisor).path("lib", str(pool), volume_name).read_bytes()
        return hashlib.sha256(data).hexdigest()

    def copy_token(self, hypervisor: LibvirtHost, path: str) -> object:
        # A shared pool's path is the same on the host.
        st = os.stat(path)
        return st.st_ino, st.st_mtime_ns


def make_hypervisor_tests(maker: type[Maker]) -> type[SynchronousTestCase]:
    """
    The tests every L{IHypervisor} must pass, against the hypervisors C{maker} makes.
    """

    class HypervisorTests(VMLifeTests, MoveTests, NicTests, BlockVolumeTests, SynchronousTestCase):
        @classmethod
        def tearDownClass(cls):
            maker.tear_down_class()
            super().tearDownClass()

        def setUp(self):
            self.maker = maker(self)
            self.fleet = f"t{uuid.uuid4().hex[:8]}"
            self.image = tmpdir(self) / "hello.img"
            write_image(self.image)
            self.hv = self.connected()

        def connected(self, hv: IHypervisor | None = None) -> IHypervisor:
            """
            C{hv} (default: a fresh one for the test's PM), connected until the test ends.
            """
            hv = hv or self.maker.make()
            hv.connect()
            self.addCleanup(hv.close)
            return hv

        def spec(
            self, vmid: int, fleet: str | None = None, flavor: Flavor = FLAVOR, pmid: int = 1
        ) -> VM:
            return VM(fleet or self.fleet, vmid, f"vm {vmid}", flavor, 1, pmid)

        def create(
            self,
            vmid: int,
            fleet: str | None = None,
            flavor: Flavor = FLAVOR,
            hv: IHypervisor | None = None,
        ) -> VM:
            """
            Make VM C{vmid} of C{fleet} (default: the test's) on its image's base copy on
            C{hv} (default: the test's PM); it is destroyed when the test ends.
            """
            hv = hv or self.hv
            spec = self.spec(vmid, fleet, flavor)
            path, fmt = hv.ensure_base(spec.fleet, 1, str(self.image))
            self.addCleanup(self.destroy_quietly, spec, hv)
            self.assertIn(hv.create_vm(spec, path, fmt), self.maker.kinds)
            return spec

        def destroy_quietly(self, spec: VM, hv: IHypervisor | None = None) -> None:
            hv = hv or self.hv
            try:
                hv.destroy_vm(spec.domain_name, spec.volume_name)
                hv.prune_bases(spec.fleet)
            except HypervisorError:
                pass

        def assert_unreachable(self, hv: IHypervisor) -> None:
            spec = self.spec(1)
            name, volume = spec.domain_name, spec.volume_name
            disk = str(self.image) + ".disk"
            calls = {
                "discover": hv.discover,
                "ensure_base": lambda: hv.ensure_base(self.fleet, 1, str(self.image)),
                "prune_bases": lambda: hv.prune_bases(self.fleet),
                "create_vm": lambda: hv.create_vm(spec, "/nowhere.img", "raw"),
                "destroy_vm": lambda: hv.destroy_vm(name, volume),
                "domain_names": hv.domain_names,
                "fleet_domains": lambda: hv.fleet_domains(self.fleet),
                "volume_names": hv.volume_names,
                "vm_state": lambda: hv.vm_state(name),
                "stop_vm": lambda: hv.stop_vm(name, 1),
                "start_vm": lambda: hv.start_vm(name),
                "reboot_vm": lambda: hv.reboot_vm(name),
                "suspend_vm": lambda: hv.suspend_vm(name),
                "resume_vm": lambda: hv.resume_vm(name),
                "resize_vm": lambda: hv.resize_vm(spec, 1),
                "migrate_vm": lambda: hv.migrate_vm(spec, "test:///default", False),
                "prepare_incoming": lambda: hv.prepare_incoming(spec, "/nowhere.img", "raw"),
                "export_disk": lambda: hv.export_disk(volume, disk),
                "import_disk": lambda: hv.import_disk(volume, str(self.image)),
                "define_vm": lambda: hv.define_vm(spec),
                "pool_marks": lambda: hv.pool_marks(self.fleet, 1),
                "check_network": hv.check_network,
                "vm_addresses": lambda: hv.vm_addresses(name),
                "make_volume": lambda: hv.make_volume("v.raw", 1),
                "delete_volume": lambda: hv.delete_volume("v.raw"),
                "ceph_room": lambda: hv.ceph_room(CephPool((("127.0.0.1", 1),), "p", "u", "a2V5")),
                "attach_volume": lambda: hv.attach_volume(name, "v.raw", "s"),
                "detach_volume": lambda: hv.detach_volume(name, "v.raw"),
            }
            raised = {}
            for name, call in calls.items():
                try:
                    raised[name] = call()
                except Exception as e:
                    raised[name] = type(e)
            self.assertEqual(raised, dict.fromkeys(calls, HostUnreachable))
            self.assertFalse(hv.alive())

        # -- the connection ---------------------------------------------------------------

        def test_provides_interface(self):
            """
            It provides L{IHypervisor}: every method, with the interface's parameters.
            """
            self.assertTrue(verifyObject(IHypervisor, self.maker.make()))

        def test_connected(self):
            """
            A connected hypervisor is alive, and discovers its PM's capacity: CPUs, memory
            in MiB and its pool's GiB.
            """
            self.assertTrue(self.hv.alive())
            capacity = self.hv.discover()
            self.assertIsInstance(capacity, Resources)
            if self.maker.capacity is not None:
                self.assertEqual(capacity, self.maker.capacity)
            self.assertGreater(capacity.cpu, 0)
            self.assertGreater(capacity.ram, 0)

        def test_not_connected(self):
            """
            Before it connects, and after it closes, it is not alive and every call raises
            L{HostUnreachable}; closing again changes nothing; it can connect again.
            """
            self.assert_unreachable(self.maker.make())
            self.hv.close()
            self.assert_unreachable(self.hv)
            self.hv.close()
            self.hv.connect()
            self.assertTrue(self.hv.alive())
            self.hv.discover()

        def test_unreachable(self):
            """
            A PM that cannot be reached fails L{IHypervisor.connect} with
            L{HostUnreachable}, and stays so.
            """
            hv = self.maker.unreachable()
            self.assertRaises(HostUnreachable, hv.connect)
            self.assert_unreachable(hv)

        def test_goes_away(self):
            """
            A PM that goes away under an open connection (its libvirtd killed) is noticed
            by itself: C{on_close} is told why, it is no longer alive, and every call
            raises L{HostUnreachable}. Back, it can be connected again, its VMs still there.
            """
            if self.maker.cannot_go_away:
                raise SkipTest(self.maker.cannot_go_away)
            spec = self.create(1)
            closed = []
            self.hv.on_close = closed.append
            self.maker.kill(self.hv)
            deadline = time.monotonic() + 10
            while not closed and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(len(closed), 1)
            self.assertIn(self.hv.uri, closed[0])
            self.assert_unreachable(self.hv)
            self.maker.revive(self.hv)
            self.hv.connect()
            self.assertIn(spec.domain_name, self.hv.domain_names())

        # -- base copies ----------------------------------------------------------------

        def test_base_copy(self):
            """
            An image's base copy is made once, named after its checksum, in the PM's
            pool; it is answered with its path and the image's format.
            """
            self.hv.discover()
            path, fmt = self.hv.ensure_base(self.fleet, 1, str(self.image))
            self.addCleanup(self.hv.prune_bases, self.fleet)
            name = base_volume_name(self.fleet, 1, source_digest(str(self.image))[0])
            self.assertEqual((Path(path).name, fmt), (name, "raw"))
            self.assertEqual(self.hv.ensure_base(self.fleet, 1, str(self.image)), (path, fmt))
            self.assertEqual({v for v in self.hv.volume_names() if self.fleet in v}, {name})

        def test_unreadable_source(self):
            """
            An image file that cannot be read fails with L{HypervisorError} naming it, and
            leaves nothing on the PM, which stays connected.
            """
            missing = str(self.image) + ".gone"
            e = self.assertRaises(HypervisorError, self.hv.ensure_base, self.fleet, 1, missing)
            self.assertNotIsInstance(e, HostUnreachable)
            self.assertIn(missing, str(e))
            self.assertEqual({v for v in self.hv.volume_names() if self.fleet in v}, set())
            self.assertTrue(self.hv.alive())

        def test_prune_bases(self):
            """
            Pruning deletes the fleet's base copies no VM disk is built on, and only those:
            not one a VM uses, nor another fleet's.
            """
            other = f"o{uuid.uuid4().hex[:8]}"
            spec = self.create(1)
            self.hv.ensure_base(other, 1, str(self.image))
            self.addCleanup(self.hv.prune_bases, other)
            self.assertEqual(self.hv.prune_bases(self.fleet), [])
            self.hv.destroy_vm(spec.domain_name, spec.volume_name)
            digest = source_digest(str(self.image))[0]
            self.assertEqual(
                self.hv.prune_bases(self.fleet), [base_volume_name(self.fleet, 1, digest)]
            )
            self.assertEqual(self.hv.prune_bases(self.fleet), [])
            self.assertIn(base_volume_name(other, 1, digest), self.hv.volume_names())

        # -- VMs --------------------------------------------------------------------------

        def test_create_and_destroy(self):
            """
            A created VM has a running domain carrying its metadata and a disk of its own;
            destroying it removes both and answers that the domain was there; destroying
            it again answers that it was not.
            """
            spec = self.create(7)
            self.assertIn(spec.domain_name, self.hv.domain_names())
            self.assertIn(spec.volume_name, self.hv.volume_names())
            [meta] = self.hv.fleet_domains(self.fleet)
            expected = dict(fleet=self.fleet, vmid=7, name="vm 7", pmid=1, image_id=1)
            expected.update(flavor=FLAVOR, domain=spec.domain_name)
            self.assertEqual({k: meta.get(k) for k in expected}, expected)
            self.assertTrue(self.hv.destroy_vm(spec.domain_name, spec.volume_name))
            self.assertNotIn(spec.domain_name, self.hv.domain_names())
            self.assertNotIn(spec.volume_name, self.hv.volume_names())
            self.assertFalse(self.hv.destroy_vm(spec.domain_name, spec.volume_name))

        def test_fleet_domains(self):
            """
            A fleet's domains are listed with their metadata, except those named as known
            (their name only), and never another fleet's.
            """
            one, two = self.create(1), self.create(2)
            other = self.create(3, fleet=f"o{uuid.uuid4().hex[:8]}")
            self.assertEqual(
                {other.domain_name, one.domain_name, two.domain_name} - self.hv.domain_names(),
                set(),
            )
            found = self.hv.fleet_domains(self.fleet, frozenset({one.domain_name}))
            by_name = {meta["domain"]: meta for meta in found}
            self.assertEqual(set(by_name), {one.domain_name, two.domain_name})
            self.assertEqual(by_name[one.domain_name], {"domain": one.domain_name})
            self.assertEqual(by_name[two.domain_name]["vmid"], 2)

        def test_start_fails_after_define(self):
            """
            A domain that is defined but will not start fails the create with
            L{HypervisorError}, and leaves neither the domain nor its disk; the PM stays
            connected.
            """
            if self.maker.cannot_fail_start:
                raise SkipTest(self.maker.cannot_fail_start)
            self.maker.break_start(self.hv)
            spec = self.spec(5)
            path, fmt = self.hv.ensure_base(self.fleet, 1, str(self.image))
            self.addCleanup(self.destroy_quietly, spec)
            e = self.assertRaises(HypervisorError, self.hv.create_vm, spec, path, fmt)
            self.assertNotIsInstance(e, HostUnreachable)
            self.assertIn("starting", str(e))
            self.assertNotIn(spec.domain_name, self.hv.domain_names())
            self.assertNotIn(spec.volume_name, self.hv.volume_names())
            self.assertTrue(self.hv.alive())

    HypervisorTests.__name__ = HypervisorTests.__qualname__ = f"{maker.__name__}Tests"
    return HypervisorTests


class FakeHypervisorTests(make_hypervisor_tests(FakeMaker)):
    """
    L{FakeHypervisor}, in memory.
    """


class TestDriverHypervisorTests(make_hypervisor_tests(LibvirtTestDriverMaker)):
    """
    L{LibvirtHost} on libvirt's test driver.
    """


class LibvirtdHypervisorTests(make_hypervisor_tests(LibvirtdMaker)):
    """
    L{LibvirtHost} on a real libvirtd PM.
    """
