"""
KVM that cannot run a guest: a guest that KVM pauses with an internal error right after
its start is restarted under plain QEMU emulation, and its PM starts later guests
emulated.

Why it is needed: KVM may be offered and start guests, yet fail on what a guest does. On
a machine whose nested KVM cannot emulate an instruction (measured here: syslinux and a
Linux kernel, not a bare boot sector), QEMU reports "KVM internal error ... emulation
failure" and stops the guest's CPUs about 2 s after its start; libvirt then shows the
domain paused with reason I{unknown} (a pause asked for through libvirt has reason
I{user}, an I/O error I{ioerror}, a panic I{crashed}). Left alone the VM would stay
paused for good with no address.

How it is noticed, without slowing creates down: the PM's connection watches libvirt's
lifecycle events. Each domain started by vorchd is on trial for L{TRIAL_SECONDS}; a
I{suspended} event for one of them hands it (through C{on_kvm_pause}, then the daemon's
thread pool) to L{run_emulated}, which checks that it is a KVM domain paused with reason
I{unknown}, redefines it as a C{qemu} domain (same UUID, disk, NIC and console) and
restarts it. The PM remembers (L{LibvirtHost.kvm_unusable}) until the daemon restarts.

Everything here blocks but the event callback, which only looks at its arguments.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import libvirt

if TYPE_CHECKING:
    from vorchd.hypervisor.host import LibvirtHost

#: How long after its start a guest that pauses is taken for one KVM cannot run.
TRIAL_SECONDS = 120.0


def paused_by_kvm(domain_type: str, state: int, reason: int) -> bool:
    """
    Whether a domain of C{domain_type} in libvirt's C{state} and state C{reason} is one
    that KVM paused by itself (an internal error), rather than one paused on request, by
    an I/O error, a migration or a guest's panic.
    """
    return (
        domain_type == "kvm"
        and state == libvirt.VIR_DOMAIN_PAUSED
        and reason == libvirt.VIR_DOMAIN_PAUSED_UNKNOWN
    )


def emulated_xml(xml: str) -> str:
    """
    The domain XML C{xml} (as libvirt gives it) as a plain QEMU (TCG) domain, nothing else
    changed: its UUID, disk, NIC with its MAC address, console and metadata stay.
    """
    root = ET.fromstring(xml)
    root.set("type", "qemu")
    return ET.tostring(root, encoding="unicode")


class DomainLocks:
    """
    One lock per domain name, taken by what removes a domain and by L{run_emulated}, so
    that a restart never brings back a domain a destroy removed, while changes to other
    domains of the PM go on at the same time.
    """

    def __init__(self):
        self._busy: set[str] = set()
        self._cond = threading.Condition()

    @contextmanager
    def held(self, domain_name: str) -> Iterator[None]:
        """
        Hold C{domain_name}'s lock for the C{with} block, waiting for it if another
        thread holds it.
        """
        with self._cond:
            while domain_name in self._busy:
                self._cond.wait()
            self._busy.add(domain_name)
        try:
            yield
        finally:
            with self._cond:
                self._busy.discard(domain_name)
                self._cond.notify_all()


class Trials:
    """
    The domains a PM started lately, each on trial until L{TRIAL_SECONDS} after its start.
    Used from the daemon's threads and libvirt's event thread alike.
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self, domain_name: str) -> None:
        """
        C{domain_name} is being started now.
        """
        with self._lock:
            now = self._clock()
            for name, at in list(self._started.items()):
                if now - at > TRIAL_SECONDS:
                    del self._started[name]
            self._started[domain_name] = now

    def age(self, domain_name: str) -> float | None:
        """
        Seconds since C{domain_name} was started, if it is on trial still; else None.
        """
        with self._lock:
            at = self._started.get(domain_name)
            if at is None:
                return None
            age = self._clock() - at
            return age if age <= TRIAL_SECONDS else None

    def end(self, domain_name: str) -> None:
        """
        C{domain_name} is no longer on trial (removed, or restarted emulated).
        """
        with self._lock:
            self._started.pop(domain_name, None)


def is_kvm_pause_event(event: int, detail: int) -> bool:
    """
    Whether libvirt's lifecycle C{event} and C{detail} can be KVM pausing a guest.
    """
    return (
        event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED
        and detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED
    )


def run_emulated(host: LibvirtHost, domain_name: str) -> float | None:
    """
    L{IHypervisor.run_emulated} on C{host}.
    """
    with host.domain_locks.held(domain_name):
        age = host.trials.age(domain_name)
        if age is None:
            return None
        try:
            dom = host.conn.lookupByName(domain_name)
        except libvirt.libvirtError as e:
            if host.is_not_found(e):
                host.trials.end(domain_name)
                return None
            raise host.failed(f"looking up {domain_name}", e) from None
        try:
            state, reason = dom.state(0)
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        except libvirt.libvirtError as e:
            raise host.failed(f"reading {domain_name}", e) from None
        if not paused_by_kvm(ET.fromstring(xml).get("type", ""), state, reason):
            return None
        host.trials.end(domain_name)
        host.kvm_unusable = (
            f"KVM paused {domain_name} with an internal error {age:.1f} s after its start"
        )
        try:
            # The new definition is for its next start; the paused KVM guest goes first.
            host.conn.defineXML(emulated_xml(xml))
            dom.destroy()
            dom.create()
        except libvirt.libvirtError as e:
            error = host.failed(f"restarting {domain_name} under QEMU emulation", e)
            raise type(error)(f"{error}; it stays defined, shut off") from None
        return age
