"""Audio/video offset of a talking head, from the file alone: no trained sync network, nothing downloaded.

How it works (see the README's "Lip sync" section for the measured accuracy):

1. **Decode once** (:func:`decode_av`): every video frame as a grey picture 320 px wide on the container clock
   (``frame.time``, so variable frame rates and stream start times are honoured) and the first audio stream as mono
   16 kHz samples placed on the same clock.
2. **Repeated frames out** (:func:`drop_repeated_frames`): a frame that repeats the previous one (a 24 or 15 fps
   source stored at 30 fps, a render that holds frames) is dropped, so every kept frame is a new picture at the time
   it first appeared. Kept, a repeat reads as "no motion" at its time and twice the motion one frame later, which
   blurs the mouth's timing.
3. **Mouth regions** (:func:`face_tracks`, :func:`mouth_region`): dlib's HOG face detector (built into the
   ``dlib-bin`` wheel: no model file, nothing downloaded) finds the faces every ``detect_every_s`` seconds; for each
   face (up to 3: a side-by-side comparison shows several) the region from the middle of the face to below the
   chin, widened by how much the face moves, is cut out of every frame and scaled to ``mouth_size``, and the face
   whose motion follows the speech most clearly gives the offset. ``locator="frame"`` skips the detector and
   analyses the whole picture.
4. **Motion per block**: the picture is cut into small blocks; a block's motion at frame ``i`` is the mean vertical
   stretch ``dv/dy`` of the dense optical flow (OpenCV DIS) from frame ``i-1`` to ``i``: positive when a mouth opens,
   negative when it closes, blind to the head moving as a whole. Slow changes (below ~1 Hz) are taken out.
5. **Speech signal**: the loudness (RMS) envelope of the speech band (250-3500 Hz), averaged over one
   frame interval and *sampled the way the camera samples the mouth*: the audio counterpart of frame ``i``'s motion
   is ``E(t_i + d) - E(t_{i-1} + d)`` for a candidate offset ``d``, on the frames' own timestamps. Comparing like
   with like (change against change, on the same frame grid) removes the bias that comparing frame differences with
   onset strength has (motion also peaks when the mouth closes, onsets only when the sound starts).
6. **Audio-visual correlation map**: the Pearson correlation of every block's motion with the speech signal, for
   every candidate offset (``-max_offset .. +max_offset`` in ``step_ms`` steps), in windows of ``window_s`` seconds.
   In each window the blocks of the region whose motion follows the sound best - the lips, found again in each
   window so that a moving head is followed - give that window's agreement per offset; the
   windows' agreements are averaged and the offset is the peak, refined below the step by a parabola.
7. **Confidence**: how far the peak stands above the rest of the curve, in robust standard deviations (see
   :class:`SyncResult`). No peak at all (below ``min_confidence``) gives no offset; a weak peak, or windowed and
   whole-file analyses that disagree, gives an offset marked unreliable.

Sign convention: ``offset_ms > 0`` means the sound comes *later* than the lips (a video lead); ``< 0`` means the
sound comes earlier (an audio lead).

Verdict (``in_sync``): an offset is in sync when it lies within the window of detectability of ITU-R BT.1359-1
(1998, "Relative timing of sound and vision for broadcasting"): viewers begin to notice sound *ahead* of the picture
at about 45 ms and sound *behind* it at about 125 ms (its "+45 ms / -125 ms", where BT.1359 counts sound ahead as
positive - the opposite sign of ``offset_ms``). In thqa's sign: in sync when ``-45 <= offset_ms <= +125``
(:data:`IN_SYNC_WINDOW_MS` = (lead, lag) = (45, 125); ``SyncSettings.in_sync_window_ms``, ``--sync-window``). The
recommendation's wider *acceptability* thresholds are 90 ms ahead / 185 ms behind (``--sync-window 90,185``). The
verdict is as good as the offset: read it with ``reliable``.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import dataclasses
from dataclasses import asdict, dataclass, field

import numpy as np

from thqa.errors import ConfigError, DecodeError, DependencyError, MediaError

__all__ = [
    "AVData",
    "SyncResult",
    "SyncSettings",
    "analysis_windows",
    "decode_av",
    "drop_repeated_frames",
    "estimate_av_offset",
    "estimate_offset_arrays",
    "face_tracks",
    "mouth_region",
]

log = logging.getLogger(__name__)


#: the ways :class:`SyncSettings` can find the mouth
LOCATORS = ("face", "frame")
#: (lead, lag) in ms: the most the sound may come before (lead) and after (lag) the lips to be in sync - ITU-R
#: BT.1359-1's threshold of detectability (+45 ms sound ahead, -125 ms sound behind, in its sign); see the module doc
IN_SYNC_WINDOW_MS: tuple[float, float] = (45.0, 125.0)


def in_sync(offset_ms: float | None, window_ms: tuple[float, float] = IN_SYNC_WINDOW_MS) -> bool | None:
    """Whether an offset (``> 0``: sound later than the lips) lies within ``window_ms`` = (lead, lag):
    ``-lead <= offset_ms <= lag``. None when there is no offset."""
    if offset_ms is None:
        return None
    lead, lag = window_ms
    return bool(-lead <= offset_ms <= lag)


#: the widest search asked for (ms): a minute either way is far beyond any lip-sync error; inf or more is refused,
#: not clamped (a file too short for the range asked gets a narrower one, reported in ``range_ms``)
MAX_OFFSET_MS = 60_000.0


@dataclass(frozen=True)
class SyncSettings:
    """Settings of :func:`estimate_av_offset` (the defaults are the benchmarked ones)."""

    max_offset_ms: float = 1000.0  #: search -max_offset .. +max_offset
    #: a shorter file is searched only as far as leaves this many seconds of picture and sound overlapping (a 2 s clip
    #: shifted by 1 s keeps 1 s of overlap, where chance agreement wins); the searched range is in the result
    min_overlap_s: float = 1.5
    step_ms: float = 5.0  #: spacing of the candidate offsets (the peak is refined below it)
    max_seconds: float | None = 30.0  #: analyse at most this many seconds from the start (None: all)
    width: int = 320  #: frames are decoded at this width (aspect kept) in grey: the face detector's picture
    #: how the mouth is found: "face" (dlib's HOG face detector; a file without a detectable face is an error) or
    #: "frame" (no detector: the blocks of the whole picture, scaled to ``frame_width``, that follow the sound best)
    locator: str = "face"
    mouth_size: tuple[int, int] = (96, 72)  #: (width, height) the mouth region is scaled to ("face")
    frame_width: int = 192  #: the whole picture is analysed at this width ("frame")
    detect_every_s: float = 0.5  #: seconds between the frames the face detector looks at
    max_detections: int = 20  #: at most this many frames are searched for a face (spread over the file)
    #: a frame whose mean absolute grey-level difference (0-255) from the previous kept frame is below this repeats
    #: it and is dropped (0: keep every frame)
    repeat_threshold: float = 0.2
    block: int = 8  #: block size in pixels of the analysed picture
    top_blocks: int = 4  #: blocks pooled into the agreement at each offset (in each window)
    #: the agreement curve is the mean of the curves of windows this long (s), each with its own best blocks, so
    #: that a mouth that moves across the picture (head motion) is followed; None: one window over the whole file
    window_s: float | None = 4.0
    window_hop_s: float = 1.0  #: spacing of the windows' starts (s)
    #: the offset is marked unreliable (ambiguous) when the windowed estimate and the whole-file one (one set of best
    #: blocks for the whole file) differ by more than this (ms); None: never
    max_disagreement_ms: float | None = 80.0
    audio_rate: int = 16000
    min_seconds: float = 1.5  #: shorter files are refused
    #: below this confidence no offset is reported (an error: no peak stands out of the curve at all)
    min_confidence: float = 2.0
    #: below this confidence the offset is reported but marked unreliable (a weak peak)
    weak_confidence: float = 3.0
    #: (lead, lag) ms: the sound may come this much before / after the lips and be ``in_sync`` (:data:`IN_SYNC_WINDOW_MS`)
    in_sync_window_ms: tuple[float, float] = IN_SYNC_WINDOW_MS

    def validate(self) -> "SyncSettings":
        if not (0 < self.max_offset_ms <= MAX_OFFSET_MS and 0 < self.step_ms <= 100):
            raise ConfigError(f"max_offset_ms must be in (0, {MAX_OFFSET_MS:g}] and step_ms in (0, 100], got {self.max_offset_ms}, {self.step_ms}")
        if self.width < 32 or self.frame_width < 32 or self.block < 2 or self.top_blocks < 1:
            raise ConfigError("width and frame_width must be >= 32, block >= 2 and top_blocks >= 1")
        if self.locator not in LOCATORS:
            raise ConfigError(f"locator must be one of {', '.join(LOCATORS)}, got {self.locator!r}")
        mw, mh = self.mouth_size
        if min(mw, mh) < 4 * self.block:
            raise ConfigError(f"mouth_size must be at least 4 blocks ({4 * self.block} px) each way, got {self.mouth_size}")
        if not (self.detect_every_s > 0 and self.max_detections >= 1 and self.repeat_threshold >= 0):
            raise ConfigError("detect_every_s must be > 0, max_detections >= 1 and repeat_threshold >= 0")
        if not self.weak_confidence >= self.min_confidence:
            raise ConfigError(f"weak_confidence ({self.weak_confidence}) must be >= min_confidence ({self.min_confidence})")
        if not self.min_overlap_s >= 0:
            raise ConfigError(f"min_overlap_s must be >= 0, got {self.min_overlap_s}")
        if self.max_disagreement_ms is not None and not self.max_disagreement_ms >= 0:
            raise ConfigError(f"max_disagreement_ms must be None or >= 0, got {self.max_disagreement_ms}")
        if self.window_s is not None and not (self.window_s >= 1.0 and self.window_hop_s > 0):
            raise ConfigError(f"window_s must be None or >= 1 s and window_hop_s > 0, got {self.window_s}, {self.window_hop_s}")
        if self.max_seconds is not None and self.max_seconds < self.min_seconds:
            raise ConfigError(f"max_seconds must be at least min_seconds ({self.min_seconds})")
        w = self.in_sync_window_ms
        if not (len(w) == 2 and all(math.isfinite(x) and 0 <= x <= 10000 for x in w)):
            raise ConfigError(f"in_sync_window_ms must be two numbers of ms (lead, lag) from 0 to 10000, got {w}")
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


@dataclass
class SyncResult:
    """The audio/video offset of one file.

    ``offset_ms`` > 0: the sound comes later than the lips; < 0: earlier. None when ``error`` says why the file
    could not be analysed (no audio stream, silent audio, too short, a still picture, no face found, no peak at all,
    or the peak at the edge of the searched range). An offset that is reported but weak or ambiguous has
    ``reliable`` False and a ``note`` (see :class:`SyncSettings`).

    ``confidence`` is how far the best offset's agreement stands above the agreement of the other candidate
    offsets, in robust standard deviations (median and MAD of the curve away from the peak): below 2 no peak stands
    out (silence, music, a speaker off screen or a still face: no offset is reported), 2-3 a weak peak (reported,
    unreliable), 3-6 a usable one, above 6 a clear one. On the real talking heads of the benchmark the unshifted
    files score 2.4-11; the one reported off its reference (an EMO render, +126 ms) 3.4: a weak peak deserves a
    look at the ``curve`` (:func:`thqa.sync_plot`).

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
    locator: str | None = None  #: how the mouth was found ("face" or "frame", see :class:`SyncSettings`)
    #: [x0, y0, x1, y1] the analysed mouth region in the file's displayed pixels (locator "face")
    mouth_region: list[int] | None = None
    repeated_frames: int | None = None  #: frames dropped as repeats of the previous one (see :func:`drop_repeated_frames`)
    #: faces found and analysed (locator "face"); with several, the one whose motion follows the speech most
    #: clearly gives the offset and ``mouth_region``
    faces: int | None = None
    #: False when the offset is reported but weak (confidence below ``weak_confidence``) or ambiguous (windowed and
    #: whole-file analyses more than ``max_disagreement_ms`` apart): treat it as a guess; ``note`` says which
    reliable: bool | None = None
    note: str | None = None
    #: the offset lies within ``SyncSettings.in_sync_window_ms`` (see :func:`in_sync`); None without an offset
    in_sync: bool | None = None

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
    path: str | os.PathLike, *, width: int = 320, audio_rate: int = 16000, max_seconds: float | None = None
) -> AVData:
    """Decode a file once: grey frames scaled to ``width`` (aspect kept, even height) and mono audio, both on the
    container clock (frame and audio timestamps, so stream start times and variable frame rates are honoured).

    Raises:
        MediaFileNotFoundError, MediaError, DecodeError, NoVideoStreamError: as :func:`thqa.media.decode.read_clips`.
    """
    import av

    from thqa.media.probe import check_file, probe

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
    src_w = info.height if info.rotation in (90, 270) else info.width
    return AVData(str(p), ft, fr, audio, audio_rate, a_start, astream is not None, source_width=int(src_w))


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
    import cv2

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


