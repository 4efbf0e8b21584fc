"""Comparing systems (e.g. talking-head generators) by their videos' scores, with the uncertainty of each answer.

:func:`compare` (``thqa.compare``, ``thqa compare``) groups videos by system, then reports:

- ``groups``: each group's mean score, a bootstrap confidence interval, its rank; with people's labels the same for
  the labels;
- ``pairs``: every pair's difference ``a - b`` with a bootstrap confidence interval and a two-sided permutation-test
  p-value, ``significant`` after Holm's correction over all pairs;
- ``system`` (with labels): SRCC, KRCC and PLCC between the groups' mean predictions and their mean labels - how well
  the model ranks the systems - each with a bootstrap confidence interval.

Resampling. Without a source key every video is an independent unit: groups are resampled video by video. With a
source key (what a video was rendered from: the same portrait and speech clip across generators) the units are the
sources: a source's videos in a group stay together (cluster bootstrap), so a portrait that appears in every group
does not count as independent evidence, and two groups whose videos come from the same sources are compared
**paired**: the mean over the shared sources of the per-source differences, which removes the sources' own
difficulty from the comparison.

Tests (``p``): paired pairs, a sign-flip permutation test of the per-source differences; other pairs, a permutation
test of the videos' (or, with a source key, the sources') group labels, with the difference of video-weighted means
as the statistic. Exact (every permutation) when there are no more permutations than ``n_boot``, otherwise
``n_boot`` random ones with the usual +1 correction. Two-sided p-values follow :func:`scipy.stats.permutation_test`
(twice the smaller one-sided p-value, at most 1).
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
    "two-sided permutation test: sign flips of the per-source differences for paired pairs, shuffled group labels of "
    "the videos (with a source key: of the sources) otherwise; Holm-corrected over all pairs"
)
#: A pair is compared paired when its shared sources hold at least this fraction of each group's videos.
PAIRED_MIN_SHARE = 0.5
#: Bootstrap intervals from fewer independent units than this are flagged as rough (a bootstrap of 5 numbers has
#: few distinct resamples and undercovers).
FEW_UNITS = 10
_EXAMPLES = 5


# ----------------------------------------------------------------------------------------------------- results
@dataclass
class GroupStats:
    """One group: ``n`` videos (from ``n_sources`` sources with a source key), mean score and its CI, rank (1 = best)."""

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


@dataclass
class PairStats:
    """Group ``a`` against group ``b``: ``diff`` = a - b, its CI, the test's p-value, Holm-adjusted p, verdict."""

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
    resampling: str  #: "video" or "source"
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
        p.label_significant, p.note,
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


def _p_two_sided(null: np.ndarray, observed: float, *, exact: bool) -> float:
    """Two-sided p-value of ``observed`` against a permutation null, as :func:`scipy.stats.permutation_test`."""
    gamma = abs(np.finfo(np.float64).eps * 100 * observed)
    adj = 0 if exact else 1
    less = (np.count_nonzero(null <= observed + gamma) + adj) / (null.size + adj)
    greater = (np.count_nonzero(null >= observed - gamma) + adj) / (null.size + adj)
    return float(min(1.0, 2.0 * min(less, greater)))


def _multinomial(rng: np.random.Generator, k: int, n_boot: int) -> np.ndarray:
    """(n_boot, k) counts: how often each of k units is drawn in each bootstrap resample of size k."""
    return rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot)


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


# ----------------------------------------------------------------------------------------------- the core
@dataclass
class _Group:
    name: str
    cells: _Cells
    boot: np.ndarray | None  #: (R,) bootstrap means of predictions, None without a CI
    boot_label: np.ndarray | None


