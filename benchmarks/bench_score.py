"""Wall time and peak memory of `thqa score` (random-init backbones, CPU) on an 8-second and a 60-second file.

The files are made from ../shared/media (real talking heads, looped and concatenated, 512x512 25 fps + 16 kHz AAC).
Usage: python benchmarks/bench_score.py [--threads 2]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _util import SHARED_MEDIA, concat_media, run_timed, thqa_cmd, write_result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "thqa-bench"))
    args = ap.parse_args()
    srcs = [SHARED_MEDIA / n for n in ("vid_real_vox_00015_224.mp4", "vid_ai_vasa1_man_512.mp4", "vid_real_woman_blue_700.mp4")]
    work = Path(args.work)
    rows = []
    for seconds in (8, 60):
        f = concat_media(srcs, work / f"concat_{seconds}s.mp4", seconds=seconds)
        r = run_timed([*thqa_cmd(), "score", str(f), "--random-init", "--threads", str(args.threads), "--format", "json"])
        r["file_seconds"] = seconds
        rows.append(r)
        print(f"{seconds:>4d} s file: thqa score {r['wall_s']:.1f} s wall, peak RSS {r['peak_rss_mib']:.0f} MiB (rc {r['rc']})")
    p = write_result("score_cpu", {"threads": args.threads, "runs": rows})
    print(f"-> {p}")


if __name__ == "__main__":
    main()
