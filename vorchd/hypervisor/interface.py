"""
What vorchd asks of one PM's hypervisor: L{IHypervisor}, and the two errors it raises.

Every method blocks. L{vorchd.hypervisor.service.Hypervisors} runs them in its thread pool,
never in the reactor thread, and callers reach them typed through
C{hypervisors.on(pmid)}. L{vorchd.hypervisor.host.LibvirtHost} provides the interface over
libvirt, L{vorchd.hypervisor.fake.FakeHypervisor} in memory; both pass the same tests
(C{tests/system/test_hypervisor_interface.py}).
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

from vorchd.domain import VM
from vorchd.model import Resources


class HypervisorError(Exception):
    """
    A hypervisor operation failed; the message says which and why.
    """


class HostUnreachable(HypervisorError):
    """
    The PM's connection is gone (or was never made).
    """


class IHypervisor(Interface):
    """
    One PM's hypervisor, reached through one long-lived connection that the pool's threads
    share.

    Every method but L{connect}, L{close} and L{alive} raises L{HostUnreachable} when the
    connection is not open or the PM has gone away, and L{HypervisorError} when the PM is
    there but cannot do what was asked.
    """

    uri = Attribute("The PM's address, as the pm_file gives it (a libvirt URI).")

    on_close = Attribute(
        """
        Called with the reason, from any thread, when an open connection drops by itself
        (the PM died, or stopped answering); C{None} for no one. Not called by L{close}.
        """
    )

    def connect() -> None:
        """
        Open the connection (closing a dead one first).

        @raise HostUnreachable: the PM cannot be reached.
        """

    def close() -> None:
        """
        Close the connection, if open. Never raises.
        """

    def alive() -> bool:
        """
        Whether the connection is open and the PM answers on it. Never raises.
        """

    def discover() -> Resources:
        """
        The PM's capacity: host CPUs, host memory in MiB, and the GiB of the pool VM disks
        go into. The pool is defined and started first if the PM lacks it.
        """

    def ensure_base(fleet: str, image_id: int, source: str) -> tuple[str, str]:
        """
        The base copy of image C{image_id} (the local file C{source}) in the PM's pool,
        made (uploaded) if it is not there or not right.

        The copy's name carries the image's checksum
        (L{vorchd.domain.base_volume_name}), so a changed image file gets a new copy and
        the VMs on the old one keep theirs.

        @return: the copy's path on the PM and the image's format (C{raw} or C{qcow2}).
        @raise HypervisorError: C{source} cannot be read (nothing is made on the PM), or
            the copy cannot be made (a partial copy is removed).
        """

    def prune_bases(fleet: str) -> list[str]:
        """
        Delete fleet C{fleet}'s base copies that no VM disk is built on any more.

        @return: the names of the copies deleted, sorted.
        """

    def create_vm(vm: VM, base_path: str, base_format: str) -> str:
        """
        Make the VM's own disk (C{vm.volume_name}, an overlay on the base copy at
        C{base_path}), define its domain (C{vm.domain_name}, carrying the VM's metadata)
        persistently and start it. A disk of that name left behind by an earlier create is
        replaced.

        On any failure everything made here is removed again before raising: a domain that
        was defined but would not start is undefined, and its disk deleted.

        @return: the domain type it runs under (C{kvm}, C{qemu}, or a driver's own).
        """

    def destroy_vm(domain_name: str, volume_name: str) -> bool:
        """
        Stop and undefine the domain, and delete its disk. Either may be gone already.

        @return: whether the domain was still there.
        """

    def domain_names() -> set[str]:
        """
        The names of every domain the PM has, defined or running, of any fleet.
        """

    def fleet_domains(fleet: str, known: frozenset[str] = frozenset()) -> list[dict]:
        """
        The vorchd metadata (L{vorchd.domain.parse_metadata}) of every domain of fleet
        C{fleet} on the PM, with its name as C{domain}. For a name in C{known} only that
        name is given: its metadata is not read (which costs a round trip and an XML parse
        per domain).
        """

    def volume_names() -> set[str]:
        """
        The names of the volumes in the PM's VM pool: base copies and VM disks.
        """
