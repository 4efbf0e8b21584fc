"""Quality-assessment metrics and the NTIRE 2025 XGC (talking head track) scoring protocol.

Protocol: ``main_score = (|SRCC| + |PLCC|) / 2``. SRCC and KRCC are computed on the raw predictions; PLCC and RMSE
after mapping the predictions onto the MOS scale with a fitted curve:

- ``"poly3"`` (the challenge's default): a third-order polynomial ``np.polyfit(pred, mos, 3)``.
- ``"logistic4"`` (most VQA papers): ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.
  If the fit fails (no convergence, non-finite or constant result), a linear fit is used instead and a warning is
  logged; the returned curve's ``kind`` is then ``"linear"``.
- ``"none"``: no mapping (PLCC on raw predictions; RMSE is then only meaningful if predictions are on the MOS scale).

Also scores the challenge's prediction files against label files (``name.mp4,score``); the readers and the matching
by file name live in :mod:`thqa.data.predictions` and are importable from here too.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import optimize, special, stats

from thqa.data.predictions import MatchReport, match_by_path, match_predictions, read_labels, read_predictions, unique_tails
from thqa.errors import MetricError
from thqa.utils.choices import FIT_KINDS  # defined there: the CLI and TrainConfig read it without loading scipy

__all__ = [
    "FIT_KINDS",
    "FittedCurve",
    "MatchReport",
    "evaluate",
    "evaluate_files",
    "evaluate_with_curve",
    "fit_predictions",
    "match_predictions",
    "match_by_path",
    "unique_tails",
    "read_labels",
    "read_predictions",
    "as_1d",
]

logger = logging.getLogger(__name__)

FitKind = Literal["poly3", "logistic4", "none"]

_MIN_SAMPLES_CORR = 3  # plain correlations
_MIN_DISTINCT_FIT = 5  # poly3 (4 coefficients) and logistic4 (4 parameters): at least one degree of freedom left
_LOGISTIC_MAXFEV = 20000


# ----------------------------------------------------------------------------------------------------------- fits
@dataclass(frozen=True)
class FittedCurve:
    """A fitted mapping from predictions to the MOS scale; call it on an array of predictions.

    ``kind`` is the curve actually used: ``"poly3"``, ``"logistic4"``, ``"linear"`` (logistic fallback) or
    ``"none"`` (identity). Parameters apply to standardised predictions ``z = (x - x_mean) / x_std``.
    """

    kind: str
    params: tuple[float, ...]
    x_mean: float = 0.0
    x_std: float = 1.0

    def __call__(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "none":
            return x.copy()
        z = (x - self.x_mean) / self.x_std
        if self.kind == "logistic4":
            return _logistic4(z, *self.params)
        return np.polyval(np.asarray(self.params), z)


def _logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    scale = max(abs(b4), np.finfo(np.float64).tiny)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return (b1 - b2) * special.expit((x - b3) / scale) + b2


def as_1d(values: Any, what: str) -> np.ndarray:
    """``values`` as a 1-D float64 array of finite numbers; MetricError naming ``what`` otherwise."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"{what} must be numbers: {exc}") from None
    if arr.ndim != 1:
        raise MetricError(f"{what} must be 1-D, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise MetricError(
            f"{what} contain {idx.size} non-finite value(s) (NaN/inf), first at index {int(idx[0])}: {arr[idx[0]]}"
        )
    return arr


def _check_inputs(pred: Any, mos: Any, fit: str) -> tuple[np.ndarray, np.ndarray]:
    if fit not in FIT_KINDS:
        raise MetricError(f"unknown fit {fit!r}; expected one of {', '.join(FIT_KINDS)}")
    p = as_1d(pred, "predictions")
    m = as_1d(mos, "MOS values")
    if p.shape != m.shape:
        raise MetricError(f"predictions and MOS differ in length: {p.size} vs {m.size}")
    if p.size < _MIN_SAMPLES_CORR:
        raise MetricError(f"need at least {_MIN_SAMPLES_CORR} samples for correlations, got {p.size}")
    if np.ptp(p) == 0:
        raise MetricError(f"all {p.size} predictions are equal ({p[0]}): correlation is undefined")
    if np.ptp(m) == 0:
        raise MetricError(f"all {m.size} MOS values are equal ({m[0]}): correlation is undefined")
    if fit != "none":
        distinct = np.unique(p).size
        if distinct < _MIN_DISTINCT_FIT:
            raise MetricError(
                f"the {fit} fit needs at least {_MIN_DISTINCT_FIT} distinct prediction values, got {distinct} "
                f"(of {p.size} samples); use fit='none' for tiny sets"
            )
    return p, m


