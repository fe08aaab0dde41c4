"""
Running VMs: their state changed (L{act}: stop, start, reboot, suspend, resume) and read
as the hypervisor has it now (L{info}). Their flavor and PM change in L{vorchd.fleet.move}.

A stopped VM keeps its PM, its disk and its room (Nova's rule): none of these change
C{pm/query}, so a start never fails for want of room.
"""

from __future__ import annotations

import time

from twisted.logger import Logger

from vorchd.fleet.parts import Parts, Refused
from vorchd.hypervisor.interface import HypervisorError
from vorchd.state.model import VMRecord

#: The state changes a user may ask for, by name.
ACTIONS = ("stop", "start", "reboot", "suspend", "resume")

log = Logger()


def visible_vm(parts: Parts, vmid: int) -> VMRecord:
    """
    VM C{vmid}'s record, if it is a VM users see (created, active or missing).

    @raise Refused: there is none.
    """
    rec = parts.ready().vms.get(vmid)
    if rec is None or not rec.visible:
        raise Refused(f"no VM {vmid}")
    return rec


def not_changing(rec: VMRecord) -> None:
    """
    @raise Refused: a change of VM C{rec} (a resize, a move) is under way.
    """
    if rec.change_op:
        raise Refused(f"VM {rec.vmid}: a {rec.change_kind} of it is under way; try again after it")


async def act(parts: Parts, vmid: int, action: str) -> None:
    """
    Change VM C{vmid}'s state: C{action} is one of L{ACTIONS}. C{stop} asks the guest to
    shut down (ACPI) and forces it off after the ini's C{[libvirt] stop_timeout}.

    Each logs one event, C{vm_action}: the action, its outcome (C{done} or C{refused}),
    vmid, PM, the reason of a refusal and its C{duration}.

    @raise Refused: no such VM, its PM cannot be reached, a change of it is under way, or
        it is not in a state that allows C{action} (stopping a stopped VM); nothing
        changed.
    """
    started = time.monotonic()
    pmid = 0
    try:
        if action not in ACTIONS:
            raise Refused(f"no action {action!r}")
        rec = visible_vm(parts, vmid)
        pmid = rec.pmid
        not_changing(rec)
        await _act(parts, rec, action)
    except Refused as e:
        log.info(
            "vm {vmid}: not {action}: {reason}",
            event="vm_action",
            action=action,
            outcome="refused",
            vmid=vmid,
            pmid=pmid,
            reason=str(e),
            duration=time.monotonic() - started,
        )
        raise
    log.info(
        "vm {vmid} on PM {pmid}: {action} done in {duration:.3f} s",
        event="vm_action",
        action=action,
        outcome="done",
        vmid=vmid,
        pmid=pmid,
        duration=time.monotonic() - started,
    )


async def _act(parts: Parts, rec: VMRecord, action: str) -> None:
    settings = parts.host_settings
    hypervisors = parts.hypervisors
    if not hypervisors.is_up(rec.pmid):
        raise Refused(f"VM {rec.vmid}: PM {rec.pmid} is down")
    try:
        if action == "stop":
            await parts.stopping(rec.pmid).stop_vm(rec.domain, settings.stop_timeout)
        else:
            await getattr(hypervisors.on(rec.pmid), f"{action}_vm")(rec.domain)
    except HypervisorError as e:
        raise Refused(f"VM {rec.vmid}: {e}") from None


async def info(parts: Parts, vmid: int) -> dict[str, object]:
    """
    VM C{vmid}: C{vmid, name, instance_type, pmid, image_id, state, domain, mac, ips},
    where C{state} is what its hypervisor says now (C{running}, C{paused}, C{shutoff},
    C{missing}, ...), or C{unknown} when its PM cannot be reached; C{mac} is its NIC's
    stored MAC address, and C{ips} the addresses its guest has now (from the PM's DHCP
    leases or the guest agent: empty until the guest has one, or without a NIC).

    @raise Refused: no such VM.
    """
    rec = visible_vm(parts, vmid)
    state = "unknown"
    ips: list[str] = []
    if parts.hypervisors.is_up(rec.pmid):
        host = parts.hypervisors.on(rec.pmid)
        try:
            state = await host.vm_state(rec.domain)
            if state in ("running", "paused"):
                ips = await host.vm_addresses(rec.domain)
        except HypervisorError as e:
            log.warn("vm {vmid}: state or addresses unknown: {e}", vmid=vmid, e=e)
    return {
        "vmid": rec.vmid,
        "name": rec.name,
        "instance_type": rec.instance_type,
        "pmid": rec.pmid,
        "image_id": rec.image_id,
        "state": state,
        "domain": rec.domain,
        "mac": rec.mac,
        "ips": ips,
    }
