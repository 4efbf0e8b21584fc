"""Fusion checkpoints: one .safetensors file, weights plus a JSON header; loading never runs code.

The header (safetensors metadata key ``thqa``) holds the format version, the fusion config, the extraction settings
(preprocessing included), the identity of the backbone weights the model was trained on (source and sha256), whether
the spatial branch was fine-tuned (its weights then travel in the file under ``spatial.``), training facts
(``meta``: epoch, validation metrics, seed, loss, and ``recipe``: the recipe's name and the options that changed it), and
(optional) ``calibration``: the validation residuals behind prediction intervals (:mod:`thqa.analysis.conformal`).

What each header field may hold, and the checks run before anything is built, are in
:mod:`thqa.models.checkpoint_schema` (``parse_header``, ``FORMAT`` and ``MAX_CLIPS`` are importable from here too).
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from thqa import __version__
from thqa.errors import CheckpointError, CheckpointMismatchError, brief, terminal_safe
from thqa.features import spatial, temporal
from thqa.features.pipeline import ExtractionSettings
from thqa.features.registry import needed as backbones_needed
from thqa.features.weights import DEFAULT_SEED, WeightsOptions, spatial_state_spec, state_mismatch
from thqa.models.checkpoint_schema import FORMAT, MAX_CALIBRATION, MAX_CLIPS, MAX_RESIDUAL, check_calibration, parse_header  # noqa: F401 (re-exported)
from thqa.models.fusion import FusionConfig, FusionModel
from thqa.utils.atomic import atomic_path
from thqa.utils.hints import option

__all__ = [
    "Checkpoint", "save_checkpoint", "load_checkpoint", "parse_header", "check_backbones", "preprocessing", "describe_recipe",
    "backbones_made", "describe_backbones", "weights_for",
    "FORMAT", "MAX_CLIPS",
]


@dataclass
class Checkpoint:
    """A loaded fusion checkpoint."""

    model: FusionModel
    settings: ExtractionSettings
    backbones: dict  #: {"swin_t": {...BackboneInfo}, "slowfast_r50": {...}}
    spatial_state: dict | None = None  #: fine-tuned ECA + Swin-T weights, when the spatial branch was trained
    meta: dict = field(default_factory=dict)  #: training facts (epoch, metrics, seed, ...)
    path: Path | None = None
    calibration: dict | None = None  #: validation residuals for prediction intervals (thqa.analysis.conformal); None in older files

    @property
    def trained_on_random_init(self) -> bool:
        return any(b.get("source") == "random-init" for b in self.backbones.values())

    @property
    def recipe(self) -> str | None:
        """The name of the recipe it was trained with (``meta.recipe``); None when none was named or recorded."""
        r = self.meta.get("recipe")
        return r.get("name") if isinstance(r, dict) else None

    @property
    def features_precision(self) -> str | None:
        """The precision its cached features were extracted in ("fp32", "bf16-autocast"); None when not recorded."""
        return next((b["precision"] for b in self.backbones.values() if isinstance(b, dict) and b.get("precision")), None)

    @property
    def scoring_precision(self) -> str:
        """The backbones' precision to score with: "fp32" when it was trained on fp32 features (a GPU then runs fp32
        too, as for ``winner-exact``), else "auto" (bf16 autocast on a GPU, fp32 on a CPU)."""
        return "fp32" if self.features_precision == "fp32" else "auto"


def preprocessing(settings: ExtractionSettings) -> dict:
    """The input preprocessing of both backbones, as stored beside the weights (for readers of a checkpoint)."""
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

    ``calibration``: :meth:`thqa.analysis.conformal.Calibration.to_dict` of the validation residuals (plain JSON), stored
    under the header's ``"calibration"`` key when given.
    """
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


