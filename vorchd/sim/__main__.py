"""
C{python -m vorchd.sim}: the same as the C{vorchd-sim} console script.
"""

import sys

from vorchd.sim.cli import main

sys.exit(main())
