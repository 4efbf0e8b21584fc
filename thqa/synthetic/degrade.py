"""Graded degradations of a talking-head file: compression, stalls, audio/video offsets, blur, noise, ...

:func:`degrade` writes a copy of a talking-head video with one defect at one of five severity levels.
The kinds cover what the distorted recordings of THQA-NTIRE contain (``qp_level`` -> ``compression``,
``stream_level`` -> ``bitrate``, ``audio_lead``, ``video_lead``, ``pause_start``, ``pause_middle``) and
what talking-head generators often get wrong (blur, low resolution, noise, dropped frames, jitter,
flicker, noisy or band-limited sound). :data:`KINDS` lists them with their levels in physical units;
:func:`pseudo_mos` maps a kind and level onto the 0-5 MOS scale with a fixed rule.

Levels 1..5 (parameter per level; pseudo-MOS at level 1 .. 5 with the untouched source at 4.5):

==============  ======  ==========================================  ===================  ===========
kind            stream  parameter                                   levels 1..5          pseudo-MOS
==============  ======  ==========================================  ===================  ===========
compression     video   H.264 constant QP (x264 --qp)               30 36 42 47 51       3.86 .. 1.30
bitrate         video   H.264 average bitrate, bit/s                400k 200k 100k 50k   3.86 .. 1.30
                                                                    25k
audio_lead      audio   sound earlier than picture, ms              80 160 240 400 600   3.98 .. 1.90
video_lead      audio   sound later than picture, ms                80 160 240 400 600   4.10 .. 2.50
pause_start     video   frozen span from the first frame, s         0.2 0.4 0.6 0.8 1.0  4.26 .. 3.30
pause_middle    video   frozen span centred on the middle, s        0.2 0.4 0.6 0.8 1.0  4.14 .. 2.70
downscale       video   shrink factor (then enlarged back)          1.5 2 3 4 6          3.98 .. 1.90
blur            video   Gaussian sigma, px at 256 px height         0.8 1.4 2.2 3.2 4.5  4.02 .. 2.10
noise           video   pixel noise std, 8-bit levels               3 6 10 16 25         4.06 .. 2.30
frame_drop      video   fraction of frames replaced by a repeat     .10 .20 .35 .50 .70  4.02 .. 2.10
jitter          video   max random shift per frame, px at 256 px    0.5 1 2 3 5          4.10 .. 2.50
flicker         video   std of the per-frame luma gain              .01 .02 .04 .06 .10  4.14 .. 2.70
audio_noise     audio   white-noise SNR, dB                         30 20 12 6 0         3.98 .. 1.90
audio_lowpass   audio   low-pass cutoff, Hz                         4000 2500 1500 1000  4.18 .. 2.90
                                                                    600
==============  ======  ==========================================  ===================  ===========

Each kind changes one stream and leaves the other untouched:

* video kinds decode the video, change the pictures, and re-encode them as H.264 (yuv420p) with the
  source's frame timestamps; the audio packets are copied into the output without re-encoding, so the
  decoded audio is bit-identical to the source's;
* audio kinds decode the audio, change the samples and re-encode them as AAC (same sample rate and
  channel layout); the video packets are copied without re-encoding, so the decoded frames are
  bit-identical to the source's.

A stream is re-encoded instead of copied only when its codec does not belong in a normal mp4 (video other
than H.264/HEVC/MPEG-4/AV1/VP9, audio other than AAC/MP3/AC-3/E-AC-3/ALAC): then the video becomes
H.264 at high quality (CRF 12) and the audio AAC, and :attr:`DegradationInfo.video_reencoded` /
:attr:`DegradationInfo.audio_reencoded` say so. Only the first video stream and the first audio stream
are kept. The output is always an mp4 written to a temporary file next to ``dst`` and moved into place
when complete; an existing ``dst`` is only replaced with ``overwrite=True``.
"""
from __future__ import annotations

import logging
import operator
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import av
import numpy as np

from thqa.errors import ConfigError, MediaError, MediaFileNotFoundError, THQAError
from thqa.synthetic.degrade_codec import run_audio_kind, run_video_kind
from thqa.synthetic.files import atomic_output, check_new_output, validate_seed

__all__ = [
    "DegradationKind",
    "DegradationInfo",
    "KINDS",
    "LEVELS",
    "UNTOUCHED_MOS",
    "degrade",
    "pseudo_mos",
    "level_parameter",
]

logger = logging.getLogger(__name__)