#: largest checkpoint file read (a fusion model is ~10 MB; with fine-tuned ECA + Swin-T ~120 MB)
MAX_CHECKPOINT_BYTES = 2 << 30
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def describe_recipe(meta: dict) -> str:
    """A checkpoint's training recipe in words: "recipe winner", "recipe winner with train.epochs=2", "no recipe
    named (train.lr=0.001)", or "recipe not recorded" for checkpoints written before thqa recorded recipes."""
    r = meta.get("recipe") if isinstance(meta, dict) else None
    if not isinstance(r, dict):
        return "recipe not recorded"
    opts = r.get("options") or {}
    changed = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(opts.items()))
    if r.get("name"):
        return f"recipe {r['name']}" + (f" with {changed}" if changed else "")
    return "no recipe named" + (f" ({changed})" if changed else " (thqa's defaults)")


# -- loading --------------------------------------------------------------------------------------------------------
def _inventory(f) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype name) of every tensor in an open safetensors file, without reading the data."""
    out = {}
    for k in f.keys():
        sl = f.get_slice(k)
        out[k] = (tuple(sl.get_shape()), _SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype().lower()))
    return out


def _expected_fusion(cfg: FusionConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of the fusion model's state, from a model on the meta device (nothing allocated)."""
    with torch.device("meta"):
        m = FusionModel(cfg)
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in m.state_dict().items()}


def _load_tensors(p: Path, f, names) -> dict:
    try:
        return {k: f.get_tensor(k) for k in names}
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt data section
        raise CheckpointError(f"{p}: its weights cannot be read ({brief(exc)})") from exc


#: the tensors a checkpoint may hold: the fusion model's, and the fine-tuned spatial branch's
_TENSOR_PREFIXES = ("fusion.", "spatial.")


