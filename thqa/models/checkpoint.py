"""Fusion checkpoints: one .safetensors file, weights plus a JSON header; loading never runs code.

The header (safetensors metadata key ``thqa``) holds the format version, the fusion config, the extraction settings
(preprocessing included), the identity of the backbone weights the model was trained on (source and sha256), whether
the spatial branch was fine-tuned (its weights then travel in the file under ``spatial.``), training facts
(``meta``: epoch, validation metrics, seed, loss, and ``recipe``: the recipe's name and the options that changed it), and
(optional) ``calibration``: the validation residuals behind prediction intervals (:mod:`thqa.analysis.conformal`).
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from thqa.utils.atomic import atomic_path
from thqa.data.manifest import MOS_LIMIT
from thqa.errors import CheckpointError, CheckpointMismatchError, ConfigError, brief, terminal_safe
from thqa.utils.choices import MAX_CLIPS  # the most clips per video a checkpoint may ask for (the command line's bound too)
from thqa.models.fusion import FusionConfig, FusionModel
from thqa.features.pipeline import PRECISIONS, ExtractionSettings
from thqa.features.registry import WEIGHT_SOURCES, needed as backbones_needed
from thqa.features.weights import state_mismatch

__all__ = [
    "Checkpoint", "save_checkpoint", "load_checkpoint", "parse_header", "check_backbones", "preprocessing", "describe_recipe",
    "backbones_made", "describe_backbones", "weights_for",
    "FORMAT", "MAX_CLIPS",
]

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

    ``calibration``: :meth:`thqa.analysis.conformal.Calibration.to_dict` of the validation residuals (plain JSON), stored
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


# -- the header schema ----------------------------------------------------------------------------------------------
#: largest checkpoint file read (a fusion model is ~10 MB; with fine-tuned ECA + Swin-T ~120 MB)
MAX_CHECKPOINT_BYTES = 2 << 30
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_BACKBONE_SOURCES = WEIGHT_SOURCES

#: what every value in a header may be: ("int" | "float", low, high) (an int is a float here, a bool never),
#: ("float?", low, high) (a number or null), ("bool",) or ("choice", one of the names)
_FUSION_BOUNDS = {
    "spatial_dim": ("int", 1, 65536),
    "temporal_dim": ("int", 1, 65536),
    "audio_channels_in": ("int", 1, 64),
    "audio_bins": ("int", 16, 1024),
    "audio_frames": ("int", 4, 1024),
    "audio_embed": ("int", 1, 8192),
    "head_hidden": ("int", 1, 8192),
    "dropout": ("float", 0.0, 0.99),
    # added with the recipes (thqa 0.2): absent from older checkpoints, which then load with today's defaults
    "head": ("choice", "mlp", "linear"),
    "lstm_pool": ("choice", "clip", "mean"),
    "audio_input_norm": ("bool",),
    "embed_activation": ("bool",),
}
_EXTRACTION_BOUNDS = {
    "n_clips": ("int", 1, MAX_CLIPS),
    "clip_frames": ("int", 4, 256),
    "frame_size": ("int", 32, 1024),
    "short_side": ("int", 32, 4096),
    "crop": ("int", 32, 4096),
    "clip_sampling": ("choice", "spread", "first"),
}
_AUDIO_BOUNDS = {
    "sample_rate": ("int", 8000, 192000),
    "n_bins": ("int", 12, 1024),
    "n_frames": ("int", 4, 1024),
    "n_fft": ("int", 16, 65536),
    "cqt_bins": ("int", 2, 4096),
    "cqt_bins_per_octave": ("int", 1, 1024),
    "cqt_fmin": ("float", 1.0, 20000.0),
    "context": ("float", 0.0, 10.0),
    "cqt_kind": ("choice", "log", "chroma"),
    "chroma_tuning": ("float?", -0.5, 0.5),
    "mfcc_top_db": ("float?", 0.0, 400.0),
}
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class _Bad(Exception):
    """Internal: a header field is wrong; the message names it."""


def _type_name(v) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null", int: "a whole number", float: "a decimal number"}
    return names.get(type(v), type(v).__name__)


def _number(where: str, v, kind: str, lo: float, hi: float):
    ok = isinstance(v, int) and not isinstance(v, bool)
    if kind == "float":
        ok = ok or (isinstance(v, float) and math.isfinite(v))
    if not ok:
        want = "a whole number" if kind == "int" else "a finite number"
        raise _Bad(f"{where} must be {want}, got {_type_name(v)} ({json.dumps(v)[:40]})")
    if not lo <= v <= hi:
        raise _Bad(f"{where} = {v} is out of range ({lo} to {hi})")
    return v


def _value(where: str, v, spec: tuple):
    """Check one header value against its spec: ("int"|"float", lo, hi), ("float?", lo, hi) (a number or null),
    ("bool",) or ("choice", name, ...)."""
    kind = spec[0]
    if kind == "bool":
        if not isinstance(v, bool):
            raise _Bad(f"{where} must be true or false, got {_type_name(v)}")
        return v
    if kind == "choice":
        if not isinstance(v, str) or v not in spec[1:]:
            raise _Bad(f"{where} must be one of {', '.join(spec[1:])}, got {json.dumps(v)[:40]}")
        return v
    if kind == "float?":
        return None if v is None else _number(where, v, "float", spec[1], spec[2])
    return _number(where, v, kind, spec[1], spec[2])


def _object(where: str, v) -> dict:
    if not isinstance(v, dict):
        raise _Bad(f"{where} must be an object, got {_type_name(v)}")
    return v


def _fields(where: str, d: dict, cls, bounds: dict, *, skip: tuple[str, ...] = ()) -> dict:
    """Check ``d``'s numbers against ``bounds``; refuse keys ``cls`` (a dataclass) does not have."""
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise _Bad(f"{where} has unknown setting(s) {', '.join(unknown)[:120]}: written by another thqa version?")
    for k, spec in bounds.items():
        if k in d:
            _value(f"{where}.{k}", d[k], spec)
    for k, v in d.items():  # fields added to the dataclass later: plain JSON scalars only
        if k not in bounds and k not in skip and isinstance(v, (dict, list)):
            raise _Bad(f"{where}.{k} must be a single value, got {_type_name(v)}")
    return d