#: Valid severity levels (1 = mildest, 5 = worst).
LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)

#: Pseudo-MOS of an untouched source (see :func:`pseudo_mos`).
UNTOUCHED_MOS = 4.5


@dataclass(frozen=True)
class DegradationKind:
    """One kind of degradation.

    Attributes:
        name: the ``kind`` argument of :func:`degrade`.
        stream: ``"video"`` or ``"audio"``: the stream it changes (the other one is copied).
        description: what it does.
        unit: the unit of :attr:`levels`.
        levels: the parameter for levels 1..5, in :attr:`unit`.
        weight: MOS points :func:`pseudo_mos` subtracts at level 5 (linear in the level).
    """

    name: str
    stream: str
    description: str
    unit: str
    levels: tuple[float, float, float, float, float]
    weight: float


_KIND_LIST = (
    DegradationKind(
        "compression",
        "video",
        "H.264 at a constant quantiser (x264 --qp for P frames; I frames get a slightly lower and B frames a "
        "slightly higher QP) - THQA-NTIRE qp_level",
        "H.264 QP",
        (30, 36, 42, 47, 51),
        3.2,
    ),
    DegradationKind(
        "bitrate",
        "video",
        "H.264 at a low average bitrate (x264 ABR with maxrate = bitrate, bufsize = 2 x bitrate) - THQA-NTIRE "
        "stream_level",
        "bit/s",
        (400_000, 200_000, 100_000, 50_000, 25_000),
        3.2,
    ),
    DegradationKind(
        "audio_lead",
        "audio",
        "audio ahead of the picture: the first <offset> of audio is dropped and as much silence is appended, "
        "so every sound is heard <offset> before the matching picture; duration kept - THQA-NTIRE audio_lead",
        "ms",
        (80, 160, 240, 400, 600),
        2.6,
    ),
    DegradationKind(
        "video_lead",
        "audio",
        "picture ahead of the audio: <offset> of silence is prepended and the last <offset> of audio dropped, "
        "so every sound is heard <offset> after the matching picture; duration kept - THQA-NTIRE video_lead",
        "ms",
        (80, 160, 240, 400, 600),
        2.0,
    ),
    DegradationKind(
        "pause_start",
        "video",
        "frozen picture at the start: frames in [0, span) all show the first frame, then the video goes on "
        "in sync (playback stall with the audio clock as master); span bounded to the video length; audio "
        "untouched - THQA-NTIRE pause_start",
        "s",
        (0.2, 0.4, 0.6, 0.8, 1.0),
        1.2,
    ),
    DegradationKind(
        "pause_middle",
        "video",
        "frozen picture in the middle: frames in [mid - span/2, mid + span/2) all show the first frame of "
        "that span, then the video goes on in sync; span bounded to the video length; audio untouched - "
        "THQA-NTIRE pause_middle",
        "s",
        (0.2, 0.4, 0.6, 0.8, 1.0),
        1.8,
    ),
    DegradationKind(
        "downscale",
        "video",
        "resolution loss: each frame shrunk by the factor (area averaging), then enlarged back (bilinear)",
        "x smaller",
        (1.5, 2.0, 3.0, 4.0, 6.0),
        2.6,
    ),
    DegradationKind(
        "blur",
        "video",
        "Gaussian blur; sigma in pixels for a 256-pixel-high frame, scaled with the frame height",
        "px sigma @256",
        (0.8, 1.4, 2.2, 3.2, 4.5),
        2.4,
    ),
    DegradationKind(
        "noise",
        "video",
        "additive white Gaussian pixel noise, independent per pixel, channel and frame; std in 8-bit levels",
        "std (0-255)",
        (3.0, 6.0, 10.0, 16.0, 25.0),
        2.2,
    ),
    DegradationKind(
        "frame_drop",
        "video",
        "dropped frames: this fraction of the frames (chosen at random, never the first) is replaced by a "
        "repeat of the previous shown frame; timestamps kept",
        "fraction",
        (0.1, 0.2, 0.35, 0.5, 0.7),
        2.4,
    ),
    DegradationKind(
        "jitter",
        "video",
        "temporal instability of generated heads: every frame shifted by a random offset, uniform in "
        "[-a, a] pixels on each axis (a for a 256-pixel-high frame, scaled with the height; edges reflected)",
        "px @256",
        (0.5, 1.0, 2.0, 3.0, 5.0),
        2.0,
    ),
    DegradationKind(
        "flicker",
        "video",
        "temporal flicker: the luma of every frame multiplied by an independent random gain 1 + N(0, std)",
        "gain std",
        (0.01, 0.02, 0.04, 0.06, 0.10),
        1.8,
    ),
    DegradationKind(
        "audio_noise",
        "audio",
        "additive white Gaussian noise at a signal-to-noise ratio (signal power = mean power of the whole "
        "track; a silent track gets noise at -30 dBFS minus the SNR)",
        "dB SNR",
        (30.0, 20.0, 12.0, 6.0, 0.0),
        2.6,
    ),
    DegradationKind(
        "audio_lowpass",
        "audio",
        "band-limited sound: 8th-order Butterworth low-pass, zero phase (no delay); the cutoff is capped at "
        "0.45 x the sample rate",
        "Hz cutoff",
        (4000.0, 2500.0, 1500.0, 1000.0, 600.0),
        1.6,
    ),
)

