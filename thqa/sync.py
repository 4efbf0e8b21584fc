"""Audio/video offset of a talking head, from the file alone: no trained sync network, nothing downloaded.

How it works (see the README's "Lip sync" section for the measured accuracy):

1. **Decode once** (:func:`decode_av`): every video frame as a small grey picture on the container clock
   (``frame.time``, so variable frame rates and stream start times are honoured) and the first audio stream as mono
   16 kHz samples placed on the same clock.
2. **Motion per block**: the picture is cut into small blocks; a block's motion at frame ``i`` is the mean vertical
   stretch ``dv/dy`` of the dense optical flow (OpenCV DIS) from frame ``i-1`` to ``i``: positive when a mouth opens,
   negative when it closes, blind to the head moving as a whole. Slow changes (below ~1 Hz) are taken out.
3. **Speech signal**: the loudness (RMS) envelope of the speech band (250-3500 Hz), averaged over one
   frame interval and *sampled the way the camera samples the mouth*: the audio counterpart of frame ``i``'s motion
   is ``E(t_i + d) - E(t_{i-1} + d)`` for a candidate offset ``d``, on the frames' own timestamps. Comparing like
   with like (change against change, on the same frame grid) removes the bias that comparing frame differences with
   onset strength has (motion also peaks when the mouth closes, onsets only when the sound starts).
4. **Audio-visual correlation map**: the Pearson correlation of every block's motion with the speech signal, for
   every candidate offset (``-max_offset .. +max_offset`` in ``step_ms`` steps), in windows of ``window_s`` seconds.
   In each window the blocks whose motion follows the sound best - the mouth, found without a face detector, and
   found again in each window so that a moving head is followed - give that window's agreement per offset; the
   windows' agreements are averaged and the offset is the peak, refined below the step by a parabola.
5. **Confidence**: how far the peak stands above the rest of the curve, in robust standard deviations (see
   :class:`SyncResult`).

Sign convention: ``offset_ms > 0`` means the sound comes *later* than the lips (a video lead); ``< 0`` means the
sound comes earlier (an audio lead).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from thqa.errors import ConfigError, DecodeError, MediaError, THQAError

__all__ = [
    "AVData",
    "SyncResult",
    "SyncSettings",
    "analysis_windows",
    "decode_av",
    "estimate_av_offset",
    "estimate_offset_arrays",
    "sync_agreement_over_time",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncSettings:
    """Settings of :func:`estimate_av_offset` (the defaults are the benchmarked ones)."""

    max_offset_ms: float = 1000.0  #: search -max_offset .. +max_offset
    step_ms: float = 5.0  #: spacing of the candidate offsets (the peak is refined below it)
    max_seconds: float | None = 30.0  #: analyse at most this many seconds from the start (None: all)
    width: int = 192  #: frames are scaled to this width (aspect kept) in grey
    block: int = 8  #: block size in pixels at that width
    top_blocks: int = 4  #: blocks pooled into the agreement at each offset (in each window)
    #: the agreement curve is the mean of the curves of windows this long (s), each with its own best blocks, so
    #: that a mouth that moves across the picture (head motion) is followed; None: one window over the whole file
    window_s: float | None = 4.0
    window_hop_s: float = 1.0  #: spacing of the windows' starts (s)
    #: the offset is refused as ambiguous when the windowed estimate and the whole-file one (one set of best blocks
    #: for the whole file) differ by more than this (ms); None: never
    max_disagreement_ms: float | None = 80.0
    audio_rate: int = 16000
    min_seconds: float = 1.5  #: shorter files are refused
    min_confidence: float = 3.0  #: below this the offset is reported as an error (no clear agreement)

    def validate(self) -> "SyncSettings":
        if not (self.max_offset_ms > 0 and 0 < self.step_ms <= 100):
            raise ConfigError(f"max_offset_ms must be > 0 and step_ms in (0, 100], got {self.max_offset_ms}, {self.step_ms}")
        if self.width < 32 or self.block < 2 or self.top_blocks < 1:
            raise ConfigError("width must be >= 32, block >= 2 and top_blocks >= 1")
        if self.max_disagreement_ms is not None and not self.max_disagreement_ms >= 0:
            raise ConfigError(f"max_disagreement_ms must be None or >= 0, got {self.max_disagreement_ms}")
        if self.window_s is not None and not (self.window_s >= 1.0 and self.window_hop_s > 0):
            raise ConfigError(f"window_s must be None or >= 1 s and window_hop_s > 0, got {self.window_s}, {self.window_hop_s}")
        if self.max_seconds is not None and self.max_seconds < self.min_seconds:
            raise ConfigError(f"max_seconds must be at least min_seconds ({self.min_seconds})")
        return self


@dataclass
class AVData:
    """A file's material for sync analysis, both streams on the container clock.

    Attributes:
        frame_times: (N,) float64 seconds, increasing.
        frames: (N, H, W) uint8 grey frames.
        audio: (M,) float32 mono samples; ``audio[k]`` plays at ``audio_start + k / audio_rate``.
    """

    path: str
    frame_times: np.ndarray
    frames: np.ndarray
    audio: np.ndarray | None
    audio_rate: int
    audio_start: float
    has_audio_stream: bool
    #: (N-1, B) the mouth-opening motion of the blocks, computed on first use and kept (it does not depend on the
    #: sound, so analyses of the same picture with shifted sound share it)
    motion: np.ndarray | None = field(default=None, repr=False)
    motion_block: int | None = field(default=None, repr=False)

    @property
    def fps(self) -> float:
        if len(self.frame_times) < 2:
            return 0.0
        return float(1.0 / np.median(np.diff(self.frame_times)))

    @property
    def duration(self) -> float:
        if len(self.frame_times) < 2:
            return 0.0
        return float(self.frame_times[-1] - self.frame_times[0] + np.median(np.diff(self.frame_times)))


@dataclass
class SyncResult:
    """The audio/video offset of one file.

    ``offset_ms`` > 0: the sound comes later than the lips; < 0: earlier. None when ``error`` says why the file
    could not be analysed (no audio stream, silent audio, too short, no motion that follows the speech, or an
    ambiguous peak: windowed and whole-file analyses that disagree, see :class:`SyncSettings`).

    ``confidence`` is how far the best offset's agreement stands above the agreement of the other candidate
    offsets, in robust standard deviations (median and MAD of the curve away from the peak): about 0-3 means no
    offset wins (silence, music, a speaker off screen or a still picture: the offset is then reported as an
    error), 3-6 a weak but usable peak, above 6 a clear one. On the real talking heads of the benchmark in-sync files
    score 4-14, and files locked on a wrong offset 4-8 too: a high confidence is not proof (see the README).

    ``curve`` maps each candidate offset (ms) to the agreement: the Pearson correlation of the best blocks' motion
    (the mouth) with the speech signal at that offset, averaged over the analysis windows.
    """

    path: str
    offset_ms: float | None
    confidence: float | None
    range_ms: tuple[float, float]
    seconds_used: float
    error: str | None = None
    error_type: str | None = None
    fps: float | None = None
    peak_agreement: float | None = None
    curve_offsets_ms: list[float] = field(default_factory=list)
    curve: list[float] = field(default_factory=list)
    #: (n,) for each whole second of the analysed video, the agreement (correlation) of the mouth motion with the
    #: speech at the measured offset, over the 2 s around it: where it drops, the lips stop following the sound
    agreement_per_second: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self, *, curve: bool = True) -> dict:
        d = asdict(self)
        d["range_ms"] = list(self.range_ms)
        if not curve:
            d.pop("curve_offsets_ms")
            d.pop("curve")
        return d


class SyncError(MediaError):
    """A file whose audio/video offset cannot be measured (no audio, silence, too short, no agreement)."""


# ---------------------------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------------------------


def decode_av(
    path: str | os.PathLike, *, width: int = 192, audio_rate: int = 16000, max_seconds: float | None = None
) -> AVData:
    """Decode a file once: grey frames scaled to ``width`` (aspect kept, even height) and mono audio, both on the
    container clock (frame and audio timestamps, so stream start times and variable frame rates are honoured).

    Raises:
        MediaFileNotFoundError, MediaError, DecodeError, NoVideoStreamError: as :func:`thqa.io.read_clips`.
    """
    import av

    from thqa.io import check_file, probe

    p = check_file(path)
    info = probe(p)  # typed errors for missing, empty, undecodable and video-less files
    times: list[float] = []
    frames: list[np.ndarray] = []
    chunks: list[tuple[float, np.ndarray]] = []
    try:
        container = av.open(str(p), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as exc:
        raise DecodeError(f"{p}: cannot be opened ({exc})") from exc
    with container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        astream = container.streams.audio[0] if container.streams.audio else None
        w = int(width)
        h = max(2, int(round(info.height * w / max(1, info.width) / 2)) * 2)
        if info.rotation in (90, 270):  # scale the stored frame, then rotate into the displayed one
            sw, sh = h, w
        else:
            sw, sh = w, h
        resampler = av.AudioResampler(format="fltp", rate=audio_rate) if astream is not None else None
        t_first = None
        end = None
        streams = [vs] + ([astream] if astream is not None else [])
        try:
            for packet in container.demux(streams):
                if packet.stream.type == "audio":
                    for af in packet.decode():
                        if af.time is None:
                            continue
                        for out in resampler.resample(af):
                            chunks.append((float(af.time), out.to_ndarray().mean(axis=0, dtype=np.float32)))
                    continue
                for vf in packet.decode():
                    if vf.time is None:
                        continue
                    t = float(vf.time)
                    if t_first is None:
                        t_first = t
                        end = None if max_seconds is None else t_first + float(max_seconds)
                    if end is not None and t >= end:
                        continue
                    img = vf.reformat(width=sw, height=sh, format="gray", interpolation="AREA").to_ndarray()
                    if info.rotation:
                        img = np.rot90(img, k=info.rotation // 90)
                    times.append(t)
                    frames.append(np.ascontiguousarray(img))
                if end is not None and times and chunks and chunks[-1][0] > end + 2.0 and times[-1] >= end - 0.5:
                    break
            if resampler is not None:
                for out in resampler.resample(None):
                    chunks.append((chunks[-1][0] if chunks else 0.0, out.to_ndarray().mean(axis=0, dtype=np.float32)))
        except av.error.FFmpegError as exc:
            if not frames:
                raise DecodeError(f"{p}: decoding failed ({exc})") from exc
            log.warning("%s: decoding stopped early (%s); analysing what was decoded", p, exc)
    if not frames:
        raise DecodeError(f"{p}: no video frame could be decoded")
    order = np.argsort(np.asarray(times))
    ft = np.asarray(times, dtype=np.float64)[order]
    fr = np.stack([frames[i] for i in order])
    keep = np.concatenate([[True], np.diff(ft) > 1e-6])  # duplicate timestamps: keep the first
    ft, fr = ft[keep], fr[keep]
    audio, a_start = _place_audio(chunks, audio_rate)
    return AVData(str(p), ft, fr, audio, audio_rate, a_start, astream is not None)


def _place_audio(chunks: list[tuple[float, np.ndarray]], rate: int) -> tuple[np.ndarray | None, float]:
    """Lay decoded chunks on one buffer by their timestamps (the resampler's output of a frame starts at the
    frame's time; consecutive chunks that overlap or leave small gaps are placed back to back)."""
    if not chunks:
        return None, 0.0
    start = chunks[0][0]
    pieces: list[tuple[int, np.ndarray]] = []
    cursor = 0
    last_t = None
    for t, x in chunks:
        expected = int(round((t - start) * rate))
        # a chunk from the same frame as the previous one (resampler output split) or a small jitter: back to back
        if last_t is not None and (t == last_t or abs(expected - cursor) <= 0.02 * rate):
            pos = cursor
        else:
            pos = max(expected, 0)
        pieces.append((pos, x))
        cursor = pos + len(x)
        last_t = t
    n = max(pos + len(x) for pos, x in pieces)
    buf = np.zeros(n, dtype=np.float32)
    for pos, x in pieces:
        buf[pos : pos + len(x)] = x
    return buf, float(start)


# ---------------------------------------------------------------------------------------------------------------
# signals
# ---------------------------------------------------------------------------------------------------------------

#: speech band of the envelope (Hz): voicing and the first formants, where the mouth opening shows most
_BAND = (250.0, 3500.0)
#: envelope hop (s)
_HOP = 0.005
#: motion and speech signals lose what changes slower than this (Hz): head turns, lighting, loudness drift
_HIGHPASS_HZ = 1.0


def mouth_opening_motion(frames: np.ndarray, block: int) -> np.ndarray:
    """(N, H, W) uint8 grey frames -> (N-1, B) float32: per ``block`` x ``block`` block, the mean vertical stretch
    ``dv/dy`` of the optical flow from frame ``i-1`` to frame ``i`` (row ``i-1``).

    A mouth that opens pulls the upper lip up and the lower lip and jaw down: positive stretch; closing gives
    negative stretch. A head that moves or turns shifts the whole face, which a derivative of the flow ignores, so
    this signal is mouth motion with the head motion taken out, without a face detector.
    """
    import cv2

    n, h, w = frames.shape
    hb, wb = h // block, w // block
    out = np.zeros((max(n - 1, 0), hb * wb), dtype=np.float32)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    for i in range(1, n):
        flow = dis.calc(frames[i - 1], frames[i], None)
        stretch = np.gradient(flow[..., 1], axis=0)
        out[i - 1] = stretch[: hb * block, : wb * block].reshape(hb, block, wb, block).mean(axis=(1, 3)).reshape(-1)
    return out


def speech_envelope(audio: np.ndarray, rate: int) -> np.ndarray:
    """(M,) mono samples -> (K,) float64 loudness (RMS) of the speech band every ``_HOP`` seconds (sample k covers
    ``[k * hop, (k + 1) * hop)`` from the audio's start)."""
    from scipy import signal

    x = np.asarray(audio, dtype=np.float64)
    nyq = 0.5 * rate
    sos = signal.butter(4, [_BAND[0] / nyq, min(_BAND[1], 0.95 * nyq) / nyq], btype="band", output="sos")
    y = signal.sosfilt(sos, x)
    hop = int(round(_HOP * rate))
    k = len(y) // hop
    return np.sqrt((y[: k * hop] ** 2).reshape(k, hop).mean(axis=1))


def _highpass(x: np.ndarray, fs: float, axis: int = 0) -> np.ndarray:
    from scipy import signal

    if fs <= 2 * _HIGHPASS_HZ or x.shape[axis] < 16:
        return x - x.mean(axis=axis, keepdims=True)
    sos = signal.butter(2, _HIGHPASS_HZ / (0.5 * fs), btype="high", output="sos")
    return signal.sosfiltfilt(sos, x, axis=axis, padlen=min(x.shape[axis] - 1, 18))


def _zscore(x: np.ndarray, axis: int) -> np.ndarray:
    x = x - x.mean(axis=axis, keepdims=True)
    sd = np.sqrt((x * x).mean(axis=axis, keepdims=True))
    return x / np.where(sd > 1e-12, sd, np.inf)


def speech_change(env: np.ndarray, env_start: float, frame_times: np.ndarray, offsets_s: np.ndarray) -> np.ndarray:
    """The audio counterpart of the mouth's stretch: for each candidate offset ``d`` and frame ``i >= 1``,
    ``E(t_i + d) - E(t_{i-1} + d)`` with ``E(t)`` the loudness averaged over one frame interval from ``t`` - the
    change of loudness sampled exactly as the camera samples the mouth (same timestamps, same exposure).
    Returns (L, N-1) float64. Outside the audio the loudness is zero (silence)."""
    dt = float(np.median(np.diff(frame_times))) if len(frame_times) > 1 else 0.04
    pad = int(math.ceil((np.max(np.abs(offsets_s)) + dt + 1.0) / _HOP))
    e = np.concatenate([np.zeros(pad), env, np.zeros(pad)])
    csum = np.concatenate([[0.0], np.cumsum(e)]) * _HOP  # integral of E from the padded start
    grid = env_start - pad * _HOP + _HOP * np.arange(len(csum))
    t = frame_times[None, :] + offsets_s[:, None]  # (L, N)
    mean_e = (np.interp(t + dt, grid, csum) - np.interp(t, grid, csum)) / dt
    return np.diff(mean_e, axis=1)


# ---------------------------------------------------------------------------------------------------------------
# the estimate
# ---------------------------------------------------------------------------------------------------------------


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


def _fail(path: str, settings: SyncSettings, seconds: float, msg: str, *, fps: float | None = None, **kw) -> SyncResult:
    r = settings.max_offset_ms
    return SyncResult(path, None, kw.pop("confidence", None), (-r, r), round(seconds, 3), error=msg, error_type="SyncError", fps=fps, **kw)


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


def mouth_correlation(
    data: AVData, settings: SyncSettings, offsets_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The audio-visual correlation map and the agreement curve.

    The agreement at an offset is, in each analysis window (:func:`analysis_windows`), the mean correlation of the
    ``top_blocks`` blocks that follow the sound best there (the mouth, found by how well it follows the sound, and
    found again in each window, so a head that moves the mouth across the picture is followed), averaged over the
    windows.

    Returns:
        corr: (L, B) Pearson correlation of each block's stretch with the change of loudness at each offset, over
            the whole analysed material;
        curve: (L,) the agreement;
        top: (K,) the blocks of ``corr`` that agree best at the curve's peak;
        motion: (N-1, B) and speech: (L, N-1), the standardised signals that were correlated.
    """
    fs = data.fps
    if data.motion is None or data.motion_block != settings.block:
        data.motion = _highpass(mouth_opening_motion(data.frames, settings.block).astype(np.float64), fs, axis=0)
        data.motion_block = settings.block
    motion = data.motion  # (N-1, B)
    env = speech_envelope(data.audio, data.audio_rate)
    speech = _highpass(speech_change(env, data.audio_start, data.frame_times, offsets_s), fs, axis=1)  # (L, N-1)
    windows = analysis_windows(motion.shape[0], fs, settings.window_s, settings.window_hop_s)
    curve = _windowed_curve(motion, speech, windows, settings.top_blocks)
    mz = _zscore(motion, axis=0)
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


def estimate_offset_arrays(data: AVData, settings: SyncSettings | None = None) -> SyncResult:
    """:func:`estimate_av_offset` on decoded material (the benchmark shifts ``data.audio`` and calls this)."""
    s = (settings or SyncSettings()).validate()
    offsets = _offsets(s)
    seconds = data.duration
    fps = round(data.fps, 3) if len(data.frame_times) > 1 else None
    if not data.has_audio_stream:
        return _fail(data.path, s, seconds, f"{data.path}: has no audio stream: there is no sound to sync with", fps=fps)
    if data.audio is None or len(data.audio) < data.audio_rate * 0.5 or float(np.max(np.abs(data.audio))) < 1e-4:
        return _fail(data.path, s, seconds, f"{data.path}: the audio is silent: there is no speech to sync with", fps=fps)
    if seconds < s.min_seconds or len(data.frame_times) < 16:
        return _fail(data.path, s, seconds, f"{data.path}: too short for a sync estimate ({seconds:.2f} s of video; at least {s.min_seconds:g} s needed)", fps=fps)
    if float(data.frames.std(axis=0).max()) < 1.0:
        return _fail(data.path, s, seconds, f"{data.path}: the picture does not move: no face or mouth motion to sync with", fps=fps)
    corr, curve, top, mz, sz = mouth_correlation(data, s, offsets)
    k = int(np.argmax(curve))
    step = s.step_ms / 1000.0
    off = offsets[k] + _refine(curve, k, step)
    whole = _top_block_curve(corr, s.top_blocks)[0]  # (L,) the agreement with one set of blocks for the whole file
    kw_ = int(np.argmax(whole))
    off_whole = offsets[kw_] + _refine(whole, kw_, step)
    conf = _confidence(curve, k, offsets)
    kw = dict(
        fps=fps,
        confidence=round(conf, 3),
        peak_agreement=round(float(curve[k]), 4),
        curve_offsets_ms=[round(float(o) * 1000.0, 3) for o in offsets],
        curve=[round(float(c), 4) for c in curve],
        agreement_per_second=_agreement_per_second(data.frame_times[1:], mz[:, top].mean(axis=1), sz[k], seconds),
    )
    if k in (0, len(curve) - 1):
        return _fail(
            data.path,
            s,
            seconds,
            f"{data.path}: the best agreement lies at the edge of the searched range (+-{s.max_offset_ms:g} ms): the offset "
            "is larger than the range, or the picture's motion does not follow the speech",
            **kw,
        )
    if conf < s.min_confidence:
        return _fail(
            data.path,
            s,
            seconds,
            f"{data.path}: no offset makes the picture's motion follow the speech (confidence {conf:.1f} < {s.min_confidence:g}): "
            "no visible speaking face, or no speech in the sound",
            **kw,
        )
    if s.max_disagreement_ms is not None and abs(off - off_whole) * 1000.0 > s.max_disagreement_ms:
        return _fail(
            data.path,
            s,
            seconds,
            f"{data.path}: the offset is ambiguous: the analysis in {s.window_s:g} s windows finds {off * 1000:+.0f} ms, the "
            f"whole-file one {off_whole * 1000:+.0f} ms (more than {s.max_disagreement_ms:g} ms apart): a moving head, "
            "a small face or motion elsewhere that follows the speech rhythm",
            **kw,
        )
    r = s.max_offset_ms
    conf_r = kw.pop("confidence")
    return SyncResult(data.path, round(off * 1000.0, 1), conf_r, (-r, r), round(seconds, 3), **kw)


def estimate_av_offset(path: str | os.PathLike, settings: SyncSettings | None = None) -> SyncResult:
    """The audio/video offset of a talking-head file (see the module docstring for how).

    Files that cannot be analysed (no audio stream, silent audio, too short, a still picture, no agreement between
    motion and speech) give a result with ``error`` set; files that cannot be read at all raise.

    Raises:
        MediaFileNotFoundError, MediaError, DecodeError, NoVideoStreamError: a missing or unreadable file.
    """
    s = (settings or SyncSettings()).validate()
    data = decode_av(path, width=s.width, audio_rate=s.audio_rate, max_seconds=s.max_seconds)
    return estimate_offset_arrays(data, s)
