"""
The Linux example's builder (L{vorchd.linuximage}) in its pure parts: the module order
and the initramfs it packs. That the image boots, takes an address by DHCP and serves its
page is tested on real PMs (L{tests.system.test_reachable_vms}).
"""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import tmpdir
from vorchd import linuximage


def read_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """
    A "newc" cpio archive's entries: name -> (mode, content, (rdev major, minor)).
    """
    out, at = {}, 0
    while True:
        fields = [int(data[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        size, namesize = fields[6], fields[11]
        name_at = at + 110
        name = data[name_at : name_at + namesize - 1].decode()
        body_at = name_at + namesize + (-(name_at + namesize) % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (fields[1], data[body_at : body_at + size], (fields[9], fields[10]))
        at = body_at + size + (-(body_at + size) % 4)


class LinuxImageCodeTests(SynchronousTestCase):
    def setUp(self):
        self.dir = Path(tmpdir(self))
        modules = self.dir / "lib" / "modules" / "6.1.0-test"
        (modules / "kernel").mkdir(parents=True)
        for name in ("virtio", "virtio_ring", "failover", "net_failover", "virtio_pci"):
            (modules / "kernel" / f"{name}.ko").write_bytes(f"module {name}".encode())
        (modules / "kernel" / "virtio_net.ko.xz").write_bytes(lzma.compress(b"module net"))
        (modules / "modules.dep").write_text(
            "kernel/virtio.ko:\n"
            "kernel/virtio_ring.ko:\n"
            "kernel/failover.ko:\n"
            "kernel/net_failover.ko: kernel/failover.ko\n"
            "kernel/virtio_pci.ko: kernel/virtio_ring.ko kernel/virtio.ko\n"
            "kernel/virtio_net.ko.xz: kernel/net_failover.ko kernel/failover.ko"
            " kernel/virtio_ring.ko kernel/virtio.ko\n"
        )
        self.modules = modules
        self.busybox = self.dir / "busybox"
        self.busybox.write_bytes(b"\x7fELF busybox")

    def test_module_order(self):
        """
        The modules wanted come with all they depend on, each after its dependencies,
        each once.
        """
        order = linuximage.module_order(str(self.modules))
        names = [Path(p).name.split(".")[0] for p in order]
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(
            set(names),
            {"virtio", "virtio_ring", "failover", "net_failover", "virtio_pci", "virtio_net"},
        )
        self.assertLess(names.index("failover"), names.index("net_failover"))
        self.assertLess(names.index("net_failover"), names.index("virtio_net"))
        self.assertLess(names.index("virtio_ring"), names.index("virtio_pci"))
        e = self.assertRaises(
            linuximage.ImageError, linuximage.module_order, str(self.modules), ["e1000"]
        )
        self.assertIn("no module e1000", str(e))

    def test_initramfs(self):
        """
        The initramfs holds busybox, a console device, the init that asks for an address
        by DHCP and serves the page, the udhcpc hook that prints the address, and the
        modules (decompressed) with the order to load them in; built twice, it is the
        same bytes.
        """
        data = linuximage.initramfs(str(self.busybox), str(self.modules))
        self.assertEqual(data, linuximage.initramfs(str(self.busybox), str(self.modules)))
        entries = read_newc(gzip.decompress(data))
        self.assertEqual(entries["bin/busybox"][1], b"\x7fELF busybox")
        self.assertEqual(entries["dev/console"][0], 0o020600)
        self.assertEqual(entries["dev/console"][2], (5, 1))
        init = entries["init"][1].decode()
        self.assertEqual(entries["init"][0] & 0o777, 0o755)
        self.assertIn("udhcpc -i eth0", init)
        self.assertIn("httpd -p 80 -h /www", init)
        hook = entries["etc/udhcpc.script"][1].decode()
        self.assertIn(f'echo "{linuximage.ADDRESS_LINE}$ip" > /dev/console', hook)
        self.assertIn(linuximage.PAGE_TITLE, hook)
        order = entries["etc/modules.order"][1].decode().split()
        self.assertEqual(order[-1], "virtio_net.ko")
        self.assertEqual(entries["lib/modules/virtio_net.ko"][1], b"module net")
        self.assertEqual({f"lib/modules/{m}" for m in order} - set(entries), set())

    def test_missing_kernel(self):
        """
        Without a kernel the builder says which package to install.
        """
        e = self.assertRaises(linuximage.ImageError, linuximage.newest_kernel, str(self.dir))
        self.assertIn("linux-image", str(e))
