"""System-level agreement of a comparison: SRCC, KRCC and PLCC between the groups' figures for predictions and
labels (how well a model ranks the systems), with their bootstrap intervals and the reliability of the figures."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from thqa.analysis.comparison_results import SystemStats
from thqa.analysis.comparison_tests import percentile_ci

#: System-level intervals are flagged as rough below this reliability of the groups' figures: with 8 close groups
#: (reliability about 0.5) a 95% PLCC interval held the population PLCC 57% of the time (benchmarks/bench_calibration.py)
RELIABLE = 0.9


def _correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(SRCC, KRCC, PLCC) of two (G,) arrays; NaN where undefined (constant input)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan
    return (
        float(stats.spearmanr(x, y).statistic),
        float(stats.kendalltau(x, y).statistic),
        float(stats.pearsonr(x, y).statistic),
    )


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(axis=1) / np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))


def rowwise_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(R, 3) SRCC, KRCC (tau-b), PLCC of each row of x and y, (R, G) each, without NaN; NaN where undefined."""
    srcc = _rowwise_pearson(stats.rankdata(x, axis=1), stats.rankdata(y, axis=1))
    i, j = np.triu_indices(x.shape[1], k=1)
    dx, dy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    with np.errstate(invalid="ignore", divide="ignore"):
        krcc = (dx * dy).sum(axis=1) / np.sqrt((dx**2).sum(axis=1) * (dy**2).sum(axis=1))
    return np.stack([srcc, krcc, _rowwise_pearson(x, y)], axis=1)


def system_stats(mp: np.ndarray, ml: np.ndarray, boots: Sequence[np.ndarray | None], label_boots: Sequence[np.ndarray | None],
                 level: float) -> tuple[SystemStats | None, str | None]:
    """Correlations of the groups' figures ``mp``, ``ml`` (G,) (predictions against labels); CIs from the groups'
    joint bootstrap replicates ``boots``, ``label_boots`` ((R,) per group, None for a group without). None with a
    note when undefined (fewer than 3 groups, all figures equal)."""
    if mp.size < 3:
        return None, f"system-level correlations need at least 3 groups; there are {mp.size}"
    point = _correlations(mp, ml)
    if not all(math.isfinite(v) for v in point):
        which = "predictions" if np.ptp(mp) == 0 else "labels"
        return None, f"the groups' mean {which} are all equal: there is no system-level correlation"
    idx = [i for i, b in enumerate(boots) if b is not None]
    bp = np.stack([boots[i] for i in idx], axis=1)  # (R, G)
    bl = np.stack([label_boots[i] for i in idx], axis=1)
    full = np.all(np.isfinite(bp) & np.isfinite(bl), axis=1)
    reps = np.full((bp.shape[0], 3), math.nan)
    if len(idx) >= 3:
        reps[full] = rowwise_correlations(bp[full], bl[full])
    cis, notes = [], []
    for j, name in enumerate(("SRCC", "KRCC", "PLCC")):
        ci = percentile_ci(reps[:, j], level)
        if ci is not None and ci[1] - ci[0] <= 1e-12:
            notes.append(f"every resample gave the same {name} ({ci[0]:.3f}): the resampling cannot measure its uncertainty, no interval")
            ci = None
        cis.append(ci)
    rel = min(_reliability(mp[idx], bp), _reliability(ml[idx], bl))
    if rel < RELIABLE:
        notes.append(
            f"the groups' figures are close for their uncertainty (reliability {rel:.2f} < {RELIABLE}): the system-level "
            "correlations are attenuated and their intervals are rough (they under-cover: benchmarks/bench_calibration.py)"
        )
    st = SystemStats(mp.size, point[0], cis[0], point[1], cis[1], point[2], cis[2], reliability=rel)
    return st, "; ".join(notes) or None


def _reliability(means: np.ndarray, reps: np.ndarray) -> float:
    """1 - (mean bootstrap variance of a group's figure) / (variance between the groups' figures): the share of the
    spread between groups that is not resampling noise (1: well separated; near 0: the ranking is mostly noise)."""
    noise = float(np.nanmean(np.nanvar(reps, axis=0, ddof=1)))
    between = float(np.var(means, ddof=1))
    return 1.0 - noise / between if between > 0 else 0.0

