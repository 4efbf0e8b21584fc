"""The plot of ``thqa compare --plot``: each group's figure with its CI (predictions, and labels beside them), and
below them each pair's difference with its CI."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from thqa.analysis.comparison_results import Comparison, PairStats, fmt_ci
from thqa.errors import ConfigError
from thqa.utils.atomic import atomic_path

#: the most pair differences :func:`plot_comparison` draws (the largest ones)
PLOT_MAX_PAIRS = 30


def _plot_pairs(ax, pairs: list[PairStats], pct: str, n_all: int) -> None:
    """Each pair's difference of mean predictions (a - b) with its CI; filled where significant (Holm)."""
    y = np.arange(len(pairs))[::-1]
    for yi, q in zip(y, pairs):
        lo, hi = (q.diff - q.ci[0], q.ci[1] - q.diff) if q.ci else (0.0, 0.0)
        ax.errorbar([q.diff], [yi], xerr=[[lo], [hi]], fmt="o", color="C3" if q.significant else "0.45", ms=4, capsize=2, lw=1,
                    mfc="C3" if q.significant else "white")
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels([f"{q.a} - {q.b}" + (" (paired)" if q.paired else "") for q in pairs], fontsize=7)
    ax.set_ylim(-0.7, len(pairs) - 0.3)
    shown = "" if n_all <= len(pairs) else f"; the {len(pairs)} largest of {n_all}"
    ax.set_xlabel(f"prediction: a - b and {pct} CI (filled: significant){shown}")
    ax.grid(True, axis="x", alpha=0.3)


def plot_comparison(res: Comparison, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Draw each group's mean with its CI (predictions; labels beside them when given) and write it atomically.

    Groups run down the vertical axis in the predictions' rank order. Predictions and labels get a panel each, so
    predictions on another scale than the labels are still readable. Below them, each pair's difference of mean
    predictions with its CI (paired where the groups share sources): filled where Holm's test finds it significant
    - the two groups' intervals can overlap while their paired difference is clear. At most
    :data:`PLOT_MAX_PAIRS` pairs, the largest differences.

    Raises:
        ConfigError: matplotlib cannot write this file format.
    """
    # matplotlib loads late: `thqa compare` without --plot does not need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    labelled = any(g.label_mean is not None for g in res.groups)
    n = len(res.groups)
    pairs = sorted(res.pairs, key=lambda q: -abs(q.diff))[:PLOT_MAX_PAIRS]
    fig = Figure(figsize=(9.0 if labelled else 6.0, 1.6 + 0.28 * (n + len(pairs))), dpi=120)
    canvas = FigureCanvasAgg(fig)
    fmt = path.suffix[1:].lower() or "png"
    if fmt not in canvas.get_supported_filetypes():
        raise ConfigError(f"cannot write a {fmt!r} plot; supported: {', '.join(sorted(canvas.get_supported_filetypes()))}")
    ncols = 2 if labelled else 1
    grid = fig.add_gridspec(2 if pairs else 1, ncols, height_ratios=[n + 1, len(pairs) + 1] if pairs else None)
    axes = [fig.add_subplot(grid[0, 0])]
    axes += [fig.add_subplot(grid[0, j], sharey=axes[0]) for j in range(1, ncols)]
    y = np.arange(n)[::-1]
    panels = [("prediction", "mean", "ci", "C0")] + ([("label (MOS)", "label_mean", "label_ci", "C3")] if labelled else [])
    pct = f"{100 * res.ci_level:g}%"
    for ax, (what, mean_key, ci_key, color) in zip(axes, panels):
        means = np.array([getattr(g, mean_key) for g in res.groups], dtype=float)
        cis = [getattr(g, ci_key) for g in res.groups]
        lo = np.array([m - c[0] if c else 0.0 for m, c in zip(means, cis)])
        hi = np.array([c[1] - m if c else 0.0 for m, c in zip(means, cis)])
        ax.errorbar(means, y, xerr=[lo, hi], fmt="o", color=color, ms=4, capsize=2, lw=1)
        no_ci = [i for i, c in enumerate(cis) if c is None]
        if no_ci:
            ax.plot(means[no_ci], y[no_ci], "x", color="k", ms=6, label="no CI")
            ax.legend(loc="lower right", fontsize=7)
        ax.set_xlabel(f"{what}: mean and {pct} CI")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([f"{g.group} (n={g.n})" for g in res.groups], fontsize=7)
    axes[0].set_ylim(-0.7, n - 0.3)
    if pairs:
        _plot_pairs(fig.add_subplot(grid[1, :]), pairs, pct, len(res.pairs))
    heading = title or f"{n} groups, bootstrap by {res.resampling}"
    if res.system is not None:
        s = res.system
        heading += f"\nsystem SRCC {s.srcc:.3f} {fmt_ci(s.srcc_ci)}, PLCC {s.plcc:.3f}"
    fig.suptitle(heading, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format=fmt)
    os.chmod(path, 0o644)
    return path
