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

The code: this module holds the verdict, the results and :func:`estimate_av_offset`, and re-exports the rest;
:mod:`thqa.analysis.sync_settings` the settings, :mod:`thqa.analysis.sync_signals` decoding, the speech and mouth
signals and the face tracks (steps 1-5), :mod:`thqa.analysis.sync_search` the correlation map, the agreement curve, its
peak and confidence (steps 6-7).
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from thqa.analysis.sync_search import (  # noqa: F401 - analysis_windows, ...: public here before the split
    analysis_windows,
    mouth_correlation,
    picture_motion,
    search_offset,
    search_range,
    speech_signal,
)
from thqa.analysis.sync_settings import IN_SYNC_WINDOW_MS, LOCATORS, MAX_OFFSET_MS, SyncSettings  # noqa: F401
from thqa.analysis.sync_signals import (  # noqa: F401 - decode_av, face_tracks, ...: public here before the split
    AVData,
    Motion,
    Mouth,
    decode_av,
    drop_repeated_frames,
    face_tracks,
    mouth_opening_motion,
    mouth_region,
    speech_change,
    speech_envelope,
)
from thqa.errors import MediaError

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


def in_sync(offset_ms: float | None, window_ms: tuple[float, float] = IN_SYNC_WINDOW_MS) -> bool | None:
    """Whether an offset (``> 0``: sound later than the lips) lies within ``window_ms`` = (lead, lag):
    ``-lead <= offset_ms <= lag``. None when there is no offset."""
    if offset_ms is None:
        return None
    lead, lag = window_ms
    return bool(-lead <= offset_ms <= lag)


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



def _fail(path: str, settings: SyncSettings, seconds: float, msg: str, *, fps: float | None = None, **kw) -> SyncResult:
    r = settings.max_offset_ms
    return SyncResult(path, None, kw.pop("confidence", None), (-r, r), round(seconds, 3), error=msg, error_type="SyncError", fps=fps, **kw)


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


def estimate_offset_arrays(data: AVData, settings: SyncSettings | None = None) -> SyncResult:
    """:func:`estimate_av_offset` on decoded material (the benchmark shifts ``data.audio`` and calls this)."""
    s = search_range(settings or SyncSettings(), data.duration)
    seconds = data.duration
    fps = round(data.fps, 3) if len(data.frame_times) > 1 else None
    why = _unanalysable(data, s)
    if why:
        return _fail(data.path, s, seconds, why, fps=fps, locator=s.locator)
    motion = picture_motion(data, s)
    where = dict(fps=fps, locator=s.locator, repeated_frames=motion.repeated, faces=len(motion.mouths) if s.locator == "face" else None)
    if motion.error:
        return _fail(data.path, s, seconds, motion.error, **where)
    found = search_offset(data, motion, s)
    curve, k, conf = found.curve, found.peak, found.confidence
    kw = dict(
        where,
        mouth_region=_region_in_file(data, found.mouth.region),
        confidence=round(conf, 3),
        peak_agreement=round(float(curve[k]), 4),
        curve_offsets_ms=[round(float(o) * 1000.0, 3) for o in found.offsets],
        curve=[round(float(c), 4) for c in curve],
        agreement_per_second=found.agreement_per_second,
    )
    why = _refusal(data, s, k, len(curve), conf)
    if why:
        return _fail(data.path, s, seconds, why, **kw)
    note = _doubt(s, conf, found.offset, found.offset_whole)
    r = s.max_offset_ms
    conf_r = kw.pop("confidence")
    off_ms = round(found.offset * 1000.0, 1)
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
