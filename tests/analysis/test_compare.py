"""thqa.compare / `thqa compare`: group means with bootstrap CIs, pairwise permutation tests with Holm's correction,
system-level correlations - each checked against an independent scipy/numpy computation - and bad input.

Pure numpy/scipy: no models, no media. The THQA-NTIRE worked example runs when ../shared/thqa-ntire is present.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import thqa
from thqa.cli import app as cli
from thqa.analysis.comparison import compare, compare_scores, holm
from thqa.analysis.comparison_layout import Cells, boot_means, group_cells
from thqa.analysis.comparison_system import rowwise_correlations
from thqa.analysis.comparison_tests import n_perm_for, welch_parts
from thqa.data.manifest import thqa_ntire_group, thqa_ntire_source
from thqa.errors import ConfigError, ManifestError, MetricError

NTIRE = Path(__file__).resolve().parents[2].parent / "shared" / "thqa-ntire"


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}_{i:03d}.mp4" for i in range(n)]


# -------------------------------------------------------------------------------------------- group means and CIs
def test_group_mean_ci_matches_scipy_bootstrap_percentile() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(3.0, 0.8, 140), rng.normal(2.5, 0.5, 120)  # >= T_UNITS videos: percentile intervals
    res = compare_scores(_names("a", 140) + _names("b", 120), np.r_[a, b], ["a"] * 140 + ["b"] * 120, n_boot=4000, seed=2)
    for x, name in ((a, "a"), (b, "b")):
        g = res.group(name)
        assert g.n == x.size and g.mean == pytest.approx(x.mean(), abs=1e-12)
        ref = stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", confidence_level=0.95, random_state=3)
        lo, hi = ref.confidence_interval
        width = hi - lo
        # two Monte Carlo estimates of the same percentile interval
        assert g.ci[0] == pytest.approx(lo, abs=0.08 * width)
        assert g.ci[1] == pytest.approx(hi, abs=0.08 * width)
    assert [g.group for g in res.groups] == ["a", "b"] and [g.rank for g in res.groups] == [1, 2]
    assert res.resampling == "video" and res.groups[0].n_sources is None


def test_bootstrap_means_are_means_of_resampled_units() -> None:
    rng = np.random.default_rng(0)
    c = Cells(np.array(["s0", "s1", "s2"]), np.array([2.0, 1.0, 3.0]), np.array([5.0, 1.0, 9.0]), np.array([4.0, 2.0, 6.0]))
    w = rng.multinomial(3, [1 / 3] * 3, size=50)
    pred, lab = boot_means(c, w)
    for r in range(50):
        idx = np.repeat(np.arange(3), w[r])  # the units drawn, with repeats
        assert pred[r] == pytest.approx(c.pred[idx].sum() / c.n[idx].sum())
        assert lab[r] == pytest.approx(c.label[idx].sum() / c.n[idx].sum())


def test_cluster_bootstrap_by_source_widens_the_ci_of_correlated_videos() -> None:
    """10 sources x 5 videos whose scores share a source effect: the video bootstrap treats 50 videos as independent
    and is too narrow; the cluster bootstrap's CI matches the spread of the 10 source means."""
    rng = np.random.default_rng(5)
    effects = rng.normal(0, 1.0, 10)
    x = np.repeat(effects, 5) + rng.normal(0, 0.1, 50)
    src = np.repeat([f"s{i}" for i in range(10)], 5)
    names = _names("g", 50) + _names("h", 3)
    y = np.r_[x, [0.0, 0.1, 0.2]]
    groups = ["g"] * 50 + ["h"] * 3
    by_video = compare_scores(names, y, groups, n_boot=4000, seed=0).group("g")
    by_source = compare_scores(names, y, groups, sources=list(src) + ["t0", "t1", "t2"], n_boot=4000, seed=0).group("g")
    assert by_source.n_sources == 10 and by_source.n == 50
    means = x.reshape(10, 5).mean(axis=1)
    # 10 units (< T_UNITS): a Student-t interval from the bootstrap SE, which for a mean of 10 equal-sized clusters
    # is the sd of the source means / sqrt(10) (ddof 0; scaled back to ddof 1)
    se = means.std(ddof=1) / math.sqrt(10)
    width = by_source.ci[1] - by_source.ci[0]
    assert width == pytest.approx(2 * stats.t.ppf(0.975, 9) * se, rel=0.1)
    assert by_video.ci[1] - by_video.ci[0] < 0.6 * width


