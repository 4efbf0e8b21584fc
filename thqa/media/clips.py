"""The readers: :func:`read_clips` (the clips of the seconds asked for: frames, first frame, sound) and
:func:`read_audio` (a time range's sound), built on :mod:`thqa.media.probe`, :mod:`thqa.media.video` and
:mod:`thqa.media.sound`. Their exactness is described in :mod:`thqa.media.decode`, the package's public face.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from thqa.errors import ConfigError, MediaError
from thqa.media.probe import MediaInfo, _Deadline, _open, _probe_open, _video_stream, check_file
from thqa.media.sound import _audio_duration, _clip_sound, _decode_sound, _ratio
from thqa.media.video import _ClipFrames, _plan, _read_video, _scaler

__all__ = ["ClipData", "VideoClips", "read_clips", "read_audio"]


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
    info, seconds, clips = _read_frames(p, seconds, n_frames, frame_size, info, deadline, warnings)
    decoded, heard_any = _with_sound(p, info, clips, audio_rate, audio_context, deadline, warnings)
    return VideoClips(
        info=info,
        clips=[decoded[s] for s in seconds],
        audio_rate=audio_rate,
        audio_context=audio_context,
        has_audio=bool(info.has_audio and heard_any),
        warnings=warnings,
    )


def _read_frames(p: Path, seconds, n_frames: int, frame_size: int, info: MediaInfo | None, deadline: _Deadline,
                 warnings: list[str]) -> tuple[MediaInfo, list[int], list[_ClipFrames]]:
    """Probe (unless ``info`` is given), choose the seconds and read every clip's frames, in one opening of the file.
    Returns (the file's MediaInfo, the clip starts asked for, the distinct clips' frames in time order)."""
    with _open(p) as container:
        info = info or _probe_open(container, p)
        seconds = list(seconds(info)) if callable(seconds) else list(seconds)
        if not seconds:
            raise ConfigError(f"{p}: read_clips needs at least one clip start")
        clips = _plan(seconds, info.start_time, n_frames)
        _read_video(container, _video_stream(container, p), clips, _scaler(frame_size, info.rotation), deadline, p, warnings, info.start_time)
    return info, seconds, clips


def _with_sound(p: Path, info: MediaInfo, clips: list[_ClipFrames], audio_rate: int, audio_context: float,
                deadline: _Deadline, warnings: list[str]) -> tuple[dict[int, ClipData], bool]:
    """Each clip's sound (from its first frame's time less the context) joined to its frames: (ClipData by second,
    whether any decoded sound fell in a clip)."""
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
    return decoded, heard_any


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
