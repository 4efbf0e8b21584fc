"""The search of the lip-sync estimate (:mod:`thqa.analysis.sync`): the picture's motion per mouth, the speech signal
at every candidate offset, their correlation map in analysis windows, the agreement curve, its peak and confidence."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from thqa.analysis.sync_settings import SyncSettings
from thqa.analysis.sync_signals import (
    AVData,
    Motion,
    Mouth,
    _highpass,
    _rate,
    _scaled,
    _zscore,
    drop_repeated_frames,
    face_tracks,
    mouth_opening_motion,
    mouth_region,
    speech_change,
    speech_envelope,
)

__all__ = ["Search", "analysis_windows", "mouth_correlation", "picture_motion", "search_offset", "search_range", "speech_signal"]


def _motion_key(data: AVData, s: SyncSettings) -> tuple:
    return (id(data.frames), s.locator, s.mouth_size, s.frame_width, s.block, s.repeat_threshold, s.detect_every_s, s.max_detections)


def picture_motion(data: AVData, s: SyncSettings) -> Motion:
    """Repeated frames dropped, the mouths located (``s.locator``: each face found, or the whole picture) and the
    motion of their blocks measured; kept on ``data`` so that analyses with other sound (shifted copies) reuse it."""
    key = _motion_key(data, s)
    if data.motion is not None and data.motion.key == key:
        return data.motion
    times, frames, repeated = drop_repeated_frames(data.frame_times, data.frames, threshold=s.repeat_threshold)
    m = Motion(key, data.frames, times, [], repeated)
    if len(times) < 16:
        m.error = f"{data.path}: too few distinct frames ({len(times)}) for a sync estimate"
    elif s.locator == "face":
        tracks, searched = face_tracks(frames, times, every_s=s.detect_every_s, max_frames=s.max_detections)
        if not tracks:
            m.error = (
                f"{data.path}: no face found (dlib's face detector searched {searched} frames): no visible speaking face "
                "to sync with (locator 'frame' analyses the whole picture without a detector)"
            )
        for boxes in tracks:
            region = mouth_region(boxes, frames.shape[1:])
            m.mouths.append(Mouth(region, _blocks_motion(_scaled(frames, s.mouth_size, region), times, s.block)))
    else:
        h, w = frames.shape[1:]
        size = (s.frame_width, max(2, int(round(h * s.frame_width / w / 2)) * 2))
        m.mouths.append(Mouth(None, _blocks_motion(_scaled(frames, size), times, s.block)))
    data.motion = m
    return m



def _blocks_motion(picture: np.ndarray, times: np.ndarray, block: int) -> np.ndarray:
    """(M, h, w) frames at (M,) times -> (M-1, B) high-passed mouth-opening motion of the blocks."""
    fs = _rate(times)
    return _highpass(mouth_opening_motion(picture, block).astype(np.float64), fs, axis=0)



def search_range(settings: SyncSettings, seconds: float) -> SyncSettings:
    """``settings`` validated, with ``max_offset_ms`` cut to what leaves ``min_overlap_s`` of overlap in a file of
    ``seconds`` (a whole number of steps, at least one)."""
    s = settings.validate()
    room = (seconds - s.min_overlap_s) * 1000.0
    if room >= s.max_offset_ms:
        return s
    return dataclasses.replace(s, max_offset_ms=max(1, math.floor(room / s.step_ms)) * s.step_ms)


def _offsets(settings: SyncSettings) -> np.ndarray:
    n = int(round(settings.max_offset_ms / settings.step_ms))
    return np.arange(-n, n + 1) * settings.step_ms / 1000.0


def _refine(curve: np.ndarray, k: int, step: float) -> float:
    """Sub-step position of the peak at ``k``: the vertex of the parabola through it and its neighbours."""
    if 0 < k < len(curve) - 1:
        a, b, c = curve[k - 1], curve[k], curve[k + 1]
        den = a - 2 * b + c
        if den < 0:
            return float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) * step
    return 0.0


def _confidence(curve: np.ndarray, k: int, offsets_s: np.ndarray, exclude_s: float = 0.15) -> float:
    """(peak - median of the rest) / (1.4826 * MAD of the rest); 'the rest' leaves out +-exclude_s around the peak."""
    far = np.abs(offsets_s - offsets_s[k]) > exclude_s
    rest = curve[far] if far.sum() >= 5 else curve
    med = float(np.median(rest))
    mad = 1.4826 * float(np.median(np.abs(rest - med)))
    return float((curve[k] - med) / max(mad, 1e-6))


def analysis_windows(n: int, fs: float, window_s: float | None, hop_s: float) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of the windows over ``n`` motion rows at ``fs`` rows per second: windows of
    ``window_s`` seconds every ``hop_s`` seconds, the last one ending at ``n`` so that the tail is covered; one
    window over everything when ``window_s`` is None or not shorter than the material."""
    w = n if window_s is None else int(round(window_s * fs))
    if w >= n or w < 8:
        return [(0, n)]
    hop = max(1, int(round(hop_s * fs)))
    starts = list(range(0, n - w + 1, hop))
    if starts[-1] != n - w:
        starts.append(n - w)
    return [(a, a + w) for a in starts]