def _int_list(where: str, v, n: int, lo: int, hi: int) -> tuple[int, ...]:
    if not isinstance(v, list) or len(v) != n:
        raise _Bad(f"{where} must be a list of {n} whole numbers, got {_type_name(v)} ({json.dumps(v)[:40]})")
    return tuple(_number(f"{where}[{i}]", x, "int", lo, hi) for i, x in enumerate(v))


def _fusion_config(d) -> FusionConfig:
    from thqa.models.fusion import BRANCHES

    d = _fields("fusion_config", _object("fusion_config", d), FusionConfig, _FUSION_BOUNDS, skip=("audio_widths", "lstm_hidden", "branches"))
    kw = dict(d)
    if "audio_widths" in d:
        kw["audio_widths"] = _int_list("fusion_config.audio_widths", d["audio_widths"], 3, 1, 1024)
    if "lstm_hidden" in d:
        kw["lstm_hidden"] = _int_list("fusion_config.lstm_hidden", d["lstm_hidden"], 2, 1, 4096)
    if "branches" in d:
        b = d["branches"]
        if not isinstance(b, list) or not b or not all(isinstance(x, str) for x in b) or len(set(b)) != len(b) or set(b) - set(BRANCHES):
            raise _Bad(f"fusion_config.branches must be a non-empty list of distinct names from {', '.join(BRANCHES)}, got {json.dumps(b)[:60]}")
        kw["branches"] = tuple(b)
    try:
        return FusionConfig(**kw).validate()
    except (ConfigError, TypeError, ValueError) as exc:
        raise _Bad(f"fusion_config: {exc}") from None


def _extraction(d) -> ExtractionSettings:
    from thqa.features.audio import AudioSettings

    d = _fields("extraction", _object("extraction", d), ExtractionSettings, _EXTRACTION_BOUNDS, skip=("audio",))
    kw = dict(d)
    if "audio" in d:
        kw["audio"] = AudioSettings(**_fields("extraction.audio", _object("extraction.audio", d["audio"]), AudioSettings, _AUDIO_BOUNDS, skip=("maps",)))
    try:
        return ExtractionSettings(**kw).validate()
    except (ConfigError, TypeError, ValueError) as exc:
        raise _Bad(f"extraction: {exc}") from None


