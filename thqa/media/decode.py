"""Decoding with PyAV: video frames and audio on the container's clock, reading only the seconds that are needed.

The central function is :func:`read_clips`: given the seconds that the sampled clips start at, it returns per clip

* the first ``n_frames`` frames whose timestamp is at or after the clip's start, resized to ``frame_size`` (the
  temporal branch's input), padded with the last frame when the video ends;
* the clip's first frame at its native size (the spatial branch's input);
* mono float32 audio covering ``[start - context, start + 1 s + context)`` on the same clock as the frames, zeros
  where the file has no sound.

Exactness
---------
A clip's frames and sound do not depend on which other clips are read with it: they are what a plain decode of the
whole file from its start gives (``tests/oracle.py``; ``tests/test_exact_decoding.py`` compares them pixel for pixel
and sample for sample on real and made files). Two rules make it so:

* **Video** is read in passes (:class:`_VideoPass`). A pass starts with a seek, which flushes the decoder, to the
  keyframe before a clip, and from then on decodes every packet the demuxer yields, in order: a decoder is never fed a
  packet stream with holes. The next clip either continues the pass (when it is near, or no keyframe interval away)
  or starts a new pass with a new seek. A seek that lands after the clip's start makes the pass start from the top.
  Times are on the container clock, relative to the stream's first frame, which may be negative (a file made with
  ``-itsoffset -2``): no seek goes before it, and the top is a seek checked by its first frame, else a fresh opening.
* **Sound** is decoded in its own pass from the start of the file up to the last clip (audio decoders carry state from
  packet to packet: the overlap of MDCT frames, AAC's noise substitution), then each clip's span is resampled with
  scipy's polyphase filter on fixed grids (native sample ``m`` at ``m / native_rate`` s, output sample ``j`` at
  ``j / rate`` s), from a span that starts on both grids and leaves the filter's length of margin: the samples are
  those of resampling the whole track at once.

Memory is bounded by the clips asked for, not by the file's duration: a 10-minute file costs about what a
6-second one does (its sound is decoded, not kept, up to the last clip: 0.4 s of CPU for a 600 s file here).
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from thqa.errors import ConfigError, DecodeError, MediaError, MediaFileNotFoundError, NoVideoStreamError

__all__ = [
    "MediaInfo",
    "ClipData",
    "VideoClips",
    "probe",
    "read_clips",
    "read_audio",
    "iter_frames",
    "check_file",
    "set_decode_threads",
]

log = logging.getLogger(__name__)

#: A clip that starts less than this (seconds) after the current position is reached by decoding on, never by a seek.
_SEEK_GAP_S = 2.5
#: A pass for a clip seeks to the keyframe at or before this many seconds ahead of the clip's start (room for demuxers
#: whose index is approximate, and for the leading frames of an open GOP, which precede their keyframe).
_SEEK_MARGIN_S = 0.5


_decode_threads = 0  # FFmpeg's choice (one per core); worker processes set 1


def set_decode_threads(n: int) -> None:
    """Threads per video decoder and per frame scaler: 0 lets FFmpeg choose (a thread per core), 1 suits one
    process per core (FFmpeg's own threads would compete with the other processes: measured, the scaler's
    automatic threads cost 1.6x the CPU time of one thread on 2 cores)."""
    global _decode_threads
    _decode_threads = max(0, int(n))


def _av():
    import av  # local import keeps `import thqa` light

    return av


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds, read from its headers (no decoding)."""

    path: Path
    width: int  #: displayed width (after rotation)
    height: int  #: displayed height (after rotation)
    fps: float  #: average frame rate (frames per second)
    duration: float  #: video duration in seconds
    start_time: float  #: timestamp of the first video frame, seconds
    rotation: int  #: degrees counter-clockwise applied for display (0, 90, 180, 270)
    video_codec: str
    has_audio: bool
    audio_rate: int | None
    audio_channels: int | None
    audio_codec: str | None

    @property
    def n_seconds(self) -> int:
        """Whole seconds of video (at least 1)."""
        from thqa.media.sampling import whole_seconds

        return whole_seconds(self.duration)


@dataclass
class ClipData:
    """Decoded material of one clip."""

    second: int  #: which second of the video the clip starts at
    start: float  #: timestamp (s) of the clip's first frame
    frames: np.ndarray  #: (n_frames, S, S, 3) uint8 RGB, resized to frame_size x frame_size
    timestamps: np.ndarray  #: (n_frames,) float64 seconds; padded frames repeat the last timestamp
    first_frame: np.ndarray  #: (H, W, 3) uint8 RGB at the native (displayed) size
    audio: np.ndarray  #: (round((1 + 2*context) * rate),) float32 mono, starting at start - context
    n_real_frames: int  #: frames actually decoded before padding


