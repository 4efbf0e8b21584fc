"""Synthetic talking heads: a drawn face whose mouth follows a synthesised, speech-like voice.

The package uses these files where it needs a talking-head video that it knows everything about: tests,
examples, sanity checks of the quality features (the mouth opening of every frame is known exactly, and
it follows the loudness of the sound on the same clock), and as clean sources for :mod:`thqa.synthetic.degrade`.

Nothing here is a model of a real person or voice. The face is drawn with OpenCV (head ellipse with a
skin tone, hair, eyes that blink now and then, eyebrows, nose, a mouth whose opening follows the audio
envelope, shoulders, a plain background); the sound is a glottal-like pulse train with a moving pitch,
shaped by formant resonators (one vowel per syllable), with noise bursts for consonants, syllables of
random lengths and short pauses (:mod:`thqa.synthetic.speech`). Face shape, colours and voice (pitch,
vocal-tract length) all vary with the seed, and the same seed always gives the same file content.

Public API: :func:`make_talking_head`, :func:`synthesize_speech` (from :mod:`thqa.synthetic.speech`),
:class:`TalkingHeadInfo`.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from thqa.errors import ConfigError, THQAError
from thqa.synthetic.files import atomic_output, check_new_output, validate_int, validate_seed
from thqa.synthetic.speech import (  # noqa: F401 - synthesize_speech, AAC_SAMPLE_RATES: public here before the split
    AAC_SAMPLE_RATES,
    synthesize_speech,
    synthesize_voice,
    validate_duration,
    validate_sample_rate,
)

__all__ = [
    "TalkingHeadInfo",
    "make_talking_head",
    "synthesize_speech",
    "frame_rms",
    "mouth_opening_from_envelope",
    "AAC_SAMPLE_RATES",
]

logger = logging.getLogger(__name__)

# Skin tones (RGB), light to dark; every one keeps a luma well above the mouth interior's.
_SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (255, 224, 196),
    (241, 194, 160),
    (234, 184, 140),
    (224, 172, 105),
    (198, 134, 66),
    (160, 102, 60),
    (141, 85, 46),
)
_MOUTH_INTERIOR_RGB = (48, 12, 20)


def _frame_bounds(n_frames: int, fps: Fraction, sample_rate: int) -> np.ndarray:
    """Sample index where each video frame's display interval starts, plus the end of the last one."""
    idx = np.arange(n_frames + 1, dtype=np.float64)
    return np.round(idx * sample_rate / float(fps)).astype(np.int64)


