"""CPU seconds per file of the CPU side of extraction (`prepare`), stage by stage, as one decoding worker runs it.

On a GPU machine `thqa extract` is bound by this figure: W decoding workers prepare at most
W / (CPU seconds per file) videos/s. This script measures it in one process configured as a worker (one decoder
thread, one scaler thread, one torch/BLAS thread), so it is comparable across machines and does not need a GPU.
Process CPU time (not wall time) is reported, because threads that a library starts on its own count against the
other workers on a full machine.

Stages: open + probe, read (demux, decode, scale the clip frames, decode and resample the audio), audio features,
spatial preprocessing (resize to short side 520, crop, normalise), clips tensor, PNG of the first frames.

Usage:
  python benchmarks/bench_prepare.py [--media DIR] [--size 512] [--repeats 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from _util import SHARED_MEDIA, write_result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", type=Path, default=SHARED_MEDIA)
    ap.add_argument("--size", type=int, default=512, help="use sources of size x size only (0: any size)")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the files; the fastest pass is reported")
    ap.add_argument("--json", help="write the result here (else benchmarks/results/prepare_cpu.json)")
    args = ap.parse_args()
    if not args.media.is_dir():
        print(f"no media folder at {args.media}", file=sys.stderr)
        return 2
    logging.disable(logging.WARNING)  # the silent/no-audio warnings of the sample files

    import torch

    from bench_throughput import pick_sources
    from thqa.features.pipeline import ExtractionSettings, _worker_init, prepare, warm_up

    _worker_init(0)  # as in a DataLoader worker: one thread each for the decoder, scaler, torch and BLAS
    s = ExtractionSettings()
    warm_up(s)
    sources = pick_sources(args.media, args.size or None)
    if not sources:
        print("no usable sources", file=sys.stderr)
        return 2
    for p in sources:  # first touch: file cache, lazy imports
        prepare(p, s, keep_first_frames="png")

    best: dict[str, float] | None = None
    for _ in range(max(1, args.repeats)):
        cpu = wall = 0.0
        stages: dict[str, float] = {}
        for p in sources:
            c0, w0 = time.process_time(), time.perf_counter()
            item = prepare(p, s, keep_first_frames="png")
            cpu += time.process_time() - c0
            wall += time.perf_counter() - w0
            for k, v in getattr(item, "stage_seconds", {}).items():
                stages[k] = stages.get(k, 0.0) + v
        n = len(sources)
        run = {"cpu_s_per_file": cpu / n, "wall_s_per_file": wall / n, **{f"{k}_s": v / n for k, v in stages.items()}}
        if best is None or run["cpu_s_per_file"] < best["cpu_s_per_file"]:
            best = run
    assert best is not None
    print(f"prepare() on {len(sources)} files ({args.size or 'any'} px), one worker's configuration, best of {args.repeats}:")
    print(f"{'stage':<22}{'seconds/file':>14}")
    for k, v in best.items():
        print(f"{k:<22}{v:>14.4f}")
    print(f"=> one core prepares {1.0 / best['cpu_s_per_file']:.2f} videos/s; 15 workers at most {15 / best['cpu_s_per_file']:.1f} videos/s")
    out = write_result(
        "prepare_cpu",
        {
            "what": "CPU seconds per file of prepare() in one worker's configuration (fastest of the passes)",
            "files": [p.name for p in sources],
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            **{k: round(v, 4) for k, v in best.items()},
        },
        args.json,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