#: The kinds of degradation by name (read-only).
KINDS: Mapping[str, DegradationKind] = MappingProxyType({k.name: k for k in _KIND_LIST})


@dataclass(frozen=True)
class DegradationInfo:
    """What :func:`degrade` wrote.

    Attributes:
        src, dst: the source and the written file.
        kind, level, seed: the arguments.
        parameter: the physical parameter actually used, in :attr:`unit` (e.g. 42 for QP 42, 240 for a
            240 ms offset). It is the value in :data:`KINDS` except where bounded: pause spans by the video
            length, offsets by the audio length (rounded to whole samples), low-pass cutoffs by 0.45 x the
            sample rate, and the dropped fraction by the whole number of frames dropped.
        unit: the unit of ``parameter``.
        pseudo_mos: :func:`pseudo_mos` of ``kind`` and ``level``.
        has_audio: whether the output has an audio stream.
        video_reencoded: whether the video stream was re-encoded (always for video kinds).
        audio_reencoded: whether the audio stream was re-encoded (always for audio kinds).
        n_frames: number of video frames written (video kinds) or copied (audio kinds).
    """

    src: Path
    dst: Path
    kind: str
    level: int
    seed: int
    parameter: float
    unit: str
    pseudo_mos: float
    has_audio: bool
    video_reencoded: bool
    audio_reencoded: bool
    n_frames: int


# --------------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------------


def _kind(kind: object) -> DegradationKind:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"unknown degradation kind {kind!r}; choose one of {', '.join(KINDS)}")
    return KINDS[kind]


def _level(level: object, *, allow_zero: bool = False) -> int:
    if isinstance(level, bool):
        raise ConfigError(f"level must be an integer 1..5, got {level!r}")
    try:
        value = operator.index(level)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"level must be an integer 1..5, got {level!r}") from None
    lo = 0 if allow_zero else 1
    if not lo <= value <= 5:
        raise ConfigError(f"level must be in {lo}..5, got {value}")
    return int(value)


def level_parameter(kind: str, level: int) -> float:
    """The physical parameter of ``kind`` at ``level`` (1..5), in ``KINDS[kind].unit``."""
    return float(_kind(kind).levels[_level(level) - 1])


def pseudo_mos(kind: str | None, level: int) -> float:
    """A fixed rule that places a kind and level of degradation on the 0-5 MOS scale.

    This is a rule, **not people's opinions**: nobody rated these files. It is meant as a weak, ordered
    target (e.g. to check that a predictor ranks degradation levels the right way round), not as ground
    truth.

    The rule: an untouched source (``kind=None, level=0``, or any kind at level 0) scores
    :data:`UNTOUCHED_MOS` = 4.5; a degraded file scores ``4.5 - weight * level / 5``, clipped to [0, 5],
    where ``weight`` (``KINDS[kind].weight``, the penalty at level 5) reflects how much viewers are known to
    mind each defect: coding artefacts and low bitrates most (3.2), then audible noise, resolution loss
    and audio leading the picture (2.6; audio ahead is noticed sooner than audio behind, ITU-R BT.1359),
    blur and dropped frames (2.4), pixel noise (2.2), video lead and jitter (2.0), a pause in the middle
    and flicker (1.8), band-limited sound (1.6) and a pause at the start, which looks like a slow start (1.2).

    Args:
        kind: a name in :data:`KINDS`, or ``None`` for the untouched source.
        level: 1..5 (0 = untouched).

    Returns:
        A float in [0, 5].

    Raises:
        ConfigError: unknown kind, level out of range, or ``kind=None`` with a non-zero level.
    """
    if kind is None:
        if _level(level, allow_zero=True) != 0:
            raise ConfigError(f"kind=None means the untouched source and needs level 0, got {level!r}")
        return UNTOUCHED_MOS
    spec = _kind(kind)
    lev = _level(level, allow_zero=True)
    return round(float(np.clip(UNTOUCHED_MOS - spec.weight * lev / 5.0, 0.0, 5.0)), 6)


