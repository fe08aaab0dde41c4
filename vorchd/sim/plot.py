"""
C{vorchd-sim --plot FILE.png}: the policies in one figure. Over time, one line per
policy, the fleet's cpu, ram and disk utilisation and the requests refused so far; below,
the final fill of every PM as a heat strip, one row per policy, PMs in pmid order.

matplotlib is needed only here, and imported only when a figure is asked for. The figure
is drawn on its own canvas (no pyplot, no display), so it works on a headless machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from vorchd.model import RESOURCES
from vorchd.sim.fleet import SimError
from vorchd.sim.run import Outcome

_STYLES = ("-", "--", "-.", ":")


def plot(outcomes: Sequence[Outcome], path: str | os.PathLike[str], title: str = "") -> None:
    """
    Write the figure of C{outcomes} to C{path} as a PNG.

    @raise SimError: matplotlib is not installed, or the file cannot be written.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise SimError(
            "--plot needs matplotlib: pip install matplotlib (into vorchd's venv)"
        ) from None
    import numpy as np

    n = max(len(outcomes), 1)
    figure = Figure(figsize=(13, 8.5 + 0.35 * n), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(3, 2, height_ratios=[1, 1, 0.25 + 0.12 * n])
    panels = [figure.add_subplot(grid[k // 2, k % 2]) for k in range(4)]
    for i, o in enumerate(outcomes):
        # Policies that decide alike draw the same line: a style of its own shows each.
        style = {"label": o.policy, "linestyle": _STYLES[i % len(_STYLES)], "linewidth": 1.4}
        hours = np.asarray(o.series.get("time", []), dtype=float) / 3600.0
        for k, r in enumerate(RESOURCES):
            panels[k].plot(hours, 100 * np.asarray(o.series.get(r, [])), **style)
        panels[3].plot(hours, o.series.get("refused", []), **style)
    for k, r in enumerate(RESOURCES):
        panels[k].set_title(f"{r} utilisation")
        panels[k].set_ylabel("% of the fleet's limit")
        panels[k].set_ylim(0, 105)
    panels[3].set_title("requests refused so far")
    panels[3].set_ylabel("refused")
    for ax in panels:
        ax.set_xlabel("trace time (h)")
        ax.grid(True, alpha=0.3)
    if outcomes:
        panels[0].legend(fontsize="small", loc="lower right")

    strip = figure.add_subplot(grid[2, :])
    fills = np.vstack([o.fill for o in outcomes]) if outcomes else np.zeros((1, 1))
    image = strip.imshow(
        100 * fills,
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        vmin=0,
        vmax=100,
        extent=(0.5, fills.shape[1] + 0.5, len(outcomes) - 0.5, -0.5),
    )
    strip.set_yticks(range(len(outcomes)), [o.policy for o in outcomes])
    strip.set_xlabel("PM (pmid order)")
    strip.set_title("each PM's fill at the end (mean of cpu, ram, disk used / limit)")
    figure.colorbar(image, ax=strip, label="% full", pad=0.01)
    if title:
        figure.suptitle(title)
    try:
        figure.savefig(path, format="png", dpi=100)
    except OSError as e:
        raise SimError(f"--plot {os.fspath(path)}: {e.strerror or e}") from None