def _rate(times: np.ndarray) -> float:
    """Frames per second of the (M,) kept frames' times (their mean rate: repeats dropped, so not uniform)."""
    return (len(times) - 1) / max(float(times[-1] - times[0]), 1e-6)


def _blocks_motion(picture: np.ndarray, times: np.ndarray, block: int) -> np.ndarray:
    """(M, h, w) frames at (M,) times -> (M-1, B) high-passed mouth-opening motion of the blocks."""
    fs = _rate(times)
    return _highpass(mouth_opening_motion(picture, block).astype(np.float64), fs, axis=0)


# ---------------------------------------------------------------------------------------------------------------
# the estimate
# ---------------------------------------------------------------------------------------------------------------


def _searched(settings: SyncSettings, seconds: float) -> SyncSettings:
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


def _unanalysable(data: AVData, s: SyncSettings) -> str | None:
    """Why the file cannot be analysed before any motion is measured (None: it can)."""
    seconds = data.duration
    if not data.has_audio_stream:
        return f"{data.path}: has no audio stream: there is no sound to sync with"
    if data.audio is None or len(data.audio) < data.audio_rate * 0.5 or float(np.max(np.abs(data.audio))) < 1e-4:
        return f"{data.path}: the audio is silent: there is no speech to sync with"
    if seconds < s.min_seconds or len(data.frame_times) < 16:
        return f"{data.path}: too short for a sync estimate ({seconds:.2f} s of video; at least {s.min_seconds:g} s needed)"
    some = data.frames[:: max(1, len(data.frames) // 60)]  # a still picture shows in any 60 frames; all would cost ~0.3 s
    if float(some.std(axis=0).max()) < 1.0:
        return f"{data.path}: the picture does not move: no face or mouth motion to sync with"
    return None


def _region_in_file(data: AVData, region: tuple[int, int, int, int] | None) -> list[int] | None:
    if region is None:
        return None
    scale = (data.source_width or data.frames.shape[2]) / data.frames.shape[2]
    return [int(round(v * scale)) for v in region]


def _refusal(data: AVData, s: SyncSettings, k: int, n: int, conf: float) -> str | None:
    """Why the peak at ``k`` of an ``n``-point curve gives no offset at all (None: it gives one)."""
    if k in (0, n - 1):
        return (
            f"{data.path}: the best agreement lies at the edge of the searched range (+-{s.max_offset_ms:g} ms): the offset "
            "is larger than the range, or the picture's motion does not follow the speech"
        )
    if conf < s.min_confidence:
        return (
            f"{data.path}: no offset makes the picture's motion follow the speech (confidence {conf:.1f} < {s.min_confidence:g}): "
            "no visible speaking face, or no speech in the sound"
        )
    return None


def _doubt(s: SyncSettings, conf: float, off: float, off_whole: float) -> str | None:
    """Why a reported offset is unreliable (None: it is not)."""
    notes = []
    if conf < s.weak_confidence:
        notes.append(f"weak peak (confidence {conf:.1f} < {s.weak_confidence:g})")
    if s.max_disagreement_ms is not None and abs(off - off_whole) * 1000.0 > s.max_disagreement_ms:
        notes.append(
            f"ambiguous: the analysis in {s.window_s:g} s windows finds {off * 1000:+.0f} ms, the whole-file one "
            f"{off_whole * 1000:+.0f} ms (more than {s.max_disagreement_ms:g} ms apart)"
        )
    return "; ".join(notes) + ": treat the offset as a guess (a small or still face, music, or other motion with the speech rhythm)" if notes else None


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


def estimate_offset_arrays(data: AVData, settings: SyncSettings | None = None) -> SyncResult:
    """:func:`estimate_av_offset` on decoded material (the benchmark shifts ``data.audio`` and calls this)."""
    s = _searched(settings or SyncSettings(), data.duration)
    offsets = _offsets(s)
    seconds = data.duration
    fps = round(data.fps, 3) if len(data.frame_times) > 1 else None
    why = _unanalysable(data, s)
    if why:
        return _fail(data.path, s, seconds, why, fps=fps, locator=s.locator)
    motion = picture_motion(data, s)
    where = dict(fps=fps, locator=s.locator, repeated_frames=motion.repeated, faces=len(motion.mouths) if s.locator == "face" else None)
    if motion.error:
        return _fail(data.path, s, seconds, motion.error, **where)
    speech = speech_signal(data, motion.times, offsets)
    mouth, (corr, curve, top, mz, sz), conf = _best_mouth(motion, speech, s, offsets)
    where["mouth_region"] = _region_in_file(data, mouth.region)
    step = s.step_ms / 1000.0
    k, off = _peak(curve, offsets, step)
    off_whole = _peak(_top_block_curve(corr, s.top_blocks)[0], offsets, step)[1]  # one set of blocks for the whole file
    kw = dict(
        where,
        confidence=round(conf, 3),
        peak_agreement=round(float(curve[k]), 4),
        curve_offsets_ms=[round(float(o) * 1000.0, 3) for o in offsets],
        curve=[round(float(c), 4) for c in curve],
        agreement_per_second=_agreement_per_second(motion.times[1:], mz[:, top].mean(axis=1), sz[k], seconds),
    )
    why = _refusal(data, s, k, len(curve), conf)
    if why:
        return _fail(data.path, s, seconds, why, **kw)
    note = _doubt(s, conf, off, off_whole)
    r = s.max_offset_ms
    conf_r = kw.pop("confidence")
    off_ms = round(off * 1000.0, 1)
    return SyncResult(data.path, off_ms, conf_r, (-r, r), round(seconds, 3), reliable=note is None, note=note,
                      in_sync=in_sync(off_ms, s.in_sync_window_ms), **kw)


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
