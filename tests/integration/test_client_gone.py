"""
A client that hangs up while its create or destroy is under way does not cut the work
short: the create finishes (the VM then exists and is listed, its room counted once) and
leaves no claim behind; the destroy finishes too.
"""

from __future__ import annotations

from twisted.internet import protocol, reactor, task
from twisted.trial.unittest import TestCase

from tests.clients import LoopbackClient
from tests.harness import start_daemon
from vorchd.hypervisor.fake import Gate

SIZES = [(4, 4096), (4, 4096)]


class Hangup(protocol.Protocol):
    """
    Sends one request and never reads the answer.
    """

    def __init__(self, request: bytes):
        self.request = request

    def connectionMade(self):
        self.transport.write(self.request)


class ClientGoneTests(TestCase):
    """
    A daemon over two in-memory PMs, whose hypervisor calls a test holds at a gate.
    """

    async def setUp(self):
        self.daemon = await start_daemon(self, SIZES, fake=True)
        self.client = LoopbackClient(self.daemon)
        self.addCleanup(self.client.close)
        hypervisors = self.daemon.fleet.hypervisors
        self.pms = [hypervisors.host(pmid) for pmid in range(1, len(SIZES) + 1)]

    async def json(self, path: str):
        return (await self.client.call(path)).json

    async def hang_up_during(self, path: str, method: str) -> None:
        """
        Send C{path} and close the connection while its hypervisor call of C{method} is
        held.
        """
        gate = Gate(limit=1)
        self.addCleanup(gate.release)
        for pm in self.pms:
            pm.gates[method] = gate
        port = int(self.daemon.url.rsplit(":", 1)[1])
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        creator = protocol.ClientCreator(reactor, Hangup, request)
        conn = await creator.connectTCP("127.0.0.1", port)
        for _ in range(1000):
            if gate.held:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(gate.held, 1, "the call never reached the hypervisor")
        conn.transport.loseConnection()
        # Let the server notice the client is gone before the hypervisor answers.
        await task.deferLater(reactor, 0.2, lambda: None)
        gate.release()

    async def settled(self, condition) -> None:
        for _ in range(1000):
            if await condition():
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        self.fail("never settled")

    async def test_create_finishes_when_client_hangs_up(self):
        """
        The VM is made, listed once, its room counted, and Redis holds no claim still
        "creating".
        """
        await self.hang_up_during("/vm/create?name=orphan&instance_type=1&image_id=1", "create_vm")
        store = self.daemon.fleet.store

        async def made():
            vmids = await store.all_vmids()
            return vmids and (await store.vm(vmids[0]))["state"] == "active"

        await self.settled(made)
        [vmid] = await store.all_vmids()
        self.assertEqual((await self.json(f"/vm/query?vmid={vmid}"))["name"], "orphan")
        pmid = (await self.json(f"/vm/query?vmid={vmid}"))["pmid"]
        self.assertEqual(await self.json(f"/pm/listvms?pmid={pmid}"), {"vmids": [vmid]})
        pm = await self.json(f"/pm/query?pmid={pmid}")
        self.assertEqual(pm["free"]["cpu"], pm["capacity"]["cpu"] - 1)
        self.assertEqual(await self.json(f"/vm/destroy?vmid={vmid}"), {"status": 1})

    async def test_destroy_finishes_when_client_hangs_up(self):
        """
        The VM is gone from every answer and its room is back.
        """
        vmid = (await self.json("/vm/create?name=doomed&instance_type=1&image_id=1"))["vmid"]
        await self.hang_up_during(f"/vm/destroy?vmid={vmid}", "destroy_vm")
        store = self.daemon.fleet.store

        async def gone():
            return await store.all_vmids() == []

        await self.settled(gone)
        self.assertEqual(await self.json(f"/vm/query?vmid={vmid}"), 0)
        for pmid in (1, 2):
            pm = await self.json(f"/pm/query?pmid={pmid}")
            self.assertEqual(pm["free"], pm["capacity"])
