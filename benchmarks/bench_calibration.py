"""Nominal against measured size and coverage of `thqa compare` and the prediction intervals (issue 24).

The designs of tests/test_calibration.py (imported from there: one definition of each), with more replications:
heteroscedastic unpaired groups, sources nested in portraits (by source and by portrait), few sources per group,
grouped calibration of prediction intervals. Each row: the nominal rate, the measured one with its Monte Carlo
standard error, and the replications.

Usage: python benchmarks/bench_calibration.py [--scale 1.0]   (--scale multiplies every design's replications;
1.0 takes a few minutes on one core). Writes benchmarks/results/calibration_cpu.json and prints the README table.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from _util import write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_calibration as tc  # noqa: E402


def row(design: str, what: str, nominal: float, measured: float, reps: int, seconds: float) -> dict:
    return {"design": design, "what": what, "nominal": nominal, "measured": round(measured, 4),
            "mc_se": round(math.sqrt(max(measured * (1 - measured), 1e-4) / reps), 4), "reps": reps, "seconds": round(seconds, 1)}


def system_coverage(reps: int, seed: int) -> tuple[float, float, float]:
    """Eight close generators over 30 shared sources; the model's group means carry a fixed bias (sd 0.1): coverage
    of the population PLCC and SRCC of the group means (infinitely many sources) by the system-level 95% CIs, and
    the mean PLCC estimate (attenuated by the sources' noise)."""
    from scipy import stats

    from thqa.analysis.comparison import compare_scores

    g_n, s_n = 8, 30
    theta = np.linspace(0, 0.4, g_n)
    phi = np.random.default_rng(123).normal(0, 0.1, g_n)
    true_p, true_s = np.corrcoef(theta + phi, theta)[0, 1], stats.spearmanr(theta + phi, theta).statistic
    rng = np.random.default_rng(seed)
    gi, si = np.repeat(np.arange(g_n), s_n), np.tile(np.arange(s_n), g_n)
    cp = cs = 0
    est = []
    for r in range(reps):
        b = rng.normal(0, 0.5, s_n)
        pred = (theta + phi)[gi] + b[si] + rng.normal(0, 0.3, gi.size)
        lab = theta[gi] + b[si] + rng.normal(0, 0.3, gi.size)
        s = compare_scores([f"v{i}" for i in range(gi.size)], pred, [f"g{k}" for k in gi], sources=[f"s{k}" for k in si], labels=lab,
                           n_boot=500, n_perm=200, seed=r).system
        cp += bool(s.plcc_ci) and s.plcc_ci[0] <= true_p <= s.plcc_ci[1]
        cs += bool(s.srcc_ci) and s.srcc_ci[0] <= true_s <= s.srcc_ci[1]
        est.append(s.plcc)
    return cp / reps, cs / reps, float(np.mean(est))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    n = lambda k: max(20, int(k * args.scale))  # noqa: E731
    rows = []
    for design in [(10, 1.0, 100, 0.2), (10, 0.6, 115, 0.4)]:
        t = time.perf_counter()
        reps = n(2000)
        size = tc.unpaired_size(*design, reps=reps, seed=11)
        rows.append(row(f"unpaired, {design[0]} videos sd {design[1]} vs {design[2]} sd {design[3]}, equal means", "size", 0.05, size, reps, time.perf_counter() - t))
    for portraits, per in [(5, 6), (12, 3)]:
        for cluster in (False, True):
            t = time.perf_counter()
            reps = n(3000)
            size, cov = tc.nested_rates(portraits, per, reps=reps, seed=100 + portraits, cluster=cluster)
            how = "--cluster (portrait)" if cluster else "by source only"
            sec = time.perf_counter() - t
            rows.append(row(f"nested: {portraits} portraits x {per} sources, {how}", "size", 0.05, size, reps, sec))
            rows.append(row(f"nested: {portraits} portraits x {per} sources, {how}", "pair CI coverage", 0.95, cov, reps, sec))
    for k in (6, 12, 30, 100):
        t = time.perf_counter()
        reps = n(1000)
        rows.append(row(f"group CI, {k} sources", "coverage", 0.95, tc.group_coverage(k, reps=reps, seed=200 + k), reps, time.perf_counter() - t))
    for groups, grouped in [(20, True), (5, False), (20, False)]:
        t = time.perf_counter()
        reps = n(1000)
        cov = tc._portrait_runs(groups, 6, reps, 0.9, grouped=grouped, seed=300 + groups)
        ok = cov[np.isfinite(cov)]
        how = "one residual per portrait" if grouped else "one residual per video"
        r = row(f"prediction interval, {groups} validation portraits x 6 videos, {how}", "coverage (mean over checkpoints)", 0.9,
                float(ok.mean()), reps, time.perf_counter() - t)
        r["mc_se"] = round(float(ok.std() / math.sqrt(ok.size)), 4)
        r["share_of_checkpoints_below_0.85"] = round(float(np.mean(ok < 0.85)), 3)
        rows.append(r)
    t = time.perf_counter()
    reps = n(300)
    cp, cs, mean_plcc = system_coverage(reps, seed=400)
    sec = time.perf_counter() - t
    rows.append(row(f"system level: 8 close generators x 30 sources (mean PLCC estimate {mean_plcc:.3f})", "PLCC CI coverage", 0.95, cp, reps, sec))
    rows.append(row("system level: 8 close generators x 30 sources", "SRCC CI coverage", 0.95, cs, reps, sec))
    path = write_result("calibration_cpu", {"rows": rows, "scale": args.scale})
    print("| design | figure | nominal | measured (MC se) | replications |")
    print("|---|---|---|---|---|")
    for r in rows:
        extra = f"; {100 * r['share_of_checkpoints_below_0.85']:.0f}% of checkpoints < 0.85" if "share_of_checkpoints_below_0.85" in r else ""
        print(f"| {r['design']} | {r['what']} | {r['nominal']:.2f} | {r['measured']:.3f} ({r['mc_se']:.3f}){extra} | {r['reps']} |")
    print(f"-> {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