def _backbones(d, needed: tuple[str, ...]) -> dict:
    d = _object("backbones", d)
    for name in needed:
        if name not in d:
            raise _Bad(
                f"backbones has no {name!r} entry: the checkpoint does not say which {name} weights it was trained on, "
                "so its scores could not be trusted with any; ask for a checkpoint written by `thqa train`"
            )
    for name, b in d.items():
        where = f"backbones.{name}"
        b = _object(where, b)
        sha = b.get("sha256")
        if not (isinstance(sha, str) and _SHA256_RE.fullmatch(sha)):
            raise _Bad(f"{where}.sha256 must be 64 lowercase hex digits, got {json.dumps(sha)[:80]}")
        if b.get("source") not in _BACKBONE_SOURCES:
            raise _Bad(f"{where}.source must be one of {', '.join(_BACKBONE_SOURCES)}, got {json.dumps(b.get('source'))[:40]}")
        if b.get("path") is not None and not isinstance(b.get("path"), str):
            raise _Bad(f"{where}.path must be a string or null, got {_type_name(b.get('path'))}")
        if b.get("seed") is not None:
            _number(f"{where}.seed", b["seed"], "int", -(2**63), 2**64 - 1)
        if b.get("precision") is not None and b["precision"] not in PRECISIONS:
            raise _Bad(f"{where}.precision must be one of {', '.join(PRECISIONS)}, got {json.dumps(b['precision'])[:40]}")
    return d


_RECIPE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
#: the most options a recipe record lists (thqa has about 40 settings)
_MAX_RECIPE_OPTIONS = 200


def _recipe_record(where: str, r) -> None:
    """meta.recipe: null, or {"name": a recipe name or null, "options": {setting: a JSON scalar or a short list}}."""
    if r is None:
        return
    r = _object(where, r)
    unknown = sorted(set(r) - {"name", "options"})
    if unknown:
        raise _Bad(f"{where} has unknown key(s) {', '.join(unknown)[:80]}")
    name = r.get("name")
    if name is not None and not (isinstance(name, str) and _RECIPE_NAME_RE.fullmatch(name)):
        raise _Bad(f"{where}.name must be a recipe name (lowercase letters, digits, '-', '_', '.'; at most 40) or null, got {json.dumps(name)[:60]}")
    from thqa.training.recipes import RECIPES

    if name is not None and name not in RECIPES:
        raise _Bad(f"{where}.name {json.dumps(name)} is not a recipe this thqa knows ({', '.join(RECIPES)})")
    opts = _object(f"{where}.options", r.get("options", {}))
    if len(opts) > _MAX_RECIPE_OPTIONS:
        raise _Bad(f"{where}.options lists {len(opts)} settings; at most {_MAX_RECIPE_OPTIONS}")

    def scalar(v) -> bool:
        return v is None or isinstance(v, (bool, int)) or (isinstance(v, float) and math.isfinite(v)) or (isinstance(v, str) and len(v) <= 200)

    for k, v in opts.items():
        if len(k) > 80:
            raise _Bad(f"{where}.options has a setting name of {len(k)} characters; at most 80")
        ok = scalar(v) or (isinstance(v, list) and len(v) <= 16 and all(scalar(x) for x in v))
        if not ok:
            raise _Bad(f"{where}.options.{k} must be a single value or a short list of them, got {_type_name(v)} ({json.dumps(v)[:40]})")


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