def _group_stats(groups: list[_Group], level: float, with_labels: bool, by_source: bool) -> list[GroupStats]:
    means = [g.cells.mean() for g in groups]
    ranks = _ranks(means)
    label_ranks = _ranks([g.cells.mean("label") for g in groups]) if with_labels else [None] * len(groups)
    out = []
    for g, mean, rank, lrank in zip(groups, means, ranks, label_ranks):
        note = None
        if g.boot is None:
            note = "one video: no confidence interval" if g.cells.n.sum() == 1 else "one source: no confidence interval (its videos are not independent)"
        elif g.cells.k < FEW_UNITS:
            note = f"{g.cells.k} {'sources' if by_source else 'videos'}: a rough interval"
        out.append(
            GroupStats(
                group=g.name,
                n=int(g.cells.n.sum()),
                mean=mean,
                ci=None if g.boot is None else _percentile_ci(g.boot, level),
                rank=rank,
                n_sources=g.cells.k if by_source else None,
                label_mean=g.cells.mean("label") if with_labels else None,
                label_ci=None if g.boot_label is None else _percentile_ci(g.boot_label, level),
                label_rank=lrank,
                note=note,
            )
        )
    return out


def _paired_cells(a: _Cells, b: _Cells) -> tuple[np.ndarray, np.ndarray | None, int] | None:
    """Per-source differences (K,) of the means of a and b over their shared sources, or None if not paired."""
    shared, ia, ib = np.intersect1d(a.sources, b.sources, return_indices=True)
    if shared.size < 2:
        return None
    if min(a.n[ia].sum() / a.n.sum(), b.n[ib].sum() / b.n.sum()) < PAIRED_MIN_SHARE:
        return None
    d = a.pred[ia] / a.n[ia] - b.pred[ib] / b.n[ib]
    dl = None if a.label is None else a.label[ia] / a.n[ia] - b.label[ib] / b.n[ib]
    return d, dl, int(shared.size)


def _paired_ci(d: np.ndarray, rng: np.random.Generator, n_boot: int, level: float) -> list[float] | None:
    return _percentile_ci(_multinomial(rng, d.size, n_boot) @ d / d.size, level)


@dataclass
class _Pending:
    """A pair whose permutation test is still to run: per-source differences (paired) or both groups' units."""

    stats: PairStats
    d: np.ndarray | None = None  #: (K,) paired differences of predictions
    dl: np.ndarray | None = None  #: (K,) of labels
    a: _Cells | None = None
    b: _Cells | None = None


def _pair_stats(ga: _Group, gb: _Group, rng: np.random.Generator, n_boot: int, level: float) -> _Pending:
    """Difference and bootstrap CI of one pair; the p-value comes later (:func:`_run_tests`)."""
    a, b = ga.cells, gb.cells
    paired = _paired_cells(a, b)
    if paired is not None:
        d, dl, n_paired = paired
        ci = _paired_ci(d, rng, n_boot, level)
        lci = None if dl is None else _paired_ci(dl, rng, n_boot, level)
        st = PairStats(ga.name, gb.name, float(d.mean()), ci, None, None, False, True, n_paired,
                       None if dl is None else float(dl.mean()), lci)
        return _Pending(st, d=d, dl=dl)
    diff = a.mean() - b.mean()
    ldiff = None if a.label is None else a.mean("label") - b.mean("label")
    if ga.boot is None or gb.boot is None:
        lonely = ga if ga.boot is None else gb
        why = "one video" if lonely.cells.n.sum() == 1 else "one source"
        return _Pending(PairStats(ga.name, gb.name, diff, None, None, None, False, False, 0, ldiff, note=f"{lonely.name!r} has {why}: no CI or test"))
    ci = _percentile_ci(ga.boot - gb.boot, level)
    lci = None if ga.boot_label is None else _percentile_ci(ga.boot_label - gb.boot_label, level)
    return _Pending(PairStats(ga.name, gb.name, diff, ci, None, None, False, False, 0, ldiff, lci), a=a, b=b)


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


