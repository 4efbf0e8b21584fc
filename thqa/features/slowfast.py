"""SlowFast R50, the temporal backbone: where its weights come from, how they become the headless
:class:`~thqa.features.temporal.TemporalExtractor`, and its input on the device. Its entry in the backbone table:
:data:`thqa.features.registry.SLOWFAST_R50`.

pytorchvideo is imported by the builder (loading it, and fvcore with it, takes seconds; running needs it not).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from thqa.errors import WeightsError, WeightsNotFoundError, brief
from thqa.features.registry import SLOWFAST_R50
from thqa.features.temporal import TemporalExtractor, preprocess_clips
from thqa.features.weight_caches import cached_weights, torch_hub_dir
from thqa.features.weights import (
    BackboneInfo,
    WeightsOptions,
    _digest,
    _empty,
    _how,
    _locate,
    _reachable,
    _seeded,
    load_state_file,
    state_mismatch,
)

__all__ = ["build_temporal", "weights_file", "cache_path", "batch_input", "SLOWFAST_URL", "MEMORY_FORMAT"]

log = logging.getLogger(__name__)

SLOWFAST_URL = SLOWFAST_R50.weights
#: the model's memory format when the backbones run channels-last
MEMORY_FORMAT = torch.channels_last_3d


def cache_path() -> Path:
    """Where torch.hub keeps the SlowFast checkpoint: ``$TORCH_HOME/hub/checkpoints/SLOWFAST_8x8_R50.pyth``."""
    return torch_hub_dir() / "checkpoints" / SLOWFAST_R50.weight_file


def weights_file(o: WeightsOptions, how: str) -> tuple[Path, str]:
    """(path, source) of SlowFast's weights: a named file, torch.hub's cache, a download."""
    return _locate(o.named_file(SLOWFAST_R50.name), SLOWFAST_R50.title, how, lambda: cached_weights(SLOWFAST_R50),
                   lambda: _download_slowfast(o, cache_path(), how))


def batch_input(chunk: torch.Tensor, channels_last: bool) -> list[torch.Tensor]:
    """(B, T, S, S, 3) uint8 on the device -> [slow (B, 3, T/4, S, S), fast (B, 3, T, S, S)] float32, normalised (and
    channels-last when asked)."""
    slow, fast = preprocess_clips(chunk)
    if channels_last:
        slow = slow.contiguous(memory_format=MEMORY_FORMAT)
        fast = fast.contiguous(memory_format=MEMORY_FORMAT)
    return [slow, fast]


def _download_slowfast(o: WeightsOptions, cache: Path, how: str) -> Path:
    """Fetch the publisher's SlowFast checkpoint into torch.hub's cache, or fail fast with how to provide it."""
    if o.is_offline() or not _reachable(SLOWFAST_URL):
        raise WeightsNotFoundError(
            f"SlowFast R50 pretrained weights not found: no file at {cache}, and {SLOWFAST_URL} cannot be "
            f"reached (offline). Download that file to {cache} on a connected machine, or {how}."
        )
    cache.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", SLOWFAST_URL, cache)
    try:
        torch.hub.download_url_to_file(SLOWFAST_URL, str(cache), progress=False)
    except Exception as exc:  # noqa: BLE001 - any network failure means: not available
        raise WeightsNotFoundError(f"SlowFast R50 download from {SLOWFAST_URL} failed ({exc}); {how}") from exc
    return cache


def build_temporal(options: WeightsOptions | None = None):
    """Build the frozen temporal extractor (SlowFast R50 without head, (B, 2304) output).

    Returns:
        (TemporalExtractor, BackboneInfo)

    Raises:
        WeightsNotFoundError, WeightsError: as :func:`build_spatial`.
    """
    import warnings

    with warnings.catch_warnings():  # fvcore warns about torch.jit.script on import; harmless
        warnings.simplefilter("ignore", FutureWarning)
        from pytorchvideo.models.hub import slowfast_r50

    o = options or WeightsOptions()
    with _seeded(o.seed):
        if o.random_init:
            full = slowfast_r50(pretrained=False)
            source, path = "random-init", None
        else:
            p, source = weights_file(o, _how(SLOWFAST_R50.name))
            path = str(p)
            full = _empty(lambda: slowfast_r50(pretrained=False))
            sd = load_state_file(p)
            try:
                full.load_state_dict(sd, strict=True)
            except RuntimeError as exc:
                raise WeightsError(f"{p}: does not fit SlowFast R50 ({state_mismatch(full.state_dict(), sd) or brief(exc)})") from exc
    model = TemporalExtractor(full).eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    info = BackboneInfo(SLOWFAST_R50.name, source, _digest(SLOWFAST_R50.name, model, o, path), path, o.seed if o.random_init else None)
    log.info("SlowFast R50 weights: %s%s", source, f" ({path})" if path else "")
    return model, info
