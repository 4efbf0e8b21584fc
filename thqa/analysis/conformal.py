"""Prediction intervals for scores: split conformal prediction from validation residuals kept by ``thqa train``.

After every epoch ``thqa train`` has the model's predictions of the validation videos; their absolute residuals
``|MOS - prediction|`` (the nonconformity scores), sorted, travel in the checkpoint header under ``"calibration"``.
For a new video with prediction ``y_hat`` and coverage ``1 - alpha`` the interval is ``y_hat +- q``, where ``q`` is
the ``ceil((n + 1) (1 - alpha))``-th smallest of the ``n`` scores. If the new video and the validation videos are
exchangeable (drawn alike from one population), the interval holds the video's MOS with probability at least
``1 - alpha`` (and below ``1 - alpha + 1 / (n + 1)``): on average over such videos, not for each video.

When the interval is not valid:

- the checkpoint holds no calibration (one written before thqa kept it): no interval;
- the validation set is too small for the coverage: ``q`` would be infinite when ``n < (1 - alpha) / alpha``
  (:func:`min_calibration_size`: 9 videos for 90%, 19 for 95%, 99 for 99%): no interval;
- the video is unlike the validation videos (another data set, a generator or a kind of content the validation set
  did not have): the guarantee does not hold. A prediction outside the range of the validation predictions is
  flagged; nothing can detect every such case.

Keeping the promise:

- intervals are clipped to the range of the labels the model was trained on (``label_range``, recorded by ``thqa
  train``; the note of a clipped interval says so): a MOS outside the scale cannot be covered, and the clipped
  interval holds every MOS the unclipped one held;
- when the validation set holds whole groups (portraits: ``thqa train --groups``) the videos of one portrait are
  not exchangeable units - a new portrait's errors share a portrait effect - so the scores are one per group, its
  largest residual, and the rank rule counts groups (``unit = "group"``): valid for a video of a new portrait, and
  honest about how few portraits the validation set had (5 portraits give no 95% interval);
- the validation residuals that choose the epoch are slightly optimistic; ``thqa train --calibration-fraction F``
  holds part of the validation groups apart from the epoch choice and calibrates on them (``held_apart``), and
  ``thqa evaluate`` warns when it measures coverage on the calibration videos themselves (``videos``).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from thqa.errors import CheckpointError, ConfigError

__all__ = [
    "METHOD",
    "Calibration",
    "Interval",
    "calibration_from_predictions",
    "calibration_overlap",
    "check_coverage",
    "conformal_quantile",
    "empirical_coverage",
    "min_calibration_size",
]

METHOD = "split-conformal-abs-residual"
_EPS = 1e-9


def check_coverage(coverage: float) -> float:
    """``coverage`` as a float in (0, 1). Raises ConfigError otherwise."""
    try:
        c = float(coverage)
    except (TypeError, ValueError):
        raise ConfigError(f"coverage must be a number between 0 and 1 (e.g. 0.9), got {coverage!r}") from None
    if not 0.0 < c < 1.0:
        raise ConfigError(f"coverage must be between 0 and 1 (e.g. 0.9), got {coverage!r}")
    return c


def _rank(n: int, coverage: float) -> int:
    """The 1-based rank of the conformal quantile among n sorted scores: ceil((n + 1) * coverage)."""
    return math.ceil((n + 1) * coverage - _EPS)


def min_calibration_size(coverage: float) -> int:
    """The fewest calibration scores for which a ``coverage`` interval is finite (9 for 0.9, 19 for 0.95)."""
    c = check_coverage(coverage)
    n = max(1, math.floor(c / (1.0 - c)) - 1)
    while _rank(n, c) > n:
        n += 1
    return n


def conformal_quantile(scores: Sequence[float], coverage: float) -> float | None:
    """The split-conformal quantile of nonconformity ``scores`` (n,): the ceil((n + 1) coverage)-th smallest;
    None when there are too few scores (the interval would be infinite)."""
    c = check_coverage(coverage)
    s = np.sort(np.asarray(scores, dtype=np.float64))
    k = _rank(s.size, c)
    return None if k > s.size else float(s[k - 1])


@dataclass(frozen=True)
class Interval:
    """A prediction interval ``[low, high]`` at ``coverage``; ``low``/``high`` None with ``note`` saying why when
    there is no valid interval; ``note`` also carries a warning for an interval given under doubt."""

    low: float | None
    high: float | None
    coverage: float
    note: str | None = None

    @property
    def valid(self) -> bool:
        return self.low is not None


@dataclass(frozen=True)
class Calibration:
    """Sorted nonconformity scores from a validation set (see the module docstring)."""

    scores: np.ndarray  #: (n,) |MOS - prediction| of the validation videos (or groups), ascending
    prediction_range: tuple[float, float] | None = None  #: min and max validation prediction
    method: str = METHOD
    #: the MOS range of the labels the model was trained on: intervals are clipped to it (None: not recorded)
    label_range: tuple[float, float] | None = None
    #: "video": one residual per validation video; "group": one per validation group (portrait), its largest
    unit: str = "video"
    n_videos: int | None = None  #: validation videos behind the scores (with unit "group": more than n)
    held_apart: bool = False  #: True: the calibration videos did not choose the epoch (``--calibration-fraction``)
    videos: tuple[str, ...] = ()  #: base names of the calibration videos (``thqa evaluate`` warns on them)

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def to_dict(self) -> dict:
        """The checkpoint header's ``"calibration"`` field (plain JSON)."""
        return {
            "method": self.method,
            "n": self.n,
            "scores": [round(float(x), 6) for x in self.scores],
            "prediction_range": None if self.prediction_range is None else [float(x) for x in self.prediction_range],
            "label_range": None if self.label_range is None else [float(x) for x in self.label_range],
            "unit": self.unit,
            "n_videos": self.n_videos,
            "held_apart": self.held_apart,
            "videos": list(self.videos),
        }

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "checkpoint") -> "Calibration":
        """Read the header field written by :meth:`to_dict`. Raises CheckpointError when it is malformed."""
        try:
            if d.get("method") != METHOD:
                raise ValueError(f"unknown method {d.get('method')!r} (this thqa knows {METHOD!r})")
            scores = np.sort(np.asarray(d["scores"], dtype=np.float64))
            if scores.ndim != 1 or scores.size != int(d.get("n", scores.size)):
                raise ValueError("'n' does not match the number of scores")
            if not np.all(np.isfinite(scores)) or np.any(scores < 0):
                raise ValueError("scores must be finite and >= 0")
            rng = d.get("prediction_range")
            pr = None if rng is None else (float(rng[0]), float(rng[1]))
            lr = d.get("label_range")
            lr = None if lr is None else (float(lr[0]), float(lr[1]))
            if lr is not None and not (math.isfinite(lr[0]) and math.isfinite(lr[1]) and lr[0] <= lr[1]):
                raise ValueError(f"label_range {list(lr)} is not a finite [low, high]")
            unit = d.get("unit", "video")
            if unit not in ("video", "group"):
                raise ValueError(f"unknown unit {unit!r}")
            nv = d.get("n_videos")
            videos = tuple(str(v) for v in d.get("videos", ()))
            extra = {"label_range": lr, "unit": unit, "n_videos": None if nv is None else int(nv),
                     "held_apart": bool(d.get("held_apart", False)), "videos": videos}
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"{where}: its calibration data cannot be read ({exc})") from None
        return cls(scores, pr, **extra)

    def quantile(self, coverage: float) -> float | None:
        return conformal_quantile(self.scores, coverage)

    def interval(self, mos: float, coverage: float) -> Interval:
        """The interval around a prediction ``mos``, or none with the reason."""
        c = check_coverage(coverage)
        q = self.quantile(c)
        if q is None:
            need = min_calibration_size(c)
            return Interval(
                None, None, c,
                f"no prediction interval: the checkpoint's validation set had {self.n} videos, a {c:.0%} interval needs "
                f"at least {need} (validate on more videos, or lower the coverage to {math.floor(100 * self.n / (self.n + 1)) / 100:g} or less)",
            )
        notes = []
        if self.prediction_range is not None:
            lo, hi = self.prediction_range
            if not lo - _EPS <= mos <= hi + _EPS:
                notes.append(
                    f"the prediction {mos:.3f} lies outside the validation predictions' range [{lo:.3f}, {hi:.3f}]: "
                    "this video may be unlike the validation videos, and the interval's coverage is not guaranteed"
                )
        low, high = mos - q, mos + q
        if self.label_range is not None and (low < self.label_range[0] or high > self.label_range[1]):
            lo, hi = self.label_range
            low, high = min(max(low, lo), hi), max(min(high, hi), lo)
            notes.append(f"interval clipped to the training labels' range [{lo:g}, {hi:g}]")
        return Interval(low, high, c, "; ".join(notes) or None)


