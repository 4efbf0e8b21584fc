"""From a file to per-clip features, in two stages that can run in different places.

1. :func:`prepare` (CPU, one file, picklable output - it runs in DataLoader workers): probe, choose the clip
   seconds, decode only those seconds, compute the audio features, and build the backbones' input tensors.
2. :class:`Backbones` (CPU or GPU, batched across files): Swin-T on the first frames, SlowFast on the clips.

:class:`FeatureExtractor` joins them for one file or many; the scorer and the cache use it.
"""
from __future__ import annotations

import functools
import importlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from thqa.errors import ConfigError, THQAError, WeightsError
from thqa.features.audio import AudioFeatureExtractor, AudioSettings
from thqa.features.spatial import CROP, SHORT_SIDE, crop, normalize, resize_short_side
from thqa.features.temporal import preprocess_clips
from thqa.media.clips import read_clips
from thqa.media.sampling import clip_seconds
from thqa.features.weights import WeightsOptions, build_spatial, build_temporal, known_info

__all__ = [
    "FEATURES_VERSION",
    "extraction_provenance",
    "precision_for",
    "ExtractionSettings",
    "PreparedVideo",
    "VideoFeatures",
    "Backbones",
    "FeatureExtractor",
    "prepare",
    "resolve_device",
    "default_workers",
    "warm_up",
    "encode_frame_png",
    "decode_frame_png",
    "start_fork_server",
]

log = logging.getLogger(__name__)

#: a worker that returns nothing for file_timeout + this many seconds is taken for hung and stopped
_HANG_MARGIN_S = 60.0
#: how often the process that drives the backbones checks on its decoding workers (seconds)
_POLL_S = 5.0


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
    and the versions of the decoder (PyAV and the FFmpeg it carries) and of the audio libraries (librosa, scipy's
    resampler, spafe). Part of every cache key and entry. (The backbones' precision is added per extractor.)"""
    from importlib.metadata import PackageNotFoundError, version

    import av

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "absent"

    ffmpeg = getattr(av, "ffmpeg_version_info", None) or ".".join(map(str, av.library_versions.get("libavcodec", ())))
    return {
        "features_version": FEATURES_VERSION,
        "pyav": av.__version__,
        "ffmpeg": str(ffmpeg),
        "librosa": v("librosa"),
        "scipy": v("scipy"),
        "spafe": v("spafe"),
    }


def precision_for(device: str | torch.device, precision: str = "auto") -> str:
    """The precision the backbones run in on ``device``: "auto" is bf16 autocast on a GPU and on a CPU that computes
    bf16 in hardware (AVX-512 BF16 or AMX: :func:`thqa.utils.hardware.cpu_has_bf16`), fp32 on any other CPU (where bf16
    is emulated and ~100x slower); "fp32" and "bf16" ask for one."""
    if precision == "auto":
        from thqa.utils.hardware import cpu_has_bf16

        d = resolve_device(device)
        return "bf16-autocast" if d.type == "cuda" or (d.type == "cpu" and cpu_has_bf16()) else "fp32"
    if precision in ("bf16", "bf16-autocast"):
        return "bf16-autocast"
    if precision == "fp32":
        return "fp32"
    raise ConfigError(f"precision must be 'auto', 'fp32' or 'bf16', not {precision!r}")


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


@dataclass
class VideoFeatures:
    """Per-clip features of one file (N clips)."""

    path: str
    spatial: np.ndarray  #: (N, 768) float32 (frozen spatial extractor)
    temporal: np.ndarray  #: (N, 2304) float32
    audio: np.ndarray  #: (N, 4, 128, 32) float32
    seconds: list[int]
    has_audio: bool
    info: dict
    warnings: list[str]
    first_frames: list[np.ndarray] | None = None  #: N x (3, 520, w) uint8, when kept (PNG bytes if first_frames_png)
    first_frames_png: bool = False
    timings: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)  #: of the preparing process (decoder, audio libraries)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu."""
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


_AUDIO: dict[AudioSettings, AudioFeatureExtractor] = {}


def _audio_extractor(settings: AudioSettings) -> AudioFeatureExtractor:
    if settings not in _AUDIO:
        _AUDIO[settings] = AudioFeatureExtractor(settings)
    return _AUDIO[settings]


