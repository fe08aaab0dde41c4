"""
Generated workloads: Poisson arrivals of a flavor mix, living a drawn lifetime.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from attrs import frozen

from vorchd.model import RESOURCES, Flavor, Resources
from vorchd.sim.fleet import SimError
from vorchd.sim.traces import (  # noqa: F401
    AZURE_COLUMNS,
    DEFAULT_FLAVORS,
    DEFAULT_MIX,
    Trace,
    _catalog,
    _fail,
    _from_lifetimes,
    _number,
    _read_rows,
    _text,
)


@frozen
class Lifetime:
    """
    A distribution of VM lifetimes in seconds, by its C{kind} and C{mean}:

      - C{exp:MEAN}: exponential;
      - C{lognormal:MEAN,SIGMA}: log-normal with that mean and shape (heavy-tailed, as
        measured clouds are);
      - C{uniform:LOW,HIGH};
      - C{fixed:SECONDS}.
    """

    kind: str
    mean: float
    spread: float = 0.0

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """
        C{n} lifetimes.
        """
        if self.kind == "exp":
            return rng.exponential(self.mean, n)
        if self.kind == "lognormal":
            mu = math.log(self.mean) - self.spread**2 / 2
            return rng.lognormal(mu, self.spread, n)
        if self.kind == "uniform":
            half = self.spread
            return rng.uniform(self.mean - half, self.mean + half, n)
        return np.full(n, self.mean)


def parse_lifetime(text: str) -> Lifetime:
    """
    A L{Lifetime} from its text (C{"exp:3600"}, C{"lognormal:3600,1.5"},
    C{"uniform:60,7200"}, C{"fixed:600"}).

    @raise SimError: it is not one of those.
    """
    kind, _, args = text.strip().partition(":")
    kind = kind.lower()
    try:
        numbers = [float(a) for a in args.split(",")] if args.strip() else []
    except ValueError:
        numbers = []
        kind = ""
    wanted = {"exp": 1, "fixed": 1, "lognormal": 2, "uniform": 2}
    if (
        kind not in wanted
        or len(numbers) != wanted[kind]
        or not all(math.isfinite(x) and x >= 0 for x in numbers)
    ):
        raise SimError(
            f"--lifetime {text!r}: expected exp:MEAN, lognormal:MEAN,SIGMA, uniform:LOW,HIGH"
            " or fixed:SECONDS (seconds, numbers >= 0)"
        )
    if kind == "uniform":
        low, high = numbers
        if high < low:
            raise SimError(f"--lifetime {text!r}: HIGH is below LOW")
        return Lifetime(kind, (low + high) / 2, (high - low) / 2)
    if numbers[0] <= 0:
        raise SimError(f"--lifetime {text!r}: the mean must be positive")
    return Lifetime(kind, numbers[0], numbers[1] if kind == "lognormal" else 0.0)


def parse_mix(text: str, flavors: Sequence[Flavor]) -> dict[int, float]:
    """
    A flavor mix C{"1:0.5, 2:0.3, 3:0.2"} (tid:weight; weights need not add up to 1).

    @raise SimError: it is malformed or names a tid not in C{flavors}.
    """
    known = {f.tid for f in flavors}
    mix: dict[int, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        tid, colon, weight = item.partition(":")
        try:
            t, w = int(tid), float(weight)
        except ValueError:
            raise SimError(f"--mix {text!r}: {item.strip()!r} is not TID:WEIGHT") from None
        if not colon or not math.isfinite(w) or w < 0:
            raise SimError(f"--mix {text!r}: {item.strip()!r} is not TID:WEIGHT (>= 0)")
        if t not in known:
            raise SimError(f"--mix {text!r}: no flavor {t} (tids {sorted(known)})")
        mix[t] = w
    if not mix or sum(mix.values()) <= 0:
        raise SimError(f"--mix {text!r}: no weight above 0")
    return mix


def default_mix(flavors: Sequence[Flavor]) -> dict[int, float]:
    """
    L{DEFAULT_MIX} for L{DEFAULT_FLAVORS}, else every flavor equally often.
    """
    if tuple(flavors) == DEFAULT_FLAVORS:
        return dict(DEFAULT_MIX)
    return {f.tid: 1.0 for f in flavors}


def mean_flavor(flavors: Sequence[Flavor], mix: Mapping[int, float]) -> dict[str, float]:
    """
    What a VM of C{mix} asks for on average, per resource.
    """
    total = sum(mix.values())
    return {
        r: sum(w * getattr(f, r) for f in flavors for t, w in mix.items() if f.tid == t) / total
        for r in RESOURCES
    }


def offered_rate(
    room: Resources,
    flavors: Sequence[Flavor],
    mix: Mapping[int, float],
    lifetime: Lifetime,
    load: float,
) -> float:
    """
    The arrival rate (per second) at which, on average, the VMs alive at once (rate x
    mean lifetime, by Little's law) would take C{load} times C{room} of the resource that
    runs out first.
    """
    mean = mean_flavor(flavors, mix)
    fits = [getattr(room, r) / mean[r] for r in RESOURCES if mean[r] > 0]
    alive = max(load * min(fits), 1.0) if fits else 1.0
    return alive / lifetime.mean


def generate(
    events: int,
    flavors: Sequence[Flavor],
    mix: Mapping[int, float],
    rate: float,
    lifetime: Lifetime,
    seed: int,
) -> Trace:
    """
    C{events} events of VMs arriving as a Poisson process of C{rate} per second, each of
    a flavor drawn from C{mix} and living a lifetime drawn from C{lifetime}: the first
    C{events} of their creates and destroys in time order. The same arguments give the
    same trace.
    """
    if events < 0:
        raise SimError(f"--generate {events}: a number of events >= 0")
    if rate <= 0 or not math.isfinite(rate):
        raise SimError(f"arrival rate {rate}: must be a positive number")
    rng = np.random.default_rng(seed)
    tids = [t for t in mix if mix[t] > 0]
    index = {f.tid: i for i, f in enumerate(flavors)}
    weights = np.array([mix[t] for t in tids], dtype=np.float64)
    choice = np.array([index[t] for t in tids], dtype=np.int64)
    # No more arrivals than events can be among the first events.
    n = events
    start = np.cumsum(rng.exponential(1.0 / rate, n))
    end = start + lifetime.draw(rng, n)
    flavor = choice[rng.choice(len(tids), size=n, p=weights / weights.sum())]
    return _from_lifetimes(
        start, end, flavor, flavors, source=f"generated (seed {seed})", limit=events
    )