# ------------------------------------------------------------------------------------------------ pair tests
def test_unpaired_statistic_is_welchs_t_and_p_close_to_welchs_test() -> None:
    """Unpaired pairs: the studentised statistic is scipy's Welch t (one video per unit) and, for normal samples, the
    bootstrap-t p-value is close to Welch's t-test's."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.4, 1.0, 40), rng.normal(0.0, 0.3, 60)
    ca, cb = group_cells(a, None, np.array(_names("a", 40))), group_cells(b, None, np.array(_names("b", 60)))
    (ma, va), (mb, vb) = welch_parts(ca, "pred"), welch_parts(cb, "pred")
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert (ma[0] - mb[0]) / math.sqrt(va[0] + vb[0]) == pytest.approx(ref.statistic, rel=1e-12)
    res = compare_scores(_names("a", 40) + _names("b", 60), np.r_[a, b], ["a"] * 40 + ["b"] * 60, n_boot=200, n_perm=20000)
    pair = res.pair("a", "b")
    assert 0.01 < ref.pvalue < 0.3 and pair.diff == pytest.approx(a.mean() - b.mean())
    assert pair.p == pytest.approx(ref.pvalue, rel=0.25)
    assert not pair.paired and pair.n_paired == 0


def test_paired_exact_sign_flip_p_equals_scipy_and_diff_is_the_mean_per_source_difference() -> None:
    rng = np.random.default_rng(11)
    base = rng.normal(3, 1, 8)  # the sources' own difficulty, shared by both groups
    a, b = base + 0.3 + rng.normal(0, 0.2, 8), base + rng.normal(0, 0.2, 8)
    src = [f"src{i}" for i in range(8)]
    res = compare_scores(
        [f"{s}_A.mp4" for s in src] + [f"{s}_B.mp4" for s in src], np.r_[a, b], ["A"] * 8 + ["B"] * 8,
        sources=src + src, n_boot=500, n_perm=1000,
    )
    pair = res.pair("A", "B")
    assert pair.paired and pair.n_paired == 8
    assert pair.diff == pytest.approx(np.mean(a - b))
    ref = stats.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples", n_resamples=10**6)
    assert pair.p == pytest.approx(ref.pvalue, abs=1e-12)  # 2^8 = 256 sign patterns: both exact
    # the reverse order flips the difference and its CI, not the test
    rev = res.pair("B", "A")
    assert rev.diff == pytest.approx(-pair.diff) and rev.ci == [-pair.ci[1], -pair.ci[0]] and rev.p == pair.p


def test_permutations_enough_for_holms_floor() -> None:
    # enough permutations that Holm's smallest threshold is reachable: floor 2 / (R + 1) < alpha / m
    for m in (1, 10, 406):
        assert 2 / (n_perm_for(m, 0.05) + 1) < 0.05 / m


def test_pairing_removes_the_sources_difficulty() -> None:
    """Two generators rendering the same 30 sources, one better by 0.15 everywhere, sources differing by far more:
    the paired test separates them, the same scores treated as unrelated videos do not."""
    rng = np.random.default_rng(2)
    base = rng.normal(3, 1.0, 30)
    a, b = base + 0.15 + rng.normal(0, 0.05, 30), base + rng.normal(0, 0.05, 30)
    src = [f"s{i}" for i in range(30)]
    names = [f"{s}_a.mp4" for s in src] + [f"{s}_b.mp4" for s in src]
    paired = compare_scores(names, np.r_[a, b], ["a"] * 30 + ["b"] * 30, sources=src + src, n_boot=1000, seed=0).pair("a", "b")
    unpaired = compare_scores(names, np.r_[a, b], ["a"] * 30 + ["b"] * 30, n_boot=1000, seed=0).pair("a", "b")
    assert paired.paired and paired.significant and paired.ci[0] > 0
    assert not unpaired.paired and not unpaired.significant and unpaired.ci[0] < 0 < unpaired.ci[1]
    assert paired.diff == pytest.approx(unpaired.diff)  # same sources on both sides: same estimate


def test_paired_difference_averages_each_sources_videos_first() -> None:
    # group a has two videos of each of 4 sources, b one: d_s = mean(a's videos of s) - b's video of s
    src = ["s0", "s1", "s2", "s3"]
    a = np.array([[1.0, 3.0], [2.0, 2.0], [5.0, 1.0], [0.0, 4.0]])
    b = np.array([1.0, 1.5, 2.0, 2.5])
    names = [f"{s}_a{j}" for s in src for j in range(2)] + [f"{s}_b" for s in src]
    res = compare_scores(names, np.r_[a.ravel(), b], ["a"] * 8 + ["b"] * 4, sources=[s for s in src for _ in range(2)] + src, n_boot=200)
    pair = res.pair("a", "b")
    assert pair.paired and pair.n_paired == 4
    assert pair.diff == pytest.approx(np.mean(a.mean(axis=1) - b))  # 0.5, not the 1.5 of summing a's videos


def test_least_squares_means_equal_an_ordinary_regression_with_dummies() -> None:
    """Two-way layout group + source, unbalanced (missing cells, repeated videos): the least-squares means equal
    those of numpy's lstsq on dummy columns (group effect + the mean of all source effects)."""
    rng = np.random.default_rng(8)
    g_n, s_n = 4, 9
    rows = [(gi, si) for gi in range(g_n) for si in range(s_n) if rng.random() < 0.75 for _ in range(rng.integers(1, 3))]
    gi, si = np.array(rows).T
    y = np.array([0.0, 0.4, -0.3, 1.0])[gi] + rng.normal(0, 1, s_n)[si] + rng.normal(0, 0.3, gi.size)
    x = np.c_[np.eye(g_n)[gi], np.eye(s_n)[si][:, 1:]]  # group dummies, source dummies but the first
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    ref = coef[:g_n] + np.r_[0.0, coef[g_n:]].mean()
    names = [f"v{i}.mp4" for i in range(gi.size)]
    res = compare_scores(names, y, [f"g{k}" for k in gi], sources=[f"s{k}" for k in si], n_boot=200)
    assert [res.group(f"g{k}").mean for k in range(g_n)] == pytest.approx(ref, abs=1e-9)
    assert res.pair("g3", "g0").diff == pytest.approx(ref[3] - ref[0], abs=1e-9)