def _top_block_curve(corr: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(L, B) correlations -> (L,) mean of the ``k`` best blocks at each offset and (L, k) those blocks."""
    k = min(k, corr.shape[1])
    top_each = np.argpartition(corr, -k, axis=1)[:, -k:]
    return np.take_along_axis(corr, top_each, axis=1).mean(axis=1), top_each


def _windowed_curve(motion: np.ndarray, speech: np.ndarray, windows: list[tuple[int, int]], k: int) -> np.ndarray:
    """(N-1, B) motion and (L, N-1) speech -> (L,) the mean over ``windows`` of each window's best-``k``-block
    agreement (correlations computed within the window)."""
    curves = []
    for a, b in windows:
        c = _zscore(speech[:, a:b], axis=1) @ _zscore(motion[a:b], axis=0) / (b - a)
        curves.append(_top_block_curve(c, k)[0])
    return np.mean(curves, axis=0)


def speech_signal(data: AVData, times: np.ndarray, offsets_s: np.ndarray) -> np.ndarray:
    """(L, M-1) the high-passed change of loudness for frames at ``times`` (M,), at each candidate offset."""
    fs = _rate(times)
    env = speech_envelope(data.audio, data.audio_rate)
    return _highpass(speech_change(env, data.audio_start, times, offsets_s), fs, axis=1)


def mouth_correlation(
    blocks: np.ndarray, speech: np.ndarray, times: np.ndarray, settings: SyncSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The audio-visual correlation map and the agreement curve of one mouth.

    The agreement at an offset is, in each analysis window (:func:`analysis_windows`), the mean correlation of the
    ``top_blocks`` blocks that follow the sound best there (the lips, found by how well they follow the sound, and
    found again in each window, so a head that moves the mouth across the region is followed), averaged over the
    windows.

    Args:
        blocks: (M-1, B) motion of the blocks; speech: (L, M-1) from :func:`speech_signal`; times: (M,) seconds.
    Returns:
        corr: (L, B) Pearson correlation of each block's stretch with the change of loudness at each offset, over
            the whole analysed material;
        curve: (L,) the agreement;
        top: (K,) the blocks of ``corr`` that agree best at the curve's peak;
        motion: (M-1, B) and speech: (L, M-1), the standardised signals that were correlated.
    """
    fs = _rate(times)
    windows = analysis_windows(blocks.shape[0], fs, settings.window_s, settings.window_hop_s)
    curve = _windowed_curve(blocks, speech, windows, settings.top_blocks)
    mz = _zscore(blocks, axis=0)
    sz = _zscore(speech, axis=1)
    corr = sz @ mz / mz.shape[0]  # (L, B)
    top = _top_block_curve(corr, settings.top_blocks)[1][int(np.argmax(curve))]
    return corr, curve, top, mz, sz


def _agreement_per_second(times: np.ndarray, mouth: np.ndarray, speech: np.ndarray, duration: float) -> list[float]:
    """Pearson correlation of ``mouth`` and ``speech`` (both (N-1,), at ``times`` (N-1,)) over the 2 s around each
    whole second ``[s - 0.5, s + 1.5)`` of the video (s from its first frame)."""
    rel = times - times[0]
    out = []
    for s in range(max(1, int(math.floor(duration + 1e-3)))):
        m = (rel >= s - 0.5) & (rel < s + 1.5)
        if m.sum() < 8:
            out.append(float("nan"))
            continue
        a, b = mouth[m] - mouth[m].mean(), speech[m] - speech[m].mean()
        den = math.sqrt(float((a * a).sum() * (b * b).sum()))
        out.append(round(float((a * b).sum() / den), 4) if den > 0 else 0.0)
    return out


def _peak(curve: np.ndarray, offsets: np.ndarray, step: float) -> tuple[int, float]:
    k = int(np.argmax(curve))
    return k, float(offsets[k] + _refine(curve, k, step))


def _best_mouth(motion: Motion, speech: np.ndarray, s: SyncSettings, offsets: np.ndarray) -> tuple[Mouth, tuple, float]:
    """The mouth (of the faces found) whose motion follows the speech most clearly: the highest confidence."""
    best = None
    for mouth in motion.mouths:
        res = mouth_correlation(mouth.blocks, speech, motion.times, s)
        conf = _confidence(res[1], int(np.argmax(res[1])), offsets)
        if best is None or conf > best[2]:
            best = (mouth, res, conf)
    return best




@dataclass
class Search:
    """The agreement curve of the mouth that follows the speech most clearly (see :func:`search_offset`).

    Attributes:
        mouth: that mouth. offsets: (L,) the candidate offsets (s). curve: (L,) its agreement at each.
        confidence: of the curve's peak (see :class:`thqa.analysis.sync.SyncResult`). peak: the peak's index.
        offset: the peak's offset (s), refined below the step; offset_whole: the same with one set of best blocks for
        the whole file. agreement_per_second: the mouth's agreement with the speech at the peak, per second.
    """

    mouth: Mouth
    offsets: np.ndarray = field(repr=False)
    curve: np.ndarray = field(repr=False)
    confidence: float
    peak: int
    offset: float
    offset_whole: float
    agreement_per_second: list[float]


def search_offset(data: AVData, motion: Motion, s: SyncSettings) -> Search:
    """Correlate the motion of every mouth of ``motion`` (:func:`picture_motion`) with the speech of ``data`` at each
    candidate offset of ``s``'s range and keep the mouth whose curve peaks most clearly."""
    offsets = _offsets(s)
    speech = speech_signal(data, motion.times, offsets)
    mouth, (corr, curve, top, mz, sz), conf = _best_mouth(motion, speech, s, offsets)
    step = s.step_ms / 1000.0
    k, off = _peak(curve, offsets, step)
    off_whole = _peak(_top_block_curve(corr, s.top_blocks)[0], offsets, step)[1]  # one set of blocks for the whole file
    agreement = _agreement_per_second(motion.times[1:], mz[:, top].mean(axis=1), sz[k], data.duration)
    return Search(mouth, offsets, curve, conf, k, off, off_whole, agreement)
