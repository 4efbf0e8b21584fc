"""Training the fusion model on cached features; optionally fine-tuning ECA + Swin-T with it.

* Frozen mode (default): the fusion model learns from cached spatial, temporal and audio features - seconds per
  epoch for thousands of videos on a CPU.
* Fine-tuning mode (``finetune_spatial=True``): ECA + Swin-T are trained with the fusion model from the cached first
  frames (random 224 crops of the short-side-520 frame when training, the centre crop when validating), as the
  method does; SlowFast stays frozen (its features come from the cache).

The best checkpoint is chosen by the signed validation score (:func:`selection_score`: never the training loss, and
never an epoch whose predictions rank the videos backwards; the challenge's main score, which takes |SRCC| and
|PLCC|, stays for reporting); every checkpoint also keeps
its epoch's validation residuals, from which ``thqa score`` makes prediction intervals (:mod:`thqa.analysis.conformal`).
A run directory holds
``best.safetensors``, ``last.safetensors``, ``resume.pt`` (optimizer state, epoch: a killed run resumes), ``config.json``
(the resolved config and seed; under ``recipe``, every value of the run with where it came from: the recipe of
:mod:`thqa.training.recipes`, an option, or thqa's default) and per-epoch ``metrics.csv`` / ``metrics.json``. Each epoch reseeds from
``seed + epoch``, so an interrupted and resumed run gives the same numbers as an uninterrupted one on the CPU.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from thqa.analysis.conformal import calibration_from_predictions
from thqa.analysis.metrics import evaluate
from thqa.data.cache import FeatureCache
from thqa.data.extract import load_features, load_frames
from thqa.data.manifest import Sample
from thqa.errors import ConfigError, MetricError, THQAError, brief
from thqa.features.pipeline import ExtractionSettings
from thqa.features.spatial import crop, normalize
from thqa.models.checkpoint import save_checkpoint
from thqa.models.fusion import FusionConfig, FusionModel
from thqa.training.config import LOSSES, TrainConfig
from thqa.training.recipes import recipe_meta, run_record
from thqa.utils.atomic import atomic_path, atomic_write_text, check_writable, clean_partials

__all__ = ["TrainConfig", "TrainResult", "train", "LOSSES", "loss_fn", "FeatureTable", "load_table", "predict_table", "selection_score"]

log = logging.getLogger(__name__)

@dataclass
class TrainResult:
    best_epoch: int
    best_metrics: dict
    checkpoint: Path
    history: list[dict]
    run_dir: Path


# -- losses ------------------------------------------------------------------------------------------------------
def _rank_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise ranking hinge: penalise every pair ordered against the MOS, by how much."""
    dp = pred[:, None] - pred[None, :]
    dy = torch.sign(y[:, None] - y[None, :])
    mask = dy != 0
    if not bool(mask.any()):
        return pred.sum() * 0.0
    return torch.relu(-dp * dy)[mask].mean()


def _plcc_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = pred - pred.mean()
    t = y - y.mean()
    r = (p * t).sum() / (p.norm() * t.norm() + 1e-8)
    return (1.0 - r) / 2.0


def loss_fn(name: str, pred: torch.Tensor, y: torch.Tensor, *, rank_weight: float = 1.0) -> torch.Tensor:
    """Loss of predictions (B,) against MOS (B,): "l1+rank" (default), "l1", "plcc", "plcc+rank", "mse"."""
    if name == "l1":
        return torch.nn.functional.l1_loss(pred, y)
    if name == "mse":
        return torch.nn.functional.mse_loss(pred, y)
    if name == "l1+rank":
        return torch.nn.functional.l1_loss(pred, y) + rank_weight * _rank_loss(pred, y)
    if name == "plcc":
        return _plcc_loss(pred, y)
    if name == "plcc+rank":
        return _plcc_loss(pred, y) + rank_weight * _rank_loss(pred, y)
    raise ConfigError(f"unknown loss {name!r}")


# -- data --------------------------------------------------------------------------------------------------------
@dataclass
class FeatureTable:
    """Cached features of M samples with N clips each, in memory."""

    paths: list[str]
    mos: np.ndarray  #: (M,)
    spatial: np.ndarray  #: (M, N, 768)
    temporal: np.ndarray  #: (M, N, 2304)
    audio: np.ndarray  #: (M, N, 4, 128, 32)
    frames: list[list[np.ndarray]] | None = None  #: M x N x (3, 520, w) uint8, fine-tuning only

    def __len__(self) -> int:
        return len(self.paths)


