"""Stage 2 of extraction (CPU or GPU, batched across files): the backbones of the table in
:mod:`thqa.features.registry` (Swin-T on the first frames, SlowFast on the clips, and any other registered) run over
the prepared inputs of several files at once, every pass of one shape.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from thqa.errors import WeightsError
from thqa.features.prepare import PreparedVideo
from thqa.features.registry import BackboneSpec, module_of, specs
from thqa.features.settings import LOGGER, ExtractionSettings, precision_for, resolve_device
from thqa.features.weights import WeightsOptions, build, known_info
from thqa.features.workers import start_fork_server

__all__ = ["VideoFeatures", "Backbones", "assemble"]

log = logging.getLogger(LOGGER)

#: the slots every VideoFeatures has a field for; the features of any other registered backbone land in ``extra``
_FIELDS = ("spatial", "temporal")


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
    #: slot -> (N, dim) float32 of every further registered backbone (see :mod:`thqa.features.registry`)
    extra: dict = field(default_factory=dict)


def _lazy_model(slot: str, doc: str) -> property:
    """A :class:`Backbones` attribute for one slot's model: built on first read when it waits for a lazy build; setting
    it replaces the model (and cancels its pending build)."""

    def get(self) -> torch.nn.Module | None:
        return self.model(slot)

    def set_(self, module: torch.nn.Module | None) -> None:
        self.set_model(slot, module)

    return property(get, set_, doc=doc)


def _info_of(slot: str, doc: str) -> property:
    """A :class:`Backbones` attribute for one slot's :class:`~thqa.features.weights.BackboneInfo` (None: not wanted)."""

    def get(self):
        return self._infos.get(slot)

    def set_(self, info) -> None:
        self._infos[slot] = info

    return property(get, set_, doc=doc)