def _fit_checked(p: np.ndarray, m: np.ndarray, fit: str) -> tuple[np.ndarray, FittedCurve]:
    if fit == "none":
        curve = FittedCurve("none", ())
        return curve(p), curve
    # Standardising x keeps polyfit / curve_fit well conditioned (e.g. predictions around 1e3 with tiny spread);
    # the family of curves is the same, so the fit equals np.polyfit(pred, mos, 3) up to rounding.
    mu, sd = float(p.mean()), float(p.std())
    z = (p - mu) / sd
    if fit == "poly3":
        curve = FittedCurve("poly3", tuple(float(c) for c in np.polyfit(z, m, 3)), mu, sd)
        return curve(p), curve

    p0 = [float(m.max()), float(m.min()), 0.0, 1.0 + 1e-6]  # = b3 mean(pred), b4 std(pred) in raw units
    reason = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(_logistic4, z, m, p0=p0, maxfev=_LOGISTIC_MAXFEV)
    except (RuntimeError, ValueError, FloatingPointError) as exc:
        reason = str(exc)
    else:
        curve = FittedCurve("logistic4", tuple(float(b) for b in params), mu, sd)
        fitted = curve(p)
        if not np.all(np.isfinite(fitted)):
            reason = "non-finite fitted values"
        elif np.ptp(fitted) == 0:
            reason = "the fitted curve is flat over the predictions"
        else:
            return fitted, curve
    logger.warning("4-parameter logistic fit failed (%s); falling back to a linear fit", reason)
    curve = FittedCurve("linear", tuple(float(c) for c in np.polyfit(z, m, 1)), mu, sd)
    return curve(p), curve


def fit_predictions(pred: Any, mos: Any, *, fit: FitKind = "poly3") -> tuple[np.ndarray, FittedCurve]:
    """Map predictions onto the MOS scale with a fitted curve.

    Args:
        pred: predictions, shape (N,).
        mos: ground-truth MOS, shape (N,).
        fit: ``"poly3"``, ``"logistic4"`` or ``"none"`` (see module docstring; logistic falls back to linear).

    Returns:
        ``(fitted, curve)``: fitted predictions, shape (N,), and the callable curve (``curve.kind`` says which).

    Raises:
        MetricError: unequal lengths, too few samples/distinct predictions, NaN/inf, constant inputs.
    """
    p, m = _check_inputs(pred, mos, fit)
    return _fit_checked(p, m, fit)


def evaluate(pred: Any, mos: Any, *, fit: FitKind = "poly3") -> dict[str, float]:
    """Score predictions against MOS with the challenge protocol.

    Args:
        pred: predictions, shape (N,).
        mos: ground-truth MOS, shape (N,).
        fit: curve fitted before PLCC/RMSE: ``"poly3"`` (challenge), ``"logistic4"`` or ``"none"``.

    Returns:
        ``{"srcc", "plcc", "krcc", "rmse", "main_score", "n"}``; ``main_score = (|srcc| + |plcc|) / 2``,
        ``rmse`` on the MOS scale after the fit.

    Raises:
        MetricError: unequal lengths, too few samples (3; 5 distinct predictions for a fit), NaN/inf,
            constant predictions or MOS. Never returns NaN.
    """
    return evaluate_with_curve(pred, mos, fit=fit)[0]


def evaluate_with_curve(pred: Any, mos: Any, *, fit: FitKind = "poly3") -> tuple[dict[str, float], FittedCurve]:
    """:func:`evaluate`, also returning the fitted curve (fits once; for plots)."""
    p, m = _check_inputs(pred, mos, fit)
    fitted, curve = _fit_checked(p, m, fit)
    if np.ptp(fitted) == 0:
        raise MetricError("the fitted predictions are constant: PLCC is undefined")
    srcc = float(stats.spearmanr(p, m).statistic)
    krcc = float(stats.kendalltau(p, m).statistic)
    plcc = float(stats.pearsonr(fitted, m).statistic)
    rmse = float(np.sqrt(np.mean((fitted - m) ** 2)))
    result = {
        "srcc": srcc,
        "plcc": plcc,
        "krcc": krcc,
        "rmse": rmse,
        "main_score": (abs(srcc) + abs(plcc)) / 2.0,
        "n": int(p.size),
    }
    bad = [k for k, v in result.items() if not math.isfinite(v)]
    if bad:  # defensive: the checks above should make this unreachable
        raise MetricError(f"metrics {', '.join(bad)} are undefined for these inputs")
    return result, curve


def evaluate_files(
    predictions_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    *,
    fit: FitKind = "poly3",
) -> dict[str, float]:
    """Score a prediction file against a label file (see :func:`evaluate`).

    Returns:
        :func:`evaluate`'s dict plus ``n_unmatched_predictions`` and ``n_unmatched_labels``.
    """
    _, pred, mos, report = match_predictions(read_predictions(predictions_path, by_path=True), read_labels(labels_path, by_path=True))
    result = evaluate(pred, mos, fit=fit)
    result["n_unmatched_predictions"] = len(report.unmatched_predictions)
    result["n_unmatched_labels"] = len(report.unmatched_labels)
    return result
