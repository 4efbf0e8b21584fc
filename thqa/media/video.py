"""The exact video pass: the frames of the clips asked for, each a plain decode from the file's start would give.

Video is read in passes (:class:`_VideoPass`). A pass starts with a seek, which flushes the decoder, to the keyframe
before a clip, and from then on decodes every packet the demuxer yields, in order: a decoder is never fed a packet
stream with holes. The next clip either continues the pass (when it is near, or no keyframe interval away) or starts
a new pass with a new seek. A seek that lands after the clip's start makes the pass start from the top. Times are on
the container clock, relative to the stream's first frame, which may be negative (a file made with ``-itsoffset -2``):
no seek goes before it, and the top is a seek checked by its first frame, else a fresh opening.

:func:`iter_frames` is the plain reader of a time range's frames.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from thqa.errors import DecodeError
from thqa.media.probe import _av, _Deadline, _open, _probe_open, _video_stream, _warn, check_file, decode_threads, log

__all__ = ["iter_frames"]

#: A clip that starts less than this (seconds) after the current position is reached by decoding on, never by a seek.
_SEEK_GAP_S = 2.5
#: A pass for a clip seeks to the keyframe at or before this many seconds ahead of the clip's start (room for demuxers
#: whose index is approximate, and for the leading frames of an open GOP, which precede their keyframe).
_SEEK_MARGIN_S = 0.5


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
    return {"threads": decode_threads()} if _scaler_has_threads else {}


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
