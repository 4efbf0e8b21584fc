"""Opening media files with PyAV: checks, stream facts (:func:`probe`), the video stream, decoding's shared limits.

The other media modules build on this one: :mod:`thqa.media.video` (the exact video passes), :mod:`thqa.media.sound`
(the sound from the start of the file, resampled on fixed grids) and :mod:`thqa.media.clips` (the readers).
Every media module logs under the package's logger, ``thqa.media`` (the timeline gathers its warnings).
PyAV loads late (:func:`_av`): ``import thqa`` and ``thqa --help`` stay light.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from thqa.errors import DecodeError, MediaError, MediaFileNotFoundError, NoVideoStreamError
from thqa.media.sampling import whole_seconds

__all__ = ["MediaInfo", "probe", "check_file", "set_decode_threads", "decode_threads"]

#: every media module's logger (one name for the package: thqa.scoring.timeline gathers its warnings)
log = logging.getLogger("thqa.media")

_decode_threads = 0  # FFmpeg's choice (one per core); worker processes set 1


def set_decode_threads(n: int) -> None:
    """Threads per video decoder and per frame scaler: 0 lets FFmpeg choose (a thread per core), 1 suits one
    process per core (FFmpeg's own threads would compete with the other processes: measured, the scaler's
    automatic threads cost 1.6x the CPU time of one thread on 2 cores)."""
    global _decode_threads
    _decode_threads = max(0, int(n))


def decode_threads() -> int:
    """The threads per video decoder and frame scaler :func:`set_decode_threads` set (0: FFmpeg's choice)."""
    return _decode_threads


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
        return whole_seconds(self.duration)


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
        stream.thread_count = decode_threads()
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


class _Deadline:
    """``timeout`` seconds from now; :meth:`check` raises a DecodeError naming the file once they have passed."""

    def __init__(self, path: Path, timeout: float | None):
        self.path, self.timeout = path, timeout
        self.at = None if timeout is None else time.monotonic() + float(timeout)

    def check(self) -> None:
        if self.at is not None and time.monotonic() > self.at:
            raise DecodeError(f"{self.path}: decoding took longer than {self.timeout:g} s; given up")


def _warn(warnings: list[str], msg: str) -> None:
    log.warning(msg)
    warnings.append(msg)