@dataclass
class VideoClips:
    """The clips of one file, in the order they were asked for."""

    info: MediaInfo
    clips: list[ClipData]
    audio_rate: int
    audio_context: float
    has_audio: bool
    warnings: list[str] = field(default_factory=list)


def check_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path after checking it is an existing, non-empty regular file.

    Raises:
        MediaFileNotFoundError: missing file, or a directory.
        MediaError: a zero-byte file.
    """
    p = Path(path)
    if not p.exists():
        raise MediaFileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise MediaFileNotFoundError(f"{p}: is a directory, not a media file")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: the file is empty (0 bytes)")
    return p


def _open(path: Path):
    av = _av()
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        raise DecodeError(
            f"{path}: not a media file FFmpeg can read, or truncated/corrupt before its index ({exc.strerror or exc})"
        ) from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise DecodeError(f"{path}: cannot be opened ({exc})") from exc


def _rotation_of(stream, first_frame=None) -> int:
    rot = 0
    if first_frame is not None:
        rot = getattr(first_frame, "rotation", 0) or 0
    return int(round(rot / 90.0)) * 90 % 360


_IMAGE_CODECS = ("png", "mjpeg", "bmp", "gif", "webp", "tiff", "jpeg2000")


def _video_stream(container, path: Path):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise NoVideoStreamError(f"{path}: has no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    try:
        stream.thread_type = "AUTO"  # frame threads; must be set before the codec opens
        stream.thread_count = _decode_threads
    except RuntimeError:
        pass
    fmt = container.format.name or ""
    if "image2" in fmt or fmt.endswith("_pipe"):  # FFmpeg's image demuxers: a picture, whatever the extension
        raise NoVideoStreamError(f"{path}: is a still image ({stream.codec_context.name}), not a video")
    if stream.codec_context.name in _IMAGE_CODECS:  # MJPEG/PNG video exists (avi, mov, mkv): judge by duration
        frames = stream.frames or 0
        dur = float(stream.duration * stream.time_base) if stream.duration else float(container.duration or 0) / 1e6
        if frames <= 1 and dur < 0.05:
            raise NoVideoStreamError(f"{path}: is a still image ({stream.codec_context.name}), not a video")
    return stream


def probe(path: str | os.PathLike) -> MediaInfo:
    """Read a file's stream facts without decoding more than its first frame.

    Raises:
        MediaFileNotFoundError, MediaError, DecodeError, NoVideoStreamError: as :func:`read_clips`.
    """
    p = check_file(path)
    with _open(p) as container:
        return _probe_open(container, p)


def _probe_open(container, p: Path) -> MediaInfo:
    av = _av()
    vs = _video_stream(container, p)
    tb = float(vs.time_base) if vs.time_base else None
    start = float(vs.start_time * vs.time_base) if (vs.start_time is not None and tb) else 0.0
    duration = None
    if vs.duration is not None and tb:
        duration = float(vs.duration * vs.time_base)
    if (duration is None or duration <= 0) and container.duration:
        duration = float(container.duration) / av.time_base - max(0.0, start)
    fps = float(vs.average_rate) if vs.average_rate else (float(vs.guessed_rate) if vs.guessed_rate else 0.0)
    first = None
    try:
        for first in container.decode(vs):
            break
    except av.error.FFmpegError as exc:
        raise DecodeError(f"{p}: the video stream cannot be decoded ({exc})") from exc
    if first is None:
        raise DecodeError(f"{p}: the video stream holds no decodable frame (truncated or empty)")
    if duration is None or duration <= 0 or not math.isfinite(duration):
        duration = _scan_duration(container, vs, p)
    if fps <= 0 or not math.isfinite(fps):
        fps = 25.0
    rot = _rotation_of(vs, first)
    w, h = first.width, first.height
    if rot in (90, 270):
        w, h = h, w
    audio = container.streams.audio[0] if container.streams.audio else None
    return MediaInfo(
        path=p,
        width=w,
        height=h,
        fps=fps,
        duration=float(duration),
        start_time=start,
        rotation=rot,
        video_codec=vs.codec_context.name,
        has_audio=audio is not None,
        audio_rate=(audio.rate if audio is not None else None),
        audio_channels=(audio.channels if audio is not None else None),
        audio_codec=(audio.codec_context.name if audio is not None else None),
    )


def _scan_duration(container, vs, p: Path) -> float:
    """Duration from the packets' timestamps (demux only), for files whose headers do not say it."""
    container.seek(0)
    last = None
    first = None
    for packet in container.demux(vs):
        if packet.pts is None:
            continue
        t = float(packet.pts * vs.time_base)
        dur = float((packet.duration or 0) * vs.time_base)
        first = t if first is None else min(first, t)
        last = t + dur if last is None else max(last, t + dur)
    if last is None:
        raise DecodeError(f"{p}: the video stream has no timestamped packets")
    return last - (first or 0.0)