def encode_frame_png(img_chw: np.ndarray) -> np.ndarray:
    """(3, H, W) uint8 RGB -> PNG bytes as a (n,) uint8 array (lossless; fast settings: level 1, RLE, "up" filter).

    Measured on 40 first frames of ../shared/media: the "up" filter alone takes 11.8 ms a frame against 21.5 ms for
    libpng's adaptive choice, for files 12 % larger (0.29 of the raw size against 0.26).
    """
    import cv2

    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV 4.10+
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(np.asarray(img_chw).transpose(1, 2, 0)[:, :, ::-1]), params)
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise THQAError("PNG encoding failed")
    return buf.reshape(-1)


def decode_frame_png(buf: np.ndarray) -> np.ndarray:
    """PNG bytes (as written by :func:`encode_frame_png`) -> (3, H, W) uint8 RGB."""
    import cv2

    img = cv2.imdecode(np.asarray(buf, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise THQAError("a cached frame could not be decoded")
    return np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))


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
    t1 = time.perf_counter()
    info, seconds, t_probe = vc.info, chosen["seconds"], chosen["t"]
    unique = [c.second for c in vc.clips]
    warnings = list(vc.warnings)
    if not info.has_audio:
        msg = f"{path}: no audio stream; the audio features describe silence"
        log.warning(msg)
        warnings.append(msg)
    elif not vc.has_audio or all(float(np.abs(c.audio).max()) == 0.0 for c in vc.clips):
        msg = f"{path}: the audio stream is silent in the sampled seconds"
        log.warning(msg)
        warnings.append(msg)
    audio_u = _audio_extractor(s.audio).batch([c.audio for c in vc.clips])  # (U, 4, F, T)
    index = [unique.index(sec) for sec in seconds]
    audio = audio_u[np.asarray(index)]
    t2 = time.perf_counter()
    resized = [resize_short_side(c.first_frame, s.short_side) for c in vc.clips]
    spatial_input = torch.stack([normalize(crop(r, size=s.crop)) for r in resized])
    t3 = time.perf_counter()
    clips = torch.from_numpy(np.stack([c.frames for c in vc.clips]))
    t4 = time.perf_counter()
    first_frames: list[np.ndarray] = []
    if keep_first_frames == "png":
        first_frames = [encode_frame_png(r.numpy()) for r in resized]
    elif keep_first_frames:
        first_frames = [r.numpy() for r in resized]
    t5 = time.perf_counter()
    info_d = {
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
        info=info_d,
        warnings=warnings,
        seconds_decode=t1 - t0,
        seconds_audio=t2 - t1,
        seconds_prepare=time.perf_counter() - t0,
        provenance=extraction_provenance(),
        stage_seconds={
            "probe": t_probe - t0,
            "read": t1 - t_probe,
            "audio": t2 - t1,
            "spatial": t3 - t2,
            "clips": t4 - t3,
            "frames": t5 - t4,
        },
    )


def _lazy_model(kind: str, doc: str) -> property:
    """A :class:`Backbones` attribute for one model: built on first read when it waits for a lazy build; setting it
    replaces the model (and cancels its pending build)."""

    def get(self) -> torch.nn.Module | None:
        if kind in self._pending:
            self.build()
        return self._models[kind]

    def set_(self, module: torch.nn.Module | None) -> None:
        self._pending.discard(kind)
        self._models[kind] = module

    return property(get, set_, doc=doc)