def _unit_p(values: np.ndarray, n: np.ndarray, k_a: int, idx: np.ndarray, n_a: np.ndarray | float, exact: bool) -> list[float]:
    """Permutation p-values of mean(first k_a units) - mean(the rest), video-weighted, for each column of
    ``values`` (K, C); ``idx`` (R, k_a): the units each permutation gives the first group, ``n_a`` (R,): their videos."""
    total, n_total = values.sum(axis=0), n.sum()
    s_a = np.stack([np.ascontiguousarray(values[:, c])[idx].sum(axis=1) for c in range(values.shape[1])], axis=1)  # (R, C)
    n_a = np.asarray(n_a, dtype=np.float64).reshape(-1, 1)
    null = s_a / n_a - (total - s_a) / (n_total - n_a)
    observed = values[:k_a].sum(axis=0) / n[:k_a].sum() - values[k_a:].sum(axis=0) / n[k_a:].sum()
    return [_p_two_sided(null[:, c], float(observed[c]), exact=exact) for c in range(values.shape[1])]


def _unpaired_p(tests: list[_Pending], rng: np.random.Generator, n_perm: int) -> None:
    """Permutation tests of the units' group labels: every split when there are at most n_perm, else n_perm random
    permutations. One (n_perm, K_max) matrix of random permutations is drawn; the entries below K of each row
    are a uniform random permutation of K units, shared by the pairs that pool K units (each p-value stays a
    valid test, and Holm's correction allows any dependence between them)."""
    by_k: dict[int, list[_Pending]] = {}
    for t in tests:
        by_k.setdefault(t.a.k + t.b.k, []).append(t)
    base: np.ndarray | None = None
    for k in sorted(by_k):
        perms: np.ndarray | None = None
        for t in by_k[k]:
            k_a = t.a.k
            if math.comb(k, k_a) <= n_perm:
                idx, exact = np.array(list(itertools.combinations(range(k), k_a)), dtype=np.intp), True
            else:
                if perms is None:
                    if base is None:
                        base = rng.permuted(np.broadcast_to(np.arange(max(by_k), dtype=np.int32), (n_perm, max(by_k))), axis=1)
                    perms = base[base < k].reshape(n_perm, k)
                idx, exact = perms[:, :k_a], False
            n = np.concatenate([t.a.n, t.b.n])
            n_a = float(k_a) if np.all(n == 1) else n[idx].sum(axis=1)
            cols = [np.concatenate([t.a.pred, t.b.pred])]
            if t.a.label is not None:
                cols.append(np.concatenate([t.a.label, t.b.label]))
            ps = _unit_p(np.stack(cols, axis=1), n, k_a, idx, n_a, exact)
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


