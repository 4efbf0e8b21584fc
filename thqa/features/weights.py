"""Backbone weights: published pretrained weights, local files, or seeded random initialisation - never silently.

What every backbone shares; each backbone's own route lives in its module (the table: :mod:`thqa.features.registry`).
Where the weights come from, in order:

Swin-T (:mod:`thqa.features.swin`: ``timm/swin_tiny_patch4_window7_224.ms_in1k``, ImageNet-1k):
  1. a file named by ``swin_weights=`` / ``--swin-weights`` or ``$THQA_SWIN_WEIGHTS`` (timm state dict, .safetensors,
     or the original Microsoft checkpoint);
  2. the Hugging Face hub cache (``$HF_HOME``), as timm leaves it;
  3. a download through timm from the Hugging Face hub.

SlowFast R50 (:mod:`thqa.features.slowfast`: ``SLOWFAST_8x8_R50.pyth``, Kinetics-400, from pytorchvideo's model zoo):
  1. a file named by ``slowfast_weights=`` / ``--slowfast-weights`` or ``$THQA_SLOWFAST_WEIGHTS`` (the publisher's
     ``.pyth`` dict with ``model_state``, a bare state dict, or .safetensors);
  2. torch.hub's cache: ``$TORCH_HOME/hub/checkpoints/SLOWFAST_8x8_R50.pyth``;
  3. a download into that cache.

Offline (no route works; ``THQA_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` skip the network at once) a
:class:`~thqa.errors.WeightsNotFoundError` names the file and how to provide it, within seconds - no 50 s of retries.

Random initialisation happens only when asked for (``random_init=True`` / ``--random-init``). It is seeded, so every
process builds bit-identical backbones, and it is recorded: each backbone's :class:`BackboneInfo` carries the source
and the sha256 of its parameters, which fusion checkpoints and cache keys store.

Checkpoints are loaded with ``torch.load(..., weights_only=True)`` or safetensors: loading never runs code.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
from torch import nn

from thqa.errors import WeightsError, WeightsNotFoundError, brief
from thqa.features.digests import DigestCache, file_key, random_init_key, remembered_digest
from thqa.features.identity import (  # noqa: F401 - defined without torch there, importable from here as before
    DEFAULT_SEED,
    ENV_OFFLINE,
    BackboneInfo,
    WeightsOptions,
    _check_named_file,
    _how,
    known_identity,
)
from thqa.features.registry import SLOWFAST_R50, SWIN_T, module_of, spec
from thqa.features.spatial import SWIN_NAME  # noqa: F401 - importable from here, as before the registry
from thqa.utils.hints import option

__all__ = [
    "WeightsOptions",
    "BackboneInfo",
    "build",
    "build_spatial",
    "build_temporal",
    "known_info",
    "state_digest",
    "load_state_file",
    "state_mismatch",
    "spatial_state_spec",
    "SWIN_HUB_ID",
    "SLOWFAST_URL",
    "DEFAULT_SEED",
]

log = logging.getLogger(__name__)

SWIN_HUB_ID = SWIN_T.weights
SLOWFAST_URL = SLOWFAST_R50.weights
SLOWFAST_FILE = SLOWFAST_R50.weight_file
ENV_SWIN = SWIN_T.env
ENV_SLOWFAST = SLOWFAST_R50.env


def state_digest(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host can be opened within ``timeout`` seconds (DNS included)."""
    host = urlparse(url).hostname or url
    port = urlparse(url).port or 443
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok and ok[0])


def _spec(state) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype name) of a state dict of tensors (or of such pairs, passed through)."""
    out = {}
    for k, v in state.items():
        out[k] = (tuple(v.shape), str(v.dtype).removeprefix("torch.")) if isinstance(v, torch.Tensor) else (tuple(v[0]), str(v[1]))
    return out


def state_mismatch(expected, got, *, examples: int = 2) -> str | None:
    """One line saying how a state dict ``got`` differs from what a model ``expected``, or None when it fits.

    Both map names to tensors or to ``(shape, dtype name)`` pairs. Counts missing and unexpected names, tensors of
    another shape and of another dtype, with a few examples each (never the whole 7 KB list torch prints). Another
    dtype is refused rather than cast: a float16 file lost precision on the way, and an integer one is not weights.
    """
    want, have = _spec(expected), _spec(got)
    parts = []

    def few(names: list[str]) -> str:
        return ", ".join(names[:examples]) + (", ..." if len(names) > examples else "")

    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    shape = sorted(k for k in set(want) & set(have) if want[k][0] != have[k][0])
    dtype = sorted(k for k in set(want) & set(have) if want[k][0] == have[k][0] and want[k][1] != have[k][1])
    if missing:
        parts.append(f"{len(missing)} missing ({few(missing)})")
    if extra:
        parts.append(f"{len(extra)} unexpected ({few(extra)})")
    if shape:
        k = shape[0]
        parts.append(f"{len(shape)} of another shape (e.g. {k}: {list(have[k][0])} in the file, {list(want[k][0])} in the model)")
    if dtype:
        k = dtype[0]
        parts.append(f"{len(dtype)} of another dtype (e.g. {k}: {have[k][1]} in the file, the model needs {want[k][1]}; not cast)")
    return "; ".join(parts) + f" of {len(want)} tensors" if parts else None


def _unsafe_content(exc: BaseException) -> str:
    """What a weights-only torch.load refused, in a few words (e.g. 'unsupported GLOBAL posix.system')."""
    m = re.search(r"(unsupported GLOBAL [\w.]+|Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+)", str(exc))
    return m.group(1) if m else "objects other than tensors"


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict without running code: .safetensors, or torch.load(weights_only=True).

    A dict holding ``model_state`` / ``state_dict`` / ``model`` (as checkpoints from training scripts do) is unwrapped.
    """
    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{p}: holds Python objects besides tensors ({_unsafe_content(exc)}), which thqa never loads because "
            "loading them can run code; use the publisher's weights file, or a .safetensors / plain state-dict copy"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any failure to parse is the file's fault
        raise WeightsError(f"{p}: cannot be read as a weights file ({type(exc).__name__}: {brief(exc)})") from exc
    for key in ("model_state", "state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{p}: holds no state dict of tensors")
    return sd


