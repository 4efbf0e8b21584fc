"""Comparing systems (e.g. talking-head generators) by their videos' scores, with the uncertainty of each answer.

:func:`compare` (``thqa.compare``, ``thqa compare``) groups videos by system, then reports:

- ``groups``: each group's figure (mean score; with a source key its least-squares mean), a bootstrap confidence
  interval, its rank, its plain mean; with people's labels the same for the labels;
- ``pairs``: every pair's difference ``a - b`` of the figures with a bootstrap confidence interval and a two-sided
  p-value, ``significant`` after Holm's correction over all pairs;
- ``system`` (with labels): SRCC, KRCC and PLCC between the groups' figures for predictions and labels - how well
  the model ranks the systems - each with an interval for the population value (the groups' figures without their
  resampling noise, which attenuates the observed ones), found by test inversion in a bootstrap world
  (:mod:`thqa.analysis.comparison_system`), and the PLCC with the noise taken out (``plcc_disattenuated``).

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
spreads differ (measured in ``tests/analysis/test_calibration.py`` and ``benchmarks/bench_calibration.py``).

Where each part lives: :mod:`~thqa.analysis.comparison_results` (the result dataclasses and the table),
:mod:`~thqa.analysis.comparison_layout` (cells, least-squares means and their bootstrap),
:mod:`~thqa.analysis.comparison_tests` (intervals, tests, Holm), :mod:`~thqa.analysis.comparison_system`
(system-level correlations), :mod:`~thqa.analysis.comparison_input` (reading files, matching, keys) and
:mod:`~thqa.analysis.comparison_plot`; this module assembles them and keeps the public names.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from thqa.analysis.comparison_input import (
    GROUP_FROM,
    SOURCE_FROM,
    KeyOptions,
    _as_1d,
    key_from_pattern,
    read_inputs,
    resolve_keys,
)
from thqa.analysis.comparison_layout import Cells, adjusted_means, boot_means, group_cells, multinomial
from thqa.analysis.comparison_plot import PLOT_MAX_PAIRS, plot_comparison
from thqa.analysis.comparison_results import P_TEST, Comparison, GroupStats, PairStats, SystemStats, format_table
from thqa.analysis.comparison_system import RELIABLE, system_stats
from thqa.analysis.comparison_tests import (
    PAIRED_MIN_SHARE,
    T_UNITS,
    Pending,
    apply_holm,
    holm,
    interval,
    n_perm_for,
    paired_cells,
    run_tests,
    wald_p,
)
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
# also importable from here, as before the split: the constants and helpers the other modules define
_REEXPORTED = (GROUP_FROM, SOURCE_FROM, P_TEST, PAIRED_MIN_SHARE, T_UNITS, RELIABLE, PLOT_MAX_PAIRS, format_table, n_perm_for)

#: Bootstrap intervals from fewer independent units than this are flagged as rough (a bootstrap of 5 numbers has
#: few distinct resamples and undercovers).
FEW_UNITS = 10


@dataclass
class _Group:
    name: str
    cells: Cells
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
                ci=None if g.boot is None else interval(g.boot, level, g.units, g.mean),
                rank=rank,
                n_sources=g.cells.k if by_source else None,
                label_mean=g.label_mean if with_labels else None,
                label_ci=None if g.boot_label is None else interval(g.boot_label, level, g.units, g.label_mean),
                label_rank=lrank,
                note=note,
                raw_mean=g.cells.mean(),
                raw_label_mean=g.cells.mean("label") if with_labels else None,
            )
        )
    return out


def _ranks(values: Sequence[float]) -> list[int]:
    return [int(r) for r in stats.rankdata(-np.asarray(values), method="min")]


def _pair_stats(ga: _Group, gb: _Group, level: float, by_source: bool, cluster_of: dict[str, str] | None) -> Pending:
    """Difference of the two groups' figures and its bootstrap CI (from the groups' joint replicates); the p-value
    comes later (:func:`run_tests`)."""
    a, b = ga.cells, gb.cells
    diff = ga.mean - gb.mean
    ldiff = None if ga.label_mean is None else ga.label_mean - gb.label_mean
    if ga.boot is None or gb.boot is None:
        lonely = ga if ga.boot is None else gb
        why = "one video" if lonely.cells.n.sum() == 1 else "one source"
        return Pending(PairStats(ga.name, gb.name, diff, None, None, None, False, False, 0, ldiff, note=f"{lonely.name!r} has {why}: no CI or test"))
    k = min(ga.units, gb.units)
    ci = interval(ga.boot - gb.boot, level, k, diff)
    lci = None if ga.boot_label is None else interval(ga.boot_label - gb.boot_label, level, k, ldiff)
    paired = paired_cells(a, b, cluster_of)
    if paired is not None:
        d, dl, n_paired, share = paired
        st = PairStats(ga.name, gb.name, diff, ci, None, None, False, True, n_paired, ldiff, lci, share=share, paired_diff=float(d.mean()))
        if np.sign(st.paired_diff) * np.sign(diff) < 0:
            st.note = (f"over the {n_paired} shared sources {ga.name} - {gb.name} is {st.paired_diff:+.3f}, against {diff:+.3f} with "
                       "every source's effect taken out: the test (on the shared sources) and the difference disagree")
        return Pending(st, d=d, dl=dl)
    st = PairStats(ga.name, gb.name, diff, ci, None, None, False, False, 0, ldiff, lci, share=[1.0, 1.0])
    if not by_source:
        return Pending(st, a=a, b=b)
    st.p = wald_p(diff, ga.boot - gb.boot, k)
    if ldiff is not None:
        st.label_p = wald_p(ldiff, ga.boot_label - gb.boot_label, k)
    return Pending(st, tested=True)


def _check_settings(n_boot: int, ci: float, n_perm: int | None) -> None:
    if not (isinstance(n_boot, (int, np.integer)) and n_boot >= 100):
        raise ConfigError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    if n_perm is not None and not (isinstance(n_perm, (int, np.integer)) and n_perm >= 100):
        raise ConfigError(f"n_perm must be an integer >= 100, got {n_perm!r}")
    if not (isinstance(ci, (int, float)) and 0.5 <= ci < 1.0):
        raise ConfigError(f"ci must be a level between 0.5 and 1 (e.g. 0.95), got {ci!r}")


def _arrays(names: Sequence[str], pred: Any, groups: Sequence[str], sources: Sequence[str] | None, labels: Any,
            clusters: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, dict[str, str] | None]:
    """Checked inputs of :func:`compare_scores`: scores (N,), labels (N,) or None, groups (N,), units (N,) (sources,
    or the names without a source key) and source -> cluster (None without clusters)."""
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
    return p, lab, g, units, cluster_of


def compare_scores(
    names: Sequence[str], pred: Any, groups: Sequence[str], *, sources: Sequence[str] | None = None, labels: Any = None,
    n_boot: int = 2000, ci: float = 0.95, seed: int = 0, n_perm: int | None = None, clusters: Sequence[str] | None = None,
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
    _check_settings(n_boot, ci, n_perm)
    p, lab, g, units, cluster_of = _arrays(names, pred, groups, sources, labels, clusters)
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
    run_tests(pending, rng, n_perm)
    pairs = [t.stats for t in pending]
    apply_holm(pairs, 1.0 - ci, with_labels)
    system, notes = _system(built, ci, with_labels, units, cluster_of, unit_word)
    if by_source:
        notes.append(
            "group means are least-squares means of the layout group + source (each group's effect plus the mean effect of "
            "the sources): ranks and pair differences use them; raw_mean is the plain mean of a group's videos"
        )
    resampling = "cluster" if clusters is not None else "source" if by_source else "video"
    return Comparison(gstats, pairs, system, int(p.size), int(n_boot), float(ci), int(seed), resampling, int(n_perm), notes=notes)


def _system(built: list[_Group], level: float, with_labels: bool, units: np.ndarray, cluster_of: dict[str, str] | None,
            unit_word: str) -> tuple[SystemStats | None, list[str]]:
    """The system-level figures (with labels) and the notes about them."""
    if not with_labels:
        return None, []
    system, note = system_stats(
        np.array([g.mean for g in built]), np.array([g.label_mean for g in built]), [g.boot for g in built], [g.boot_label for g in built],
        [g.units for g in built], level,
    )
    notes = [note] if note else []
    n_units = np.unique(units).size if cluster_of is None else len(set(cluster_of.values()))
    if system is not None and n_units < FEW_UNITS:
        notes.append(f"the system-level intervals resample only {n_units} {unit_word}: they are rough")
    return system, notes


def _build_groups(group_names: list[str], g: np.ndarray, p: np.ndarray, lab: np.ndarray | None, units: np.ndarray,
                  cluster_of: dict[str, str] | None, by_source: bool, rng: np.random.Generator, n_boot: int) -> list[_Group]:
    """Each group's cells, figure and bootstrap replicates: plain means and a per-group video bootstrap, or with a
    source key the least-squares means and the joint source (or cluster) bootstrap of :func:`adjusted_means`."""
    built: list[_Group] = []
    for name in group_names:
        m = g == name
        c = group_cells(p[m], None if lab is None else lab[m], units[m])
        k = c.k if cluster_of is None else len({cluster_of[x] for x in c.sources})
        gr = _Group(name, c, None, None, c.mean(), None if lab is None else c.mean("label"), k)
        if c.k >= 2 and not by_source:
            gr.boot, gr.boot_label = boot_means(c, multinomial(rng, c.k, n_boot))
        built.append(gr)
    if by_source:
        points, boots = adjusted_means([b.cells for b in built], rng, n_boot, cluster_of)
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


def compare(
    predictions: str | os.PathLike[str] | Mapping[str, float], labels: str | os.PathLike[str] | Mapping[str, float] | None = None, *,
    group_pattern: str | None = None, group_column: str | None = None, group_fn: Callable[[str], str | None] | None = None,
    group_from: str | None = None, source_pattern: str | None = None, source_column: str | None = None,
    source_fn: Callable[[str], str | None] | None = None, source_from: str | None = None,
    n_boot: int = 2000, ci: float = 0.95, seed: int = 0, n_perm: int | None = None,
    cluster_pattern: str | None = None, cluster_column: str | None = None, cluster_fn: Callable[[str], str | None] | None = None,
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
    group = KeyOptions(group_pattern, group_column, group_fn, group_from)
    source = KeyOptions(source_pattern, source_column, source_fn, source_from)
    cluster = KeyOptions(cluster_pattern, cluster_column, cluster_fn)
    _check_key_options(group, source, cluster)
    inp = read_inputs(predictions, labels)
    keys = resolve_keys(inp, group, source, cluster)
    kept = [inp.names[i] for i in keys.kept]
    result = compare_scores(
        kept, inp.pred[keys.kept], [keys.group[n] for n in kept], sources=None if keys.source is None else [keys.source[n] for n in kept],
        labels=None if inp.labels is None else inp.labels[keys.kept], n_boot=n_boot, ci=ci, seed=seed, n_perm=n_perm,
        clusters=None if keys.cluster is None else [keys.cluster[n] for n in kept],
    )
    result.matching = inp.matching
    result.left_out = keys.left_out
    if keys.auto_source:
        result.notes.append("source: each file's base name (x.mp4 in two folders: one input rendered by two generators)")
    return result


def _check_key_options(group: KeyOptions, source: KeyOptions, cluster: KeyOptions) -> None:
    if group.given() != 1:
        raise ConfigError("give exactly one of group_pattern, group_column, group_fn, group_from (--group-pattern, --group-column, --group-from)")
    if source.given() > 1:
        raise ConfigError("give at most one of source_pattern, source_column, source_fn, source_from")
    if group.from_ not in (None, *GROUP_FROM) or source.from_ not in (None, *SOURCE_FROM):
        raise ConfigError(f"group_from must be one of {', '.join(GROUP_FROM)} and source_from one of {', '.join(SOURCE_FROM)}")
    if cluster.given() > 1:
        raise ConfigError("give at most one of cluster_pattern, cluster_column, cluster_fn (--cluster, --cluster-pattern)")
