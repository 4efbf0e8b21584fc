"""The calibration suite (issue 24): seeded simulations with a known truth, each asserting that a comparison or an
interval keeps its promise - the size of a test at its nominal level, the coverage of an interval - within a band
stated beside it. Each of the issue's measured faults has a test here that fails on the code before the fix.

Monte Carlo error: with R replications a measured rate p has a standard error sqrt(p (1 - p) / R); at p = 0.05 and
R = 400 that is 0.011, so a size bound of 0.07 sits about 2 standard errors above the nominal 0.05 (and far below
the faults measured: 0.42, 0.16). ``benchmarks/bench_calibration.py`` runs the same designs with more replications.

Pure numpy/scipy (and a tiny fusion-model run for the epoch choice); no media.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from thqa.analysis import conformal
from thqa.analysis.comparison import compare_scores

ALPHA = 0.05
SIZE_MAX = 0.07  #: measured size allowed at a nominal 5 %
COVER_MIN = 0.92  #: measured coverage required at a nominal 95 %


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}_{i:03d}.mp4" for i in range(n)]


# ------------------------------------------------------------------- 1. heteroscedastic unpaired groups, equal means
def unpaired_size(n_a: int, sd_a: float, n_b: int, sd_b: float, reps: int, seed: int) -> float:
    """Share of ``reps`` simulations with equal means in which the unpaired test rejects at 5%."""
    rng = np.random.default_rng(seed)
    names, groups = _names("a", n_a) + _names("b", n_b), ["a"] * n_a + ["b"] * n_b
    rejected = 0
    for r in range(reps):
        y = np.r_[rng.normal(3.0, sd_a, n_a), rng.normal(3.0, sd_b, n_b)]
        rejected += compare_scores(names, y, groups, n_boot=100, n_perm=1000, seed=r).pairs[0].p < ALPHA
    return rejected / reps


@pytest.mark.parametrize(("n_a", "sd_a", "n_b", "sd_b"), [(10, 1.0, 100, 0.2), (10, 0.6, 115, 0.4)])
def test_unpaired_test_keeps_its_size_when_sizes_and_spreads_differ(n_a, sd_a, n_b, sd_b) -> None:
    """Issue 24 fault 1: the permutation test of the raw difference rejected 42.4 % and 15.9 % at a nominal 5 %."""
    size = unpaired_size(n_a, sd_a, n_b, sd_b, reps=400, seed=1)
    assert size <= SIZE_MAX, f"size {size:.3f} at a nominal {ALPHA}"


def test_unpaired_test_still_has_power() -> None:
    """The studentised test is not made safe by never rejecting: a shift of 1.5 sd of the small group is found."""
    rng = np.random.default_rng(4)
    names, groups = _names("a", 10) + _names("b", 100), ["a"] * 10 + ["b"] * 100
    hits = sum(
        compare_scores(names, np.r_[rng.normal(4.0, 1.0, 10), rng.normal(3.0, 0.2, 100)], groups, n_boot=100, n_perm=1000, seed=r).pairs[0].p < ALPHA
        for r in range(50)
    )
    assert hits >= 35


# ------------------------------------------------------- 2. a pair's difference agrees with the group figures
def test_pair_difference_ranks_and_group_figures_agree_when_a_group_misses_sources() -> None:
    """Issue 24 fault 2: group a has videos of 16 sources, b of the 8 hard ones only; a is 0.22 worse than b on
    every shared source, but its 8 easy sources lifted its plain mean above b's: a ranked 1, b 2, and the pair row
    said a - b = -0.22, significant. With the sources' effects taken out (two-way least squares) the ranks, the group
    figures and the pair's difference agree; the plain means stay beside them, and the pair says which share of
    each group's videos its test used."""
    rng = np.random.default_rng(3)
    hard, easy = rng.normal(1.2, 0.2, 8), rng.normal(2.6, 0.2, 8)
    a = np.r_[hard, easy] - 0.22 + rng.normal(0, 0.02, 16)
    b = hard + rng.normal(0, 0.02, 8)
    src = [f"s{i}" for i in range(16)]
    res = compare_scores(_names("a", 16) + _names("b", 8), np.r_[a, b], ["a"] * 16 + ["b"] * 8, sources=src + src[:8], n_boot=500, n_perm=1000)
    ga, gb, pair = res.group("a"), res.group("b"), res.pair("a", "b")
    assert pair.diff == pytest.approx(ga.mean - gb.mean, abs=1e-12) and pair.diff == pytest.approx(-0.22, abs=0.03)
    assert gb.rank == 1 and ga.rank == 2
    assert ga.raw_mean > gb.raw_mean  # the plain means still say a, and are reported
    assert pair.ci[1] < 0 and pair.significant and pair.paired
    assert pair.share == [0.5, 1.0] and pair.n_paired == 8


