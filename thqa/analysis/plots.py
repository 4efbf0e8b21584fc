"""Plots of predictions against MOS (headless: matplotlib's object API on an Agg canvas, no pyplot state)."""
from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from thqa.utils.atomic import atomic_path
from thqa.errors import ConfigError, DependencyError
from thqa.analysis.metrics import FitKind, evaluate_with_curve

__all__ = ["scatter_plot", "timeline_plot", "sync_plot", "check_plot_path"]

logger = logging.getLogger(__name__)


def _matplotlib(what: str) -> tuple[Any, Any]:
    """matplotlib's ``Figure`` and Agg canvas classes.

    Loaded here, when a plot is drawn, not at the top: the modules that import this one at their top (the demo,
    comparisons, the CLI's output checks) then pay matplotlib's import only when they draw (test_metrics guards it).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise DependencyError(f"{what} needs matplotlib: pip install matplotlib") from exc
    return Figure, FigureCanvasAgg


def check_plot_path(path: str | os.PathLike[str]) -> str:
    """The plot format that ``path``'s suffix asks for (none: png).

    Raises:
        ConfigError: matplotlib cannot write that format (the message lists those it can).
    """
    Figure, FigureCanvasAgg = _matplotlib("check_plot_path")
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
    label: str = "MOS",
) -> Path:
    """Draw predictions (x) against MOS (y) with the fitted curve, and write the figure atomically.

    Args:
        pred: predictions, shape (N,).
        mos: ground-truth MOS, shape (N,).
        path: output file; its suffix picks the format (``.png``, ``.pdf``, ``.svg``, ...; none -> PNG).
            Missing parent folders are created.
        fit: curve drawn and used for PLCC (see :func:`thqa.analysis.metrics.evaluate`).
        title: first title line; the metrics (SRCC, PLCC, main score, n) are always shown below it.
        label: what the vertical axis holds ("MOS"; the demo's rule-made labels: "pseudo-MOS").

    Returns:
        The written path.

    Raises:
        MetricError: the inputs cannot be scored (see :func:`thqa.analysis.metrics.evaluate`).
        ConfigError: matplotlib cannot write this file format.
    """
    Figure, FigureCanvasAgg = _matplotlib("scatter_plot")

    path = Path(path)
    metrics, curve = evaluate_with_curve(pred, mos, fit=fit)
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)

    fmt = check_plot_path(path)
    fig = Figure(figsize=(6.0, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    _draw_scatter(fig.add_subplot(1, 1, 1), x, y, metrics, curve if fit != "none" else None, title=title, label=label)
    fig.tight_layout()

    with atomic_path(path) as tmp:  # complete or absent, with the umask's file mode
        fig.savefig(str(tmp), format=fmt)
    logger.debug("wrote scatter plot %s", path)
    return path


def _draw_scatter(ax: Any, x: np.ndarray, y: np.ndarray, metrics: dict, curve: Any, *, title: str | None, label: str) -> None:
    """(N,) predictions ``x`` against (N,) MOS ``y``, the fitted ``curve`` (None: no fit), the metrics in the title."""
    ax.scatter(x, y, s=8, alpha=0.5, linewidths=0, label=f"videos (n={metrics['n']})")
    grid = np.linspace(float(x.min()), float(x.max()), 256)
    if curve is not None:
        ax.plot(grid, curve(grid), color="C3", linewidth=2, label=f"{curve.kind} fit")
    ax.set_xlabel("prediction")
    ax.set_ylabel(label)
    stats_line = (
        f"SRCC {metrics['srcc']:.4f}  PLCC {metrics['plcc']:.4f}  main {metrics['main_score']:.4f}  "
        f"RMSE {metrics['rmse']:.3f}"
    )
    ax.set_title(f"{title}\n{stats_line}" if title else stats_line, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def timeline_plot(result: Any, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Draw a file's per-second scores (a :class:`thqa.ScoreResult` from ``Scorer.explain``) and write it atomically.

    Top panel: the score of every second (a step per second), the seconds the method's clips were sampled from
    (shaded), and the file's MOS (dashed). Bottom panel, when the result has a sync estimate: the agreement of the
    mouth's motion with the speech per second at the measured offset, with the offset and its confidence.

    Raises:
        ConfigError: the result has no timeline, or matplotlib cannot write this file format.
    """
    Figure, FigureCanvasAgg = _matplotlib("timeline_plot")

    if not getattr(result, "timeline", None):
        raise ConfigError(f"{getattr(result, 'path', '?')}: no timeline to plot (score it with timeline=True)")
    path = Path(path)
    scores = np.asarray(result.timeline, dtype=np.float64)
    n = len(scores)
    agreement = getattr(result, "av_sync_agreement", None)
    has_sync = bool(agreement) or bool(getattr(result, "av_sync_error", None))
    fig = Figure(figsize=(max(7.0, min(16.0, 0.25 * n + 5.0)), 6.0 if has_sync else 4.2), dpi=110)
    canvas = FigureCanvasAgg(fig)
    fmt = path.suffix[1:].lower() or "png"
    if fmt not in canvas.get_supported_filetypes():
        raise ConfigError(f"cannot write a {fmt!r} plot; supported: {', '.join(sorted(canvas.get_supported_filetypes()))}")
    if has_sync:
        ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    else:
        ax, ax2 = fig.add_subplot(1, 1, 1), None
    _draw_scores(ax, result, scores, title)
    last = ax
    if ax2 is not None:
        last = ax2
        _draw_agreement(ax2, result, agreement, n)
    last.set_xlabel("time in the video (s)")
    fig.tight_layout()
    _save(fig, path, fmt)
    logger.debug("wrote timeline plot %s", path)
    return path


def _draw_scores(ax: Any, result: Any, scores: np.ndarray, title: str | None) -> None:
    """The top panel of :func:`timeline_plot`: the (n,) per-second ``scores``, the sampled seconds, the file's MOS."""
    n = len(scores)
    edges = np.arange(n + 1)
    ax.stairs(scores, edges, baseline=None, color="C0", linewidth=2, label="score of each second (its clip scores in the sliding windows, averaged)")
    for i, s in enumerate(sorted(set(result.seconds or []))):
        ax.axvspan(s, s + 1, color="C2", alpha=0.15, linewidth=0, label="the seconds sampled for the file's MOS" if i == 0 else None)
    if result.mos is not None:
        # not the mean of the line: the model sees the sampled seconds together (spread over the file), and its
        # sequence model scores them in that context, so the MOS may lie above or below every per-second score
        ax.axhline(
            result.mos, color="C3", linestyle="--", linewidth=1.5,
            label=f"file MOS {result.mos:.2f}: the model on the shaded seconds together (not the line's mean)",
        )
    lo, hi = float(np.min(scores)), float(np.max(scores))
    pad = max(0.1, 0.15 * (hi - lo))
    ax.set_ylim(min(lo, result.mos if result.mos is not None else lo) - pad, max(hi, result.mos if result.mos is not None else hi) + pad)
    ax.set_ylabel("predicted quality\n(MOS scale, higher is better)")
    ax.set_xlim(0, n)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    name = Path(result.path).name
    note = "  [untrained model: the scores mean nothing]" if getattr(result, "untrained", False) else ""
    ax.set_title(f"{title or name}: quality over time{note}", fontsize=10)


def _draw_agreement(ax2: Any, result: Any, agreement: Any, n: int) -> None:
    """The bottom panel of :func:`timeline_plot`: the lip/speech agreement per second, or why there is none."""
    if agreement:
        a = np.asarray(agreement, dtype=np.float64)
        m = min(len(a), n)
        ax2.stairs(a[:m], np.arange(m + 1), baseline=None, color="C1", linewidth=2, label="mouth motion vs speech")
        ax2.axhline(0.0, color="k", linewidth=0.6)
        ax2.set_ylim(-0.5, 1.0)
        conf = getattr(result, "av_sync_confidence", None)
        weak = " (unreliable: a guess)" if getattr(result, "av_sync_reliable", None) is False else ""
        ax2.set_title(
            f"lip sync: offset {result.av_offset_ms:+.0f} ms (sound {'later' if result.av_offset_ms >= 0 else 'earlier'} than the lips), "
            f"confidence {conf:.1f}{weak}" if result.av_offset_ms is not None else "lip sync",
            fontsize=9,
        )
    else:
        ax2.text(0.5, 0.5, f"no sync estimate: {result.av_sync_error}", ha="center", va="center", wrap=True, fontsize=8, transform=ax2.transAxes)
        ax2.set_yticks([])
    ax2.set_ylabel("lip/speech agreement\n(correlation, 1 = perfect)")
    ax2.grid(True, alpha=0.3)


def sync_plot(result: Any, path: str | os.PathLike[str]) -> Path:
    """Draw a file's lip-sync analysis (a :class:`thqa.SyncResult`) and write it atomically.

    Top panel: the agreement of the mouth's motion with the speech at every candidate offset, the offset found (or
    why none is reported), so that a weak or double peak can be seen. Bottom panel: the agreement per second of
    the video at that offset (where it drops, the lips stop following the sound).

    Raises:
        ConfigError: the result has no agreement curve (no audio, no face, too short: its ``error`` says why), or
            matplotlib cannot write this file format.
    """
    Figure, FigureCanvasAgg = _matplotlib("sync_plot")

    if not result.curve:
        raise ConfigError(f"{result.path}: no agreement curve to plot ({result.error or 'not analysed'})")
    path = Path(path)
    fmt = check_plot_path(path)
    fig = Figure(figsize=(8.0, 6.0), dpi=110)
    FigureCanvasAgg(fig)
    ax, ax2 = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
    _draw_sync_curve(ax, result)
    a = np.asarray(result.agreement_per_second or [], dtype=np.float64)
    if a.size:
        ax2.stairs(a, np.arange(a.size + 1), baseline=None, color="C1", linewidth=2)
        ax2.set_xlim(0, a.size)
    ax2.axhline(0.0, color="k", linewidth=0.6)
    ax2.set_ylim(-0.5, 1.0)
    ax2.set_xlabel("time in the video (s)")
    ax2.set_ylabel("agreement per second\n(at the peak's offset)")
    ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    _save(fig, path, fmt)
    logger.debug("wrote sync plot %s", path)
    return path


def _draw_sync_curve(ax: Any, r: Any) -> None:
    """The agreement per candidate offset, the peak marked, the verdict in the title."""
    x = np.asarray(r.curve_offsets_ms, dtype=np.float64)
    y = np.asarray(r.curve, dtype=np.float64)
    ax.plot(x, y, color="C0", linewidth=1.5)
    ax.axvline(0.0, color="k", linewidth=0.6)
    k = int(np.argmax(y))
    found = r.offset_ms is not None
    ax.axvline(r.offset_ms if found else x[k], color="C3" if found else "C7", linestyle="--", linewidth=1.2)
    ax.set_xlim(float(x[0]), float(x[-1]))
    ax.set_xlabel("candidate offset (ms; > 0: the sound comes later than the lips)")
    ax.set_ylabel("agreement of mouth motion\nwith speech (correlation)")
    ax.grid(True, alpha=0.3)
    how = f"{r.locator} locator" + (f", {r.faces} face(s)" if r.faces else "") + (f", {r.repeated_frames} repeated frames dropped" if r.repeated_frames else "")
    if found:
        side = "later" if r.offset_ms >= 0 else "earlier"
        verdict = f"offset {r.offset_ms:+.0f} ms (sound {side} than the lips), confidence {r.confidence:.1f}"
        if r.reliable is False:
            verdict += f"; UNRELIABLE: {r.note}"
    else:
        verdict = f"no offset reported: {_reason(r.error)}"
    text = textwrap.fill(f"{Path(r.path).name}: {verdict}", 100)
    ax.set_title(f"{text}\n({how})", fontsize=9)


def _reason(error: str | None) -> str:
    """The part of a sync error after the file name."""
    text = error or "not analysed"
    return text.split(": ", 1)[1] if ": " in text else text


def _save(fig: Any, path: Path, fmt: str) -> None:
    """Write ``fig`` to ``path`` atomically, with the umask's file mode, creating missing parent folders."""
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format=fmt)