def _empty(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` without paying for random initialisation: the model is made on the meta device (no memory, no
    random numbers), given uninitialised CPU storage, and its non-persistent buffers (which no weight file holds,
    e.g. Swin-T's relative position index and attention masks) are computed by the modules' own
    ``init_non_persistent_buffers``. Every parameter and persistent buffer must then be loaded (strictly).

    Raises:
        WeightsError: a module holds a non-persistent buffer it cannot recompute (thqa would otherwise run with
            garbage in it); cannot happen with the timm and pytorchvideo models thqa builds.
    """
    with torch.device("meta"):
        model = build()
    model.to_empty(device="cpu")
    for name, m in model.named_modules():
        if hasattr(m, "init_non_persistent_buffers"):
            m.init_non_persistent_buffers()
        elif any(m._buffers.get(b) is not None for b in m._non_persistent_buffers_set):
            raise WeightsError(f"cannot build {type(model).__name__} empty: {name or 'the model'} has non-persistent buffers")
    return model


def known_info(backbone: str, options: WeightsOptions | None = None) -> BackboneInfo | None:
    """The :class:`BackboneInfo` that :func:`build` of ``backbone`` (a registry name: "swin_t", "slowfast_r50", ...)
    will report, without building anything, when its digest is remembered (:mod:`thqa.features.digests`); else None.

    Raises:
        WeightsNotFoundError: as the builders (the weights are located - downloaded if need be - here).
    """
    o = options or WeightsOptions()
    known = known_identity(backbone, o)
    if known is not False:  # random-init or a named file: known (or not remembered) without the module's route
        return known
    p, source = _weights_file(backbone, o)
    sha = DigestCache().get(file_key(backbone, p))
    return BackboneInfo(backbone, source, sha, str(p), None) if sha else None


def _digest(backbone: str, model: nn.Module, o: WeightsOptions, path: str | None) -> str:
    """The model's :func:`state_digest`, remembered per weight file or seed (:mod:`thqa.features.digests`)."""
    key = random_init_key(backbone, o.seed) if o.random_init else file_key(backbone, path) if path else None
    return remembered_digest(key, lambda: state_digest(model))


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's CPU generator for a build, leaving the caller's random stream as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _locate(named: str | None, what: str, how: str, cached: Callable[[], Path | None], download: Callable[[], Path]) -> tuple[Path, str]:
    """The weights route shared by both backbones: a named file, else the cache, else a download."""
    if named:
        return _check_named_file(named, what, how), "file"
    hit = cached()
    if hit is not None:
        return hit, "cache"
    return download(), "download"


def _weights_file(backbone: str, o: WeightsOptions) -> tuple[Path, str]:
    """(path, source) of ``backbone``'s weights: a named file, its cache, a download (its module's route)."""
    return module_of(backbone).weights_file(o, _how(backbone))


def build(backbone: str, options: WeightsOptions | None = None) -> tuple[nn.Module, BackboneInfo]:
    """Build backbone ``backbone`` (a registry name) with its module's builder.

    Returns:
        (the module in eval mode, its :class:`BackboneInfo`)

    Raises:
        WeightsNotFoundError: pretrained weights requested but not available (message says how to provide them).
        WeightsError: a weights file that does not fit the backbone.
    """
    return getattr(module_of(backbone), spec(backbone).builder)(options)


def build_spatial(options: WeightsOptions | None = None):
    """Build the spatial extractor (ECA + Swin-T, pooled (B, 768) output): :func:`thqa.features.swin.build_spatial`."""
    return build(SWIN_T.name, options)


def build_temporal(options: WeightsOptions | None = None):
    """Build the frozen temporal extractor (SlowFast R50 without head, (B, 2304) output):
    :func:`thqa.features.slowfast.build_temporal`."""
    return build(SLOWFAST_R50.name, options)


def spatial_state_spec() -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of the ECA + Swin-T state: :func:`thqa.features.swin.state_spec`."""
    return module_of(SWIN_T.name).state_spec()


def slowfast_cache_path() -> Path:
    """Where torch.hub keeps the SlowFast checkpoint: :func:`thqa.features.slowfast.cache_path`."""
    return module_of(SLOWFAST_R50.name).cache_path()
