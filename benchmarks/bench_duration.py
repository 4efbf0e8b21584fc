"""Cost and peak memory against duration: 6 s, 60 s and 600 s files made from ../shared/media.

With seeking, decoding the 6 sampled seconds of a 600 s file must cost under 2x the 6 s file's, and peak memory must
not grow with duration. Each duration runs in its own process (bench_stages.py) so peak RSS is its own.
Usage: python benchmarks/bench_duration.py [--threads 2] [--durations 6 60 600]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _util import SHARED_MEDIA, concat_media, run_timed, write_result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--durations", type=int, nargs="+", default=[6, 60, 600])
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "thqa-bench"))
    args = ap.parse_args()
    srcs = [SHARED_MEDIA / n for n in ("vid_real_vox_00015_224.mp4", "vid_ai_vasa1_man_512.mp4", "vid_real_woman_blue_700.mp4")]
    work = Path(args.work)
    here = Path(__file__).resolve().parent
    rows = []
    for d in args.durations:
        f = concat_media(srcs, work / f"concat_{d}s.mp4", seconds=d)
        out = work / f"stages_{d}s.json"
        r = run_timed([sys.executable, str(here / "bench_stages.py"), str(f), "--threads", str(args.threads), "--repeat", "2", "--json", str(out)])
        doc = json.loads(out.read_text()) if out.exists() else {}
        rows.append({"duration_s": d, "file_mb": round(f.stat().st_size / 1e6, 2), "peak_rss_mib": r["peak_rss_mib"], **doc.get("stages", {})})
    base = rows[0]
    print(f"{'duration':>9}{'decode s':>10}{'audio s':>9}{'spatial s':>10}{'temporal s':>11}{'e2e s':>8}{'peak MiB':>10}")
    for r in rows:
        print(f"{r['duration_s']:>9}{r.get('decode_s', float('nan')):>10.3f}{r.get('audio_s', float('nan')):>9.3f}{r.get('spatial_s', float('nan')):>10.3f}"
              f"{r.get('temporal_s', float('nan')):>11.3f}{r.get('end_to_end_s', float('nan')):>8.2f}{r['peak_rss_mib'] or 0:>10.0f}")
    ratios = {f"{r['duration_s']}s_over_{base['duration_s']}s": {
        "decode": r.get("decode_s", 0) / base.get("decode_s", 1),
        "end_to_end": r.get("end_to_end_s", 0) / base.get("end_to_end_s", 1),
        "peak_rss": (r["peak_rss_mib"] or 0) / (base["peak_rss_mib"] or 1)} for r in rows[1:]}
    print(json.dumps(ratios, indent=1))
    print(f"-> {write_result('duration_cpu', {'threads': args.threads, 'rows': rows, 'ratios': ratios})}")


if __name__ == "__main__":
    main()
