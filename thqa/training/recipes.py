"""Training recipes by name: every value a training run takes, in one small frozen dataclass.

* ``frozen`` (the default): thqa's fast mode - the fusion model alone on cached features (frozen ECA + Swin-T), Adam
  lr 1e-4, thqa's fusion head and per-clip Bi-LSTM outputs. Seconds per epoch for thousands of videos on a CPU.
* ``winner``: the method that won NTIRE 2025 XGC Track 3, as published (METHOD.md): ECA + Swin-T fine-tuned from the
  cached frames with the fusion model, Adam lr 1e-5 for the whole model, weight decay 1e-7, StepLR(2, 0.95), 50
  epochs, batch 8, L1 + rank loss, seed 3407, one Linear 3200 -> score per clip, the Bi-LSTM's output averaged to 128
  numbers, no input BatchNorm and no activation after the audio net's Linear 512. Its features are thqa's (the
  cheap CQT, bf16 backbones on a GPU): those departures change extraction, not training.
* ``winner-exact``: ``winner`` with the public code's extraction settings too: chroma_cqt at 128 bins per octave
  (896 filters), 22.05 kHz, the chroma tuning estimated per clip, MFCC with top_db 80, the first 6 seconds of a
  longer video, fp32 backbones (its audio maps: ~2.9 s of CPU per clip against 13 ms). Its features go to other
  cache entries than ``winner``'s.

Explicit options override a recipe: :func:`resolve` takes the recipe and options by their field names and returns a
:class:`Plan` (the training config, the extraction settings, the backbones' precision) that says where every value
came from - "recipe", "option" or "default" - which ``thqa train`` records in ``config.json`` and the checkpoints.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from thqa.errors import ConfigError
from thqa.features.audio import METHOD_AUDIO, AudioSettings
from thqa.features.settings import ExtractionSettings
from thqa.models.fusion_config import FusionConfig
from thqa.training.config import TrainConfig
from thqa.utils.choices import PRECISION_CHOICES, RECIPE_NAMES

__all__ = ["Recipe", "Plan", "RECIPES", "FROZEN", "WINNER", "WINNER_EXACT", "get_recipe", "resolve", "run_record", "recipe_meta", "flat_values",
           "OPTION_NAMES"]

#: TrainConfig fields a recipe sets
TRAIN_FIELDS = ("finetune_spatial", "epochs", "batch_size", "lr", "lr_spatial", "weight_decay", "step_size", "gamma", "loss", "rank_weight", "seed")
#: TrainConfig fields no recipe sets (the validation protocol)
OTHER_TRAIN_FIELDS = ("fit",)
#: ExtractionSettings fields besides the audio settings
EXTRACTION_FIELDS = tuple(k for k in ExtractionSettings.__dataclass_fields__ if k != "audio")


@dataclass(frozen=True)
class Recipe:
    """A named recipe: the training values, the fusion model and the extraction settings that a run takes."""

    name: str
    summary: str
    finetune_spatial: bool = False
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-4  #: the fusion model
    lr_spatial: float = 1e-5  #: ECA + Swin-T when fine-tuning
    weight_decay: float = 1e-7
    step_size: int = 2  #: StepLR's period, epochs
    gamma: float = 0.95  #: StepLR's factor
    loss: str = "l1+rank"
    rank_weight: float = 1.0
    seed: int = 3407
    fusion: FusionConfig = field(default_factory=FusionConfig)
    audio: AudioSettings = field(default_factory=AudioSettings)
    clip_sampling: str = "spread"  #: seconds of a video longer than the clips: "spread" over it, or the "first" ones
    precision: str = "auto"  #: the backbones' precision for extraction: "auto" (bf16 autocast on a GPU), "fp32", "bf16"

    def values(self) -> dict[str, Any]:
        """Every value by its qualified name ("train.lr", "fusion.head", "extraction.audio.sample_rate", "precision")."""
        out = {f"train.{k}": getattr(self, k) for k in TRAIN_FIELDS}
        out.update({f"fusion.{k}": v for k, v in self.fusion.to_dict().items()})
        out.update({f"extraction.audio.{k}": v for k, v in dataclasses.asdict(self.audio).items()})
        out["extraction.clip_sampling"] = self.clip_sampling
        out["precision"] = self.precision
        return out


FROZEN = Recipe(
    "frozen",
    "thqa's fast default: the fusion model alone on cached features (ECA + Swin-T frozen), lr 1e-4",
)
WINNER = Recipe(
    "winner",
    "the NTIRE 2025 winner as published: ECA + Swin-T fine-tuned with the fusion model, Adam lr 1e-5, "
    "one Linear 3200 -> score, Bi-LSTM output averaged to 128",
    finetune_spatial=True,
    lr=1e-5,
    lr_spatial=1e-5,
    fusion=FusionConfig(head="linear", lstm_pool="mean", audio_input_norm=False, embed_activation=False),
)
WINNER_EXACT = dataclasses.replace(
    WINNER,
    name="winner-exact",
    summary="winner with the public code's extraction settings (chroma_cqt 896 filters, 22.05 kHz, estimated tuning, "
    "MFCC top_db 80, the first 6 seconds) and fp32 backbones",
    audio=AudioSettings(**METHOD_AUDIO),
    clip_sampling="first",
    precision="fp32",
)
RECIPES: dict[str, Recipe] = {r.name: r for r in (FROZEN, WINNER, WINNER_EXACT)}
assert tuple(RECIPES) == RECIPE_NAMES  # the names the CLI offers without importing this module


def get_recipe(name: str | Recipe) -> Recipe:
    """The recipe called ``name`` (a Recipe passes through).

    Raises:
        ConfigError: no such recipe (the message lists them).
    """
    if isinstance(name, Recipe):
        return name
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def _groups() -> dict[str, str]:
    """Option name -> qualified name, for every option :func:`resolve` takes."""
    out = {k: f"train.{k}" for k in TRAIN_FIELDS + OTHER_TRAIN_FIELDS}
    out.update({k: f"fusion.{k}" for k in FusionConfig.__dataclass_fields__})
    out.update({k: f"extraction.{k}" for k in EXTRACTION_FIELDS})
    out.update({k: f"extraction.audio.{k}" for k in AudioSettings.__dataclass_fields__})
    out["precision"] = "precision"
    return out


#: option name (a field name of TrainConfig, FusionConfig, ExtractionSettings or AudioSettings, or "precision") ->
#: its qualified name in config.json
OPTION_NAMES: dict[str, str] = _groups()
assert len(set(OPTION_NAMES.values())) == len(OPTION_NAMES)  # no field name is in two groups


@dataclass(frozen=True)
class Plan:
    """What a run takes: its training config (``config.recipe`` and ``config.sources`` say where each value came from),
    extraction settings and the backbones' precision ("auto", "fp32" or "bf16")."""

    recipe: str | None
    config: TrainConfig
    settings: ExtractionSettings
    precision: str

    @property
    def sources(self) -> dict[str, str]:
        return self.config.sources


