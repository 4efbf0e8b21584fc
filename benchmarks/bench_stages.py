"""Per-stage cost of extracting and scoring one file on this machine (random-init backbones unless weights exist).

Stages: probe+decode of the sampled clips, audio features, Swin-T (spatial), SlowFast (temporal), fusion; then the
end-to-end time of Scorer.score on the same file, to compare with the sum of decode + forward passes.
Usage: python benchmarks/bench_stages.py [FILE] [--threads 2] [--repeat 2] [--json OUT]
"""
from __future__ import annotations

import argparse
import resource
import time

from _util import SHARED_MEDIA, write_result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?", default=str(SHARED_MEDIA / "vid_real_lowq_man_480.mp4"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", help="write this run's numbers here (else benchmarks/results/stages_cpu.json)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from thqa.features.pipeline import prepare
    from thqa.scoring.scorer import Scorer

    t = time.perf_counter()
    scorer = Scorer(random_init=True, device="cpu")
    build_s = time.perf_counter() - t
    bb = scorer.backbones
    scorer.score(args.file)  # warm-up (librosa/numba compilation, allocator)
    runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        item = prepare(args.file, scorer.settings)
        t1 = time.perf_counter()
        sp = bb.run_spatial(item.spatial_input)
        t2 = time.perf_counter()
        tp = bb.run_temporal(item.clips)
        t3 = time.perf_counter()
        feats = bb.features([item])
        t4 = time.perf_counter()
        scorer.score_features(feats)
        t5 = time.perf_counter()
        scorer.score(args.file)
        t6 = time.perf_counter()
        runs.append(
            {
                "decode_s": item.seconds_decode,
                "audio_s": item.seconds_audio,
                "prepare_total_s": t1 - t0,
                "spatial_s": t2 - t1,
                "temporal_s": t3 - t2,
                "fusion_s": t5 - t4,
                "end_to_end_s": t6 - t5,
                "unique_clips": len(item.unique),
            }
        )
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    floor = best["decode_s"] + best["spatial_s"] + best["temporal_s"]
    doc = {
        "file": args.file,
        "threads": args.threads,
        "build_s": build_s,
        "best_of": args.repeat,
        "stages": best,
        "decode_plus_forward_s": floor,
        "end_to_end_over_floor": best["end_to_end_s"] / floor,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    for k, v in best.items():
        print(f"{k:<18}{v:>9.3f}")
    print(f"{'decode+forward':<18}{floor:>9.3f}\n{'ratio e2e/floor':<18}{doc['end_to_end_over_floor']:>9.3f}\n{'peak RSS MiB':<18}{doc['peak_rss_mib']:>9.0f}")
    print(f"-> {write_result('stages_cpu', doc, args.json)}")


if __name__ == "__main__":
    main()