def test_groups_sharing_few_sources_are_not_paired() -> None:
    # a: sources 0-9, b: sources 8-17 -> 2 shared sources hold 20% of each group's videos
    names = _names("a", 10) + _names("b", 10)
    src = [f"s{i}" for i in range(10)] + [f"s{i}" for i in range(8, 18)]
    res = compare_scores(names, np.arange(20.0), ["a"] * 10 + ["b"] * 10, sources=src, n_boot=200)
    pair = res.pair("b", "a")
    assert not pair.paired and pair.n_paired == 0 and pair.share == [1.0, 1.0]
    # the plain means differ by 10, but on the 2 shared sources b is only 2 higher; the rest is the sources' effect
    # (score = source index + 2 for b): the two-way least-squares means take it out
    assert res.group("b").raw_mean - res.group("a").raw_mean == pytest.approx(10.0)
    assert pair.diff == pytest.approx(2.0) and res.group("b").mean - res.group("a").mean == pytest.approx(2.0)


def test_holm_against_its_definition() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.uniform(0, 0.1, 7)
        adj = holm(p)
        order = np.argsort(p)
        for alpha in (0.01, 0.05, 0.1):
            # Holm: reject the i-th smallest iff every j <= i has p_(j) <= alpha / (m - j)
            reject = np.zeros(7, bool)
            for i in range(7):
                if all(p[order[j]] <= alpha / (7 - j) for j in range(i + 1)):
                    reject[order[i]] = True
            assert np.array_equal(adj <= alpha, reject)