def load_table(
    samples: Sequence[Sample],
    cache: FeatureCache,
    settings: ExtractionSettings,
    backbones: dict,
    *,
    frames: bool = False,
    what: str = "samples",
) -> FeatureTable:
    """Read the samples' features from the cache.

    Raises:
        ConfigError: some samples are not in the cache (the message lists the first ones: run ``thqa extract``).
    """
    sp, tp, au, ys, paths, frs, missing = [], [], [], [], [], [], []
    for s in samples:
        arr = load_features(cache, s.path, settings, backbones)
        fr = load_frames(cache, s.path, settings) if frames else None
        if arr is None or (frames and fr is None):
            missing.append(str(s.path))
            continue
        sp.append(arr["spatial"])
        tp.append(arr["temporal"])
        au.append(arr["audio"])
        ys.append(float(s.mos) if s.mos is not None else math.nan)
        paths.append(str(s.path))
        frs.append(fr)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ConfigError(
            f"{len(missing)} of the {what} are not in the feature cache{' (with frames)' if frames else ''} for these settings, "
            f"backbone weights and version of the extraction: {', '.join(missing[:3])}{more}. Run `thqa extract` with the same options first."
        )
    if not paths:
        raise ConfigError(f"no {what} to load")
    return FeatureTable(paths, np.asarray(ys, np.float32), np.stack(sp), np.stack(tp), np.stack(au), frs if frames else None)


def _spatial_batch(frames: list[list[np.ndarray]], *, size: int, random: bool, gen: torch.Generator | None) -> torch.Tensor:
    """B x N frames (3, h, w) uint8 -> (B*N, 3, size, size) normalised float32."""
    return torch.stack([normalize(crop(torch.from_numpy(f), size=size, random=random, generator=gen)) for clips in frames for f in clips])


def _forward(model, spatial_net, table: FeatureTable, idx: np.ndarray, settings: ExtractionSettings, device, *, train: bool, gen=None):
    tp = torch.from_numpy(table.temporal[idx]).to(device)
    au = torch.from_numpy(table.audio[idx]).to(device)
    if spatial_net is not None:
        b, n = tp.shape[:2]
        x = _spatial_batch([table.frames[i] for i in idx], size=settings.crop, random=train, gen=gen).to(device)
        sp = spatial_net(x).reshape(b, n, -1)
    else:
        sp = torch.from_numpy(table.spatial[idx]).to(device)
    return model(sp, tp, au)


@torch.no_grad()
def predict_table(model: FusionModel, table: FeatureTable, settings: ExtractionSettings, *, spatial_net=None, device="cpu", batch_size: int = 32) -> np.ndarray:
    """Predicted MOS (M,) for every sample of a table (eval mode, centre crops)."""
    model.eval()
    if spatial_net is not None:
        spatial_net.eval()
    out = []
    for i in range(0, len(table), batch_size):
        idx = np.arange(i, min(i + batch_size, len(table)))
        mos, _ = _forward(model, spatial_net, table, idx, settings, device, train=False)
        out.append(mos.float().cpu().numpy())
    return np.concatenate(out)


# -- the loop ------------------------------------------------------------------------------------------------------
def selection_score(m: dict) -> float:
    """What chooses the best epoch: ``(SRCC + PLCC) / 2`` with their signs when SRCC > 0, else SRCC itself (<= 0).

    The challenge's ``main_score`` takes ``|SRCC|`` and ``|PLCC|``, so an epoch whose predictions rank the videos
    backwards (SRCC -0.36) scored as well as one ranking them right; a fitted curve can also make PLCC positive for a
    negative SRCC. Here any epoch with a positive SRCC beats every epoch without one. NaN when undefined."""
    srcc, plcc = float(m["srcc"]), float(m["plcc"])
    if not (math.isfinite(srcc) and math.isfinite(plcc)):
        return math.nan
    return (srcc + plcc) / 2.0 if srcc > 0 else srcc


