"""
The Redis URL an operator writes in the ini or VORCHD_REDIS: one Redis, or the Redis
Sentinels of a replicated one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from vorchd.config import ConfigError, RedisAddress, load_settings


class RedisURLTests(SynchronousTestCase):
    def test_sentinel_url(self) -> None:
        """
        A Sentinel URL names every Sentinel, the master's name, the db and the
        password (percent-decoded); host and port are the first Sentinel's.
        """
        address = RedisAddress.from_url(
            "redis+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2:26380,[::1]:26381/mymaster/2"
        )
        self.assertEqual(
            address,
            RedisAddress(
                "10.0.0.1",
                26379,
                2,
                "s@cret",
                "mymaster",
                (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381)),
            ),
        )

    def test_sentinel_defaults(self) -> None:
        """
        A Sentinel without a port is on 26379; without a db, db 0; without a password,
        none.
        """
        address = RedisAddress.from_url("redis+sentinel://s1,s2:5000/m")
        self.assertEqual(
            (address.sentinels, address.master, address.db, address.password),
            ((("s1", 26379), ("s2", 5000)), "m", 0, None),
        )

    def test_plain_url_has_no_sentinels(self) -> None:
        """
        A redis:// URL is one Redis, as before.
        """
        address = RedisAddress.from_url("redis://:pw@127.0.0.1:6390/3")
        self.assertEqual(address, RedisAddress("127.0.0.1", 6390, 3, "pw"))
        self.assertEqual((address.master, address.sentinels), (None, ()))

    def test_bad_sentinel_urls(self) -> None:
        """
        A Sentinel URL without a master name, with a bad port or db is refused with a
        message saying what is wrong and what is expected.
        """
        for url, reason in [
            ("redis+sentinel://h1:26379/", "no master name"),
            ("redis+sentinel://h1:port/m", "bad Sentinel 'h1:port'"),
            ("redis+sentinel://h1:70000/m", "bad Sentinel 'h1:70000'"),
            ("redis+sentinel://h1:1,/m", "bad Sentinel ''"),
            ("redis+sentinel://h1/m/zero", "db 'zero' is not a number"),
        ]:
            with self.assertRaises(ConfigError, msg=url) as caught:
                RedisAddress.from_url(url)
            self.assertIn(reason, str(caught.exception))
            self.assertIn("expected redis+sentinel://", str(caught.exception))

    def test_environment_and_durability_settings(self) -> None:
        """
        VORCHD_REDIS takes a Sentinel URL too; min_replicas_acked is 0 unless set, and
        a negative one is refused, naming the setting.
        """
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory, True)
        ini = directory / "vorchd.ini"
        ini.write_text("[redis]\nurl = redis://127.0.0.1:6379/0\n")
        env = {"VORCHD_REDIS": "redis+sentinel://127.0.0.1:26379/vorchd/0"}
        settings = load_settings(str(ini), environ=env)
        self.assertEqual(settings.redis.master, "vorchd")
        self.assertEqual(settings.min_replicas_acked, 0)
        ini.write_text("[redis]\nmin_replicas_acked = 1\nreplicas_ack_timeout = 0.5\n")
        settings = load_settings(str(ini), environ={})
        self.assertEqual((settings.min_replicas_acked, settings.replicas_ack_timeout), (1, 0.5))
        ini.write_text("[redis]\nmin_replicas_acked = -1\n")
        with self.assertRaises(ConfigError) as caught:
            load_settings(str(ini), environ={})
        self.assertIn("min_replicas_acked", str(caught.exception))