def frame_rms(audio: np.ndarray, *, n_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """RMS of ``audio`` (1-D) over each video frame's display interval ``[i/fps, (i+1)/fps)``.

    Samples past the end of ``audio`` count as silence.
    """
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    bounds = _frame_bounds(n_frames, Fraction(fps).limit_denominator(1001), sample_rate)
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    lo = np.clip(bounds[:-1], 0, len(x))
    hi = np.clip(bounds[1:], 0, len(x))
    energy = csum[hi] - csum[lo]
    length = np.maximum(bounds[1:] - bounds[:-1], 1)
    return np.sqrt(np.maximum(energy, 0.0) / length)



# --------------------------------------------------------------------------------------------------
# face
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Face:
    size: int
    bg: tuple[int, int, int]  # BGR
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    lips: tuple[int, int, int]
    iris: tuple[int, int, int]
    shirt: tuple[int, int, int]
    cx: float
    cy: float
    ax: float  # head half-width
    ay: float  # head half-height
    eye_dx: float
    eye_y: float
    eye_w: float
    eye_h: float
    mouth_y: float
    mouth_w: float  # half-width of the mouth interior
    mouth_h: float  # half-height of the fully open mouth interior
    lip: float  # lip thickness
    sway: float  # amplitude of the head sway in pixels
    sway_f: tuple[float, float]
    sway_ph: tuple[float, float]


def _bgr(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    return (int(round(rgb[2])), int(round(rgb[1])), int(round(rgb[0])))


def _face_for_seed(seed: int, size: int) -> _Face:
    rng = np.random.default_rng([seed, 303])
    s = float(size)
    hue = rng.uniform(0, 180)
    bg_hsv = np.uint8([[[hue, rng.uniform(40, 150), rng.uniform(120, 220)]]])
    bg = tuple(int(v) for v in cv2.cvtColor(bg_hsv, cv2.COLOR_HSV2BGR)[0, 0])
    skin_rgb = np.array(_SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))], dtype=np.float64)
    skin_rgb = np.clip(skin_rgb * rng.uniform(0.95, 1.04) + rng.uniform(-6, 6, 3), 0, 255)
    lips_rgb = np.clip(0.72 * skin_rgb + 0.28 * np.array([175.0, 55.0, 65.0]), 0, 255)
    hair_rgb = np.array([[25, 20, 18], [70, 45, 25], [120, 80, 40], [200, 170, 110], [90, 90, 90]][int(rng.integers(5))], float)
    iris_rgb = np.array([[60, 40, 20], [40, 90, 140], [60, 110, 60], [100, 70, 40]][int(rng.integers(4))], float)
    shirt_rgb = rng.uniform(30, 220, 3)
    ax = s * rng.uniform(0.24, 0.30)
    ay = s * rng.uniform(0.31, 0.37)
    cx = s * 0.5 + s * rng.uniform(-0.03, 0.03)
    cy = s * 0.47 + s * rng.uniform(-0.02, 0.02)
    return _Face(
        size=size,
        bg=bg,  # type: ignore[arg-type]
        skin=_bgr(tuple(skin_rgb)),
        hair=_bgr(tuple(hair_rgb)),
        lips=_bgr(tuple(lips_rgb)),
        iris=_bgr(tuple(iris_rgb)),
        shirt=_bgr(tuple(shirt_rgb)),
        cx=cx,
        cy=cy,
        ax=ax,
        ay=ay,
        eye_dx=ax * rng.uniform(0.36, 0.46),
        eye_y=cy - ay * rng.uniform(0.12, 0.22),
        eye_w=ax * rng.uniform(0.17, 0.22),
        eye_h=ay * rng.uniform(0.07, 0.10),
        mouth_y=cy + ay * rng.uniform(0.46, 0.54),
        mouth_w=ax * rng.uniform(0.30, 0.38),
        mouth_h=ay * rng.uniform(0.11, 0.15),
        lip=max(1.5, s * 0.012),
        sway=s * rng.uniform(0.003, 0.008),
        sway_f=(float(rng.uniform(0.2, 0.5)), float(rng.uniform(0.3, 0.7))),
        sway_ph=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
    )


def _mouth_box(face: _Face) -> tuple[int, int, int, int]:
    pad = face.sway + face.lip + 2.0
    x0 = int(math.floor(face.cx - face.mouth_w - pad))
    x1 = int(math.ceil(face.cx + face.mouth_w + pad)) + 1
    y0 = int(math.floor(face.mouth_y - face.mouth_h - pad))
    y1 = int(math.ceil(face.mouth_y + face.mouth_h + pad)) + 1
    s = face.size
    return (max(0, x0), max(0, y0), min(s, x1), min(s, y1))


_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT


def _pt(x: float, y: float) -> tuple[int, int]:
    return (int(round(x * _ONE)), int(round(y * _ONE)))


def _ax(a: float, b: float) -> tuple[int, int]:
    return (max(0, int(round(a * _ONE))), max(0, int(round(b * _ONE))))