#: ``calibration_fraction`` is used only when the part held apart has this many units (videos or groups): the rank
#: rule needs 9 for a 90% interval; fewer and the whole validation set both chooses the epoch and calibrates
MIN_HELD_APART = 9


@dataclass(frozen=True)
class _ValSplit:
    """Which validation rows choose the epoch and which calibrate the prediction intervals."""

    choose: np.ndarray  #: row indices
    calibrate: np.ndarray
    held_apart: bool
    groups: list[str] | None  #: (len(calibrate),) group of each calibration row, or None
    label_range: tuple[float, float]
    names: list[str]  #: base names of the calibration rows


def _val_split(train_table: FeatureTable, val_table: FeatureTable, val_groups: Sequence[str] | None, fraction: float, seed: int) -> _ValSplit:
    """Hold ``fraction`` of the validation groups (videos without groups) apart from the epoch choice for
    calibration, when that part is large enough (:data:`MIN_HELD_APART` units, and 5 videos left to choose by)."""
    n = len(val_table)
    groups = None if val_groups is None else np.asarray([str(g) for g in val_groups], dtype=object)
    if groups is not None and groups.size != n:
        raise ConfigError(f"val_groups has {groups.size} entries for {n} validation samples")
    lr = (float(min(train_table.mos.min(), val_table.mos.min())), float(max(train_table.mos.max(), val_table.mos.max())))
    names = [os.path.basename(str(p)) for p in val_table.paths]
    every = np.arange(n)
    choose, calib, held = every, every, False
    if fraction > 0:
        units = np.unique(groups) if groups is not None else every
        k = int(round(fraction * units.size))
        pick = np.random.default_rng(seed).permutation(units.size)[:k]
        in_calib = np.isin(groups, units[pick]) if groups is not None else np.isin(every, pick)
        if k >= MIN_HELD_APART and n - in_calib.sum() >= 5:
            choose, calib, held = every[~in_calib], every[in_calib], True
        else:
            log.warning(
                "--calibration-fraction %g would hold apart %d validation %s (%d needed, and 5 videos left to choose the epoch): "
                "the whole validation set chooses the epoch and calibrates the intervals", fraction, k,
                "groups" if groups is not None else "videos", MIN_HELD_APART,
            )
    return _ValSplit(choose, calib, held, None if groups is None else list(groups[calib]), lr, [names[i] for i in calib])


def _calibration(pred: np.ndarray, mos: np.ndarray, split: _ValSplit) -> dict | None:
    """The epoch's residuals on the calibration rows for prediction intervals (thqa.analysis.conformal); None if a prediction
    is not finite."""
    pred, mos = pred[split.calibrate], mos[split.calibrate]
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(mos))):
        log.warning("validation predictions are not all finite: the checkpoint gets no calibration for prediction intervals")
        return None
    return calibration_from_predictions(
        pred, mos, label_range=split.label_range, groups=split.groups, held_apart=split.held_apart, videos=split.names
    ).to_dict()


def _old_selection(best: dict) -> float:
    """The selection score of a best epoch recorded by a run begun before thqa kept one (resumed runs)."""
    if "srcc" not in best:
        return -math.inf
    sel = selection_score(best)
    return sel if math.isfinite(sel) else -math.inf