class Backbones:
    """The spatial and temporal extractors on one device, run batched over clips of many files.

    Args:
        batch_size: clips (and Swin-T frames) per pass, every pass padded to it (default 48 on a GPU, 1 on a CPU).
            Part of what decides the numbers in bf16 (kernels are chosen by shape), as the settings are; which files
            share a pass never is.
        channels_last: channels-last 3-D convolutions for SlowFast (default: on a GPU, and on a CPU running torch on
            2 or more threads, where SlowFast took 0.90-0.92 s a clip against 1.01-1.03 s; on 1 thread it is slower,
            2.17 s against 2.00 s: interleaved runs on the 2-core AVX2 machine, fp32, same numbers to 6e-8).
        start_workers: on a GPU, start the decoding workers' fork server now, so that its imports overlap the
            model building (False where no decoding workers will follow, e.g. in a Ray actor).
        precision: "auto" (bf16 autocast on a GPU and on a CPU with bf16 in hardware, else fp32: see
            :func:`precision_for`), "fp32" or "bf16" (autocast); recorded in :attr:`infos` and so in every cache key
            and checkpoint made with these backbones.
        lazy: build the models when first used (or :meth:`build` is called) rather than now, when their identity
            (:attr:`infos`) is known without them (digests remembered by :mod:`thqa.features.digests`); else now. A
            :class:`FeatureExtractor` with decoding workers builds them once the workers have started, so that the
            workers' start (imports, the first files) and the model building run side by side.
    """

    def __init__(
        self,
        weights: WeightsOptions | None = None,
        *,
        device: str | torch.device = "auto",
        spatial: bool = True,
        temporal: bool = True,
        batch_size: int | None = None,
        channels_last: bool | None = None,
        start_workers: bool = True,
        precision: str = "auto",
        lazy: bool = False,
    ):
        self.weights = weights or WeightsOptions()
        self.device = resolve_device(device)
        self.precision = precision_for(self.device, precision)
        cuda = self.device.type == "cuda"
        if cuda and start_workers:
            # the decoding workers' fork server imports and compiles (5-10 s) while the models are built below
            start_fork_server()
        self._warm_shapes: set = set()
        # CPU: one clip per SlowFast pass is fastest (1.1 s/clip vs 1.5 at 6, measured on 2 cores) and lightest;
        # GPU: 48 clips (8 videos) per pass, where SlowFast's throughput levels off on an H100
        self.batch_size = max(1, int(batch_size)) if batch_size else (48 if cuda else 1)
        if channels_last is None:
            channels_last = cuda or (self.device.type == "cpu" and torch.get_num_threads() >= 2)
        self.channels_last = bool(channels_last)
        self._models: dict[str, torch.nn.Module | None] = {"spatial": None, "temporal": None}
        self._pending = {k for k, want in (("spatial", spatial), ("temporal", temporal)) if want}
        self.spatial_info = self.temporal_info = None
        if lazy:
            self.spatial_info = known_info("swin_t", self.weights) if spatial else None
            self.temporal_info = known_info("slowfast_r50", self.weights) if temporal else None
        if not lazy or (spatial and self.spatial_info is None) or (temporal and self.temporal_info is None):
            self.build()

    def build(self) -> "Backbones":
        """Build the models not built yet (see ``lazy``); a no-op once built.

        Raises:
            WeightsError: a weight file changed between the identity reported by :attr:`infos` and the build.
        """
        for kind in sorted(self._pending):
            builder, name = (build_spatial, "spatial_info") if kind == "spatial" else (build_temporal, "temporal_info")
            t = time.perf_counter()
            model, info = builder(self.weights)
            known = getattr(self, name)
            if known is not None and known.sha256 != info.sha256:
                raise WeightsError(f"{info.path or info.name}: its weights changed while thqa was starting (digest {info.sha256[:12]}, not {known.sha256[:12]})")
            model.to(self.device).eval()
            if kind == "temporal" and self.channels_last:
                model.to(memory_format=torch.channels_last_3d)
            self._models[kind] = model
            setattr(self, name, known or info)
            self._pending.discard(kind)
            log.debug("%s backbone built in %.2f s", kind, time.perf_counter() - t)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed clip shapes: let cuDNN pick its fastest kernels
        return self

    spatial = _lazy_model("spatial", "ECA + Swin-T (built on first use when ``lazy``), or None when not wanted.")
    temporal = _lazy_model("temporal", "SlowFast R50 without its head (built on first use when ``lazy``), or None when not wanted.")

    @property
    def built(self) -> bool:
        """Whether every wanted model exists (False while a ``lazy`` build waits for its first use)."""
        return not self._pending

    @property
    def infos(self) -> dict[str, dict]:
        out = {}
        for info in (self.spatial_info, self.temporal_info):
            if info is not None:
                out[info.name] = {**info.to_dict(), "precision": self.precision}
        return out

    @property
    def random_init(self) -> bool:
        return any(i is not None and i.random_init for i in (self.spatial_info, self.temporal_info))

    def _autocast(self):
        enabled = self.precision == "bf16-autocast"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Pad a short chunk with zeros to ``batch_size``, on every device: every pass of a backbone has one input
        shape, so a file's features never depend on how many rows share its pass (kernels, and so the rounding of
        bf16 on CPUs with AMX / AVX-512 BF16 and on GPUs, are chosen by shape), and cuDNN tunes its kernels once
        (``cudnn.benchmark``). A CPU's default of one clip (one Swin-T frame) per pass needs no padding."""
        n = x.shape[0]
        if n >= self.batch_size:
            return x, n
        return torch.cat([x, x.new_zeros((self.batch_size - n, *x.shape[1:]))]), n

    def warm_up(self, settings: "ExtractionSettings") -> float:
        """Run one pass of zeros shaped like a full batch through each backbone, once per shape: on a GPU this is
        when cuDNN picks its kernels (seconds), so calling it while the decoding workers prepare the first files
        hides that time. Returns the seconds it took (0 when already warm)."""
        key = (settings.clip_frames, settings.frame_size, settings.crop)
        if key in self._warm_shapes:
            return 0.0
        t = time.perf_counter()
        n = self.batch_size
        if self.spatial is not None:
            self.run_spatial(torch.zeros(n, 3, settings.crop, settings.crop))
        if self.temporal is not None:
            self.run_temporal(torch.zeros(n, settings.clip_frames, settings.frame_size, settings.frame_size, 3, dtype=torch.uint8))
        self._warm_shapes.add(key)
        dt = time.perf_counter() - t
        log.debug("backbones warmed up for %s in %.2f s", key, dt)
        return dt

    @torch.inference_mode()
    def run_spatial(self, x: torch.Tensor, module: torch.nn.Module | None = None) -> np.ndarray:
        """(M, 3, 224, 224) float -> (M, 768) float32."""
        m = module if module is not None else self.spatial
        outs = []
        for i in range(0, x.shape[0], self.batch_size):
            chunk, n = self._pad(x[i : i + self.batch_size].to(self.device, non_blocking=True))
            with self._autocast():
                outs.append(m(chunk)[:n].float().cpu())
        return torch.cat(outs).numpy()

    @torch.inference_mode()
    def run_temporal(self, clips: torch.Tensor) -> np.ndarray:
        """(M, T, S, S, 3) uint8 -> (M, 2304) float32. Scaling and normalising happen on the device."""
        outs = []
        for i in range(0, clips.shape[0], self.batch_size):
            chunk, n = self._pad(clips[i : i + self.batch_size].to(self.device, non_blocking=True))
            slow, fast = preprocess_clips(chunk)
            if self.channels_last:
                slow = slow.contiguous(memory_format=torch.channels_last_3d)
                fast = fast.contiguous(memory_format=torch.channels_last_3d)
            with self._autocast():
                outs.append(self.temporal([slow, fast])[:n].float().cpu())
        return torch.cat(outs).numpy()

    def _gather(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate on the device: each (pinned) part is copied asynchronously, not via a pageable host copy."""
        if self.device.type == "cpu":
            return torch.cat(parts) if len(parts) > 1 else parts[0]
        return torch.cat([p.to(self.device, non_blocking=True) for p in parts])

    def features(self, items: Sequence[PreparedVideo], *, spatial_module: torch.nn.Module | None = None) -> list[VideoFeatures]:
        """Run both backbones over the unique clips of several prepared files at once."""
        sp = tp = None
        t_sp = t_tp = 0.0
        if self.spatial is not None or spatial_module is not None:
            t = time.perf_counter()
            sp = self.run_spatial(self._gather([it.spatial_input for it in items]), spatial_module)
            t_sp = (time.perf_counter() - t) / len(items)
        if self.temporal is not None:
            t = time.perf_counter()
            tp = self.run_temporal(self._gather([it.clips for it in items]))
            t_tp = (time.perf_counter() - t) / len(items)
        out = []
        off = 0
        for it in items:
            u = len(it.unique)
            out.append(
                assemble(
                    it,
                    sp[off : off + u] if sp is not None else None,
                    tp[off : off + u] if tp is not None else None,
                    spatial_s=t_sp,
                    temporal_s=t_tp,
                )
            )
            off += u
        return out


def assemble(item: PreparedVideo, spatial: np.ndarray | None, temporal: np.ndarray | None, *, spatial_s: float = 0.0, temporal_s: float = 0.0) -> VideoFeatures:
    """A file's :class:`VideoFeatures` from its prepared data and the backbone outputs of its U unique clips
    (``spatial`` (U, 768), ``temporal`` (U, 2304)), repeated into clip order."""
    idx = np.asarray(item.index)
    return VideoFeatures(
        path=item.path,
        spatial=spatial[idx] if spatial is not None else None,
        temporal=temporal[idx] if temporal is not None else None,
        audio=item.audio,
        seconds=list(item.seconds),
        has_audio=item.has_audio,
        info=item.info,
        warnings=list(item.warnings),
        first_frames=[item.first_frames[i] for i in idx] if item.first_frames else None,
        first_frames_png=item.first_frames_png,
        provenance=dict(item.provenance),
        timings={
            "decode_s": item.seconds_decode,
            "audio_s": item.seconds_audio,
            "prepare_s": item.seconds_prepare,
            "spatial_s": spatial_s if spatial is not None else 0.0,
            "temporal_s": temporal_s if temporal is not None else 0.0,
        },
    )


class _ClipBatcher:
    """Runs the backbones over exactly ``batch_size`` clips at a time, taken in arrival order from several files
    (a file's clips may straddle two passes); a file's features are out once all its clips have been through.
    Every pass has the same shape (the last one is padded: :meth:`Backbones._pad`), so a file's features are the
    same bits whatever shares its passes, and cuDNN tunes once per run."""

    def __init__(self, backbones: Backbones):
        self.bb = backbones
        self.files: dict[int, dict] = {}
        self.rows: list[tuple[int, int]] = []  # (file, unique clip) waiting for a pass
        self.forward_s = 0.0
        self.passes = 0

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, i: int, item: PreparedVideo) -> None:
        dev = self.bb.device
        u = len(item.unique)
        self.files[i] = {
            "item": item,
            # start the (pinned, asynchronous) copy to the GPU now, while the previous pass runs
            "clips": item.clips.to(dev, non_blocking=True) if self.bb.temporal is not None else None,
            "sp": item.spatial_input.to(dev, non_blocking=True) if self.bb.spatial is not None else None,
            "tp_out": [None] * u,
            "sp_out": [None] * u,
            "left": u,
            "t_sp": 0.0,
            "t_tp": 0.0,
        }
        self.rows.extend((i, k) for k in range(u))

    def items(self, rows=None) -> list[tuple[int, PreparedVideo]]:
        seen = dict.fromkeys(i for i, _ in (rows if rows is not None else self.rows))
        return [(i, self.files[i]["item"]) for i in seen]

    def drop(self, indices) -> None:
        gone = set(indices)
        self.rows = [r for r in self.rows if r[0] not in gone]
        for i in gone:
            self.files.pop(i, None)

    def run(self) -> list[tuple[int, VideoFeatures]]:
        """One pass over the first ``batch_size`` waiting clips; returns the files it completed."""
        take, self.rows = self.rows[: self.bb.batch_size], self.rows[self.bb.batch_size :]
        t = time.perf_counter()
        try:
            sp = tp = None
            if self.bb.spatial is not None:
                sp = self.bb.run_spatial(torch.stack([self.files[i]["sp"][k] for i, k in take]))
            t_sp = time.perf_counter() - t
            if self.bb.temporal is not None:
                tp = self.bb.run_temporal(torch.stack([self.files[i]["clips"][k] for i, k in take]))
            t_tp = time.perf_counter() - t - t_sp
        except Exception:
            self.rows = take + self.rows  # the caller isolates the culprit
            raise
        self.forward_s += t_sp + t_tp
        self.passes += 1
        done = []
        for r, (i, k) in enumerate(take):
            f = self.files[i]
            f["sp_out"][k] = sp[r] if sp is not None else None
            f["tp_out"][k] = tp[r] if tp is not None else None
            f["left"] -= 1
            f["t_sp"] += t_sp / len(take)
            f["t_tp"] += t_tp / len(take)
            if f["left"] == 0:
                feats = assemble(
                    f["item"],
                    np.stack(f["sp_out"]) if sp is not None else None,
                    np.stack(f["tp_out"]) if tp is not None else None,
                    spatial_s=f["t_sp"],
                    temporal_s=f["t_tp"],
                )
                done.append((i, feats))
                del self.files[i]
        return done


@dataclass
class ItemResult:
    """One file's outcome in a batch: features, or the error that stopped it."""

    path: str
    features: VideoFeatures | None = None
    error: str | None = None
    error_type: str | None = None


class _PrepareDataset(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], settings: ExtractionSettings, keep_first_frames: bool | str, timeout: float | None):
        self.paths = list(paths)
        self.settings = settings
        self.keep = keep_first_frames
        self.timeout = timeout

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        p = self.paths[i]
        try:
            return i, prepare(p, self.settings, keep_first_frames=self.keep, timeout=self.timeout), None
        except THQAError as exc:
            return i, None, (type(exc).__name__, str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken file must not stop a batch
            log.debug("unexpected error preparing %s", p, exc_info=True)
            return i, None, (type(exc).__name__, f"{p}: unexpected {type(exc).__name__}: {exc}")


def _identity(x):
    return x


#: Linux's prctl option that sends a signal to this process when its parent dies (<linux/prctl.h>)
_PR_SET_PDEATHSIG = 1
#: how often (seconds) a decoding worker checks that its parent is alive, where no parent-death signal exists
_PARENT_POLL_S = 1.0


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie not yet reaped counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _die_with_parent(main_pid: int | None = None) -> None:
    """In a decoding worker: end when the process that started it ends, however it ends (SIGKILL, SIGTERM, a crash),
    instead of living on as an orphan that holds hundreds of MB: Linux's parent-death signal (SIGKILL), and on every
    system a thread that checks every :data:`_PARENT_POLL_S` s that the parent and ``main_pid`` (the process that
    asked for the workers) live. A worker from the fork server needs the second: its parent is the fork server, which
    outlives the main process as long as any worker holds the server's keep-alive pipe (every worker does). A worker
    busy decoding a long file never reaches the DataLoader's own check."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError) as exc:  # the watch below still holds
            log.debug("no parent-death signal (%s); watching the parent pid", exc)

    def orphaned() -> bool:
        return os.getppid() != parent or (main_pid is not None and main_pid != parent and _gone(main_pid))

    if orphaned():  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while not orphaned():
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="thqa-parent-watch", daemon=True).start()


def _worker_init(_worker_id: int, main_pid: int | None = None) -> None:
    """One thread per worker process for the decoder, BLAS and torch: the workers already fill the cores. The worker
    dies with its parent and with ``main_pid``, the process that started the DataLoader (:func:`_die_with_parent`)."""
    from thqa.media.probe import set_decode_threads

    _die_with_parent(main_pid)
    # a forked worker inherits the command line's SIGTERM handler (an interrupt); the DataLoader stops a hung worker
    # with SIGTERM, which must end it at once, even inside FFmpeg
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    set_decode_threads(1)
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # noqa: BLE001 - only a speed matter
        pass


_warm: set = set()


def warm_up(settings: ExtractionSettings | None = None, *, png: bool = True) -> None:
    """Import and compile (numba) what :func:`prepare` needs, once in this process: before worker processes are
    forked (they inherit it instead of each paying about 5 s - imports of scipy.signal/librosa, JIT - on its first
    file), and when a :class:`~thqa.scoring.scorer.Scorer` is built (so that its first file costs what the next ones do).
    ``png``: also the PNG encoder (OpenCV), which only caches of first frames need."""
    s = settings or ExtractionSettings()
    if (s.audio, png) in _warm or (s.audio, True) in _warm:
        return
    t = time.perf_counter()
    n = int(round((1 + 2 * s.audio.context) * s.audio.sample_rate))
    _audio_extractor(s.audio).batch(np.zeros((1, n), np.float32))
    img = resize_short_side(np.zeros((16, 16, 3), np.uint8), 32)
    normalize(crop(img, size=16))
    if png:
        encode_frame_png(img.numpy())
    importlib.import_module("av")

    _warm.add((s.audio, png))
    log.debug("prepare() warmed up in %.2f s", time.perf_counter() - t)


#: how decoding workers start: None picks "fork", or "forkserver" once this process holds a CUDA context
_START_METHOD: str | None = None


def _worker_context(cuda: bool = False):
    """None (fork) normally; a fork server beside CUDA, whose context makes each fork of this process slow."""
    import multiprocessing as mp

    method = _START_METHOD or ("forkserver" if (cuda or torch.cuda.is_initialized()) else None)
    if method is None or method == "fork":
        return None
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["thqa.utils.prefork"])
    return ctx


def start_fork_server() -> bool:
    """Start the fork server that decoding workers beside a GPU come from, now, in the background: its imports and
    numba compilation (5-10 s) then overlap whatever this process does next (building the models, hashing the
    files) instead of delaying the first file. Idempotent; returns whether a fork server is (now) running."""
    ctx = _worker_context(cuda=True)
    if ctx is None:
        return False
    try:
        from multiprocessing import forkserver

        forkserver.ensure_running()
    except Exception as exc:  # noqa: BLE001 - only a head start: the DataLoader starts it when it needs it
        log.debug("could not start the fork server early (%s)", exc)
        return False
    return True


def default_workers(device: torch.device | str) -> int:
    """Decoding processes when the caller says "auto": all cores but one beside a GPU (it waits on the decoders),
    none beside a CPU (the backbones use the cores; measured: 1.03x of decode + forward in one process)."""
    d = resolve_device(device)
    return max(1, (os.cpu_count() or 2) - 1) if d.type == "cuda" else 0


class _WorkerCrashed(Exception):
    def __init__(self, returned: set[int], cause: BaseException):
        super().__init__(str(cause))
        self.returned = returned
        self.cause = cause


class FeatureExtractor:
    """Features of files: decoding + audio on the CPU (in worker processes when ``workers`` > 0), backbones batched
    across files.

    Args:
        workers: decoding processes; 0 decodes in this process, ``"auto"`` picks :func:`default_workers`.
        file_timeout: seconds one file may take to decode before it is reported as failed (None: no limit).
        prefetch: files queued per worker. A slow file delays only the ``prefetch - 1`` files queued behind it in
            its worker (the other workers go on); 2 keeps every worker busy while the backbones run.
        precision: of the backbones this builds when none are given (see :class:`Backbones`).
    """

    def __init__(
        self,
        settings: ExtractionSettings | None = None,
        weights: WeightsOptions | None = None,
        *,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        workers: int | str = "auto",
        backbones: Backbones | None = None,
        file_timeout: float | None = 300.0,
        prefetch: int = 2,
        precision: str = "auto",
    ):
        self.settings = (settings or ExtractionSettings()).validate()
        self.backbones = backbones or Backbones(weights, device=device, batch_size=batch_size, precision=precision)
        if workers == "auto":
            workers = default_workers(self.backbones.device)
        try:
            self.workers = max(0, int(workers))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"workers must be a number or 'auto', got {workers!r}") from exc
        self.file_timeout = file_timeout
        self.prefetch = max(1, int(prefetch))
        #: where the last iter_extract's time went: waiting for prepared files, backbone passes
        self.stats: dict = {}

    def extract(self, path: str | os.PathLike, *, keep_first_frames: bool | str = False) -> VideoFeatures:
        """Features of one file. Raises the file's error (a THQAError subclass)."""
        item = prepare(path, self.settings, keep_first_frames=keep_first_frames, timeout=self.file_timeout)
        return self.backbones.features([item])[0]

    def iter_extract(
        self, paths: Iterable[str | os.PathLike], *, keep_first_frames: bool | str = False, ordered: bool = True
    ) -> Iterator[ItemResult]:
        """Yield one :class:`ItemResult` per path; a bad file yields its error and the rest goes on.

        Files are prepared by the workers in whatever order they finish (a slow file holds up nobody) and run
        through the backbones in batches of about ``batch_size`` clips taken from several files. ``ordered`` (the
        default) yields results in the order of ``paths``; ``ordered=False`` yields each as soon as it is ready.
        A worker process that dies (a crash inside FFmpeg, say) costs only the file it was reading: that file is
        reported as failed and the others are prepared again.
        """
        paths = [str(p) for p in paths]
        if not paths:
            return
        ds = _PrepareDataset(paths, self.settings, keep_first_frames, self.file_timeout)
        ready: dict[int, ItemResult] = {}
        next_out = 0
        for res in self._results(ds):
            if not ordered:
                yield res[1]
                continue
            ready[res[0]] = res[1]
            while next_out in ready:
                yield ready.pop(next_out)
                next_out += 1

    # -- internals --------------------------------------------------------------------------------------------
    def _results(self, ds: _PrepareDataset) -> Iterator[tuple[int, ItemResult]]:
        """(index, result) for every file of ``ds``, in the order they finish."""
        batcher = _ClipBatcher(self.backbones)
        self.stats = {"wait_s": 0.0, "forward_s": 0.0, "passes": 0, "files": 0}
        todo = list(range(len(ds)))
        try:
            while todo:
                returned: set[int] = set()
                try:
                    for i, item, err in self._timed(self._prepared(ds, todo, returned, on_start=self._warm_backbones)):
                        if err is not None:
                            yield i, ItemResult(ds.paths[i], error=err[1], error_type=err[0])
                            continue
                        batcher.add(i, item)
                        yield from self._pump(ds, batcher)
                    yield from self._pump(ds, batcher, final=True)
                    return
                except _WorkerCrashed as crash:
                    left = [i for i in todo if i not in crash.returned]
                    # the files in flight when it died: prepare each alone in a fresh process to find the culprit(s)
                    in_flight = left[: self.workers * self.prefetch]
                    log.warning("a decoding worker died (%s); retrying %d file(s) one at a time", crash.cause, len(in_flight))
                    for i in in_flight:
                        got: set[int] = set()
                        try:
                            for j, item, err in self._prepared(ds, [i], got, workers=1):
                                if err is not None:
                                    yield j, ItemResult(ds.paths[j], error=err[1], error_type=err[0])
                                else:
                                    batcher.add(j, item)
                                    yield from self._pump(ds, batcher)
                        except _WorkerCrashed as again:
                            msg = f"{ds.paths[i]}: the decoding process died while reading this file ({again.cause})"
                            log.warning("%s", msg)
                            yield i, ItemResult(ds.paths[i], error=msg, error_type="DecodeError")
                    todo = left[len(in_flight) :]
            yield from self._pump(ds, batcher, final=True)
        finally:
            self.stats.update(forward_s=round(batcher.forward_s, 3), passes=batcher.passes, wait_s=round(self.stats["wait_s"], 3))
            log.debug("extraction: %s", self.stats)

    def _warm_backbones(self) -> None:
        """While the workers that have just started prepare the first files: build the models if they wait for it
        (``Backbones(lazy=True)``), and on a GPU tune the kernels."""
        if not self.backbones.built:
            t = time.perf_counter()
            self.backbones.build()
            self.stats["build_s"] = round(time.perf_counter() - t, 3)
            self.stats["wait_s"] -= time.perf_counter() - t  # _timed counts it as waiting: it is not
        if self.backbones.device.type == "cuda":
            dt = self.backbones.warm_up(self.settings)
            self.stats["warm_up_s"] = round(dt, 3)
            self.stats["wait_s"] -= dt  # _timed counts it as waiting: it is not

    def _timed(self, gen):
        """Pass ``gen`` through, adding the time spent waiting for it to ``stats['wait_s']``."""
        while True:
            t = time.perf_counter()
            try:
                out = next(gen)
            except StopIteration:
                return
            finally:
                self.stats["wait_s"] += time.perf_counter() - t
            self.stats["files"] += 1
            yield out

    def _pump(self, ds: _PrepareDataset, batcher: "_ClipBatcher", final: bool = False) -> Iterator[tuple[int, ItemResult]]:
        """Run full passes (and, when ``final``, the last partial one); a pass that fails is redone file by file,
        so one file that breaks the backbones costs only itself."""
        while len(batcher) >= self.backbones.batch_size or (final and len(batcher)):
            try:
                done = batcher.run()
            except Exception as exc:  # noqa: BLE001 - isolate the culprit
                log.debug("batched forward failed (%s); retrying its files one at a time", exc)
                files = batcher.items(batcher.rows[: self.backbones.batch_size])
                batcher.drop(i for i, _ in files)
                for i, it in files:
                    try:
                        yield i, ItemResult(ds.paths[i], features=self.backbones.features([it])[0])
                    except Exception as exc1:  # noqa: BLE001
                        msg = f"{ds.paths[i]}: feature extraction failed ({type(exc1).__name__}: {exc1})"
                        yield i, ItemResult(ds.paths[i], error=msg, error_type=type(exc1).__name__)
                continue
            for i, f in done:
                yield i, ItemResult(ds.paths[i], features=f)

    def _prepared(self, ds: _PrepareDataset, indices: list[int], returned: set[int], workers: int | None = None, on_start=None):
        """Prepare ``indices`` in worker processes (or here when there are none), yielding as each finishes.
        ``on_start()`` runs once the workers are started (before the first file is waited for)."""
        workers = self.workers if workers is None else workers
        if workers == 0:
            if on_start is not None:
                on_start()
            for i in indices:
                returned.add(i)
                yield ds[i]
            return
        ctx = _worker_context(cuda=self.backbones.device.type == "cuda")
        if ctx is None and self.backbones.built:
            # the forked workers inherit it; with models still to build, the workers do it themselves meanwhile
            warm_up(ds.settings)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(ds, indices),
            multiprocessing_context=ctx,
            pin_memory=self.backbones.device.type == "cuda",
            batch_size=None,
            shuffle=False,
            num_workers=min(workers, len(indices)),
            collate_fn=_identity,
            worker_init_fn=functools.partial(_worker_init, main_pid=os.getpid()),
            prefetch_factor=self.prefetch,
            persistent_workers=False,
            in_order=False,
            timeout=_POLL_S,  # wake up regularly: a dead worker is noticed, and a hung one below
        )
        hang_limit = (self.file_timeout + _HANG_MARGIN_S) if self.file_timeout else None
        it = iter(loader)
        if on_start is not None:
            on_start()
        last = time.monotonic()
        try:
            while True:
                try:
                    out = next(it)
                except StopIteration:
                    return
                except RuntimeError as exc:
                    text = str(exc)
                    if "DataLoader" not in text:
                        raise
                    if "timed out" in text:
                        if hang_limit is None or time.monotonic() - last < hang_limit:
                            continue  # still within the time a file may take
                        exc = RuntimeError(f"no file finished in {hang_limit:.0f} s: a worker hangs")
                    elif not ("exited unexpectedly" in text or "killed by signal" in text):
                        raise
                    raise _WorkerCrashed(set(returned), exc) from None
                last = time.monotonic()
                returned.add(out[0])
                yield out
        finally:
            # stop the workers now (a hung one is terminated), not whenever the iterator is collected
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
