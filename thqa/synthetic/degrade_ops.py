"""The changes :func:`thqa.synthetic.degrade.degrade` makes to the pictures and the sound of a file, one function per
kind (see :data:`thqa.synthetic.degrade.KINDS`); the encoding and decoding around them is in
:mod:`thqa.synthetic.degrade_codec`."""
from __future__ import annotations

import logging
import math
from collections.abc import Callable

import cv2
import numpy as np
from scipy import signal

from thqa.errors import ConfigError

__all__ = ["TEMPORAL_KINDS", "VideoOp", "apply_audio_op", "make_video_op"]

logger = logging.getLogger(__name__)

_REFERENCE_HEIGHT = 256.0  # pixel sizes of blur and jitter are given for this frame height and scaled

#: the video kinds that repeat frames (they need the frames' timestamps beforehand)
TEMPORAL_KINDS = ("pause_start", "pause_middle", "frame_drop")

# --------------------------------------------------------------------------------------------------
# video operations (on I420 arrays of shape (h * 3 / 2, w))
# --------------------------------------------------------------------------------------------------

#: (frame index, time in s, I420 frame) -> the I420 frame to encode
VideoOp = Callable[[int, float, np.ndarray], np.ndarray]


def _i420_to_bgr(yuv: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)


def _bgr_to_i420(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)


def make_video_op(
    kind: str, param: float, *, rng: np.random.Generator, times: np.ndarray, width: int, height: int
) -> tuple[VideoOp, float]:
    """The per-frame operation of the video kind ``kind`` at ``param`` and the (possibly bounded) parameter actually
    used. ``times``: (N,) the frames' presentation times (s), needed by :data:`TEMPORAL_KINDS` only."""
    if kind in ("compression", "bitrate"):  # the encoder's settings do it (degrade_codec.encoder_options)
        return (lambda i, t, yuv: yuv), param
    if kind in TEMPORAL_KINDS:
        hold, used = _held_frames(kind, param, rng, times)
        return _hold_op(hold, times), used
    build = _PIXEL_OPS.get(kind)
    if build is None:  # pragma: no cover - guarded by KINDS
        raise ConfigError(f"kind {kind!r} does not change the video")
    return build(param, rng, width, height), param


def _held_frames(kind: str, param: float, rng: np.random.Generator, times: np.ndarray) -> tuple[np.ndarray, float]:
    """(max(N, 1),) bool, True where a frame shows the previous output frame instead (a pause or a dropped frame),
    and the parameter actually used (the span bounded by the video's length, the whole number of frames dropped)."""
    n = len(times)
    hold = np.zeros(max(n, 1), dtype=bool)  # True: show the previous output frame instead
    used = param
    if n:
        start, end = float(times[0]), float(times[-1])
        frame_dt = float(np.median(np.diff(times))) if n > 1 else 0.04
        length = end - start + frame_dt
        if kind == "frame_drop":
            k = int(round(param * (n - 1)))
            if k > 0:
                hold[1 + rng.choice(n - 1, size=k, replace=False)] = True
            used = k / max(n - 1, 1)
        else:
            span = min(param, max(0.0, length - frame_dt))
            if span < param:
                logger.warning("pause of %.3f s bounded to %.3f s (video is %.3f s long)", param, span, length)
            t0 = start if kind == "pause_start" else start + max(0.0, 0.5 * (length - span))
            inside = (times >= t0 - 1e-9) & (times < t0 + span - 1e-9)
            idx = np.flatnonzero(inside)
            if idx.size > 1:
                hold[idx[1:]] = True
            used = span
    return hold, used


def _hold_op(hold: np.ndarray, times: np.ndarray) -> VideoOp:
    """The operation that shows the previous output frame where ``hold`` says so (frame found by its time)."""
    state: dict[str, np.ndarray] = {}
    frame_times = times

    def temporal(i: int, t: float, yuv: np.ndarray) -> np.ndarray:
        j = int(np.searchsorted(frame_times, t - 1e-9)) if frame_times.size else i
        if j < hold.size and hold[j] and "prev" in state:
            return state["prev"]
        state["prev"] = yuv
        return yuv

    return temporal


