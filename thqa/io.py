"""Decoding with PyAV: video frames and audio on the container's clock, reading only the seconds that are needed.

The central function is :func:`read_clips`: given the seconds that the sampled clips start at, it seeks to each run of
nearby seconds, demuxes video and audio together, and returns per clip

* the first ``n_frames`` frames whose timestamp is at or after the clip's start, resized to ``frame_size`` (the
  temporal branch's input), padded with the last frame when the video ends;
* the clip's first frame at its native size (the spatial branch's input);
* mono float32 audio covering ``[start - context, start + 1 s + context)`` on the same clock as the frames, zeros
  where the file has no sound.

Memory is bounded by the clips asked for, not by the file's duration: a 10-minute file costs about what a
6-second one does.
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

from thqa.errors import DecodeError, MediaError, MediaFileNotFoundError, NoVideoStreamError

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

#: Runs of clip starts closer than this (seconds) are decoded in one pass instead of seeking between them.
_SEEK_GAP_S = 2.5
#: Seek this far before the earliest audio sample a run needs, so that the audio packets around it are demuxed.
_SEEK_MARGIN_S = 0.6


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
        from thqa.sampling import whole_seconds

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


def _runs(seconds: Sequence[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for s in sorted(set(seconds)):
        if runs and s - runs[-1][-1] <= _SEEK_GAP_S:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs


class _AudioSink:
    """Collects resampled mono audio into a buffer covering [t_begin, t_end) on the container clock."""

    def __init__(self, rate: int, t_begin: float, t_end: float):
        av = _av()
        self.rate = rate
        self.t_begin = t_begin
        self.n = int(round((t_end - t_begin) * rate))
        self.buf = np.zeros(self.n, dtype=np.float32)
        # keep the source layout and average the channels ourselves: FFmpeg's downmix weights each channel of
        # stereo by 0.707, so the same sound stored as stereo would come out 3 dB louder than stored as mono
        self.resampler = av.AudioResampler(format="fltp", rate=rate)
        self.cursor: int | None = None  # sample index (relative to t_begin) where the next output goes
        self.filled_to = 0
        self.done = False

    def reset(self) -> None:
        """Forget what was written (after a seek the pass starts again)."""
        self.buf[:] = 0.0
        self.resampler = _av().AudioResampler(format="fltp", rate=self.rate)
        self.cursor = None
        self.filled_to = 0
        self.done = False

    def _write(self, samples: np.ndarray) -> None:
        if self.cursor is None:
            return
        a, b = self.cursor, self.cursor + samples.shape[0]
        lo, hi = max(a, 0), min(b, self.n)
        if hi > lo:
            self.buf[lo:hi] = samples[lo - a : hi - a]
        self.cursor = b
        self.filled_to = max(self.filled_to, min(b, self.n))
        if b >= self.n:
            self.done = True

    def add(self, frame) -> None:
        if self.done:
            return
        if frame.time is not None:
            expected = int(round((float(frame.time) - self.t_begin) * self.rate))
            # re-anchor on the first frame and on discontinuities larger than 20 ms
            if self.cursor is None or abs(expected - self.cursor) > 0.02 * self.rate:
                self.cursor = expected
        for out in self.resampler.resample(frame):
            self._write(out.to_ndarray().mean(axis=0, dtype=np.float32))

    def flush(self) -> None:
        try:
            for out in self.resampler.resample(None):
                self._write(out.to_ndarray().mean(axis=0, dtype=np.float32))
        except Exception:  # noqa: BLE001 - a flush failure only loses the resampler's last few samples
            log.debug("audio resampler flush failed", exc_info=True)


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

    The file is read in one forward pass; it seeks ahead only where the jump is longer than a keyframe interval (as
    far as the pass has seen one), so short files are decoded once and long files only around the clips.

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
    """
    av = _av()
    p = check_file(path)
    if not callable(seconds) and not seconds:
        raise ValueError("read_clips needs at least one clip start")
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    warnings: list[str] = []
    rf = _reformatter()
    with _open(p) as container:
        if info is None:
            info = _probe_open(container, p)
        if callable(seconds):
            seconds = list(seconds(info))
            if not seconds:
                raise ValueError("read_clips needs at least one clip start")
        vs = _video_stream(container, p)
        astream = container.streams.audio[0] if container.streams.audio else None
        rotation = info.rotation
        t0_video = info.start_time
        ctx_n = int(round(audio_context * audio_rate))
        clip_len_n = audio_rate + 2 * ctx_n
        decoded: dict[int, ClipData] = {}
        any_audio = False
        runs = _runs(seconds)
        # one audio sink per run, made up front: a run read by continuing the pass gets the audio demuxed before it
        sinks = [
            _AudioSink(audio_rate, t0_video + run[0] - audio_context, t0_video + run[-1] + 1.0 + audio_context)
            if astream is not None
            else None
            for run in runs
        ]
        streams = [vs] + ([astream] if astream is not None else [])
        packets = None  # the demux iterator of the current forward pass
        keyframes: list[float] = []  # video keyframe times seen in the current pass
        last_t = 0.0
        last_native = None
        for r, run in enumerate(runs):
            starts = {s: t0_video + s for s in run}
            sink = sinks[r]
            seek_t = max(0.0, starts[run[0]] - audio_context - _SEEK_MARGIN_S)
            if packets is None or _worth_seeking(last_t, seek_t, keyframes):
                try:
                    container.seek(int(seek_t * av.time_base), backward=True, any_frame=False)
                except av.error.FFmpegError as exc:
                    log.debug("%s: seek to %.2f s failed (%s); decoding from the start", p, seek_t, exc)
                    container.seek(0)
                packets = container.demux(streams)
                keyframes = []
                for later in sinks[r:]:
                    if later is not None:
                        later.reset()
            frames: dict[int, list[np.ndarray]] = {s: [] for s in run}
            stamps: dict[int, list[float]] = {s: [] for s in run}
            firsts: dict[int, np.ndarray] = {}
            video_done = False
            try:
                for packet in packets:
                    if deadline is not None and time.monotonic() > deadline:
                        raise DecodeError(f"{p}: decoding took longer than {timeout:g} s; given up")
                    if packet.stream.type == "audio":
                        live = [x for x in sinks[r:] if x is not None and not x.done]
                        if not live or sink.done:
                            if video_done:
                                break
                            if not live:
                                continue
                        for aframe in packet.decode():
                            for x in live:
                                if aframe.time is None or aframe.time > x.t_begin - 0.2:
                                    x.add(aframe)
                        if video_done and sink.done:
                            break
                        continue
                    if packet.is_keyframe and packet.pts is not None:
                        keyframes.append(float(packet.pts * packet.time_base))
                    if video_done:
                        if sink is None or sink.done:
                            break
                        continue
                    for vframe in packet.decode():
                        t = vframe.time if vframe.time is not None else last_t
                        needing = [s for s in run if t >= starts[s] - 1e-4 and len(frames[s]) < n_frames]
                        if needing:
                            img = _to_rgb(vframe, frame_size, rotation, rf)
                            for s in needing:
                                if not frames[s]:
                                    firsts[s] = _to_rgb(vframe, None, rotation, rf)
                                frames[s].append(img)
                                stamps[s].append(float(t))
                        last_t = float(t)
                        last_native = vframe
                    if all(len(frames[s]) >= n_frames for s in run):
                        video_done = True
                        if sink is None or sink.done:
                            break
            except av.error.FFmpegError as exc:
                if not any(frames[s] for s in run):
                    raise DecodeError(f"{p}: decoding failed near {seek_t:.2f} s ({exc})") from exc
                msg = f"{p}: decoding stopped early near {last_t:.2f} s ({exc}); the clip is padded"
                log.warning(msg)
                warnings.append(msg)
                packets = None  # the pass is broken: the next run seeks afresh
            if sink is not None:
                sink.flush()
                any_audio = any_audio or sink.filled_to > 0
            for s in run:
                if not frames[s]:
                    if last_native is None:
                        raise DecodeError(f"{p}: no video frame could be decoded for second {s}")
                    msg = f"{p}: no frame at or after {starts[s]:.2f} s (the headers overstate the duration); using the last frame"
                    log.warning(msg)
                    warnings.append(msg)
                    frames[s] = [_to_rgb(last_native, frame_size, rotation, rf)]
                    stamps[s] = [last_t]
                    firsts[s] = _to_rgb(last_native, None, rotation, rf)
                n_real = len(frames[s])
                while len(frames[s]) < n_frames:
                    frames[s].append(frames[s][-1])
                    stamps[s].append(stamps[s][-1])
                clip_start = stamps[s][0]
                audio = np.zeros(clip_len_n, dtype=np.float32)
                if sink is not None:
                    off = int(round((clip_start - audio_context - sink.t_begin) * audio_rate))
                    lo, hi = max(off, 0), min(off + clip_len_n, sink.n)
                    if hi > lo:
                        audio[lo - off : hi - off] = sink.buf[lo:hi]
                decoded[s] = ClipData(
                    second=s,
                    start=clip_start,
                    frames=np.stack(frames[s]),
                    timestamps=np.asarray(stamps[s], dtype=np.float64),
                    first_frame=firsts[s],
                    audio=audio,
                    n_real_frames=n_real,
                )
    clips = [decoded[s] for s in seconds]
    return VideoClips(
        info=info,
        clips=clips,
        audio_rate=audio_rate,
        audio_context=audio_context,
        has_audio=bool(astream is not None and any_audio),
        warnings=warnings,
    )


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