def test_significance_is_holm_over_all_pairs() -> None:
    rng = np.random.default_rng(4)
    k, n = 5, 20
    groups = [f"g{i}" for i in range(k) for _ in range(n)]
    pred = np.concatenate([rng.normal(0.25 * i, 1.0, n) for i in range(k)])
    res = compare_scores([f"v{i}.mp4" for i in range(k * n)], pred, groups, n_boot=300, n_perm=2000, seed=9)
    assert len(res.pairs) == k * (k - 1) // 2
    p = [x.p for x in res.pairs]
    assert [x.p_holm for x in res.pairs] == pytest.approx(list(holm(p)))
    assert [x.significant for x in res.pairs] == [x.p_holm < 0.05 for x in res.pairs]


# -------------------------------------------------------------------------------------------------- system level
def test_system_correlations_match_scipy_on_group_means() -> None:
    rng = np.random.default_rng(8)
    k, n = 8, 12
    quality = np.linspace(1, 3, k)
    groups = [f"gen{i}" for i in range(k) for _ in range(n)]
    labels = np.concatenate([rng.normal(q, 0.5, n) for q in quality])
    pred = 0.5 * labels + rng.normal(0, 0.4, k * n) + 1 + np.repeat(rng.normal(0, 0.15, k), n)  # a bias per generator
    res = compare_scores([f"v{i}.mp4" for i in range(k * n)], pred, groups, labels=labels, n_boot=2000)
    mp = [pred[np.array(groups) == g].mean() for g in sorted(set(groups))]
    ml = [labels[np.array(groups) == g].mean() for g in sorted(set(groups))]
    s = res.system
    assert s.n_groups == k
    assert s.srcc == pytest.approx(stats.spearmanr(mp, ml).statistic)
    assert s.krcc == pytest.approx(stats.kendalltau(mp, ml).statistic)
    assert s.plcc == pytest.approx(stats.pearsonr(mp, ml).statistic)
    # the noise of the groups' means against a plain loop (resample each group's videos, as the comparison does
    # without a source key), and Spearman's disattenuation with it: the population PLCC the intervals are about
    g_arr, boot = np.array(groups), []
    for _ in range(2000):
        gm = []
        for g in sorted(set(groups)):
            i = np.flatnonzero(g_arr == g)
            i = rng.choice(i, i.size)
            gm.append((pred[i].mean(), labels[i].mean()))
        boot.append(gm)
    dev = np.array(boot) - np.array(boot).mean(axis=0)  # (R, G, 2)
    dev *= np.sqrt(n / (n - 1))  # the plug-in bias of a bootstrap of n videos
    dev -= dev.mean(axis=1, keepdims=True)
    noise = np.einsum("rgi,rgj->ij", dev, dev) / (dev.shape[0] * (k - 1))
    signal = np.cov(np.array([mp, ml])) - noise
    assert s.reliability == pytest.approx(min(signal[0, 0] / np.var(mp, ddof=1), signal[1, 1] / np.var(ml, ddof=1)), abs=0.03)
    classical = signal[0, 1] / np.sqrt(signal[0, 0] * signal[1, 1])
    assert s.plcc < classical and s.plcc_disattenuated == pytest.approx(classical, abs=0.04)
    assert s.plcc_ci[0] < s.plcc_disattenuated < s.plcc_ci[1] and s.plcc_ci[1] - s.plcc_ci[0] > 0.01
    assert s.srcc_ci[0] <= s.srcc <= s.srcc_ci[1] and s.krcc_ci[0] <= s.krcc <= s.krcc_ci[1]
    for g in res.groups:
        assert g.label_mean == pytest.approx(labels[np.array(groups) == g.group].mean())
        assert g.label_ci[0] < g.label_mean < g.label_ci[1]