def _downscale(param: float, rng: np.random.Generator, width: int, height: int) -> VideoOp:
    sw, sh = max(2, int(round(width / param))), max(2, int(round(height / param)))

    def down(i: int, t: float, yuv: np.ndarray) -> np.ndarray:
        bgr = _i420_to_bgr(yuv)
        small = cv2.resize(bgr, (sw, sh), interpolation=cv2.INTER_AREA)
        return _bgr_to_i420(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR))

    return down


def _blur(param: float, rng: np.random.Generator, width: int, height: int) -> VideoOp:
    sigma = param * (height / _REFERENCE_HEIGHT)

    def blur(i: int, t: float, yuv: np.ndarray) -> np.ndarray:
        return _bgr_to_i420(cv2.GaussianBlur(_i420_to_bgr(yuv), (0, 0), sigmaX=sigma, sigmaY=sigma))

    return blur


def _noise(param: float, rng: np.random.Generator, width: int, height: int) -> VideoOp:
    def noise(i: int, t: float, yuv: np.ndarray) -> np.ndarray:
        bgr = _i420_to_bgr(yuv).astype(np.float32)
        bgr += rng.normal(0.0, param, size=bgr.shape).astype(np.float32)
        return _bgr_to_i420(np.clip(np.rint(bgr), 0, 255).astype(np.uint8))

    return noise


def _jitter(param: float, rng: np.random.Generator, width: int, height: int) -> VideoOp:
    amp = param * (height / _REFERENCE_HEIGHT)

    def jitter(i: int, t: float, yuv: np.ndarray) -> np.ndarray:
        dx, dy = rng.uniform(-amp, amp, size=2)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        bgr = cv2.warpAffine(_i420_to_bgr(yuv), m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return _bgr_to_i420(bgr)

    return jitter


def _flicker(param: float, rng: np.random.Generator, width: int, height: int) -> VideoOp:
    def flicker(i: int, t: float, yuv: np.ndarray) -> np.ndarray:
        gain = max(0.0, 1.0 + float(rng.normal(0.0, param)))
        out = yuv.copy()
        out[:height] = np.clip(np.rint(yuv[:height].astype(np.float32) * gain), 0, 255).astype(np.uint8)
        return out

    return flicker


#: the video kinds that change each picture on its own: (param, rng, width, height) -> the operation
_PIXEL_OPS: dict[str, Callable[[float, np.random.Generator, int, int], VideoOp]] = {
    "downscale": _downscale,
    "blur": _blur,
    "noise": _noise,
    "jitter": _jitter,
    "flicker": _flicker,
}


# --------------------------------------------------------------------------------------------------
# audio operations (on (channels, n) float32 arrays)
# --------------------------------------------------------------------------------------------------


def apply_audio_op(kind: str, param: float, audio: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    n = audio.shape[1]
    if kind in ("audio_lead", "video_lead"):
        shift = int(round(param / 1000.0 * rate))
        if shift > n:
            logger.warning("offset of %.0f ms bounded to the audio length (%.3f s)", param, n / rate)
            shift = n
        out = np.zeros_like(audio)
        if kind == "audio_lead":
            out[:, : n - shift] = audio[:, shift:]
        else:
            out[:, shift:] = audio[:, : n - shift]
        return out, shift * 1000.0 / rate
    if kind == "audio_noise":
        power = float(np.mean(np.square(audio, dtype=np.float64))) if n else 0.0
        if power <= 1e-10:
            power = 1e-3  # -30 dBFS reference for a silent track
        std = math.sqrt(power / (10.0 ** (param / 10.0)))
        out = audio + rng.normal(0.0, std, size=audio.shape).astype(np.float32)
        return np.clip(out, -1.0, 1.0).astype(np.float32), param
    if kind == "audio_lowpass":
        cutoff = min(param, 0.45 * rate)
        if cutoff < param:
            logger.warning("low-pass cutoff %.0f Hz capped to %.0f Hz (sample rate %d Hz)", param, cutoff, rate)
        if n < 64:
            return audio.copy(), cutoff
        sos = signal.butter(8, cutoff, btype="low", fs=rate, output="sos")
        out = signal.sosfiltfilt(sos, audio.astype(np.float64), axis=1)
        return np.clip(out, -1.0, 1.0).astype(np.float32), cutoff
    raise ConfigError(f"kind {kind!r} does not change the audio")  # pragma: no cover