class Backbones:
    """The backbones of the registry (:mod:`thqa.features.registry`) on one device, run batched over clips of many
    files.

    Args:
        spatial, temporal: whether to build the spatial (Swin-T) and the temporal (SlowFast) backbone.
        only: the names of the backbones to build (None: every registered one, less those ``spatial`` and
            ``temporal`` turn off).
        batch_size: clips (and Swin-T frames) per pass, every pass padded to it (default 48 on a GPU, 1 on a CPU).
            Part of what decides the numbers in bf16 (kernels are chosen by shape), as the settings are; which files
            share a pass never is.
        channels_last: channels-last 3-D convolutions for SlowFast (default: on a GPU, and on a CPU running torch on
            2 or more threads, where SlowFast took 0.90-0.92 s a clip against 1.01-1.03 s; on 1 thread it is slower,
            2.17 s against 2.00 s: interleaved runs on the 2-core AVX2 machine, fp32, same numbers to 6e-8).
        start_workers: on a GPU, start the decoding workers' fork server now, so that its imports overlap the
            model building (False where no decoding workers will follow, e.g. in a Ray actor).
        precision: "auto" (bf16 autocast on a GPU and on a CPU with bf16 in hardware, else fp32: see
            :func:`~thqa.features.settings.precision_for`), "fp32" or "bf16" (autocast); recorded in :attr:`infos`
            and so in every cache key and checkpoint made with these backbones.
        lazy: build the models when first used (or :meth:`build` is called) rather than now, when their identity
            (:attr:`infos`) is known without them (digests remembered by :mod:`thqa.features.digests`); else now. A
            :class:`~thqa.features.extractor.FeatureExtractor` with decoding workers builds them once the workers have
            started, so that the workers' start (imports, the first files) and the model building run side by side.
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
        only: Iterable[str] | None = None,
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
        self._specs: dict[str, BackboneSpec] = {s.slot: s for s in specs()}
        self._models: dict[str, torch.nn.Module | None] = {slot: None for slot in self._specs}
        self._infos: dict = {slot: None for slot in self._specs}
        off = {"spatial": not spatial, "temporal": not temporal}
        keep = set(only) if only is not None else None
        self._pending = {s.slot for s in self._specs.values() if not off.get(s.slot) and (keep is None or s.name in keep)}
        if lazy:
            for slot in self._pending:
                self._infos[slot] = known_info(self._specs[slot].name, self.weights)
        if not lazy or any(self._infos[slot] is None for slot in self._pending):
            self.build()

    def build(self) -> "Backbones":
        """Build the models not built yet (see ``lazy``); a no-op once built.

        Raises:
            WeightsError: a weight file changed between the identity reported by :attr:`infos` and the build.
        """
        for slot in [s for s in self._specs if s in self._pending]:
            t = time.perf_counter()
            model, info = build(self._specs[slot].name, self.weights)
            known = self._infos[slot]
            if known is not None and known.sha256 != info.sha256:
                raise WeightsError(f"{info.path or info.name}: its weights changed while thqa was starting (digest {info.sha256[:12]}, not {known.sha256[:12]})")
            model.to(self.device).eval()
            memory_format = getattr(module_of(info.name), "MEMORY_FORMAT", None)
            if memory_format is not None and self.channels_last:
                model.to(memory_format=memory_format)
            self._models[slot] = model
            self._infos[slot] = known or info
            self._pending.discard(slot)
            log.debug("%s backbone built in %.2f s", slot, time.perf_counter() - t)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed clip shapes: let cuDNN pick its fastest kernels
        return self

    def model(self, slot: str) -> torch.nn.Module | None:
        """The model of ``slot`` ("spatial", "temporal", ...; built now when it waits for a lazy build), or None."""
        if slot in self._pending:
            self.build()
        return self._models.get(slot)

    def set_model(self, slot: str, module: torch.nn.Module | None) -> None:
        """Use ``module`` for ``slot`` (cancels its pending build)."""
        self._pending.discard(slot)
        self._models[slot] = module

    spatial = _lazy_model("spatial", "ECA + Swin-T (built on first use when ``lazy``), or None when not wanted.")
    temporal = _lazy_model("temporal", "SlowFast R50 without its head (built on first use when ``lazy``), or None when not wanted.")
    spatial_info = _info_of("spatial", "The spatial backbone's BackboneInfo, or None.")
    temporal_info = _info_of("temporal", "The temporal backbone's BackboneInfo, or None.")

    def inputs(self, item: PreparedVideo, slot: str) -> torch.Tensor:
        """The prepared input of ``item`` that ``slot``'s backbone reads (its registry entry's ``input``)."""
        return getattr(item, self._specs[slot].input)

    @property
    def slots(self) -> tuple[str, ...]:
        """The slots of every registered backbone, in table order."""
        return tuple(self._specs)

    @property
    def built(self) -> bool:
        """Whether every wanted model exists (False while a ``lazy`` build waits for its first use)."""
        return not self._pending

    @property
    def infos(self) -> dict[str, dict]:
        """name -> the BackboneInfo of each backbone in use, with the precision (part of cache keys, checkpoints)."""
        return {info.name: {**info.to_dict(), "precision": self.precision} for info in self._infos.values() if info is not None}

    @property
    def random_init(self) -> bool:
        return any(i is not None and i.random_init for i in self._infos.values())

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

    def warm_up(self, settings: ExtractionSettings) -> float:
        """Run one pass of zeros shaped like a full batch through each backbone, once per shape: on a GPU this is
        when cuDNN picks its kernels (seconds), so calling it while the decoding workers prepare the first files
        hides that time. Returns the seconds it took (0 when already warm)."""
        key = (settings.clip_frames, settings.frame_size, settings.crop)
        if key in self._warm_shapes:
            return 0.0
        t = time.perf_counter()
        n = self.batch_size
        zeros = {
            "spatial_input": lambda: torch.zeros(n, 3, settings.crop, settings.crop),
            "clips": lambda: torch.zeros(n, settings.clip_frames, settings.frame_size, settings.frame_size, 3, dtype=torch.uint8),
        }
        for slot in self.slots:
            if self.model(slot) is not None:
                self.run(slot, zeros[self._specs[slot].input]())
        self._warm_shapes.add(key)
        dt = time.perf_counter() - t
        log.debug("backbones warmed up for %s in %.2f s", key, dt)
        return dt

    def run(self, slot: str, x: torch.Tensor, module: torch.nn.Module | None = None) -> np.ndarray:
        """The backbone of ``slot`` (or ``module``) over its prepared input ``x`` (M, ...) -> (M, dim) float32:
        ``run_spatial`` and ``run_temporal`` for the first two slots."""
        if slot == "spatial":
            return self.run_spatial(x, module)
        if slot == "temporal" and module is None:
            return self.run_temporal(x)
        return self._forward(slot, x, module)

    def run_spatial(self, x: torch.Tensor, module: torch.nn.Module | None = None) -> np.ndarray:
        """(M, 3, 224, 224) float -> (M, 768) float32."""
        return self._forward("spatial", x, module)

    def run_temporal(self, clips: torch.Tensor) -> np.ndarray:
        """(M, T, S, S, 3) uint8 -> (M, 2304) float32. Scaling and normalising happen on the device."""
        return self._forward("temporal", clips)

    @torch.inference_mode()
    def _forward(self, slot: str, x: torch.Tensor, module: torch.nn.Module | None = None) -> np.ndarray:
        """Passes of ``batch_size`` rows of ``x`` (the last one padded) through ``slot``'s model, its input made on
        the device by its module's ``batch_input`` (when it has one), the model under autocast when bf16."""
        m = module if module is not None else self.model(slot)
        batch_input = getattr(module_of(self._specs[slot].name), "batch_input", None)
        outs = []
        for i in range(0, x.shape[0], self.batch_size):
            chunk, n = self._pad(x[i : i + self.batch_size].to(self.device, non_blocking=True))
            inputs = batch_input(chunk, self.channels_last) if batch_input is not None else chunk
            with self._autocast():
                outs.append(m(inputs)[:n].float().cpu())
        return torch.cat(outs).numpy()

    def _gather(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate on the device: each (pinned) part is copied asynchronously, not via a pageable host copy."""
        if self.device.type == "cpu":
            return torch.cat(parts) if len(parts) > 1 else parts[0]
        return torch.cat([p.to(self.device, non_blocking=True) for p in parts])

    def active(self, spatial_module: torch.nn.Module | None = None) -> list[str]:
        """The slots whose backbone runs (built now when lazy); the spatial one also when ``spatial_module`` is given."""
        return [s for s in self.slots if self.model(s) is not None or (s == "spatial" and spatial_module is not None)]

    def features(self, items: Sequence[PreparedVideo], *, spatial_module: torch.nn.Module | None = None) -> list[VideoFeatures]:
        """Run every backbone over the unique clips of several prepared files at once."""
        outs: dict[str, np.ndarray] = {}
        secs: dict[str, float] = {}
        for slot in self.active(spatial_module):
            t = time.perf_counter()
            x = self._gather([self.inputs(it, slot) for it in items])
            outs[slot] = self.run(slot, x, spatial_module if slot == "spatial" else None)
            secs[slot] = (time.perf_counter() - t) / len(items)
        out = []
        off = 0
        for it in items:
            u = len(it.unique)
            out.append(assemble_slots(it, {s: o[off : off + u] for s, o in outs.items()}, secs))
            off += u
        return out


def assemble(
    item: PreparedVideo,
    spatial: np.ndarray | None,
    temporal: np.ndarray | None,
    *,
    spatial_s: float = 0.0,
    temporal_s: float = 0.0,
) -> VideoFeatures:
    """A file's :class:`VideoFeatures` from its prepared data and the backbone outputs of its U unique clips
    (``spatial`` (U, 768), ``temporal`` (U, 2304)), repeated into clip order."""
    outs = {k: v for k, v in (("spatial", spatial), ("temporal", temporal)) if v is not None}
    return assemble_slots(item, outs, {"spatial": spatial_s, "temporal": temporal_s})


def assemble_slots(item: PreparedVideo, outs: dict[str, np.ndarray], seconds: dict[str, float]) -> VideoFeatures:
    """A file's :class:`VideoFeatures` from its prepared data and the outputs (U, dim) of its U unique clips by slot
    (``seconds``: each backbone's time for this file), repeated into clip order."""
    idx = np.asarray(item.index)
    timings = {"decode_s": item.seconds_decode, "audio_s": item.seconds_audio, "prepare_s": item.seconds_prepare}
    timings.update((f"{s}_s", seconds.get(s, 0.0) if s in outs else 0.0) for s in (*_FIELDS, *outs))
    return VideoFeatures(
        path=item.path,
        spatial=outs["spatial"][idx] if "spatial" in outs else None,
        temporal=outs["temporal"][idx] if "temporal" in outs else None,
        audio=item.audio,
        seconds=list(item.seconds),
        has_audio=item.has_audio,
        info=item.info,
        warnings=list(item.warnings),
        first_frames=[item.first_frames[i] for i in idx] if item.first_frames else None,
        first_frames_png=item.first_frames_png,
        provenance=dict(item.provenance),
        timings=timings,
        extra={s: o[idx] for s, o in outs.items() if s not in _FIELDS},
    )


class ClipBatcher:
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
        slots = self.bb.active()
        self.files[i] = {
            "item": item,
            # start the (pinned, asynchronous) copy to the GPU now, while the previous pass runs
            "in": {s: self.bb.inputs(item, s).to(dev, non_blocking=True) for s in slots},
            "out": {s: [None] * u for s in slots},
            "t": {s: 0.0 for s in slots},
            "left": u,
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

    def _pass(self, take: list[tuple[int, int]]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Every active backbone over the rows ``take``: outputs and seconds by slot."""
        outs, secs = {}, {}
        for slot in self.bb.active():
            t = time.perf_counter()
            outs[slot] = self.bb.run(slot, torch.stack([self.files[i]["in"][slot][k] for i, k in take]))
            secs[slot] = time.perf_counter() - t
        return outs, secs

    def run(self) -> list[tuple[int, VideoFeatures]]:
        """One pass over the first ``batch_size`` waiting clips; returns the files it completed."""
        take, self.rows = self.rows[: self.bb.batch_size], self.rows[self.bb.batch_size :]
        try:
            outs, secs = self._pass(take)
        except Exception:
            self.rows = take + self.rows  # the caller isolates the culprit
            raise
        self.forward_s += sum(secs.values())
        self.passes += 1
        done = []
        for r, (i, k) in enumerate(take):
            f = self.files[i]
            for slot, o in outs.items():
                f["out"][slot][k] = o[r]
                f["t"][slot] += secs[slot] / len(take)
            f["left"] -= 1
            if f["left"] == 0:
                feats = assemble_slots(f["item"], {s: np.stack(v) for s, v in f["out"].items() if s in outs}, f["t"])
                done.append((i, feats))
                del self.files[i]
        return done
