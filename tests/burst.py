"""
A burst of creates through one URL (HAProxy's, in the HA tests and benchmark) from
client threads, each create's outcome timed, and the figure that matters: how long
creates failed around a kill.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request

from attrs import frozen


@frozen
class Outcome:
    """
    One create: when it was sent and answered (monotonic seconds), the vmid it
    answered (0: failed) and why it failed (the X-Vorchd-Reason header, or the error).
    """

    name: str
    start: float
    end: float
    vmid: int
    why: str = ""


class Burst:
    """
    C{threads} clients creating VMs through C{url} until L{stop}, each starting a create
    every C{pace} seconds (or as soon as its last one answered, if later).
    """

    def __init__(
        self,
        url: str,
        threads: int = 4,
        pace: float = 0.1,
        instance_type: int = 1,
        tag: str = "ha",
    ):
        self.url = url
        self.pace = pace
        self.threads = threads
        self.instance_type = instance_type
        self.tag = tag
        self.outcomes: list[Outcome] = []
        self._numbers = itertools.count()
        self._stopped = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> Burst:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> list[Outcome]:
        self._stopped.set()
        for worker in self._workers:
            worker.join(120)
        return self.outcomes

    def _run(self) -> None:
        while not self._stopped.is_set():
            outcome = self.create()
            with self._lock:
                self.outcomes.append(outcome)
            self._stopped.wait(max(0.0, outcome.start + self.pace - time.monotonic()))

    def create(self) -> Outcome:
        name = f"{self.tag}-{next(self._numbers)}"
        url = f"{self.url}/vm/create?name={name}&instance_type={self.instance_type}&image_id=1"
        start = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                answer = json.loads(r.read())
                why = r.headers.get("X-Vorchd-Reason", "")
        except (OSError, ValueError) as e:
            # HAProxy's 502/503, a reset connection, ...
            return Outcome(name, start, time.monotonic(), 0, f"{e.__class__.__name__}: {e}")
        vmid = answer.get("vmid", 0) if isinstance(answer, dict) else 0
        return Outcome(name, start, time.monotonic(), int(vmid or 0), why)

    def succeeded_since(self, t: float) -> int:
        """
        How many creates sent after C{t} succeeded.
        """
        with self._lock:
            return sum(1 for o in self.outcomes if o.start > t and o.vmid)

    def last_failure_end(self) -> float | None:
        with self._lock:
            failed = [o.end for o in self.outcomes if not o.vmid]
        return max(failed) if failed else None


def failure_window(outcomes: list[Outcome]) -> float:
    """
    How long creates failed: from the start of the first create that failed to the end
    of the last one (0 if none failed).
    """
    failed = [o for o in outcomes if not o.vmid]
    if not failed:
        return 0.0
    return max(o.end for o in failed) - min(o.start for o in failed)


def acked(outcomes: list[Outcome]) -> dict[int, str]:
    """
    The VMs the clients were told of: vmid -> name.
    """
    return {o.vmid: o.name for o in outcomes if o.vmid}


def summary(outcomes: list[Outcome], killed: float) -> str:
    failed = [o for o in outcomes if not o.vmid]
    reasons: dict[str, int] = {}
    for o in failed:
        key = o.why.split(":")[0][:60] or "(no reason)"
        reasons[key] = reasons.get(key, 0) + 1
    first = min((o.start for o in failed), default=killed) - killed
    return (
        f"{len(outcomes)} creates, {len(outcomes) - len(failed)} acknowledged,"
        f" {len(failed)} failed; failures from {first:+.2f} s of the kill for"
        f" {failure_window(outcomes):.2f} s; reasons: {reasons}"
    )
