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
import math
import operator
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType

import av
import cv2
import numpy as np
from scipy import signal

from thqa.errors import ConfigError, DecodeError, MediaError, MediaFileNotFoundError, NoVideoStreamError, THQAError
from thqa.synthetic.heads import _atomic_output, _check_output

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

_REFERENCE_HEIGHT = 256.0  # pixel sizes of blur and jitter are given for this frame height and scaled
_HQ_VIDEO_OPTIONS = {"crf": "12", "preset": "fast"}
_MP4_VIDEO_COPY = frozenset({"h264", "hevc", "mpeg4", "av1", "vp9"})
_MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})


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


def _seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


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


def _open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise DecodeError(f"{path}: cannot be opened as audio/video ({exc})") from exc
    except OSError as exc:
        raise MediaError(f"{path}: cannot be read ({exc})") from exc


def _pick_streams(container: av.container.InputContainer, path: Path) -> tuple[av.VideoStream, av.AudioStream | None]:
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):
        raise NoVideoStreamError(f"{path}: is a still image ({fmt}), not a video")
    video = None
    for stream in container.streams.video:
        disp = stream.disposition
        if disp & av.stream.Disposition.attached_pic or disp & av.stream.Disposition.still_image:
            continue
        video = stream
        break
    if video is None:
        raise NoVideoStreamError(f"{path}: has no video stream")
    if not video.codec_context.width or not video.codec_context.height:
        raise DecodeError(f"{path}: the video stream has no frame size")
    audio = container.streams.audio[0] if container.streams.audio else None
    return video, audio


def _demux(container: av.container.InputContainer, streams: list, path: Path) -> Iterator[av.Packet]:
    it = container.demux(*streams)
    while True:
        try:
            packet = next(it)
        except StopIteration:
            return
        except av.FFmpegError as exc:
            raise DecodeError(f"{path}: cannot read packets ({exc})") from exc
        yield packet


def _decode(packet: av.Packet, stream, path: Path) -> list:
    """Decode one packet (the demuxer's final empty packet flushes the decoder)."""
    try:
        return list(packet.decode())
    except av.FFmpegError as exc:
        raise DecodeError(f"{path}: cannot decode the {stream.type} stream ({exc})") from exc


def _video_rate(stream: av.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) <= 1000:
            return Fraction(rate).limit_denominator(100000)
    return Fraction(25)


def _video_frame_times(path: Path, stream_index: int) -> np.ndarray:
    """Presentation times (s) of the video packets, sorted: a cheap pre-scan without decoding."""
    container = _open_input(path)
    try:
        stream = container.streams[stream_index]
        tb = stream.time_base
        pts = [p.pts for p in _demux(container, [stream], path) if p.pts is not None and p.size > 0]
    finally:
        container.close()
    return np.sort(np.array([float(p * tb) for p in pts], dtype=np.float64)) if tb else np.zeros(0)


# --------------------------------------------------------------------------------------------------
# video operations (on I420 arrays of shape (h * 3 / 2, w))
# --------------------------------------------------------------------------------------------------

_VideoOp = Callable[[int, float, np.ndarray], np.ndarray]


def _i420_to_bgr(yuv: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)


def _bgr_to_i420(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)