def test_rowwise_correlations_equal_scipy_with_ties() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, (30, 7)).astype(float)  # many ties
    y = x + rng.integers(0, 3, (30, 7))
    got = rowwise_correlations(x, y)
    for r in range(30):
        if np.ptp(x[r]) == 0 or np.ptp(y[r]) == 0:
            continue
        assert got[r, 0] == pytest.approx(stats.spearmanr(x[r], y[r]).statistic)
        assert got[r, 1] == pytest.approx(stats.kendalltau(x[r], y[r]).statistic)  # tau-b
        assert got[r, 2] == pytest.approx(stats.pearsonr(x[r], y[r]).statistic)


def test_same_seed_same_numbers_and_json_document() -> None:
    rng = np.random.default_rng(0)
    names = _names("v", 30)
    pred, lab = rng.normal(size=30), rng.normal(size=30)
    groups = ["a", "b", "c"] * 10
    r1 = compare_scores(names, pred, groups, labels=lab, n_boot=300, seed=5)
    r2 = compare_scores(names, pred, groups, labels=lab, n_boot=300, seed=5)
    assert r1.to_json() == r2.to_json()
    doc = json.loads(r1.to_json())
    assert set(doc) >= {"groups", "pairs", "system", "n", "n_boot", "ci_level", "seed", "resampling", "p_test", "n_perm"}
    g = doc["groups"][0]
    assert {"group", "n", "mean", "ci", "rank", "label_mean", "label_ci"} <= set(g) and len(g["ci"]) == 2
    p = doc["pairs"][0]
    assert {"a", "b", "diff", "ci", "p", "significant", "paired", "n_paired"} <= set(p)
    assert {"srcc", "krcc", "plcc", "srcc_ci", "krcc_ci", "plcc_ci"} <= set(doc["system"])
    assert "bootstrap-t" in doc["p_test"]


# ---------------------------------------------------------------------------------------------------- bad input
def _files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    preds = tmp_path / "preds.csv"
    labels = tmp_path / "labels.csv"
    names = [f"{s}_{g}.mp4" for g in ("alpha", "beta", "gamma") for s in range(12)]
    preds.write_text("".join(f"{n},{rng.normal():.4f}\n" for n in names) + "stray_alpha.mp4,1.0\n")
    labels.write_text("Video,Score\n" + "".join(f"{n},{rng.uniform(0, 5):.2f}\n" for n in names[:-2]))
    return preds, labels


def test_unmatched_names_are_counted_with_examples(tmp_path) -> None:
    preds, labels = _files(tmp_path)
    res = compare(preds, labels, group_pattern=r"_([a-z]+)\.mp4$", n_boot=200)
    m = res.matching
    assert m["n_matched"] == 34 and res.n == 34
    assert m["unmatched_predictions"]["n"] == 3 and "stray_alpha.mp4" in m["unmatched_predictions"]["examples"]
    assert m["unmatched_labels"]["n"] == 0
    assert res.group("gamma").n == 10


def test_a_pattern_that_matches_nothing_is_an_error_naming_it(tmp_path) -> None:
    preds, labels = _files(tmp_path)
    with pytest.raises(ConfigError, match=re.escape("'_(zzz)_'")):
        compare(preds, labels, group_pattern="_(zzz)_")
    with pytest.raises(ConfigError, match="source pattern 'nope'"):
        compare(preds, group_pattern=r"_([a-z]+)\.mp4$", source_pattern="nope")
    with pytest.raises(ConfigError, match="not a regular expression"):
        compare(preds, group_pattern="([a-z")
    with pytest.raises(ConfigError, match="exactly one"):
        compare(preds)
    with pytest.raises(ConfigError, match="no group column 'generator'"):
        compare(preds, labels, group_column="generator")


def test_videos_a_pattern_misses_are_left_out_and_reported(tmp_path) -> None:
    preds, _ = _files(tmp_path)
    res = compare(preds, group_pattern=r"^\d+_(alpha|beta)\.mp4$", n_boot=200)
    assert res.left_out["no_group"]["n"] == 13  # 12 gamma + the stray name
    assert sorted(g.group for g in res.groups) == ["alpha", "beta"]


