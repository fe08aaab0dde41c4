"""
The allocation policies that ship with vorchd.
"""

from __future__ import annotations

from collections.abc import Sequence

from zope.interface import implementer

from vorchd.model import Host
from vorchd.policies import IAllocationPolicy, Request


@implementer(IAllocationPolicy)
class FirstFit:
    """
    The PM listed first in the pm_file that has room: simple and predictable.
    """

    name = "first-fit"

    def rank(self, request: Request, hosts: Sequence[Host]) -> Sequence[Host]:
        return sorted(hosts, key=lambda h: h.pmid)
