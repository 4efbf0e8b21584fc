"""The keys of a file's two cache entries (features, first frames) and the provenance they record: what made the
numbers besides the settings and the weights (:func:`~thqa.features.pipeline.extraction_provenance`, the backbones'
precision). :mod:`thqa.data.extract` writes and reads entries under these keys; :mod:`thqa.data.prune` finds entries the
current keys never reach.
"""
from __future__ import annotations

from thqa.data.hashing import cache_key
from thqa.features.settings import ExtractionSettings, extraction_provenance

__all__ = ["features_key", "frames_key", "features_provenance", "frames_provenance", "weights_identity", "backbones_precision"]


def weights_identity(backbones: dict) -> dict:
    """``{backbone name: sha256}`` of ``backbones`` (``Backbones.infos``): the weights part of a features key."""
    return {name: b["sha256"] for name, b in sorted(backbones.items())}


def backbones_precision(backbones: dict) -> str:
    """The precision the backbones run in (``Backbones.infos`` records it per backbone; "fp32" where absent)."""
    found = {str(b.get("precision", "fp32")) for b in backbones.values()} or {"fp32"}
    return "+".join(sorted(found))


def features_provenance(backbones: dict, provenance: dict | None = None) -> dict:
    """What made a features entry's numbers besides settings and weights: ``provenance`` (default: this process's
    :func:`~thqa.features.pipeline.extraction_provenance`) and the backbones' precision."""
    return {**(provenance or extraction_provenance()), "precision": backbones_precision(backbones)}


def frames_provenance(provenance: dict | None = None) -> dict:
    """The part of the provenance that first frames depend on: the features version and the decoder."""
    p = provenance or extraction_provenance()
    return {k: p[k] for k in ("features_version", "pyav", "ffmpeg")}


def features_key(digest: str, settings: ExtractionSettings, backbones: dict, provenance: dict | None = None) -> str:
    """Key of a video's features: its content digest, every extraction setting, the backbones' sha256 and
    :func:`features_provenance` (``provenance``: that of the process that prepared the file, default this one's)."""
    doc = {"part": "features", **settings.to_dict(), "provenance": features_provenance(backbones, provenance)}
    return cache_key(content_digest=digest, settings=doc, weights=weights_identity(backbones))


def frames_key(digest: str, settings: ExtractionSettings, provenance: dict | None = None) -> str:
    """Key of a video's preprocessed first frames (no weights involved): which seconds (clips, sampling) and the
    frame size."""
    s = settings.to_dict()
    doc = {"part": "frames", "n_clips": s["n_clips"], "short_side": s["short_side"], "provenance": frames_provenance(provenance)}
    if "clip_sampling" in s:  # only when set away from the default: the keys of default settings stay put
        doc["clip_sampling"] = s["clip_sampling"]
    return cache_key(content_digest=digest, settings=doc, weights={})
