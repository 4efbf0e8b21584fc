"""Score talking-head files from Python and print one line per file.

    python examples/score_files.py --checkpoint run/best.safetensors a.mp4 b.mp4
    python examples/score_files.py --random-init a.mp4        # untrained weights: tests the pipeline only
"""
from __future__ import annotations

import argparse

import thqa


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--checkpoint")
    ap.add_argument("--random-init", action="store_true")
    args = ap.parse_args()
    scorer = thqa.Scorer(checkpoint=args.checkpoint, random_init=args.random_init, device="auto")
    for r in scorer.score_many(args.files):
        if r.ok:
            clips = ", ".join(f"{c:.2f}" for c in r.clip_scores)
            print(f"{r.path}: MOS {r.mos:.3f} (clips at seconds {r.seconds}: {clips}){' [untrained]' if r.untrained else ''}")
        else:
            print(f"{r.path}: not scored: {r.error}")


if __name__ == "__main__":
    main()
