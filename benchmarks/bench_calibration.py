"""Nominal against measured size and coverage of `thqa compare` and the prediction intervals (issue 24).

The designs of tests/analysis/test_calibration.py (imported from there: one definition of each), with more replications:
heteroscedastic unpaired groups, sources nested in portraits (by source and by portrait), few sources per group,
grouped calibration of prediction intervals. Each row: the nominal rate, the measured one with its Monte Carlo
standard error, and the replications.

Usage: python benchmarks/bench_calibration.py [--scale 1.0] [--only WORD]   (--scale multiplies every design's
replications; 1.0 takes a few minutes on one core; --only runs the designs whose name holds WORD, e.g. "system",
and keeps the other rows of the results file). Writes benchmarks/results/calibration_cpu.json and prints the README
table.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from _util import RESULTS, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_calibration as tc  # noqa: E402


def row(design: str, what: str, nominal: float, measured: float, reps: int, seconds: float) -> dict:
    return {"design": design, "what": what, "nominal": nominal, "measured": round(measured, 4),
            "mc_se": round(math.sqrt(max(measured * (1 - measured), 1e-4) / reps), 4), "reps": reps, "seconds": round(seconds, 1)}


def _designs(n) -> list[tuple[str, object]]:
    """(name, function returning rows) of every design, ``n`` scaling the replications."""
    out = []
    for design in [(10, 1.0, 100, 0.2), (10, 0.6, 115, 0.4)]:
        name = f"unpaired, {design[0]} videos sd {design[1]} vs {design[2]} sd {design[3]}, equal means"
        out.append((name, lambda name=name, design=design: _timed(lambda: [(name, "size", 0.05, tc.unpaired_size(*design, reps=n(2000), seed=11), n(2000))])))
    for portraits, per in [(5, 6), (12, 3)]:
        for cluster in (False, True):
            how = "--cluster (portrait)" if cluster else "by source only"
            name = f"nested: {portraits} portraits x {per} sources, {how}"

            def nested(name=name, portraits=portraits, per=per, cluster=cluster):
                size, cov = tc.nested_rates(portraits, per, reps=n(3000), seed=100 + portraits, cluster=cluster)
                return [(name, "size", 0.05, size, n(3000)), (name, "pair CI coverage", 0.95, cov, n(3000))]

            out.append((name, lambda f=nested: _timed(f)))
    for k in (6, 12, 30, 100):
        name = f"group CI, {k} sources"
        out.append((name, lambda name=name, k=k: _timed(lambda: [(name, "coverage", 0.95, tc.group_coverage(k, reps=n(1000), seed=200 + k), n(1000))])))
    for groups, grouped in [(20, True), (5, False), (20, False)]:
        how = "one residual per portrait" if grouped else "one residual per video"
        name = f"prediction interval, {groups} validation portraits x 6 videos, {how}"
        out.append((name, lambda name=name, groups=groups, grouped=grouped: _prediction_rows(name, groups, grouped, n(1000))))
    for spread in (0.2, 0.4, 1.0):
        name = f"system level: 8 generators x 30 sources, effects {spread} apart"
        out.append((name, lambda name=name, spread=spread: _system_rows(name, spread, n(300))))
    return out


def _timed(fn) -> list[dict]:
    t = time.perf_counter()
    got = fn()
    sec = time.perf_counter() - t
    return [row(design, what, nominal, measured, reps, sec) for design, what, nominal, measured, reps in got]


def _prediction_rows(name: str, groups: int, grouped: bool, reps: int) -> list[dict]:
    t = time.perf_counter()
    cov = tc._portrait_runs(groups, 6, reps, 0.9, grouped=grouped, seed=300 + groups)
    ok = cov[np.isfinite(cov)]
    r = row(name, "coverage (mean over checkpoints)", 0.9, float(ok.mean()), reps, time.perf_counter() - t)
    r["mc_se"] = round(float(ok.std() / math.sqrt(ok.size)), 4)
    r["share_of_checkpoints_below_0.85"] = round(float(np.mean(ok < 0.85)), 3)
    return [r]


def _system_rows(name: str, spread: float, reps: int) -> list[dict]:
    t = time.perf_counter()
    m = tc.system_coverage(spread, reps=reps, seed=400, n_boot=500)
    sec = time.perf_counter() - t
    full = (f"{name} (reliability {m['reliability']:.2f}; population PLCC {m['true_plcc']:.3f}, observed {m['plcc']:.3f}, "
            f"disattenuated {m['plcc_disattenuated']:.3f})")
    return [row(full, f"{k.upper()} CI coverage", 0.95, m[f"{k}_coverage"], reps, sec) for k in ("plcc", "srcc", "krcc")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--only", default=None, help="run only the designs whose name holds this word; keep the other rows")
    args = ap.parse_args()
    n = lambda k: max(20, int(k * args.scale))  # noqa: E731
    chosen = [(name, fn) for name, fn in _designs(n) if args.only is None or args.only in name]
    rows = [r for _, fn in chosen for r in fn()]
    if args.only is not None and (RESULTS / "calibration_cpu.json").exists():
        old = json.loads((RESULTS / "calibration_cpu.json").read_text())["rows"]
        rows = [r for r in old if args.only not in r["design"]] + rows
    path = write_result("calibration_cpu", {"rows": rows, "scale": args.scale if args.only is None else f"{args.scale} ({args.only} only)"})
    print("| design | figure | nominal | measured (MC se) | replications |")
    print("|---|---|---|---|---|")
    for r in rows:
        extra = f"; {100 * r['share_of_checkpoints_below_0.85']:.0f}% of checkpoints < 0.85" if "share_of_checkpoints_below_0.85" in r else ""
        print(f"| {r['design']} | {r['what']} | {r['nominal']:.2f} | {r['measured']:.3f} ({r['mc_se']:.3f}){extra} | {r['reps']} |")
    print(f"-> {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
