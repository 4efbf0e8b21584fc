"""System-level agreement of a comparison: SRCC, KRCC and PLCC between the groups' figures for predictions and
labels (how well a model ranks the systems), with intervals for the population values and the reliability of the
figures.

The target of an interval is the correlation between the groups' population figures (infinitely many sources, or
videos, per group): the figures the comparison sees carry resampling noise, which attenuates every correlation
(with 8 close generators over 30 sources a percentile interval of the resampled PLCC, centred on the attenuated
estimate, held the population PLCC 57% of the time at a nominal 95%). The intervals are found by test inversion in
a bootstrap world:

1. noise: the covariance N (2 x 2, predictions and labels) of the groups' figures about their mean, from their joint
   bootstrap replicates (the two-stage source or cluster bootstrap of the layout, or the videos without a source key);
   signal: T = S - N, S the observed covariance between the groups' figures (Spearman's disattenuation);
2. for a population correlation rho on a grid, a population of group figures whose covariance is T with
   correlation rho: the observed figures mapped by S^(-1/2) T_rho^(1/2) (Louis's constrained Bayes: spread as
   the signal's, not the noisy one's), plus every bootstrap replicate's deviations;
3. rho is kept when the observed statistic lies within the central ``level`` of its replicates in that world (for
   the PLCC a calibrated wider share, :data:`PLCC_ALPHA_SHARE`); the PLCC interval spans the kept rho, the SRCC and
   KRCC intervals the population SRCC and KRCC of the kept worlds.
   ``plcc_disattenuated`` is the rho whose world has the observed PLCC as its median (median-unbiased).

Where the signal does not exceed the noise (T's diagonal <= 0) there is no interval and a note says so.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from thqa.analysis.comparison_results import SystemStats

#: Below this reliability of the groups' figures (1 - noise / observed variance between groups) the system-level
#: point figures are attenuated noticeably and the intervals can be rough: 8 generators x 30 sources, nominal 95%,
#: at reliability 0.55 the SRCC interval held the population SRCC 87% of the time (0.86 and up: 95-99%; percentile
#: intervals of the resampled correlations, before: 65-77%; benchmarks/bench_calibration.py)
RELIABLE = 0.9
#: Population PLCCs (Fisher's z) at which the intervals test the observed figures: steps of 0.076 in z (about 0.014
#: in rho near 0.9) up to |rho| 0.999, and +-1 (groups' population figures on one line)
Z_GRID = np.r_[-np.inf, np.linspace(-3.8, 3.8, 101), np.inf]
#: The PLCC is tested at this share of the error rate (0.98 for a 95% interval): the world's signal covariance is
#: itself estimated, which a test at the nominal level ignores - measured with 8 generators x 30 sources, nominal
#: 95%: 90-91% at the nominal level, 94% with this share at reliability 0.86 and 0.98, 91% at 0.55
#: (benchmarks/bench_calibration.py, 120 replications each; tests/analysis/test_calibration.py)
PLCC_ALPHA_SHARE = 0.4


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
                 units: Sequence[int], level: float) -> tuple[SystemStats | None, str | None]:
    """Correlations of the groups' figures ``mp``, ``ml`` (G,) (predictions against labels), with intervals for the
    population values (module docstring) from the groups' joint bootstrap replicates ``boots``, ``label_boots``
    ((R,) per group, None for a group without) of figures resting on ``units`` (G,) independent units each. None
    with a note when undefined (fewer than 3 groups, all figures equal)."""
    if mp.size < 3:
        return None, f"system-level correlations need at least 3 groups; there are {mp.size}"
    point = _correlations(mp, ml)
    if not all(math.isfinite(v) for v in point):
        which = "predictions" if np.ptp(mp) == 0 else "labels"
        return None, f"the groups' mean {which} are all equal: there is no system-level correlation"
    st = SystemStats(mp.size, point[0], None, point[1], None, point[2], None)
    idx = [i for i, b in enumerate(boots) if b is not None]
    if len(idx) < 3:
        return st, "fewer than 3 groups have resamples: no system-level intervals"
    w = _world(mp[idx], ml[idx], np.stack([boots[i] for i in idx], axis=1), np.stack([label_boots[i] for i in idx], axis=1),
               np.asarray(units)[idx])
    st.reliability = w.reliability
    if w.reliability <= 0:
        return st, (f"the groups' {'predictions' if w.t[0, 0] <= 0 else 'labels'} differ no more than their resampling noise: no system-level "
                    "intervals (the population correlations cannot be told from noise)")
    notes = []
    cis, st.plcc_disattenuated = _inverted(w, level)
    for j, name in enumerate(("SRCC", "KRCC", "PLCC")):
        ci = cis[j]
        if ci is None:
            notes.append(f"no population {name} fits the observed one at {level:g}: no {name} interval")
        elif ci[1] - ci[0] <= 1e-12:
            notes.append(f"every resample gave the same {name} ({ci[0]:.3f}): the resampling cannot measure its uncertainty, no interval")
            cis[j] = None
    st.srcc_ci, st.krcc_ci, st.plcc_ci = cis
    if w.reliability < RELIABLE:
        notes.append(
            f"the groups' figures are close for their uncertainty (reliability {w.reliability:.2f} < {RELIABLE}): the system-level "
            f"correlations are attenuated (PLCC {point[2]:.3f}, with the noise taken out {st.plcc_disattenuated:.3f}) and their "
            "intervals, for the population values, are rough (they under-cover: benchmarks/bench_calibration.py)"
        )
    return st, "; ".join(notes) or None


@dataclass
class _World:
    """The groups' figures ``x`` (G, 2) (predictions, labels), their bootstrap deviations ``d`` (R, G, 2), the
    observed covariance ``s`` between groups, the noise covariance ``n`` and the signal's ``t = s - n`` (2, 2)."""

    x: np.ndarray
    d: np.ndarray
    s: np.ndarray
    n: np.ndarray
    t: np.ndarray

    @property
    def reliability(self) -> float:
        """The smaller of t / s for predictions and labels: the share of the spread between groups that is signal."""
        return float(min(self.t[0, 0] / self.s[0, 0], self.t[1, 1] / self.s[1, 1]))

    def population(self, rho: float) -> np.ndarray:
        """(G, 2) figures with the signal's spread and correlation ``rho``: the observed ones mapped by
        s^(-1/2) t_rho^(1/2) (the noise's spread taken out, Louis's constrained Bayes)."""
        t = self.t.copy()
        t[0, 1] = t[1, 0] = rho * math.sqrt(t[0, 0] * t[1, 1])
        xc = self.x - self.x.mean(axis=0)
        return xc @ np.linalg.solve(_sqrtm(self.s), _sqrtm(t))


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite (2, 2) matrix."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _world(mp: np.ndarray, ml: np.ndarray, bp: np.ndarray, bl: np.ndarray, units: np.ndarray) -> _World:
    """The bootstrap world of figures ``mp``, ``ml`` (G,) and their replicates ``bp``, ``bl`` (R, G) (rows with a
    missing figure dropped), each group's figure resting on ``units`` (G,) independent units: its deviations are
    scaled by sqrt(k / (k - 1)), the plug-in bias of a bootstrap of k units (as in :func:`comparison_tests.interval`)."""
    b = np.stack([bp, bl], axis=2)
    b = b[np.all(np.isfinite(b), axis=(1, 2))]
    k = np.maximum(units, 2).astype(np.float64)
    d = (b - b.mean(axis=0)) * np.sqrt(k / (k - 1))[None, :, None]
    dc = d - d.mean(axis=1, keepdims=True)  # about the groups' mean: what a correlation sees
    g = mp.size
    n = np.einsum("rgi,rgj->ij", dc, dc) / (d.shape[0] * (g - 1))
    x = np.stack([mp, ml], axis=1)
    s = np.cov(x, rowvar=False)
    return _World(x, d, s, n, s - n)


