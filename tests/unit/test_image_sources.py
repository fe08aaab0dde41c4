"""
An image's source line, parsed once, to the local file its bytes are in.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from vorchd.images import ImageUnavailable
from vorchd.images.sources import Sources
from vorchd.inventory import parse_image_text


class SourcesTests(SynchronousTestCase):
    def local_path(self, sources: Sources, line: str):
        return defer.ensureDeferred(sources.local_path(line))

    def test_local_line_is_the_file_itself(self):
        sources = Sources(lambda host: False, None)
        self.assertEqual(
            self.successResultOf(self.local_path(sources, "/srv/images/cirros.img")),
            "/srv/images/cirros.img",
        )

    def test_a_line_is_parsed_once(self):
        sources = Sources(lambda host: False, None)
        first = sources.entry("admin@img-host:/srv/a.img")
        self.assertIs(sources.entry("admin@img-host:/srv/a.img"), first)
        self.assertEqual((first.user, first.host, first.path), ("admin", "img-host", "/srv/a.img"))

    def test_remote_on_this_machine_is_read_in_place(self):
        sources = Sources(lambda host: host == "me", None)
        self.assertEqual(
            self.successResultOf(self.local_path(sources, "me:/srv/a.img")), "/srv/a.img"
        )

    def test_remote_without_cache_is_unavailable(self):
        sources = Sources(lambda host: False, None)
        failure = self.failureResultOf(
            self.local_path(sources, "far:/srv/a.img"), ImageUnavailable
        )
        self.assertIn("no image cache", str(failure.value))

    def test_unparsable_line_is_unavailable(self):
        sources = Sources(lambda host: False, None)
        failure = self.failureResultOf(
            self.local_path(sources, "relative/path.img"), ImageUnavailable
        )
        self.assertIn("unusable", str(failure.value))


class RememberTests(SynchronousTestCase):
    def test_lines_parsed_at_load_are_not_parsed_again(self):
        """
        The entries the image_file was parsed into at load are the ones a create reads.
        """
        [entry] = parse_image_text("/srv/images/cirros.img")
        sources = Sources(lambda host: False, None)
        sources.remember([entry])
        self.assertIs(sources.entry("/srv/images/cirros.img"), entry)