def test_one_video_group_gets_no_ci_and_says_why() -> None:
    res = compare_scores(["a1.mp4", "a2.mp4", "a3.mp4", "b1.mp4"], [1.0, 2.0, 3.0, 5.0], ["a", "a", "a", "b"], n_boot=200)
    b = res.group("b")
    assert b.ci is None and "one video" in b.note and b.mean == 5.0
    assert res.group("a").ci is not None and res.group("a").note == "3 videos: a t interval from few units"
    pair = res.pair("b", "a")
    assert pair.ci is None and pair.p is None and not pair.significant and "one video" in pair.note
    # one source with several videos: no CI either (they are not independent)
    res = compare_scores(["a1", "a2", "b1", "b2", "b3"], [1.0, 2.0, 3.0, 4.0, 5.0], ["a", "a", "b", "b", "b"], sources=["s1", "s2", "t", "t", "t"], n_boot=200)
    assert res.group("b").ci is None and "one source" in res.group("b").note


def test_bad_arguments_are_typed_errors() -> None:
    with pytest.raises(MetricError, match="at least 2 groups"):
        compare_scores(["a", "b"], [1.0, 2.0], ["g", "g"])
    with pytest.raises(MetricError, match="non-finite"):
        compare_scores(["a", "b"], [1.0, float("nan")], ["g", "h"])
    with pytest.raises(MetricError, match="differ in length"):
        compare_scores(["a", "b"], [1.0], ["g", "h"])
    with pytest.raises(ConfigError, match="ci"):
        compare_scores(["a", "b"], [1.0, 2.0], ["g", "h"], ci=95)
    with pytest.raises(ConfigError, match="n_boot"):
        compare_scores(["a", "b"], [1.0, 2.0], ["g", "h"], n_boot=10)


