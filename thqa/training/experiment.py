"""The experiment workflow in a few calls: extract into the cache, train, evaluate a checkpoint.

These are what ``thqa extract``, ``thqa train``, ``thqa evaluate --checkpoint`` and ``thqa demo`` run.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from thqa.analysis.conformal import Calibration, empirical_coverage
from thqa.analysis.metrics import evaluate_with_curve
from thqa.data.cache import FeatureCache
from thqa.data.extract import ExtractSummary, extract_files
from thqa.data.manifest import Sample
from thqa.errors import ConfigError
from thqa.features.pipeline import Backbones, ExtractionSettings, FeatureExtractor, precision_for
from thqa.features.registry import needed as backbones_needed
from thqa.features.weights import WeightsOptions, build_spatial
from thqa.models.checkpoint import check_backbones, load_checkpoint, weights_for
from thqa.scoring.scorer import default_precision
from thqa.training.config import TrainConfig
from thqa.training.loop import FeatureTable, TrainResult, load_table, predict_table, train
from thqa.training.recipes import Plan, Recipe, resolve

__all__ = ["extract_files", "train_run", "evaluate_checkpoint", "EvaluationResult"]

log = logging.getLogger(__name__)


def train_run(
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    *,
    cache_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    weights: WeightsOptions | None = None,
    settings: ExtractionSettings | None = None,
    device: str = "auto",
    backbone_batch_size: int | None = None,
    workers: int = 0,
    progress: bool = True,
    backbones: Backbones | None = None,
    recipe: "str | Recipe | Plan | None" = None,
    calibrate_by_group: bool = False,
    calibration_fraction: float = 0.0,
) -> tuple[TrainResult, ExtractSummary]:
    """Extract whatever is missing from the cache, then train (see :func:`thqa.training.loop.train`). ``precision``: of the
    backbones that extract (see :class:`~thqa.features.pipeline.Backbones`).

    ``recipe``: a recipe's name (``"winner"``, :mod:`thqa.training.recipes`), a Recipe, or a :class:`~thqa.training.recipes.Plan` from
    :func:`thqa.training.recipes.resolve` (a recipe with options on top: ``resolve("winner", epochs=10)``); it gives the
    training config, the extraction settings and the backbones' precision, so ``config`` and ``settings`` must then
    be None. Samples whose extraction fails are left out of training and reported in the returned summary.
    ``calibrate_by_group``: calibrate the prediction intervals one residual per validation content group (the
    samples' ``group``: portraits); ``calibration_fraction``: see :func:`thqa.training.loop.train`.

    Raises:
        ConfigError: ``recipe`` with ``config`` or ``settings``; given ``backbones`` of another precision than the recipe's.
    """
    config, settings, precision = _plan(recipe, config, settings)
    cfg = (config or TrainConfig()).validate()
    settings = (settings or ExtractionSettings()).validate()
    cache = FeatureCache(cache_dir)
    bb = backbones or Backbones(weights, device=device, batch_size=backbone_batch_size, precision=precision)
    if precision != "auto" and bb.precision != precision_for(bb.device, precision):
        raise ConfigError(f"the recipe asks for {precision} backbones, the backbones given run in {bb.precision}")
    extractor = FeatureExtractor(settings, backbones=bb, workers=workers)
    summary, tr, va = _extract(train_samples, val_samples, cache, extractor, frames=cfg.finetune_spatial, progress=progress)
    infos = bb.infos
    t_table = load_table(tr, cache, settings, infos, frames=cfg.finetune_spatial, what="training samples")
    v_table = load_table(va, cache, settings, infos, frames=cfg.finetune_spatial, what="validation samples")
    spatial_net = None
    if cfg.finetune_spatial:
        spatial_net, _ = build_spatial(bb.weights)  # a trainable copy, from the same weights as the cached features
    result = train(
        t_table,
        v_table,
        settings=settings,
        backbones=infos,
        run_dir=run_dir,
        config=cfg,
        spatial_net=spatial_net,
        device=str(bb.device),
        val_groups=[s.group for s in va] if calibrate_by_group else None,
        calibration_fraction=calibration_fraction,
    )
    return result, summary


def _plan(recipe: "str | Recipe | Plan | None", config: TrainConfig | None,
          settings: ExtractionSettings | None) -> tuple[TrainConfig | None, ExtractionSettings | None, str]:
    """``(config, settings, backbones' precision)`` of a run: the recipe's when one is named, else those given."""
    if recipe is None:
        return config, settings, "auto"
    if config is not None or settings is not None:
        raise ConfigError("give recipe= or config=/settings=, not both (options go on top of a recipe: thqa.training.recipes.resolve)")
    plan = recipe if isinstance(recipe, Plan) else resolve(recipe)
    return plan.config, plan.settings, plan.precision


def _extract(train_samples: Sequence[Sample], val_samples: Sequence[Sample], cache: FeatureCache, extractor: FeatureExtractor,
             *, frames: bool, progress: bool) -> tuple[ExtractSummary, list[Sample], list[Sample]]:
    """Extract what the cache lacks of both splits; ``(summary, train samples, val samples)`` without the failed files."""
    all_paths = [str(s.path) for s in list(train_samples) + list(val_samples)]
    summary = extract_files(all_paths, cache, extractor, frames=frames, progress=progress)
    failed = {p for p, _, _ in summary.failures}
    if failed:
        log.warning("%d file(s) failed extraction and are left out: %s", len(failed), ", ".join(sorted(failed)[:3]))
    tr = [s for s in train_samples if str(s.path) not in failed]
    va = [s for s in val_samples if str(s.path) not in failed]
    return summary, tr, va


@dataclass
class EvaluationResult:
    metrics: dict
    paths: list[str]
    predictions: np.ndarray  #: (M,)
    mos: np.ndarray  #: (M,)
    extraction: ExtractSummary
    #: nominal against measured coverage of the checkpoint's prediction intervals on these samples
    #: (:func:`thqa.analysis.conformal.empirical_coverage`); None when the checkpoint holds no calibration
    coverage: list[dict] | None = None


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    samples: Sequence[Sample],
    *,
    cache_dir: str | os.PathLike,
    weights: WeightsOptions | None = None,
    device: str = "auto",
    fit: str = "poly3",
    backbone_batch_size: int | None = None,
    workers: int = 0,
    progress: bool = True,
    backbones: Backbones | None = None,
    precision: str | None = None,
) -> EvaluationResult:
    """Predict every sample with a checkpoint (features from the cache, extracting what is missing) and score it.
    ``precision``: of the backbones that extract (see :class:`~thqa.features.pipeline.Backbones`).

    ``weights``: None (the default) builds the backbones the checkpoint records it was trained on (see
    :func:`thqa.models.checkpoint.weights_for`).

    Raises:
        CheckpointMismatchError: the checkpoint was trained on other backbone weights than ``weights`` gives.
        MetricError: too few samples, constant predictions, ...
    """
    ck = load_checkpoint(checkpoint)
    if backbones is None:  # the backbones the checkpoint records; given weights must agree with them
        given = {} if weights is None else {
            "random_init": weights.random_init, "seed": weights.seed if weights.random_init else None,
            "swin_weights": weights.swin_weights, "slowfast_weights": weights.slowfast_weights, "offline": weights.offline,
        }
        weights, note = weights_for(ck, **given)
        if note:
            log.info("backbones: %s", note)
    # precision: of the backbones for features missing from the cache (default: what the checkpoint was trained on)
    # lazy: built only when a feature is missing from the cache (the keys need only the remembered digests)
    bb = backbones or Backbones(weights, device=device, batch_size=backbone_batch_size, precision=default_precision(ck, precision), lazy=True)
    check_backbones(ck, bb.infos, names=backbones_needed(("spatial", "temporal"), finetuned_spatial=bool(ck.spatial_state)))
    cache = FeatureCache(cache_dir)
    extractor = FeatureExtractor(ck.settings, backbones=bb, workers=workers)
    summary = extract_files([str(s.path) for s in samples], cache, extractor, frames=ck.spatial_state is not None, progress=progress)
    failed = {p for p, _, _ in summary.failures}
    kept = [s for s in samples if str(s.path) not in failed]
    table: FeatureTable = load_table(kept, cache, ck.settings, bb.infos, frames=ck.spatial_state is not None, what="evaluation samples")
    spatial_net = None
    if ck.spatial_state is not None:
        spatial_net, _ = build_spatial(WeightsOptions(random_init=True))
        spatial_net.load_state_dict(ck.spatial_state)
        spatial_net.to(bb.device)
    model = ck.model.to(bb.device)
    with torch.inference_mode():
        pred = predict_table(model, table, ck.settings, spatial_net=spatial_net, device=bb.device)
    metrics, _ = evaluate_with_curve(pred, table.mos, fit=fit)
    coverage = None
    if ck.calibration is not None:
        coverage = empirical_coverage(pred, table.mos, Calibration.from_dict(ck.calibration, where=str(checkpoint)))
    return EvaluationResult(metrics, table.paths, pred, table.mos, summary, coverage)
