"""
The ini's C{[volumes]} section: which backend holds block volumes.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import tmpdir
from vorchd.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


class VolumeBackendSettingTests(SynchronousTestCase):
    def ini(self, text: str) -> str:
        path = tmpdir(self) / "vorchd.ini"
        path.write_text(text)
        return str(path)

    def test_default_is_local(self):
        """
        Without a [volumes] section, and in the documented default ini, volumes are local.
        """
        self.assertEqual(load_settings(self.ini(""), environ={}).volume_backend, "local")
        documented = load_settings(str(REPO / "etc" / "vorchd.ini"), environ={})
        self.assertEqual(documented.volume_backend, "local")

    def test_unknown_backend_stops_start_up(self):
        """
        A backend vorchd does not have stops start-up with a message naming the setting.
        """
        with self.assertRaises(ConfigError) as caught:
            load_settings(self.ini("[volumes]\nbackend = nfs\n"), environ={})
        self.assertIn("[volumes] backend", str(caught.exception))

    def test_rbd(self):
        """
        The rbd backend's monitors, pool, user, key (read from the keyring, relative to the
        ini) and client conf; a keyring that cannot be read or holds no key, or a monitor
        that is not host:port, stops start-up naming the setting.
        """
        ini = self.ini(
            "[volumes]\nbackend = rbd\nrbd_monitors = 10.0.0.1:6789, ceph2:3300\n"
            "rbd_pool = vols\nrbd_user = vorchd\nrbd_keyring = k\nrbd_client_conf = q.conf\n"
        )
        directory = Path(ini).parent
        (directory / "k").write_text("[client.vorchd]\n\tkey = QUJDRA==\n")
        ceph = load_settings(ini, environ={}).ceph
        self.assertEqual(ceph.monitors, (("10.0.0.1", 6789), ("ceph2", 3300)))
        self.assertEqual((ceph.pool, ceph.user, ceph.key), ("vols", "vorchd", "QUJDRA=="))
        self.assertEqual(ceph.client_conf, str(directory / "q.conf"))
        (directory / "k").write_text("[client.vorchd]\n")
        with self.assertRaises(ConfigError) as caught:
            load_settings(ini, environ={})
        self.assertIn("rbd_keyring", str(caught.exception))
        (directory / "k").unlink()
        with self.assertRaises(ConfigError) as caught:
            load_settings(ini, environ={})
        self.assertIn("rbd_keyring", str(caught.exception))
        bad = self.ini("[volumes]\nbackend = rbd\nrbd_monitors = nowhere\n")
        with self.assertRaises(ConfigError) as caught:
            load_settings(bad, environ={})
        self.assertIn("rbd_monitors", str(caught.exception))
