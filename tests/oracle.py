"""The decoding oracle: a plain reference reader for the tests, slow and simple on purpose.

It opens the file afresh, decodes **every** video frame and **every** audio frame from the start in one pass (no
seeking, nothing skipped) and picks each clip's frames by timestamp, as :func:`thqa.media.decode.read_clips` promises to:

* frames: the first ``n_frames`` frames at or after ``t0 + second`` (``t0`` = the first frame's time), resized with
  thqa's scaler (:func:`thqa.media.video._to_rgb`: what is compared is which decoded picture a clip gets, not the scaler),
  padded with the last frame; the first frame at its native size;
* sound: every decoded frame converted to float by FFmpeg's own converter (``av.AudioResampler(format="fltp")``,
  no rate change), averaged over channels, laid end to end from the first frame's timestamp (re-anchored only where
  a timestamp disagrees by more than 20 ms), the whole track resampled at once with
  :func:`scipy.signal.resample_poly` from a start on the output grid, and each clip's
  ``[start - context, start + 1 + context)`` cut out of that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class RefClip:
    frames: np.ndarray  #: (n_frames, S, S, 3) uint8
    stamps: np.ndarray  #: (n_frames,)
    first_frame: np.ndarray  #: (H, W, 3) uint8
    n_real: int


def reference_frames(path: str | Path, seconds, *, n_frames: int, frame_size: int) -> dict[int, RefClip]:
    """Every requested second's clip from one unbroken decode of the whole video stream."""
    import av
    from av.video.reformatter import VideoReformatter

    from thqa.media.probe import probe
    from thqa.media.video import _to_rgb

    info = probe(path)
    want = sorted(set(seconds))
    got: dict[int, list] = {s: [] for s in want}
    firsts: dict[int, np.ndarray] = {}
    rf = VideoReformatter()
    last = None
    with av.open(str(path)) as c:
        for frame in c.decode(c.streams.video[0]):
            t = float(frame.time) if frame.time is not None else (last[0] if last else 0.0)
            takers = [s for s in want if t >= info.start_time + s - 1e-4 and len(got[s]) < n_frames]
            if takers:
                small = _to_rgb(frame, frame_size, info.rotation, rf)
                for s in takers:
                    if not got[s]:
                        firsts[s] = _to_rgb(frame, None, info.rotation, rf)
                    got[s].append((t, small))
            last = (t, frame)
    out = {}
    for s in want:
        if not got[s]:  # after the last frame: the last frame stands in
            got[s] = [(last[0], _to_rgb(last[1], frame_size, info.rotation, rf))]
            firsts[s] = _to_rgb(last[1], None, info.rotation, rf)
        n_real = len(got[s])
        seq = got[s] + [got[s][-1]] * (n_frames - n_real)
        out[s] = RefClip(np.stack([f for _, f in seq]), np.array([t for t, _ in seq]), firsts[s], n_real)
    return out


def reference_sound(path: str | Path, starts: dict[int, float], *, rate: int = 16000, context: float = 0.5) -> dict[int, np.ndarray]:
    """Each clip's mono float32 sound, (rate + 2 * round(context * rate),), from the whole track decoded and
    resampled at once. ``starts`` maps a second to its clip's first frame time."""
    import av
    from scipy.signal import resample_poly

    chunks: list[tuple[int, np.ndarray]] = []
    native = None
    cursor = None
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        conv = av.AudioResampler(format="fltp")
        for frame in c.decode(stream):
            native = native or frame.sample_rate
            if frame.time is not None:
                expected = int(round(float(frame.time) * native))
                if cursor is None or abs(expected - cursor) > 0.02 * native:
                    cursor = expected
            cursor = cursor or 0
            x = np.concatenate([o.to_ndarray() for o in conv.resample(frame)], axis=1).mean(axis=0, dtype=np.float32)
            chunks.append((cursor, x))
            cursor += x.shape[0]
    ctx_n = int(round(context * rate))
    n = rate + 2 * ctx_n
    j0 = {s: int(round((t - context) * rate)) for s, t in starts.items()}
    if native is None:
        return {s: np.zeros(n, dtype=np.float32) for s in starts}
    g = math.gcd(native, rate)
    up, down = rate // g, native // g
    margin = 10 * max(up, down) // up + 10 * down  # more than the filter's half length, in native samples
    lo = min([a for a, _ in chunks] + [v * down // up for v in j0.values()]) - margin
    lo = (lo // down) * down  # on both grids: output sample lo * up / down
    hi = max([a + x.shape[0] for a, x in chunks] + [(v + n) * down // up for v in j0.values()]) + margin
    buf = np.zeros(hi - lo, dtype=np.float32)
    for a, x in chunks:
        buf[a - lo : a - lo + x.shape[0]] = x
    y = buf if up == down else resample_poly(buf, up, down).astype(np.float32)
    q0 = lo * up // down
    return {s: y[v - q0 : v - q0 + n] for s, v in j0.items()}
