"""The material and the signals of the lip-sync estimate (:mod:`thqa.analysis.sync`): decoding a file once
(:func:`decode_av`), the speech envelope and its change per frame, the mouth-opening motion of picture blocks, repeated
frames dropped, and the faces (dlib's HOG detector) and mouth regions they give."""
from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass, field

import av
import cv2
import numpy as np
from scipy import signal

from thqa.errors import DecodeError, DependencyError
from thqa.media.probe import check_file, probe

__all__ = [
    "AVData",
    "Motion",
    "Mouth",
    "decode_av",
    "drop_repeated_frames",
    "face_tracks",
    "mouth_opening_motion",
    "mouth_region",
    "speech_change",
    "speech_envelope",
]

log = logging.getLogger(__name__)


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
    #: width of the displayed picture in the file (px), to give the mouth region in the file's pixels
    source_width: int | None = None
    #: the picture's motion, computed on first use and kept (it does not depend on the sound, so analyses of the same
    #: frames with shifted sound share it; a copy with other frames recomputes it)
    motion: "Motion | None" = field(default=None, repr=False)

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


# ---------------------------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------------------------


def decode_av(
    path: str | os.PathLike, *, width: int = 320, audio_rate: int = 16000, max_seconds: float | None = None
) -> AVData:
    """Decode a file once: grey frames scaled to ``width`` (aspect kept, even height) and mono audio, both on the
    container clock (frame and audio timestamps, so stream start times and variable frame rates are honoured).

    Raises:
        MediaFileNotFoundError, MediaError, DecodeError, NoVideoStreamError: as :func:`thqa.media.decode.read_clips`.
    """
    p = check_file(path)
    info = probe(p)  # typed errors for missing, empty, undecodable and video-less files
    try:
        container = av.open(str(p), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as exc:
        raise DecodeError(f"{p}: cannot be opened ({exc})") from exc
    with container:
        reader = _AVReader(container, info, width=width, audio_rate=audio_rate, max_seconds=max_seconds)
        try:
            reader.run()
        except av.error.FFmpegError as exc:
            if not reader.frames:
                raise DecodeError(f"{p}: decoding failed ({exc})") from exc
            log.warning("%s: decoding stopped early (%s); analysing what was decoded", p, exc)
    if not reader.frames:
        raise DecodeError(f"{p}: no video frame could be decoded")
    ft, fr = _in_time_order(reader.times, reader.frames)
    audio, a_start = _place_audio(reader.chunks, audio_rate)
    src_w = info.height if info.rotation in (90, 270) else info.width
    return AVData(str(p), ft, fr, audio, audio_rate, a_start, reader.astream is not None, source_width=int(src_w))


class _AVReader:
    """The demux loop of :func:`decode_av`: grey frames (``frames``, at ``times``, s) and mono chunks of resampled
    audio (``chunks``: (time of the decoded frame, samples)), up to ``max_seconds`` after the first frame."""

    def __init__(self, container, info, *, width: int, audio_rate: int, max_seconds: float | None) -> None:
        self.container = container
        self.vs = container.streams.video[0]
        self.vs.thread_type = "AUTO"
        self.astream = container.streams.audio[0] if container.streams.audio else None
        w = int(width)
        h = max(2, int(round(info.height * w / max(1, info.width) / 2)) * 2)
        # scale the stored frame, then rotate into the displayed one
        self.size = (h, w) if info.rotation in (90, 270) else (w, h)
        self.rotation = info.rotation
        self.resampler = av.AudioResampler(format="fltp", rate=audio_rate) if self.astream is not None else None
        self.max_seconds = max_seconds
        self.end: float | None = None
        self.started = False
        self.times: list[float] = []
        self.frames: list[np.ndarray] = []
        self.chunks: list[tuple[float, np.ndarray]] = []

    def run(self) -> None:
        streams = [self.vs] + ([self.astream] if self.astream is not None else [])
        for packet in self.container.demux(streams):
            if packet.stream.type == "audio":
                self._audio(packet)
                continue
            self._video(packet)
            if self._done():
                break
        if self.resampler is not None:
            for out in self.resampler.resample(None):
                self.chunks.append((self.chunks[-1][0] if self.chunks else 0.0, out.to_ndarray().mean(axis=0, dtype=np.float32)))

    def _audio(self, packet) -> None:
        for af in packet.decode():
            if af.time is None:
                continue
            for out in self.resampler.resample(af):
                self.chunks.append((float(af.time), out.to_ndarray().mean(axis=0, dtype=np.float32)))

    def _video(self, packet) -> None:
        sw, sh = self.size
        for vf in packet.decode():
            if vf.time is None:
                continue
            t = float(vf.time)
            if not self.started:
                self.started = True
                self.end = None if self.max_seconds is None else t + float(self.max_seconds)
            if self.end is not None and t >= self.end:
                continue
            img = vf.reformat(width=sw, height=sh, format="gray", interpolation="AREA").to_ndarray()
            if self.rotation:
                img = np.rot90(img, k=self.rotation // 90)
            self.times.append(t)
            self.frames.append(np.ascontiguousarray(img))

    def _done(self) -> bool:
        """Enough decoded: frames up to ``end`` and audio 2 s past it (the audio may run ahead of the video)."""
        end, times, chunks = self.end, self.times, self.chunks
        return end is not None and bool(times) and bool(chunks) and chunks[-1][0] > end + 2.0 and times[-1] >= end - 0.5


def _in_time_order(times: list[float], frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(N,) float64 times and (N, H, W) frames sorted by time; of frames with the same timestamp the first is kept."""
    order = np.argsort(np.asarray(times))
    ft = np.asarray(times, dtype=np.float64)[order]
    fr = np.stack([frames[i] for i in order])
    keep = np.concatenate([[True], np.diff(ft) > 1e-6])  # duplicate timestamps: keep the first
    return ft[keep], fr[keep]


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
    x = np.asarray(audio, dtype=np.float64)
    nyq = 0.5 * rate
    sos = signal.butter(4, [_BAND[0] / nyq, min(_BAND[1], 0.95 * nyq) / nyq], btype="band", output="sos")
    y = signal.sosfilt(sos, x)
    hop = int(round(_HOP * rate))
    k = len(y) // hop
    return np.sqrt((y[: k * hop] ** 2).reshape(k, hop).mean(axis=1))


def _highpass(x: np.ndarray, fs: float, axis: int = 0) -> np.ndarray:
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
# the picture: repeated frames, the mouth region, its motion
# ---------------------------------------------------------------------------------------------------------------


def drop_repeated_frames(
    frame_times: np.ndarray, frames: np.ndarray, *, threshold: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop the frames that repeat the previous kept one.

    A frame whose mean absolute grey-level difference (0-255) from the previous *kept* frame is below ``threshold``
    shows no new picture (a 24 fps source stored at 30 fps repeats every 5th frame; a 15 fps render stored at 30 fps
    every other one); the kept frames keep their own timestamps, the time each picture first appeared.

    Args:
        frame_times: (N,) seconds. frames: (N, H, W) uint8. threshold: 0 keeps every frame.
    Returns:
        (M,) times, (M, H, W) frames of the kept ones (the first is always kept), and N - M.
    """
    n = len(frames)
    if threshold <= 0 or n < 2:
        return frame_times, frames, 0
    keep = [0]
    last = frames[0].astype(np.int16)
    for i in range(1, n):
        cur = frames[i].astype(np.int16)
        if float(np.abs(cur - last).mean()) >= threshold:
            keep.append(i)
            last = cur
    idx = np.asarray(keep)
    return frame_times[idx], frames[idx], n - len(idx)


@functools.lru_cache(maxsize=1)
def _face_detector():
    """dlib's HOG frontal-face detector, built once per process.

    dlib loads here, not at the top: only the face locator needs it, and without it the locator 'frame' still works
    (a missing dlib is said as a DependencyError naming that way out)."""
    try:
        import dlib
    except ImportError as exc:
        raise DependencyError(
            "finding the face for lip sync needs dlib (pip install dlib-bin), or SyncSettings(locator='frame') / "
            "`thqa sync --locator frame` to analyse the whole picture without a face detector"
        ) from exc
    return dlib.get_frontal_face_detector()


def face_tracks(
    frames: np.ndarray, frame_times: np.ndarray, *, every_s: float = 0.5, max_frames: int = 20, max_faces: int = 3
) -> tuple[list[np.ndarray], int]:
    """The faces in frames ``every_s`` seconds apart (at most ``max_frames`` of them, spread over the file), by
    dlib's HOG frontal-face detector on the picture upsampled once (faces from ~40 px wide are found; the boxes of
    the picture as it is are coarser, and the mouth region cut from them gave worse estimates: 71 % against 82 %
    within 80 ms on the benchmark's 15 files), grouped into tracks: a box joins the track whose median centre lies
    within half a face width of its own centre.

    Args:
        frames: (N, H, W) uint8 grey. frame_times: (N,) seconds.
    Returns:
        The tracks found in at least 40 % of the frames that show a face, most often found first (at most
        ``max_faces``), each (K, 4) float64 ``[left, top, right, bottom]``; and the number of frames searched.
    """
    detect = _face_detector()
    n = len(frames)
    dt = float(np.median(np.diff(frame_times))) if n > 1 else 1.0
    step = max(1, int(round(every_s / max(dt, 1e-6))))
    idx = np.arange(0, n, step)
    if len(idx) > max_frames:
        idx = np.unique(np.linspace(0, n - 1, max_frames).round().astype(int))
    tracks: list[list[tuple[int, int, int, int]]] = []
    with_face = 0
    for i in idx:
        found = list(detect(np.ascontiguousarray(frames[i]), 1))
        with_face += bool(found)
        for r in found:
            _join(tracks, (r.left(), r.top(), r.right(), r.bottom()))
    kept = [np.asarray(t, dtype=np.float64) for t in sorted(tracks, key=len, reverse=True) if len(t) >= 0.4 * with_face]
    return kept[:max_faces], len(idx)


def _join(tracks: list[list[tuple[int, int, int, int]]], box: tuple[int, int, int, int]) -> None:
    """Put ``box`` in the nearest track whose median centre is within half its median width, else a new one."""
    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
    best, best_d = None, math.inf
    for t in tracks:
        a = np.asarray(t, dtype=np.float64)
        mx, my = np.median(0.5 * (a[:, 0] + a[:, 2])), np.median(0.5 * (a[:, 1] + a[:, 3]))
        d = math.hypot(cx - mx, cy - my)
        if d < 0.5 * float(np.median(a[:, 2] - a[:, 0])) and d < best_d:
            best, best_d = t, d
    if best is None:
        tracks.append([box])
    else:
        best.append(box)


def mouth_region(boxes: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The region that holds the mouth, from face boxes: ``[x0, y0, x1, y1)`` pixels of an ``(H, W)`` picture.

    dlib's box runs from the eyebrows to about the chin; the region takes the box's width and runs from 45 % of its
    height (below the eyes) to 120 % (below the chin), from the median box, widened by how far the face moves (the
    10th-90th percentile range of the boxes' centres), and clipped to the picture.

    Args:
        boxes: (K, 4) ``[left, top, right, bottom]``, K >= 1. shape: (H, W).
    """
    left, top, right, bottom = np.median(boxes, axis=0)
    w, h = right - left, bottom - top
    cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
    spread_x = float(np.percentile(cx, 90) - np.percentile(cx, 10))
    spread_y = float(np.percentile(boxes[:, 1], 90) - np.percentile(boxes[:, 1], 10))
    mid = float(np.median(cx))
    hgt, wid = shape
    x0 = int(max(0, round(mid - 0.5 * w - 0.5 * spread_x)))
    x1 = int(min(wid, round(mid + 0.5 * w + 0.5 * spread_x)))
    y0 = int(max(0, round(top + 0.45 * h - 0.5 * spread_y)))
    y1 = int(min(hgt, round(top + 1.2 * h + 0.5 * spread_y)))
    return x0, y0, x1, y1


def _scaled(frames: np.ndarray, size: tuple[int, int], region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """(N, H, W) -> (N, h, w) with ``size = (w, h)``: each frame (or its ``region``) scaled by area averaging
    (bilinear when enlarging)."""
    x0, y0, x1, y1 = region if region is not None else (0, 0, frames.shape[2], frames.shape[1])
    shrink = (x1 - x0) >= size[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.stack([cv2.resize(np.ascontiguousarray(f[y0:y1, x0:x1]), size, interpolation=interp) for f in frames])


@dataclass
class Mouth:
    """One candidate mouth: ``region`` [x0, y0, x1, y1) of the decoded picture (None: the whole picture) and
    ``blocks`` (M-1, B), the high-passed mouth-opening motion of its blocks at the kept frames."""

    region: tuple[int, int, int, int] | None
    blocks: np.ndarray = field(repr=False)


@dataclass
class Motion:
    """The picture's side of the analysis (see :func:`picture_motion`).

    Attributes:
        times: (M,) seconds of the kept frames. mouths: one per face found (one for locator "frame").
        repeated: frames dropped as repeats. error: why no motion could be measured (no face found, ...).
    """

    key: tuple
    frames: np.ndarray = field(repr=False)  # the frames it was computed from (kept so that ``key``'s id stays theirs)
    times: np.ndarray
    mouths: list[Mouth]
    repeated: int
    error: str | None = None




def _rate(times: np.ndarray) -> float:
    """Frames per second of the (M,) kept frames' times (their mean rate: repeats dropped, so not uniform)."""
    return (len(times) - 1) / max(float(times[-1] - times[0]), 1e-6)


