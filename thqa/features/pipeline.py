"""From a file to per-clip features, in two stages that can run in different places - the public face of extraction.

1. :func:`prepare` (CPU, one file, picklable output - it runs in DataLoader workers): probe, choose the clip
   seconds, decode only those seconds, compute the audio features, and build the backbones' input tensors.
2. :class:`Backbones` (CPU or GPU, batched across files): Swin-T on the first frames, SlowFast on the clips (and
   any other backbone of :mod:`thqa.features.registry`).

:class:`FeatureExtractor` joins them for one file or many; the scorer and the cache use it.

The code lives in one module per job; this module re-exports their public names (import them from here):

* :mod:`thqa.features.settings` - :class:`ExtractionSettings`, :data:`FEATURES_VERSION`, :func:`extraction_provenance`,
  precision and device (:func:`precision_for`, :func:`resolve_device`);
* :mod:`thqa.features.prepare` - :func:`prepare`, :class:`PreparedVideo`, the first frames' PNG coding;
* :mod:`thqa.features.runner` - :class:`Backbones`, :class:`VideoFeatures`, :func:`assemble`, the clip batcher;
* :mod:`thqa.features.workers` - the decoding workers: their pool, fork server, death with their parent, :func:`warm_up`;
* :mod:`thqa.features.extractor` - :class:`FeatureExtractor`, :class:`ItemResult`.
"""
from __future__ import annotations

from thqa.features.extractor import FeatureExtractor, ItemResult
from thqa.features.prepare import PreparedVideo, _audio_extractor, decode_frame_png, encode_frame_png, prepare
from thqa.features.runner import Backbones, ClipBatcher, VideoFeatures, assemble
from thqa.features.settings import (
    CLIP_SAMPLINGS,
    FEATURES_VERSION,
    MAX_CLIP_INPUT_BYTES,
    PRECISIONS,
    ExtractionSettings,
    clip_input_bytes,
    extraction_provenance,
    precision_for,
    resolve_device,
)
from thqa.features.weights import WeightsOptions, build_spatial, build_temporal, known_info
from thqa.features.workers import _identity, _worker_init, default_workers, start_fork_server, warm_up

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
    # public names that were importable from here, besides those listed above
    "CLIP_SAMPLINGS",
    "PRECISIONS",
    "MAX_CLIP_INPUT_BYTES",
    "clip_input_bytes",
    "ItemResult",
    "assemble",
    "ClipBatcher",
    "WeightsOptions",
    "build_spatial",
    "build_temporal",
    "known_info",
]

#: private names the benchmarks import from here (kept working; their homes are the modules above)
_BENCHMARK_NAMES = (_audio_extractor, _identity, _worker_init)
