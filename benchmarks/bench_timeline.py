"""Cost of `thqa score --timeline` against a plain score, by duration (synthetic talking heads, random-init backbones).

The timeline reads every second of a file and runs it through both backbones, so its cost grows with the duration;
a plain score reads the 6 sampled seconds only. Default settings (6 clips of 32 frames at 224 px), CPU.

Usage (from the repository root):
  nice -n 10 python benchmarks/bench_timeline.py [--durations 10 60 600] [--threads 2] [--json OUT]
"""
from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

from _util import write_result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--durations", type=float, nargs="+", default=[10, 60, 600])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the result here (else benchmarks/results/timeline_cpu.json)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    from thqa.scoring.scorer import Scorer
    from thqa.synthetic.heads import make_talking_head

    scorer = Scorer(random_init=True, device="cpu", workers=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dur in args.durations:
            p = Path(tmp) / f"head_{dur:g}s.mp4"
            make_talking_head(p, seed=1, duration=dur, size=256)
            t0 = time.perf_counter()
            plain = scorer.score(p)
            t1 = time.perf_counter()
            res = scorer.explain(p, timeline=True)
            t2 = time.perf_counter()
            assert abs(res.mos - plain.mos) < 1e-4, (res.mos, plain.mos)
            row = {
                "duration_s": dur,
                "seconds_scored": len(res.timeline),
                "plain_score_s": round(t1 - t0, 2),
                "timeline_s": round(t2 - t1, 2),
                "timeline_s_per_video_second": round((t2 - t1) / len(res.timeline), 3),
                "ratio_to_plain": round((t2 - t1) / (t1 - t0), 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    out = write_result("timeline_cpu", {"settings": "default (6 clips x 32 frames at 224 px), random-init backbones", "rows": rows}, args.json)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
