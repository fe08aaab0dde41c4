"""
Real parts for the high-availability tests and benchmark: a replicated Redis (a master
and replicas) watched by three real redis-sentinel processes, and a real HAProxy in
front of several daemons; each in a temp dir, on free loopback ports, with config files
written from the templates vorchd ships in etc/ (so the tests run what operators run).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from tests.harness import REPO, free_port, require

ETC = REPO / "etc"


def _which(name: str) -> str:
    exe = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    require(None if exe else f"{name} is not installed (run ./install.sh test)")
    return exe


def _ask(port: int, *command: str, timeout: float = 1.0, password: str | None = None) -> str:
    """
    One command to the Redis or Sentinel on C{port} with redis-cli: its answer, or ""
    if it does not answer.
    """
    env = {**os.environ, "REDISCLI_AUTH": password} if password else None
    try:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return ""
    return out.stdout.strip()


def wait_for(what: str, check, deadline: float = 30.0, every: float = 0.05):
    """
    Poll C{check()} until it returns something true, and return that; fail after
    C{deadline} seconds, saying C{what} was waited for.
    """
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what} after {deadline} s")


class Node:
    """
    One redis-server (a master or a replica) with a config file of its own, which
    Sentinel rewrites when it changes the node's role. Restartable on its port, with its
    data (AOF) kept.
    """

    def __init__(
        self, directory: Path, replica_of: int | None = None, password: str | None = None
    ):
        self.port = free_port()
        self.password = password
        self.dir = directory / f"redis-{self.port}"
        self.dir.mkdir(parents=True)
        self.conf = self.dir / "redis.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f'dir "{self.dir}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "loglevel warning",
            f'logfile "{self.dir}/redis.log"',
        ]
        if replica_of is not None:
            lines.append(f"replicaof 127.0.0.1 {replica_of}")
        if password:
            lines += [f"requirepass {password}", f"masterauth {password}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Node:
        self.proc = subprocess.Popen(
            [_which("redis-server"), str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(f"redis on {self.port}", lambda: self.ask("PING") == "PONG", 10)
        return self

    def ask(self, *command: str) -> str:
        return _ask(self.port, *command, password=self.password)

    def role(self) -> str:
        return self.ask("ROLE").split("\n", 1)[0]

    def kill(self) -> None:
        """
        kill -9: no shutdown, no last fsync.
        """
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Sentinel:
    """
    One redis-sentinel watching the master C{name}, from the config template in etc/.
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        master_port: int,
        down_after_ms: int,
        password: str | None = None,
    ):
        self.port = free_port()
        self.dir = directory / f"sentinel-{self.port}"
        self.dir.mkdir(parents=True)
        self.conf = self.dir / "sentinel.conf"
        template = (ETC / "ha" / "sentinel.conf").read_text()
        self.conf.write_text(
            template.replace("@PORT@", str(self.port))
            .replace("@DIR@", str(self.dir))
            .replace("@BIND@", "127.0.0.1")
            .replace("@MASTER_NAME@", name)
            .replace("@MASTER_HOST@", "127.0.0.1")
            .replace("@MASTER_PORT@", str(master_port))
            .replace("@QUORUM@", "2")
            .replace("@DOWN_AFTER_MS@", str(down_after_ms))
            # What the README says to add for a Redis with a password.
            + (f"sentinel auth-pass {name} {password}\n" if password else "")
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> Sentinel:
        self.proc = subprocess.Popen(
            [_which("redis-sentinel"), str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(f"sentinel on {self.port}", lambda: _ask(self.port, "PING") == "PONG", 10)
        return self

    def master(self, name: str) -> int | None:
        """
        The port of the master this Sentinel names now.
        """
        out = _ask(self.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name).split()
        return int(out[1]) if len(out) == 2 else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class ReplicatedRedis:
    """
    A master, C{replicas} replicas and three Sentinels (quorum 2) on loopback, torn down
    with C{testcase}; the Redis servers with C{password}, if given.
    """

    name = "vorchd"

    def __init__(
        self,
        testcase,
        replicas: int = 1,
        down_after_ms: int = 1000,
        password: str | None = None,
    ):
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="vorchd-ha-"))
        testcase.addCleanup(shutil.rmtree, self.dir, True)
        testcase.addCleanup(self.stop)
        self.master = Node(self.dir, password=password).start()
        self.nodes = [self.master]
        for _ in range(replicas):
            self.nodes.append(Node(self.dir, self.master.port, password).start())
        wait_for(
            "the replicas to sync",
            lambda: all(
                "master_link_status:up" in n.ask("INFO", "replication") for n in self.nodes[1:]
            ),
        )
        self.sentinels = [
            Sentinel(self.dir, self.name, self.master.port, down_after_ms, password).start()
            for _ in range(3)
        ]
        # Every Sentinel must know the replicas and the other Sentinels before a
        # failover can happen (they learn them within a few seconds through the master).
        wait_for(
            "the Sentinels to know each other and the replicas",
            lambda: all(self._sentinel_ready(s) for s in self.sentinels),
        )

    def _sentinel_ready(self, sentinel: Sentinel) -> bool:
        fields = _ask(sentinel.port, "SENTINEL", "MASTER", self.name).split("\n")
        info = dict(zip(fields[::2], fields[1::2], strict=False))
        return (
            int(info.get("num-slaves", 0)) >= len(self.nodes) - 1
            and int(info.get("num-other-sentinels", 0)) >= len(self.sentinels) - 1
        )

    def url(self, password: str | None = None) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis+sentinel://{auth}{hosts}/{self.name}/0"

    def master_port(self) -> int | None:
        """
        The master as a majority of the Sentinels name it now.
        """
        named = [s.master(self.name) for s in self.sentinels]
        for port in named:
            if port is not None and named.count(port) >= 2:
                return port
        return None

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def wait_new_master(self, old: int, deadline: float = 30.0) -> Node:
        """
        Wait until the Sentinels name another master than C{old} and it says it is one.
        """
        port = wait_for(
            "a new master",
            lambda: (
                (p := self.master_port()) not in (None, old)
                and self.node(p).role() == "master"
                and p
            ),
            deadline,
        )
        self.master = self.node(port)
        return self.master

    def stop(self) -> None:
        for part in [*self.sentinels, *self.nodes]:
            part.stop()


class HAProxy:
    """
    A real HAProxy on a free port in front of daemons, from the template in etc/.
    """

    def __init__(self, testcase, backends: list[int]):
        self.port = free_port()
        self.stats_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vorchd-haproxy-"))
        testcase.addCleanup(shutil.rmtree, self.dir, True)
        testcase.addCleanup(self.stop)
        self.conf = self.dir / "haproxy.cfg"
        self.conf.write_text(haproxy_config(self.port, backends, self.stats_port, self.dir))
        self.proc = subprocess.Popen(
            [_which("haproxy"), "-db", "-f", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for(f"haproxy on {self.port}", self._listening, 10)

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"haproxy exited: {self.proc.stderr.read().decode()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def server_states(self) -> dict[str, str]:
        """
        Each daemon's state as HAProxy sees it (UP, DOWN, ...), by its server name.
        """
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5
        ) as r:
            rows = r.read().decode().splitlines()
        header = rows[0].lstrip("# ").split(",")
        out = {}
        for row in rows[1:]:
            cells = dict(zip(header, row.split(","), strict=False))
            if cells.get("pxname") == "vorchd" and cells.get("svname") not in (
                "FRONTEND",
                "BACKEND",
            ):
                out[cells["svname"]] = cells["status"]
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def haproxy_config(port: int, backends: list[int], stats_port: int, directory: Path) -> str:
    """
    etc/ha/haproxy.cfg for daemons on loopback C{backends}, listening on C{port}, with
    its statistics (CSV) on C{stats_port}.
    """
    template = (ETC / "ha" / "haproxy.cfg").read_text()
    servers = "\n".join(
        f"    server vorchd{i} 127.0.0.1:{p} check" for i, p in enumerate(backends, 1)
    )
    return (
        template.replace("@BIND@", f"127.0.0.1:{port}")
        .replace("@STATS_BIND@", f"127.0.0.1:{stats_port}")
        .replace("@SERVERS@", servers)
        .replace("@DIR@", str(directory))
    )
