"""
The bundled example image: a small real Linux built on this machine from Debian packages,
with nothing downloaded (apt installs them: C{linux-image-amd64}, C{busybox-static},
C{syslinux}, C{syslinux-common}, C{mtools}).

The image is a raw disk that is one FAT file system (no partition table: SeaBIOS boots its
first sector, syslinux's boot record), holding syslinux, the kernel of a C{linux-image}
package and an initramfs made here: busybox (static), the virtio network modules with
their dependencies, and an C{/init} that asks for an address by DHCP (udhcpc), prints it
on the serial console as C{vorchd-example: address A.B.C.D} (L{ADDRESS_LINE}), and serves
a page with busybox's httpd on port 80 (L{PAGE_TITLE}, then the guest's address).

The image is reproducible: the initramfs has no time stamps, and the FAT file system is
stamped with the kernel's modification time; the same kernel and busybox make the same
bytes (so install.sh's rerun leaves the image the daemon uses alone).

Run C{python -m vorchd.linuximage PATH [--kernel VMLINUZ]} to write it (install.sh does).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

#: The console line the guest prints once it has its address (the address follows).
ADDRESS_LINE = "vorchd-example: address "

#: The first line of the page the guest serves.
PAGE_TITLE = "Hello from a vorchd VM"

#: The kernel modules the guest loads (with their dependencies) to reach its virtio NIC.
MODULES = ("virtio_pci", "virtio_net")

#: The Debian packages the image is built from (install.sh installs them).
PACKAGES = ("linux-image-amd64", "busybox-static", "syslinux", "syslinux-common", "mtools")

SYSLINUX_CFG = """\
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=tty0 console=ttyS0,115200 quiet panic=10
"""

UDHCPC_SCRIPT = f"""\
#!/bin/sh
# udhcpc's hook: configure the lease, say the address on the console, write the page.
case "$1" in
deconfig) ifconfig "$interface" 0.0.0.0 up ;;
bound|renew)
    ifconfig "$interface" "$ip" netmask "${{subnet:-255.255.255.0}}" up
    if [ -n "$router" ]; then
        route del default 2>/dev/null
        for r in $router; do route add default gw "$r" dev "$interface"; break; done
    fi
    printf '<html><body><h1>{PAGE_TITLE}</h1><p>%s at %s</p></body></html>\\n' \\
        "$(hostname)" "$ip" > /www/index.html
    echo "{ADDRESS_LINE}$ip" > /dev/console
    ;;
