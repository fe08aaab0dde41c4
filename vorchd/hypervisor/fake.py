"""
A PM's hypervisor in memory: L{FakeHypervisor}, which provides L{IHypervisor} with
domains, volumes and pools kept in dicts, and switches for each way a real one fails.

It is trusted only because it passes the same tests as L{LibvirtHost} against libvirt's
test driver and a real libvirtd (C{tests/system/test_hypervisor_interface.py}). Use it to test
what lies above the hypervisor (the service's thread pool, timeouts and late undo; the
fleet's create, destroy, moves and reconcile) without libvirt, and to make it fail on
demand. Its VMs' life once made, and their moves between fakes, are in
L{vorchd.hypervisor.fakeguests}.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from zope.interface import implementer

from vorchd import domain
from vorchd.domain import VM, VMSpec
from vorchd.hypervisor.fakeguests import (
    FAKE_DOMAIN_TYPE,
    FakeDomain,
    FakeGuests,
    FakeVolume,
    fake_at,
    register,
)
from vorchd.hypervisor.fakevolumes import FakeBlockVolumes
from vorchd.hypervisor.interface import (
    HostUnreachable,
    HypervisorError,
    IHypervisor,
    NetworkUnavailable,
)
from vorchd.images.copies import source_digest
from vorchd.model import Resources
from vorchd.network import NO_NIC, NONE, Attachment, interface_macs

__all__ = [
    "DEFAULT_CAPACITY",
    "FAKE_DOMAIN_TYPE",
    "FakeDomain",
    "FakeHypervisor",
    "FakeVolume",
    "Gate",
    "fake_at",
]

#: A fake PM's capacity unless given.
DEFAULT_CAPACITY = Resources(cpu=4, ram=4096, disk=100)


class Gate:
    """
    Holds the calls that reach it, each in its own thread, until L{release}d: at most
    C{limit} of them (later ones pass), and none longer than C{timeout} seconds (so that a
    test that forgets to release it cannot hang the thread pool's shutdown).

    @ivar held: how many calls it has held so far.
    """

    def __init__(self, limit: int | None = None, timeout: float = 120.0):
        self.limit = limit
        self.timeout = timeout
        self.held = 0
        self._lock = threading.Lock()
        self._open = threading.Event()

    def pass_through(self) -> None:
        """
        Block the calling thread until the gate is released, unless it is full or open.
        """
        with self._lock:
            if self._open.is_set() or (self.limit is not None and self.held >= self.limit):
                return
            self.held += 1
        self._open.wait(self.timeout)

    def release(self) -> None:
        """
        Let every held call go on, and every later one pass at once.
        """
        self._open.set()


@implementer(IHypervisor)
class FakeHypervisor(FakeGuests, FakeBlockVolumes):
    """
    A PM of C{capacity} in memory, reached by other fakes at C{uri} (L{fake_at}: a live
    migration goes there). Its methods are safe to call from several threads. Fakes
    given one C{pools} dict share their pools, as PMs whose pools are one directory.

    Its state, to look at (and to arrange) from tests:

    @ivar pools: pool name -> its volumes by name. vorchd's pool is defined by the first
        call that needs it (L{discover}, L{ensure_base}, ...), as on a real PM.
    @ivar domains: domain name -> L{FakeDomain}.
    @ivar networks: the PM's libvirt networks (and bridges) by name -> whether active: a
        VM attached to one that is missing or inactive fails to start, as on libvirt.
        A running VM with a NIC has an address (L{vm_addresses}) at once, in 192.0.2.0/24.
    @ivar uploads: the names of the base copies uploaded, in order.
    @ivar done: the methods whose calls succeeded, in the order they did.
    @ivar lock: held by every change of that state: hold it to read the state while
        calls run.

    Its switches, which apply to the calls that begin after they are set:

    @ivar reachable: False makes L{connect} fail with L{HostUnreachable}. L{die} sets it
        and drops the connection the way a killed libvirtd does.
    @ivar failures: method name -> the exception each of its calls raises (after its
        switches for time), doing nothing.
    @ivar start_failure: a reason, to make L{create_vm} define the domain and then fail
        to start it: as libvirt's does, it then undefines the domain and deletes its disk
        before raising L{HypervisorError}.
    @ivar delays: method name -> seconds each of its calls sleeps (in its thread) before
        doing its work: a slow PM, or, past the service's timeout, a late success.
    @ivar gates: method name -> a L{Gate} each of its calls waits at before doing its work.
    @ivar ignores_acpi: True makes its guests ignore a shutdown request, as vorchd's test
        guests do: L{stop_vm} and L{resize_vm} then wait their whole timeout (sleeping in
        their thread) before forcing them off.
    @ivar resize_failure: a reason, to make L{resize_vm} fail after the shutdown, once
        (as libvirt's does) it has put the old definition back and started the domain
        again if it was active.
    """

    def __init__(
        self,
        uri: str = "fake:///pm",
        capacity: Resources = DEFAULT_CAPACITY,
        pool_name: str = "vorchd",
        pool_path: str = "/var/lib/vorchd/pool",
        pools: dict[str, dict[str, FakeVolume]] | None = None,
        network: Attachment = NO_NIC,
        networks: dict[str, bool] | None = None,
    ):
        self.uri = uri
        self.network = network
        self.networks: dict[str, bool] = {} if networks is None else networks
        self.capacity = capacity
        self.pool_name = pool_name
        self.pool_path = pool_path
        self.on_close: Callable[[str], object] | None = None
        self.on_kvm_pause: Callable[[str], object] | None = None
        # Domains KVM paused (the test pauses them too), by name -> seconds after their
        # start: run_emulated restarts them and answers that.
        self.kvm_pauses: dict[str, float] = {}
        self.pools: dict[str, dict[str, FakeVolume]] = {} if pools is None else pools
        self.domains: dict[str, FakeDomain] = {}
        self.uploads: list[str] = []
        self.done: list[str] = []
        self.reachable = True
        self.failures: dict[str, BaseException] = {}
        self.start_failure: str | None = None
        self.delays: dict[str, float] = {}
        self.gates: dict[str, Gate] = {}
        self.ignores_acpi = False
        self.resize_failure: str | None = None
        self._connected = False
        self.lock = threading.RLock()
        register(self)

    # -- switches -------------------------------------------------------------------------

    def die(self, why: str = "error") -> None:
        """
        The PM goes away (as a killed libvirtd): unreachable from now on, its connection
        dropped, and C{on_close} told. Its domains and volumes stay, as a real PM's guests
        and disks outlive its libvirtd; set C{reachable} back to bring it back.
        """
        with self.lock:
            was_connected = self._connected
            self.reachable = False
            self._connected = False
        if was_connected and self.on_close is not None:
            self.on_close(f"{self.uri}: connection closed ({why})")

    def _enter(self, method: str, connected: bool = True) -> None:
        """
        Apply the switches at the start of a call of C{method}: wait at its gate, sleep its
        delay, then raise what it must (no connection, an injected failure).
        """
        gate = self.gates.get(method)
        if gate is not None:
            gate.pass_through()
        delay = self.delays.get(method)
        if delay:
            time.sleep(delay)
        if connected and not (self._connected and self.reachable):
            raise HostUnreachable(f"{self.uri}: not connected")
        failure = self.failures.get(method)
        if failure is not None:
            raise failure

    def _did(self, method: str) -> None:
        with self.lock:
            self.done.append(method)

    # -- the connection -------------------------------------------------------------------

    def connect(self) -> None:
        self._enter("connect", connected=False)
        with self.lock:
            self._connected = False
            if not self.reachable:
                raise HostUnreachable(f"{self.uri}: unable to connect: the PM is unreachable")
            self._connected = True
        self._did("connect")

    def close(self) -> None:
        with self.lock:
            self._connected = False

    def alive(self) -> bool:
        return self._connected and self.reachable

    # -- discovery and volumes ------------------------------------------------------------

    def _pool(self) -> dict[str, FakeVolume]:
        return self.pools.setdefault(self.pool_name, {})

    def discover(self) -> Resources:
        self._enter("discover")
        with self.lock:
            self._pool()
        self._did("discover")
        return self.capacity

    def volume_names(self) -> set[str]:
        self._enter("volume_names")
        with self.lock:
            names = set(self._pool())
        self._did("volume_names")
        return names

    def ensure_base(self, fleet: str, image_id: int, source: str) -> tuple[str, str]:
        self._enter("ensure_base")
        digest, size, fmt = source_digest(source)
        name = domain.base_volume_name(fleet, image_id, digest)
        with self.lock:
            pool = self._pool()
            if name not in pool:
                pool[name] = FakeVolume(os.path.join(self.pool_path, name), size)
                self.uploads.append(name)
            path = pool[name].path
        self._did("ensure_base")
        return path, fmt

    def prune_bases(self, fleet: str) -> list[str]:
        self._enter("prune_bases")
        prefix = domain.base_volume_prefix(fleet)
        with self.lock:
            pool = self._pool()
            in_use = {v.backing for n, v in pool.items() if not n.startswith(prefix)}
            pruned = sorted(
                n for n, v in pool.items() if n.startswith(prefix) and v.path not in in_use
            )
            for name in pruned:
                del pool[name]
        self._did("prune_bases")
        return pruned

    # -- VMs --------------------------------------------------------------------------------

    def create_vm(self, vm: VM, base_path: str, base_format: str) -> str:
        self._enter("create_vm")
        name, volume = vm.domain_name, vm.volume_name
        with self.lock:
            pool = self._pool()
            disk = self._new_disk(vm, base_path)
            if name in self.domains:
                del pool[volume]
                raise HypervisorError(f"{self.uri}: defining domain: '{name}' already exists")
            spec = VMSpec.of(vm, FAKE_DOMAIN_TYPE, disk.path, None, self.network)
            self.domains[name] = FakeDomain(domain.domain_xml(spec))
            failure = self.start_failure
            if self.network.kind != NONE and not self.networks.get(self.network.source):
                failure = f"{self.network} is not active"
            if failure is not None:
                # As libvirt's does: a domain defined but not started is undefined again.
                del self.domains[name]
                del pool[volume]
                raise HypervisorError(f"{self.uri}: starting {FAKE_DOMAIN_TYPE} domain: {failure}")
            self.domains[name].state = "running"
        self._did("create_vm")
        return FAKE_DOMAIN_TYPE

    def destroy_vm(self, domain_name: str, volume_name: str | None) -> bool:
        self._enter("destroy_vm")
        with self.lock:
            found = self.domains.pop(domain_name, None) is not None
            if volume_name is not None:
                self._pool().pop(volume_name, None)
        self._did("destroy_vm")
        return found

    def check_network(self) -> None:
        self._enter("check_network")
        nic = self.network
        if nic.kind != NONE:
            with self.lock:
                active = self.networks.get(nic.source)
            if active is None:
                raise NetworkUnavailable(f"{self.uri}: {nic} is missing")
            if not active:
                raise NetworkUnavailable(f"{self.uri}: {nic} is not active")
        self._did("check_network")

    def vm_addresses(self, domain_name: str) -> list[str]:
        self._enter("vm_addresses")
        with self.lock:
            dom = self._domain(domain_name)
            macs = interface_macs(dom.xml) if dom.state == "running" else []
        self._did("vm_addresses")
        # A lease for each NIC, made up from its MAC, in a range reserved for examples.
        return sorted({f"192.0.2.{int(mac[-2:], 16) % 250 + 2}" for mac in macs})

    def domain_names(self) -> set[str]:
        self._enter("domain_names")
        with self.lock:
            names = set(self.domains)
        self._did("domain_names")
        return names

    def fleet_domains(self, fleet: str, known: frozenset[str] = frozenset()) -> list[dict]:
        self._enter("fleet_domains")
        prefix = domain.fleet_prefix(fleet)
        with self.lock:
            mine = [(n, d) for n, d in self.domains.items() if n.startswith(prefix)]
        out = []
        for name, dom in mine:
            if name in known:
                out.append({"domain": name})
                continue
            meta = dom.metadata
            if meta.get("fleet") == fleet:
                out.append({**meta, "domain": name})
        self._did("fleet_domains")
        return out
