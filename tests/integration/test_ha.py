"""
No single point of failure: two daemons behind a real HAProxy, sharing a Redis master
and replica watched by three real Sentinels; a burst of creates through HAProxy while
the Redis master, or one daemon, is killed with kill -9.

libvirt's test driver keeps a PM's domains in the connection that made them: a VM's
domain lives in the daemon that created it (both daemons of the master-kill test run in
this process, so both are read; the killed daemon's domains die with it).
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.burst import Burst, acked, failure_window, summary
from tests.ha import HAProxy, ReplicatedRedis, wait_for
from tests.harness import (
    FLAVORS,
    REPO,
    Daemon,
    daemon_domains,
    free_port,
    get_json,
    tmpdir,
    twistd_command,
    unique_prefix,
    wait_answering,
    write_fleet,
)
from vorchd.bootimage import write_image

SIZES = [(256, 262144)] * 8  # 100 GiB test pools: 800 one-GiB VMs in all
FLAVOR = {f["tid"]: f for f in FLAVORS}


def ha_daemon(directory, url: str, prefix: str, uris) -> Daemon:
    """
    A daemon as in the HA example: acknowledged changes on a replica, short leases and
    frequent reconciliation (so that a dead daemon's claims go soon).
    """
    # One image line for all: the daemons share the fleet's inventory.
    image = Path(directory).parent / "hello.img"
    if not image.exists():
        write_image(image)
    daemon = Daemon(directory, url, prefix, uris, image_lines=[str(image)])
    text = daemon.ini.read_text()
    text = text.replace("[server]\n", "[server]\nlease = 2\nreconcile_interval = 1\n")
    text = text.replace("[redis]\n", "[redis]\nmin_replicas_acked = 1\n")
    daemon.ini.write_text(text)
    return daemon


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


def vm_states(node_port: int, prefix: str) -> dict[int, str]:
    """
    Every VM record on the Redis at C{node_port}: vmid -> state.
    """
    keys = subprocess.run(
        ["redis-cli", "-p", str(node_port), "--scan", "--pattern", f"{prefix}:vm:*"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    out = {}
    for key in keys:
        tail = key.rsplit(":", 1)[1]
        if not tail.isdigit():
            continue
        state = subprocess.run(
            ["redis-cli", "-p", str(node_port), "HGET", key, "state"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        out[int(tail)] = state
    return out


CLAIMS_LUA = """
local out = {}
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
  if redis.call('TYPE', k).ok == 'hash' and redis.call('HGET', k, 'state') == 'creating' then
    table.insert(out, k)
    table.insert(out, redis.call('HGET', k, 'owner') or '')
  end
end
return out
"""


def claims(port: int, prefix: str) -> dict[int, str]:
    """
    The claims (VMs C{creating}) on the Redis at C{port}, in one call: vmid -> owner.
    """
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "EVAL", CLAIMS_LUA, "0", f"{prefix}:vm:*"],
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    pairs = zip(out[0::2], out[1::2], strict=False)
    return {
        int(k.rpartition(":")[2]): owner for k, owner in pairs if k.rpartition(":")[2].isdigit()
    }


def kill_mid_create(proc: subprocess.Popen, port: int, prefix: str, survivor: str) -> int:
    """
    Freeze C{proc} (SIGSTOP) until the Redis at C{port} shows a claim of it (a VM
    C{creating} whose owner is not C{survivor}), then kill it with SIGKILL; that claim's
    vmid. Tries for up to 30 s, then kills it anyway (0: no claim was caught).
    """
    end = time.monotonic() + 30
    while True:
        proc.send_signal(signal.SIGSTOP)
        theirs = [vmid for vmid, owner in claims(port, prefix).items() if owner != survivor]
        if theirs or time.monotonic() > end:
            proc.send_signal(signal.SIGKILL)
            return theirs[0] if theirs else 0
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)


def read_answers(url: str, vmids) -> dict:
    """
    What C{url} answers now: each VM's query, the PM list, each PM's query and VMs.
    """
    out = {"vm": {v: get_json(f"{url}/vm/query?vmid={v}") for v in vmids}, "pm": {}}
    for pmid in get_json(f"{url}/pm/list")["pmids"]:
        out["pm"][pmid] = (
            get_json(f"{url}/pm/query?pmid={pmid}"),
            get_json(f"{url}/pm/listvms?pmid={pmid}")["vmids"],
        )
    return out


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as r:
        return r.read().decode()


def reason_of(url: str) -> str:
    """
    The X-Vorchd-Reason header of C{url}'s answer.
    """
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.headers.get("X-Vorchd-Reason", "")


class HATestsMixin:
    timeout = 240

    def check_room(self, answers: dict, vm_flavors: dict[int, int]) -> None:
        """
        No PM gives more than it has: its free room is its capacity minus its VMs'
        flavors, and never below zero.
        """
        for pmid, (query, vmids) in answers["pm"].items():
            for r in ("cpu", "ram", "disk"):
                used = sum(FLAVOR[vm_flavors[v]][r] for v in vmids)
                self.assertEqual(query["free"][r], query["capacity"][r] - used, (pmid, r))
                self.assertGreaterEqual(query["free"][r], 0, (pmid, r))
            self.assertEqual(query["vms"], len(vmids))

    async def settled(self, port: int, prefix: str, deadline: float = 60) -> dict[int, str]:
        """
        The VM records once no claim is left half-done (every create answered, undone
        or rolled back).
        """
        end = time.monotonic() + deadline
        while True:
            states = await deferToThread(vm_states, port, prefix)
            if "creating" not in states.values() or time.monotonic() > end:
                return states
            await sleep(0.2)


class MasterKillTests(HATestsMixin, TestCase):
    """
    The Redis master killed with kill -9 in the middle of a burst of creates.
    """

    async def test_master_killed_mid_burst(self):
        """
        Sentinel promotes the replica and both daemons follow it: every create that
        answered a vmid is there afterwards (on both daemons, its domain running on its
        PM, its room counted), no PM is oversubscribed, every create that failed left
        nothing behind (no record, no domain), and the old master, restarted, rejoins
        as a replica with every acknowledged VM. Prints how long creates failed.
        """
        # Two replicas: with min_replicas_acked = 1 the new master needs one of its own
        # to acknowledge creates before the old master is back.
        redis = await deferToThread(ReplicatedRedis, self, 2)
        directory = tmpdir(self)
        uris = write_fleet(directory, SIZES)
        prefix = unique_prefix()
        daemons = [ha_daemon(directory / n, redis.url(), prefix, uris) for n in "ab"]
        for daemon in daemons:
            await daemon.start()
            self.addCleanup(daemon.stop)
            await deferToThread(wait_answering, daemon.url)
        ports = [int(d.url.rsplit(":", 1)[1]) for d in daemons]
        proxy = await deferToThread(HAProxy, self, ports)

        burst = Burst(proxy.url, threads=4).start()
        self.addCleanup(burst.stop)
        await sleep(1.0)
        old = redis.master
        killed = time.monotonic()
        await deferToThread(old.kill)
        await deferToThread(redis.wait_new_master, old.port)
        # Until creates have gone through for 2 s in a row after the last failure.
        while True:
            last = burst.last_failure_end() or killed
            if time.monotonic() - max(last, killed) > 2.0 and burst.succeeded_since(last):
                break
            if time.monotonic() - killed > 60:
                self.fail(f"creates never succeeded again: {summary(burst.stop(), killed)}")
            await sleep(0.1)
        outcomes = await deferToThread(burst.stop)
        print(f"\nmaster kill: {summary(outcomes, killed)}")
        print(f"master kill: creates failed for {failure_window(outcomes):.2f} s (target < 5 s)")
        told = acked(outcomes)
        self.assertTrue(told)

        states = await self.settled(redis.master.port, prefix)
        # Every acknowledged VM is there, and nothing else: a failed create left no record.
        self.assertEqual(sorted(states), sorted(told))
        self.assertNotIn("creating", states.values())
        flavors = {v: 1 for v in told}
        for daemon in daemons:
            answers = await deferToThread(read_answers, daemon.url, sorted(told))
            for vmid, name in told.items():
                self.assertEqual(answers["vm"][vmid]["name"], name)
                self.assertEqual(answers["vm"][vmid]["instance_type"], 1)
            self.check_room(answers, flavors)
        # Its domain runs on its PM (in the daemon that made it), and no domain is left
        # of a failed create.
        domains: dict[int, tuple[int, bool]] = {}
        for daemon in daemons:
            for pmid in range(1, len(SIZES) + 1):
                for meta in (await daemon_domains(daemon, pmid)).values():
                    self.assertNotIn(meta["vmid"], domains, "a VM's domain made twice")
                    domains[meta["vmid"]] = (pmid, meta["running"])
        self.assertEqual(
            {v: (answers["vm"][v]["pmid"], True) for v in told},
            domains,
        )

        # Each daemon says it followed one failover.
        for daemon in daemons:
            metrics = await deferToThread(metrics_text, daemon.url)
            self.assertIn("\nvorchd_store_failovers_total 1\n", metrics)

        # The old master comes back: it becomes a replica of the new one, with every VM.
        await deferToThread(old.start)
        await deferToThread(
            wait_for,
            "the old master to rejoin as a replica",
            lambda: (
                old.role() == "slave" and "master_link_status:up" in old.ask("INFO", "replication")
            ),
            60,
        )
        await deferToThread(
            wait_for,
            "the old master to have every VM",
            # (Their states may change meanwhile: each daemon marks the other's
            # test-driver domains missing, as it cannot see them.)
            lambda: set(vm_states(old.port, prefix)) == set(states),
        )
        # And with a replica again, creates are acknowledged again.
        answer = await deferToThread(
            get_json, f"{proxy.url}/vm/create?name=after&instance_type=1&image_id=1"
        )
        self.assertTrue(answer["vmid"])


class DaemonKillTests(HATestsMixin, TestCase):
    """
    One of the two daemons behind HAProxy killed with kill -9 in the middle of a burst.
    """

    def spawn(self, daemon: Daemon, port: int) -> subprocess.Popen:
        argv, env = twistd_command(daemon.ini, port)
        proc = subprocess.Popen(
            argv, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        return proc

    async def test_daemon_killed_mid_burst(self):
        """
        HAProxy stops sending to the killed daemon and the other serves every create;
        every create that answered a vmid is there afterwards, the killed daemon's
        half-done claims are rolled back by the other's reconciler, no PM is
        oversubscribed. Prints how long creates failed.
        """
        redis = await deferToThread(ReplicatedRedis, self)
        directory = tmpdir(self)
        uris = write_fleet(directory, SIZES)
        prefix = unique_prefix()
        survivor = ha_daemon(directory / "a", redis.url(), prefix, uris)
        await survivor.start()
        self.addCleanup(survivor.stop)
        victim = ha_daemon(directory / "b", redis.url(), prefix, uris)
        victim_port = free_port()
        proc = self.spawn(victim, victim_port)
        victim_url = f"http://127.0.0.1:{victim_port}"
        for url in (survivor.url, victim_url):
            await deferToThread(wait_answering, url, None, 90)
        ports = [int(survivor.url.rsplit(":", 1)[1]), victim_port]
        proxy = await deferToThread(HAProxy, self, ports)

        rolled_back = []

        def observe(event):
            if "rolled back a claim" in event.get("log_format", ""):
                rolled_back.append(event.get("vmid"))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        burst = Burst(proxy.url, threads=4).start()
        self.addCleanup(burst.stop)
        await sleep(1.5)
        # Kill it with a create half-done (claimed, not committed), as a crash would
        # most often find it: freeze it, look, and kill it if it has one.
        half_done = await deferToThread(
            kill_mid_create, proc, redis.master.port, prefix, survivor.fleet.daemon_id
        )
        killed = time.monotonic()
        await deferToThread(proc.wait)
        await deferToThread(
            wait_for,
            "HAProxy to take the killed daemon out",
            lambda: proxy.server_states().get("vorchd2", "").startswith("DOWN"),
        )
        await sleep(2.0)
        outcomes = await deferToThread(burst.stop)
        print(f"\ndaemon kill: {summary(outcomes, killed)}")
        print(f"daemon kill: creates failed for {failure_window(outcomes):.2f} s (target < 2 s)")
        told = acked(outcomes)
        # Once HAProxy has it out, every create goes to the survivor and succeeds.
        after = [o for o in outcomes if o.start > killed + 1.5]
        self.assertTrue(after)
        self.assertTrue(all(o.vmid for o in after), [o for o in after if not o.vmid][:3])

        # The killed daemon's lease runs out (2 s), then the survivor rolls back its
        # claims.
        states = await self.settled(redis.master.port, prefix)
        print(f"daemon kill: the survivor rolled back the killed daemon's claims {rolled_back}")
        self.assertNotIn("creating", states.values())
        self.assertLessEqual(set(told), set(states))
        self.assertFalse(set(rolled_back) & set(told))
        self.assertIn(half_done, rolled_back)
        # What is there but was never acknowledged: creates the killed daemon had
        # committed and not answered yet (at most one per client).
        self.assertLessEqual(len(set(states) - set(told)), burst.threads)
        answers = await deferToThread(read_answers, survivor.url, sorted(states))
        for vmid, name in told.items():
            self.assertEqual(answers["vm"][vmid]["name"], name)
        self.check_room(answers, {v: 1 for v in states})
        # The survivor's own VMs run on their PMs; it has no domain of a failed create.
        mine = {}
        for pmid in range(1, len(SIZES) + 1):
            for meta in (await daemon_domains(survivor, pmid)).values():
                mine[meta["vmid"]] = pmid
                self.assertTrue(meta["running"])
        for vmid, pmid in mine.items():
            self.assertIn(vmid, states)
            self.assertEqual(answers["vm"][vmid]["pmid"], pmid)


class SilentReplicaTests(HATestsMixin, TestCase):
    """
    A daemon with min_replicas_acked = 1 whose replica stops answering (SIGSTOP).
    """

    async def test_unconfirmed_create_and_destroy(self):
        """
        A create no replica confirms answers {"vmid": 0} and leaves nothing behind (no
        record, no domain); a destroy no replica confirms answers {"status": 0}, though
        its domain is gone and the VM is gone from the master's answers. Once the
        replica answers again, both succeed.
        """
        redis = await deferToThread(ReplicatedRedis, self)
        directory = tmpdir(self)
        uris = write_fleet(directory, SIZES[:1])
        prefix = unique_prefix()
        daemon = ha_daemon(directory / "a", redis.url(), prefix, uris)
        await daemon.start()
        self.addCleanup(daemon.stop)
        await deferToThread(wait_answering, daemon.url)
        create = f"{daemon.url}/vm/create?name=x&instance_type=1&image_id=1"
        kept = (await deferToThread(get_json, create))["vmid"]
        self.assertTrue(kept)
        replica = redis.nodes[1]
        replica.proc.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: replica.proc.send_signal(signal.SIGCONT))
        self.assertEqual(await deferToThread(get_json, create), {"vmid": 0})
        reason = await deferToThread(reason_of, create)
        self.assertIn("too few replicas confirmed", reason)
        destroyed = await deferToThread(get_json, f"{daemon.url}/vm/destroy?vmid={kept}")
        self.assertEqual(destroyed, {"status": 0})
        self.assertEqual(await deferToThread(get_json, f"{daemon.url}/vm/query?vmid={kept}"), 0)
        replica.proc.send_signal(signal.SIGCONT)
        states = await self.settled(redis.master.port, prefix)
        self.assertEqual(states, {})
        self.assertEqual(await daemon_domains(daemon, 1), {})
        vmid = (await deferToThread(get_json, create))["vmid"]
        self.assertTrue(vmid)
        self.assertEqual(
            await deferToThread(get_json, f"{daemon.url}/vm/destroy?vmid={vmid}"), {"status": 1}
        )