def _system_stats(groups: list[_Group], rng: np.random.Generator, n_boot: int, level: float) -> SystemStats | None:
    """Correlations of the groups' mean predictions and labels; CIs from resampling all units (sources) at once."""
    if len(groups) < 3:
        return None
    mp = np.array([g.cells.mean() for g in groups])
    ml = np.array([g.cells.mean("label") for g in groups])
    point = _correlations(mp, ml)
    if not all(math.isfinite(v) for v in point):
        raise MetricError("the groups' mean predictions or mean labels are all equal: system-level correlation is undefined")
    keys = np.unique(np.concatenate([g.cells.sources for g in groups]))
    n = np.zeros((len(groups), keys.size))
    sp, sl = np.zeros_like(n), np.zeros_like(n)
    for i, g in enumerate(groups):
        idx = np.searchsorted(keys, g.cells.sources)
        n[i, idx], sp[i, idx], sl[i, idx] = g.cells.n, g.cells.pred, g.cells.label
    w = _multinomial(rng, keys.size, n_boot)
    cnt = w @ n.T
    with np.errstate(invalid="ignore", divide="ignore"):
        bp, bl = (w @ sp.T) / cnt, (w @ sl.T) / cnt  # (R, G); NaN where a group drew no unit
    full = np.all(cnt > 0, axis=1)
    reps = np.full((n_boot, 3), math.nan)
    reps[full] = _rowwise_correlations(bp[full], bl[full])
    for r in np.flatnonzero(~full):  # a group drew no unit: correlate the others
        keep = cnt[r] > 0
        if keep.sum() >= 3:
            reps[r] = _correlations(bp[r, keep], bl[r, keep])
    cis = [_percentile_ci(reps[:, j], level) for j in range(3)]
    return SystemStats(len(groups), point[0], cis[0], point[1], cis[1], point[2], cis[2])


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

    Raises:
        MetricError: lengths differ, non-finite scores, duplicate names, fewer than 2 groups.
        ConfigError: n_boot < 100, ci outside [0.5, 1).
    """
    from thqa.metrics import _as_1d

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
    units = np.asarray(list(sources) if sources is not None else names, dtype=object).astype(str)
    group_names = sorted({str(x) for x in g})
    if len(group_names) < 2:
        raise MetricError(f"need at least 2 groups to compare, got {len(group_names)} ({', '.join(group_names) or 'none'})")
    rng = np.random.default_rng(seed)
    built: list[_Group] = []
    for name in group_names:
        m = g == name
        c = _cells(p[m], None if lab is None else lab[m], units[m])
        boot = boot_l = None
        if c.k >= 2:
            boot, boot_l = _boot_means(c, _multinomial(rng, c.k, n_boot))
        built.append(_Group(name, c, boot, boot_l))
    order = sorted(range(len(built)), key=lambda i: (-built[i].cells.mean(), built[i].name))
    built = [built[i] for i in order]
    with_labels = lab is not None
    by_source = sources is not None
    gstats = _group_stats(built, ci, with_labels, by_source)
    pending = [_pair_stats(built[i], built[j], rng, n_boot, ci) for i in range(len(built)) for j in range(i + 1, len(built))]
    n_tests = sum(t.d is not None or t.a is not None for t in pending)
    n_perm = n_perm or n_perm_for(n_tests, 1.0 - ci, n_boot)
    _run_tests(pending, rng, n_perm)
    pairs = [t.stats for t in pending]
    _apply_holm(pairs, 1.0 - ci, with_labels)
    system = _system_stats(built, rng, n_boot, ci) if with_labels else None
    notes = []
    if with_labels and system is None:
        notes.append(f"system-level correlations need at least 3 groups; there are {len(built)}")
    n_units = np.unique(units).size
    if system is not None and n_units < FEW_UNITS:
        notes.append(f"the system-level intervals resample only {n_units} {'sources' if by_source else 'videos'}: they are rough")
    return Comparison(
        gstats, pairs, system, int(p.size), int(n_boot), float(ci), int(seed), "source" if by_source else "video", int(n_perm), notes=notes
    )


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

    from thqa.metrics import _path_name

    path = Path(path)
    if path.suffix.lower() in (".json", ".jsonl"):
        from thqa.metrics import _json_rows

        rows = _json_rows(path)
    else:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [{(k or "").strip().lower(): v.strip() if isinstance(v, str) else "" for k, v in r.items()} for r in csv.DictReader(fh)]
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        r = {str(k).lower(): "" if v is None else str(v) for k, v in r.items()}
        name = r.get("path") or r.get("video")
        if name:
            out[_path_name(name)] = r
    return out


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
) -> Comparison:
    """Rank groups of videos (e.g. generators) by their predicted scores, with confidence intervals and tests.

    Args:
        predictions: a prediction file (the challenge's ``name,score``, a ``thqa score`` CSV or JSON) or
            ``{file name: score}``.
        labels: people's scores: a ``Video,Score`` CSV, a manifest (``path,mos,...``) or ``{file name: MOS}``.
            Predictions and labels are matched by file base name, or where base names repeat (``genA/x.mp4``,
            ``genB/x.mp4``) by the shortest ending of their paths that tells them apart
            (:func:`thqa.metrics.match_predictions`); only matched videos are compared, and the unmatched ones are
            counted in ``result.matching``.
        group_pattern: a regular expression searched in each file name (the base name, or that ending of the path
            where base names repeat); its first capture group is the group (e.g. ``r"_([^_]+)\\.mp4$"``: the last
            ``_`` field). Or ``group_column``: a column of the prediction or label file; or ``group_fn``: base name
            -> group (None or ValueError: no group); or ``group_from="parent"``: the name of the folder each
            prediction's file is in (``genA/x.mp4`` -> ``genA``). Exactly one.
        source_pattern, source_column, source_fn: the same for the source key (e.g.
            :func:`thqa.data.thqa_ntire_source`); or ``source_from="name"``: the file's base name (``x.mp4``: the
            same input rendered by each generator). Optional, at most one; with ``group_from="parent"`` and none
            given, the base name is the source when some base name is in two or more groups (a note says so).
        n_boot, ci, seed, n_perm: see :func:`compare_scores`.

    Videos without a group (or, with a source key, without a source) are left out and counted in
    ``result.left_out``.

    Raises:
        ConfigError: not exactly one group option, two source options, a bad regular expression, a pattern or
            column that matches no video (named in the message).
        MediaFileNotFoundError, ManifestError: unreadable prediction or label files (file and line named).
        MetricError: no prediction matches a label, fewer than 2 groups.
    """
    from thqa.metrics import MatchReport, _path_name, _tail, match_by_path, read_labels, read_predictions, unique_tails

    if sum(x is not None for x in (group_pattern, group_column, group_fn, group_from)) != 1:
        raise ConfigError("give exactly one of group_pattern, group_column, group_fn, group_from (--group-pattern, --group-column, --group-from)")
    if sum(x is not None for x in (source_pattern, source_column, source_fn, source_from)) > 1:
        raise ConfigError("give at most one of source_pattern, source_column, source_fn, source_from")
    if group_from not in (None, *GROUP_FROM) or source_from not in (None, *SOURCE_FROM):
        raise ConfigError(f"group_from must be one of {', '.join(GROUP_FROM)} and source_from one of {', '.join(SOURCE_FROM)}")
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

    keep = [i for i, n in enumerate(names) if n in gkeys and (skeys is None or n in skeys)]
    left_out = {}
    if no_group:
        left_out["no_group"] = _summary(no_group)
        logger.warning("%d video(s) have no group and are left out, e.g. %s", len(no_group), ", ".join(no_group[:3]))
    if no_source:
        left_out["no_source"] = _summary(no_source)
        logger.warning("%d video(s) have no source key and are left out, e.g. %s", len(no_source), ", ".join(no_source[:3]))
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
    head = f"{'rank':>4}  {'group':<{width}}  {'n':>5}  {'mean':>7}  {pct + ' CI':<18}"
    if labelled:
        head += f"  {'label':>7}  {pct + ' CI':<18}  {'label rank':>10}"
    lines = [
        f"{res.n} videos in {len(res.groups)} groups; bootstrap by {res.resampling} ({res.n_boot} resamples, "
        f"{res.n_perm} permutations per test, seed {res.seed})",
        "",
        head,
    ]
    for g in res.groups:
        row = f"{g.rank:>4}  {g.group:<{width}}  {g.n:>5}  {g.mean:>7.3f}  {_fmt_ci(g.ci):<18}"
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
    head = f"{'a':<{wa}}  {'b':<{wb}}  {'a - b':>7}  {pct + ' CI':<18}  {'p':>8}  {'Holm p':>8}  sig  paired"
    if labelled:
        head += f"  {'label a - b':>11}  {'sig':>3}"
    lines.append(head)
    for p in res.pairs:
        row = (
            f"{p.a:<{wa}}  {p.b:<{wb}}  {p.diff:>7.3f}  {_fmt_ci(p.ci):<18}  {_fmt_p(p.p):>8}  {_fmt_p(p.p_holm):>8}  "
            f"{'yes' if p.significant else 'no ':<3}  {str(p.n_paired) if p.paired else '-':>6}"
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

    from thqa._atomic import atomic_path

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