# --------------------------------------------------------------------------------- 4. system-level figures
def test_all_equal_group_means_give_no_system_figure_and_say_why() -> None:
    """Issue 24 fault 4 (part): all groups' mean predictions equal raised instead of saying there is no figure."""
    names = _names("v", 12)
    res = compare_scores(names, np.repeat([1.0, 2.0, 3.0], 4) * 0 + np.tile([1.0, 2.0, 3.0, 4.0], 3), np.repeat(["a", "b", "c"], 4),
                         labels=np.arange(12.0), n_boot=200)
    assert res.system is None and any("no system-level correlation" in n for n in res.notes)


def test_no_zero_width_system_interval_is_shown_as_certainty() -> None:
    """Issue 24 fault 4 (part): well-separated groups gave SRCC [0.929, 0.929] - every resample agreeing, which says
    nothing about the population. The intervals are now for the population correlations (test inversion in a
    bootstrap world): each is shown with a width, and holds the population value (SRCC 0.976: one swap)."""
    rng = np.random.default_rng(0)
    g_n, s_n = 8, 30
    effects = np.linspace(0, 7, g_n)
    gi, si = np.repeat(np.arange(g_n), s_n), np.tile(np.arange(s_n), g_n)
    src = rng.normal(0, 0.3, s_n)
    pred = effects[gi] + src[si] + rng.normal(0, 0.1, gi.size)
    lab = effects[gi] + src[si] + rng.normal(0, 0.1, gi.size)
    lab[gi == 6] += 3.0  # one swap of rank among well-separated groups: SRCC < 1 in every resample alike
    res = compare_scores([f"v{i}" for i in range(gi.size)], pred, [f"g{k}" for k in gi], sources=[f"s{k}" for k in si], labels=lab, n_boot=300)
    s = res.system
    true_srcc = stats.spearmanr(effects, np.where(np.arange(g_n) == 6, effects + 3.0, effects)).statistic
    for ci in (s.srcc_ci, s.krcc_ci, s.plcc_ci):
        assert ci is None or ci[1] - ci[0] > 1e-9
    assert s.srcc < 1 and s.srcc_ci[0] <= true_srcc <= s.srcc_ci[1]
    assert s.plcc_ci is not None and s.plcc_ci[1] > s.plcc_ci[0]


# ------------------------------------------------------------------- 6. prediction intervals: grouped calibration
def _portrait_runs(n_val_groups: int, per_group: int, reps: int, coverage: float, grouped: bool, seed: int) -> np.ndarray:
    """Coverage of the interval for the videos of a new portrait, one value per simulated checkpoint: errors are
    a portrait effect (sd 0.4) plus a video's own (sd 0.2); NaN where there is no interval."""
    rng = np.random.default_rng(seed)
    out = np.full(reps, np.nan)
    groups = np.repeat([f"p{i}" for i in range(n_val_groups)], per_group)
    for r in range(reps):
        err = np.repeat(rng.normal(0, 0.4, n_val_groups), per_group) + rng.normal(0, 0.2, groups.size)
        cal = conformal.calibration_from_predictions(np.zeros(groups.size), err, groups=groups if grouped else None)
        q = cal.quantile(coverage)
        if q is None:
            continue
        new = rng.normal(0, 0.4, 200) + rng.normal(0, 0.2, 200)  # 200 new portraits, one video each
        out[r] = np.mean(np.abs(new) <= q)
    return out


def test_grouped_calibration_keeps_its_coverage_for_new_portraits() -> None:
    """Issue 24 fault 6: with the validation set holding whole portraits the rank rule counted videos; the videos of
    one portrait share its error, so one checkpoint's coverage ranged widely below nominal (0.80-0.97, 24% of runs
    below 0.85 with five portraits). One residual per portrait (its largest) and the rank rule on the number of
    portraits keeps the promise: mean coverage >= nominal (band: 2 Monte Carlo standard errors), and five
    portraits are too few for a 90% interval - which is then not given."""
    cov = _portrait_runs(20, 6, 300, 0.9, grouped=True, seed=1)
    assert np.all(np.isfinite(cov))
    se = cov.std() / np.sqrt(cov.size)
    assert cov.mean() >= 0.9 - 2 * se, f"mean coverage {cov.mean():.3f}"
    assert np.isnan(_portrait_runs(5, 6, 5, 0.9, grouped=True, seed=2)).all()
    # by video, the same five portraits give an interval whose coverage falls short in many checkpoints
    by_video = _portrait_runs(5, 6, 300, 0.9, grouped=False, seed=3)
    assert np.mean(by_video < 0.85) > 0.15


