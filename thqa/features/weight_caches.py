"""Where the published weights of a backbone wait in a cache, found without torch: the Hugging Face hub's cache
(``BackboneSpec.cache == "hf"``) or torch.hub's checkpoints folder (``"torch-hub"``).

The backbones' modules locate their weights here (a named file first, then this cache, then a download), and so does
:func:`thqa.features.identity.known_identity`, so that a run whose every feature is cached knows the backbones'
identity without importing torch. ``tests/features/test_torch_info.py`` compares :func:`torch_hub_dir` with
``torch.hub.get_dir()``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from thqa.features.registry import BackboneSpec

__all__ = ["CACHES", "torch_hub_dir", "cached_weights"]

#: the caches a BackboneSpec can name ("": none; its module locates its weights itself)
CACHES = ("", "hf", "torch-hub")
#: the file names a Hugging Face repository may hold a model's weights under, besides the spec's own ``weight_file``
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()``: torch's own answer when torch is loaded (``torch.hub.set_dir`` may have moved it),
    else torch's rule: ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "hub"):
        return Path(torch.hub.get_dir())
    home = os.getenv("TORCH_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def _hf_cached(repo_id: str, names: tuple[str, ...]) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache  # late: only where the weights may be in its cache
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        return None
    for name in names:
        try:
            hit = try_to_load_from_cache(repo_id, name)
        except Exception:  # noqa: BLE001 - a malformed cache is a miss
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def cached_weights(spec: BackboneSpec) -> Path | None:
    """The backbone's published weights in the cache its spec names, or None (not there, or no cache named)."""
    if spec.cache == "hf":
        return _hf_cached(spec.weights, tuple(dict.fromkeys((spec.weight_file, *_HF_FILES))))
    if spec.cache == "torch-hub":
        p = torch_hub_dir() / "checkpoints" / spec.weight_file
        return p if p.is_file() else None
    return None
