"""Swin-T, the spatial backbone: where its weights come from, and how they become ECA + Swin-T
(:class:`~thqa.features.spatial.SpatialExtractor`). Its entry in the backbone table: :data:`thqa.features.registry.SWIN_T`.

timm is imported by the functions that build (loading it takes a second; this module is imported only to build).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from thqa.errors import WeightsError, WeightsNotFoundError, brief
from thqa.features.registry import SWIN_T
from thqa.features.spatial import SWIN_NAME, SpatialExtractor
from thqa.features.weight_caches import cached_weights
from thqa.features.weights import (
    BackboneInfo,
    WeightsOptions,
    _digest,
    _empty,
    _how,
    _locate,
    _reachable,
    _seeded,
    _spec,
    load_state_file,
    state_mismatch,
)

__all__ = ["build_spatial", "weights_file", "state_spec", "SWIN_HUB_ID"]

log = logging.getLogger(__name__)

SWIN_HUB_ID = SWIN_T.weights


def weights_file(o: WeightsOptions, how: str) -> tuple[Path, str]:
    """(path, source) of Swin-T's weights: a named file, the Hugging Face cache, a download."""
    return _locate(o.named_file(SWIN_T.name), SWIN_T.title, how, lambda: cached_weights(SWIN_T), lambda: _download_swin(o, how))


def state_spec() -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of the ECA + Swin-T state (a model on the meta device: nothing allocated)."""
    global _SPATIAL_SPEC
    if _SPATIAL_SPEC is None:
        import timm

        with torch.device("meta"):
            m = SpatialExtractor(timm.create_model(SWIN_NAME, pretrained=False, num_classes=0))
        _SPATIAL_SPEC = _spec(m.state_dict())
    return _SPATIAL_SPEC


_SPATIAL_SPEC: dict | None = None


def build_spatial(options: WeightsOptions | None = None):
    """Build the spatial extractor (ECA + Swin-T, pooled (B, 768) output).

    Returns:
        (SpatialExtractor, BackboneInfo)

    Raises:
        WeightsNotFoundError: pretrained weights requested but not available (message says how to provide them).
        WeightsError: a weights file that does not fit Swin-T.
    """
    import timm

    o = options or WeightsOptions()
    how = _how(SWIN_T.name)
    with _seeded(o.seed):
        if o.random_init:
            swin = timm.create_model(SWIN_NAME, pretrained=False, num_classes=0)
            source, path = "random-init", None
        else:
            p, source = weights_file(o, how)
            path = str(p)
            # no random initialisation that the file's weights would overwrite: built empty, then loaded
            swin = _empty(lambda: timm.create_model(SWIN_NAME, pretrained=False, num_classes=0))
            _load_swin(swin, p)
        model = SpatialExtractor(swin).eval()
    info = BackboneInfo(SWIN_T.name, source, _digest(SWIN_T.name, model, o, path), path, o.seed if o.random_init else None)
    log.info("Swin-T weights: %s%s", source, f" ({path})" if path else "")
    return model, info


def _load_swin(swin: nn.Module, path: Path) -> None:
    """Load Swin-T weights strictly (timm's own route relaxes strictness when the head is removed)."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    sd = load_state_file(path)
    try:
        sd = checkpoint_filter_fn(sd, swin)  # the Microsoft layout -> timm's; a no-op on timm's own
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        swin.load_state_dict(sd, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise WeightsError(f"{path}: does not fit Swin-T ({state_mismatch(swin.state_dict(), sd) or brief(exc)})") from exc


def _download_swin(o: WeightsOptions, how: str) -> Path:
    """Fetch the published Swin-T weights into the Hugging Face cache, or fail fast with how to provide them."""
    missing = (
        f"Swin-T pretrained weights ({SWIN_HUB_ID}, file model.safetensors) are not in the Hugging Face cache and the "
        f"hub cannot be reached (offline). Download them on a connected machine (e.g. `python -c \"import timm; "
        f"timm.create_model('{SWIN_NAME}', pretrained=True)\"` and copy $HF_HOME), or {how}."
    )
    if o.is_offline() or not _reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co")):
        raise WeightsNotFoundError(missing)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(SWIN_HUB_ID, "model.safetensors"))
    except Exception as exc:  # noqa: BLE001 - hub, HTTP and proxy errors all mean: not available
        raise WeightsNotFoundError(f"Swin-T weights download from the hub ({SWIN_HUB_ID}) failed ({type(exc).__name__}: {exc}); {how}") from exc