def test_calibration_groups_and_own_videos() -> None:
    from thqa.analysis.conformal import Calibration, calibration_from_predictions, calibration_overlap

    cal = calibration_from_predictions([0.0] * 6, [0.1, -0.5, 0.2, 0.3, -0.1, 0.05], groups=list("aabbcc"),
                                       label_range=(0.0, 5.0), videos=["a1.mp4", "a2.mp4"])
    assert cal.unit == "group" and cal.n == 3 and cal.n_videos == 6
    assert cal.scores == pytest.approx([0.1, 0.3, 0.5])
    back = Calibration.from_dict(cal.to_dict())
    assert back.unit == "group" and back.label_range == (0.0, 5.0) and back.videos == ("a1.mp4", "a2.mp4")
    assert calibration_overlap(back, ["/x/a1.mp4", "b.mp4"]) == 1
    # one video per group: per video, as before
    assert calibration_from_predictions([0.0] * 3, [0.1, 0.2, 0.3], groups=list("abc")).unit == "video"


def test_prediction_intervals_stay_on_the_label_scale() -> None:
    """Issue 24 fault 6: mos_low -0.63 and mos_high 5.20 on a 0-5 scale."""
    cal = conformal.calibration_from_predictions(np.zeros(30), np.linspace(-0.8, 0.8, 30), label_range=(0.0, 5.0))
    for mos in (0.1, 4.9, 2.5, 6.0):
        iv = cal.interval(mos, 0.9)
        assert 0.0 <= iv.low <= iv.high <= 5.0
        assert ("clipped" in (iv.note or "")) == (mos - cal.quantile(0.9) < 0 or mos + cal.quantile(0.9) > 5)


def test_calibration_fraction_holds_whole_groups_apart_from_the_epoch_choice(caplog) -> None:
    from thqa.training.loop import MIN_HELD_APART, FeatureTable, _val_split

    def table(n: int, lo: float, hi: float) -> FeatureTable:
        z = np.zeros((n, 1, 1))
        return FeatureTable([f"/d/v{i}.mp4" for i in range(n)], np.linspace(lo, hi, n), z, z, z)

    tr, val = table(10, 0.5, 4.5), table(120, 0.2, 4.9)
    groups = [f"p{i // 4}" for i in range(120)]  # 30 portraits of 4 videos
    sp = _val_split(tr, val, groups, 0.4, seed=1)
    assert sp.held_apart and len(set(sp.groups)) == 12 and sp.calibrate.size == 48
    assert not set(sp.choose) & set(sp.calibrate) and sp.choose.size + sp.calibrate.size == 120
    assert not {groups[i] for i in sp.choose} & set(sp.groups)  # a portrait is on one side only
    assert sp.label_range == pytest.approx((0.2, 4.9)) and sp.names == [f"v{i}.mp4" for i in sp.calibrate]
    # too few groups to hold apart: the whole validation set does both, and says so
    small = _val_split(tr, val, groups, 0.2, seed=1)  # 6 portraits < MIN_HELD_APART
    assert MIN_HELD_APART > 6 and not small.held_apart and small.calibrate.size == small.choose.size == 120
    assert "calibration-fraction" in caplog.text


# ------------------------------------------------------------------------------- 3. sources nested in portraits
def _nested_design(rng: np.random.Generator, n_portraits: int, per: int, shift: float = 0.0) -> tuple[list, np.ndarray, list, list, list]:
    """Two generators rendering the same sources, ``per`` sources in each of ``n_portraits`` portraits; a generator x
    portrait effect (sd 0.2), a source effect (sd 0.5), a video's own error (sd 0.1); b - a = ``shift`` in the
    population of portraits."""
    src = [f"p{p}s{s}" for p in range(n_portraits) for s in range(per)]
    por = [f"p{p}" for p in range(n_portraits) for _ in range(per)]
    base = rng.normal(0, 0.5, len(src))
    inter = {g: np.repeat(rng.normal(0, 0.2, n_portraits), per) for g in "ab"}
    y = np.r_[base + inter["a"], base + shift + inter["b"]] + rng.normal(0, 0.1, 2 * len(src))
    names = [f"{s}_{g}.mp4" for g in "ab" for s in src]
    return names, y, ["a"] * len(src) + ["b"] * len(src), src + src, por + por


