"""Measured coverage of thqa's prediction intervals on held-out sources of the demo corpus.

Needs a finished `thqa demo` output directory: its corpus.csv, its feature cache, and run/best.safetensors (for the
extraction settings and the backbones' identity). For each of --splits random source splits (--test-sources held out,
--val-sources for validation, the rest for training) the fusion model is trained as the demo trains it; the checkpoint's
calibration (the residuals of the chosen epoch on the validation sources, exactly what `thqa train` stores) gives the
intervals, and the held-out sources say how often they hold the pseudo-MOS, at 80/90/95%.

Also measured, to decide whether it is worth storing: residuals normalised by a per-video difficulty estimate, the
spread of the video's clip scores, |y - y_hat| / (sd_clips + beta) with beta the validation videos' median sd_clips;
the interval is then y_hat +- q (sd_clips + beta). It helps if it keeps the coverage with a smaller mean width.

Usage: python benchmarks/bench_coverage.py DEMO_DIR [--splits 8] [--val-sources 3] [--test-sources 2] [--epochs 40]
(3 validation sources of the default demo's 9 videos each: 27 calibration residuals, enough for 95%, which needs 19)
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _util import write_result

COVERAGES = (0.8, 0.9, 0.95)


def subset(table, idx):
    from thqa.training.loop import FeatureTable

    return FeatureTable([table.paths[i] for i in idx], table.mos[idx], table.spatial[idx], table.temporal[idx], table.audio[idx])


def predict_with_clips(model, table) -> tuple[np.ndarray, np.ndarray]:
    """Video scores (M,) and clip scores (M, N) in eval mode."""
    import torch

    model.eval()
    with torch.inference_mode():
        mos, clips = model(torch.from_numpy(table.spatial), torch.from_numpy(table.temporal), torch.from_numpy(table.audio))
    return mos.numpy().astype(np.float64), clips.numpy().astype(np.float64)


def normalised_coverage(val_pred, val_clips, val_mos, test_pred, test_clips, test_mos, c: float) -> tuple[float | None, float | None]:
    from thqa.analysis.conformal import conformal_quantile

    sd_val, sd_test = val_clips.std(axis=1), test_clips.std(axis=1)
    beta = max(float(np.median(sd_val)), 1e-6)
    q = conformal_quantile(np.abs(val_mos - val_pred) / (sd_val + beta), c)
    if q is None:
        return None, None
    half = q * (sd_test + beta)
    return float(np.mean(np.abs(test_mos - test_pred) <= half)), float(np.mean(2 * half))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("demo_dir", type=Path)
    ap.add_argument("--splits", type=int, default=8)
    ap.add_argument("--val-sources", type=int, default=3)
    ap.add_argument("--test-sources", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="result path (default benchmarks/results/coverage_cpu.json)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from thqa.data.cache import FeatureCache
    from thqa.models.checkpoint import load_checkpoint
    from thqa.analysis.conformal import Calibration, empirical_coverage
    from thqa.data.manifest import read_manifest
    from thqa.training.loop import TrainConfig, load_table, train

    demo_ck = load_checkpoint(args.demo_dir / "run" / "best.safetensors")
    samples = read_manifest(args.demo_dir / "corpus.csv").samples
    table = load_table(samples, FeatureCache(args.demo_dir / "cache"), demo_ck.settings, demo_ck.backbones, what="demo videos")
    groups = np.array([s.group for s in samples])
    names = sorted(set(groups))
    rows, t0 = [], time.perf_counter()
    for split in range(args.splits):
        order = [str(names[i]) for i in np.random.default_rng(split).permutation(len(names))]
        test_g, val_g = set(order[: args.test_sources]), set(order[args.test_sources : args.test_sources + args.val_sources])
        idx = {k: np.flatnonzero([(g in test_g) if k == "test" else (g in val_g) if k == "val" else (g not in test_g | val_g) for g in groups])
               for k in ("train", "val", "test")}
        tab = {k: subset(table, v) for k, v in idx.items()}
        with tempfile.TemporaryDirectory() as run:
            res = train(tab["train"], tab["val"], settings=demo_ck.settings, backbones=demo_ck.backbones, run_dir=run,
                        config=TrainConfig(epochs=args.epochs, seed=3407 + split, lr=3e-4), resume=False)
            ck = load_checkpoint(res.checkpoint)
        cal = Calibration.from_dict(ck.calibration)
        vp, vc = predict_with_clips(ck.model, tab["val"])
        tp, tc = predict_with_clips(ck.model, tab["test"])
        assert np.allclose(np.sort(np.abs(tab["val"].mos - vp)), cal.scores, atol=1e-5)  # the stored calibration
        for r in empirical_coverage(tp, tab["test"].mos, cal, COVERAGES):
            nm, nw = normalised_coverage(vp, vc, tab["val"].mos, tp, tc, tab["test"].mos, r["nominal"])
            rows.append({"split": split, "test_sources": sorted(test_g), "val_sources": sorted(val_g), "best_epoch": res.best_epoch,
                         **r, "normalised_measured": nm, "normalised_mean_width": nw})
        print(f"split {split}: test {sorted(test_g)}, val {sorted(val_g)}, epoch {res.best_epoch}: "
              + ", ".join(f"{r['nominal']:.0%} -> {r['measured'] if r['measured'] is None else round(r['measured'], 3)}" for r in rows[-3:]), flush=True)

    summary = []
    print(f"\n{'nominal':>8} {'measured':>9} {'min..max over splits':>21} {'width':>7} | {'normalised':>10} {'width':>7}")
    for c in COVERAGES:
        rs = [r for r in rows if r["nominal"] == c and r["measured"] is not None]
        if not rs:
            continue
        n = np.array([r["n"] for r in rs])
        m = np.array([r["measured"] for r in rs])
        w = np.array([r["mean_width"] for r in rs])
        nm = np.array([r["normalised_measured"] for r in rs])
        nw = np.array([r["normalised_mean_width"] for r in rs])
        s = {"nominal": c, "splits": len(rs), "videos": int(n.sum()), "measured": float((m * n).sum() / n.sum()),
             "measured_min": float(m.min()), "measured_max": float(m.max()), "mean_width": float((w * n).sum() / n.sum()),
             "normalised_measured": float((nm * n).sum() / n.sum()), "normalised_mean_width": float((nw * n).sum() / n.sum())}
        summary.append(s)
        print(f"{c:>8.0%} {s['measured']:>9.3f} {s['measured_min']:>10.3f}..{s['measured_max']:<10.3f} {s['mean_width']:>7.3f} | "
              f"{s['normalised_measured']:>10.3f} {s['normalised_mean_width']:>7.3f}")
    out = write_result("coverage_cpu", {"demo_dir": str(args.demo_dir), "args": {k: str(v) for k, v in vars(args).items()},
                                         "seconds": round(time.perf_counter() - t0, 1), "summary": summary, "splits": rows}, args.json)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
