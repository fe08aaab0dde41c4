"""
The live settings: the allocation policy and overcommit ratios in force now.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.logger import Logger

from vorchd.model import RESOURCES
from vorchd.policies import IAllocationPolicy, UnknownPolicy, policy_named
from vorchd.state.model import FleetState


class LiveSettings:
    """
    The ini's policy and ratios, overridden by what the live settings in Redis say (the
    admin port of any daemon sharing it changes them), read from the read model.
    """

    log = Logger()

    def __init__(
        self,
        policy: str,
        ratios: Mapping[str, float],
        policy_options: Mapping[str, str] | None = None,
    ):
        # What the ini says; the live values are in Redis (an admin may change them).
        self.ini = {
            "policy": policy,
            **{f"{r}_ratio": repr(float(v)) for r, v in ratios.items()},
        }
        self.policy_options = dict(policy_options or {})
        self._policy: IAllocationPolicy = policy_named(policy, self.policy_options)
        # The name the policy was last asked for by (a dotted path, say, is not the
        # policy's own name): it is loaded again only when that changes.
        self._asked = policy

    def current(self, state: FleetState) -> tuple[IAllocationPolicy, dict[str, float]]:
        """
        The policy and overcommit ratios in force now, as C{state} has the settings.
        """
        stored = state.settings
        name = stored.get("policy") or self.ini["policy"]
        if name != self._asked:
            self._asked = name
            try:
                self._policy = policy_named(name, self.policy_options)
            except (UnknownPolicy, ValueError) as e:
                # Set by a daemon that knows a policy this one does not: keep ours.
                self.log.warn(
                    "policy {name!r} unusable here, keeping {ours}: {e}",
                    name=name,
                    ours=self._policy.name,
                    e=e,
                )
        ratios = {}
        for r in RESOURCES:
            key = f"{r}_ratio"
            try:
                ratios[r] = float(stored.get(key) or self.ini[key])
            except ValueError:
                ratios[r] = float(self.ini[key])
        return self._policy, ratios