def nested_rates(n_portraits: int, per: int, reps: int, seed: int, cluster: bool) -> tuple[float, float]:
    """(rejection rate of a true null, coverage of the population difference 0 by the pair's CI)."""
    rng = np.random.default_rng(seed)
    rej = cover = 0
    for r in range(reps):
        names, y, groups, src, por = _nested_design(rng, n_portraits, per)
        pair = compare_scores(names, y, groups, sources=src, clusters=por if cluster else None, n_boot=300, n_perm=1000, seed=r).pair("b", "a")
        rej += pair.p < ALPHA
        cover += pair.ci[0] <= 0.0 <= pair.ci[1]
    return rej / reps, cover / reps


@pytest.mark.parametrize(("n_portraits", "per"), [(5, 6), (12, 3)])
def test_clustered_resampling_keeps_size_and_coverage_for_new_portraits(n_portraits, per) -> None:
    """Issue 24 fault 3: five portraits x six sources, resampled by source: the pair CI covered the population
    difference 80.4 % of the time, a true null was rejected 16.5 %. Resampled by portrait (clusters, then sources
    in them) and tested on the portraits, both keep their promise (with five portraits no pair can be significant:
    16 sign patterns; the 12-portrait design checks the size where rejection is possible)."""
    size, coverage = nested_rates(n_portraits, per, reps=150, seed=n_portraits, cluster=True)
    assert size <= SIZE_MAX + 0.02 and coverage >= COVER_MIN - 0.02, (size, coverage)  # band: 150 reps, se 0.018
    if n_portraits == 5:
        by_source = nested_rates(n_portraits, per, reps=150, seed=n_portraits, cluster=False)
        assert by_source[0] > 0.1 and by_source[1] < 0.88  # the fault, measured on the same draws


# ----------------------------------------------------------------------------------- 5. few units per group
def group_coverage(n_sources: int, reps: int, seed: int) -> float:
    """Coverage of a group's true mean by its 95% CI: two generators over ``n_sources`` shared sources."""
    rng = np.random.default_rng(seed)
    src = [f"s{i}" for i in range(n_sources)]
    names = [f"{s}_{g}.mp4" for g in "ab" for s in src]
    hits = 0
    for r in range(reps):
        base = rng.normal(0, 0.5, n_sources)
        y = np.r_[3.0 + base, 2.5 + base + rng.normal(0, 0.3, n_sources)] + rng.normal(0, 0.1, 2 * n_sources)
        g = compare_scores(names, y, ["a"] * n_sources + ["b"] * n_sources, sources=src + src, n_boot=300, n_perm=200, seed=r).group("a")
        hits += g.ci[0] <= 3.0 <= g.ci[1]
    return hits / reps


@pytest.mark.parametrize("n_sources, reps, cover_min", [(6, 300, COVER_MIN), (12, 1500, 0.93)])
def test_group_intervals_keep_their_coverage_with_few_sources(n_sources, reps, cover_min) -> None:
    """Issue 24 fault 5: percentile group intervals held the true mean 89.6 % of the time at 12 sources (nominal
    95 %). Below T_UNITS units they are Student-t intervals from the bootstrap SE. At 12 sources the shortfall is
    small, so the band is tight and the replications many (1,500: se 0.006): the percentile intervals of thqa 0.1
    give 0.900 here, the t intervals 0.946."""
    cov = group_coverage(n_sources, reps=reps, seed=7)
    assert cov >= cover_min, cov


def system_design(rng: np.random.Generator, spread: float) -> tuple[list, np.ndarray, list, list, np.ndarray]:
    """Eight generators over 30 shared sources, their effects ``spread`` apart in all; the model's group means carry
    a fixed bias (sd 0.1); predictions and labels each with a video's own error (sd 0.3)."""
    g_n, s_n = 8, 30
    theta = np.linspace(0, spread, g_n)
    phi = np.random.default_rng(123).normal(0, 0.1, g_n)
    gi, si = np.repeat(np.arange(g_n), s_n), np.tile(np.arange(s_n), g_n)
    b = rng.normal(0, 0.5, s_n)
    pred = (theta + phi)[gi] + b[si] + rng.normal(0, 0.3, gi.size)
    lab = theta[gi] + b[si] + rng.normal(0, 0.3, gi.size)
    return [f"v{i}" for i in range(gi.size)], pred, [f"g{k}" for k in gi], [f"s{k}" for k in si], lab