def _inverted(w: _World, level: float) -> tuple[list[list[float] | None], float]:
    """Intervals [SRCC, KRCC, PLCC] of the population correlations by test inversion over :data:`Z_GRID`, refined
    near what it keeps (a tight world can fall between two grid points), None where no population fits; and the
    median-unbiased (disattenuated) PLCC."""
    obs = rowwise_correlations(w.x[None, :, 0], w.x[None, :, 1])[0]
    a = (1.0 - level) / 2.0
    coarse = _tested(w, Z_GRID, obs, a)
    step = float(Z_GRID[2] - Z_GRID[1])
    fit = np.abs(coarse[2] - 0.5)  # (K,) how central the observed PLCC is in each world
    keep_z = Z_GRID[coarse[1].any(axis=1) | (fit == fit.min())]
    finite = np.clip(keep_z, Z_GRID[1], Z_GRID[-2])
    fine = np.linspace(finite.min() - step, finite.max() + step, 41)
    z = np.r_[Z_GRID, fine]
    truth, kept, below = (np.concatenate(x) for x in zip(coarse, _tested(w, fine, obs, a)))
    cis: list[list[float] | None] = []
    for j in range(3):
        v = truth[kept[:, j], j]
        cis.append([float(v.min()), float(v.max())] if v.size else None)
    return cis, float(np.tanh(z[int(np.argmin(np.abs(below - 0.5)))]))