def calibration_from_predictions(
    pred: Any,
    mos: Any,
    *,
    label_range: tuple[float, float] | None = None,
    groups: Sequence[str] | None = None,
    held_apart: bool = False,
    videos: Sequence[str] = (),
) -> Calibration:
    """Calibration from a validation set's predictions (n,) and MOS (n,).

    Args:
        label_range: the (min, max) MOS of the labels the model learnt from: intervals are clipped to it.
        groups: (n,) each video's group (portrait) when validation holds whole groups: then the scores are one per
            group, its largest residual, and the rank rule counts groups - what keeps the guarantee for a video of a
            new portrait, whose errors share its portrait's (videos of one portrait are not exchangeable units).
        held_apart: the calibration videos did not choose the epoch; videos: their base names.

    Raises:
        ConfigError: unequal lengths, no samples or non-finite values.
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    m = np.asarray(mos, dtype=np.float64).ravel()
    if p.size != m.size or p.size == 0:
        raise ConfigError(f"calibration needs as many predictions as MOS values (> 0), got {p.size} and {m.size}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(m))):
        raise ConfigError("calibration needs finite predictions and MOS values")
    res = np.abs(m - p)
    unit = "video"
    if groups is not None:
        g = np.asarray(list(groups), dtype=object).astype(str)
        if g.size != p.size:
            raise ConfigError(f"calibration needs a group for every video, got {g.size} for {p.size}")
        keys, inv = np.unique(g, return_inverse=True)
        if keys.size < g.size:  # some group holds several videos: one score per group
            worst = np.zeros(keys.size)
            np.maximum.at(worst, inv, res)
            res, unit = worst, "group"
    lr = None if label_range is None else (float(label_range[0]), float(label_range[1]))
    return Calibration(np.sort(res), (float(p.min()), float(p.max())), label_range=lr, unit=unit, n_videos=int(p.size),
                       held_apart=bool(held_apart), videos=tuple(str(v) for v in videos))


def calibration_overlap(calibration: Calibration, paths: Sequence[str]) -> int:
    """How many of ``paths`` (matched by base name) are among the calibration's own videos."""
    own = set(calibration.videos)
    return sum(os.path.basename(str(p)) in own for p in paths)


def empirical_coverage(pred: Any, mos: Any, calibration: Calibration, coverages: Sequence[float] = (0.8, 0.9, 0.95)) -> list[dict]:
    """How often the intervals around held-out predictions (n,) hold their MOS (n,), per nominal coverage.

    Returns:
        One dict per coverage: ``nominal``, ``measured`` (fraction inside; None without a valid interval),
        ``mean_width`` (2 q), ``n`` (videos), ``n_calibration``, ``note`` (why there is no interval).
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    m = np.asarray(mos, dtype=np.float64).ravel()
    out = []
    for c in coverages:
        q = calibration.quantile(c)
        row = {"nominal": float(c), "measured": None, "mean_width": None, "n": int(p.size), "n_calibration": calibration.n, "note": None}
        if q is None:
            row["note"] = f"needs at least {min_calibration_size(c)} validation videos, the checkpoint has {calibration.n}"
        else:
            low, high = p - q, p + q
            if calibration.label_range is not None:
                lo, hi = calibration.label_range
                low, high = np.clip(low, lo, hi), np.clip(high, lo, hi)
            row["measured"] = float(np.mean((low <= m + _EPS) & (m - _EPS <= high)))
            row["mean_width"] = float(np.mean(high - low))
        out.append(row)
    return out
