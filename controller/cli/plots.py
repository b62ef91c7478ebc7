"""Charts of a forecast: conversions at work on each path over the peak, before and after a move.

PNG or SVG by the file's suffix, drawn with matplotlib (Agg), imported only when a plot is asked
for: it is not one of the project's dependencies, and a missing one is a clear error, not a
traceback. Draws only; computes nothing a forecast does not already hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any

from controller.core.errors import InputError
from controller.engine.simulation import SimResult, series

FORMATS = (".png", ".svg")


def check_plot_path(path: FsPath) -> None:
    """Refuse, before any work is done, a plot file that cannot be written."""
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"--plot {path}: the file must end in .png or .svg")
    if not path.parent.is_dir():
        raise InputError(f"--plot {path}: no directory {path.parent}")


def plot_forecast(runs: Mapping[str, SimResult], budget: int, path: FsPath, title: str) -> None:
    """Write one chart per run, stacked, to ``path`` (PNG or SVG)."""
    check_plot_path(path)
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.6 * len(runs) + 0.6), sharex=True, squeeze=False)
    longest = max((r.makespan for r in runs.values()), default=1.0)
    unit, scale = ("h", 3600.0) if longest >= 3 * 3600 else (("min", 60.0) if longest >= 180 else ("s", 1.0))
    for ax, (label, run) in zip(axes[:, 0], runs.items(), strict=True):
        _draw(ax, label, run, budget, scale)
    axes[-1, 0].set_xlabel(f"time since the first arrival ({unit})")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format=path.suffix.lower().lstrip("."))
    plt.close(fig)


def _draw(ax: Any, label: str, run: SimResult, budget: int, scale: float) -> None:
    s = series(run)
    t = [x / scale for x in s["t"]]
    ax.stackplot(t, s["legacy"], s["new"], labels=["old path", "new path"], step="post", alpha=0.8)
    ax.axhline(budget, color="black", linestyle="--", linewidth=1, label=f"budget {budget}")
    ax.set_ylim(0, budget * 1.15 + 1)
    ax.set_ylabel("at work")
    ax.set_title(f"{label}: makespan {run.makespan / scale:.2f}, peak {run.peak()}", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise InputError("--plot needs matplotlib, which is not installed: pip install matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