def _check_finite(p: Path, tensors: dict) -> None:
    """Refuse NaN/Inf weights at load (they would make every score non-finite, file after file)."""
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            n = int((~torch.isfinite(v)).sum())
            raise CheckpointError(f"{p}: tensor {k} holds {n} NaN/Inf value(s) of {v.numel()}: the weights are corrupt")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`.

    The header is checked field by field (:func:`parse_header`: types, bounds, the backbones' identity) and the
    tensors' names, shapes and dtypes against the model the header describes before any model is built.

    Raises:
        CheckpointError: missing file, not a thqa checkpoint, unknown format, a bad header field, or weights that do
            not fit (the message is one line naming the file and the first problem).
    """
    p = Path(path)
    _check_file(p)
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get("thqa")
            inventory = _inventory(f)
            cfg, settings, backbones, finetuned, meta, calibration = _read_header(p, raw)
            names = _check_inventory(p, inventory, cfg, finetuned)
            tensors = _load_tensors(p, f, names)
            _check_finite(p, tensors)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a file that is not one
        raise CheckpointError(f"{p}: not a readable .safetensors checkpoint ({brief(exc)})") from exc
    model = FusionModel(cfg)
    try:
        model.load_state_dict({k[len("fusion.") :]: v for k, v in tensors.items() if k.startswith("fusion.")}, strict=True)
    except (RuntimeError, ValueError) as exc:  # shapes and names were checked: this is not expected
        raise CheckpointError(f"{p}: its fusion weights do not fit ({brief(exc)})") from exc
    spatial_state = {k[len("spatial.") :]: v for k, v in tensors.items() if k.startswith("spatial.")} or None
    model.eval()
    return Checkpoint(model, settings, backbones, spatial_state, meta, p, calibration)


def _check_file(p: Path) -> None:
    """CheckpointError unless ``p`` is a regular file of a plausible size."""
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        raise CheckpointError(f"{p}: checkpoint file not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{p}: checkpoint file not found ({'a folder' if stat.S_ISDIR(st.st_mode) else 'not a regular file'})")
    if st.st_size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{p}: {st.st_size / 2**30:.1f} GiB is far larger than any thqa checkpoint; not loaded")


def _read_header(p: Path, raw: str | None) -> tuple[FusionConfig, ExtractionSettings, dict, bool, dict, dict | None]:
    """The checked header (:func:`parse_header`) and calibration of the file ``p``; CheckpointError naming it."""
    if raw is None:
        raise CheckpointError(f"{p}: has no thqa header: not a thqa fusion checkpoint")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p}: corrupt thqa header ({exc})") from exc
    try:
        cfg, settings, backbones, finetuned, meta = parse_header(header)
    except ValueError as exc:
        raise CheckpointError(f"{p}: {exc}") from None
    calibration = check_calibration(header.get("calibration"), p)
    return cfg, settings, backbones, finetuned, meta, calibration


def _check_inventory(p: Path, inventory: dict, cfg: FusionConfig, finetuned: bool) -> list[str]:
    """Check the file's tensors (names, shapes, dtypes) against the model its header describes, before reading any;
    the names of the tensors to load."""
    fusion = {k[len("fusion.") :]: v for k, v in inventory.items() if k.startswith("fusion.")}
    problem = state_mismatch(_expected_fusion(cfg), fusion)
    if problem:
        raise CheckpointError(f"{p}: its fusion weights do not fit the model its header describes: {problem}")
    other = sorted(k for k in inventory if not k.startswith(_TENSOR_PREFIXES))
    if other:
        raise CheckpointError(
            f"{p}: holds {len(other)} tensor(s) that are not part of a thqa model (first: {terminal_safe(other[0])[:80]}); "
            f"a checkpoint holds only {' and '.join(k + '*' for k in _TENSOR_PREFIXES)} tensors"
        )
    spatial_names = [k for k in inventory if k.startswith("spatial.")]
    if finetuned != bool(spatial_names):
        raise CheckpointError(
            f"{p}: finetuned_spatial is {str(finetuned).lower()} but the file holds "
            f"{len(spatial_names) or 'no'} spatial.* tensors"
        )
    if spatial_names:
        problem = state_mismatch(spatial_state_spec(), {k[len("spatial.") :]: inventory[k] for k in spatial_names})
        if problem:
            raise CheckpointError(f"{p}: its fine-tuned spatial weights do not fit ECA + Swin-T: {problem}")
    return [f"fusion.{k}" for k in fusion] + spatial_names


def _describe(b: dict) -> str:
    if not b:
        return "unknown weights"
    if b.get("source") == "random-init":
        return f"random-init weights (seed {b.get('seed')}, sha256 {b.get('sha256', '')[:12]})"
    return f"pretrained weights (sha256 {b.get('sha256', '')[:12]}{', ' + b['path'] if b.get('path') else ''})"


def check_backbones(ck: Checkpoint, built: dict, *, names: tuple[str, ...]) -> None:
    """Refuse to score or train on top of backbones other than those a checkpoint was trained on.

    ``built`` maps backbone names to :class:`~thqa.features.weights.BackboneInfo` dicts of the backbones in use.
    """
    for name in names:
        want = ck.backbones.get(name)
        have = built.get(name)
        if want is None or have is None:
            continue
        if want.get("sha256") != have.get("sha256"):
            hint = ""
            if want.get("source") == "random-init" and have.get("source") != "random-init":
                hint = f" This checkpoint was trained on random-init backbones: pass {option('random_init=True')}."
            elif want.get("source") != "random-init" and have.get("source") == "random-init":
                hint = f" This checkpoint needs the pretrained backbone weights: drop {option('random_init=True')} and provide them."
            raise CheckpointMismatchError(
                f"{ck.path}: trained on {name} with {_describe(want)}, but the {name} in use has {_describe(have)}.{hint}"
            )


# -- how the backbones were made, and scoring with the same ------------------------------------------------------------
def _names_in_use(ck: Checkpoint) -> tuple[str, ...]:
    """The backbones a checkpoint's model needs built (a fine-tuned Swin-T travels in the file)."""
    branches = ck.model.config.branches
    return backbones_needed(branches, finetuned_spatial=ck.spatial_state is not None)


def backbones_made(ck: Checkpoint) -> dict | None:
    """How the backbones a checkpoint needs were made, from its ``backbones`` record: ``{"random_init": True,
    "seed": N}``, or ``{"random_init": False, "sha256": {name: digest}}`` for pretrained weight files. None when the
    record does not say (random-init without a seed, backbones made both ways, none needed): scoring with such a
    checkpoint takes the weights options as given, as before thqa followed the record."""
    recs = [ck.backbones.get(n) for n in _names_in_use(ck)]
    if not recs or any(not isinstance(r, dict) for r in recs):
        return None
    if all(r.get("source") == "random-init" for r in recs):
        seeds = {r.get("seed") for r in recs}
        if len(seeds) != 1 or None in seeds:
            return None
        return {"random_init": True, "seed": int(seeds.pop())}
    if any(r.get("source") == "random-init" for r in recs):
        return None
    return {"random_init": False, "sha256": {n: r["sha256"] for n, r in zip(_names_in_use(ck), recs)}}


def describe_backbones(made: dict) -> str:
    """:func:`backbones_made`'s answer in words: "random-init backbones (seed 3407)" or "pretrained backbones
    (swin_t sha256 1a2b3c4d5e6f, slowfast_r50 sha256 ...)"."""
    if made["random_init"]:
        return f"random-init backbones (seed {made['seed']})"
    return "pretrained backbones (" + ", ".join(f"{n} sha256 {d[:12]}" for n, d in made["sha256"].items()) + ")"


def weights_for(
    ck: Checkpoint,
    *,
    random_init: bool | None = None,
    seed: int | None = None,
    swin_weights: str | None = None,
    slowfast_weights: str | None = None,
    offline: bool | None = None,
):
    """The backbones' :class:`~thqa.features.weights.WeightsOptions` to score (or evaluate) with ``ck``: by default those it
    was trained on (:func:`backbones_made`), with a note saying so; what was given explicitly must agree.

    ``random_init``, ``seed``: None follows the checkpoint. A pretrained checkpoint's weight files are found as
    always (``swin_weights``, ``$THQA_SWIN_WEIGHTS``, the caches); their digests are checked once built
    (:func:`check_backbones`).

    Returns:
        ``(WeightsOptions, note)``; the note is None when the checkpoint does not record how its backbones were made.

    Raises:
        CheckpointMismatchError: random-init asked for a pretrained checkpoint, pretrained weights (``random_init=False``
            or a weight file) for a random-init one, or another seed; the message names both sides.
    """
    made = backbones_made(ck)
    files = {"swin_weights": swin_weights, "slowfast_weights": slowfast_weights}
    if made is None:
        opts = WeightsOptions(bool(random_init), DEFAULT_SEED if seed is None else seed, swin_weights, slowfast_weights, offline)
        return opts, None
    recorded = describe_backbones(made)
    if made["random_init"]:
        asked = None
        if random_init is False or any(files.values()):
            named = [option(k, v) for k, v in files.items() if v] or [option("random_init=False")]
            asked = f"pretrained weights ({', '.join(named)})"
        elif seed is not None and seed != made["seed"]:
            asked = f"random-init backbones with {option('seed', str(seed))}"
        if asked:
            raise CheckpointMismatchError(
                f"{ck.path}: trained on {recorded}, but {asked} were asked for; leave the backbone options out to use the checkpoint's"
            )
        opts = WeightsOptions(True, made["seed"], None, None, offline)
    else:
        if random_init:
            raise CheckpointMismatchError(
                f"{ck.path}: trained on {recorded}, but random-init backbones ({option('random_init=True')}) were asked for; "
                f"drop {option('random_init=True')} and provide the pretrained weights"
            )
        opts = WeightsOptions(False, DEFAULT_SEED, swin_weights, slowfast_weights, offline)
    return opts, f"{recorded}, as {ck.path} records"
