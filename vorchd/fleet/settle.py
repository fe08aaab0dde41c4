"""
A change of a VM (a resize, a move: L{vorchd.fleet.move}) that no daemon is making any
more, ended by what the hypervisors say: the reconciler's part in resizes and moves.
"""

from __future__ import annotations

from vorchd.fleet.parts import Parts
from vorchd.state.model import VMRecord


async def settle_change(parts: Parts, rec: VMRecord) -> str | None:
    """
    End a change that no daemon is making any more (its daemon died, or Redis was
    down when it ended) by what the hypervisors say: a resize is done if the domain
    has the new flavor, a move if the guest is on the target and gone from the
    source; else it is undone (and a move's left-overs on the target removed). A
    move still under way at libvirt (the guest on both PMs) is left for a later round.

    @return: C{done} or C{undone}, or C{None} when left for later.
    @raise HypervisorError: a PM could not be asked.
    """
    hypervisors, fleet = parts.hypervisors, parts.fleet_id
    source, target = rec.pmid, rec.change_pmid
    if not (hypervisors.is_up(source) and hypervisors.is_up(target)):
        return None
    if rec.change_kind == "resize":
        metas = await hypervisors.on(source).fleet_domains(fleet)
        flavor = next((m.get("flavor") for m in metas if m["domain"] == rec.domain), None)
        done = flavor is not None and flavor.tid == rec.change_tid
    else:
        here = await hypervisors.on(source).vm_state(rec.domain)
        there = await hypervisors.on(target).vm_state(rec.domain)
        if here != "missing" and there != "missing":
            return None
        done = here == "missing" and there != "missing"
        shared = source in await hypervisors.on(target).pool_marks(fleet, target)
        if not shared:
            # The copy of the disk the guest is not using (half made, or left behind).
            leftover = source if done else target
            await hypervisors.on(leftover).destroy_vm(rec.domain, rec.volume)
    await parts.store.end_change(rec.vmid, rec.change_op, done)
    return "done" if done else "undone"