def system_coverage(spread: float, reps: int, seed: int, n_boot: int = 200) -> dict[str, float]:
    """:func:`system_design` ``reps`` times: coverage of the population PLCC, SRCC and KRCC (the groups' figures
    with infinitely many sources) by the 95% system-level intervals, the mean PLCC as observed and with the noise
    taken out, and the mean reliability."""
    g_n = 8
    theta = np.linspace(0, spread, g_n)
    phi = np.random.default_rng(123).normal(0, 0.1, g_n)
    truth = {"plcc": np.corrcoef(theta + phi, theta)[0, 1], "srcc": stats.spearmanr(theta + phi, theta).statistic,
             "krcc": stats.kendalltau(theta + phi, theta).statistic}
    rng = np.random.default_rng(seed)
    hits = dict.fromkeys(truth, 0)
    raw, dis, rel = [], [], []
    for r in range(reps):
        names, pred, groups, src, lab = system_design(rng, spread)
        s = compare_scores(names, pred, groups, sources=src, labels=lab, n_boot=n_boot, n_perm=200, seed=r).system
        for k, v in truth.items():
            ci = getattr(s, k + "_ci")
            hits[k] += ci is not None and ci[0] - 1e-9 <= v <= ci[1] + 1e-9
        raw.append(s.plcc)
        dis.append(np.nan if s.plcc_disattenuated is None else s.plcc_disattenuated)
        rel.append(np.nan if s.reliability is None else s.reliability)
    out = {k + "_coverage": hits[k] / reps for k in truth}
    out.update(true_plcc=truth["plcc"], plcc=float(np.mean(raw)), plcc_disattenuated=float(np.nanmean(dis)), reliability=float(np.nanmean(rel)))
    return out


def test_system_intervals_of_close_groups_cover_the_population_correlations() -> None:
    """Issue 24 fault 4 (part): eight close generators over 30 sources (reliability about 0.87): percentile
    intervals of the resampled correlations, centred on estimates attenuated by the groups' noise, held the
    population PLCC 57-61 % and SRCC 77 % of the time at a nominal 95 %. Test inversion in a bootstrap world whose
    population has the signal's spread (thqa.analysis.comparison_system): measured 94 % / 94 % / 96 % (PLCC, SRCC,
    KRCC; the benchmark, 120 replications). Band: 2 Monte Carlo standard errors (80 reps: 0.025 at 0.95) below
    nominal: >= 0.90 each (here 1.00 / 0.93 / 0.96). The disattenuated PLCC is close to the population's (the
    observed one is 0.09 below it)."""
    m = system_coverage(0.4, reps=80, seed=5)
    assert m["plcc_coverage"] >= 0.90 and m["srcc_coverage"] >= 0.90 and m["krcc_coverage"] >= 0.90, m
    assert abs(m["plcc_disattenuated"] - m["true_plcc"]) < 0.05 < m["true_plcc"] - m["plcc"], m


def test_source_bootstrap_covers_with_several_videos_per_cell() -> None:
    """Within-cell video resampling is not needed: resampling the sources already carries the videos' own noise
    (a source's cell mean varies by both), and resampling videos again inside the drawn sources would count it twice
    (Davison & Hinkley 1997, sec. 3.8). Three videos per (generator, source) cell with a large video noise (sd 0.6
    against a source effect of sd 0.3), 12 sources: the group interval keeps its coverage."""
    rng = np.random.default_rng(11)
    src = [f"s{i}" for i in range(12) for _ in range(3)]
    names = [f"{s}_{j}_{g}.mp4" for g in "ab" for s, j in zip(src, [0, 1, 2] * 12)]
    hits, reps = 0, 200
    for r in range(reps):
        base = np.repeat(rng.normal(0, 0.3, 12), 3)
        y = np.r_[3.0 + base, 2.5 + base] + rng.normal(0, 0.6, 72)
        g = compare_scores(names, y, ["a"] * 36 + ["b"] * 36, sources=src + src, n_boot=200, n_perm=200, seed=r).group("a")
        hits += g.ci[0] <= 3.0 <= g.ci[1]
    assert hits / reps >= COVER_MIN, hits / reps  # 200 reps: se 0.015 at 0.95


def test_system_intervals_of_close_groups_are_flagged_rough() -> None:
    """Close groups' system-level figures are attenuated and their intervals still under-cover a little (above):
    close groups get the 'rough' note; well-separated ones do not."""
    rng = np.random.default_rng(0)
    names, pred, groups, src, lab = system_design(rng, 0.4)
    close = compare_scores(names, pred, groups, sources=src, labels=lab, n_boot=300)
    assert close.system.reliability < 0.9 and any("rough" in n for n in close.notes)
    names, pred, groups, src, lab = system_design(rng, 4.0)
    apart = compare_scores(names, pred, groups, sources=src, labels=lab, n_boot=300)
    assert apart.system.reliability > 0.95 and not any("reliability" in n for n in apart.notes)