def parse_header(header) -> tuple[FusionConfig, ExtractionSettings, dict, bool, dict]:
    """Check a checkpoint's ``thqa`` header (parsed JSON) field by field, before anything is built.

    Returns:
        (fusion config, extraction settings, backbones, finetuned_spatial, meta).

    Raises:
        ValueError: the first field that is missing, of the wrong type or out of range, named in the message.
    """
    try:
        h = _object("the thqa header", header)
        if h.get("format") != FORMAT:
            raise _Bad(f"unknown checkpoint format {json.dumps(h.get('format'))[:60]} (this thqa reads {FORMAT})")
        for key in ("fusion_config", "extraction"):
            if key not in h:
                raise _Bad(f"the header has no {key!r}")
        if "backbones" not in h:
            raise _Bad(
                "the header has no 'backbones': the checkpoint does not say which backbone weights it was trained on, "
                "so its scores could not be trusted with any; ask for a checkpoint written by `thqa train`"
            )
        cfg = _fusion_config(h["fusion_config"])
        settings = _extraction(h["extraction"])
        finetuned = h.get("finetuned_spatial", False)
        if not isinstance(finetuned, bool):
            raise _Bad(f"finetuned_spatial must be true or false, got {_type_name(finetuned)}")
        from thqa.features.spatial import CROP, SPATIAL_DIM
        from thqa.features.temporal import TEMPORAL_DIM

        wanted = []  # (field, its value, what it must match, that value)
        if "audio" in cfg.branches:
            wanted += [
                ("fusion_config.audio_bins", cfg.audio_bins, "extraction.audio.n_bins", settings.audio.n_bins),
                ("fusion_config.audio_frames", cfg.audio_frames, "extraction.audio.n_frames", settings.audio.n_frames),
                ("fusion_config.audio_channels_in", cfg.audio_channels_in, "the number of extraction.audio.maps", settings.audio.n_maps),
            ]
        if "spatial" in cfg.branches:
            wanted += [
                ("fusion_config.spatial_dim", cfg.spatial_dim, "the Swin-T output", SPATIAL_DIM),
                ("extraction.crop", settings.crop, "Swin-T's input size", CROP),
            ]
        if "temporal" in cfg.branches:
            wanted.append(("fusion_config.temporal_dim", cfg.temporal_dim, "the SlowFast output", TEMPORAL_DIM))
        for name, have, what, need in wanted:
            if have != need:
                raise _Bad(f"{name} = {have} does not match {what} ({need})")
        needed = backbones_needed(cfg.branches, finetuned_spatial=finetuned)
        backbones = _backbones(h["backbones"], needed)
        meta = h.get("meta", {})
        if not isinstance(meta, dict):
            raise _Bad(f"meta must be an object, got {_type_name(meta)}")
        if "recipe" in meta:
            _recipe_record("meta.recipe", meta["recipe"])
        for key in ("thqa_version",):
            if key in h and not isinstance(h[key], str):
                raise _Bad(f"{key} must be a string, got {_type_name(h[key])}")
        if "preprocessing" in h and not isinstance(h["preprocessing"], dict):
            raise _Bad(f"preprocessing must be an object, got {_type_name(h['preprocessing'])}")
    except _Bad as exc:
        raise ValueError(str(exc)) from None
    return cfg, settings, backbones, finetuned, meta


#: more validation residuals than any data set has: a header claiming more is not a thqa checkpoint's
MAX_CALIBRATION = 1_000_000
#: the largest validation residual |MOS - prediction| a checkpoint may carry: labels lie within +-MOS_LIMIT
MAX_RESIDUAL = 2 * MOS_LIMIT


def _calibration(d, p: Path) -> dict | None:
    """The optional ``calibration`` field, checked (types, finite non-negative residuals, a bounded count) before use."""
    if d is None:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("scores"), list) or len(d["scores"]) > MAX_CALIBRATION:
        raise CheckpointError(f"{p}: calibration must be an object with a list of at most {MAX_CALIBRATION} residuals")
    for i, v in enumerate(d["scores"]):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= MAX_RESIDUAL:
            raise CheckpointError(f"{p}: calibration.scores[{i}] = {json.dumps(v)[:40]} is not a residual between 0 and {MAX_RESIDUAL:g} (twice the largest MOS)")
    rng = d.get("prediction_range")
    if rng is not None and not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= MOS_LIMIT for v in rng)):
        raise CheckpointError(f"{p}: calibration.prediction_range must be two numbers within +-{MOS_LIMIT:g}, got {json.dumps(rng)[:60]}")
    from thqa.analysis.conformal import Calibration

    Calibration.from_dict(d, where=str(p))  # raises CheckpointError naming the file and the problem
    return d


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
    import torch

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
    import torch

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
    from safetensors import safe_open

    p = Path(path)
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        raise CheckpointError(f"{p}: checkpoint file not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{p}: checkpoint file not found ({'a folder' if stat.S_ISDIR(st.st_mode) else 'not a regular file'})")
    if st.st_size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{p}: {st.st_size / 2**30:.1f} GiB is far larger than any thqa checkpoint; not loaded")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get("thqa")
            inventory = _inventory(f)
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
            calibration = _calibration(header.get("calibration"), p)
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
                from thqa.features.weights import spatial_state_spec

                problem = state_mismatch(spatial_state_spec(), {k[len("spatial.") :]: inventory[k] for k in spatial_names})
                if problem:
                    raise CheckpointError(f"{p}: its fine-tuned spatial weights do not fit ECA + Swin-T: {problem}")
            tensors = _load_tensors(p, f, [f"fusion.{k}" for k in fusion] + spatial_names)
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
    spatial = {k[len("spatial.") :]: v for k, v in tensors.items() if k.startswith("spatial.")} or None
    model.eval()
    return Checkpoint(model, settings, backbones, spatial, meta, p, calibration)


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
            from thqa.utils.hints import option

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
    from thqa.utils.hints import option
    from thqa.features.weights import DEFAULT_SEED, WeightsOptions

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
