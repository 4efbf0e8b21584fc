"""What the winner recipe's fine-tuning costs: seconds per epoch per 1,000 videos, extrapolated from a small run.

A synthetic table of M training and V validation videos (6 clips, first frames 3 x 520 x 520 uint8, random cached
temporal and audio features) goes through ``thqa.training.loop.train`` with ``resolve("winner", epochs=E)`` and a random-init
ECA + Swin-T, on the CPU (or --device cuda): every training step runs Swin-T forward and backward on B x 6 random
224 crops, every validation pass Swin-T forward on centre crops. Timed: the training part of each epoch (the loop's
own ``seconds``), the validation pass, and the rest of the epoch (checkpoints with the 110 MB of Swin-T weights,
``resume.pt`` with the optimizer's state). The same table without fine-tuning (the winner's fusion model alone on
cached features) and the frozen recipe give the comparison.

Usage: python benchmarks/bench_finetune.py [--train 16] [--val 5] [--epochs 2] [--threads 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from _util import write_result


def _table(m: int, n_clips: int, seed: int, *, frames: bool):
    from thqa.training.loop import FeatureTable

    rng = np.random.default_rng(seed)
    mos = rng.uniform(1, 5, m).astype(np.float32)
    fr = [[rng.integers(0, 256, (3, 520, 520), dtype=np.uint8) for _ in range(n_clips)] for _ in range(m)] if frames else None
    return FeatureTable(
        [f"/v/{seed}_{i}.mp4" for i in range(m)], mos,
        rng.standard_normal((m, n_clips, 768)).astype(np.float32),
        rng.standard_normal((m, n_clips, 2304)).astype(np.float32),
        rng.standard_normal((m, n_clips, 4, 128, 32)).astype(np.float32),
        fr,
    )


def _run(tr, va, plan, settings, bb, run_dir: Path, spatial_net, device: str) -> tuple[list[float], list[float]]:
    """(the training part of each epoch, each epoch's whole wall time: training, validation, checkpoints, resume.pt)"""
    from thqa.training.loop import train

    rows: list[dict] = []
    stamps = [time.perf_counter()]
    train(tr, va, settings=settings, backbones=bb, run_dir=run_dir, config=plan.config, spatial_net=spatial_net, device=device,
          on_epoch=lambda r: (rows.append(r), stamps.append(time.perf_counter())))
    return [r["seconds"] for r in rows], list(np.diff(stamps))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=16, help="training videos measured (two steps of the winner's batch of 8)")
    ap.add_argument("--val", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from thqa.features.pipeline import ExtractionSettings, precision_for
    from thqa.training.recipes import resolve
    from thqa.training.loop import predict_table
    from thqa.features.weights import WeightsOptions, build_spatial

    settings = ExtractionSettings(n_clips=args.clips)
    prec = precision_for(args.device)
    bb = {"swin_t": {"sha256": "0" * 64, "precision": prec}, "slowfast_r50": {"sha256": "1" * 64, "precision": prec}}
    tr, va = _table(args.train, args.clips, 1, frames=True), _table(args.val, args.clips, 2, frames=True)
    plan = resolve("winner", epochs=args.epochs, n_clips=args.clips)
    doc: dict = {"load_average_at_start": os.getloadavg(), "train_videos": args.train, "val_videos": args.val, "clips": args.clips, "epochs": args.epochs,
                 "batch_size": plan.config.batch_size, "device": args.device, "threads": args.threads, "frame": [3, 520, 520]}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        spatial, _ = build_spatial(WeightsOptions(random_init=True))
        train_s, walls = _run(tr, va, plan, settings, bb, d / "winner", spatial, args.device)
        spatial.to(args.device)
        t = time.perf_counter()
        predict_table(_fusion(plan).to(args.device), va, settings, spatial_net=spatial, device=args.device)
        val_s = time.perf_counter() - t
        ckpt_bytes = (d / "winner" / "last.safetensors").stat().st_size
        resume_bytes = (d / "winner" / "resume.pt").stat().st_size
        # the last epoch's wall time minus its training part: validation, checkpoints and resume.pt
        rest = walls[-1] - train_s[-1] - val_s
        doc["finetune"] = {
            "epoch_train_s": train_s,
            "val_pass_s": val_s,
            "epoch_wall_s": walls,
            "epoch_checkpoints_s": rest,
            "train_s_per_video": float(np.median(train_s)) / args.train,
            "val_s_per_video": val_s / args.val,
            "checkpoint_mb": ckpt_bytes / 1e6,
            "resume_mb": resume_bytes / 1e6,
        }
        # the same winner model on cached features (no fine-tuning), and the frozen recipe: many more videos, cheap
        big_tr, big_va = _table(200, args.clips, 3, frames=False), _table(20, args.clips, 4, frames=False)
        for name, p in (("winner_no_finetune", resolve("winner", finetune_spatial=False, epochs=2, n_clips=args.clips)),
                        ("frozen", resolve("frozen", epochs=2, n_clips=args.clips))):
            secs, _ = _run(big_tr, big_va, p, settings, bb, d / name, None, args.device)
            doc[name] = {"epoch_train_s": secs, "train_videos": 200, "epoch_s_per_1000_train_videos": float(np.median(secs)) * 1000 / 200}
    f = doc["finetune"]
    f["epoch_s_per_1000_train_videos"] = f["train_s_per_video"] * 1000
    f["val_s_per_1000_videos"] = f["val_s_per_video"] * 1000
    # THQA-NTIRE: 8,927 training videos; validation on 15% of them held out (about 1,340)
    f["thqa_ntire_epoch_h"] = (f["train_s_per_video"] * 8927 * 0.85 + f["val_s_per_video"] * 8927 * 0.15) / 3600
    f["thqa_ntire_50_epochs_h"] = f["thqa_ntire_epoch_h"] * 50
    doc["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    doc["load_average_at_end"] = os.getloadavg()  # a shared machine: other processes slow torch down
    print(f"fine-tuning (winner, {args.clips} clips, batch {plan.config.batch_size}, {args.device}, {args.threads} threads): "
          f"{f['train_s_per_video']:.2f} s per training video ({f['epoch_s_per_1000_train_videos'] / 60:.1f} min per epoch per 1000), "
          f"validation {f['val_s_per_video']:.2f} s per video, checkpoints and resume.pt ~{rest:.1f} s per epoch "
          f"({f['checkpoint_mb']:.0f} MB + {f['resume_mb']:.0f} MB)")
    print(f"THQA-NTIRE train split (8,927 videos, 15% held out): {f['thqa_ntire_epoch_h']:.1f} h per epoch, "
          f"{f['thqa_ntire_50_epochs_h']:.0f} h for 50 epochs on this machine")
    for name in ("winner_no_finetune", "frozen"):
        print(f"{name}: {doc[name]['epoch_s_per_1000_train_videos']:.1f} s per epoch per 1000 cached videos")
    print(f"-> {write_result(f'finetune_{args.device}', doc)}")


def _fusion(plan):
    from thqa.models.fusion import FusionConfig, FusionModel

    return FusionModel(FusionConfig.from_dict(plan.config.fusion))


if __name__ == "__main__":
    main()