def _draw_face(canvas: np.ndarray, face: _Face, *, t: float, mouth_open: float, eye_open: float, brow_lift: float) -> None:
    """Draw one frame onto ``canvas`` (BGR, in place)."""
    aa = cv2.LINE_AA
    canvas[:] = face.bg
    dx = face.sway * math.sin(2 * math.pi * face.sway_f[0] * t + face.sway_ph[0])
    dy = face.sway * math.sin(2 * math.pi * face.sway_f[1] * t + face.sway_ph[1])
    cx, cy = face.cx + dx, face.cy + dy
    s = face.size
    # shoulders and neck
    cv2.ellipse(canvas, _pt(cx, s * 1.05 + dy), _ax(face.ax * 1.9, s * 0.22), 0, 0, 360, face.shirt, -1, aa, _SHIFT)
    cv2.rectangle(canvas, _pt(cx - face.ax * 0.38, cy + face.ay * 0.6), _pt(cx + face.ax * 0.38, s * 0.9 + dy), face.skin, -1, aa, _SHIFT)
    # hair behind the head, head, ears
    cv2.ellipse(canvas, _pt(cx, cy - face.ay * 0.12), _ax(face.ax * 1.08, face.ay * 0.98), 0, 0, 360, face.hair, -1, aa, _SHIFT)
    for side in (-1, 1):
        cv2.ellipse(canvas, _pt(cx + side * face.ax * 0.98, cy), _ax(face.ax * 0.12, face.ay * 0.17), 0, 0, 360, face.skin, -1, aa, _SHIFT)
    cv2.ellipse(canvas, _pt(cx, cy), _ax(face.ax, face.ay), 0, 0, 360, face.skin, -1, aa, _SHIFT)
    # fringe
    cv2.ellipse(canvas, _pt(cx, cy - face.ay * 0.78), _ax(face.ax * 0.92, face.ay * 0.3), 0, 180, 360, face.hair, -1, aa, _SHIFT)
    # eyes with lids that close when blinking
    ey = face.eye_y + dy
    for side in (-1, 1):
        ex = cx + side * face.eye_dx
        cv2.ellipse(canvas, _pt(ex, ey), _ax(face.eye_w, face.eye_h), 0, 0, 360, (245, 245, 245), -1, aa, _SHIFT)
        cv2.circle(canvas, _pt(ex, ey), int(round(face.eye_h * 0.95 * _ONE)), face.iris, -1, aa, _SHIFT)
        cv2.circle(canvas, _pt(ex, ey), int(round(face.eye_h * 0.45 * _ONE)), (15, 15, 15), -1, aa, _SHIFT)
        if eye_open < 0.999:
            # upper lid comes down over the eye: skin-coloured half-ellipse growing from above
            lid_h = face.eye_h * 1.15 * (1.0 - eye_open)
            cv2.rectangle(
                canvas,
                _pt(ex - face.eye_w * 1.1, ey - face.eye_h * 1.2),
                _pt(ex + face.eye_w * 1.1, ey - face.eye_h * 1.15 + 2 * lid_h),
                face.skin,
                -1,
                aa,
                _SHIFT,
            )
            if eye_open < 0.15:
                cv2.line(canvas, _pt(ex - face.eye_w, ey), _pt(ex + face.eye_w, ey), (40, 40, 40), max(1, s // 160), aa, _SHIFT)
        # eyebrow
        by = ey - face.eye_h * 2.2 - brow_lift * face.eye_h * 0.6
        cv2.ellipse(canvas, _pt(ex, by + face.eye_h), _ax(face.eye_w * 1.1, face.eye_h * 1.0), 0, 200, 340, face.hair, max(2, s // 64), aa, _SHIFT)
    # nose
    nose_c = tuple(int(c * 0.85) for c in face.skin)
    ny = cy + face.ay * 0.18
    cv2.ellipse(canvas, _pt(cx, ny), _ax(face.ax * 0.1, face.ay * 0.06), 0, 0, 180, nose_c, max(1, s // 128), aa, _SHIFT)
    # mouth: lips around a dark interior whose height follows the opening
    my = face.mouth_y + dy
    open_h = face.mouth_h * float(np.clip(mouth_open, 0.0, 1.0))
    cv2.ellipse(canvas, _pt(cx, my), _ax(face.mouth_w + face.lip, open_h + face.lip), 0, 0, 360, face.lips, -1, aa, _SHIFT)
    if open_h >= 0.35:
        cv2.ellipse(canvas, _pt(cx, my), _ax(face.mouth_w, open_h), 0, 0, 360, _bgr(_MOUTH_INTERIOR_RGB), -1, aa, _SHIFT)
    else:
        lip_line = tuple(int(c * 0.6) for c in face.lips)
        cv2.line(canvas, _pt(cx - face.mouth_w, my), _pt(cx + face.mouth_w, my), lip_line, 1, aa, _SHIFT)


def _blinks(seed: int, n_frames: int, fps: float) -> np.ndarray:
    """Eye openness per frame in [0, 1]: open, with a ~160 ms blink every 1.5-4.5 s."""
    rng = np.random.default_rng([seed, 404])
    eye = np.ones(n_frames)
    t = rng.uniform(0.4, 2.0)
    dur = n_frames / fps
    while t < dur:
        length = rng.uniform(0.12, 0.2)
        for i in range(int(math.floor(t * fps)), min(n_frames, int(math.ceil((t + length) * fps)) + 1)):
            u = (i / fps - t) / length
            if 0.0 <= u <= 1.0:
                eye[i] = min(eye[i], abs(1.0 - 2.0 * u) ** 1.5)
        t += length + rng.uniform(1.5, 4.5)
    return eye


# --------------------------------------------------------------------------------------------------
# the file
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TalkingHeadInfo:
    """What :func:`make_talking_head` wrote.

    Attributes:
        path: the mp4 file.
        seed, duration, fps, size, sample_rate: the arguments used (``duration`` in seconds).
        n_frames: number of video frames, ``round(duration * fps)``.
        n_samples: number of audio samples, ``round(duration * sample_rate)``.
        mouth_opening: ``(n_frames,)`` mouth opening drawn in each frame, 0 (closed) .. 1 (fully open).
        audio_envelope: ``(n_frames,)`` RMS of the synthesised audio over each frame's display interval
            ``[i/fps, (i+1)/fps)`` (same clock as the video).
        eye_openness: ``(n_frames,)`` 1 = eyes open, 0 = closed (blinks).
        mouth_box: ``(x0, y0, x1, y1)`` pixel rectangle (x1, y1 exclusive) that contains the mouth in
            every frame, head sway included.
        mouth_interior_rgb: colour of the open mouth's dark interior.
        f0_hz: median pitch of the voice over its vowels, in Hz.
    """

    path: Path
    seed: int
    duration: float
    fps: float
    size: int
    sample_rate: int
    n_frames: int
    n_samples: int
    mouth_opening: np.ndarray
    audio_envelope: np.ndarray
    eye_openness: np.ndarray
    mouth_box: tuple[int, int, int, int]
    mouth_interior_rgb: tuple[int, int, int]
    f0_hz: float


def _validate_fps(fps: object) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction, np.integer, np.floating)):
        raise ConfigError(f"fps must be a number, got {fps!r}")
    f = float(fps)
    if not math.isfinite(f) or not 1.0 <= f <= 120.0:
        raise ConfigError(f"fps must be in [1, 120], got {fps!r}")
    return Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps


def mouth_opening_from_envelope(envelope: np.ndarray) -> np.ndarray:
    """Map a per-frame RMS envelope to a mouth opening in [0, 1].

    Light smoothing ([1, 2, 1] / 4 over neighbouring frames), normalised by the 95th percentile of the
    voiced frames, with frames below 4 % of that level treated as closed.
    """
    env = np.asarray(envelope, dtype=np.float64).reshape(-1)
    if env.size == 0:
        return env.copy()
    padded = np.concatenate([env[:1], env, env[-1:]])
    smooth = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
    ref = float(np.percentile(smooth, 95)) if np.any(smooth > 0) else 0.0
    if ref <= 1e-6:
        return np.zeros_like(smooth)
    opening = smooth / ref
    opening = np.where(opening < 0.04, 0.0, opening)
    return np.clip(opening, 0.0, 1.0)


def make_talking_head(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    duration: float = 4.0,
    size: int = 256,
    fps: float = 25,
    sample_rate: int = 16000,
    overwrite: bool = False,
) -> TalkingHeadInfo:
    """Write a synthetic talking-head mp4 (H.264 yuv420p + AAC mono) and describe it.

    The face (shape, skin, hair, eyes, background) and the voice (pitch, formants, rhythm) come from
    ``seed``. Each frame's mouth opening is the light-smoothed RMS of the audio over that frame's display
    interval (see :func:`mouth_opening_from_envelope`), so picture and sound are in sync by construction.
    The file is written to a temporary file in the same folder and moved into place when complete.

    Args:
        path: output file (``.mp4`` recommended; the container is always mp4).
        seed: non-negative integer.
        duration: seconds, in (0, 600].
        size: frame width and height in pixels, an even integer in [64, 2048].
        fps: frames per second, in [1, 120].
        sample_rate: audio sample rate, one of :data:`AAC_SAMPLE_RATES`.
        overwrite: replace an existing file instead of raising.

    Returns:
        :class:`TalkingHeadInfo`.

    Raises:
        ConfigError: bad argument, output folder missing, or the output exists and ``overwrite`` is false.
        THQAError: the encoder failed.
    """
    seed, duration, size, fps_q, sample_rate = _head_args(seed, duration, size, fps, sample_rate, overwrite)
    out_path = check_new_output(path, overwrite=overwrite)
    fps_f = float(fps_q)
    n_frames = max(1, int(round(duration * fps_f)))
    audio, f0_hz = synthesize_voice(seed, duration, sample_rate)
    envelope = frame_rms(audio, n_frames=n_frames, fps=fps_f, sample_rate=sample_rate)
    opening = mouth_opening_from_envelope(envelope)
    eyes = _blinks(seed, n_frames, fps_f)
    face = _face_for_seed(seed, size)
    with atomic_output(out_path, overwrite=overwrite) as tmp:
        try:
            _encode_head(tmp, face, fps_q, sample_rate, audio, opening, eyes)
        except av.FFmpegError as exc:
            raise THQAError(f"{out_path}: encoding the synthetic talking head failed: {exc}") from exc
    logger.debug("wrote synthetic talking head %s (seed=%d, %d frames, %d samples)", out_path, seed, n_frames, len(audio))
    return TalkingHeadInfo(
        path=out_path, seed=seed, duration=duration, fps=fps_f, size=size, sample_rate=sample_rate, n_frames=n_frames,
        n_samples=len(audio), mouth_opening=opening.astype(np.float64), audio_envelope=envelope.astype(np.float64),
        eye_openness=eyes, mouth_box=_mouth_box(face), mouth_interior_rgb=_MOUTH_INTERIOR_RGB, f0_hz=f0_hz,
    )


def _head_args(
    seed: object, duration: object, size: object, fps: object, sample_rate: object, overwrite: object
) -> tuple[int, float, int, Fraction, int]:
    """:func:`make_talking_head`'s arguments checked: seed, duration (s), size (px), fps and sample rate."""
    seed = validate_seed(seed)
    duration = validate_duration(duration)
    size = validate_int("size", size, 64, 2048)
    if size % 2:
        raise ConfigError(f"size must be even (H.264 yuv420p), got {size}")
    fps_q = _validate_fps(fps)
    sample_rate = validate_sample_rate(sample_rate)
    if not isinstance(overwrite, bool):
        raise ConfigError(f"overwrite must be a bool, got {overwrite!r}")
    return seed, duration, size, fps_q, sample_rate


def _encode_head(
    tmp: Path, face: _Face, fps_q: Fraction, sample_rate: int, audio: np.ndarray, opening: np.ndarray, eyes: np.ndarray
) -> None:
    """Draw the (N,) frames of ``face`` with their ``opening`` and ``eyes`` and write them with the (n,) ``audio`` into
    the mp4 ``tmp`` (H.264 yuv420p + AAC mono), the audio interleaved up to the end of each frame's interval."""
    size, fps_f, n_frames, n_samples = face.size, float(fps_q), len(opening), len(audio)
    bounds = _frame_bounds(n_frames, fps_q, sample_rate)
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        vstream = container.add_stream("libx264", rate=fps_q)
        vstream.width = size
        vstream.height = size
        vstream.pix_fmt = "yuv420p"
        vstream.codec_context.options = {"crf": "18", "preset": "fast", "tune": "animation"}
        astream = container.add_stream("aac", rate=sample_rate)
        astream.layout = "mono"
        astream.codec_context.bit_rate = 64000 if sample_rate <= 24000 else 96000
        a_pos = 0
        for i in range(n_frames):
            t = i / fps_f
            brow = float(min(1.0, opening[i] * 1.2))
            _draw_face(canvas, face, t=t, mouth_open=float(opening[i]), eye_open=float(eyes[i]), brow_lift=brow)
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            frame.pts = i
            for packet in vstream.encode(frame):
                container.mux(packet)
            # interleave: audio up to the end of this frame's interval
            a_end = n_samples if i == n_frames - 1 else int(min(bounds[i + 1], n_samples))
            if a_end > a_pos:
                chunk = np.ascontiguousarray(audio[a_pos:a_end].reshape(1, -1))
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                aframe.sample_rate = sample_rate
                aframe.pts = a_pos
                for packet in astream.encode(aframe):
                    container.mux(packet)
                a_pos = a_end
        for packet in vstream.encode(None):
            container.mux(packet)
        for packet in astream.encode(None):
            container.mux(packet)
