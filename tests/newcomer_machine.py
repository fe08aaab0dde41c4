"""
This machine as a newcomer finds it, for running C{./install.sh} with no files in, for real:
L{NewcomerMachine}.

It is a set of namespaces this module makes (mount, UTS, PID and network), with private,
empty directories bound over everything install.sh and what it starts write to:
C{/run} (pid files, libvirt's sockets), C{/var/lib/libvirt}, C{/etc/libvirt} (a copy of the
top-level config files only), C{/var/log/libvirt}, C{/var/cache/libvirt}, C{/var/lib/vorchd}
(the pool, the example image, Redis' data), C{/var/log/vorchd}, C{/etc/vorchd} (the admin
password) and C{/usr/local/bin} (the C{vorch} links). Inside, install.sh finds no
libvirtd, no Redis and no daemon, and starts its own, as on a fresh machine; the system
packages are this machine's (a test checks they are all installed first, so install.sh
installs none).

What it does not share with the machine:
- the network: its own namespace (and a sysfs of it) holds only its loopback (where the
  REST port, Redis and libvirtd listen) and what libvirt makes there, libvirt's C{default} network
  (C{virbr0}, 192.168.122.1, its dnsmasq) and the guests' taps. Traffic to a guest goes
  only from processes run inside (L{run}), into this namespace the test made.
- C{/dev/kvm}: a device node of its own for the same device, root:kvm 0660, bound over
  it, so that install.sh's KVM setup changes nothing machine-wide, and a test elsewhere
  closing the machine's /dev/kvm does not change what this machine sees.
- the venv: the machine's C{/opt/vorchd/venv} imports vorchd from another checkout, and
  install.sh would reinstall it for this one. install.sh is given (C{VORCHD_VENV}) a venv
  of its own instead, L{_SHIM_PTH}: the same Python and packages, this checkout first on
  its path, the same entry points, and install.sh's stamp, so it is found up to date.

Everything runs in the PID namespace, whose init (the namespace holder of
L{tests.libvirtd_fleet}) is killed by L{stop}: libvirtd, virtlogd, dnsmasq, Redis, the
daemon and the guests' QEMUs go with it, and the network namespace with them. Its state
is one C{fleet-XXXXXXXXXX} directory under L{tests.libvirtd_fleet.ROOT}, reaped like a
fleet's if the test process dies first.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

from tests.libvirtd_fleet import (
    _ENV,
    ROOT,
    _kill_all_mounting,
    netns_unavailable,
    new_fleet_dir,
    own_network,
    start_holder,
)

REPO = Path(__file__).resolve().parent.parent

#: (state subdirectory, mount point), bound in this order.
MOUNTS = (
    ("run", "/run"),
    ("lib", "/var/lib/libvirt"),
    ("etc", "/etc/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
    ("vorchd", "/var/lib/vorchd"),
    ("vorchd-log", "/var/log/vorchd"),
    ("etc-vorchd", "/etc/vorchd"),
    ("bin", "/usr/local/bin"),
)

#: The commands install.sh links into /usr/local/bin, from the venv.
ENTRY_POINTS = ("twistd", "vorch", "vorchd-admin", "vorchd-sim")

# The venv's path: this checkout first, then the machine venv's packages (whose own .pth
# files then add the checkout it was installed from, behind this one).
_SHIM_PTH = """\
{repo}
import site; site.addsitedir({site_packages!r})
"""


def install_packages() -> list[str]:
    """
    The system packages C{./install.sh} with no files installs (its C{PACKAGES} and
    C{EXAMPLE_PACKAGES}, as its own bash reads them; a kernel package only where /boot has
    none).
    """
    script = (
        'eval "$(sed -n "/^PACKAGES=(/,/^)/p; /^EXAMPLE_PACKAGES=(.*)$/p" install.sh)";'
        ' printf "%s\\n" "${PACKAGES[@]}" "${EXAMPLE_PACKAGES[@]}"'
    )
    out = subprocess.run(
        ["bash", "-c", script], cwd=REPO, capture_output=True, text=True, check=True, env=_ENV
    ).stdout
    return [p for p in out.split() if p]


def newcomer_unavailable() -> str | None:
    """
    Why a L{NewcomerMachine} cannot run install.sh here, or None if it can.
    """
    why = netns_unavailable()
    if why is not None:
        return why
    missing = []
    for package in install_packages():
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        ).stdout
        if status != "install ok installed":
            missing.append(package)
    if missing:
        return f"install.sh would install {' '.join(missing)}: run ./install.sh deps first"
    if not list(Path("/boot").glob("vmlinuz-*")):
        return "no kernel in /boot for the Linux example"
    return None


class NewcomerMachine:
    """
    A fresh-looking copy of this machine in namespaces of its own (see the module).
    """

    def __init__(self, root: Path = ROOT):
        self.root = root
        self.dir: Path | None = None
        self.holder: subprocess.Popen | None = None
        self.init_pid: int | None = None
        self._stopped = False

    def path(self, subdir: str, *rest: str) -> Path:
        """
        The host path of a file in one of its private directories: C{path("log", "qemu")}
        for what it sees as C{/var/log/libvirt/qemu}.
        """
        assert self.dir is not None
        return self.dir.joinpath("state", subdir, *rest)

    @property
    def venv(self) -> Path:
        assert self.dir is not None
        return self.dir / "venv"

    # -- starting -------------------------------------------------------------------------

    def start(self) -> NewcomerMachine:
        """
        Make its directories, venv and namespaces (nothing runs in them yet).
        """
        self.dir = new_fleet_dir(self.root)
        atexit.register(self.stop)
        try:
            self._prepare()
            self._make_venv()
            self._start_holder()
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare(self) -> None:
        state = self.dir / "state"
        state.mkdir(mode=0o755)
        for subdir, point in MOUNTS:
            self.path(subdir).mkdir(mode=0o755)
            # A mount point the machine lacks is made, empty (install.sh would make it).
            os.makedirs(point, exist_ok=True)
        # libvirt-qemu must traverse these to reach its sockets, logs and disks.
        for subdir in ("run", "lib", "log", "cache", "vorchd"):
            self.path(subdir).chmod(0o755)
        self.path("run", "libvirt").mkdir(mode=0o755)
        # The empty directories the packages make (e.g. /var/log/libvirt/qemu).
        for subdir, point in (("lib", "/var/lib/libvirt"), ("log", "/var/log/libvirt")):
            for entry in os.scandir(point):
                if entry.is_dir(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    target = self.path(subdir, entry.name)
                    target.mkdir()
                    os.chown(target, st.st_uid, st.st_gid)
                    target.chmod(st.st_mode & 0o7777)
        etc = self.path("etc")
        for entry in os.scandir("/etc/libvirt"):
            if entry.is_file(follow_symlinks=False):
                shutil.copy2(entry.path, etc / entry.name)
        (etc / "libvirtd.conf").write_text(
            f'host_uuid = "{uuid.uuid4()}"\nlog_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
        )
        # Its guests in cgroups of their own would share the machine's cgroup tree.
        (etc / "qemu.conf").write_text("cgroup_controllers = [ ]\n")
        (etc / "qemu.conf").chmod(0o600)
        host_caps = Path("/var/cache/libvirt/qemu/capabilities")
        if host_caps.is_dir():
            shutil.copytree(host_caps, self.path("cache", "qemu", "capabilities"))
        try:
            kvm = os.stat("/dev/kvm")
        except OSError:
            return
        node = self.path("kvm")
        os.mknod(node, 0o660 | stat.S_IFCHR, kvm.st_rdev)
        shutil.chown(node, "root", "kvm")
        node.chmod(0o660)

    def _make_venv(self) -> None:
        python = Path(sys.executable).resolve()
        subprocess.run(
            [str(python), "-m", "venv", "--without-pip", str(self.venv)], check=True, env=_ENV
        )
        site_packages = sysconfig.get_paths()["purelib"]
        ours = subprocess.run(
            [
                str(self.venv / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            capture_output=True,
            text=True,
            check=True,
            env=_ENV,
        ).stdout.strip()
        Path(ours, "00-vorchd-checkout.pth").write_text(
            _SHIM_PTH.format(repo=REPO, site_packages=site_packages)
        )
        machine_bin = Path(sys.executable).parent
        for name in ENTRY_POINTS:
            text = (machine_bin / name).read_text()
            script = self.venv / "bin" / name
            script.write_text(f"#!{self.venv / 'bin' / 'python'}\n" + text.split("\n", 1)[1])
            script.chmod(0o755)
        # install.sh's own fingerprint of what the venv was installed from.
        stamp = hashlib.sha256(
            f"{REPO}\n".encode()
            + b"".join((REPO / name).read_bytes() for name in ("setup.py", "pyproject.toml"))
        ).hexdigest()
        (self.venv / ".vorchd-stamp").write_text(stamp + "\n")

    def _start_holder(self) -> None:
        mounts = [item for subdir, point in MOUNTS for item in (subdir, point)]
        if self.path("kvm").exists():
            mounts += ["kvm", "/dev/kvm"]
        log = self.dir / "holder.log"
        self.holder, self.init_pid = start_holder(
            self.dir / "state", "newcomer.vorchd.test", mounts, True, log
        )
        if self.init_pid is None:
            raise RuntimeError(
                "newcomer machine: namespace setup failed: " + log.read_text(errors="replace")
            )
        own_network(self.run, "newcomer machine")

    # -- using it -------------------------------------------------------------------------

    def run(
        self, *command: str, timeout: float = 60, cwd: str = "/"
    ) -> subprocess.CompletedProcess:
        """
        Run C{command} in it as root, as a newcomer's shell would (C{/usr/local/bin} on the
        PATH, install.sh told of the venv), and return its result (stdout and stderr as
        text).
        """
        if self.init_pid is None:
            raise RuntimeError("newcomer machine: not started")
        env = {
            **_ENV,
            "PATH": "/usr/local/sbin:/usr/local/bin:" + _ENV["PATH"],
            "HOME": "/root",
            "VORCHD_VENV": str(self.venv),
        }
        return subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-p", "-n", f"--wd={cwd}"]
            + ["--", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
        )

    # -- stopping -------------------------------------------------------------------------

    def stop(self) -> None:
        """
        Kill everything that ran in it and remove its state. Idempotent.
        """
        if self._stopped or self.dir is None:
            return
        self._stopped = True
        try:
            if self.holder is not None:
                if self.holder.poll() is None and self.init_pid is not None:
                    # The kernel kills the rest of the PID namespace with its init.
                    os.kill(self.init_pid, signal.SIGKILL)
                self.holder.wait(30)
            _kill_all_mounting(f"/{self.dir.name}/")
        finally:
            if self.holder is not None and self.holder.poll() is None:
                self.holder.kill()
                self.holder.wait(10)
            shutil.rmtree(self.dir, ignore_errors=True)
            atexit.unregister(self.stop)