esac
exit 0
"""

INIT = """\
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin /www
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
for m in $(cat /etc/modules.order); do insmod "/lib/modules/$m"; done
hostname vorchd-example
ifconfig lo 127.0.0.1 up
echo "vorchd-example: booted; asking for an address by DHCP"
printf '<html><body><h1>%s</h1><p>no address yet</p></body></html>\\n' "PAGE" > /www/index.html
httpd -p 80 -h /www
udhcpc -i eth0 -b -t 30 -T 2 -A 5 -s /etc/udhcpc.script
while true; do sleep 3600; done
""".replace("PAGE", PAGE_TITLE)


class ImageError(Exception):
    """
    The image cannot be built here; the message says what is missing.
    """


def newest_kernel(boot: str = "/boot") -> str:
    """
    The newest C{vmlinuz-*} in C{boot}.

    @raise ImageError: there is none (install C{linux-image-amd64}).
    """
    found = sorted(glob.glob(os.path.join(boot, "vmlinuz-*")), key=_version_key)
    if not found:
        raise ImageError(f"no kernel in {boot}: install linux-image-amd64")
    return found[-1]


def _version_key(path: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", os.path.basename(path))]


def module_order(modules_dir: str, wanted: Sequence[str] = MODULES) -> list[str]:
    """
    The files (relative to C{modules_dir}) of the modules C{wanted} and all they depend on,
    each after its dependencies, as C{modules.dep} gives them.
    """
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    with open(os.path.join(modules_dir, "modules.dep"), encoding="utf-8") as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
            by_name[re.sub(r"\.ko(\.\w+)?$", "", os.path.basename(path))] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, ()):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise ImageError(f"no module {name} in {modules_dir}")
        visit(by_name[name])
    return order


def _module_bytes(path: str) -> bytes:
    data = Path(path).read_bytes()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".zst"):
        raise ImageError(f"{path}: zstd-compressed modules are not supported")
    return data


def _cpio_entry(out: io.BytesIO, name: str, mode: int, data: bytes = b"", rdev=(0, 0)) -> None:
    # The "newc" format: a header of 13 eight-digit hex fields, the name, the data, each
    # padded to four bytes; every time stamp 0, so the archive is reproducible.
    fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % v for v in fields)
    out.write(head + name.encode() + b"\0")
    out.write(b"\0" * (-out.tell() % 4))
    out.write(data)
    out.write(b"\0" * (-out.tell() % 4))


def initramfs(busybox: str, modules_dir: str, wanted: Sequence[str] = MODULES) -> bytes:
    """
    The gzipped initramfs: busybox, the modules, L{INIT} and the udhcpc hook.
    """
    out = io.BytesIO()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "www"):
        _cpio_entry(out, d, 0o040755)
    _cpio_entry(out, "dev/console", 0o020600, rdev=(5, 1))
    _cpio_entry(out, "bin/busybox", 0o100755, Path(busybox).read_bytes())
    _cpio_entry(out, "bin/sh", 0o120777, b"busybox")
    _cpio_entry(out, "init", 0o100755, INIT.encode())
    _cpio_entry(out, "etc/udhcpc.script", 0o100755, UDHCPC_SCRIPT.encode())
    names = []
    for rel in module_order(modules_dir, wanted):
        name = re.sub(r"\.(xz|zst)$", "", os.path.basename(rel))
        names.append(name)
        _cpio_entry(out, f"lib/modules/{name}", 0o100644, _module_bytes(f"{modules_dir}/{rel}"))
    _cpio_entry(out, "etc/modules.order", 0o100644, "\n".join(names).encode() + b"\n")
    _cpio_entry(out, "TRAILER!!!", 0)
    return gzip.compress(out.getvalue(), mtime=0)


def _run(*command: str, epoch: int = 0) -> None:
    # mtools stamps what it writes with SOURCE_DATE_EPOCH when it is set: the same files
    # make the same image.
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise ImageError(f"{command[0]} is missing: install {' '.join(PACKAGES)}") from None
    except subprocess.CalledProcessError as e:
        raise ImageError(f"{' '.join(command)}: {e.stderr.strip()}") from None


def write_image(
    path: str, kernel: str | None = None, busybox: str = "/bin/busybox", modules_root=None
) -> None:
    """
    Write the example image to C{path} (replaced whole, or not at all).

    @param kernel: the kernel (default: the newest in /boot); its modules are read from
        C{modules_root}/VERSION (default C{/lib/modules}).
    @raise ImageError: a package it needs is missing, or a tool failed.
    """
    kernel = kernel or newest_kernel()
    version = os.path.basename(kernel).removeprefix("vmlinuz-")
    modules_dir = os.path.join(modules_root or "/lib/modules", version)
    if not os.path.isfile(busybox):
        raise ImageError(f"no {busybox}: install busybox-static")
    if not os.path.isdir(modules_dir):
        raise ImageError(f"no modules for kernel {version} in {modules_dir}")
    initrd = initramfs(busybox, modules_dir)
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.TemporaryDirectory(dir=directory, prefix=".linuximage-") as tmp:
        files = {"vmlinuz": kernel, "initrd.gz": os.path.join(tmp, "initrd.gz")}
        Path(files["initrd.gz"]).write_bytes(initrd)
        os.utime(files["initrd.gz"], (os.stat(kernel).st_mtime,) * 2)
        cfg = os.path.join(tmp, "syslinux.cfg")
        Path(cfg).write_text(SYSLINUX_CFG)
        os.utime(cfg, (os.stat(kernel).st_mtime,) * 2)
        files["syslinux.cfg"] = cfg
        size = sum(os.path.getsize(p) for p in files.values()) + 4 * 2**20
        size = -(-size // 2**20) * 2**20
        image = os.path.join(tmp, "image")
        with open(image, "wb") as f:
            f.truncate(size)
        sectors = size // 512
        epoch = int(os.stat(kernel).st_mtime)
        # A fixed serial number and label: the same files make the same image.
        geometry = ("-T", str(sectors), "-h", "64", "-s", "32", "-N", "766f7263")
        _run(
            "mformat", "-i", image, *geometry, "-N", "766f7263", "-v", "VORCHD", "::", epoch=epoch
        )
        _run("syslinux", "--install", image, epoch=epoch)
        for name, source in files.items():
            _run("mcopy", "-m", "-i", image, source, f"::/{name}", epoch=epoch)
        shutil.move(image, path)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Command line: C{python -m vorchd.linuximage PATH [--kernel VMLINUZ]}; write the image,
    print its path, and return the exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m vorchd.linuximage",
        description=(
            "Write a bootable raw disk image of a small Linux (this machine's Debian kernel"
            " and busybox) that takes an address by DHCP and serves a page on port 80."
        ),
    )
    parser.add_argument("path", help="where to write the image")
    parser.add_argument("--kernel", help="the kernel to boot (default: the newest in /boot)")
    args = parser.parse_args(argv)
    try:
        write_image(args.path, kernel=args.kernel)
    except (OSError, ImageError) as e:
        parser.error(str(e))
    print(args.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
