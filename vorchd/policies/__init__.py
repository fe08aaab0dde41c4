"""
Allocation policies: the algorithm half of placement.

A policy only ranks: it is handed the hosts that can take the request (up, not
drained, with room after the overcommit ratios) and says in which order to try them.
Capacity accounting, claims and retries are the mechanism's (L{vorchd.placement}).
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen
from zope.interface import Attribute, Interface

from vorchd.model import Flavor, Host


@frozen
class Request:
    """
    What a user asked for: an instance type, an image and a name.
    """

    flavor: Flavor
    image_id: int
    name: str


class IAllocationPolicy(Interface):
    """
    An ordering of candidate PMs for one request. Pure: no I/O, no reactor, no clock.
    """

    name = Attribute("The name an operator selects the policy by in the ini file.")

    def rank(request: Request, hosts: Sequence[Host]) -> Sequence[Host]:
        """
        Order C{hosts} best first for C{request}.

        Every host given can take the request; each host's C{capacity} is already
        scaled by the overcommit ratios. The policy may drop hosts it does not want
        but must not add any.
        """


class UnknownPolicy(LookupError):
    """
    No policy has the name asked for.
    """


def builtin_policies() -> dict[str, IAllocationPolicy]:
    """
    The policies that ship with vorchd, by name.
    """
    from vorchd.policies.builtin import FirstFit

    return {p.name: p for p in (FirstFit(),)}


def policy_named(name: str) -> IAllocationPolicy:
    """
    The policy an operator named.

    @raise UnknownPolicy: no such policy; the message lists the known ones.
    """
    policies = builtin_policies()
    try:
        return policies[name]
    except KeyError:
        raise UnknownPolicy(
            f"unknown allocation policy {name!r}; known: {', '.join(sorted(policies))}"
        ) from None
