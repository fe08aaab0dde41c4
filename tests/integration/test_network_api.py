"""
VMs' network interfaces through the whole daemon, against real Redis: the NIC a VM gets
on the ini's C{[network]} with the MAC address stored in its record, what C{/vm/info} and
C{/v1/fleet} say of it, a PM whose network is missing refused with the reason, C{none}
giving VMs without a NIC, and the MAC address kept by a migration and a daemon restart.

libvirt test-driver PMs (their domains read through the daemon's own connections, the
only ones that see them) and, where a VM must outlive the daemon or move, in-memory PMs.
"""

from __future__ import annotations

import time

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from tests.clients import LoopbackClient
from tests.harness import Daemon, fake_hosts, shared_redis, tmpdir, unique_prefix, write_fleet
from vorchd.network import NETWORK, Attachment, interface_macs, mac_of

NET = "vorchd-net"
SIZES = [(4, 4096, True, [NET]), (4, 4096, True, [NET])]
CREATE = "/vm/create?name=n&instance_type=1&image_id=1"


class NetworkAPITests(TestCase):
    """
    A daemon over two PMs whose VMs attach to the network L{NET}.
    """

    async def setUp(self):
        self.dir = tmpdir(self)
        self.redis, self.prefix = shared_redis(), unique_prefix()

    async def start(self, sizes=SIZES, network=None, hosts=None, directory="daemon") -> Daemon:
        uris = write_fleet(self.dir, sizes)
        daemon = Daemon(
            self.dir / directory,
            self.redis.url,
            self.prefix,
            uris,
            network={"attach": NET} if network is None else network,
            hosts=hosts,
        )
        await daemon.start()
        self.addCleanup(daemon.stop)
        self.client = LoopbackClient(daemon)
        self.addCleanup(self.client.close)
        return daemon

    async def json(self, path: str):
        return (await self.client.call(path)).json

    async def up(self, daemon: Daemon, pms: int = 2) -> None:
        """
        Wait until each of the daemon's C{pms} PMs is up, or down with a reason.
        """
        hypervisors = daemon.fleet.hypervisors
        deadline = time.monotonic() + 30
        while not all(
            hypervisors.is_up(p) or hypervisors.down_reason(p) for p in range(1, pms + 1)
        ):
            self.assertLess(time.monotonic(), deadline, "PMs not discovered")
            await task.deferLater(reactor, 0.02, lambda: None)

    def domain_xml(self, daemon: Daemon, pmid: int, domain: str) -> str:
        return daemon.fleet.hypervisors.host(pmid).conn.lookupByName(domain).XMLDesc(0)

    async def test_nic_with_stored_mac(self):
        """
        A created VM's domain has one NIC on the network with the MAC address its record
        holds, which is its domain name's; /vm/info gives it and the address the PM's
        DHCP gave the guest, /v1/fleet the MAC address; vm/query keeps its seed keys.
        """
        daemon = await self.start()
        await self.up(daemon)
        vmid = (await self.json(CREATE))["vmid"]
        self.assertGreater(vmid, 0)
        info = await self.json(f"/vm/info?vmid={vmid}")
        rec = await daemon.fleet.store.vm(vmid)
        self.assertEqual(rec["mac"], mac_of(info["domain"]))
        self.assertEqual(info["mac"], rec["mac"])
        xml = self.domain_xml(daemon, info["pmid"], info["domain"])
        self.assertEqual(interface_macs(xml), [rec["mac"]])
        self.assertIn(f"<source network='{NET}'", xml)
        self.assertEqual(len(info["ips"]), 1, info)
        [vm] = (await self.json("/v1/fleet"))["vms"]
        self.assertEqual(vm["mac"], rec["mac"])
        query = await self.json(f"/vm/query?vmid={vmid}")
        self.assertEqual(set(query), {"vmid", "name", "instance_type", "pmid"})

    async def test_pm_without_network_refused(self):
        """
        A PM that lacks the network is refused, down: a create that only it could take
        fails, and X-Vorchd-Reason says that its network is missing.
        """
        daemon = await self.start(sizes=[(4, 4096, True, [])])
        await self.up(daemon, 1)
        self.assertFalse(daemon.fleet.hypervisors.is_up(1))
        answer = await self.client.call(CREATE)
        self.assertEqual(answer.json, {"vmid": 0})
        self.assertIn("PM 1: down: ", answer.reason)
        self.assertIn(f"network {NET} is missing", answer.reason)
        [pm] = (await self.json("/v1/fleet"))["pms"]
        self.assertEqual(pm["state"], "down")

    async def test_none_gives_no_nic(self):
        """
        With C{[network] attach = none} a VM's domain has no NIC and /vm/info no address;
        its record still holds its MAC address.
        """
        daemon = await self.start(network={"attach": "none"})
        await self.up(daemon)
        vmid = (await self.json(CREATE))["vmid"]
        info = await self.json(f"/vm/info?vmid={vmid}")
        xml = self.domain_xml(daemon, info["pmid"], info["domain"])
        self.assertEqual(interface_macs(xml), [])
        self.assertNotIn("<interface", xml)
        self.assertEqual(info["ips"], [])
        self.assertEqual(info["mac"], mac_of(info["domain"]))

    async def test_mac_kept_by_migration_and_restart(self):
        """
        A VM migrated to another PM keeps its NIC's MAC address there, and a restarted
        daemon reports the same one.
        """
        uris = write_fleet(self.dir, SIZES)
        hosts = fake_hosts(uris, [s[:2] for s in SIZES])
        for host in hosts.values():
            host.network, host.networks = Attachment(NETWORK, NET), {NET: True}
        daemon = await self.start(hosts=hosts)
        await self.up(daemon)
        vmid = (await self.json(CREATE))["vmid"]
        info = await self.json(f"/vm/info?vmid={vmid}")
        self.assertEqual(info["pmid"], 1)
        self.assertEqual(await self.json(f"/vm/migrate?vmid={vmid}&pmid=2"), {"status": 1})
        moved = hosts[2].domains[info["domain"]].xml
        self.assertEqual(interface_macs(moved), [info["mac"]])
        self.assertNotIn(info["domain"], hosts[1].domains)
        await daemon.stop()
        again = await self.start(hosts=hosts, directory="again")
        await self.up(again)
        after = await self.json(f"/vm/info?vmid={vmid}")
        self.assertEqual((after["pmid"], after["mac"]), (2, info["mac"]))
        self.assertEqual(len(after["ips"]), 1)