def resolve(recipe: str | Recipe | None = None, **options: Any) -> Plan:
    """A recipe (default ``frozen``, unnamed) with ``options`` on top.

    Options are field names: ``epochs=2``, ``lr=1e-4``, ``head="mlp"``, ``n_clips=4``, ``sample_rate=22050``,
    ``precision="fp32"``, ... (:data:`OPTION_NAMES`); None is a value only where it means one (``chroma_tuning``:
    estimated, ``mfcc_top_db``: no floor). When ``n_bins`` or ``n_frames`` (the audio maps' size) is given, the
    fusion model's ``audio_bins``/``audio_frames`` follow it; with ``maps`` (the audio maps), ``audio_channels_in``.

    Raises:
        ConfigError: an unknown recipe or option, or values that do not fit together.
    """
    named = recipe is not None
    r = get_recipe(recipe if named else "frozen")
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTION_NAMES))}")
    nullable = {"chroma_tuning", "mfcc_top_db"}
    empty = sorted(k for k, v in options.items() if v is None and k not in nullable)
    if empty:
        raise ConfigError(f"option(s) {', '.join(empty)} given as None: give a value or leave them out")

    def pick(name: str, recipe_value: Any) -> Any:
        return options.get(name, recipe_value)

    if "n_bins" in options:
        options.setdefault("audio_bins", options["n_bins"])
    if "n_frames" in options:
        options.setdefault("audio_frames", options["n_frames"])
    if "maps" in options:  # the model's audio input channels follow the audio maps
        options.setdefault("audio_channels_in", AudioSettings(maps=options["maps"]).validate().n_maps)
    fusion_kw = {k: pick(k, getattr(r.fusion, k)) for k in FusionConfig.__dataclass_fields__}
    fusion_kw = {k: tuple(v) if isinstance(v, list) else v for k, v in fusion_kw.items()}
    audio_kw = {k: pick(k, getattr(r.audio, k)) for k in AudioSettings.__dataclass_fields__}
    extraction_kw = {k: options[k] for k in EXTRACTION_FIELDS if k in options}
    extraction_kw["clip_sampling"] = pick("clip_sampling", r.clip_sampling)
    try:
        fusion = FusionConfig(**fusion_kw).validate()
        settings = ExtractionSettings(audio=AudioSettings(**audio_kw), **extraction_kw).validate()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"recipe {r.name}: {exc}") from None
    precision = pick("precision", r.precision)
    if precision not in PRECISION_CHOICES:
        raise ConfigError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    sources = {}
    recipe_keys = set(r.values())
    for name, qualified in OPTION_NAMES.items():
        if name in options:
            sources[qualified] = "option"
        elif named and qualified in recipe_keys:
            sources[qualified] = "recipe"
        else:
            sources[qualified] = "default"
    train_kw = {k: pick(k, getattr(r, k)) for k in TRAIN_FIELDS}
    train_kw.update({k: options[k] for k in OTHER_TRAIN_FIELDS if k in options})
    cfg = TrainConfig(**train_kw, fusion=fusion.to_dict(), recipe=r.name if named else None, sources=sources).validate()
    return Plan(r.name if named else None, cfg, settings, precision)


