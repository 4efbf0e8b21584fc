"""Seconds per training epoch in frozen mode for 1,000 cached videos (synthetic cache entries).

Writes N synthetic entries (6 clips: spatial 768, temporal 2304, audio 4x128x32 float32) into a feature cache,
reads them back with thqa.training.loop.load_table (timed), and trains the fusion model for a few epochs (timed).
Usage: python benchmarks/bench_train.py [--videos 1000] [--epochs 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _util import write_result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from thqa.data.cache import FeatureCache, file_digest
    from thqa.data.manifest import Sample
    from thqa.data.extract import features_key
    from thqa.features.pipeline import ExtractionSettings
    from thqa.training.loop import TrainConfig, load_table, train

    rng = np.random.default_rng(0)
    settings = ExtractionSettings()
    backbones = {"swin_t": {"sha256": "0" * 64}, "slowfast_r50": {"sha256": "1" * 64}}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        cache = FeatureCache(d / "cache")
        samples = []
        t = time.perf_counter()
        for i in range(args.videos):
            f = d / "videos" / f"v{i:05d}.mp4"
            f.parent.mkdir(exist_ok=True)
            f.write_bytes(rng.bytes(64))  # stand-in content: the key needs a digest
            mos = float(rng.uniform(0, 5))
            arrays = {
                "spatial": (rng.standard_normal((6, 768)) + mos).astype(np.float32),
                "temporal": rng.standard_normal((6, 2304)).astype(np.float32),
                "audio": rng.standard_normal((6, 4, 128, 32)).astype(np.float32),
                "seconds": np.arange(6, dtype=np.int64),
            }
            cache.put(features_key(file_digest(f), settings, backbones), arrays, {"path": str(f)})
            samples.append(Sample(f, mos, f"g{i}", None, f.name))
        write_s = time.perf_counter() - t
        size = cache.size_bytes()
        t = time.perf_counter()
        n_val = max(5, args.videos // 10)
        tr = load_table(samples[n_val:], cache, settings, backbones)
        va = load_table(samples[:n_val], cache, settings, backbones)
        load_s = time.perf_counter() - t
        epochs = []
        res = train(tr, va, settings=settings, backbones=backbones, run_dir=d / "run", config=TrainConfig(epochs=args.epochs), on_epoch=lambda r: epochs.append(r["seconds"]))
    doc = {
        "videos": args.videos,
        "train_videos": len(tr),
        "cache_bytes_per_video": size / args.videos,
        "write_s_per_video": write_s / args.videos,
        "load_table_s": load_s,
        "epoch_s": epochs,
        "epoch_s_per_1000_train_videos": float(np.median(epochs)) * 1000.0 / len(tr),
        "best_val_main": res.best_metrics["main_score"],
    }
    print(f"cache entry {doc['cache_bytes_per_video'] / 1e6:.2f} MB/video; load {load_s:.1f} s for {args.videos}; "
          f"epoch {np.median(epochs):.2f} s for {len(tr)} videos ({doc['epoch_s_per_1000_train_videos']:.2f} s per 1000)")
    print(f"-> {write_result('train_cpu', doc)}")


if __name__ == "__main__":
    main()
