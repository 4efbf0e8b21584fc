"""Plots of predictions against MOS (headless: matplotlib's object API on an Agg canvas, no pyplot state)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from thqa._atomic import atomic_path
from thqa.errors import ConfigError, DependencyError
from thqa.metrics import FitKind, evaluate_with_curve

__all__ = ["scatter_plot", "check_plot_path"]

logger = logging.getLogger(__name__)


def check_plot_path(path: str | os.PathLike[str]) -> str:
    """The plot format that ``path``'s suffix asks for (none: png).

    Raises:
        ConfigError: matplotlib cannot write that format (the message lists those it can).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fmt = Path(path).suffix[1:].lower() or "png"
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if fmt not in supported:
        raise ConfigError(f"{path}: cannot write a {fmt!r} plot; supported: {', '.join(sorted(supported))}")
    return fmt


def scatter_plot(
    pred: Any,
    mos: Any,
    path: str | os.PathLike[str],
    *,
    fit: FitKind = "poly3",
    title: str | None = None,
) -> Path:
    """Draw predictions (x) against MOS (y) with the fitted curve, and write the figure atomically.

    Args:
        pred: predictions, shape (N,).
        mos: ground-truth MOS, shape (N,).
        path: output file; its suffix picks the format (``.png``, ``.pdf``, ``.svg``, ...; none -> PNG).
            Missing parent folders are created.
        fit: curve drawn and used for PLCC (see :func:`thqa.metrics.evaluate`).
        title: first title line; the metrics (SRCC, PLCC, main score, n) are always shown below it.

    Returns:
        The written path.

    Raises:
        MetricError: the inputs cannot be scored (see :func:`thqa.metrics.evaluate`).
        ConfigError: matplotlib cannot write this file format.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise DependencyError("scatter_plot needs matplotlib: pip install matplotlib") from exc

    path = Path(path)
    metrics, curve = evaluate_with_curve(pred, mos, fit=fit)
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)

    fmt = check_plot_path(path)
    fig = Figure(figsize=(6.0, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(x, y, s=8, alpha=0.5, linewidths=0, label=f"videos (n={metrics['n']})")
    grid = np.linspace(float(x.min()), float(x.max()), 256)
    if fit != "none":
        ax.plot(grid, curve(grid), color="C3", linewidth=2, label=f"{curve.kind} fit")
    ax.set_xlabel("prediction")
    ax.set_ylabel("MOS")
    stats_line = (
        f"SRCC {metrics['srcc']:.4f}  PLCC {metrics['plcc']:.4f}  main {metrics['main_score']:.4f}  "
        f"RMSE {metrics['rmse']:.3f}"
    )
    ax.set_title(f"{title}\n{stats_line}" if title else stats_line, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()

    with atomic_path(path) as tmp:  # complete or absent, with the umask's file mode
        fig.savefig(str(tmp), format=fmt)
    logger.debug("wrote scatter plot %s", path)
    return path
