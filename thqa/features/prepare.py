"""Stage 1 of extraction (CPU, one file, picklable output - it runs in decoding workers): probe, choose the clip
seconds, decode only those seconds, compute the audio features, and build the backbones' input tensors.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from thqa.errors import THQAError
from thqa.features.audio import AudioFeatureExtractor, AudioSettings
from thqa.features.frames_png import decode_frame_png, encode_frame_png  # noqa: F401 - importable from here as before
from thqa.features.settings import LOGGER, ExtractionSettings, extraction_provenance
from thqa.features.spatial import crop, normalize, resize_short_side
from thqa.media.clips import read_clips
from thqa.media.sampling import clip_seconds

__all__ = ["PreparedVideo", "prepare", "encode_frame_png", "decode_frame_png"]

log = logging.getLogger(LOGGER)


@dataclass
class PreparedVideo:
    """CPU-side result for one file: backbone inputs and audio features. Shapes for N clips, U unique seconds."""

    path: str
    seconds: list[int]  #: (N,) start second of each clip
    unique: list[int]  #: (U,) distinct seconds, in the order of the tensors below
    index: list[int]  #: (N,) position of each clip's second in ``unique``
    starts: list[float]  #: (U,) timestamp of each unique clip's first frame
    clips: torch.Tensor  #: (U, T, S, S, 3) uint8 frames for SlowFast
    first_frames: list[np.ndarray]  #: U x (3, 520, w) uint8, short side resized (for fine-tuning caches), or PNG bytes
    spatial_input: torch.Tensor  #: (U, 3, 224, 224) float32, centre crop, ImageNet-normalised
    audio: np.ndarray  #: (N, 4, F, T) float32
    has_audio: bool
    info: dict
    warnings: list[str]
    seconds_decode: float = 0.0
    seconds_audio: float = 0.0
    seconds_prepare: float = 0.0
    first_frames_png: bool = False  #: ``first_frames`` holds PNG bytes ((n,) uint8 each), not arrays
    stage_seconds: dict = field(default_factory=dict)  #: wall seconds of each step (probe, read, audio, ...)
    provenance: dict = field(default_factory=dict)  #: :func:`extraction_provenance` of the process that prepared it

    def pin_memory(self) -> "PreparedVideo":
        """Page-locked copies of the tensors (DataLoader's pin_memory calls this), for fast copies to a GPU."""
        self.clips = self.clips.pin_memory()
        self.spatial_input = self.spatial_input.pin_memory()
        return self


_AUDIO: dict[AudioSettings, AudioFeatureExtractor] = {}


def _audio_extractor(settings: AudioSettings) -> AudioFeatureExtractor:
    if settings not in _AUDIO:
        _AUDIO[settings] = AudioFeatureExtractor(settings)
    return _AUDIO[settings]


def prepare(
    path: str | os.PathLike,
    settings: ExtractionSettings | None = None,
    *,
    keep_first_frames: bool | str = False,
    timeout: float | None = None,
    seconds: Sequence[int] | None = None,
) -> PreparedVideo:
    """Decode the sampled clips of one file and compute everything that needs no backbone.

    Args:
        seconds: decode these clip starts instead of the sampled ones (the per-second timeline reads every second).
        keep_first_frames: True keeps the resized first frames as arrays, ``"png"`` as PNG bytes (encoded here, so
            that worker processes, not the process that drives the backbones, pay for it).
        timeout: seconds after which decoding gives up with a ``DecodeError`` (None: no limit).

    Raises:
        THQAError subclasses from :mod:`thqa.media.decode` for unusable files.
    """
    s = settings or ExtractionSettings()
    t0 = time.perf_counter()
    vc, seconds, t_probe = _read(path, s, seconds, timeout)
    t1 = time.perf_counter()
    info = vc.info
    unique = [c.second for c in vc.clips]
    warnings = list(vc.warnings) + _audio_warnings(path, vc)
    audio_u = _audio_extractor(s.audio).batch([c.audio for c in vc.clips])  # (U, 4, F, T)
    index = [unique.index(sec) for sec in seconds]
    audio = audio_u[np.asarray(index)]
    t2 = time.perf_counter()
    resized = [resize_short_side(c.first_frame, s.short_side) for c in vc.clips]
    spatial_input = torch.stack([normalize(crop(r, size=s.crop)) for r in resized])
    t3 = time.perf_counter()
    clips = torch.from_numpy(np.stack([c.frames for c in vc.clips]))
    t4 = time.perf_counter()
    first_frames = _kept_frames(resized, keep_first_frames)
    t5 = time.perf_counter()
    return PreparedVideo(
        path=str(path),
        seconds=seconds,
        unique=unique,
        index=index,
        starts=[c.start for c in vc.clips],
        clips=clips,
        first_frames=first_frames,
        first_frames_png=keep_first_frames == "png",
        spatial_input=spatial_input,
        audio=audio,
        has_audio=bool(info.has_audio and vc.has_audio),
        info=_info_dict(info),
        warnings=warnings,
        seconds_decode=t1 - t0,
        seconds_audio=t2 - t1,
        seconds_prepare=time.perf_counter() - t0,
        provenance=extraction_provenance(),
        stage_seconds=_stages(t0, t_probe, t1, t2, t3, t4, t5),
    )


#: the steps of :func:`prepare`, in order (:attr:`PreparedVideo.stage_seconds`)
_STAGES = ("probe", "read", "audio", "spatial", "clips", "frames")


def _stages(*times: float) -> dict[str, float]:
    """Wall seconds of each of :data:`_STAGES`, from the ``perf_counter()`` times at the start and after each."""
    return {name: b - a for name, a, b in zip(_STAGES, times, times[1:])}


def _read(path, s: ExtractionSettings, seconds: Sequence[int] | None, timeout: float | None):
    """Open and probe ``path``, choose its clip seconds (``seconds``, else sampled by ``s``), decode them.
    Returns (the decoded clips, the clip seconds in clip order, when the probe ended: ``time.perf_counter()``)."""
    chosen: dict = {}

    def choose(info) -> list[int]:  # called once the file is open and probed
        chosen["seconds"] = list(seconds) if seconds is not None else clip_seconds(info.duration, n_clips=s.n_clips, spread=s.clip_sampling == "spread")
        chosen["t"] = time.perf_counter()
        return sorted(set(chosen["seconds"]))

    vc = read_clips(
        path,
        choose,
        n_frames=s.clip_frames,
        frame_size=s.frame_size,
        audio_rate=s.audio.sample_rate,
        audio_context=s.audio.context,
        timeout=timeout,
    )
    return vc, chosen["seconds"], chosen["t"]


def _audio_warnings(path, vc) -> list[str]:
    """The warnings (also logged) of a file without sound: no audio stream, or silence in every sampled second."""
    if not vc.info.has_audio:
        msg = f"{path}: no audio stream; the audio features describe silence"
    elif not vc.has_audio or all(float(np.abs(c.audio).max()) == 0.0 for c in vc.clips):
        msg = f"{path}: the audio stream is silent in the sampled seconds"
    else:
        return []
    log.warning(msg)
    return [msg]


def _kept_frames(resized: list[torch.Tensor], keep: bool | str) -> list:
    """The resized first frames to keep: none, (3, 520, w) uint8 arrays, or their PNG bytes (``keep == "png"``)."""
    if keep == "png":
        return [encode_frame_png(r.numpy()) for r in resized]
    if keep:
        return [r.numpy() for r in resized]
    return []


def _info_dict(info) -> dict:
    """What :attr:`PreparedVideo.info` tells of a probed file."""
    return {
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "duration": info.duration,
        "rotation": info.rotation,
        "video_codec": info.video_codec,
        "has_audio": info.has_audio,
        "audio_rate": info.audio_rate,
        "audio_channels": info.audio_channels,
    }
