"""Fusion checkpoints: one .safetensors file, weights plus a JSON header; loading never runs code.

The header (safetensors metadata key ``thqa``) holds the format version, the fusion config, the extraction settings
(preprocessing included), the identity of the backbone weights the model was trained on (source and sha256), whether
the spatial branch was fine-tuned (its weights then travel in the file under ``spatial.``), training facts, and
(optional) ``calibration``: the validation residuals behind prediction intervals (:mod:`thqa.conformal`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from thqa._atomic import atomic_path
from thqa.errors import CheckpointError, CheckpointMismatchError
from thqa.models.fusion import FusionConfig, FusionModel
from thqa.pipeline import ExtractionSettings

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "check_backbones", "preprocessing", "FORMAT"]

FORMAT = "thqa-fusion/1"


@dataclass
class Checkpoint:
    """A loaded fusion checkpoint."""

    model: FusionModel
    settings: ExtractionSettings
    backbones: dict  #: {"swin_t": {...BackboneInfo}, "slowfast_r50": {...}}
    spatial_state: dict | None = None  #: fine-tuned ECA + Swin-T weights, when the spatial branch was trained
    meta: dict = field(default_factory=dict)  #: training facts (epoch, metrics, seed, ...)
    path: Path | None = None
    calibration: dict | None = None  #: validation residuals for prediction intervals (thqa.conformal); None in older files

    @property
    def trained_on_random_init(self) -> bool:
        return any(b.get("source") == "random-init" for b in self.backbones.values())


def preprocessing(settings: ExtractionSettings) -> dict:
    """The input preprocessing of both backbones, as stored beside the weights (for readers of a checkpoint)."""
    from thqa.features import spatial, temporal

    return {
        "spatial": {
            "frame": "first frame of each clip",
            "resize_short_side": settings.short_side,
            "interpolation": "bicubic, antialiased",
            "crop": settings.crop,
            "crop_mode": "centre (random when fine-tuning)",
            "mean": list(spatial.IMAGENET_MEAN),
            "std": list(spatial.IMAGENET_STD),
        },
        "temporal": {
            "frames": settings.clip_frames,
            "resize": [settings.frame_size, settings.frame_size],
            "mean": [temporal.SLOWFAST_MEAN] * 3,
            "std": [temporal.SLOWFAST_STD] * 3,
            "slow_frames": settings.clip_frames // temporal.ALPHA,
        },
        "audio": settings.audio.to_dict(),
    }


def save_checkpoint(
    path: str | os.PathLike,
    model: FusionModel,
    *,
    settings: ExtractionSettings,
    backbones: dict,
    spatial_state: dict | None = None,
    meta: dict | None = None,
    calibration: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename). Returns the path.

    ``calibration``: :meth:`thqa.conformal.Calibration.to_dict` of the validation residuals (plain JSON), stored
    under the header's ``"calibration"`` key when given.
    """
    from safetensors.torch import save_file

    from thqa import __version__

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"fusion.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if spatial_state is not None:
        tensors.update({f"spatial.{k}": v.detach().cpu().contiguous() for k, v in spatial_state.items()})
    header = {
        "format": FORMAT,
        "thqa_version": __version__,
        "fusion_config": model.config.to_dict(),
        "extraction": settings.to_dict(),
        "preprocessing": preprocessing(settings),
        "backbones": backbones,
        "finetuned_spatial": spatial_state is not None,
        "meta": meta or {},
    }
    if calibration is not None:
        header["calibration"] = calibration
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata={"thqa": json.dumps(header, sort_keys=True)})
    return p


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing file, not a thqa checkpoint, unknown format, or weights that do not fit.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get("thqa")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{p}: not a readable .safetensors checkpoint ({type(exc).__name__}: {exc})") from exc
    if raw is None:
        raise CheckpointError(f"{p}: has no thqa header: not a thqa fusion checkpoint")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p}: corrupt thqa header ({exc})") from exc
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{p}: unknown checkpoint format {header.get('format')!r} (this thqa reads {FORMAT})")
    try:
        model = FusionModel(FusionConfig.from_dict(header["fusion_config"]))
        fusion_sd = {k[len("fusion.") :]: v for k, v in tensors.items() if k.startswith("fusion.")}
        model.load_state_dict(fusion_sd, strict=True)
        settings = ExtractionSettings.from_dict(header["extraction"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{p}: does not fit this version of the fusion model ({exc})") from exc
    spatial = {k[len("spatial.") :]: v for k, v in tensors.items() if k.startswith("spatial.")} or None
    model.eval()
    return Checkpoint(model, settings, header.get("backbones", {}), spatial, header.get("meta", {}), p, header.get("calibration"))


def _describe(b: dict) -> str:
    if not b:
        return "unknown weights"
    if b.get("source") == "random-init":
        return f"random-init weights (seed {b.get('seed')}, sha256 {b.get('sha256', '')[:12]})"
    return f"pretrained weights (sha256 {b.get('sha256', '')[:12]}{', ' + b['path'] if b.get('path') else ''})"


def check_backbones(ck: Checkpoint, built: dict, *, names: tuple[str, ...]) -> None:
    """Refuse to score or train on top of backbones other than those a checkpoint was trained on.

    ``built`` maps backbone names to :class:`~thqa.weights.BackboneInfo` dicts of the backbones in use.
    """
    for name in names:
        want = ck.backbones.get(name)
        have = built.get(name)
        if want is None or have is None:
            continue
        if want.get("sha256") != have.get("sha256"):
            hint = ""
            if want.get("source") == "random-init" and have.get("source") != "random-init":
                hint = " This checkpoint was trained on random-init backbones: pass --random-init (random_init=True)."
            elif want.get("source") != "random-init" and have.get("source") == "random-init":
                hint = " This checkpoint needs the pretrained backbone weights: drop --random-init and provide them."
            raise CheckpointMismatchError(
                f"{ck.path}: trained on {name} with {_describe(want)}, but the {name} in use has {_describe(have)}.{hint}"
            )
