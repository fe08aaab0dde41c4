"""
One way for a test to need a real part: tests.harness.require fails loudly unless the
local opt-out is set.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.harness import require


class RequireTests(SynchronousTestCase):
    def setUp(self):
        saved = os.environ.pop("VORCHD_ALLOW_MISSING", None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, "VORCHD_ALLOW_MISSING", saved)

    def test_nothing_missing_passes(self):
        require(None)

    def test_missing_part_fails(self):
        with self.assertRaises(AssertionError) as caught:
            require("no libvirtd here")
        self.assertIn("no libvirtd here", str(caught.exception))
        self.assertIn("VORCHD_ALLOW_MISSING", str(caught.exception))

    def test_opt_out_skips(self):
        os.environ["VORCHD_ALLOW_MISSING"] = "1"
        self.addCleanup(os.environ.pop, "VORCHD_ALLOW_MISSING", None)
        with self.assertRaises(SkipTest):
            require("no libvirtd here")
