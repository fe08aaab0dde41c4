"""
The shared placement mechanism: which PMs can take a request, and in what order.

Pure: capacity arithmetic and overcommit ratios are applied here, once, for every
policy; the policy only ranks what is left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from attrs import evolve

from vorchd.model import RESOURCES, Host, Resources
from vorchd.policies import IAllocationPolicy, Request
from vorchd.store import limit


def effective_capacity(host: Host, ratios: Mapping[str, float]) -> Resources:
    """
    What may be handed out on C{host}: its capacity times each overcommit ratio.
    """
    return Resources(*(limit(getattr(host.capacity, r), ratios[r]) for r in RESOURCES))


def free(host: Host, ratios: Mapping[str, float]) -> Resources:
    """
    What is left on C{host} for new VMs (negative where a ratio was lowered).
    """
    return effective_capacity(host, ratios) - host.used


def refusal(host: Host, request: Request, ratios: Mapping[str, float]) -> str | None:
    """
    Why C{host} cannot take C{request}, or C{None} if it can.
    """
    if not host.up:
        return "down"
    if host.drained:
        return "drained"
    room = free(host, ratios)
    wanted = request.flavor.resources
    short = [
        f"{r} ({getattr(wanted, r)} wanted, {getattr(room, r)} free)"
        for r in RESOURCES
        if getattr(room, r) < getattr(wanted, r)
    ]
    return "no room for " + ", ".join(short) if short else None


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
    known = {h.pmid for h in fit}
    ranked = [h for h in policy.rank(request, fit) if h.pmid in known]
    return ranked, refused
