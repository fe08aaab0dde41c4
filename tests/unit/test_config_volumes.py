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
        for backend in ("rbd", "nfs"):
            with self.assertRaises(ConfigError) as caught:
                load_settings(self.ini(f"[volumes]\nbackend = {backend}\n"), environ={})
            self.assertIn("[volumes] backend", str(caught.exception))
