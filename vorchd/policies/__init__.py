"""
Allocation policies: the algorithm half of placement.

A policy only ranks: it is handed the hosts that can take the request (up, not
drained, with room after the overcommit ratios) and says in which order to try them.
Capacity accounting, claims and retries are the mechanism's (L{vorchd.placement}).

An operator selects a policy by name in the C{[allocation]} section of the ini file;
the whole section is handed to the policy's factory as C{options} (a C{str -> str}
mapping), so a policy may define option keys of its own. The keys read here are:

  - C{policy}: the name of the policy (default C{first-fit}): a built-in one, one found
    by Twisted's plugin system, or a dotted path C{package.module:attr} (or
    C{package.module.attr}) to a policy object or a factory of one.
  - C{weights}, for C{weighted}, and C{seed}, for C{random}: see
    L{vorchd.policies.builtin}.
  - C{plugin_path}: see L{vorchd.policies.discovery}.

Third-party policies are found with C{twisted.plugin.getPlugins(IAllocationPolicy,
vorchd.plugins)}: drop a module defining an instance of a class declared
C{@implementer(IAllocationPolicy)} into a C{vorchd/plugins/} directory on
C{sys.path} (with no C{__init__.py}), or into a C{plugin_path} directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from attrs import frozen
from twisted.plugin import IPlugin
from zope.interface import Attribute

from vorchd.model import Flavor, Host, Resources


@frozen
class Request:
    """
    What a user asked for: an instance type, an image and a name.
    """

    flavor: Flavor
    image_id: int
    name: str


class IAllocationPolicy(IPlugin):
    """
    An ordering of candidate PMs for one request. Pure: no I/O, no reactor, no clock.

    It extends C{IPlugin} only so that Twisted's plugin system finds an object that
    declares this interface alone; it adds nothing to implement.
    """

    name = Attribute("The name an operator selects the policy by in the ini file.")

    def rank(request: Request, hosts: Sequence[Host]) -> Sequence[Host]:
        """
        Order C{hosts} best first for C{request}.

        Every host given can take the request; each host's C{capacity} is already
        scaled by the overcommit ratios, so its free room is C{capacity - used}. The
        policy may drop hosts it does not want but must not add any.
        """


class Candidates:
    """
    The fleet's PMs as columns (numpy arrays, in ascending pmid, so that the first of
    equals is the first in the pm_file's order), and which of them can take the request:
    C{pmid}; C{capacity} (already scaled by the overcommit ratios, as for
    L{IAllocationPolicy.rank}) and C{used}, one row per resource (cpu, ram, disk);
    C{inverse}, 1 / C{capacity} (0 where that is 0); C{vms}; and C{fits}, true for the
    PMs that can take it (up, open, with room).
    """

    def __init__(self, pmid, capacity, inverse, used, vms, fits):
        self.pmid = pmid
        self.capacity = capacity
        self.inverse = inverse
        self.used = used
        self.vms = vms
        self.fits = fits
        self._rows = None

    def rows(self):
        """
        The indices of the PMs that fit, ascending.
        """
        if self._rows is None:
            import numpy as np

            self._rows = np.flatnonzero(self.fits)
        return self._rows

    def __len__(self) -> int:
        return len(self.rows())

    def host(self, i: int) -> Host:
        """
        PM C{i} as a L{Host}.
        """
        return Host(
            pmid=int(self.pmid[i]),
            capacity=Resources(*map(int, self.capacity[:, i])),
            used=Resources(*map(int, self.used[:, i])),
            vms=int(self.vms[i]),
        )


class IIndexedPolicy(IAllocationPolicy):
    """
    A policy that can also rank candidates given as columns of numbers, so that a
    request costs a few vector operations rather than a Python object per PM: what
    every built-in policy does, for fleets of thousands of PMs. The mechanism uses
    C{order} where a policy provides this interface, and C{rank} otherwise; both
    follow the same rule (and give the same order, but for C{random}'s draws).
    """

    def order(request: Request, candidates: Candidates) -> Iterable[int]:
        """
        The indices of the PMs that fit (C{candidates.fits}), best first, and no other.
        It may be lazy: the mechanism takes only as many as it tries (usually one).
        """


class IKeyedPolicy(IIndexedPolicy):
    """
    An indexed policy whose order is by ascending key, the lower row (pmid) first among
    equal keys, where a PM's key is a pure function of that PM's own columns and the
    request's flavor: nothing about other PMs, no state, no clock. best-fit, worst-fit,
    weighted, least-vms and first-fit (every key 0) are such policies.

    For these the mechanism keeps, per policy, flavor and ratios, the PMs that fit in a
    heap by key, brought up to date only for the PMs that changed since it was last
    asked (L{vorchd.state.ranking}), so that finding the first choice costs about the
    same whatever the fleet's size. Its first choice is exactly the first index of
    C{order}; further candidates (wanted only when a claim loses a race) come from
    C{order} itself.
    """

    def keys(request: Request, candidates: Candidates):
        """
        Every PM's key at once, as a numpy array (one value per column; those of PMs
        that do not fit may be anything): what C{order} sorts by, compared as float64
        (as C{argmin} over them would). Where a key of a PM that fits is not finite, the
        mechanism leaves the rankings aside and uses C{order} for that flavor.
        """

    def row_key(
        request: Request,
    ) -> Callable[[Sequence[int], Sequence[float], Sequence[int], int], float]:
        """
        The key of one PM, as a function of its C{effective} capacity and its C{inverse}
        (1 / capacity, 0 where that is 0), C{used} (each a sequence cpu, ram, disk, as
        Python numbers) and C{vms}: exactly (bit for bit) the value C{keys} gives that
        PM. The mechanism asks for it once per policy, flavor resources and ratios, and
        calls it for each PM that changes, so it must depend on nothing else and be
        quick.
        """


class UnknownPolicy(LookupError):
    """
    No policy has the name asked for.
    """


class InvalidPolicy(UnknownPolicy, ValueError):
    """
    A dotted path was given that names no usable policy: it cannot be imported, or
    what it names (or returns) does not provide L{IAllocationPolicy}.
    """


def builtin_policies(options: Mapping[str, str] | None = None) -> dict[str, IAllocationPolicy]:
    """
    A new instance of every policy that ships with vorchd, by name.

    @param options: the C{[allocation]} section of the ini file.
    @raise ValueError: an option a built-in policy reads is malformed.
    """
    from vorchd.policies.builtin import BUILTIN

    options = options or {}
    return {name: make(options) for name, make in BUILTIN.items()}


def available_policies(options: Mapping[str, str] | None = None) -> list[str]:
    """
    The names of the built-in policies and of those the plugin system finds, sorted.

    @param options: the C{[allocation]} section of the ini file (for C{plugin_path}).
    @raise ValueError: C{plugin_path} names something that is not a directory.
    """
    from vorchd.policies.builtin import BUILTIN
    from vorchd.policies.discovery import plugin_policies

    return sorted(set(BUILTIN) | set(plugin_policies(options or {})))


def policy_named(name: str, options: Mapping[str, str] | None = None) -> IAllocationPolicy:
    """
    The policy an operator named, looked up among the built-in policies, then the
    plugins, then as a dotted path. A built-in policy is a new instance at each call,
    so state such as round-robin's position belongs to the caller.

    @param options: the C{[allocation]} section of the ini file.
    @raise UnknownPolicy: no such policy; the message lists the known ones.
    @raise InvalidPolicy: a dotted path that does not lead to a policy.
    @raise ValueError: an option the policy reads is malformed.
    """
    from vorchd.policies.builtin import BUILTIN
    from vorchd.policies.discovery import from_dotted_path, looks_dotted, plugin_policies

    options = options or {}
    if name in BUILTIN:
        return BUILTIN[name](options)
    plugins = plugin_policies(options)
    if name in plugins:
        return plugins[name]
    known = ", ".join(sorted(set(BUILTIN) | set(plugins)))
    if looks_dotted(name):
        try:
            return from_dotted_path(name, options)
        except InvalidPolicy:
            raise
        except UnknownPolicy as e:
            raise UnknownPolicy(f"{e}; known: {known}") from None
    raise UnknownPolicy(
        f"unknown allocation policy {name!r}; known: {known}"
        " (or a dotted path such as package.module:attr)"
    )