def _reformatter():
    """A scaler that keeps its swscale context between frames (6x faster than a new one per frame)."""
    from av.video.reformatter import VideoReformatter

    return VideoReformatter()


_scaler_has_threads: bool | None = None


def _scaler_threads() -> dict:
    """``threads=`` for VideoReformatter.reformat where PyAV has it (17+, whose default is a thread per core)."""
    global _scaler_has_threads
    if _scaler_has_threads is None:
        major = _av().__version__.split(".")[0]
        _scaler_has_threads = major.isdigit() and int(major) >= 17
    return {"threads": _decode_threads} if _scaler_has_threads else {}


def _to_rgb(frame, size: int | None, rotation: int, reformatter=None) -> np.ndarray:
    rf = reformatter if reformatter is not None else _reformatter()
    if size is None:
        img = rf.reformat(frame, format="rgb24", **_scaler_threads()).to_ndarray()
    else:
        img = rf.reformat(
            frame, width=size, height=size, format="rgb24", interpolation="BILINEAR", **_scaler_threads()
        ).to_ndarray()
    if rotation:
        img = np.ascontiguousarray(np.rot90(img, k=rotation // 90))
    return img


class _Deadline:
    """``timeout`` seconds from now; :meth:`check` raises a DecodeError naming the file once they have passed."""

    def __init__(self, path: Path, timeout: float | None):
        self.path, self.timeout = path, timeout
        self.at = None if timeout is None else time.monotonic() + float(timeout)

    def check(self) -> None:
        if self.at is not None and time.monotonic() > self.at:
            raise DecodeError(f"{self.path}: decoding took longer than {self.timeout:g} s; given up")


# -- the plan: which seconds, where each clip starts, where a pass that serves it seeks to ----------------------------
@dataclass
class _ClipFrames:
    """One clip's frames as they are collected: the first ``n`` frames whose timestamp is at or after ``start``."""

    second: int
    start: float  #: t0 + second, on the container clock
    n: int
    frames: list[np.ndarray] = field(default_factory=list)  #: resized frames
    stamps: list[float] = field(default_factory=list)
    first: np.ndarray | None = None  #: the first frame at its native size
    n_real: int = 0

    @property
    def full(self) -> bool:
        return len(self.frames) >= self.n

    def wants(self, t: float) -> bool:
        return not self.full and t >= self.start - 1e-4

    def add(self, t: float, small: np.ndarray, native: Callable[[], np.ndarray]) -> None:
        if not self.frames:
            self.first = native()
        self.frames.append(small)
        self.stamps.append(t)

    def pad(self) -> None:
        """Repeat the last frame up to ``n`` (the video ended, or broke, before the clip did)."""
        self.n_real = len(self.frames)
        while len(self.frames) < self.n:
            self.frames.append(self.frames[-1])
            self.stamps.append(self.stamps[-1])


def _plan(seconds: Sequence[int], t0: float, n_frames: int) -> list[_ClipFrames]:
    """The distinct seconds in time order, each with its start on the container clock (``t0`` = the first frame's
    timestamp). Whether a clip is reached by decoding on or by a seek to :func:`_seek_target` is decided when the
    pass gets there (:meth:`_VideoPass.worth_seeking`), since that needs the keyframe interval seen so far."""
    return [_ClipFrames(second=s, start=t0 + s, n=n_frames) for s in sorted(set(seconds))]


def _seek_target(start: float, t0: float) -> float | None:
    """Where a pass that must serve a clip starting at ``start`` seeks to (the keyframe at or before it), or None
    for the top of the file: a clip within the margin of the stream's first frame ``t0`` (which may be negative)."""
    target = start - _SEEK_MARGIN_S
    return None if target <= t0 else target


# -- decoding the video: passes that never skip a packet ---------------------------------------------------------------
def _seek(container, t: float, path: Path) -> bool:
    """Seek to ``t`` s (container clock); False when the demuxer refuses (the caller then reads from the top)."""
    av = _av()
    try:
        container.seek(int(t * av.time_base), backward=True, any_frame=False)  # also flushes the decoders
    except av.error.FFmpegError as exc:
        log.debug("%s: seek to %.2f s failed (%s); decoding from the start", path, t, exc)
        return False
    return True


class _VideoPass:
    """The video stream's frames in presentation order, from one seek on.

    **The rule that keeps frames exact:** after the seek (which flushes the decoder), every packet the demuxer yields
    is decoded, in order, so the decoder never predicts a frame from references it did not see. A reader takes the
    next frame of a pass or starts a new pass with a new seek; it never skips packets.

    A pass that must serve a clip starting at ``start`` checks that the seek landed at or before it (some demuxers'
    indexes are approximate); if it landed later, the pass starts again from the beginning of the file.
    """

    def __init__(self, container, stream, start: float, path: Path, t0: float = 0.0):
        self.container, self.stream, self.start, self.path, self.t0 = container, stream, start, path, t0
        self.seek_t = _seek_target(start, t0)  #: None: from the top of the file
        self.fresh = False  #: the top is a fresh opening of the file (a seek to the top landed later)
        self._own = None  #: that opening
        self._begin()

    def _begin(self) -> None:
        self.close()
        container, stream = self.container, self.stream
        if self.seek_t is not None and not _seek(container, self.seek_t, self.path):
            self.seek_t = None
        # the top: a seek to 0, or to the stream's start when that is negative; where that lands late (Matroska
        # blocks before their cluster's time cannot be sought) or fails, a fresh opening of the file
        if self.seek_t is None and not self.fresh and not _seek(container, min(0.0, self.t0), self.path):
            self.fresh = True
        if self.fresh:
            self._own = container = _open(self.path)
            stream = _video_stream(container, self.path)
        self.keyframes: list[float] = []  #: keyframe times seen in this pass
        self.last: tuple[float, object] | None = None  #: (time, frame) of the last frame taken
        self._frames = self._decode(container, stream)

    def _restart(self, why: str) -> tuple[float, object] | None:
        """The first frame told that the pass did not start where it should have: start it again from the top (a
        seek to it first, then a fresh opening of the file)."""
        log.debug("%s: %s; decoding from the start", self.path, why)
        if self.seek_t is not None:
            self.seek_t = None
        else:
            self.fresh = True
        self._begin()
        return self.next()

    def _decode(self, container, stream) -> Iterator:
        for packet in container.demux(stream):
            if packet.is_keyframe and packet.pts is not None:
                self.keyframes.append(float(packet.pts * packet.time_base))
            yield from packet.decode()

    def close(self) -> None:
        """Let go of this pass's demuxing (before another pass seeks, or the file closes)."""
        frames = getattr(self, "_frames", None)
        if frames is not None:
            frames.close()
            self._frames = None
        if getattr(self, "_own", None) is not None:
            self._own.close()
            self._own = None

    def next(self) -> tuple[float, object] | None:
        """The next frame as ``(time, frame)``, or None at the end of the stream (FFmpeg errors propagate)."""
        frame = next(self._frames, None)
        if frame is None:
            if self.last is None and not self.fresh:  # a seek that landed past the last frame
                return self._restart(f"a seek to {self.seek_t or 0.0:.2f} s found no frame")
            return None
        t = float(frame.time) if frame.time is not None else (self.last[0] if self.last else self.t0)
        if self.last is None and not self.fresh and t > (self.t0 if self.seek_t is None else self.start) + 1e-4:
            return self._restart(f"a seek to {self.seek_t or 0.0:.2f} s landed at {t:.2f} s, after {self.start:.2f} s")
        self.last = (t, frame)
        return self.last

    def worth_seeking(self, start: float) -> bool:
        """Whether a new pass for a clip at ``start`` skips decoding, rather than this pass decoding on to it."""
        position = self.last[0] if self.last else (self.t0 if self.seek_t is None else self.seek_t)
        target = _seek_target(start, self.t0)
        return target is not None and _worth_seeking(position, target, self.keyframes)


def _fill(vpass: _VideoPass, todo: list[_ClipFrames], scale: Callable, deadline: _Deadline) -> bool:
    """Take frames from ``vpass`` until the earliest clip in ``todo`` is full, giving each frame to every clip that
    wants it. Returns True when the stream ended first."""
    head = todo[0]
    while not head.full:
        deadline.check()
        got = vpass.next()
        if got is None:
            return True
        t, frame = got
        takers = [c for c in todo if c.wants(t)]
        if takers:
            small = scale(frame, small=True)
            for c in takers:
                c.add(t, small, lambda: scale(frame, small=False))
    return False


def _read_video(container, stream, clips: list[_ClipFrames], scale: Callable, deadline: _Deadline, path: Path, warnings: list[str], t0: float = 0.0) -> None:
    """Fill every clip (in place): the earliest unfinished clip decides whether the current pass decodes on to it or
    a new pass seeks there. A pass that breaks (corrupt data) pads the clips it started; later clips get a new pass."""
    av = _av()
    vpass: _VideoPass | None = None
    last: tuple[float, object] | None = None
    while todo := [c for c in clips if not c.full]:
        head = todo[0]
        try:
            if vpass is None or (not head.frames and vpass.worth_seeking(head.start)):
                if vpass is not None:
                    vpass.close()
                vpass = _VideoPass(container, stream, head.start, path, t0)
            ended = _fill(vpass, todo, scale, deadline)
        except av.error.FFmpegError as exc:
            if not head.frames:
                raise DecodeError(f"{path}: decoding failed near {head.start:.2f} s ({exc})") from exc
            _warn(warnings, f"{path}: decoding stopped early near {vpass.last[0] if vpass and vpass.last else head.start:.2f} s ({exc}); the clip is padded")
            for c in todo:
                if c.frames:
                    c.pad()
            if vpass is not None:
                vpass.close()
            vpass = None
            continue
        last = vpass.last or last
        if ended:
            _finish_at_end(todo, last, scale, path, warnings)
            break
    if vpass is not None:
        vpass.close()


def _finish_at_end(todo: list[_ClipFrames], last, scale: Callable, path: Path, warnings: list[str]) -> None:
    """The stream ended: pad the clips it reached; a clip starting after the last frame gets that frame."""
    if last is None:
        raise DecodeError(f"{path}: no video frame could be decoded")
    t, frame = last
    for c in todo:
        if not c.frames:
            _warn(warnings, f"{path}: no frame at or after {c.start:.2f} s (the headers overstate the duration); using the last frame")
            c.add(t, scale(frame, small=True), lambda: scale(frame, small=False))
        c.pad()


def _warn(warnings: list[str], msg: str) -> None:
    log.warning(msg)
    warnings.append(msg)


# -- decoding the sound: from the start of the file, resampled on a fixed grid -------------------------------------------
_SAMPLE_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0, "flt": 1.0, "dbl": 1.0}


def _mono(frame) -> np.ndarray:
    """(samples,) float32: the mean of the frame's channels (FFmpeg's downmix would weight stereo by 0.707, so the
    same sound stored as stereo would come out 3 dB louder than stored as mono)."""
    a = frame.to_ndarray()
    if not frame.format.is_planar:
        a = a.reshape(-1, len(frame.layout.channels)).T
    base = frame.format.name.rstrip("p")
    a = a.astype(np.float32)
    if base == "u8":
        a -= 128.0
    scale = _SAMPLE_SCALE.get(base, 1.0)
    if scale != 1.0:
        a *= np.float32(1.0 / scale)
    return a.mean(axis=0, dtype=np.float32)


class _Sound:
    """Mono sound at the stream's native rate, kept only where it overlaps the wanted native spans.

    Sample ``m`` belongs at ``m / rate`` s on the container clock: a decoded frame goes where its timestamp says when it
    is the first, or when the timestamp disagrees with the end of the previous frame by more than 20 ms (a gap or an
    overlap in the stream); otherwise it follows the previous frame (timestamps rounded to ms in some containers).
    """

    def __init__(self, rate: int, spans: list[tuple[int, int | None]]):
        self.rate, self.spans = rate, spans
        self.chunks: list[tuple[int, np.ndarray]] = []  #: (first sample index, samples), in decoding order
        self.cursor: int | None = None
        self._other_rate = None  #: a resampler for frames at another rate (the stream changed rate)

    def add(self, frame) -> None:
        if frame.sample_rate != self.rate:
            self._add_other_rate(frame)
            return
        if frame.time is not None:
            expected = int(round(float(frame.time) * self.rate))
            if self.cursor is None or abs(expected - self.cursor) > 0.02 * self.rate:
                self.cursor = expected
        elif self.cursor is None:
            self.cursor = 0
        self._put(_mono(frame))

    def _put(self, x: np.ndarray) -> None:
        a, b = self.cursor, self.cursor + x.shape[0]
        if any(a < (hi if hi is not None else b + 1) and b > lo for lo, hi in self.spans):
            self.chunks.append((a, x))
        self.cursor = b

    def _add_other_rate(self, frame) -> None:
        av = _av()
        if self._other_rate is None:
            log.debug("an audio frame at %d Hz in a %d Hz stream: resampled", frame.sample_rate, self.rate)
            self._other_rate = av.AudioResampler(format="fltp", rate=self.rate)
        for out in self._other_rate.resample(frame):
            if self.cursor is None:
                self.cursor = int(round(float(frame.time or 0.0) * self.rate))
            self._put(_mono(out))

    @property
    def done(self) -> bool:
        ends = [hi for _, hi in self.spans]
        return self.cursor is not None and None not in ends and self.cursor >= max(ends)

    def span(self, lo: int, hi: int | None) -> np.ndarray:
        """Samples ``[lo, hi)`` (``hi`` None: to the last sample decoded), zeros where nothing was decoded."""
        if hi is None:
            hi = max([a + x.shape[0] for a, x in self.chunks], default=lo)
        buf = np.zeros(max(0, hi - lo), dtype=np.float32)
        for a, x in self.chunks:
            s, e = max(a, lo), min(a + x.shape[0], hi)
            if e > s:
                buf[s - lo : e - lo] = x[s - a : e - a]
        return buf

    def heard(self, lo: int, hi: int) -> bool:
        return any(a < hi and a + x.shape[0] > lo for a, x in self.chunks)


def _ratio(native: int, rate: int) -> tuple[int, int]:
    g = math.gcd(native, rate)
    return rate // g, native // g


def _native_span(j0: int, n: int, native: int, rate: int) -> tuple[int, int, int]:
    """The native samples ``[m0, m1)`` whose resampling gives output samples ``[j0, j0 + n)`` exactly as resampling
    the whole track would: ``m0`` is a multiple of the rate ratio's denominator, so the span's output grid is the
    global one (its first output sample is ``q0``), and both ends leave more than the filter's half length."""
    up, down = _ratio(native, rate)
    if up == down:
        return j0, j0 + n, j0
    half = 10 * max(up, down)  # scipy.signal.resample_poly's default filter half length, at the upsampled rate
    pad = half // down + 2
    k = math.floor((j0 - pad) / up)
    return k * down, math.ceil((j0 + n + pad) * down / up) + 1, k * up


def _resample(x: np.ndarray, native: int, rate: int) -> np.ndarray:
    """``x`` (native rate, starting on the global grid) at ``rate``: scipy's polyphase filter, same for any span."""
    up, down = _ratio(native, rate)
    if up == down:
        return x
    from scipy.signal import resample_poly

    return resample_poly(x, up, down).astype(np.float32, copy=False)


def _decode_sound(path: Path, spans_out: list[tuple[int, int | None]], rate: int, deadline: _Deadline, warnings: list[str]) -> tuple[_Sound | None, int]:
    """Decode the first audio stream from the start of the file (a second opening, no seek: audio decoders carry
    state from packet to packet - the overlap of MDCT frames, AAC's noise substitution - so only an unbroken decode
    from the start is exact) until every wanted span is complete. ``spans_out`` are output-rate sample ranges.
    Returns the native-rate sound and its rate, (None, 0) when no frame decoded."""
    av = _av()
    sound: _Sound | None = None
    native = 0
    with _open(path) as container:
        astream = container.streams.audio[0]
        _discard_all_but(container, astream)
        try:
            for packet in container.demux(astream):
                deadline.check()
                for frame in packet.decode():
                    if sound is None:
                        native = int(frame.sample_rate)
                        spans = [_native_span(j0, n, native, rate)[:2] if n is not None else (_native_lo(j0, native, rate), None) for j0, n in spans_out]
                        sound = _Sound(native, spans)
                    sound.add(frame)
                if sound is not None and sound.done:
                    break
        except av.error.FFmpegError as exc:
            at = sound.cursor / native if sound is not None and sound.cursor is not None else 0.0
            _warn(warnings, f"{path}: audio decoding stopped near {at:.2f} s ({exc}); the rest is silence")
    return sound, native


def _native_lo(j0: int, native: int, rate: int) -> int:
    return _native_span(j0, 1, native, rate)[0]


def _discard_all_but(container, keep) -> None:
    """Tell the demuxer to skip the other streams' packets (MP4 then reads only the audio's bytes)."""
    try:
        from av.stream import Discard
    except ImportError:  # PyAV < 15
        return
    for s in container.streams:
        if s.index != keep.index:
            try:
                s.discard = Discard.all
            except (AttributeError, ValueError, TypeError):
                return


def _clip_sound(sound: _Sound | None, native: int, j0: int, n: int, rate: int) -> tuple[np.ndarray, bool]:
    """Output samples ``[j0, j0 + n)`` at ``rate`` and whether any decoded sound fell in them."""
    if sound is None:
        return np.zeros(n, dtype=np.float32), False
    m0, m1, q0 = _native_span(j0, n, native, rate)
    y = _resample(sound.span(m0, m1), native, rate)
    up, down = _ratio(native, rate)
    heard = sound.heard(math.floor(j0 * down / up), math.ceil((j0 + n) * down / up))
    return np.ascontiguousarray(y[j0 - q0 : j0 - q0 + n], dtype=np.float32), heard


# -- read_clips: the plan, the video, the sound -------------------------------------------------------------------------
def read_clips(
    path: str | os.PathLike,
    seconds: Sequence[int] | Callable[[MediaInfo], Sequence[int]],
    *,
    n_frames: int = 32,
    frame_size: int = 224,
    audio_rate: int = 16000,
    audio_context: float = 0.5,
    info: MediaInfo | None = None,
    timeout: float | None = None,
) -> VideoClips:
    """Decode the clips that start at the given whole seconds (container clock, relative to the first frame).

    Exact: a clip's frames and sound do not depend on which other clips are read with it; they equal a plain decode
    of the whole file from its start (see the module docstring). The video seeks ahead only where the jump is longer
    than a keyframe interval (as far as a pass has seen one), so short files are decoded once and long files only
    around the clips; the sound is decoded from the start up to the last clip.

    Args:
        path: any file FFmpeg reads (mp4, mkv, webm, avi, mov; h264, hevc, vp9, mpeg4, ...).
        seconds: clip starts, e.g. ``[0, 1, 2, 0, 1, 2]`` (repeats are decoded once), or a function of the file's
            :class:`MediaInfo` that returns them (the file is then probed and read in one opening).
        n_frames: frames per clip (the first frame at or after the start, then the next ones).
        frame_size: the clip frames are resized to ``frame_size x frame_size``.
        audio_rate: sample rate of the returned mono float32 audio.
        audio_context: seconds of audio before and after each clip's second (for feature windows).
        timeout: give up (``DecodeError``) when decoding takes longer than this many seconds; None waits.

    Returns:
        :class:`VideoClips` with one :class:`ClipData` per entry of ``seconds``, in order. ``frames`` is
        (n_frames, frame_size, frame_size, 3) uint8; ``audio`` is (round((1 + 2*audio_context)*audio_rate),).

    Raises:
        MediaFileNotFoundError: the file does not exist or is a directory.
        MediaError: the file is empty.
        DecodeError: not media, truncated or corrupt beyond use, or slower than ``timeout``.
        NoVideoStreamError: an audio-only file or a still image.
        ConfigError: no clip starts.
    """
    p = check_file(path)
    if not callable(seconds) and not seconds:
        raise ConfigError("read_clips needs at least one clip start")
    deadline = _Deadline(p, timeout)
    warnings: list[str] = []
    with _open(p) as container:
        info = info or _probe_open(container, p)
        seconds = list(seconds(info)) if callable(seconds) else list(seconds)
        if not seconds:
            raise ConfigError(f"{p}: read_clips needs at least one clip start")
        clips = _plan(seconds, info.start_time, n_frames)
        _read_video(container, _video_stream(container, p), clips, _scaler(frame_size, info.rotation), deadline, p, warnings, info.start_time)
    ctx_n = int(round(audio_context * audio_rate))
    n_audio = audio_rate + 2 * ctx_n
    j0s = {c.second: int(round((c.stamps[0] - audio_context) * audio_rate)) for c in clips}
    sound, native = (None, 0)
    if info.has_audio:
        sound, native = _decode_sound(p, [(j, n_audio) for j in j0s.values()], audio_rate, deadline, warnings)
    decoded: dict[int, ClipData] = {}
    heard_any = False
    for c in clips:
        audio, heard = _clip_sound(sound, native, j0s[c.second], n_audio, audio_rate)
        heard_any = heard_any or heard
        decoded[c.second] = ClipData(
            second=c.second,
            start=c.stamps[0],
            frames=np.stack(c.frames),
            timestamps=np.asarray(c.stamps, dtype=np.float64),
            first_frame=c.first,
            audio=audio,
            n_real_frames=c.n_real or len(c.frames),
        )
    return VideoClips(
        info=info,
        clips=[decoded[s] for s in seconds],
        audio_rate=audio_rate,
        audio_context=audio_context,
        has_audio=bool(info.has_audio and heard_any),
        warnings=warnings,
    )


def _scaler(frame_size: int, rotation: int) -> Callable:
    """``scale(frame, small=True)``: the frame resized for the clip, or (small=False) at its native size."""
    rf = _reformatter()
    return lambda frame, small: _to_rgb(frame, frame_size if small else None, rotation, rf)


def _worth_seeking(position: float, target: float, keyframes: list[float]) -> bool:
    """Seek from ``position`` to ``target`` only if that skips decoding: the jump must be longer than the seek gap
    and than the keyframe interval (a seek lands on the keyframe before ``target``, which may lie behind us)."""
    jump = target - position
    if jump <= _SEEK_GAP_S:
        return False
    if len(keyframes) >= 2:
        gop = max(b - a for a, b in zip(keyframes, keyframes[1:]))
    elif keyframes:
        gop = position - keyframes[-1]  # no second keyframe yet: the interval is at least this long
    else:
        gop = 0.0
    return jump > gop


def iter_frames(
    path: str | os.PathLike, *, start: float = 0.0, end: float | None = None, size: int | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(timestamp_s, frame)`` for video frames with ``start <= t < end``; frame is (H, W, 3) uint8 RGB
    (or (size, size, 3) when ``size`` is given)."""
    av = _av()
    p = check_file(path)
    with _open(p) as container:
        info = _probe_open(container, p)
        vs = _video_stream(container, p)
        if start > 0:
            container.seek(int(max(0.0, start - 0.1) * av.time_base), backward=True, any_frame=False)
        else:
            container.seek(0)
        rf = _reformatter()
        try:
            for frame in container.decode(vs):
                t = float(frame.time) if frame.time is not None else 0.0
                if t < start - 1e-4:
                    continue
                if end is not None and t >= end:
                    break
                yield t, _to_rgb(frame, size, info.rotation, rf)
        except av.error.FFmpegError as exc:
            raise DecodeError(f"{p}: decoding failed ({exc})") from exc


def _audio_duration(container) -> float | None:
    """When the audio stream ends on the container clock, from the headers (the stream's start time plus its
    duration, else the container's duration), None if unknown."""
    astream = container.streams.audio[0]
    if astream.duration is not None and astream.time_base:
        start = astream.start_time if astream.start_time is not None else 0
        return float((start + astream.duration) * astream.time_base)
    if container.duration:
        return float(container.duration) / _av().time_base
    return None


def read_audio(
    path: str | os.PathLike, *, rate: int = 16000, start: float = 0.0, end: float | None = None
) -> np.ndarray:
    """Decode the first audio stream as mono float32 at ``rate``, from ``start`` to ``end`` seconds (container clock;
    zeros where the stream has no samples; ``end`` None: to the end of the stream as its headers give it, else to
    the last sample decoded). Decoded from the start of the
    file and resampled as :func:`read_clips` does, so the samples are the same as in its clips. Returns (n_samples,).

    Raises:
        MediaFileNotFoundError, MediaError, DecodeError: as :func:`read_clips`; MediaError also when the file has
            no audio stream.
    """
    p = check_file(path)
    with _open(p) as container:
        if not container.streams.audio:
            raise MediaError(f"{p}: has no audio stream")
        if end is None:
            end = _audio_duration(container)
    j0 = int(round(start * rate))
    n = None if end is None else max(0, int(round(end * rate)) - j0)
    warnings: list[str] = []
    sound, native = _decode_sound(p, [(j0, n)], rate, _Deadline(p, None), warnings)
    if n is None:
        if sound is None:
            return np.zeros(0, dtype=np.float32)
        last = max((a + x.shape[0] for a, x in sound.chunks), default=0)
        up, down = _ratio(native, rate)
        n = max(0, int(last * up // down) - j0)
    if sound is None:
        return np.zeros(n, dtype=np.float32)
    return _clip_sound(sound, native, j0, n, rate)[0]
