"""
The shared placement mechanism: which PMs can take a request, and in what order.

Capacity arithmetic and overcommit ratios are applied here, once, for every policy (by
the room rule of L{vorchd.room}); the policy only ranks what is left. Over the read
model (L{ranked}), a policy that provides L{IIndexedPolicy} ranks columns of numbers, so
a decision costs a few vector operations over the fleet; one that provides
L{IKeyedPolicy} has its first choice kept up to date by the table as PMs change
(L{vorchd.state.ranking}), so a decision costs about the same at any fleet size; any
other policy is handed L{Host} objects as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from attrs import evolve

from vorchd import room
from vorchd.model import Host, Resources
from vorchd.policies import Candidates, IAllocationPolicy, IIndexedPolicy, IKeyedPolicy, Request
from vorchd.state.model import FleetState
from vorchd.state.ranking import Rankings, Unranked
from vorchd.state.table import HostTable


def effective_capacity(host: Host, ratios: Mapping[str, float]) -> Resources:
    """
    What may be handed out on C{host}: its capacity times each overcommit ratio.
    """
    return room.effective(host.capacity, ratios)


def free(host: Host, ratios: Mapping[str, float]) -> Resources:
    """
    What is left on C{host} for new VMs (negative where a ratio was lowered).
    """
    return room.free(host.capacity, host.used, ratios)


def refusal(host: Host, request: Request, ratios: Mapping[str, float]) -> str | None:
    """
    Why C{host} cannot take C{request}, or C{None} if it can.
    """
    why = room.refusal(
        host.capacity, host.used, request.flavor.resources, ratios, host.up, host.drained
    )
    return None if why is None else str(why)


def candidates(
    policy: IAllocationPolicy,
    request: Request,
    hosts: Sequence[Host],
    ratios: Mapping[str, float],
) -> tuple[list[Host], dict[int, str]]:
    """
    The hosts to try for C{request}, best first, and why each other host was refused.
    """
    refused: dict[int, str] = {}
    fit = []
    for host in hosts:
        why = refusal(host, request, ratios)
        if why is None:
            fit.append(evolve(host, capacity=effective_capacity(host, ratios)))
        else:
            refused[host.pmid] = why
    return list(_rank(policy, request, fit)), refused


def _rank(policy: IAllocationPolicy, request: Request, fit: list[Host]) -> Iterator[Host]:
    """
    C{policy.rank} of the hosts that C{fit}, keeping only hosts it was offered, each
    once (a policy may drop hosts, never add any).
    """
    known = {h.pmid for h in fit}
    for host in policy.rank(request, fit):
        if host.pmid in known:
            known.discard(host.pmid)
            yield host


def ranked(
    policy: IAllocationPolicy, request: Request, state: FleetState, ratios: Mapping[str, float]
) -> Iterator[int]:
    """
    The pmids to try for C{request} on the fleet as C{state} holds it, best first,
    lazily: only the PMs that can take it (up, open, with room by the room rule).

    For a policy that provides L{IKeyedPolicy} the first is L{chosen}'s, from the
    ranking the table keeps (no pass over the fleet); the rest, wanted only when a claim
    loses a race, are the policy's C{order} over the table as it is when the second is
    asked for, without the first.
    """
    table = state.table
    keyed = IKeyedPolicy.providedBy(policy)
    if keyed:
        try:
            first = Rankings.of(table, policy, ratios).first(request)
        except Unranked:
            keyed = False
    if keyed:
        if first is None:
            return
        yield table.pmids[first]
        for i in _ordered(policy, request, table, ratios):
            if i != first:
                yield table.pmids[i]
    elif IIndexedPolicy.providedBy(policy):
        for i in _ordered(policy, request, table, ratios):
            yield table.pmids[i]
    else:
        fits = table.fits(request.flavor.resources, ratios)
        hosts = [table.host(int(i), ratios) for i in fits.nonzero()[0]]
        for host in _rank(policy, request, hosts):
            yield host.pmid


def _ordered(
    policy: IIndexedPolicy, request: Request, table: HostTable, ratios: Mapping[str, float]
) -> Iterator[int]:
    """
    The columns C{policy.order} ranks for C{request}, only those that fit, lazily.
    """
    fits = table.fits(request.flavor.resources, ratios)
    columns = Candidates(
        table.pmid,
        table.effective(ratios),
        table.inverse(ratios),
        table.used,
        table.vms,
        fits,
    )
    for i in policy.order(request, columns):
        if fits[i]:
            yield i


def chosen(
    policy: IAllocationPolicy, request: Request, state: FleetState, ratios: Mapping[str, float]
) -> int | None:
    """
    The first pmid L{ranked} yields, the PM a create tries first, or C{None} if no PM
    can take C{request}: for a keyed policy straight from the table's ranking.
    """
    if IKeyedPolicy.providedBy(policy):
        table = state.table
        try:
            first = Rankings.of(table, policy, ratios).first(request)
        except Unranked:
            pass
        else:
            return None if first is None else table.pmids[first]
    return next(ranked(policy, request, state, ratios), None)


def refusals(
    state: FleetState, request: Request, ratios: Mapping[str, float]
) -> dict[int, room.Refusal]:
    """
    Why each current PM that cannot take C{request} refuses it (for the failure's
    message, once placement has found nothing).
    """
    out = {}
    wanted = request.flavor.resources
    for pmid in state.pm_ids:
        pm = state.pms.get(pmid)
        if pm is None:
            continue
        why = room.refusal(pm.capacity, pm.used, wanted, ratios, state.is_up(pmid), pm.drained)
        if why is not None:
            out[pmid] = why
    return out
