"""The backbone table: every frozen network thqa runs over a file's clips, one entry each.

An entry (:class:`BackboneSpec`) names the backbone (``swin_t``: the name its :class:`~thqa.features.weights.BackboneInfo`,
checkpoints, cache keys and the ``weights`` of result rows carry), the slot it fills (the :class:`~thqa.features.runner.Backbones`
attribute and the :class:`~thqa.features.runner.VideoFeatures` field: ``spatial``, ``temporal``; any other slot lands in
``VideoFeatures.extra``), its module and builder, its feature width, which prepared input it reads, where its weights
come from (hub id or URL, file name, environment variable, keyword and command-line flag), and the version of the code
that turns weights into its state (:attr:`BackboneSpec.code_version`, part of the remembered digests' keys:
:mod:`thqa.features.digests`).

A backbone's module provides

* the builder (``builder``): ``(WeightsOptions | None) -> (nn.Module, BackboneInfo)``, seeded and recorded as
  :func:`thqa.features.weights.build` expects;
* ``weights_file(options, how) -> (Path, source)``: where its weights are (a named file, a cache, a download); a
  named file (``options.named_file(name)``) always comes first, as "file": :func:`thqa.features.identity.known_identity`
  relies on it to name the weights without importing the module;
* optionally ``batch_input(chunk, channels_last)``: the model's input from a padded chunk of its prepared input, on the
  device (default: the chunk itself), and ``MEMORY_FORMAT``: the memory format its model takes when ``channels_last``.

This module imports no torch: the command line builds its ``--*-weights`` options from it.
A new backbone is one :func:`register` call (or one entry in :data:`BACKBONES`) and its own module.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Iterable, NamedTuple

__all__ = ["BackboneSpec", "BACKBONES", "WEIGHT_SOURCES", "register", "spec", "specs", "by_slot", "needed", "module_of", "SWIN_T", "SLOWFAST_R50"]

#: where a backbone's weights came from (:attr:`BackboneInfo.source`); "checkpoint": a fine-tuned one that travels in
#: a fusion checkpoint
WEIGHT_SOURCES = ("random-init", "file", "cache", "download", "checkpoint")


class BackboneSpec(NamedTuple):
    """One backbone (see the module's docs); immutable. A NamedTuple, not a dataclass: `thqa --help` builds its flags
    from this table, and dataclasses would load inspect and ast for it."""

    name: str  #: its identity's name (BackboneInfo.name, checkpoints, cache keys): never change it for a backbone
    slot: str  #: Backbones attribute / VideoFeatures field ("spatial", "temporal"; others land in VideoFeatures.extra)
    title: str  #: how messages name it ("Swin-T")
    module: str  #: the module that builds and runs it
    builder: str  #: the module's function (WeightsOptions | None) -> (nn.Module, BackboneInfo)
    dim: int  #: its feature width: (n_clips, dim) per file
    input: str  #: the PreparedVideo attribute it reads: "spatial_input" (U, 3, 224, 224) float or "clips" (U, T, S, S, 3) uint8
    library: str  #: the distribution that defines its architecture (its version is part of the digests' keys)
    weights: str  #: the published weights: a hub id or a URL ("" for random-init only)
    weight_file: str  #: the published file's name
    env: str  #: the environment variable that names a local weights file
    keyword: str  #: the keyword (WeightsOptions, Scorer) that names a local weights file; the flag is its dashed form
    code_version: int  #: bump when a change of the code in ``code`` can change the state built from the same weights
    code: tuple[str, ...]  #: "module:name" of the functions and classes that turn weights into its state
    help: str = ""  #: the command-line flag's help
    #: the cache its published weights wait in, found without torch (thqa.features.weight_caches): "hf" (the Hugging
    #: Face hub's, ``weights`` is the repository), "torch-hub" (torch.hub's checkpoints folder, ``weight_file``), or ""
    cache: str = ""

    @property
    def flag(self) -> str:
        """The command-line option naming a local weights file (``--swin-weights``)."""
        return "--" + self.keyword.replace("_", "-")


_WEIGHTS_CODE = (
    "thqa.features.weights:build",
    "thqa.features.weights:_empty",
    "thqa.features.weights:_seeded",
    "thqa.features.weights:load_state_file",
    "thqa.features.weights:state_digest",
)

SWIN_T = BackboneSpec(
    name="swin_t",
    slot="spatial",
    title="Swin-T",
    module="thqa.features.swin",
    builder="build_spatial",
    dim=768,
    input="spatial_input",
    library="timm",
    weights="timm/swin_tiny_patch4_window7_224.ms_in1k",
    weight_file="model.safetensors",
    env="THQA_SWIN_WEIGHTS",
    keyword="swin_weights",
    code_version=1,
    code=(*_WEIGHTS_CODE, "thqa.features.swin:build_spatial", "thqa.features.swin:_load_swin", "thqa.features.spatial:ECA",
          "thqa.features.spatial:SpatialExtractor", "thqa.features.spatial:eca_kernel_size", "thqa.features.spatial:SWIN_NAME"),
    help="local Swin-T weights (else $THQA_SWIN_WEIGHTS, the HF cache, a download)",
    cache="hf",
)

SLOWFAST_R50 = BackboneSpec(
    name="slowfast_r50",
    slot="temporal",
    title="SlowFast R50",
    module="thqa.features.slowfast",
    builder="build_temporal",
    dim=2304,
    input="clips",
    library="pytorchvideo",
    weights="https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/SLOWFAST_8x8_R50.pyth",
    weight_file="SLOWFAST_8x8_R50.pyth",
    env="THQA_SLOWFAST_WEIGHTS",
    keyword="slowfast_weights",
    code_version=1,
    code=(*_WEIGHTS_CODE, "thqa.features.slowfast:build_temporal", "thqa.features.temporal:TemporalExtractor"),
    help="local SLOWFAST_8x8_R50.pyth (else $THQA_SLOWFAST_WEIGHTS, torch.hub's cache, a download)",
    cache="torch-hub",
)

#: name -> entry, in the order backbones are built, run and recorded
BACKBONES: dict[str, BackboneSpec] = {s.name: s for s in (SWIN_T, SLOWFAST_R50)}


def register(entry: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the table (after the others). Raises ValueError for a name or slot already taken."""
    if entry.name in BACKBONES or any(s.slot == entry.slot for s in BACKBONES.values()):
        raise ValueError(f"a backbone named {entry.name!r} or filling the slot {entry.slot!r} is registered already")
    BACKBONES[entry.name] = entry
    return entry


def spec(name: str) -> BackboneSpec:
    """The entry of backbone ``name``. Raises KeyError naming the known ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"no backbone named {name!r} (known: {', '.join(BACKBONES)})") from None


def specs() -> tuple[BackboneSpec, ...]:
    """Every entry, in table order."""
    return tuple(BACKBONES.values())


def by_slot(slot: str) -> BackboneSpec:
    """The entry filling ``slot`` ("spatial", "temporal", ...)."""
    for s in BACKBONES.values():
        if s.slot == slot:
            return s
    raise KeyError(f"no backbone fills the slot {slot!r}")


def needed(branches: Iterable[str], *, finetuned_spatial: bool = False) -> tuple[str, ...]:
    """The names of the backbones a fusion model with ``branches`` needs built, in table order; the spatial one not
    when ``finetuned_spatial`` (its fine-tuned weights travel in the checkpoint)."""
    br = set(branches)
    return tuple(s.name for s in BACKBONES.values() if s.slot in br and not (finetuned_spatial and s.slot == "spatial"))


def module_of(name: str) -> ModuleType:
    """The module that builds and runs backbone ``name`` (imported now: it imports torch)."""
    return importlib.import_module(spec(name).module)
