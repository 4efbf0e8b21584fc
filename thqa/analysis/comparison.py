"""Comparing systems (e.g. talking-head generators) by their videos' scores, with the uncertainty of each answer.

:func:`compare` (``thqa.compare``, ``thqa compare``) groups videos by system, then reports:

- ``groups``: each group's figure (mean score; with a source key its least-squares mean), a bootstrap confidence
  interval, its rank, its plain mean; with people's labels the same for the labels;
- ``pairs``: every pair's difference ``a - b`` of the figures with a bootstrap confidence interval and a two-sided
  p-value, ``significant`` after Holm's correction over all pairs;
- ``system`` (with labels): SRCC, KRCC and PLCC between the groups' figures for predictions and labels - how well
  the model ranks the systems - each with a bootstrap confidence interval (none where every resample agrees).

Clusters (``clusters``, ``--cluster``): where sources are nested in clusters (portraits), resampling is two-stage
(clusters, then sources within them), paired tests flip whole clusters, and the clusters are the units of every
interval and test. Intervals from fewer than :data:`T_UNITS` units are Student-t intervals from the bootstrap SE.

Resampling. Without a source key every video is an independent unit: groups are resampled video by video and a
group's figure is the mean of its videos. With a source key (what a video was rendered from: the same portrait and
speech clip across generators) the units are the sources, and a group's figure is its least-squares mean in the
two-way layout ``score = group effect + source effect + error`` (its effect plus the mean effect of the sources of
its connected layout): a group that misses the hard sources is not lifted by it, and ranks, group figures and pair
differences are the same numbers (the plain means stay beside them as ``raw_mean``). The sources are resampled
within each connected part of the layout (a source's videos stay together: cluster bootstrap, so a portrait that
appears in every group does not count as independent evidence), and the figures are refitted in every resample.
Two groups whose videos come from the same sources are tested **paired**, on the per-source differences over the
shared sources (``share``: what part of each group's videos that is).

Tests (``p``): paired pairs, a sign-flip permutation test of the per-source differences (exact when there are no
more sign patterns than ``n_perm``; two-sided p-values as :func:`scipy.stats.permutation_test`); other pairs, a
bootstrap-t test of equal means: Welch's t against the t of ``n_perm`` resamples of each group's videos, each centred
on its own group's mean; with a source key, the difference of the groups' least-squares means over its bootstrap
standard error (the source bootstrap of the figures themselves, so the test is of the difference shown) against
Student's t with (the smaller group's sources, or clusters, - 1) degrees of freedom. A permutation test of the raw
difference of means would test "same distribution", not "same mean", and is far too liberal when group sizes and
spreads differ (measured in ``tests/test_calibration.py`` and ``benchmarks/bench_calibration.py``).
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from thqa.errors import ConfigError, MetricError

__all__ = [
    "Comparison",
    "GroupStats",
    "PairStats",
    "SystemStats",
    "compare",
    "compare_scores",
    "holm",
    "key_from_pattern",
    "plot_comparison",
]

logger = logging.getLogger(__name__)

P_TEST = (
    "two-sided tests: sign flips of the per-source differences for paired pairs; other pairs without a source key, a "
    "bootstrap-t test of equal means (Welch's t against resamples of each group's videos, each centred on its group's "
    "mean); with a source key, the difference of least-squares means over its bootstrap standard error against "
    "Student's t (fewer sources - 1 degrees of freedom); Holm-corrected over all pairs"
)
#: A pair is compared paired when its shared sources hold at least this fraction of each group's videos.
PAIRED_MIN_SHARE = 0.5
#: Bootstrap intervals from fewer independent units than this are flagged as rough (a bootstrap of 5 numbers has
#: few distinct resamples and undercovers).
FEW_UNITS = 10
#: Below this many independent units (videos, sources, or portraits with ``clusters``) a percentile interval
#: under-covers (a 95% one held the truth 89.6% of the time at 12 sources, 92.3% at 30): intervals are then Student-t intervals
#: from the bootstrap standard error, ``estimate +- t(k - 1) se sqrt(k / (k - 1))``.
T_UNITS = 100
#: System-level intervals are flagged as rough below this reliability of the groups' figures: with 8 close groups
#: (reliability about 0.5) a 95% PLCC interval held the population PLCC 57% of the time (benchmarks/bench_calibration.py)
RELIABLE = 0.9
_EXAMPLES = 5


# ----------------------------------------------------------------------------------------------------- results
@dataclass
class GroupStats:
    """One group: ``n`` videos (from ``n_sources`` sources with a source key), mean score and its CI, rank (1 = best).

    With a source key ``mean`` is the group's least-squares mean in the two-way layout group + source (its effect
    plus the mean effect of the sources it shares a layout with): the figure ranks and pair differences use, so
    they agree; ``raw_mean`` is the plain mean of its videos. Without a source key both are the plain mean."""

    group: str
    n: int
    mean: float
    ci: list[float] | None
    rank: int
    n_sources: int | None = None
    label_mean: float | None = None
    label_ci: list[float] | None = None
    label_rank: int | None = None
    note: str | None = None  #: why there is no CI, when there is none
    raw_mean: float | None = None  #: the plain mean of the group's videos (``mean`` takes the sources out)
    raw_label_mean: float | None = None


@dataclass
class PairStats:
    """Group ``a`` against group ``b``: ``diff`` = a - b of the groups' figures (``GroupStats.mean``), its CI, the
    test's p-value, Holm-adjusted p, verdict. A paired pair is tested on its shared sources (``n_paired``; ``share``
    says what part of each group's videos that is)."""

    a: str
    b: str
    diff: float
    ci: list[float] | None
    p: float | None
    p_holm: float | None
    significant: bool
    paired: bool
    n_paired: int
    label_diff: float | None = None
    label_ci: list[float] | None = None
    label_p: float | None = None
    label_p_holm: float | None = None
    label_significant: bool | None = None
    note: str | None = None
    #: share of each group's videos the test used: for a paired pair those of the shared sources
    share: list[float] | None = None
    paired_diff: float | None = None  #: a paired pair: mean of the per-source differences over the shared sources


@dataclass
class SystemStats:
    """System-level agreement between the groups' mean predictions and mean labels (PLCC without a fitted curve)."""

    n_groups: int
    srcc: float
    srcc_ci: list[float] | None
    krcc: float
    krcc_ci: list[float] | None
    plcc: float
    plcc_ci: list[float] | None
    #: 1 - resampling variance / variance between the groups' figures (the smaller of predictions and labels); below
    #: RELIABLE the correlations are attenuated by noise and their intervals under-cover (a note says so)
    reliability: float | None = None


