"""thqa: no-reference quality assessment of talking-head videos (pictures and sound together).

>>> import thqa
>>> scorer = thqa.Scorer(checkpoint="best.safetensors")   # doctest: +SKIP
>>> scorer.score("talking_head.mp4").mos                  # doctest: +SKIP

The package is one subpackage per role: :mod:`thqa.media` (reading files), :mod:`thqa.features` (extractors,
backbones, the extraction pipeline), :mod:`thqa.models` (fusion model, checkpoints), :mod:`thqa.data` (cache,
manifests, label files), :mod:`thqa.training`, :mod:`thqa.scoring`, :mod:`thqa.analysis` (metrics, comparisons,
intervals, lip sync, plots), :mod:`thqa.synthetic` (made-up heads, degradations, the demo), :mod:`thqa.engines`
(Ray, the scoring service), :mod:`thqa.cli` and :mod:`thqa.utils`; the old flat module paths re-export for one
release with a DeprecationWarning.

Imports are at the top of every module, except where loading late is the point:

- this module's public names load their subpackage on first use (``import thqa`` loads no torch);
- the command line's modules (:mod:`thqa.cli`) import the library inside the function that runs a command
  (``thqa --help`` and argument errors load no torch), and ``--help``'s flags come from torch-free tables
  (:mod:`thqa.features.registry`, :mod:`thqa.utils.choices`);
- optional or heavy third-party libraries where only one path needs them: matplotlib (plots), dlib (lip sync's face
  locator), Ray (the engine, with an install hint), timm / pytorchvideo / huggingface_hub (building a backbone),
  librosa / spafe (the audio maps, also in decoding workers), PyAV / scipy's resampler (decoding), OpenCV (frame
  PNGs), safetensors' numpy reader (cache entries), tqdm (progress bars), threadpoolctl (one BLAS thread), and torch
  in the modules that must stay torch-free otherwise (weight digests' keys, CPU facts, the CLI's thread option);
- the cache keys of features: computed without torch or PyAV (:mod:`thqa.utils.torch_info`,
  :mod:`thqa.features.identity`, :mod:`thqa.features.decoder_versions`), so that a ``thqa extract`` whose every entry
  is cached loads neither; :mod:`thqa.models` loads its torch models (FusionModel, AudioNet) on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

from thqa.errors import *  # noqa: F401,F403
from thqa.errors import __all__ as _errors_all

# heavy submodules (torch, timm, librosa) load on first use, so `import thqa` stays fast
_LAZY = {
    "Scorer": ("thqa.scoring.scorer", "Scorer"),
    "ScoreResult": ("thqa.scoring.scorer", "ScoreResult"),
    "FeatureExtractor": ("thqa.features.pipeline", "FeatureExtractor"),
    "ExtractionSettings": ("thqa.features.pipeline", "ExtractionSettings"),
    "WeightsOptions": ("thqa.features.weights", "WeightsOptions"),
    "FeatureCache": ("thqa.data.cache", "FeatureCache"),
    "evaluate": ("thqa.analysis.metrics", "evaluate"),
    "estimate_av_offset": ("thqa.analysis.sync", "estimate_av_offset"),
    "SyncResult": ("thqa.analysis.sync", "SyncResult"),
    "SyncSettings": ("thqa.analysis.sync", "SyncSettings"),
    "sync_plot": ("thqa.analysis.plots", "sync_plot"),
    "timeline_plot": ("thqa.analysis.plots", "timeline_plot"),
    "compare": ("thqa.analysis.comparison", "compare"),
    "Client": ("thqa.engines.client", "Client"),
}

__all__ = ["__version__", *_errors_all, *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'thqa' has no attribute {name!r}")
