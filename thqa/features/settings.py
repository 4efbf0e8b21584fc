"""What decides the features: the extraction settings, the features version, the backbones' precision and device.

Everything here is part of every cache key and checkpoint (:class:`ExtractionSettings`, :data:`FEATURES_VERSION`,
:func:`extraction_provenance`) or decides how the backbones run (:func:`precision_for`, :func:`resolve_device`).
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from thqa.errors import ConfigError
from thqa.features.audio import AudioSettings
from thqa.features.decoder_versions import decoder_versions
from thqa.utils.hardware import cpu_has_bf16
from thqa.utils.torch_info import bf16_known, no_cuda_proven

if TYPE_CHECKING:  # this module imports no torch: a run whose every feature is cached computes its keys without it
    import torch

__all__ = [
    "LOGGER",
    "FEATURES_VERSION",
    "CLIP_SAMPLINGS",
    "PRECISIONS",
    "MAX_CLIP_INPUT_BYTES",
    "extraction_provenance",
    "precision_for",
    "resolve_device",
    "known_precision",
    "clip_input_bytes",
    "ExtractionSettings",
]


#: the frames' short side after resizing (the first frames kept for fine-tuning, Swin-T's input before its crop)
SHORT_SIDE = 520
#: the side of the square Swin-T reads (the centre crop of the resized frame)
CROP = 224

#: the logger of extraction (prepare, runner, workers, extractor): the name it had as one module, which the timeline's
#: gathering of decoding warnings (thqa.scoring.timeline) and users' logging configurations name
LOGGER = "thqa.features.pipeline"

#: The version of what extraction computes from a file, part of every cache key (with the library versions in
#: :func:`extraction_provenance`): bump it whenever a change alters the numbers extracted from the same file and
#: settings, so that no stale feature is ever reused.
#:
#: 1. thqa 0.1.0 and before.
#: 2. Exact decoding: video passes never skip a packet (version 1 could predict frames from references the decoder
#:    had not seen), the sound is decoded from the start of the file and resampled by scipy's polyphase filter on
#:    fixed grids (version 1: FFmpeg's resampler, restarted at each seek).
FEATURES_VERSION = 2

#: ExtractionSettings.clip_sampling: spread the clips over a long video (thqa's), or its first seconds (the method's)
CLIP_SAMPLINGS = ("spread", "first")

#: the numeric precision the backbones run in: "fp32", or bf16 under torch.autocast
PRECISIONS = ("fp32", "bf16-autocast")


@functools.lru_cache(maxsize=1)
def extraction_provenance() -> dict:
    """What, besides the settings and the weights, decides the numbers this process extracts: the features version
    and the versions of the decoder (PyAV and the FFmpeg it carries: remembered per installation, so that a process
    that only looks entries up imports no PyAV, :mod:`thqa.features.decoder_versions`) and of the audio libraries
    (librosa, scipy's resampler, spafe: from their installed metadata, not imported). Part of every cache key and
    entry. (The backbones' precision is added per extractor.)"""
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "absent"

    decoder = decoder_versions()
    return {
        "features_version": FEATURES_VERSION,
        "pyav": decoder["pyav"],
        "ffmpeg": decoder["ffmpeg"],
        "librosa": v("librosa"),
        "scipy": v("scipy"),
        "spafe": v("spafe"),
    }


def precision_for(device: str | torch.device, precision: str = "auto") -> str:
    """The precision the backbones run in on ``device``: "auto" is bf16 autocast on a GPU and on a CPU that computes
    bf16 in hardware (AVX-512 BF16 or AMX: :func:`thqa.utils.hardware.cpu_has_bf16`), fp32 on any other CPU (where bf16
    is emulated and ~100x slower); "fp32" and "bf16" ask for one."""
    if precision == "auto":
        d = resolve_device(device)
        return "bf16-autocast" if d.type == "cuda" or (d.type == "cpu" and cpu_has_bf16()) else "fp32"
    if precision in ("bf16", "bf16-autocast"):
        return "bf16-autocast"
    if precision == "fp32":
        return "fp32"
    raise ConfigError(f"precision must be 'auto', 'fp32' or 'bf16', not {precision!r}")


def known_precision(device: str | torch.device = "auto", precision: str = "auto") -> str | None:
    """``precision_for(resolve_device(device), precision)`` where it is certain without importing torch (None: ask
    torch, as :func:`precision_for` does): devices "cpu" and "auto", the latter only where there is certainly no CUDA
    (:func:`thqa.utils.torch_info.no_cuda_proven`) when the precision depends on it; "auto" precision on a CPU only
    where its bf16 is certain (:func:`thqa.utils.torch_info.bf16_known`, ``$THQA_CPU_FLAGS`` included)."""
    if not isinstance(device, str) or device not in ("auto", "cpu"):
        return None  # another device: resolve_device checks it (and may refuse it) with torch
    if precision != "auto":
        return precision_for("cpu", precision)  # the device does not matter, and "auto"/"cpu" are never refused
    if device == "auto" and not no_cuda_proven():
        return None
    bf16 = bf16_known()
    return None if bf16 is None else ("bf16-autocast" if bf16 else "fp32")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu."""
    import torch  # late: the keys of cached features are computed without torch (known_precision)

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}") from exc
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return d


#: the most bytes one file's SlowFast input may take (n_clips x clip_frames x frame_size^2 x 3 colours x 4-byte
#: floats): settings each in range can explode together (1024-pixel frames x 256 frames x 6 clips: 19 GB per file).
#: 2 GiB admits the command line's largest (64 clips of 32 frames at 224 pixels: 1.2 GB); the method needs 0.12 GB.
MAX_CLIP_INPUT_BYTES = 2 << 30


def clip_input_bytes(n_clips: int, clip_frames: int, frame_size: int) -> int:
    """Bytes of one file's SlowFast input: (n_clips, clip_frames, frame_size, frame_size, 3) float32."""
    return int(n_clips) * int(clip_frames) * int(frame_size) ** 2 * 3 * 4


@dataclass(frozen=True)
class ExtractionSettings:
    """Everything that decides the features (part of every cache key and checkpoint)."""

    n_clips: int = 6
    clip_frames: int = 32
    frame_size: int = 224
    short_side: int = SHORT_SIDE
    crop: int = CROP
    audio: AudioSettings = field(default_factory=AudioSettings)
    #: which seconds a video longer than n_clips seconds gives: "spread" over the whole video (thqa's), or the
    #: "first" n_clips seconds (the method's); see thqa.media.sampling. In to_dict() only when changed.
    clip_sampling: str = "spread"

    def validate(self) -> "ExtractionSettings":
        if self.n_clips < 1 or self.clip_frames < 4 or self.frame_size < 32:
            raise ConfigError("n_clips must be >= 1, clip_frames >= 4 and frame_size >= 32")
        if self.clip_sampling not in CLIP_SAMPLINGS:
            raise ConfigError(f"clip_sampling must be one of {', '.join(CLIP_SAMPLINGS)}, got {self.clip_sampling!r}")
        if self.crop > self.short_side:
            raise ConfigError("crop must not exceed short_side")
        need = clip_input_bytes(self.n_clips, self.clip_frames, self.frame_size)
        if need > MAX_CLIP_INPUT_BYTES:
            raise ConfigError(
                f"n_clips, clip_frames and frame_size together ({self.n_clips} clips x {self.clip_frames} frames x "
                f"{self.frame_size}x{self.frame_size} pixels) need {need / 2**30:.1f} GiB per file, over the bound of "
                f"{MAX_CLIP_INPUT_BYTES / 2**30:.0f} GiB"
            )
        self.audio.validate()
        return self

    def to_dict(self) -> dict:
        """Every setting (part of cache keys and checkpoints); settings added after features version 2
        (``clip_sampling``, some audio settings: :meth:`AudioSettings.to_dict`) only when changed, so that the keys of
        default settings stay what they were."""
        d = asdict(self)
        d["audio"] = self.audio.to_dict()
        if d["clip_sampling"] == "spread":
            del d["clip_sampling"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ExtractionSettings":
        d = dict(d)
        audio = AudioSettings(**d.pop("audio", {}))
        return cls(audio=audio, **d).validate()
