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

The validation set also chose the best epoch, which makes its residuals slightly optimistic; the coverage measured on
held-out sources (README) shows how much that matters.
"""
from __future__ import annotations

import math
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

    scores: np.ndarray  #: (n,) |MOS - prediction| of the validation videos, ascending
    prediction_range: tuple[float, float] | None = None  #: min and max validation prediction
    method: str = METHOD

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
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"{where}: its calibration data cannot be read ({exc})") from None
        return cls(scores, pr)

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
        note = None
        if self.prediction_range is not None:
            lo, hi = self.prediction_range
            if not lo - _EPS <= mos <= hi + _EPS:
                note = (
                    f"the prediction {mos:.3f} lies outside the validation predictions' range [{lo:.3f}, {hi:.3f}]: "
                    "this video may be unlike the validation videos, and the interval's coverage is not guaranteed"
                )
        return Interval(mos - q, mos + q, c, note)


def calibration_from_predictions(pred: Any, mos: Any) -> Calibration:
    """Calibration from a validation set's predictions (n,) and MOS (n,).

    Raises:
        ConfigError: unequal lengths, no samples or non-finite values.
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    m = np.asarray(mos, dtype=np.float64).ravel()
    if p.size != m.size or p.size == 0:
        raise ConfigError(f"calibration needs as many predictions as MOS values (> 0), got {p.size} and {m.size}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(m))):
        raise ConfigError("calibration needs finite predictions and MOS values")
    return Calibration(np.sort(np.abs(m - p)), (float(p.min()), float(p.max())))


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
            row["measured"] = float(np.mean(np.abs(m - p) <= q))
            row["mean_width"] = 2.0 * q
        out.append(row)
    return out