# --------------------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------------------


def _check_input(src: object) -> Path:
    if isinstance(src, (bytes, bytearray)) or not isinstance(src, (str, os.PathLike)):
        raise ConfigError(f"source path must be a str or os.PathLike, got {type(src).__name__}")
    path = Path(src)
    if not path.exists():
        raise MediaFileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise MediaFileNotFoundError(f"{path}: is a directory, not a media file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file")
    return path


def degrade(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    kind: str,
    level: int,
    seed: int = 0,
    overwrite: bool = False,
) -> DegradationInfo:
    """Write ``dst``: a copy of the talking-head video ``src`` with one degradation.

    See :data:`KINDS` for the kinds and the parameter of each level; the module docstring explains which
    stream is re-encoded and which copied.

    Args:
        src: a video file (any container/codec FFmpeg reads) with a video stream and, usually, audio.
        dst: the mp4 to write (never the same file as ``src``).
        kind: a name in :data:`KINDS`.
        level: severity 1 (mildest) .. 5 (worst).
        seed: seeds the random parts (noise, dropped frames, jitter, flicker).
        overwrite: replace an existing ``dst`` instead of raising.

    Returns:
        :class:`DegradationInfo`.

    Raises:
        ConfigError: unknown kind, level out of range, bad seed, ``dst`` exists without ``overwrite``,
            ``dst`` is ``src`` or its folder does not exist.
        MediaFileNotFoundError: ``src`` does not exist or is a directory.
        NoVideoStreamError: ``src`` has no video stream (audio only, still image).
        DecodeError: ``src`` is not media or cannot be decoded.
        MediaError: ``src`` is empty, or has no audio and ``kind`` changes the audio.
        THQAError: encoding or writing the output failed.
    """
    spec = _kind(kind)
    lev = _level(level)
    seed = validate_seed(seed)
    if not isinstance(overwrite, bool):
        raise ConfigError(f"overwrite must be a bool, got {overwrite!r}")
    src_path = _check_input(src)
    dst_path = check_new_output(dst, overwrite=overwrite)
    if dst_path.resolve() == src_path.resolve() or (dst_path.exists() and os.path.samefile(src_path, dst_path)):
        raise ConfigError(f"{dst_path}: the output must not be the source file")
    param = float(spec.levels[lev - 1])
    rng = np.random.default_rng([seed, _KIND_LIST.index(spec), lev])
    with atomic_output(dst_path, overwrite=overwrite) as tmp:
        used, has_audio, video_re, audio_re, n_frames = _write(spec, param, src_path, dst_path, tmp, rng)
    logger.debug("degraded %s -> %s (%s level %d, parameter %g %s)", src_path, dst_path, kind, lev, used, spec.unit)
    return DegradationInfo(
        src=src_path, dst=dst_path, kind=spec.name, level=lev, seed=seed, parameter=float(used), unit=spec.unit,
        pseudo_mos=pseudo_mos(spec.name, lev), has_audio=has_audio, video_reencoded=video_re, audio_reencoded=audio_re,
        n_frames=n_frames,
    )


def _write(
    spec: DegradationKind, param: float, src: Path, dst: Path, tmp: Path, rng: np.random.Generator
) -> tuple[float, bool, bool, bool, int]:
    """Write ``src`` with ``spec``'s change at ``param`` into ``tmp`` (an mp4; ``dst`` names it in errors).

    Returns:
        The parameter used, whether the output has audio, whether its video and its audio were re-encoded, and the
        number of video frames written.
    """
    try:
        if spec.stream == "video":
            used, has_audio, audio_re, n_frames = run_video_kind(spec.name, param, src, tmp, rng)
            return used, has_audio, True, audio_re, n_frames
        used, video_re, n_frames = run_audio_kind(spec.name, param, src, tmp, rng)
        return used, True, video_re, True, n_frames
    except THQAError:
        raise
    except av.FFmpegError as exc:
        raise THQAError(f"{dst}: writing the {spec.name} degradation of {src} failed ({exc})") from exc