@dataclass
class Comparison:
    """What :func:`compare` found; :meth:`to_dict` gives the JSON document of ``thqa compare --json``."""

    groups: list[GroupStats]
    pairs: list[PairStats]
    system: SystemStats | None
    n: int  #: videos compared
    n_boot: int
    ci_level: float
    seed: int
    resampling: str  #: "video", "source" or "cluster" (two-stage: clusters, then sources within them)
    n_perm: int = 0  #: random permutations per test (tests with fewer possible permutations use all: exact)
    p_test: str = P_TEST
    matching: dict | None = None  #: predictions against labels: counts and examples of unmatched names
    left_out: dict = field(default_factory=dict)  #: {"no_group"|"no_source": {"n", "examples"}}
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def group(self, name: str) -> GroupStats:
        for g in self.groups:
            if g.group == name:
                return g
        raise KeyError(name)

    def pair(self, a: str, b: str) -> PairStats:
        """The pair of ``a`` and ``b`` in either order (``diff`` is then ``a - b`` as asked)."""
        for p in self.pairs:
            if (p.a, p.b) == (a, b):
                return p
            if (p.a, p.b) == (b, a):
                return _flipped(p)
        raise KeyError((a, b))

    def table(self) -> str:
        """A plain-text report: groups, system-level agreement, pairs."""
        return format_table(self)


def _neg_ci(ci: list[float] | None) -> list[float] | None:
    return None if ci is None else [-ci[1], -ci[0]]


def _flipped(p: PairStats) -> PairStats:
    return PairStats(
        p.b, p.a, -p.diff, _neg_ci(p.ci), p.p, p.p_holm, p.significant, p.paired, p.n_paired,
        None if p.label_diff is None else -p.label_diff, _neg_ci(p.label_ci), p.label_p, p.label_p_holm,
        p.label_significant, p.note, None if p.share is None else p.share[::-1], None if p.paired_diff is None else -p.paired_diff,
    )


# ---------------------------------------------------------------------------------------------- statistics
def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as ``p``): reject where the adjusted p < alpha."""
    pv = np.asarray(p, dtype=np.float64)
    m = pv.size
    order = np.argsort(pv, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * pv[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def _percentile_ci(reps: np.ndarray, level: float) -> list[float] | None:
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return None
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [a, 1.0 - a])
    return [float(lo), float(hi)]


def _ci(reps: np.ndarray, level: float, k: int, center: float) -> list[float] | None:
    """The interval from bootstrap replicates ``reps`` (R,) of an estimate ``center`` resting on ``k`` independent
    units: percentile with at least :data:`T_UNITS` units, else a Student-t interval from the bootstrap SE (which a
    bootstrap of k units underestimates by sqrt((k - 1) / k)); None with fewer than 2 units or finite replicates."""
    if k >= T_UNITS:
        return _percentile_ci(reps, level)
    reps = reps[np.isfinite(reps)]
    if reps.size < 2 or k < 2:
        return None
    half = float(stats.t.ppf(0.5 + level / 2.0, k - 1)) * float(np.std(reps, ddof=1)) * math.sqrt(k / (k - 1))
    return [center - half, center + half]


def _p_two_sided(null: np.ndarray, observed: float, *, exact: bool) -> float:
    """Two-sided p-value of ``observed`` against a permutation null, as :func:`scipy.stats.permutation_test`."""
    gamma = abs(np.finfo(np.float64).eps * 100 * observed)
    adj = 0 if exact else 1
    less = (np.count_nonzero(null <= observed + gamma) + adj) / (null.size + adj)
    greater = (np.count_nonzero(null >= observed - gamma) + adj) / (null.size + adj)
    return float(min(1.0, 2.0 * min(less, greater)))


def _multinomial(rng: np.random.Generator, k: int, n_boot: int) -> np.ndarray:
    """(n_boot, k) counts: how often each of k units is drawn in each bootstrap resample of size k."""
    draws = rng.integers(0, k, size=(n_boot, k)) + k * np.arange(n_boot)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * k).reshape(n_boot, k)


@dataclass(frozen=True)
class _Cells:
    """One group's videos summed per source (per video when there is no source key): K units."""

    sources: np.ndarray  #: (K,) unit keys, sorted
    n: np.ndarray  #: (K,) videos per unit
    pred: np.ndarray  #: (K,) sum of predictions
    label: np.ndarray | None  #: (K,) sum of labels

    @property
    def k(self) -> int:
        return int(self.sources.size)

    def mean(self, what: str = "pred") -> float:
        return float(getattr(self, what).sum() / self.n.sum())


def _cells(pred: np.ndarray, label: np.ndarray | None, sources: np.ndarray) -> _Cells:
    keys, inv = np.unique(sources, return_inverse=True)
    n = np.bincount(inv, minlength=keys.size).astype(np.float64)
    ps = np.bincount(inv, weights=pred, minlength=keys.size)
    ls = None if label is None else np.bincount(inv, weights=label, minlength=keys.size)
    return _Cells(keys, n, ps, ls)


