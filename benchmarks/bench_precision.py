"""How much the backbones' precision moves the features and the MOS: fp32 against bf16 autocast, on real files.

For each file the CPU side is prepared once; both backbones run on the same inputs in fp32 and in bf16 autocast
(the default on a GPU; on a CPU asked for by name). Per branch: cosine similarity of each clip's feature vector
and the largest absolute difference (also relative to the largest fp32 value). Then a fusion model scores both
sets of features: how far the MOS moves, next to the spread of the MOS over the files and the model's own error.

The fusion model is a checkpoint given with --checkpoint (e.g. `thqa demo`'s run/best.safetensors, trained on
fp32 features of random-init backbones), else an untrained seeded one (its scores mean nothing; the movement
still says how sensitive a model of this shape is). Random-init backbones: no pretrained weights here.

On a CPU without bf16 arithmetic (no AVX-512 BF16 or AMX; the flags are in the result's machine facts) PyTorch
emulates bf16 and SlowFast runs ~140x slower than in fp32 (171 s against 1.2 s a clip on the 2-core AVX2 machine):
``--temporal-n`` (default there: 3) limits the SlowFast comparison, and the MOS comparison, to the first files.

Usage: python benchmarks/bench_precision.py [--checkpoint CK] [--n 20] [--temporal-n K] [--threads 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from _util import SHARED_MEDIA, write_result


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def _branch_stats(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a - b)
    return {"cos_min": float(_cos(a, b).min()), "cos_median": float(np.median(_cos(a, b))), "max_abs_diff": float(d.max()),
            "max_rel_diff": float(d.max() / max(np.abs(a).max(), 1e-30))}


def _cpu_flags() -> list[str]:
    from _util import _cpu_facts

    return _cpu_facts().get("cpu_flags", [])


def _timed(secs: dict, key: tuple, fn, x) -> np.ndarray:
    t = time.perf_counter()
    y = fn(x)
    secs[key][0] += time.perf_counter() - t
    secs[key][1] += x.shape[0]
    return y


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="fusion checkpoint to score with (default: an untrained seeded model)")
    ap.add_argument("--metrics", help="the checkpoint's held-out metrics JSON (thqa demo's metrics.json), for its RMSE")
    ap.add_argument("--media", type=Path, default=SHARED_MEDIA)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--temporal-n", type=int, default=None, help="files whose SlowFast features are compared too (default: all on a GPU or a CPU with bf16 hardware, else 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="output path (default benchmarks/results/precision_<device>.json)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import torch

    from bench_throughput import pick_sources
    from thqa.features.pipeline import assemble, prepare
    from thqa.scoring.scorer import Scorer

    torch.set_num_threads(args.threads)
    files = pick_sources(args.media, None)[: args.n]
    if not files:
        print(f"no videos in {args.media}", file=sys.stderr)
        return 2
    scorer = Scorer(args.checkpoint, random_init=True, device=args.device, workers=0)
    bb = scorer.backbones
    fast_bf16 = bb.device.type == "cuda" or any(f in _cpu_flags() for f in ("avx512_bf16", "amx_bf16"))
    temporal_n = args.temporal_n if args.temporal_n is not None else (len(files) if fast_bf16 else 3)
    rows, secs = [], {(b, p): [0.0, 0] for b in ("spatial", "temporal") for p in ("fp32", "bf16-autocast")}
    for i, f in enumerate(files):
        item = prepare(f, scorer.settings)
        out: dict[str, dict] = {}
        for prec in ("fp32", "bf16-autocast"):
            bb.precision = prec
            out[prec] = {"spatial": _timed(secs, ("spatial", prec), bb.run_spatial, item.spatial_input)}
            if i < temporal_n:
                out[prec]["temporal"] = _timed(secs, ("temporal", prec), bb.run_temporal, item.clips)
        row = {"file": f.name, "spatial": _branch_stats(out["fp32"]["spatial"], out["bf16-autocast"]["spatial"])}
        if i < temporal_n:
            row["temporal"] = _branch_stats(out["fp32"]["temporal"], out["bf16-autocast"]["temporal"])
            for prec in ("fp32", "bf16-autocast"):
                feats = assemble(item, out[prec]["spatial"], out[prec]["temporal"])
                row["mos_fp32" if prec == "fp32" else "mos_bf16"] = float(scorer.score_features([feats])[0][0])
        rows.append(row)
        print(f"{f.name:<48} spatial cos {row['spatial']['cos_min']:.6f}"
              + (f"  temporal cos {row['temporal']['cos_min']:.6f}  MOS {row['mos_fp32']:.4f} -> {row['mos_bf16']:.4f}" if "temporal" in row else ""), flush=True)
    bb.precision = "fp32"
    scored = [r for r in rows if "mos_bf16" in r]
    moves = np.abs([r["mos_bf16"] - r["mos_fp32"] for r in scored])
    spread = float(np.std([r["mos_fp32"] for r in scored])) if len(scored) > 1 else 0.0
    rmse = None
    if args.metrics:
        rmse = json.loads(Path(args.metrics).read_text()).get("metrics", {}).get("rmse")
    summary = {
        branch: {
            "files": len(have),
            "cos_min": min(r[branch]["cos_min"] for r in have),
            "cos_median": float(np.median([r[branch]["cos_median"] for r in have])),
            "max_abs_diff": max(r[branch]["max_abs_diff"] for r in have),
            "max_rel_diff": max(r[branch]["max_rel_diff"] for r in have),
        }
        for branch in ("spatial", "temporal")
        if (have := [r for r in rows if branch in r])
    }
    if len(moves):
        summary["mos_move"] = {"files": len(scored), "median": float(np.median(moves)), "max": float(moves.max()), "mos_std_over_files": spread,
                               "model_heldout_rmse": rmse, "max_over_std": float(moves.max() / spread) if spread else None}
    summary["seconds_per_clip"] = {f"{b} {p}": (t / n if n else None) for (b, p), (t, n) in secs.items()}
    summary["bf16_in_hardware"] = fast_bf16
    print(json.dumps(summary, indent=1))
    out = write_result(
        f"precision_{args.device}",
        {
            "what": "fp32 vs bf16-autocast backbones on the same prepared inputs; random-init backbones",
            "checkpoint": args.checkpoint or "untrained seeded fusion model",
            "settings": scorer.settings.to_dict(),
            "files": len(rows),
            "summary": summary,
            "rows": rows,
        },
        args.json,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
