"""thqa: no-reference quality assessment of talking-head videos (pictures and sound together).

>>> import thqa
>>> scorer = thqa.Scorer(checkpoint="best.safetensors")   # doctest: +SKIP
>>> scorer.score("talking_head.mp4").mos                  # doctest: +SKIP
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