def _tested(w: _World, z: np.ndarray, obs: np.ndarray, a: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each population PLCC tanh(z) (K,): the population's (SRCC, KRCC, PLCC) (K, 3), whether the observed
    ``obs`` (3,) lies within the central 1 - 2a of its world's replicates (K, 3), and the share of the world's
    PLCCs below the observed one (K,)."""
    rhos = np.tanh(z)
    pops = np.stack([w.population(float(rho)) for rho in rhos])  # (K, G, 2)
    truth = rowwise_correlations(pops[:, :, 0], pops[:, :, 1])
    truth[:, 2] = rhos
    r_n, g_n = w.d.shape[0], w.d.shape[1]
    chunk = max(1, int(2e7 // (r_n * max(g_n * (g_n - 1) // 2, g_n))))  # worlds per batch: bounded memory (KRCC's pairs)
    reps = np.concatenate([
        rowwise_correlations(
            (pops[i:i + chunk, None, :, 0] + w.d[None, :, :, 0]).reshape(-1, g_n),
            (pops[i:i + chunk, None, :, 1] + w.d[None, :, :, 1]).reshape(-1, g_n),
        ).reshape(-1, r_n, 3)
        for i in range(0, rhos.size, chunk)
    ])  # (K, R, 3)
    alphas = (a, a, a * PLCC_ALPHA_SHARE)  # SRCC, KRCC, PLCC
    lo = np.concatenate([_quantiles(reps[:, :, j:j + 1], q) for j, q in enumerate(alphas)], axis=1)  # (K, 3)
    hi = np.concatenate([_quantiles(reps[:, :, j:j + 1], 1.0 - q) for j, q in enumerate(alphas)], axis=1)
    kept = (lo - 1e-12 <= obs) & (obs <= hi + 1e-12)
    return truth, kept, np.mean(reps[:, :, 2] < obs[2], axis=1)


def _quantiles(reps: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile (linear, as :func:`numpy.quantile`) over axis 1 of ``reps`` (K, R, C), NaN left out (NaN
    where a row has none): :func:`numpy.nanquantile` without its slow per-row loop."""
    srt = np.sort(reps, axis=1)  # NaN last
    n = np.isfinite(reps).sum(axis=1)  # (K, C)
    pos = q * np.maximum(n - 1, 0)
    i = np.floor(pos).astype(int)
    j = np.minimum(i + 1, np.maximum(n - 1, 0))
    lo = np.take_along_axis(srt, i[:, None, :], axis=1)[:, 0]
    hi = np.take_along_axis(srt, j[:, None, :], axis=1)[:, 0]
    out = lo + (pos - i) * (hi - lo)
    out[n == 0] = math.nan
    return out