def flat_values(cfg: TrainConfig, settings: ExtractionSettings, precision: str | None) -> dict[str, Any]:
    """Every value of a run by its qualified name ("train.lr", "fusion.head", "extraction.audio.sample_rate", ...)."""
    out = {f"train.{k}": getattr(cfg, k) for k in TRAIN_FIELDS + OTHER_TRAIN_FIELDS}
    out.update({f"fusion.{k}": v for k, v in FusionConfig.from_dict(cfg.fusion).to_dict().items()})
    ext = dataclasses.asdict(settings)
    audio = ext.pop("audio")
    out.update({f"extraction.{k}": v for k, v in ext.items()})
    out.update({f"extraction.audio.{k}": v for k, v in audio.items()})
    out["precision"] = precision
    return out


def run_record(cfg, settings: ExtractionSettings, backbones: Mapping[str, Mapping]) -> dict:
    """What config.json says about a run's values: ``{"name": recipe or None, "settings": {qualified name: {"value",
    "from"}}}``, every value with where it came from. A config built without :func:`resolve` (no sources) counts a
    value that differs from thqa's default as an "option"."""
    precision = next((b.get("precision") for b in backbones.values() if isinstance(b, Mapping) and b.get("precision")), None)
    values = flat_values(cfg, settings, precision)
    if cfg.sources:
        sources = dict(cfg.sources)
    else:
        defaults = flat_values(TrainConfig(), ExtractionSettings(), None)
        sources = {k: "default" if k == "precision" or values[k] == defaults[k] else "option" for k in values}
    return {"name": cfg.recipe, "settings": {k: {"value": v, "from": sources.get(k, "default")} for k, v in values.items()}}


def recipe_meta(record: dict) -> dict:
    """The checkpoint's ``meta.recipe``: the recipe's name and the values options gave."""
    opts = {k: v["value"] for k, v in record["settings"].items() if v["from"] == "option"}
    return {"name": record["name"], "options": opts}
