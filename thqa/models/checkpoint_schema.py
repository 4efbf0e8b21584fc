"""The header of a fusion checkpoint: what every field may hold, and the checks that run before anything is built
(:func:`parse_header`, :func:`check_calibration`). :mod:`thqa.models.checkpoint` writes and loads checkpoints and
re-exports :data:`FORMAT`, :data:`MAX_CLIPS` and :func:`parse_header`.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from thqa.analysis.conformal import Calibration
from thqa.data.manifest import MOS_LIMIT
from thqa.errors import CheckpointError, ConfigError
from thqa.features.audio import AudioSettings
from thqa.features.registry import WEIGHT_SOURCES, needed as backbones_needed
from thqa.features.pipeline import PRECISIONS, ExtractionSettings
from thqa.features.spatial import CROP, SPATIAL_DIM
from thqa.features.temporal import TEMPORAL_DIM
from thqa.models.fusion import BRANCHES, FusionConfig
from thqa.training.recipes import RECIPES
from thqa.utils.choices import MAX_CLIPS

__all__ = ["FORMAT", "MAX_CLIPS", "MAX_CALIBRATION", "MAX_RESIDUAL", "parse_header", "check_calibration"]

FORMAT = "thqa-fusion/1"

# -- the header schema ----------------------------------------------------------------------------------------------
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


def parse_header(header) -> tuple[FusionConfig, ExtractionSettings, dict, bool, dict]:
    """Check a checkpoint's ``thqa`` header (parsed JSON) field by field, before anything is built.

    Returns:
        (fusion config, extraction settings, backbones, finetuned_spatial, meta).

    Raises:
        ValueError: the first field that is missing, of the wrong type or out of range, named in the message.
    """
    try:
        h = _object("the thqa header", header)
        _check_top(h)
        cfg = _fusion_config(h["fusion_config"])
        settings = _extraction(h["extraction"])
        finetuned = h.get("finetuned_spatial", False)
        if not isinstance(finetuned, bool):
            raise _Bad(f"finetuned_spatial must be true or false, got {_type_name(finetuned)}")
        _check_widths(cfg, settings)
        needed = backbones_needed(cfg.branches, finetuned_spatial=finetuned)
        backbones = _backbones(h["backbones"], needed)
        meta = _meta(h)
    except _Bad as exc:
        raise ValueError(str(exc)) from None
    return cfg, settings, backbones, finetuned, meta


def _check_top(h: dict) -> None:
    """The header's format and the fields every checkpoint has."""
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


def _check_widths(cfg: FusionConfig, settings: ExtractionSettings) -> None:
    """The model's input widths match what the extraction gives each branch it uses."""
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


def _meta(h: dict) -> dict:
    """The header's ``meta`` (training facts), with its recipe record checked, after the optional plain fields."""
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
    return meta


#: more validation residuals than any data set has: a header claiming more is not a thqa checkpoint's
MAX_CALIBRATION = 1_000_000
#: the largest validation residual |MOS - prediction| a checkpoint may carry: labels lie within +-MOS_LIMIT
MAX_RESIDUAL = 2 * MOS_LIMIT


def check_calibration(d, p: Path) -> dict | None:
    """The optional ``calibration`` field, checked (types, finite non-negative residuals, a bounded count) before use.

    Raises:
        CheckpointError: naming the file ``p`` and the problem.
    """
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
    Calibration.from_dict(d, where=str(p))  # raises CheckpointError naming the file and the problem
    return d