def read_audio(
    path: str | os.PathLike, *, rate: int = 16000, start: float = 0.0, end: float | None = None
) -> np.ndarray:
    """Decode the first audio stream as mono float32 at ``rate``, from ``start`` to ``end`` seconds
    (container clock; zeros where the stream has no samples). Returns (n_samples,).

    Raises:
        MediaError: the file has no audio stream.
    """
    av = _av()
    p = check_file(path)
    with _open(p) as container:
        if not container.streams.audio:
            raise MediaError(f"{p}: has no audio stream")
        astream = container.streams.audio[0]
        if end is None:
            dur = None
            if astream.duration is not None and astream.time_base:
                dur = float(astream.duration * astream.time_base)
            elif container.duration:
                dur = float(container.duration) / av.time_base
            end = dur if dur else 24 * 3600.0
        sink = _AudioSink(rate, start, end)
        if start > 0:
            container.seek(int(max(0.0, start - _SEEK_MARGIN_S) * av.time_base), backward=True, any_frame=False)
        try:
            for frame in container.decode(astream):
                sink.add(frame)
                if sink.done:
                    break
        except av.error.FFmpegError as exc:
            raise DecodeError(f"{p}: audio decoding failed ({exc})") from exc
        sink.flush()
        return sink.buf[: max(sink.filled_to, 0)] if end >= 24 * 3600.0 else sink.buf
