"""
C{./install.sh ceph} on this machine: what it does once its packages are there (its
function C{ceph_run}, run from the real install.sh in bash; the package and venv steps
before it are those of every other install mode, and would reinstall the venv the tests
run from). A one-node Ceph is made in a state directory of its own, the daemon's ini is a
copy pointed at it, and the daemon (a real twistd started by install.sh, on a real
libvirtd PM) makes each volume an RBD image there, which the rbd CLI lists with the
client key install.sh made. A second run finds the cluster running and starts no other;
C{./install.sh ceph stop} stops the daemon and the cluster, and a run after that starts
the same cluster again with its images. Everything it started is stopped, and its
directories removed, however the test ends.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    REPO,
    free_port,
    get_json,
    require,
    shared_redis,
    unique_prefix,
    wait_answering,
)
from tests.libvirtd_fleet import LibvirtdFleet, libvirtd_fleet_unavailable
from vorchd.bootimage import write_image
from vorchd.cephlocal import CephCluster, ceph_unavailable

#: What one run of install.sh may take at most (making the cluster takes about 15 s).
RUN_SECONDS = 240


def ceph_processes(conf: Path) -> list[int]:
    """
    The pids of the live (not zombie) processes run with the cluster's conf C{conf}.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if str(conf).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


class InstallCephTests(SynchronousTestCase):
    """
    install.sh's ceph mode against a real libvirtd PM and real Redis.
    """

    def setUp(self):
        require(None if os.geteuid() == 0 else "install.sh runs as root")
        require(ceph_unavailable())
        require(libvirtd_fleet_unavailable())
        fleet = LibvirtdFleet(1)
        fleet.start()
        self.addCleanup(fleet.stop)
        self.dir = Path(tempfile.mkdtemp(prefix="vorchd-install-ceph-"))
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.ceph_dir = self.dir / "ceph"
        self.port = free_port()
        self.ceph_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Registered before anything starts: stop it all even if a step fails half-way.
        self.addCleanup(self.stop_everything)
        image = self.dir / "hello.img"
        write_image(image)
        self.files = (self.dir / "pm_file", self.dir / "image_file", self.dir / "flavor_file")
        self.files[0].write_text("\n".join(fleet.uris) + "\n")
        self.files[1].write_text(f"{image}\n")
        self.files[2].write_text(json.dumps({"types": [{"cpu": 1, "ram": 64, "disk": 1}]}))
        self.ini = self.dir / "vorchd.ini"
        self.ini.write_text(
            f"[server]\nport = {self.port}\ninterface = 127.0.0.1\n"
            "[admin]\nport = off\n"
            f"[redis]\nurl = {shared_redis().url}\nkey_prefix = {unique_prefix()}\n"
            "[libvirt]\npool_path = /var/lib/libvirt/vorchd-pool\nconnect_timeout = 5\n"
            "domain_type = qemu\n"
            "[volumes]\n# the default, which install.sh ceph changes\nbackend = local\n"
        )
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("VORCHD_PORT", "VORCHD_REDIS", "CEPH_CONF")
        }
        self.env.update(
            PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            VORCHD_VENV=sys.prefix,
            VORCHD_CONFIG=str(self.ini),
            VORCHD_CEPH_DIR=str(self.ceph_dir),
            VORCHD_CEPH_PORT=str(self.ceph_port),
        )

    def install_sh(self, *call: str) -> subprocess.CompletedProcess:
        """
        Run a function of the real install.sh (sourced by bash) with its arguments.
        """
        return subprocess.run(
            [
                "bash",
                "-c",
                'source "$1" && shift && "$@"',
                "bash",
                str(REPO / "install.sh"),
                *call,
            ],
            env=self.env,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=RUN_SECONDS,
            stdin=subprocess.DEVNULL,
        )

    def ceph_run(self) -> str:
        done = self.install_sh("ceph_run", *map(str, self.files))
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        return done.stdout

    def stop_everything(self) -> None:
        self.install_sh("cmd_ceph_stop")
        # Whatever install.sh could not stop, by the pid files it and the cluster keep.
        CephCluster(self.ceph_dir).stop()
        pidfile = Path(f"/run/vorchd-{self.port}.pid")
        try:
            os.kill(int(pidfile.read_text()), 9)
        except (OSError, ValueError):
            pass
        pidfile.unlink(missing_ok=True)
        Path(f"/var/log/vorchd/vorchd-{self.port}.log").unlink(missing_ok=True)

    def rbd_images(self) -> list[str]:
        """
        The images in the pool, as the rbd CLI lists them with install.sh's client key.
        """
        done = subprocess.run(
            [
                "rbd",
                "--conf",
                str(self.ceph_dir / "ceph.conf"),
                "--id",
                "vorchd",
                "--keyring",
                str(self.ceph_dir / "ceph.client.vorchd.keyring"),
                "--pool",
                "vorchd",
                "ls",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout.split()

    def pidfiles(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted((self.ceph_dir / "run").glob("*.pid"))}

    def test_install_ceph(self):
        """
        The first run makes the cluster and says so, writes the ini copy with [volumes] on
        it, and leaves the daemon answering: a volume it creates is an RBD image the rbd
        CLI lists, and one bigger than the cluster's 10 GiB is refused. A second run finds
        the cluster running (no second one). Stopped, nothing of it runs; run again, the
        same cluster starts with its image.
        """
        out = self.ceph_run()
        monitor = f"127.0.0.1:{self.ceph_port}"
        self.assertIn(
            f"made a one-node Ceph (monitor {monitor}, pool vorchd, client.vorchd)"
            f" in {self.ceph_dir}",
            out,
        )
        self.assertIn("stop the daemon and Ceph", out)
        self.assertIn("./install.sh ceph stop", out)
        ini = configparser.ConfigParser()
        ini.read(self.ceph_dir / "vorchd.ini")
        self.assertEqual(
            dict(ini["volumes"]),
            {
                "backend": "rbd",
                "rbd_monitors": monitor,
                "rbd_pool": "vorchd",
                "rbd_user": "vorchd",
                "rbd_keyring": str(self.ceph_dir / "ceph.client.vorchd.keyring"),
                "rbd_client_conf": str(self.ceph_dir / "qemu-client.conf"),
            },
        )
        self.assertEqual(ini["server"]["port"], str(self.port))
        wait_answering(self.url)
        vol = get_json(f"{self.url}/volume/create?name=data&size=1")["volumeid"]
        self.assertGreater(vol, 0)
        images = self.rbd_images()
        self.assertEqual([i for i in images if i.endswith(f"-volume-{vol}.raw")], images)
        self.assertEqual(get_json(f"{self.url}/volume/create?name=big&size=20"), {"volumeid": 0})
        self.assertEqual(self.rbd_images(), images)
        processes, pids = ceph_processes(self.ceph_dir / "ceph.conf"), self.pidfiles()
        self.assertEqual(len(processes), 3)  # a monitor, a manager, an OSD

        out = self.ceph_run()
        self.assertIn(f"the one-node Ceph in {self.ceph_dir} is running", out)
        self.assertNotIn("made a one-node Ceph", out)
        self.assertEqual(ceph_processes(self.ceph_dir / "ceph.conf"), processes)
        self.assertEqual(self.pidfiles(), pids)
        wait_answering(self.url)
        listed = get_json(f"{self.url}/volume/list")["volumes"]
        self.assertEqual([v["volumeid"] for v in listed], [vol])

        done = self.install_sh("cmd_ceph_stop")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn(f"vorchd on port {self.port} stopped", done.stdout)
        self.assertIn(f"Ceph in {self.ceph_dir} stopped", done.stdout)
        self.assertEqual(ceph_processes(self.ceph_dir / "ceph.conf"), [])
        with self.assertRaises(OSError):
            urllib.request.urlopen(f"{self.url}/pm/list", timeout=5)

        out = self.ceph_run()
        self.assertIn(f"started the one-node Ceph in {self.ceph_dir} again", out)
        self.assertEqual(self.rbd_images(), images)
        wait_answering(self.url)
        self.assertEqual(get_json(f"{self.url}/volume/destroy?volumeid={vol}"), {"status": 1})
        self.assertEqual(self.rbd_images(), [])