def test_groups_and_sources_from_columns_of_a_json_score_file_and_a_manifest(tmp_path) -> None:
    rows = [{"path": f"/v/{i}.mp4", "mos": float(i % 7), "error": None} for i in range(24)]
    rows.append({"path": "/v/bad.mp4", "mos": None, "error": "not a video"})
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps(rows))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,mos,generator,portrait\n" + "".join(f"videos/{i}.mp4,{i % 5},{'xy'[i % 2]},p{i // 2}\n" for i in range(24)))
    res = compare(scores, manifest, group_column="generator", source_column="portrait", n_boot=200)
    assert [g.group for g in res.groups] == sorted(["x", "y"], key=lambda g: -np.mean([i % 7 for i in range(24) if "xy"[i % 2] == g]))
    pair = res.pairs[0]
    assert pair.paired and pair.n_paired == 12 and res.resampling == "source"


# ----------------------------------------------------------------------------------------------- the command
def test_cli_table_json_output_and_plot(tmp_path, capsys) -> None:
    preds, labels = _files(tmp_path)
    base = ["compare", "--predictions", str(preds), "--labels", str(labels), "--group-pattern", r"_([a-z]+)\.mp4$", "--n-boot", "200"]
    assert cli.main(base) == 0
    out, err = capsys.readouterr()
    assert "rank  group" in out and "system level (3 groups' means" in out and "pairs: " in out
    assert "3 prediction(s) without label" in err and "stray_alpha.mp4" in err
    png, js = tmp_path / "cmp.png", tmp_path / "out" / "cmp.json"
    assert cli.main(base + ["--plot", str(png), "-o", str(js)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(js.read_text())
    assert [g["group"] for g in doc["groups"]] and len(doc["pairs"]) == 3
    assert cli.main(base + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 34


def test_cli_bad_pattern_exits_2_naming_it(tmp_path, capsys) -> None:
    preds, labels = _files(tmp_path)
    rc = cli.main(["compare", "--predictions", str(preds), "--group-pattern", "_(qqq)"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and "'_(qqq)'" in err and "Traceback" not in err
    rc = cli.main(["compare", "--predictions", str(tmp_path / "none.csv"), "--group-pattern", "x"])
    assert rc == 2 and "none.csv" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- THQA-NTIRE worked example
@pytest.fixture(scope="module")
def ntire() -> tuple[Path, Path]:
    preds, labels = NTIRE / "simplevqa_baseline_val_predictions.txt", NTIRE / "thqa_ntire_val.csv"
    if not (preds.is_file() and labels.is_file()):
        pytest.skip(f"THQA-NTIRE files not present under {NTIRE}")
    return preds, labels


def test_thqa_ntire_generators_against_an_independent_computation(ntire) -> None:
    preds, labels = ntire
    res = thqa.compare(preds, labels, group_pattern=r"_([^_]+)\.mp4$", source_fn=thqa_ntire_source, n_boot=200, n_perm=500)
    # independent: plain csv parsing and numpy
    lab = dict(line.split(",") for line in labels.read_text().splitlines()[1:])
    pr = dict(line.split(",") for line in preds.read_text().splitlines())
    names = sorted(lab)
    group = np.array([n[: -len(".mp4")].rsplit("_", 1)[1] for n in names])
    p = np.array([float(pr[n]) for n in names])
    y = np.array([float(lab[n]) for n in names])
    gs = sorted(set(group))
    assert len(gs) == 29 and len(res.groups) == 29 and res.n == 1714
    mp = {g: p[group == g].mean() for g in gs}
    ml = {g: y[group == g].mean() for g in gs}
    for g in res.groups:
        assert g.raw_mean == pytest.approx(mp[g.group]) and g.raw_label_mean == pytest.approx(ml[g.group])
    assert stats.spearmanr([mp[g] for g in gs], [ml[g] for g in gs]).statistic == pytest.approx(0.931, abs=0.001)
    # the system level correlates the least-squares means (sources taken out)
    srcc = stats.spearmanr([g.mean for g in res.groups], [g.label_mean for g in res.groups]).statistic
    assert res.system.srcc == pytest.approx(srcc)
    # pairs among the aigc generators are paired by their rendered inputs
    pair = res.pair("sadtalker", "audio2head")
    assert pair.paired and 90 <= pair.n_paired <= 110
    assert res.group("sadtalker").n_sources == 109


def test_thqa_ntire_by_portrait_cluster(ntire) -> None:
    """Sources nested in portraits (--cluster thqa-ntire-portrait): val holds 2 aigc portraits, so no verdict
    carries over to new faces, and the intervals say so by their width."""
    preds, labels = ntire
    res = thqa.compare(preds, labels, group_pattern=r"_([^_]+)\.mp4$", source_fn=thqa_ntire_source, cluster_fn=thqa_ntire_group,
                       n_boot=200, n_perm=500)
    assert res.resampling == "cluster" and not any(p.significant for p in res.pairs)
    assert "2 clusters" in res.group("sadtalker").note


def test_sources_must_be_nested_in_clusters() -> None:
    with pytest.raises(ConfigError, match="two clusters"):
        compare_scores(["a1", "a2", "b1", "b2"], [1.0, 2.0, 3.0, 4.0], list("aabb"), sources=["s1", "s2", "s1", "s2"],
                       clusters=["p1", "p2", "p2", "p2"], n_boot=100)


def test_thqa_ntire_source_keys() -> None:
    assert thqa_ntire_source("15_dalle3_common_voice_en_36411224_audio2head.mp4") == "aigc-15-dalle3-36411224"
    assert thqa_ntire_source("15_dalle3_common_voice_en_36411224_sadtalker.mp4") == "aigc-15-dalle3-36411224"
    assert thqa_ntire_source("3_voice_en_34960039_dinet.mp4") == "thqa-3-34960039"
    name = "7889059_SEN_the_small_boy_put_the_worm_on_the_hook_qp_level_6.mp4"
    assert thqa_ntire_source(name) == "sen-7889059-the_small_boy_put_the_worm_on_the_hook"
    assert thqa_ntire_group(name) == "sen-7889059"
    with pytest.raises(ManifestError):
        thqa_ntire_source("clip.mp4")
