"""
How vorchd's command-line tools end: one exit status for the same events in each.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence


def run_main(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    work: Callable[[argparse.Namespace], None],
    failures: tuple[type[BaseException], ...],
) -> int:
    """
    Parse C{argv} with C{parser} and run C{work(options)}.

    @return: the exit status: 0 done, 1 failed (one of C{failures}, said on stderr in
        one line, or the reader of stdout gone), 2 wrong usage (argparse's own), 130
        interrupted.
    """
    try:
        options = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or wrong usage (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        work(options)
    except failures as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (vorch vm list | head): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0
