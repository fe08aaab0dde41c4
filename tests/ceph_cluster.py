"""
The throwaway one-node Ceph cluster of a test run (L{vorchd.cephlocal.CephCluster}: a
monitor, a manager and one memstore OSD under a temp directory of its own, on a free
port), and the L{vorchd.volume_xml.CephPool} a daemon is given for it.

    cluster = shared_ceph()     # started on first use (about 10 s), stopped at exit
    cluster.monitor, cluster.key, cluster.pool
    cluster.rbd("ls")           # the rbd CLI against it
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vorchd.cephlocal import CephCluster, ceph_unavailable

__all__ = ["CephCluster", "ceph_pool", "ceph_unavailable", "shared_ceph"]

_shared: CephCluster | None = None


def shared_ceph() -> CephCluster:
    """
    One cluster for the whole test run, started on first use (about 10 s) and stopped
    when the run ends. Its OSD holds 2 GiB: a volume bigger than that has no room.

    @raise SkipTest or fail (through L{tests.harness.require}): Ceph cannot run here.
    """
    global _shared
    if _shared is None:
        import atexit
        import tempfile

        from tests.harness import require

        require(ceph_unavailable())
        directory = Path(tempfile.mkdtemp(prefix="vorchd-ceph-"))
        cluster = CephCluster(directory)
        try:
            cluster.start()
        except Exception:
            cluster.stop()
            shutil.rmtree(directory, True)
            raise
        atexit.register(lambda: (cluster.stop(), shutil.rmtree(directory, True)))
        _shared = cluster
    return _shared


def ceph_pool(cluster: CephCluster):
    """
    The L{vorchd.volume_xml.CephPool} of C{cluster}'s pool, as the daemon is given it.
    """
    from vorchd.volume_xml import CephPool

    host, port = cluster.monitor.split(":")
    return CephPool(
        ((host, int(port)),), cluster.pool, cluster.user, cluster.key, str(cluster.client_conf)
    )