def _boot_means(c: _Cells, w: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Bootstrap means (R,) of predictions and labels for resample counts ``w`` (R, K)."""
    n = w @ c.n
    return (w @ c.pred) / n, None if c.label is None else (w @ c.label) / n


def _ranks(values: Sequence[float]) -> list[int]:
    return [int(r) for r in stats.rankdata(-np.asarray(values), method="min")]


# ------------------------------------------------------------------------------------ generator + source effects
def _components(n: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Connected parts of the groups x sources layout ``n`` (G, S) (a group and a source are linked when the group
    has videos of the source): (count, part of each group (G,), part of each source (S,))."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g, s = np.nonzero(n)
    size = n.shape[0] + n.shape[1]
    graph = coo_matrix((np.ones(g.size), (g, n.shape[0] + s)), shape=(size, size))
    k, lab = connected_components(graph, directed=False)
    return k, lab[: n.shape[0]], lab[n.shape[0]:]


def _ls_means(n: np.ndarray, sums: list[np.ndarray], w: np.ndarray) -> list[np.ndarray]:
    """Least-squares means of the two-way layout y = group + source + error, for source weights ``w`` (R, S).

    ``n`` (G, S) videos per cell, ``sums`` [(G, S)] cell sums (predictions, labels), one connected layout.
    The group effects solve the reduced normal equations sum_s w_s (diag(n_s) - n_s n_s' / N_s) a = sum_s w_s
    (y_s - n_s ybar_s); the least-squares mean of a group is its effect plus the mean source effect over the
    (drawn) sources. Returns one (R, G) array per sum; NaN where a group drew no source or the drawn layout
    falls apart (its groups no longer linked through shared sources)."""
    g_n, s_n = n.shape
    tot = n.sum(axis=0)  # (S,)
    cs = np.einsum("gs,gh->sgh", n, np.eye(g_n)) - np.einsum("gs,hs->sgh", n, n) / tot[:, None, None]  # (S, G, G)
    c = (w @ cs.reshape(s_n, -1)).reshape(-1, g_n, g_n)  # (R, G, G)
    active = (w @ n.T) > 0  # (R, G)
    af = active.astype(np.float64)
    a_mat = c + af[:, :, None] * af[:, None, :] / np.maximum(af.sum(axis=1), 1)[:, None, None] + np.eye(g_n)[None] * (1 - af)[:, :, None]
    rhs = []
    for y in sums:
        q = (y - n * (y.sum(axis=0) / tot)[None, :]).T  # (S, G)
        rhs.append(w @ q)
    b = np.stack(rhs, axis=2)  # (R, G, C)
    try:
        alpha = np.linalg.solve(a_mat, b)
    except np.linalg.LinAlgError:
        alpha = np.full_like(b, math.nan)
        for r in range(b.shape[0]):
            try:
                alpha[r] = np.linalg.solve(a_mat[r], b[r])
            except np.linalg.LinAlgError:
                pass
    out = []
    for j, y in enumerate(sums):
        a = alpha[:, :, j]  # (R, G)
        beta = (y.sum(axis=0)[None, :] - a @ n) / tot[None, :]  # (R, S)
        mean_beta = (w * beta).sum(axis=1) / w.sum(axis=1)
        m = a + mean_beta[:, None]
        m[~active] = math.nan
        out.append(m)
    return out


def _source_weights(rng: np.random.Generator, n_boot: int, keys: np.ndarray, cluster_of: dict[str, str]) -> np.ndarray:
    """(R, S) two-stage bootstrap counts of the sources ``keys``: clusters drawn with replacement, then in each drawn
    cluster its sources drawn with replacement (as many as it has)."""
    clusters, inv = np.unique([cluster_of[str(k)] for k in keys], return_inverse=True)
    m = _multinomial(rng, clusters.size, n_boot)  # (R, C) draws of each cluster
    w = np.zeros((n_boot, keys.size))
    for c in range(clusters.size):
        idx = np.flatnonzero(inv == c)
        w[:, idx] = rng.multinomial(m[:, c] * idx.size, np.full(idx.size, 1.0 / idx.size))
    return w


def _adjusted(cells: list[_Cells], rng: np.random.Generator, n_boot: int, cluster_of: dict[str, str] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Least-squares means (G,) of predictions (and labels) with the sources' effects taken out, and their bootstrap
    replicates (R, G): sources resampled within each connected part of the layout (a group's videos of a source
    stay together); with ``cluster_of`` (source -> cluster), two-stage over all sources (:func:`_source_weights`).
    Groups that share no source with any other group get the mean of their sources' means."""
    keys = np.unique(np.concatenate([c.sources for c in cells]))
    what = ["pred"] + (["label"] if cells[0].label is not None else [])
    n = np.zeros((len(cells), keys.size))
    sums = [np.zeros_like(n) for _ in what]
    for i, c in enumerate(cells):
        idx = np.searchsorted(keys, c.sources)
        n[i, idx] = c.n
        for y, wname in zip(sums, what):
            y[i, idx] = getattr(c, wname)
    k, gpart, spart = _components(n)
    points = [np.full(len(cells), math.nan) for _ in what]
    boots = [np.full((n_boot, len(cells)), math.nan) for _ in what]
    w_all = None if cluster_of is None else _source_weights(rng, n_boot, keys, cluster_of)
    for part in range(k):
        gi, si = np.flatnonzero(gpart == part), np.flatnonzero(spart == part)
        sub_n, sub = n[np.ix_(gi, si)], [y[np.ix_(gi, si)] for y in sums]
        for j, m in enumerate(_ls_means(sub_n, sub, np.ones((1, si.size)))):
            points[j][gi] = m[0]
        w = _multinomial(rng, si.size, n_boot).astype(np.float64) if w_all is None else w_all[:, si]
        with np.errstate(invalid="ignore", divide="ignore"):
            for j, m in enumerate(_ls_means(sub_n, sub, w)):
                boots[j][:, gi] = m
    return points, boots


# ----------------------------------------------------------------------------------------------- the core
@dataclass
class _Group:
    name: str
    cells: _Cells
    boot: np.ndarray | None  #: (R,) bootstrap means of predictions, None without a CI
    boot_label: np.ndarray | None
    mean: float = math.nan  #: the group's figure: its mean, or with a source key its least-squares mean
    label_mean: float | None = None
    units: int = 0  #: independent units behind its figure: videos, sources, or clusters (portraits)


def _group_stats(groups: list[_Group], level: float, with_labels: bool, by_source: bool, unit_word: str) -> list[GroupStats]:
    means = [g.mean for g in groups]
    ranks = _ranks(means)
    label_ranks = _ranks([g.label_mean for g in groups]) if with_labels else [None] * len(groups)
    out = []
    for g, mean, rank, lrank in zip(groups, means, ranks, label_ranks):
        note = None
        if g.boot is None:
            note = "one video: no confidence interval" if g.cells.n.sum() == 1 else "one source: no confidence interval (its videos are not independent)"
        elif g.units < FEW_UNITS:
            note = f"{g.units} {unit_word}: a t interval from few units"
        out.append(
            GroupStats(
                group=g.name,
                n=int(g.cells.n.sum()),
                mean=mean,
                ci=None if g.boot is None else _ci(g.boot, level, g.units, g.mean),
                rank=rank,
                n_sources=g.cells.k if by_source else None,
                label_mean=g.label_mean if with_labels else None,
                label_ci=None if g.boot_label is None else _ci(g.boot_label, level, g.units, g.label_mean),
                label_rank=lrank,
                note=note,
                raw_mean=g.cells.mean(),
                raw_label_mean=g.cells.mean("label") if with_labels else None,
            )
        )
    return out


def _paired_cells(a: _Cells, b: _Cells, cluster_of: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray | None, int, list[float]] | None:
    """Per-source differences (K,) of the means of a and b over their shared sources (with ``cluster_of``, source ->
    cluster: the mean difference per cluster, the clusters being the independent units), the number of shared
    sources, the share of each group's videos they hold; None if not paired (fewer than 2 shared sources or
    clusters, or less than PAIRED_MIN_SHARE of a group)."""
    shared, ia, ib = np.intersect1d(a.sources, b.sources, return_indices=True)
    if shared.size < 2:
        return None
    share = [float(a.n[ia].sum() / a.n.sum()), float(b.n[ib].sum() / b.n.sum())]
    if min(share) < PAIRED_MIN_SHARE:
        return None
    d = a.pred[ia] / a.n[ia] - b.pred[ib] / b.n[ib]
    dl = None if a.label is None else a.label[ia] / a.n[ia] - b.label[ib] / b.n[ib]
    if cluster_of is not None:
        keys, inv = np.unique([cluster_of[str(x)] for x in shared], return_inverse=True)
        if keys.size < 2:
            return None
        cnt = np.bincount(inv)
        d = np.bincount(inv, weights=d) / cnt
        dl = None if dl is None else np.bincount(inv, weights=dl) / cnt
    return d, dl, int(shared.size), share


@dataclass
class _Pending:
    """A pair whose test is still to run: per-source differences (paired) or both groups' units."""

    stats: PairStats
    d: np.ndarray | None = None  #: (K,) paired differences of predictions
    dl: np.ndarray | None = None  #: (K,) of labels
    a: _Cells | None = None
    b: _Cells | None = None
    tested: bool = False  #: its p-value is already there


def _pair_stats(ga: _Group, gb: _Group, level: float, by_source: bool, cluster_of: dict[str, str] | None) -> _Pending:
    """Difference of the two groups' figures and its bootstrap CI (from the groups' joint replicates); the p-value
    comes later (:func:`_run_tests`)."""
    a, b = ga.cells, gb.cells
    diff = ga.mean - gb.mean
    ldiff = None if ga.label_mean is None else ga.label_mean - gb.label_mean
    if ga.boot is None or gb.boot is None:
        lonely = ga if ga.boot is None else gb
        why = "one video" if lonely.cells.n.sum() == 1 else "one source"
        return _Pending(PairStats(ga.name, gb.name, diff, None, None, None, False, False, 0, ldiff, note=f"{lonely.name!r} has {why}: no CI or test"))
    k = min(ga.units, gb.units)
    ci = _ci(ga.boot - gb.boot, level, k, diff)
    lci = None if ga.boot_label is None else _ci(ga.boot_label - gb.boot_label, level, k, ldiff)
    paired = _paired_cells(a, b, cluster_of)
    if paired is not None:
        d, dl, n_paired, share = paired
        st = PairStats(ga.name, gb.name, diff, ci, None, None, False, True, n_paired, ldiff, lci, share=share, paired_diff=float(d.mean()))
        if np.sign(st.paired_diff) * np.sign(diff) < 0:
            st.note = (f"over the {n_paired} shared sources {ga.name} - {gb.name} is {st.paired_diff:+.3f}, against {diff:+.3f} with "
                       "every source's effect taken out: the test (on the shared sources) and the difference disagree")
        return _Pending(st, d=d, dl=dl)
    st = PairStats(ga.name, gb.name, diff, ci, None, None, False, False, 0, ldiff, lci, share=[1.0, 1.0])
    if not by_source:
        return _Pending(st, a=a, b=b)
    st.p = _wald_p(diff, ga.boot - gb.boot, k)
    if ldiff is not None:
        st.label_p = _wald_p(ldiff, ga.boot_label - gb.boot_label, k)
    return _Pending(st, tested=True)


def _wald_p(diff: float, reps: np.ndarray, k: int) -> float | None:
    """Two-sided p of ``diff`` / its bootstrap standard error (from ``reps`` (R,), scaled by sqrt(k / (k - 1)) for the
    plug-in bias of a bootstrap of k units) against Student's t with k - 1 degrees of freedom."""
    reps = reps[np.isfinite(reps)]
    if reps.size < 2 or k < 2:
        return None
    se = float(np.std(reps, ddof=1)) * math.sqrt(k / (k - 1))
    if se == 0:
        return 0.0 if diff != 0 else 1.0
    return float(2 * stats.t.sf(abs(diff) / se, k - 1))


def n_perm_for(n_tests: int, alpha: float, n_boot: int = 2000) -> int:
    """Random permutations per test so that Holm's smallest threshold alpha / n_tests is reachable: a Monte Carlo
    p-value is at least 2 / (R + 1), so R = 4 n_tests / alpha puts that floor at half the threshold
    (at least ``n_boot``, at most 200,000)."""
    return int(min(max(n_boot, math.ceil(4 * n_tests / alpha)), 200_000))


def _paired_p(tests: list[_Pending], rng: np.random.Generator, n_perm: int) -> None:
    """Sign-flip tests: all 2^K sign patterns when that is at most n_perm, else n_perm random ones, drawn once
    for the widest pair and shared (each p-value stays a valid test; Holm allows any dependence between them)."""
    shared: np.ndarray | None = None
    for t in tests:
        k = t.d.size
        if 2**k <= n_perm:
            signs, exact = np.array(list(itertools.product((1.0, -1.0), repeat=k))), True
        else:
            if shared is None:
                kmax = max(x.d.size for x in tests)
                shared = rng.integers(0, 2, size=(n_perm, kmax), dtype=np.int8) * 2.0 - 1.0
            signs, exact = shared[:, :k], False
        t.stats.p = _p_two_sided(signs @ t.d / k, float(t.d.mean()), exact=exact)
        if t.dl is not None:
            t.stats.label_p = _p_two_sided(signs @ t.dl / k, float(t.dl.mean()), exact=exact)


def _welch_parts(c: _Cells, what: str, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A group's mean and the variance of that mean, from its units (resampled with counts ``w`` (R, K) when given).

    The variance is the cluster-robust (ratio-estimator) one, k / (k - 1) * sum_j (s_j - n_j m)^2 / n^2 over the
    k units with sums s_j of n_j videos: s^2 / k with one video per unit, so that the difference of two means over
    the root of the summed variances is Welch's t."""
    s, n = getattr(c, what), c.n
    if w is None:
        w = np.ones((1, n.size))
    tot_n, tot_s = w @ n, w @ s
    m = tot_s / tot_n
    ss = w @ (s * s) - 2 * m * (w @ (s * n)) + m * m * (w @ (n * n))
    k = n.size
    return m, k / (k - 1) * np.maximum(ss, 0.0) / tot_n**2


def _t(diff: np.ndarray, var: np.ndarray) -> np.ndarray:
    """diff / sqrt(var), with +-1e300 where the variance is 0 (and 0 for 0 / 0)."""
    se = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.sign(diff) * 1e300)


def _unpaired_p(tests: list[_Pending], rng: np.random.Generator, n_boot_t: int) -> None:
    """Bootstrap-t tests of equal means: Welch's t of the observed difference against the t of ``n_boot_t``
    resamples of each group's units, each centred on its own group's mean (so both means are equal in the
    resampled world, whatever the groups' sizes and spreads). Two-sided p = (#{|t*| >= |t|} + 1) / (R + 1).

    A permutation test of the raw difference of means tests equal distributions, not equal means: with 10 videos of
    sd 1.0 against 100 of sd 0.2 it rejects 42% of the time at a nominal 5%; studentising alone under permutation
    still gives 11%. The resamples are drawn once per group and shared by all its pairs (each p-value stays a valid
    test; Holm's correction allows any dependence between them)."""
    draws: dict[int, np.ndarray] = {}

    def parts(c: _Cells, what: str) -> tuple[float, float, np.ndarray, np.ndarray]:
        if id(c) not in draws:
            draws[id(c)] = _multinomial(rng, c.k, n_boot_t).astype(np.float64)
        m, v = _welch_parts(c, what)
        mb, vb = _welch_parts(c, what, draws[id(c)])
        return float(m[0]), float(v[0]), mb - m[0], vb

    for t in tests:
        whats = ["pred"] + (["label"] if t.a.label is not None else [])
        ps = []
        for what in whats:
            ma, va, da, vba = parts(t.a, what)
            mb, vb, db, vbb = parts(t.b, what)
            obs = float(_t(np.asarray(ma - mb), np.asarray(va + vb)))
            null = _t(da - db, vba + vbb)
            ps.append(float(min(1.0, (np.count_nonzero(np.abs(null) >= abs(obs) * (1 - 1e-12)) + 1) / (null.size + 1))))
        t.stats.p = ps[0]
        t.stats.label_p = ps[1] if len(ps) > 1 else None


def _run_tests(pending: list[_Pending], rng: np.random.Generator, n_perm: int) -> None:
    _paired_p([t for t in pending if t.d is not None], rng, n_perm)
    _unpaired_p([t for t in pending if t.a is not None], rng, n_perm)


def _apply_holm(pairs: list[PairStats], alpha: float, with_labels: bool) -> None:
    tested = [p for p in pairs if p.p is not None]
    for p, adj in zip(tested, holm([p.p for p in tested])):
        p.p_holm = float(adj)
        p.significant = bool(adj < alpha)
    if with_labels:
        tested = [p for p in pairs if p.label_p is not None]
        for p, adj in zip(tested, holm([p.label_p for p in tested])):
            p.label_p_holm = float(adj)
            p.label_significant = bool(adj < alpha)


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


def _rowwise_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(R, 3) SRCC, KRCC (tau-b), PLCC of each row of x and y, (R, G) each, without NaN; NaN where undefined."""
    srcc = _rowwise_pearson(stats.rankdata(x, axis=1), stats.rankdata(y, axis=1))
    i, j = np.triu_indices(x.shape[1], k=1)
    dx, dy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    with np.errstate(invalid="ignore", divide="ignore"):
        krcc = (dx * dy).sum(axis=1) / np.sqrt((dx**2).sum(axis=1) * (dy**2).sum(axis=1))
    return np.stack([srcc, krcc, _rowwise_pearson(x, y)], axis=1)


def _system_stats(groups: list[_Group], level: float) -> tuple[SystemStats | None, str | None]:
    """Correlations of the groups' figures (predictions against labels); CIs from the groups' joint bootstrap
    replicates. None with a note when undefined (fewer than 3 groups, all figures equal)."""
    if len(groups) < 3:
        return None, f"system-level correlations need at least 3 groups; there are {len(groups)}"
    mp = np.array([g.mean for g in groups])
    ml = np.array([g.label_mean for g in groups])
    point = _correlations(mp, ml)
    if not all(math.isfinite(v) for v in point):
        which = "predictions" if np.ptp(mp) == 0 else "labels"
        return None, f"the groups' mean {which} are all equal: there is no system-level correlation"
    ok = [g for g in groups if g.boot is not None]
    bp = np.stack([g.boot for g in ok], axis=1)  # (R, G)
    bl = np.stack([g.boot_label for g in ok], axis=1)
    full = np.all(np.isfinite(bp) & np.isfinite(bl), axis=1)
    reps = np.full((bp.shape[0], 3), math.nan)
    if len(ok) >= 3:
        reps[full] = _rowwise_correlations(bp[full], bl[full])
    cis, notes = [], []
    for j, name in enumerate(("SRCC", "KRCC", "PLCC")):
        ci = _percentile_ci(reps[:, j], level)
        if ci is not None and ci[1] - ci[0] <= 1e-12:
            notes.append(f"every resample gave the same {name} ({ci[0]:.3f}): the resampling cannot measure its uncertainty, no interval")
            ci = None
        cis.append(ci)
    idx = [i for i, g in enumerate(groups) if g.boot is not None]
    rel = min(_reliability(mp[idx], bp), _reliability(ml[idx], bl))
    if rel < RELIABLE:
        notes.append(
            f"the groups' figures are close for their uncertainty (reliability {rel:.2f} < {RELIABLE}): the system-level "
            "correlations are attenuated and their intervals are rough (they under-cover: benchmarks/bench_calibration.py)"
        )
    st = SystemStats(len(groups), point[0], cis[0], point[1], cis[1], point[2], cis[2], reliability=rel)
    return st, "; ".join(notes) or None


def _reliability(means: np.ndarray, reps: np.ndarray) -> float:
    """1 - (mean bootstrap variance of a group's figure) / (variance between the groups' figures): the share of the
    spread between groups that is not resampling noise (1: well separated; near 0: the ranking is mostly noise)."""
    noise = float(np.nanmean(np.nanvar(reps, axis=0, ddof=1)))
    between = float(np.var(means, ddof=1))
    return 1.0 - noise / between if between > 0 else 0.0


def _check_settings(n_boot: int, ci: float, n_perm: int | None) -> None:
    if not (isinstance(n_boot, (int, np.integer)) and n_boot >= 100):
        raise ConfigError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    if n_perm is not None and not (isinstance(n_perm, (int, np.integer)) and n_perm >= 100):
        raise ConfigError(f"n_perm must be an integer >= 100, got {n_perm!r}")
    if not (isinstance(ci, (int, float)) and 0.5 <= ci < 1.0):
        raise ConfigError(f"ci must be a level between 0.5 and 1 (e.g. 0.95), got {ci!r}")


def compare_scores(
    names: Sequence[str],
    pred: Any,
    groups: Sequence[str],
    *,
    sources: Sequence[str] | None = None,
    labels: Any = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    n_perm: int | None = None,
    clusters: Sequence[str] | None = None,
) -> Comparison:
    """Compare groups of videos by their scores (see the module docstring for the statistics).

    Args:
        names: video names, (N,) (unique).
        pred: predicted scores, (N,).
        groups: each video's group (system), (N,).
        sources: each video's source key, (N,): resample by source and pair groups that share sources.
            None: every video is its own unit.
        labels: people's scores (MOS), (N,), or None.
        n_boot: bootstrap resamples for the confidence intervals.
        ci: confidence level of the intervals; pairs are significant when Holm's adjusted p < 1 - ci.
        seed: the random generator's seed (same inputs and seed, same numbers).
        n_perm: random permutations per test when a test has more possible permutations than this (else all are
            used: exact). Default :func:`n_perm_for`: enough for Holm's smallest threshold over all pairs.
        clusters: each video's cluster, (N,), in which the sources are nested (the portrait a source was made
            from): two-stage resampling (clusters, then sources within them), paired tests on the clusters' mean
            differences, and the clusters as the units of every interval and test - what lets "significant" carry
            over to new portraits. Without ``sources`` every video is its own source.

    Raises:
        MetricError: lengths differ, non-finite scores, duplicate names, fewer than 2 groups.
        ConfigError: n_boot < 100, ci outside [0.5, 1); a source in two clusters (sources must be nested).
    """
    from thqa.analysis.metrics import as_1d as _as_1d

    _check_settings(n_boot, ci, n_perm)
    p = _as_1d(pred, "predictions")
    lab = None if labels is None else _as_1d(labels, "labels")
    g = np.asarray(list(groups), dtype=object)
    names = list(names)
    sizes = {len(names), p.size, g.size} | ({lab.size} if lab is not None else set()) | ({len(sources)} if sources is not None else set())
    if len(sizes) != 1:
        raise MetricError(f"names, scores, groups{', sources' if sources is not None else ''}{', labels' if lab is not None else ''} differ in length")
    if len(set(names)) != len(names):
        raise MetricError("video names repeat; every video must appear once")
    if clusters is not None and len(clusters) != len(names):
        raise MetricError("names and clusters differ in length")
    units = np.asarray(list(sources) if sources is not None else names, dtype=object).astype(str)
    cluster_of = None if clusters is None else _nested(units, np.asarray(list(clusters), dtype=object).astype(str))
    group_names = sorted({str(x) for x in g})
    if len(group_names) < 2:
        raise MetricError(f"need at least 2 groups to compare, got {len(group_names)} ({', '.join(group_names) or 'none'})")
    rng = np.random.default_rng(seed)
    by_source = sources is not None or clusters is not None
    built = _build_groups(group_names, g, p, lab, units, cluster_of, by_source, rng, n_boot)
    built.sort(key=lambda x: (-x.mean, x.name))
    with_labels = lab is not None
    unit_word = "clusters" if clusters is not None else "sources" if by_source else "videos"
    gstats = _group_stats(built, ci, with_labels, by_source, unit_word)
    pending = [_pair_stats(built[i], built[j], ci, by_source, cluster_of) for i in range(len(built)) for j in range(i + 1, len(built))]
    n_tests = sum(t.d is not None or t.a is not None or t.tested for t in pending)
    n_perm = n_perm or n_perm_for(n_tests, 1.0 - ci, n_boot)
    _run_tests(pending, rng, n_perm)
    pairs = [t.stats for t in pending]
    _apply_holm(pairs, 1.0 - ci, with_labels)
    system, note = _system_stats(built, ci) if with_labels else (None, None)
    notes = [note] if note else []
    n_units = np.unique(units).size if cluster_of is None else len(set(cluster_of.values()))
    if system is not None and n_units < FEW_UNITS:
        notes.append(f"the system-level intervals resample only {n_units} {unit_word}: they are rough")
    if by_source:
        notes.append(
            "group means are least-squares means of the layout group + source (each group's effect plus the mean effect of "
            "the sources): ranks and pair differences use them; raw_mean is the plain mean of a group's videos"
        )
    resampling = "cluster" if clusters is not None else "source" if by_source else "video"
    return Comparison(gstats, pairs, system, int(p.size), int(n_boot), float(ci), int(seed), resampling, int(n_perm), notes=notes)


def _build_groups(group_names: list[str], g: np.ndarray, p: np.ndarray, lab: np.ndarray | None, units: np.ndarray,
                  cluster_of: dict[str, str] | None, by_source: bool, rng: np.random.Generator, n_boot: int) -> list[_Group]:
    """Each group's cells, figure and bootstrap replicates: plain means and a per-group video bootstrap, or with a
    source key the least-squares means and the joint source (or cluster) bootstrap of :func:`_adjusted`."""
    built: list[_Group] = []
    for name in group_names:
        m = g == name
        c = _cells(p[m], None if lab is None else lab[m], units[m])
        k = c.k if cluster_of is None else len({cluster_of[x] for x in c.sources})
        gr = _Group(name, c, None, None, c.mean(), None if lab is None else c.mean("label"), k)
        if c.k >= 2 and not by_source:
            gr.boot, gr.boot_label = _boot_means(c, _multinomial(rng, c.k, n_boot))
        built.append(gr)
    if by_source:
        points, boots = _adjusted([b.cells for b in built], rng, n_boot, cluster_of)
        for i, gr in enumerate(built):
            gr.mean = float(points[0][i])
            gr.label_mean = float(points[1][i]) if lab is not None else None
            if gr.cells.k >= 2:
                gr.boot, gr.boot_label = boots[0][:, i], boots[1][:, i] if lab is not None else None
    return built


def _nested(units: np.ndarray, clusters: np.ndarray) -> dict[str, str]:
    """source -> cluster; ConfigError naming a source that lies in two clusters."""
    out: dict[str, str] = {}
    for u, c in zip(units, clusters):
        if out.setdefault(u, c) != c:
            raise ConfigError(f"source {u!r} lies in two clusters ({out[u]!r} and {c!r}): sources must be nested in clusters")
    return out


# ------------------------------------------------------------------------------------------- keys from names
def key_from_pattern(names: Sequence[str], pattern: str, what: str = "group") -> tuple[dict[str, str], list[str]]:
    """Keys from a regular expression searched in each file name: the first capture group (the whole match when
    the pattern has none).

    Returns:
        ``({name: key}, names the pattern does not match)``.

    Raises:
        ConfigError: the pattern does not compile, or it matches none of the names (the message names it).
    """
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--{what}-pattern {pattern!r} is not a regular expression: {exc}") from None
    keys: dict[str, str] = {}
    missed: list[str] = []
    for name in names:
        m = rx.search(name)
        key = None if m is None else (m.group(1) if rx.groups else m.group(0))
        if key:
            keys[name] = key
        else:
            missed.append(name)
    if not keys:
        raise ConfigError(
            f"the {what} pattern {pattern!r} matches none of the {len(names)} file names (e.g. {', '.join(names[:3])})"
        )
    return keys, missed


def _key_from_fn(names: Sequence[str], fn: Callable[[str], str | None], what: str) -> tuple[dict[str, str], list[str]]:
    keys: dict[str, str] = {}
    missed: list[str] = []
    for name in names:
        try:
            key = fn(name)
        except ValueError:
            key = None
        if key:
            keys[name] = str(key)
        else:
            missed.append(name)
    if not keys:
        label = getattr(fn, "__name__", repr(fn))
        raise ConfigError(f"the {what} key {label} gives no key for any of the {len(names)} file names (e.g. {', '.join(names[:3])})")
    return keys, missed


def _key_from_column(names: Sequence[str], tables: Sequence[tuple[str, dict[str, dict[str, str]]]], column: str, what: str) -> tuple[dict[str, str], list[str]]:
    col = column.lower()
    for label, rows in tables:
        if rows and any(col in r for r in rows.values()):
            keys = {n: rows[n][col] for n in names if n in rows and rows[n].get(col)}
            missed = [n for n in names if n not in keys]
            if not keys:
                raise ConfigError(f"the {what} column {column!r} of {label} is empty for all compared videos")
            return keys, missed
    found = sorted({c for _, rows in tables for r in rows.values() for c in r})
    raise ConfigError(f"no {what} column {column!r} in {' or '.join(l for l, _ in tables)} (columns: {', '.join(found) or 'none'})")


def _read_columns(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Every column of a CSV with a header, or of a JSON list of objects: ``{file name as written: {column: text}}``
    (column names lower-case). Empty for a headerless ``name,score`` file."""
    import csv

    from thqa.data.predictions import path_name as _path_name
    from thqa.scoring.output import csv_plain

    path = Path(path)
    if path.suffix.lower() in (".json", ".jsonl"):
        from thqa.data.predictions import json_rows as _json_rows

        rows = _json_rows(path)
    else:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [{(k or "").strip().lower(): v.strip() if isinstance(v, str) else "" for k, v in r.items()} for r in csv.DictReader(fh)]
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        r = {str(k).lower(): "" if v is None else str(v) for k, v in r.items()}
        name = r.get("path") or r.get("video")
        if name:
            out[_path_name(csv_plain(name))] = r  # a thqa score CSV's '=x.mp4 is =x.mp4 (thqa.scoring.output.csv_safe)
    return out


def _keys(names: Sequence[str], tables, pattern: str | None, column: str | None, fn, what: str) -> tuple[dict[str, str] | None, list[str]]:
    """Keys of one kind (from a pattern, a column or a function; None when none is given) and the names without."""
    if pattern is not None:
        return key_from_pattern(names, pattern, what)
    if column is not None:
        if not tables:
            raise ConfigError(f"{what}_column needs a prediction or label file to read the column from")
        return _key_from_column(names, tables, column, what)
    if fn is not None:
        return _key_from_fn(names, fn, what)
    return None, []


def _summary(names: list[str]) -> dict:
    return {"n": len(names), "examples": names[:_EXAMPLES]}


def compare(
    predictions: str | os.PathLike[str] | Mapping[str, float],
    labels: str | os.PathLike[str] | Mapping[str, float] | None = None,
    *,
    group_pattern: str | None = None,
    group_column: str | None = None,
    group_fn: Callable[[str], str | None] | None = None,
    group_from: str | None = None,
    source_pattern: str | None = None,
    source_column: str | None = None,
    source_fn: Callable[[str], str | None] | None = None,
    source_from: str | None = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    n_perm: int | None = None,
    cluster_pattern: str | None = None,
    cluster_column: str | None = None,
    cluster_fn: Callable[[str], str | None] | None = None,
) -> Comparison:
    """Rank groups of videos (e.g. generators) by their predicted scores, with confidence intervals and tests.

    Args:
        predictions: a prediction file (the challenge's ``name,score``, a ``thqa score`` CSV or JSON) or
            ``{file name: score}``.
        labels: people's scores: a ``Video,Score`` CSV, a manifest (``path,mos,...``) or ``{file name: MOS}``.
            Predictions and labels are matched by file base name, or where base names repeat (``genA/x.mp4``,
            ``genB/x.mp4``) by the shortest ending of their paths that tells them apart
            (:func:`thqa.analysis.metrics.match_predictions`); only matched videos are compared, and the unmatched ones are
            counted in ``result.matching``.
        group_pattern: a regular expression searched in each file name (the base name, or that ending of the path
            where base names repeat); its first capture group is the group (e.g. ``r"_([^_]+)\\.mp4$"``: the last
            ``_`` field). Or ``group_column``: a column of the prediction or label file; or ``group_fn``: base name
            -> group (None or ValueError: no group); or ``group_from="parent"``: the name of the folder each
            prediction's file is in (``genA/x.mp4`` -> ``genA``). Exactly one.
        source_pattern, source_column, source_fn: the same for the source key (e.g.
            :func:`thqa.data.manifest.thqa_ntire_source`); or ``source_from="name"``: the file's base name (``x.mp4``: the
            same input rendered by each generator). Optional, at most one; with ``group_from="parent"`` and none
            given, the base name is the source when some base name is in two or more groups (a note says so).
        n_boot, ci, seed, n_perm: see :func:`compare_scores`.
        cluster_pattern, cluster_column, cluster_fn: the cluster in which sources are nested (e.g. the portrait:
            :func:`thqa.data.manifest.thqa_ntire_group`); optional, at most one; see ``clusters`` of :func:`compare_scores`.

    Videos without a group (or, with a source key, without a source) are left out and counted in
    ``result.left_out``.

    Raises:
        ConfigError: not exactly one group option, two source options, a bad regular expression, a pattern or
            column that matches no video (named in the message).
        MediaFileNotFoundError, ManifestError: unreadable prediction or label files (file and line named).
        MetricError: no prediction matches a label, fewer than 2 groups.
    """
    from thqa.data.predictions import MatchReport, match_by_path, read_labels, read_predictions, unique_tails
    from thqa.data.predictions import path_name as _path_name, path_tail as _tail

    if sum(x is not None for x in (group_pattern, group_column, group_fn, group_from)) != 1:
        raise ConfigError("give exactly one of group_pattern, group_column, group_fn, group_from (--group-pattern, --group-column, --group-from)")
    if sum(x is not None for x in (source_pattern, source_column, source_fn, source_from)) > 1:
        raise ConfigError("give at most one of source_pattern, source_column, source_fn, source_from")
    if group_from not in (None, *GROUP_FROM) or source_from not in (None, *SOURCE_FROM):
        raise ConfigError(f"group_from must be one of {', '.join(GROUP_FROM)} and source_from one of {', '.join(SOURCE_FROM)}")
    if sum(x is not None for x in (cluster_pattern, cluster_column, cluster_fn)) > 1:
        raise ConfigError("give at most one of cluster_pattern, cluster_column, cluster_fn (--cluster, --cluster-pattern)")
    tables: list[tuple[str, dict[str, dict[str, str]]]] = []
    if isinstance(predictions, Mapping):
        preds = {_path_name(str(k)): float(v) for k, v in predictions.items()}
    else:
        preds = read_predictions(predictions, by_path=True)
        tables.append((str(predictions), _read_columns(predictions)))
    matching = None
    lab_arr = None
    if labels is not None:
        if isinstance(labels, Mapping):
            labs = {str(k): float(v) for k, v in labels.items()}
        else:
            labs = read_labels(labels, by_path=True)
            tables.append((str(labels), _read_columns(labels)))
        names, pred_arr, lab_arr, report, given = match_by_path(preds, labs)
        matching = {
            "n_matched": report.n_matched,
            "unmatched_predictions": _summary(report.unmatched_predictions),
            "unmatched_labels": _summary(report.unmatched_labels),
        }
    else:
        tails, _ = unique_tails(list(preds))
        names, given = list(tails.values()), {t: n for n, t in tails.items()}
        pred_arr, report = np.array(list(preds.values()), dtype=np.float64), MatchReport(len(preds))
    depth = max(n.count("/") + 1 for n in names)  # the path parts names keep (1: base names)
    tables = [(label, {_tail(n, depth): r for n, r in rows.items()}) for label, rows in tables]
    if group_fn is not None:
        group_fn = _on_base_name(group_fn)
    if source_fn is not None:
        source_fn = _on_base_name(source_fn)
    auto_source = False
    if group_from == "parent":
        group_fn = _parent_folder(given)
        if source_pattern is None and source_column is None and source_fn is None and source_from is None:
            source_from = _default_source(names, group_fn)
            auto_source = source_from is not None
    if source_from == "name":
        source_fn = _base_name

    if group_pattern is not None:
        gkeys, no_group = key_from_pattern(names, group_pattern, "group")
    elif group_column is not None:
        if not tables:
            raise ConfigError("group_column needs a prediction or label file to read the column from")
        gkeys, no_group = _key_from_column(names, tables, group_column, "group")
    else:
        gkeys, no_group = _key_from_fn(names, group_fn, "group")
    skeys, no_source = None, []
    if source_pattern is not None:
        skeys, no_source = key_from_pattern(names, source_pattern, "source")
    elif source_column is not None:
        if not tables:
            raise ConfigError("source_column needs a prediction or label file to read the column from")
        skeys, no_source = _key_from_column(names, tables, source_column, "source")
    elif source_fn is not None:
        skeys, no_source = _key_from_fn(names, source_fn, "source")

    ckeys, no_cluster = _keys(names, tables, cluster_pattern, cluster_column, cluster_fn, "cluster")
    keep = [i for i, n in enumerate(names) if n in gkeys and (skeys is None or n in skeys) and (ckeys is None or n in ckeys)]
    left_out = {}
    if no_group:
        left_out["no_group"] = _summary(no_group)
        logger.warning("%d video(s) have no group and are left out, e.g. %s", len(no_group), ", ".join(no_group[:3]))
    if no_source:
        left_out["no_source"] = _summary(no_source)
        logger.warning("%d video(s) have no source key and are left out, e.g. %s", len(no_source), ", ".join(no_source[:3]))
    if no_cluster:
        left_out["no_cluster"] = _summary(no_cluster)
        logger.warning("%d video(s) have no cluster and are left out, e.g. %s", len(no_cluster), ", ".join(no_cluster[:3]))
    kept = [names[i] for i in keep]
    result = compare_scores(
        kept,
        pred_arr[keep],
        [gkeys[n] for n in kept],
        sources=None if skeys is None else [skeys[n] for n in kept],
        labels=None if lab_arr is None else lab_arr[keep],
        n_boot=n_boot,
        ci=ci,
        seed=seed,
        n_perm=n_perm,
        clusters=None if ckeys is None else [ckeys[n] for n in kept],
    )
    result.matching = matching
    result.left_out = left_out
    if auto_source:
        result.notes.append("source: each file's base name (x.mp4 in two folders: one input rendered by two generators)")
    return result


#: where ``compare(group_from=...)`` takes the group from: "parent" = the folder a file is in
GROUP_FROM = ("parent",)
#: where ``compare(source_from=...)`` takes the source from: "name" = the file's base name
SOURCE_FROM = ("name",)


def _base_name(name: str) -> str:
    """The source of ``genA/x.mp4``: ``x.mp4``."""
    return name.rsplit("/", 1)[-1]


def _on_base_name(fn: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """``fn`` applied to a name's base name (names keep folders where base names repeat)."""

    def on_base(name: str) -> str | None:
        return fn(_base_name(name))

    on_base.__name__ = getattr(fn, "__name__", "group_fn")
    return on_base


def _parent_folder(given: Mapping[str, str]) -> Callable[[str], str | None]:
    """name -> the folder its prediction's file is in, as the prediction file names it (None: no folder)."""

    def parent_folder(name: str) -> str | None:
        parts = given.get(name, name).split("/")
        return parts[-2] if len(parts) >= 2 and parts[-2] not in ("", ".", "..") else None

    return parent_folder


def _default_source(names: Sequence[str], group_of: Callable[[str], str | None]) -> str | None:
    """"name" when some base name is in two or more groups (the same input rendered by several generators)."""
    seen: dict[str, set] = {}
    for n in names:
        seen.setdefault(_base_name(n), set()).add(group_of(n))
    return "name" if any(len(g - {None}) >= 2 for g in seen.values()) else None


# ------------------------------------------------------------------------------------------------- output
def _fmt_ci(ci: list[float] | None, digits: int = 3) -> str:
    return "-" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def format_table(res: Comparison) -> str:
    """The plain-text report of ``thqa compare``."""
    pct = f"{100 * res.ci_level:g}%"
    labelled = res.system is not None or any(g.label_mean is not None for g in res.groups)
    width = max([5] + [len(g.group) for g in res.groups])
    adjusted = res.resampling in ("source", "cluster")
    head = f"{'rank':>4}  {'group':<{width}}  {'n':>5}  {'mean':>7}  {pct + ' CI':<18}" + (f"  {'raw':>7}" if adjusted else "")
    if labelled:
        head += f"  {'label':>7}  {pct + ' CI':<18}  {'label rank':>10}"
    lines = [
        f"{res.n} videos in {len(res.groups)} groups; bootstrap by {res.resampling} ({res.n_boot} resamples, "
        f"{res.n_perm} permutations per test, seed {res.seed})",
        "",
        head,
    ]
    for g in res.groups:
        row = f"{g.rank:>4}  {g.group:<{width}}  {g.n:>5}  {g.mean:>7.3f}  {_fmt_ci(g.ci):<18}" + (f"  {g.raw_mean:>7.3f}" if adjusted else "")
        if labelled:
            row += f"  {g.label_mean:>7.3f}  {_fmt_ci(g.label_ci):<18}  {g.label_rank:>10}"
        if g.note:
            row += f"  ({g.note})"
        lines.append(row)
    if res.system is not None:
        s = res.system
        lines += [
            "",
            f"system level ({s.n_groups} groups' means, predictions against labels): "
            f"SRCC {s.srcc:.4f} {_fmt_ci(s.srcc_ci, 4)}, KRCC {s.krcc:.4f} {_fmt_ci(s.krcc_ci, 4)}, "
            f"PLCC {s.plcc:.4f} {_fmt_ci(s.plcc_ci, 4)}",
        ]
    n_sig = sum(p.significant for p in res.pairs)
    n_paired = sum(p.paired for p in res.pairs)
    alpha = f"{1 - res.ci_level:.2g}"
    lines += ["", f"pairs: {n_sig} of {len(res.pairs)} significant (Holm, alpha {alpha}); {n_paired} paired by source"]
    if labelled:
        n_lsig = sum(bool(p.label_significant) for p in res.pairs)
        lines[-1] += f"; the labels separate {n_lsig}"
    wa = max([1] + [len(p.a) for p in res.pairs])
    wb = max([1] + [len(p.b) for p in res.pairs])
    head = f"{'a':<{wa}}  {'b':<{wb}}  {'a - b':>7}  {pct + ' CI':<18}  {'p':>8}  {'Holm p':>8}  sig  paired  {'used a/b':>9}"
    if labelled:
        head += f"  {'label a - b':>11}  {'sig':>3}"
    lines.append(head)
    for p in res.pairs:
        row = (
            f"{p.a:<{wa}}  {p.b:<{wb}}  {p.diff:>7.3f}  {_fmt_ci(p.ci):<18}  {_fmt_p(p.p):>8}  {_fmt_p(p.p_holm):>8}  "
            f"{'yes' if p.significant else 'no ':<3}  {str(p.n_paired) if p.paired else '-':>6}  "
            f"{'-' if p.share is None else f'{p.share[0]:.0%}/{p.share[1]:.0%}':>9}"
        )
        if labelled:
            row += f"  {p.label_diff:>11.3f}  {'yes' if p.label_significant else 'no':>3}"
        if p.note:
            row += f"  ({p.note})"
        lines.append(row)
    lines += ["", f"p: {res.p_test}."]
    lines += [f"note: {n}" for n in res.notes]
    return "\n".join(line.rstrip() for line in lines) + "\n"


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from thqa.utils.atomic import atomic_path

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
        heading += f"\nsystem SRCC {s.srcc:.3f} {_fmt_ci(s.srcc_ci)}, PLCC {s.plcc:.3f}"
    fig.suptitle(heading, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format=fmt)
    os.chmod(path, 0o644)
    return path
