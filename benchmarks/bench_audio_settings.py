"""CPU seconds per clip of the four audio maps at thqa's settings, with each switch back to the method's, and at all of
them (winner-exact): what README "Departures from the method" rows 7-10 cost.

Clips: 1-second clips (with their 0.5 s of context each side) of a real speech video in ../shared/media, decoded as
``prepare()`` does; each setting runs on the same clips, one clip per call (as a file's 6 clips are in one call,
per clip), ``--reps`` times; the median is kept.
Usage: python benchmarks/bench_audio_settings.py [--file NAME] [--clips 6] [--reps 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _util import SHARED_MEDIA, write_result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", default="vid_real_vox_00015_224.mp4")
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from thqa.features.audio import METHOD_AUDIO, AudioFeatureExtractor, AudioSettings
    from thqa.media.decode import read_clips
    from thqa.media.sampling import clip_seconds

    cases = {
        "thqa (default)": {},
        "cqt chroma (896 filters)": {k: METHOD_AUDIO[k] for k in ("cqt_kind", "cqt_bins", "cqt_bins_per_octave")},
        "22050 Hz": {"sample_rate": 22050},
        "chroma tuning estimated": {"chroma_tuning": None},
        "MFCC top_db 80": {"mfcc_top_db": 80.0},
        "all (winner-exact)": dict(METHOD_AUDIO),
    }
    rows = {}
    for name, kw in cases.items():
        s = AudioSettings(**kw).validate()
        vc = read_clips(SHARED_MEDIA / args.file, lambda info: clip_seconds(info.duration, n_clips=args.clips), n_frames=4, frame_size=32, audio_rate=s.sample_rate, audio_context=s.context)
        audio = np.stack([c.audio for c in vc.clips])
        ex = AudioFeatureExtractor(s)
        ex.batch(audio[:1])  # filter banks built once, outside the timing
        times = []
        for _ in range(args.reps):
            t = time.process_time()
            ex.batch(audio)
            times.append((time.process_time() - t) / len(audio))
        rows[name] = {"settings": s.to_dict(), "cpu_s_per_clip": float(np.median(times)), "reps": times}
        print(f"{name:<28} {rows[name]['cpu_s_per_clip'] * 1000:8.1f} ms CPU per clip")
    print(f"-> {write_result('audio_settings_cpu', {'file': args.file, 'clips': args.clips, 'threads': args.threads, 'cases': rows})}")


if __name__ == "__main__":
    main()
