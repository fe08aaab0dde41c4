"""
What vorchd asks of one PM's hypervisor: L{IHypervisor}, and the errors it raises.

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
from vorchd.volume_xml import CephPool


class HypervisorError(Exception):
    """
    A hypervisor operation failed; the message says which and why.
    """


class CallTimedOut(HypervisorError):
    """
    A call took longer than its timeout: its thread still runs, and what it does may
    yet happen (the caller's C{undo} is given a late success).
    """


class HostUnreachable(HypervisorError):
    """
    The PM's connection is gone (or was never made).
    """


class NetworkUnavailable(HypervisorError):
    """
    The network the PM's VMs attach to (the ini's C{[network]}) is missing or not
    running; the message says which. Discovery refuses such a PM.
    """


class NoSuchVM(HypervisorError):
    """
    The domain asked for does not exist on this PM.
    """


class WrongState(HypervisorError):
    """
    The domain is not in a state that allows the operation; the message says which state
    it is in (C{"... vorchd-ab12-7 is shut off"}).

    @ivar state: that state, one of L{VM_STATES}.
    """

    def __init__(self, message: str, state: str | None = None):
        super().__init__(message)
        self.state = state

    def __reduce__(self):
        return (type(self), (str(self), self.state))


#: What L{IHypervisor.vm_state} answers, and how a message says that a domain is in it.
VM_STATES = {
    "running": "running",
    "paused": "paused",
    "shutoff": "shut off",
    "shutdown": "shutting down",
    "crashed": "crashed",
    "pmsuspended": "suspended by its guest",
    "blocked": "blocked",
    "nostate": "in no state",
    "missing": "missing",
}


def no_such_vm(uri: str, domain_name: str) -> NoSuchVM:
    """
    The error for a domain C{domain_name} that the PM at C{uri} does not have.
    """
    return NoSuchVM(f"{uri}: no domain {domain_name}")


def wrong_state(uri: str, domain_name: str, state: str) -> WrongState:
    """
    The error for a domain C{domain_name} in C{state} (one of L{VM_STATES}) on the PM at
    C{uri}.
    """
    return WrongState(f"{uri}: {domain_name} is {VM_STATES.get(state, state)}", state)


class IHypervisor(Interface):
    """
    One PM's hypervisor, reached through one long-lived connection that the pool's threads
    share.

    Every method but L{connect}, L{close} and L{alive} raises L{HostUnreachable} when the
    connection is not open or the PM has gone away, and L{HypervisorError} when the PM is
    there but cannot do what was asked.
    """

    uri = Attribute("The PM's address, as the pm_file gives it (a libvirt URI).")

    network = Attribute(
        "What its VMs' NICs attach to: a L{vorchd.network.Attachment} (kind none for no NIC)."
    )

    on_close = Attribute(
        """
        Called with the reason, from any thread, when an open connection drops by itself
        (the PM died, or stopped answering); C{None} for no one. Not called by L{close}.
        """
    )

    on_kvm_pause = Attribute(
        """
        Called with a domain's name, from any thread, when a guest this PM started lately
        was paused without being asked to: perhaps KVM could not run it (see
        L{run_emulated}). C{None} for no one.
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

    def check_network() -> None:
        """
        Check that what VMs on this PM attach their NIC to (its C{network}, an
        L{vorchd.network.Attachment}) is there: a libvirt network that exists and is
        active, or a bridge the PM has. Nothing to check for C{none}.

        @raise NetworkUnavailable: it is missing or not active (the message says which).
        """

    def vm_addresses(domain_name: str) -> list[str]:
        """
        The IP addresses the guest of domain C{domain_name} has now, as text, IPv4 first,
        without loopback and link-local ones: from the PM's DHCP leases (a libvirt
        network), else from the guest agent (if the guest runs one), else from the PM's
        ARP table. Empty for a domain that is not running, has no NIC, or has no address
        yet.

        @raise NoSuchVM: there is no such domain.
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

        @return: the domain type it started under (C{kvm}, C{qemu}, or a driver's own);
            a KVM guest that KVM then pauses may be restarted emulated (L{run_emulated}).
        """

    def run_emulated(domain_name: str) -> float | None:
        """
        If KVM paused the domain with an internal error soon after this PM started it
        (it cannot run that guest: see L{vorchd.hypervisor.emulation}), restart it under
        plain QEMU emulation, its disk, NIC and metadata unchanged, and start every later
        VM on this PM emulated (where the domain type is C{auto}). Anything else (a domain
        that runs, was paused on request, or is gone) is left alone.

        @return: how many seconds after its start KVM paused it, if it was restarted;
            else None.
        @raise HypervisorError: it was found paused by KVM but could not be restarted (it
            is left defined and shut off).
        """

    def destroy_vm(domain_name: str, volume_name: str | None) -> bool:
        """
        Stop and undefine the domain, and delete its disk. Either may be gone already.

        @param volume_name: the disk to delete, or None to keep it (a disk in a pool that
            another PM shares, where the domain runs now).
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

    # -- one VM's life: see also vorchd.hypervisor.running ---------------------------------

    def vm_state(domain_name: str) -> str:
        """
        The domain's state now: one of L{VM_STATES} (C{running}, C{paused}, C{shutoff},
        C{shutdown} while it shuts down, C{crashed}, C{pmsuspended}, C{blocked},
        C{nostate}), or C{missing} when the PM has no such domain (not an error).
        """

    def stop_vm(domain_name: str, timeout: float) -> None:
        """
        Shut the domain down: ask its guest (ACPI power button), wait up to C{timeout}
        seconds for it to be shut off, then force it off. A paused (or crashed, or
        guest-suspended) domain is forced off at once. It stays defined, its disk kept.

        @raise NoSuchVM: there is no such domain.
        @raise WrongState: it is shut off already.
        """

    def start_vm(domain_name: str) -> None:
        """
        Start a shut off (or crashed) domain.

        @raise NoSuchVM: there is no such domain.
        @raise WrongState: it is running, paused or otherwise active.
        """

    def reboot_vm(domain_name: str) -> None:
        """
        Reset a running domain: a hard reboot, like the reset button, without asking its
        guest (vorchd's test guests, bare boot sectors, would ignore an ACPI request).

        @raise NoSuchVM: there is no such domain.
        @raise WrongState: it is not running.
        """

    def suspend_vm(domain_name: str) -> None:
        """
        Pause a running domain (its guest keeps its memory and stops running).

        @raise NoSuchVM: there is no such domain.
        @raise WrongState: it is not running.
        """

    def resume_vm(domain_name: str) -> None:
        """
        Let a paused domain run again.

        @raise NoSuchVM: there is no such domain.
        @raise WrongState: it is not paused.
        """

    def resize_vm(vm: VM, timeout: float) -> None:
        """
        Give the existing domain C{vm.domain_name} the flavor C{vm.flavor}: an active one
        is shut down as L{stop_vm} does (C{timeout}, then forced), its disk
        C{vm.volume_name} grown to C{vm.flavor.disk} GiB if smaller, the domain redefined
        with the new vCPUs, memory and metadata (its domain type, disk and console kept),
        and started again if it was active (a paused one comes back running). A disk is
        never shrunk. On libvirt's test driver, whose volumes cannot be resized, the disk
        keeps its size.

        If anything fails after the shutdown, the old definition is put back and a domain
        that was active is started again (a disk already grown stays grown).

        @raise NoSuchVM: there is no such domain.
        @raise HypervisorError: the new disk is smaller than the volume (nothing is
            changed), the volume is missing, or the resize failed (and was undone).
        """

    # -- moving a VM to another PM: see also vorchd.hypervisor.moves -----------------------

    def migrate_vm(vm: VM, target_uri: str, shared: bool) -> None:
        """
        Live-migrate the active domain C{vm.domain_name} to the PM at C{target_uri}
        (peer to peer: this PM's libvirtd connects to the target's), which then keeps it
        persistently, with its metadata's C{pmid} made C{vm.pmid} (the target's). The
        domain is undefined here.

        Unless C{shared} (the two PMs' pools are one directory), the disk is copied on the
        way, into the overlay the target must already have (L{prepare_incoming} there),
        and deleted here after success (a delete that fails then is only logged).

        @raise NoSuchVM: there is no such domain.
        @raise WrongState: it is shut off (move it with L{export_disk} instead).
        @raise HypervisorError: the migration failed; the domain still runs here, as it
            did (libvirt guarantees that of a failed peer-to-peer migration), its disk
            kept. libvirt's test driver cannot migrate at all.
        """

    def prepare_incoming(vm: VM, base_path: str, base_format: str) -> None:
        """
        Make the VM's own disk C{vm.volume_name} here, as L{create_vm} does (an overlay on
        the base copy at C{base_path}, replacing a stale one of that name), without
        defining a domain: the target's side of L{migrate_vm} or of a cold move
        (L{import_disk}, L{define_vm}).
        """

    def export_disk(volume_name: str, path: str) -> None:
        """
        Copy the bytes of the volume C{volume_name} (a shut off VM's disk) into the file
        C{path} on the daemon's own machine, through a libvirt stream. On libvirt's test
        driver, whose volumes hold no data, only checks that the volume exists.

        @raise HypervisorError: there is no such volume, or the copy failed (a partial file
            is removed).
        """

    def import_disk(volume_name: str, path: str) -> None:
        """
        Copy the file C{path} on the daemon's machine (made by L{export_disk} on another
        PM) into the volume C{volume_name} made by L{prepare_incoming}, through a libvirt
        stream. The file's qcow2 header names its base copy by path, so both PMs must keep
        their pools at one path. On libvirt's test driver, whose volumes hold no data, only
        checks that the volume exists.

        @raise HypervisorError: there is no such volume, C{path} cannot be read, or the
            copy failed.
        """

    def define_vm(vm: VM) -> str:
        """
        Define, and not start, the persistent domain of C{vm} over its existing disk
        C{vm.volume_name} here (imported, or in a shared pool made by another PM), as
        L{create_vm} would (same domain type choice, console log, metadata).

        @return: the domain type it will run under.
        @raise HypervisorError: there is no such volume, or a domain of that name exists.
        """

    def pool_marks(fleet: str, pmid: int) -> frozenset[int]:
        """
        Make sure the PM's pool holds the mark of PM C{pmid} of fleet C{fleet} (a tiny
        volume, L{vorchd.domain.mark_volume_name}), and tell which PMs' marks of that
        fleet it holds, its own included: PMs whose pools are one shared directory see
        each other's. The pool is read afresh (unless libvirt refuses because an upload
        into it runs: then as this PM last saw it).

        @return: the pmids of the marks found.
        """

    # -- block volumes (vorchd/hypervisor/volumes.py, fakevolumes.py) --------------------

    # Each takes C{ceph}: None for a C{local} volume (a raw volume in the PM's own pool),
    # or the L{vorchd.volume_xml.CephPool} of an C{rbd} one (an RBD image, reached from
    # any PM through a libvirt RBD pool and secret that the call defines where missing).

    def make_volume(volume_name: str, size_gib: int, ceph: CephPool | None = None) -> str:
        """
        Make an empty volume of C{size_gib} GiB (sparse, or a thin RBD image) for a block
        volume; one of that name there already is kept as it is.

        @return: its path (C{pool/image} for RBD).
        """

    def ceph_room(ceph: CephPool) -> tuple[int, int]:
        """
        The room of the Ceph cluster behind C{ceph}'s pool, read afresh through the PM's
        libvirt RBD pool (defined where missing): its raw capacity and what is available
        now, in bytes.

        @raise HypervisorError: Ceph cannot be reached, or libvirt refused.
        """

    def delete_volume(volume_name: str, ceph: CephPool | None = None) -> bool:
        """
        Delete a block volume's volume (from the PM's pool, or the RBD image).

        @return: whether it was there.
        """

    def attach_volume(
        domain_name: str, volume_name: str, serial: str, ceph: CephPool | None = None
    ) -> None:
        """
        Attach the volume C{volume_name} to the domain as a disk on its SCSI controller
        (the next free C{sdX}, its serial C{serial}), live if the domain is active and in
        its definition either way; done when it returns. A volume attached to it already
        stays as it is.

        @raise NoSuchVM: there is no such domain.
        @raise HypervisorError: no such volume, or libvirt refused.
        """

    def detach_volume(domain_name: str, volume_name: str, ceph: CephPool | None = None) -> bool:
        """
        Detach the volume's disk from the domain, live and from its definition; done when
        it returns.

        @return: whether it was attached.
        @raise NoSuchVM: there is no such domain.
        """
