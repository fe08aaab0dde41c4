"""
One VM's life on a libvirt PM once it exists: its state; stopping, starting, rebooting,
pausing and resuming its domain; and giving it another flavor.

Everything here blocks, like the L{LibvirtHost} whose connection it uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import libvirt
from twisted.logger import Logger

from vorchd import domain
from vorchd.domain import VM
from vorchd.hypervisor.interface import HypervisorError, NoSuchVM, no_such_vm, wrong_state
from vorchd.images.copies import find_volume

if TYPE_CHECKING:
    from vorchd.hypervisor.host import LibvirtHost

GIB = 1024**3

#: How often a shutting down domain is looked at, in seconds.
POLL_INTERVAL = 0.1

# libvirt's domain states, as IHypervisor.vm_state names them.
_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

# The states whose guest is asked to shut down (the others are forced off at once).
_ASKED = {"running", "blocked", "nostate", "shutdown"}

log = Logger()


def lookup(host: LibvirtHost, domain_name: str) -> libvirt.virDomain:
    """
    The domain C{domain_name} of C{host}.

    @raise NoSuchVM: there is none.
    """
    try:
        return host.conn.lookupByName(domain_name)
    except libvirt.libvirtError as e:
        if host.is_not_found(e):
            raise no_such_vm(host.uri, domain_name) from None
        raise host.failed(f"looking up {domain_name}", e) from None


def state_of(host: LibvirtHost, dom: libvirt.virDomain) -> str:
    """
    The state of C{dom} now, as L{IHypervisor.vm_state} names it.
    """
    try:
        state = dom.state(0)[0]
    except libvirt.libvirtError as e:
        if host.is_not_found(e):
            return "missing"
        raise host.failed(f"reading the state of {dom.name()}", e) from None
    return _STATES.get(state, "nostate")


def is_active(host: LibvirtHost, dom: libvirt.virDomain) -> bool:
    """
    Whether C{dom} has a guest (running, paused, shutting down...), not shut off.
    """
    try:
        return dom.isActive() == 1
    except libvirt.libvirtError as e:
        if host.is_not_found(e):
            return False
        raise host.failed(f"reading the state of {dom.name()}", e) from None


def vm_state(host: LibvirtHost, domain_name: str) -> str:
    """
    L{IHypervisor.vm_state} on C{host}.
    """
    try:
        dom = lookup(host, domain_name)
    except NoSuchVM:
        return "missing"
    return state_of(host, dom)


def shut_down(host: LibvirtHost, dom: libvirt.virDomain, state: str, timeout: float) -> None:
    """
    Shut off the active domain C{dom}, found in C{state}: ask its guest and wait up to
    C{timeout} seconds, then force it off; a guest that cannot be asked (paused, say) is
    forced off at once.
    """
    if state in _ASKED:
        try:
            if state != "shutdown":
                dom.shutdown()
        except libvirt.libvirtError:
            pass  # no ACPI, say: forced off below
        else:
            deadline = time.monotonic() + timeout
            while is_active(host, dom):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(POLL_INTERVAL, left))
            else:
                return
    try:
        dom.destroy()
    except libvirt.libvirtError as e:
        if is_active(host, dom):
            raise host.failed(f"forcing {dom.name()} off", e) from None


def stop_vm(host: LibvirtHost, domain_name: str, timeout: float) -> None:
    """
    L{IHypervisor.stop_vm} on C{host}.
    """
    dom = lookup(host, domain_name)
    state = state_of(host, dom)
    if not is_active(host, dom):
        raise wrong_state(host.uri, domain_name, state)
    shut_down(host, dom, state, timeout)


def _change(
    host: LibvirtHost,
    domain_name: str,
    allowed: set[str],
    what: str,
    call: Callable[[libvirt.virDomain], object],
) -> None:
    """
    Do C{call(dom)} (C{what}, as an error message says it) to the domain C{domain_name}
    if its state is one of C{allowed}.
    """
    dom = lookup(host, domain_name)
    state = state_of(host, dom)
    if state not in allowed:
        raise wrong_state(host.uri, domain_name, state)
    try:
        call(dom)
    except libvirt.libvirtError as e:
        raise host.failed(f"{what} {domain_name}", e) from None


def start_vm(host: LibvirtHost, domain_name: str) -> None:
    """
    L{IHypervisor.start_vm} on C{host}.
    """
    if not host.is_test_driver:
        # If it is a KVM domain, KVM may pause it (see vorchd.hypervisor.emulation).
        host.trials.start(domain_name)
    _change(host, domain_name, {"shutoff", "crashed"}, "starting", lambda d: d.create())


def reboot_vm(host: LibvirtHost, domain_name: str) -> None:
    """
    L{IHypervisor.reboot_vm} on C{host}: a reset, since a bare boot sector ignores ACPI.
    """
    _change(host, domain_name, {"running"}, "resetting", lambda d: d.reset(0))


def suspend_vm(host: LibvirtHost, domain_name: str) -> None:
    """
    L{IHypervisor.suspend_vm} on C{host}.
    """
    _change(host, domain_name, {"running"}, "pausing", lambda d: d.suspend())


def resume_vm(host: LibvirtHost, domain_name: str) -> None:
    """
    L{IHypervisor.resume_vm} on C{host}.
    """
    _change(host, domain_name, {"paused"}, "resuming", lambda d: d.resume())


def resize_vm(host: LibvirtHost, vm: VM, timeout: float) -> None:
    """
    L{IHypervisor.resize_vm} on C{host}.

    The domain is redefined from its own persistent XML with the new vCPUs, memory and
    metadata: everything else (its UUID, which a redefinition must keep, its type, disk
    and console) stays as libvirt has it.
    """
    dom = lookup(host, vm.domain_name)
    vol = find_volume(host, vm.volume_name)
    if vol is None:
        raise HypervisorError(f"{host.uri}: {vm.domain_name} has no disk {vm.volume_name}")
    try:
        capacity = vol.info()[1]
        old_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    except libvirt.libvirtError as e:
        raise host.failed(f"reading {vm.domain_name}", e) from None
    wanted = vm.flavor.disk * GIB
    if wanted < capacity:
        raise HypervisorError(
            f"{host.uri}: {vm.volume_name} is {capacity / GIB:g} GiB: "
            f"a disk is never shrunk (to {vm.flavor.disk} GiB)"
        )
    new_xml = domain.resized_xml(old_xml, vm)
    active = is_active(host, dom)
    if active:
        shut_down(host, dom, state_of(host, dom), timeout)
    try:
        # The test driver's volumes cannot be resized (and hold nothing).
        if wanted > capacity and not host.is_test_driver:
            vol.resize(wanted, 0)
        redefined = host.conn.defineXML(new_xml)
        if active:
            redefined.create()
    except libvirt.libvirtError as e:
        error = host.failed(f"resizing {vm.domain_name}", e)
        _put_back(host, vm.domain_name, old_xml, active)
        raise error from None


def _put_back(host: LibvirtHost, domain_name: str, xml: str, start: bool) -> None:
    """
    Define C{domain_name} as C{xml} again, and start it if C{start}: undo a resize that
    failed (what fails here too is logged, the resize's own error being the one raised).
    """
    try:
        dom = host.conn.defineXML(xml)
        if start and not dom.isActive():
            dom.create()
    except libvirt.libvirtError as e:
        log.error(
            "{uri}: putting {name} back after a failed resize: {e}",
            uri=host.uri,
            name=domain_name,
            e=e.get_error_message(),
        )