def _make_video_op(
    spec: DegradationKind, param: float, *, rng: np.random.Generator, times: np.ndarray, width: int, height: int
) -> tuple[_VideoOp, float]:
    """The per-frame operation and the (possibly bounded) parameter actually used."""
    name = spec.name
    scale = height / _REFERENCE_HEIGHT
    if name in ("compression", "bitrate"):
        return (lambda i, t, yuv: yuv), param

    if name in ("pause_start", "pause_middle", "frame_drop"):
        n = len(times)
        hold = np.zeros(max(n, 1), dtype=bool)  # True: show the previous output frame instead
        used = param
        if n:
            start, end = float(times[0]), float(times[-1])
            frame_dt = float(np.median(np.diff(times))) if n > 1 else 0.04
            length = end - start + frame_dt
            if name == "frame_drop":
                k = int(round(param * (n - 1)))
                if k > 0:
                    hold[1 + rng.choice(n - 1, size=k, replace=False)] = True
                used = k / max(n - 1, 1)
            else:
                span = min(param, max(0.0, length - frame_dt))
                if span < param:
                    logger.warning("pause of %.3f s bounded to %.3f s (video is %.3f s long)", param, span, length)
                t0 = start if name == "pause_start" else start + max(0.0, 0.5 * (length - span))
                inside = (times >= t0 - 1e-9) & (times < t0 + span - 1e-9)
                idx = np.flatnonzero(inside)
                if idx.size > 1:
                    hold[idx[1:]] = True
                used = span
        state: dict[str, np.ndarray] = {}
        frame_times = times

        def temporal(i: int, t: float, yuv: np.ndarray) -> np.ndarray:
            j = int(np.searchsorted(frame_times, t - 1e-9)) if frame_times.size else i
            if j < hold.size and hold[j] and "prev" in state:
                return state["prev"]
            state["prev"] = yuv
            return yuv

        return temporal, used

    if name == "downscale":
        sw, sh = max(2, int(round(width / param))), max(2, int(round(height / param)))

        def down(i: int, t: float, yuv: np.ndarray) -> np.ndarray:
            bgr = _i420_to_bgr(yuv)
            small = cv2.resize(bgr, (sw, sh), interpolation=cv2.INTER_AREA)
            return _bgr_to_i420(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR))

        return down, param

    if name == "blur":
        sigma = param * scale

        def blur(i: int, t: float, yuv: np.ndarray) -> np.ndarray:
            return _bgr_to_i420(cv2.GaussianBlur(_i420_to_bgr(yuv), (0, 0), sigmaX=sigma, sigmaY=sigma))

        return blur, param

    if name == "noise":

        def noise(i: int, t: float, yuv: np.ndarray) -> np.ndarray:
            bgr = _i420_to_bgr(yuv).astype(np.float32)
            bgr += rng.normal(0.0, param, size=bgr.shape).astype(np.float32)
            return _bgr_to_i420(np.clip(np.rint(bgr), 0, 255).astype(np.uint8))

        return noise, param

    if name == "jitter":
        amp = param * scale

        def jitter(i: int, t: float, yuv: np.ndarray) -> np.ndarray:
            dx, dy = rng.uniform(-amp, amp, size=2)
            m = np.float32([[1, 0, dx], [0, 1, dy]])
            bgr = cv2.warpAffine(_i420_to_bgr(yuv), m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            return _bgr_to_i420(bgr)

        return jitter, param

    if name == "flicker":

        def flicker(i: int, t: float, yuv: np.ndarray) -> np.ndarray:
            gain = max(0.0, 1.0 + float(rng.normal(0.0, param)))
            out = yuv.copy()
            out[:height] = np.clip(np.rint(yuv[:height].astype(np.float32) * gain), 0, 255).astype(np.uint8)
            return out

        return flicker, param

    raise ConfigError(f"kind {name!r} does not change the video")  # pragma: no cover - guarded by KINDS


def _encoder_options(spec: DegradationKind, param: float) -> tuple[dict[str, str], int | None]:
    if spec.name == "compression":
        return {"qp": str(int(param)), "preset": "fast"}, None
    if spec.name == "bitrate":
        b = int(param)
        return {"preset": "fast", "maxrate": str(b), "bufsize": str(2 * b)}, b
    return dict(_HQ_VIDEO_OPTIONS), None


def _add_h264_stream(out: av.container.OutputContainer, vin: av.VideoStream, width: int, height: int, options: dict[str, str], bit_rate: int | None):
    vout = out.add_stream("libx264", rate=_video_rate(vin))
    vout.width = width
    vout.height = height
    vout.pix_fmt = "yuv420p"
    vout.time_base = vin.time_base
    vout.codec_context.time_base = vin.time_base
    if bit_rate is not None:
        vout.codec_context.bit_rate = bit_rate
    vout.codec_context.options = options
    return vout


class _FrameEncoder:
    """Encode I420 arrays with monotonic source timestamps into an H.264 stream."""

    def __init__(self, out: av.container.OutputContainer, vout, width: int, height: int) -> None:
        self.out, self.vout, self.width, self.height = out, vout, width, height
        self.last_pts: int | None = None
        self.count = 0

    def encode(self, yuv: np.ndarray, pts: int) -> None:
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1
        self.last_pts = pts
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = pts
        frame.time_base = self.vout.codec_context.time_base
        for packet in self.vout.encode(frame):
            self.out.mux(packet)
        self.count += 1

    def flush(self) -> None:
        for packet in self.vout.encode(None):
            self.out.mux(packet)


def _frame_to_i420(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    if frame.format.name != "yuv420p" or frame.width != width or frame.height != height:
        frame = frame.reformat(width=width, height=height, format="yuv420p")
    return frame.to_ndarray()


# --------------------------------------------------------------------------------------------------
# audio
# --------------------------------------------------------------------------------------------------


def _decode_audio(path: Path, stream_index: int) -> tuple[np.ndarray, int, str, float]:
    """All samples of an audio stream as float32 (channels, n), with rate, layout name and start time (s).

    Mono stays mono; every other layout comes back as stereo (mixed down by FFmpeg's resampler).
    """
    container = _open_input(path)
    try:
        stream = container.streams[stream_index]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        if rate <= 0:
            raise DecodeError(f"{path}: the audio stream has no sample rate")
        channels = stream.codec_context.layout.nb_channels if stream.codec_context.layout else 1
        # AAC gets a named layout: mono stays mono, anything else (also an unnamed "2 channels") is stereo
        layout = "mono" if channels == 1 else "stereo"
        if channels > 2:
            logger.info("%s: %d audio channels are mixed down to stereo", path, channels)
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks: list[np.ndarray] = []
        start: float | None = None

        def take(frames: list) -> None:
            nonlocal start
            for frame in frames:
                if start is None and frame.pts is not None and frame.time_base is not None:
                    start = float(frame.pts * frame.time_base)
                for rf in resampler.resample(frame):
                    chunks.append(rf.to_ndarray())

        for packet in _demux(container, [stream], path):
            take(_decode(packet, stream, path))
        try:
            for rf in resampler.resample(None):
                chunks.append(rf.to_ndarray())
        except av.FFmpegError:  # pragma: no cover - nothing buffered
            pass
        if not chunks:
            raise DecodeError(f"{path}: the audio stream has no decodable samples")
        audio = np.concatenate(chunks, axis=1).astype(np.float32)
        # the decoder keeps the encoder's padding of the last frame; trim to the stream's own duration
        if stream.duration and stream.time_base:
            n_declared = int(round(float(stream.duration * stream.time_base) * rate))
            if 0 < n_declared < audio.shape[1]:
                audio = audio[:, :n_declared]
        return audio, rate, layout, float(start or 0.0)
    finally:
        container.close()


def _apply_audio_op(spec: DegradationKind, param: float, audio: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    n = audio.shape[1]
    if spec.name in ("audio_lead", "video_lead"):
        shift = int(round(param / 1000.0 * rate))
        if shift > n:
            logger.warning("offset of %.0f ms bounded to the audio length (%.3f s)", param, n / rate)
            shift = n
        out = np.zeros_like(audio)
        if spec.name == "audio_lead":
            out[:, : n - shift] = audio[:, shift:]
        else:
            out[:, shift:] = audio[:, : n - shift]
        return out, shift * 1000.0 / rate
    if spec.name == "audio_noise":
        power = float(np.mean(np.square(audio, dtype=np.float64))) if n else 0.0
        if power <= 1e-10:
            power = 1e-3  # -30 dBFS reference for a silent track
        std = math.sqrt(power / (10.0 ** (param / 10.0)))
        out = audio + rng.normal(0.0, std, size=audio.shape).astype(np.float32)
        return np.clip(out, -1.0, 1.0).astype(np.float32), param
    if spec.name == "audio_lowpass":
        cutoff = min(param, 0.45 * rate)
        if cutoff < param:
            logger.warning("low-pass cutoff %.0f Hz capped to %.0f Hz (sample rate %d Hz)", param, cutoff, rate)
        if n < 64:
            return audio.copy(), cutoff
        sos = signal.butter(8, cutoff, btype="low", fs=rate, output="sos")
        out = signal.sosfiltfilt(sos, audio.astype(np.float64), axis=1)
        return np.clip(out, -1.0, 1.0).astype(np.float32), cutoff
    raise ConfigError(f"kind {spec.name!r} does not change the audio")  # pragma: no cover


def _add_aac_stream(out: av.container.OutputContainer, rate: int, layout: str, channels: int):
    aout = out.add_stream("aac", rate=rate)
    aout.layout = layout
    per_channel = 96_000 if rate >= 32_000 else 64_000
    aout.codec_context.bit_rate = min(320_000, per_channel * max(1, channels))
    return aout


class _AudioWriter:
    """Encode a (channels, n) float32 array as AAC in chunks, interleaved with other streams by time."""

    def __init__(self, out: av.container.OutputContainer, aout, audio: np.ndarray, rate: int, layout: str, start_s: float) -> None:
        self.out, self.aout, self.audio, self.rate, self.layout = out, aout, audio, rate, layout
        self.pos = 0
        self.start = max(0, int(round(start_s * rate)))

    def until(self, t_s: float) -> None:
        n = self.audio.shape[1]
        end = n if not math.isfinite(t_s) else min(n, max(self.pos, int(round(t_s * self.rate)) - self.start))
        while self.pos < end:
            stop = min(end, self.pos + 4096)
            chunk = np.ascontiguousarray(self.audio[:, self.pos : stop])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self.layout)
            frame.sample_rate = self.rate
            frame.pts = self.start + self.pos
            for packet in self.aout.encode(frame):
                self.out.mux(packet)
            self.pos = stop

    def finish(self) -> None:
        self.until(math.inf)
        for packet in self.aout.encode(None):
            self.out.mux(packet)


# --------------------------------------------------------------------------------------------------
# the two pipelines
# --------------------------------------------------------------------------------------------------


def _copyable(stream, allowed: frozenset[str]) -> bool:
    return stream.codec_context.name in allowed


def _run_video_kind(spec: DegradationKind, param: float, src: Path, tmp: Path, rng: np.random.Generator) -> tuple[float, bool, bool, int]:
    times = None
    container = _open_input(src)
    try:
        vin, ain = _pick_streams(container, src)
        width = vin.codec_context.width - vin.codec_context.width % 2
        height = vin.codec_context.height - vin.codec_context.height % 2
        if width < 2 or height < 2:
            raise DecodeError(f"{src}: frame size {vin.codec_context.width}x{vin.codec_context.height} is too small")
        if spec.name in ("pause_start", "pause_middle", "frame_drop"):
            times = _video_frame_times(src, vin.index)
        op, used = _make_video_op(spec, param, rng=rng, times=times if times is not None else np.zeros(0), width=width, height=height)
        options, bit_rate = _encoder_options(spec, param)
        copy_audio = ain is not None and _copyable(ain, _MP4_AUDIO_COPY)
        audio_writer = None
        if ain is not None and not copy_audio:
            logger.info("%s: audio codec %s is re-encoded as AAC (not copyable into mp4)", src, ain.codec_context.name)
            audio, rate, layout, start = _decode_audio(src, ain.index)
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            vout = _add_h264_stream(out, vin, width, height, options, bit_rate)
            aout = None
            if ain is not None:
                if copy_audio:
                    aout = out.add_stream_from_template(ain)
                else:
                    aout = _add_aac_stream(out, rate, layout, audio.shape[0])
                    audio_writer = _AudioWriter(out, aout, audio, rate, layout, start)
            encoder = _FrameEncoder(out, vout, width, height)
            tb = vin.time_base
            rate_q = _video_rate(vin)
            counter = 0

            def handle(frames: list) -> None:
                nonlocal counter
                for frame in frames:
                    pts = frame.pts
                    if pts is None:
                        pts = int(round(counter / rate_q / tb)) if tb else counter
                    t = float(pts * tb) if tb else counter / float(rate_q)
                    yuv = op(counter, t, _frame_to_i420(frame, width, height))
                    encoder.encode(yuv, int(pts))
                    counter += 1
                    if audio_writer is not None:
                        audio_writer.until(t + 0.5)

            streams = [vin] + ([ain] if copy_audio else [])
            for packet in _demux(container, streams, src):
                if packet.stream is vin:
                    handle(_decode(packet, vin, src))
                elif packet.dts is not None and packet.size > 0:
                    packet.stream = aout
                    out.mux(packet)
            if counter == 0:
                raise DecodeError(f"{src}: the video stream has no decodable frames")
            encoder.flush()
            if audio_writer is not None:
                audio_writer.finish()
        return used, ain is not None, (ain is not None and not copy_audio), counter
    finally:
        container.close()


def _run_audio_kind(spec: DegradationKind, param: float, src: Path, tmp: Path, rng: np.random.Generator) -> tuple[float, bool, int]:
    container = _open_input(src)
    try:
        vin, ain = _pick_streams(container, src)
        if ain is None:
            raise MediaError(f"{src}: has no audio stream, so kind {spec.name!r} (which changes the audio) cannot be applied")
        audio, rate, layout, start = _decode_audio(src, ain.index)
        changed, used = _apply_audio_op(spec, param, audio, rate, rng)
        copy_video = _copyable(vin, _MP4_VIDEO_COPY)
        if not copy_video:
            logger.info("%s: video codec %s is re-encoded as H.264 (not copyable into mp4)", src, vin.codec_context.name)
        width = vin.codec_context.width - vin.codec_context.width % 2
        height = vin.codec_context.height - vin.codec_context.height % 2
        n_frames = 0
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            if copy_video:
                vout = out.add_stream_from_template(vin)
                encoder = None
            else:
                vout = _add_h264_stream(out, vin, width, height, dict(_HQ_VIDEO_OPTIONS), None)
                encoder = _FrameEncoder(out, vout, width, height)
            aout = _add_aac_stream(out, rate, layout, changed.shape[0])
            writer = _AudioWriter(out, aout, changed, rate, layout, start)
            tb = vin.time_base
            for packet in _demux(container, [vin], src):
                if packet.dts is not None and tb:
                    writer.until(float(packet.dts * tb) + 0.5)
                if encoder is None:
                    if packet.dts is None or packet.size == 0:
                        continue
                    packet.stream = vout
                    out.mux(packet)
                    n_frames += 1
                else:
                    for frame in _decode(packet, vin, src):
                        encoder.encode(_frame_to_i420(frame, width, height), int(frame.pts or 0))
                        n_frames += 1
            if encoder is not None:
                encoder.flush()
            writer.finish()
        return used, not copy_video, n_frames
    finally:
        container.close()


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
    seed = _seed(seed)
    if not isinstance(overwrite, bool):
        raise ConfigError(f"overwrite must be a bool, got {overwrite!r}")
    src_path = _check_input(src)
    dst_path = _check_output(dst, overwrite=overwrite)
    if dst_path.resolve() == src_path.resolve() or (dst_path.exists() and os.path.samefile(src_path, dst_path)):
        raise ConfigError(f"{dst_path}: the output must not be the source file")
    param = float(spec.levels[lev - 1])
    rng = np.random.default_rng([seed, _KIND_LIST.index(spec), lev])

    with _atomic_output(dst_path, overwrite=overwrite) as tmp:
        try:
            if spec.stream == "video":
                used, has_audio, audio_re, n_frames = _run_video_kind(spec, param, src_path, tmp, rng)
                video_re = True
            else:
                used, video_re, n_frames = _run_audio_kind(spec, param, src_path, tmp, rng)
                has_audio, audio_re = True, True
        except THQAError:
            raise
        except av.FFmpegError as exc:
            raise THQAError(f"{dst_path}: writing the {kind} degradation of {src_path} failed ({exc})") from exc
    logger.debug("degraded %s -> %s (%s level %d, parameter %g %s)", src_path, dst_path, kind, lev, used, spec.unit)
    return DegradationInfo(
        src=src_path,
        dst=dst_path,
        kind=spec.name,
        level=lev,
        seed=seed,
        parameter=float(used),
        unit=spec.unit,
        pseudo_mos=pseudo_mos(spec.name, lev),
        has_audio=has_audio,
        video_reencoded=video_re,
        audio_reencoded=audio_re,
        n_frames=n_frames,
    )