def _write_json_atomic(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def _write_metrics(run: Path, history: list[dict]) -> None:
    _write_json_atomic(run / "metrics.json", history)
    keys = list(history[0].keys()) if history else []
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow(row)
    atomic_write_text(run / "metrics.csv", buf.getvalue())


def _resume_identity(doc: dict) -> dict:
    """What must match for a run directory to be resumed: everything but the number of epochs and where the
    backbone weight files lie (their sha256 must match)."""
    d = json.loads(json.dumps(doc))
    d.pop("recipe", None)  # the same values reached by another route (recipe or options) train the same run
    d.get("train", {}).pop("epochs", None)
    try:  # a run folder written before the fusion config grew fields: those fields at their defaults
        d["train"]["fusion"] = FusionConfig.from_dict(d["train"]["fusion"]).to_dict()
    except (ConfigError, KeyError, TypeError, ValueError):
        pass
    d["backbones"] = {k: v.get("sha256") for k, v in d.get("backbones", {}).items()}
    return d


def check_run_dir(run_dir: str | os.PathLike) -> None:
    """Before any work: ``run_dir`` can be a run folder (a folder, or creatable) and a config.json in it is thqa's.

    Raises:
        ConfigError: a file where the folder should be, an unwritable place, a config.json that is not thqa's.
    """
    check_writable(run_dir, "--out", folder=True)
    cfg_path = Path(run_dir) / "config.json"
    if cfg_path.exists():
        _read_run_config(cfg_path)


def _read_run_config(path: Path) -> dict:
    """A run folder's config.json, or a ConfigError saying why it cannot be one."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a thqa run configuration ({brief(exc)}); choose another --out directory") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("train", {}), dict) or not isinstance(doc.get("backbones", {}), dict) or not all(
        isinstance(v, dict) for v in doc.get("backbones", {}).values()
    ):
        raise ConfigError(f"{path}: not a thqa run configuration (not the JSON object train writes); choose another --out directory")
    return doc


def train(
    train_table: FeatureTable,
    val_table: FeatureTable,
    *,
    settings: ExtractionSettings,
    backbones: dict,
    run_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    spatial_net: torch.nn.Module | None = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    val_groups: Sequence[str] | None = None,
    calibration_fraction: float = 0.0,
) -> TrainResult:
    """Train the fusion model; returns the best epoch (by :func:`selection_score` on validation) and its checkpoint.

    Args:
        train_table, val_table: features from :func:`load_table` (with frames when fine-tuning).
        settings, backbones: the extraction settings and backbone identities of the features (stored in checkpoints).
        run_dir: the run directory; an existing run with the same config resumes after its last finished epoch.
        spatial_net: ECA + Swin-T to fine-tune (required when ``config.finetune_spatial``).
        val_groups: (len(val_table),) each validation video's content group (portrait): the prediction intervals
            are then calibrated one residual per group (:func:`thqa.analysis.conformal.calibration_from_predictions`).
        calibration_fraction: hold this fraction of the validation groups (or videos) apart from the epoch choice
            and calibrate the intervals on them alone, when that part is large enough (:data:`MIN_HELD_APART`); the
            checkpoint's calibration records whether it was (``held_apart``) and which videos it used.

    Raises:
        ConfigError: bad config, a run directory holding a different config, fewer than 5 validation samples.
    """
    cfg = (config or TrainConfig()).validate()
    _check_tables(cfg, train_table, val_table, spatial_net, calibration_fraction)
    split = _val_split(train_table, val_table, val_groups, calibration_fraction, cfg.seed)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    record = run_record(cfg, settings, backbones)
    _start_run_dir(run, cfg, record, settings, backbones, (len(train_table), len(val_table)), calibration_fraction)
    r = _setup(cfg, settings, backbones, run, spatial_net, torch.device(device), split, record)
    resume_path = run / "resume.pt"
    if resume and resume_path.exists():
        _resume(r, resume_path)
    for epoch in range(r.start_epoch, cfg.epochs + 1):
        row = _epoch(r, epoch, train_table, val_table)
        if on_epoch:
            on_epoch(row)
    if not (run / "best.safetensors").exists():
        raise THQAError(f"{run}: no epoch produced defined validation metrics; no best checkpoint was written")
    if not r.best.get("srcc", 0.0) > 0:
        log.warning("no epoch ranked the validation videos the right way round (best SRCC %.3f): the model has not learnt", r.best.get("srcc", math.nan))
    return TrainResult(int(r.best["epoch"]), r.best, run / "best.safetensors", r.history, run)


def _check_tables(cfg: TrainConfig, train_table: FeatureTable, val_table: FeatureTable, spatial_net, calibration_fraction: float) -> None:
    """ConfigError unless the tables (and the spatial net when fine-tuning) can train ``cfg``."""
    if cfg.finetune_spatial and (spatial_net is None or train_table.frames is None or val_table.frames is None):
        raise ConfigError("fine-tuning the spatial branch needs the Swin-T model and cached frames for both splits")
    if len(val_table) < 5:
        raise ConfigError(f"the validation set has {len(val_table)} samples; at least 5 are needed for SRCC/PLCC")
    if len(train_table) < 2:
        raise ConfigError(f"the training set has {len(train_table)} samples; at least 2 are needed")
    if not 0.0 <= calibration_fraction < 1.0:
        raise ConfigError(f"calibration_fraction must be in [0, 1), got {calibration_fraction!r}")


def _start_run_dir(run: Path, cfg: TrainConfig, record: dict, settings: ExtractionSettings, backbones: dict,
                   sizes: tuple[int, int], calibration_fraction: float) -> None:
    """Write the run's config.json, after removing a killed run's temp files; a run folder holding another
    configuration is refused (ConfigError)."""
    train_doc = {k: v for k, v in asdict(cfg).items() if k not in ("recipe", "sources")}
    cfg_doc = {
        "recipe": record,
        "train": train_doc,
        "extraction": settings.to_dict(),
        "backbones": backbones,
        "n_train": sizes[0],
        "n_val": sizes[1],
    }
    if calibration_fraction:
        cfg_doc["calibration_fraction"] = calibration_fraction
    cfg_path = run / "config.json"
    clean_partials(run)  # temp files of a killed earlier run
    if cfg_path.exists():
        old = _read_run_config(cfg_path)
        if _resume_identity(old) != _resume_identity(json.loads(json.dumps(cfg_doc))):
            raise ConfigError(f"{run} holds a run with a different configuration; choose another --out directory")
    _write_json_atomic(cfg_path, cfg_doc)  # a resumed run may extend the number of epochs


@dataclass
class _Run:
    """What every epoch of a training run uses and updates."""

    cfg: TrainConfig
    settings: ExtractionSettings
    backbones: dict
    run: Path
    device: torch.device
    split: _ValSplit
    model: FusionModel
    spatial_net: torch.nn.Module | None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.StepLR
    meta_base: dict
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"selection_score": -math.inf, "main_score": -math.inf, "epoch": 0})
    start_epoch: int = 1


def _setup(cfg: TrainConfig, settings: ExtractionSettings, backbones: dict, run: Path, spatial_net, device: torch.device,
           split: _ValSplit, record: dict) -> _Run:
    """Build the model (seeded), the optimizer and the scheduler; the spatial net trains only when fine-tuning."""
    torch.manual_seed(cfg.seed)
    model = FusionModel(FusionConfig.from_dict(cfg.fusion)).to(device)
    groups = [{"params": model.parameters(), "lr": cfg.lr}]
    if cfg.finetune_spatial:
        spatial_net.to(device)
        for prm in spatial_net.parameters():
            prm.requires_grad_(True)
        groups.append({"params": spatial_net.parameters(), "lr": cfg.lr_spatial})
    else:
        spatial_net = None
    opt = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    meta_base = {"seed": cfg.seed, "loss": cfg.loss, "finetune_spatial": cfg.finetune_spatial, "recipe": recipe_meta(record)}
    return _Run(cfg, settings, backbones, run, device, split, model, spatial_net, opt, sched, meta_base)


def _resume(r: _Run, resume_path: Path) -> None:
    """Load a killed run's state (model, optimizer, scheduler, history, best epoch) to go on after its last epoch."""
    try:
        st = torch.load(resume_path, map_location="cpu", weights_only=True)
        r.model.load_state_dict(st["model"])
        if r.spatial_net is not None and "spatial" in st:
            r.spatial_net.load_state_dict(st["spatial"])
        r.opt.load_state_dict(st["optimizer"])
        r.sched.load_state_dict(st["scheduler"])
        r.history = json.loads(st["history"])
        r.best = json.loads(st["best"])
        r.start_epoch = int(st["epoch"]) + 1
        log.info("resuming %s after epoch %d", r.run, r.start_epoch - 1)
    except Exception as exc:  # noqa: BLE001
        raise THQAError(f"{resume_path}: cannot resume from it ({type(exc).__name__}: {brief(exc)}); delete it to start over") from exc


def _train_epoch(r: _Run, epoch: int, table: FeatureTable) -> list[float]:
    """One pass over the training table in the epoch's seeded order; the batches' losses."""
    cfg = r.cfg
    torch.manual_seed(cfg.seed + epoch)
    gen = torch.Generator().manual_seed(cfg.seed + epoch)
    order = torch.randperm(len(table), generator=gen).numpy()
    y_train = torch.from_numpy(table.mos)
    r.model.train()
    if r.spatial_net is not None:
        r.spatial_net.train()
    losses = []
    for i in range(0, len(order), cfg.batch_size):
        idx = order[i : i + cfg.batch_size]
        if len(idx) < 2 and cfg.loss != "l1" and cfg.loss != "mse":
            continue  # a lone last sample has no pair to rank against
        mos, _ = _forward(r.model, r.spatial_net, table, idx, r.settings, r.device, train=True, gen=gen)
        loss = loss_fn(cfg.loss, mos, y_train[idx].to(r.device), rank_weight=cfg.rank_weight)
        r.opt.zero_grad(set_to_none=True)
        loss.backward()
        r.opt.step()
        losses.append(loss.item())
    r.sched.step()
    return losses


def _validate(r: _Run, epoch: int, val_table: FeatureTable) -> tuple[np.ndarray, dict]:
    """Predictions (M,) for the validation table and the metrics of the rows that choose the epoch (NaN: undefined)."""
    pred = predict_table(r.model, val_table, r.settings, spatial_net=r.spatial_net, device=r.device)
    try:
        m = evaluate(pred[r.split.choose], val_table.mos[r.split.choose], fit=r.cfg.fit)
    except MetricError as exc:
        log.warning("epoch %d: validation metrics undefined (%s)", epoch, exc)
        m = {"srcc": math.nan, "plcc": math.nan, "krcc": math.nan, "rmse": math.nan, "main_score": math.nan}
    return pred, m


def _epoch(r: _Run, epoch: int, train_table: FeatureTable, val_table: FeatureTable) -> dict:
    """Train one epoch, validate, write the checkpoints, resume state and metrics; the epoch's metrics row."""
    t0 = time.perf_counter()
    losses = _train_epoch(r, epoch, train_table)
    t_train = time.perf_counter() - t0
    pred, m = _validate(r, epoch, val_table)
    row = {
        "epoch": epoch,
        "train_loss": float(np.mean(losses)) if losses else math.nan,
        "val_srcc": m["srcc"],
        "val_plcc": m["plcc"],
        "val_krcc": m["krcc"],
        "val_rmse": m["rmse"],
        "val_main_score": m["main_score"],
        "val_selection_score": selection_score(m),
        "lr": r.opt.param_groups[0]["lr"],
        "seconds": round(t_train, 3),
    }
    r.history.append(row)
    _save_epoch(r, epoch, m, _calibration(pred, val_table.mos, r.split))
    _write_metrics(r.run, r.history)
    log.info(
        "epoch %d/%d loss %.4f val SRCC %.4f PLCC %.4f main %.4f (%.1f s)",
        epoch, r.cfg.epochs, row["train_loss"], m["srcc"], m["plcc"], m["main_score"], t_train,
    )
    return row


def _save_epoch(r: _Run, epoch: int, m: dict, calib: dict | None) -> None:
    """Write last.safetensors, best.safetensors when the epoch is the best so far, and resume.pt."""
    spatial_state = {k: v for k, v in r.spatial_net.state_dict().items()} if r.spatial_net is not None else None
    meta = {**r.meta_base, "epoch": epoch, "val": {k: m[k] for k in ("srcc", "plcc", "krcc", "rmse", "main_score")}}
    kw = {"settings": r.settings, "backbones": r.backbones, "spatial_state": spatial_state, "meta": meta, "calibration": calib}
    save_checkpoint(r.run / "last.safetensors", r.model, **kw)
    sel = selection_score(m)
    if math.isfinite(sel) and sel > r.best.get("selection_score", _old_selection(r.best)):
        r.best = {"selection_score": sel, "main_score": m["main_score"], "epoch": epoch, **{k: m[k] for k in ("srcc", "plcc", "krcc", "rmse")}}
        save_checkpoint(r.run / "best.safetensors", r.model, **kw)
    state = {
        "model": r.model.state_dict(),
        "optimizer": r.opt.state_dict(),
        "scheduler": r.sched.state_dict(),
        "epoch": epoch,
        "history": json.dumps(r.history),
        "best": json.dumps(r.best),
    }
    if r.spatial_net is not None:
        state["spatial"] = r.spatial_net.state_dict()
    with atomic_path(r.run / "resume.pt") as tmp:
        torch.save(state, tmp)
