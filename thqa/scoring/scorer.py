"""Scoring files with a trained fusion checkpoint (or, when asked for by name, with untrained weights).

:func:`scoring_model` works out once what a scorer scores with (the checkpoint loaded, the backbones it needs, the
precision, the settings, the model digest); :class:`Scorer`, the Ray engine and ``thqa score --resume`` all use it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch

from thqa.analysis.conformal import Calibration, check_coverage
from thqa.analysis.sync import SyncSettings, estimate_av_offset
from thqa.errors import CheckpointError, ConfigError, THQAError, brief
from thqa.features.pipeline import Backbones, ExtractionSettings, FeatureExtractor, VideoFeatures, precision_for, prepare, warm_up
from thqa.features.registry import SWIN_T, needed as backbones_needed
from thqa.features.weights import DEFAULT_SEED, WeightsOptions, build_spatial, state_digest
from thqa.models.checkpoint import Checkpoint, check_backbones, load_checkpoint, weights_for
from thqa.models.fusion import FusionConfig, FusionModel
from thqa.scoring.result import NON_FINITE, ResultStamp, ScoreResult, with_interval
from thqa.scoring.timeline import second_features, timeline_scores

__all__ = ["Scorer", "ScoreResult", "ScoringModel", "scoring_model", "default_precision", "NO_MODEL_MESSAGE", "model_digest",
           "with_interval"]

log = logging.getLogger(__name__)

NO_MODEL_MESSAGE = (
    "there is no trained model: thqa does not ship fusion weights trained on people's opinions yet. "
    "Train one on a data set with MOS labels (e.g. THQA-NTIRE: `thqa extract` then `thqa train`, see the README) and "
    "pass it with --checkpoint, or pass --random-init to run the whole pipeline with untrained weights "
    "(for testing only: the scores then mean nothing)."
)


def model_digest(checkpoint: Checkpoint | None, *, random_init: bool, seed: int, precision: str,
                 settings: ExtractionSettings | None = None) -> str:
    """16 hex digits naming the model behind a score: the fusion weights (every tensor, and fine-tuned spatial
    weights; an untrained model: its seed), the extraction settings, the backbones' identity (the digests the checkpoint
    was trained on, which scoring checks; random-init or pretrained) and the backbones' resolved precision
    ("fp32", "bf16-autocast": :func:`thqa.features.pipeline.precision_for`). Equal digests give equal scores for a file."""
    h = hashlib.sha256()
    if checkpoint is None:
        ident: dict = {"fusion": "untrained", "seed": seed}
        settings = settings or ExtractionSettings()
    else:
        states = [("fusion", checkpoint.model.state_dict()), ("spatial", checkpoint.spatial_state or {})]
        for prefix, state in states:
            for name in sorted(state):
                t = state[name].detach().to("cpu").contiguous().reshape(-1)
                h.update(f"{prefix}.{name}:{t.dtype}:{tuple(state[name].shape)}\0".encode())
                h.update(t.view(torch.uint8).numpy().tobytes())
        ident = {"backbones": {k: v.get("sha256") if isinstance(v, dict) else None for k, v in sorted(checkpoint.backbones.items())}}
        settings = checkpoint.settings
    ident.update(settings=settings.to_dict(), weights="random-init" if random_init else "pretrained", precision=precision)
    h.update(json.dumps(ident, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def weights_options(checkpoint: Checkpoint | None, *, random_init: bool | None = None, seed: int | None = None,
                    swin_weights: str | None = None, slowfast_weights: str | None = None,
                    offline: bool | None = None) -> tuple[WeightsOptions, str | None]:
    """The backbones a scorer of ``checkpoint`` builds: ``(WeightsOptions, note or None)``. With a checkpoint, those it
    records (:func:`thqa.models.checkpoint.weights_for`; ``random_init``/``seed`` None follow it); without one, seeded
    random-init backbones, which must be asked for. The one rule the Scorer and ``thqa score --resume`` share.

    Raises:
        CheckpointError: no checkpoint and no ``random_init``. CheckpointMismatchError: options against the record.
    """
    if checkpoint is not None:
        return weights_for(checkpoint, random_init=random_init, seed=seed, swin_weights=swin_weights,
                           slowfast_weights=slowfast_weights, offline=offline)
    if not random_init:
        raise CheckpointError(NO_MODEL_MESSAGE)
    seed = DEFAULT_SEED if seed is None else seed
    return WeightsOptions(random_init=True, seed=seed, swin_weights=swin_weights, slowfast_weights=slowfast_weights, offline=offline), None


def calibration_of(ck: Checkpoint | None):
    """``(Calibration or None, why there is none)`` of a checkpoint (None: an untrained model)."""
    if ck is None:
        return None, "no prediction interval: no trained checkpoint"
    if ck.calibration is None:
        return None, (
            f"no prediction interval: {ck.path} holds no calibration data (written before thqa kept the validation "
            "residuals); train it again with this version to get intervals"
        )
    return Calibration.from_dict(ck.calibration, where=str(ck.path)), None


def default_precision(checkpoint: Checkpoint | None, precision: str | None = None) -> str:
    """The backbones' precision to score in, before it is resolved on a device (:func:`precision_for`): ``precision``
    when asked for, else what the checkpoint's features were made in when that was fp32
    (:attr:`Checkpoint.scoring_precision`), else "auto" (bf16 autocast on a GPU)."""
    return precision or (checkpoint.scoring_precision if checkpoint is not None else "auto")


#: the options a :class:`ScoringModel` is made from (those of :func:`scoring_model`)
_MODEL_OPTIONS = ("random_init", "seed", "swin_weights", "slowfast_weights", "offline", "precision", "settings")


@dataclass
class ScoringModel:
    """What a scorer scores with, worked out once by :func:`scoring_model`: the loaded checkpoint (None: untrained),
    the backbones to build, the features' settings, the precision asked for (resolved on a device by
    :meth:`resolved_precision`) and the prediction intervals' calibration."""

    checkpoint: Checkpoint | None
    weights: WeightsOptions
    weights_note: str | None  #: how the backbones are made, when the checkpoint's record decided it
    settings: ExtractionSettings
    precision: str  #: "auto", "fp32" or "bf16" (:func:`default_precision`)
    calibration: Calibration | None
    interval_note: str | None  #: why there is no interval (no calibration)
    options: dict = field(default_factory=dict, repr=False)  #: the options it was made from
    _digests: dict = field(default_factory=dict, repr=False)

    @property
    def untrained(self) -> bool:
        return self.checkpoint is None

    @property
    def recipe(self) -> str | None:
        return self.checkpoint.recipe if self.checkpoint is not None else None

    @property
    def finetuned(self) -> bool:
        """The checkpoint carries its own fine-tuned spatial backbone."""
        return self.checkpoint is not None and self.checkpoint.spatial_state is not None

    def resolved_precision(self, device: str | torch.device) -> str:
        """"fp32" or "bf16-autocast": what the backbones compute in on ``device``."""
        return precision_for(device, self.precision)

    def digest(self, precision: str) -> str:
        """:func:`model_digest` of this model with backbones in the resolved ``precision`` (computed once)."""
        if precision not in self._digests:
            self._digests[precision] = model_digest(self.checkpoint, random_init=self.weights.random_init, seed=self.weights.seed,
                                                    precision=precision, settings=self.settings)
        return self._digests[precision]

    def fusion(self) -> FusionModel:
        """The fusion model: the checkpoint's, or an untrained one seeded with the backbones' seed."""
        if self.checkpoint is not None:
            return self.checkpoint.model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.weights.seed)
            return FusionModel(FusionConfig())

    def stamp(self, precision: str, coverage: float, *, weights: str | None = None) -> ResultStamp:
        """How every result of this model is made with backbones in the resolved ``precision`` and intervals at
        ``coverage`` (``weights``: the label of the backbones built, default from :attr:`weights`)."""
        return ResultStamp(weights=weights or ("random-init" if self.weights.random_init else "pretrained"), untrained=self.untrained,
                           precision=precision, recipe=self.recipe, model=self.digest(precision), coverage=coverage,
                           calibration=self.calibration, interval_note=self.interval_note)

    def check_options(self, **options) -> "ScoringModel":
        """This model, when every option given (not None) is the one it was made from; else a ConfigError."""
        differ = [k for k, v in options.items() if v is not None and v != self.options.get(k)]
        if differ:
            raise ConfigError(f"options {', '.join(differ)} differ from those the scoring model was made with: pass one or the other")
        return self


def scoring_model(checkpoint: str | os.PathLike | Checkpoint | None = None, *, random_init: bool | None = None,
                  seed: int | None = None, swin_weights: str | None = None, slowfast_weights: str | None = None,
                  offline: bool | None = None, precision: str | None = None,
                  settings: ExtractionSettings | None = None) -> ScoringModel:
    """What :class:`Scorer` (same arguments) scores with, worked out once: the checkpoint loaded, the backbones it
    needs (:func:`weights_options`), its settings (``settings`` only without a checkpoint), the default precision
    (:func:`default_precision`) and its calibration (:func:`calibration_of`).

    Raises:
        CheckpointError: no checkpoint and no ``random_init``, or an unreadable checkpoint.
        CheckpointMismatchError: the options disagree with the backbones the checkpoint was trained on.
    """
    options = {"random_init": random_init, "seed": seed, "swin_weights": swin_weights, "slowfast_weights": slowfast_weights,
               "offline": offline, "precision": precision, "settings": settings}
    ck = load_checkpoint(checkpoint) if checkpoint is not None and not isinstance(checkpoint, Checkpoint) else checkpoint
    # with a checkpoint: the backbones it was trained on unless told otherwise; an explicit disagreement is an error naming both
    weights, note = weights_options(ck, random_init=random_init, seed=seed, swin_weights=swin_weights, slowfast_weights=slowfast_weights,
                                    offline=offline)
    if note:
        log.info("backbones: %s", note)
    calibration, interval_note = calibration_of(ck)
    return ScoringModel(ck, weights, note, ck.settings if ck is not None else (settings or ExtractionSettings()).validate(),
                        default_precision(ck, precision), calibration, interval_note, options)


class Scorer:
    """Predicts the MOS of talking-head files.

    Args:
        checkpoint: a fusion checkpoint (.safetensors) from ``thqa train``, or a :class:`ScoringModel` already worked
            out (:func:`scoring_model`; the model options, where given too, must be the ones it was made with). None
            requires ``random_init=True``.
        device: "auto", "cpu", "cuda", "cuda:1", ...
        random_init: build the backbones with seeded random weights instead of the pretrained ones (testing). With a
            checkpoint, None (the default) uses the backbones it records it was trained on (random-init with its
            seed, or the pretrained weights, whose digests are checked) and logs so; an explicit value that
            disagrees with the record raises :class:`~thqa.errors.CheckpointMismatchError` naming both.
        seed: the seed of random initialisation (default: the checkpoint's, else 3407).
        swin_weights, slowfast_weights: local backbone weight files (else $THQA_SWIN_WEIGHTS, $THQA_SLOWFAST_WEIGHTS,
            then the hub caches, then a download).
        batch_size: clips per backbone forward pass (default: 1 on a CPU, 48 on a GPU); workers: decoding processes for
            :meth:`score_many` (a number, or "auto": all cores but one beside a GPU, none beside a CPU - one with
            ``lazy`` on a machine of 2 or more cores: it decodes the first file while the models are built).
        coverage: of the prediction intervals (``mos_low``, ``mos_high``; :mod:`thqa.analysis.conformal`), default 0.9.
        precision: of the backbones, "auto", "fp32" or "bf16"; default: what the checkpoint's features were made in
            when that was fp32 (:attr:`Checkpoint.scoring_precision`), else "auto" (bf16 autocast on a GPU).
        warm: when files are decoded in this process (``workers`` 0, the CPU default), do the imports and numba
            set-up of decoding now (~2 s), so that the first :meth:`score` costs what the next ones do.
        lazy: build the backbones when first needed rather than now (where their digests are remembered): with
            decoding ``workers``, :meth:`iter_score` then builds them while the workers start on the first files
            (``thqa score`` does this; see the README's start-up table).

    Raises:
        CheckpointError: no checkpoint and no ``random_init``, or an unreadable checkpoint.
        CheckpointMismatchError: the checkpoint was trained on other backbone weights.
        WeightsNotFoundError: pretrained weights are needed and not available.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | ScoringModel | None = None,
        *,
        device: str = "auto",
        random_init: bool | None = None,
        seed: int | None = None,
        swin_weights: str | None = None,
        slowfast_weights: str | None = None,
        offline: bool | None = None,
        batch_size: int | None = None,
        workers: int | str = "auto",
        settings: ExtractionSettings | None = None,
        coverage: float = 0.9,
        precision: str | None = None,
        warm: bool = True,
        lazy: bool = False,
    ):
        self.coverage = check_coverage(coverage)
        options = {"random_init": random_init, "seed": seed, "swin_weights": swin_weights, "slowfast_weights": slowfast_weights,
                   "offline": offline, "precision": precision, "settings": settings}
        m = checkpoint.check_options(**options) if isinstance(checkpoint, ScoringModel) else scoring_model(checkpoint, **options)
        self.scoring_model = m
        self.checkpoint, self.weights, self.settings = m.checkpoint, m.weights, m.settings
        #: how the backbones are made, when the checkpoint's record decided it ("random-init backbones (seed 3407), as ...")
        self.weights_note = m.weights_note
        self.calibration, self.interval_note = m.calibration, m.interval_note
        model = m.fusion()
        self.backbones = self._backbones(m, model.config.branches, device=device, batch_size=batch_size, workers=workers, lazy=lazy)
        self.model = model.to(self.backbones.device).eval()
        if workers == "auto" and lazy and self.backbones.device.type == "cpu" and (os.cpu_count() or 1) >= 2:
            workers = 1  # the worker's imports and first file run beside the model building, on the other core
        self.extractor = FeatureExtractor(self.settings, backbones=self.backbones, workers=workers)
        if warm and not lazy and self.extractor.workers == 0:
            warm_up(self.settings, png=False)
        self._stamp: ResultStamp | None = None
        self.untrained, self.weights_label, self.recipe = m.untrained, self.stamp.weights, m.recipe
        if self.untrained:
            log.warning("scoring with an untrained fusion model and random-init backbones: the scores mean nothing")

    @property
    def stamp(self) -> ResultStamp:
        """How this scorer's results are made (:class:`thqa.scoring.result.ResultStamp`: the Ray engine's too), for the
        precision the backbones run in now (made again when it is changed)."""
        p = self.backbones.precision
        if self._stamp is None or self._stamp.precision != p:
            weights = "random-init" if self.backbones.random_init else "pretrained"
            self._stamp = self.scoring_model.stamp(p, self.coverage, weights=weights)
        return self._stamp

    @property
    def model_digest(self) -> str:
        """The digest every row of this scorer carries (:func:`model_digest` of the model in the current precision)."""
        return self.stamp.model

    @staticmethod
    def _backbones(m: ScoringModel, branches, *, device: str, batch_size: int | None, workers, lazy: bool) -> Backbones:
        """The backbones of ``m``'s branches (a fine-tuned spatial backbone from the checkpoint), checked against the
        checkpoint's record."""
        backbones = Backbones(
            m.weights,
            device=device,
            spatial=("spatial" in branches and not m.finetuned),
            temporal=("temporal" in branches),
            batch_size=batch_size,
            start_workers=workers != 0,
            precision=m.precision,
            lazy=lazy,
        )
        if m.finetuned:
            # the fine-tuned ECA + Swin-T travel in the checkpoint: no pretrained Swin-T needed
            spatial, info = build_spatial(WeightsOptions(random_init=True, seed=m.weights.seed))
            try:
                spatial.load_state_dict(m.checkpoint.spatial_state, strict=True)
            except RuntimeError as exc:
                raise CheckpointError(f"{m.checkpoint.path}: its fine-tuned spatial weights do not fit ECA + Swin-T ({brief(exc)})") from exc
            backbones.spatial = spatial.to(backbones.device).eval()
            backbones.spatial_info = type(info)(SWIN_T.name, "checkpoint", state_digest(spatial), str(m.checkpoint.path), None)
        if m.checkpoint is not None:
            names = backbones_needed(("spatial", "temporal"), finetuned_spatial=m.finetuned)
            check_backbones(m.checkpoint, backbones.infos, names=names)
        return backbones

    @torch.inference_mode()
    def score_features(self, feats: list[VideoFeatures]) -> list[tuple[float, list[float]]]:
        """MOS and clip scores of several files' features (same number of clips each)."""
        d = self.backbones.device

        def stack(name: str):
            arrs = [getattr(f, name) for f in feats]
            return None if any(a is None for a in arrs) else torch.from_numpy(np.stack(arrs)).to(d)

        mos, clips = self.model(stack("spatial"), stack("temporal"), stack("audio"))
        return [(float(m), [float(c) for c in cs]) for m, cs in zip(mos.cpu(), clips.cpu())]

    def _scored(self, f: VideoFeatures, mos: float, clips: list[float]) -> ScoreResult:
        return self.stamp.scored(f.path, mos, clips, seconds=f.seconds, warnings=f.warnings)

    def score(self, path: str | os.PathLike) -> ScoreResult:
        """Score one file.

        Raises:
            THQAError subclasses naming the file and the reason (missing, empty, not a video, undecodable).
        """
        f = self.backbones.features([prepare(path, self.settings)])[0]
        mos, clips = self.score_features([f])[0]
        res = self._scored(f, mos, clips)
        if res.error:
            raise THQAError(res.error)
        return res

    def iter_score(self, paths: Iterable[str | os.PathLike]) -> Iterator[ScoreResult]:
        """Yield a :class:`ScoreResult` per path, in order; bad files give error results and the batch goes on."""
        for item in self.extractor.iter_extract(paths):
            if item.features is None:
                yield self.stamp.failed(item.path, item.error_type or "THQAError", item.error or "failed")
                continue
            mos, clips = self.score_features([item.features])[0]
            yield self._scored(item.features, mos, clips)

    def explain(
        self, path: str | os.PathLike, *, timeline: bool = True, sync: bool = False, sync_window_ms: tuple[float, float] | None = None
    ) -> ScoreResult:
        """Score one file and say where and why: ``timeline`` adds a score per second (every second is read: see
        :mod:`thqa.scoring.timeline`), ``sync`` the audio/video offset (:func:`thqa.analysis.sync.estimate_av_offset`) and whether it
        lies within ``sync_window_ms`` = (lead, lag) ms (default :data:`thqa.analysis.sync.IN_SYNC_WINDOW_MS`: ITU-R BT.1359's
        45 ms sound ahead, 125 ms behind). The MOS stays the method's MOS.

        Raises:
            THQAError subclasses naming the file and the reason (missing, empty, not a video, undecodable).
        """
        res = self._explain(path, timeline=timeline, sync=sync, sync_window_ms=sync_window_ms)
        if res.error:
            raise THQAError(res.error)
        return res

    def iter_explain(
        self, paths: Iterable[str | os.PathLike], *, timeline: bool = True, sync: bool = False, sync_window_ms: tuple[float, float] | None = None
    ) -> Iterator[ScoreResult]:
        """:meth:`explain` for many files, in order; a bad file gives an error result and the batch goes on."""
        for p in paths:
            try:
                yield self._explain(p, timeline=timeline, sync=sync, sync_window_ms=sync_window_ms)
            except THQAError as exc:
                yield self.stamp.failed(str(p), type(exc).__name__, str(exc))
            except Exception as exc:  # noqa: BLE001 - one broken file must not stop a batch
                log.debug("unexpected error explaining %s", p, exc_info=True)
                yield self.stamp.failed(str(p), type(exc).__name__, f"{p}: unexpected {type(exc).__name__}: {exc}")

    def _explain(self, path: str | os.PathLike, *, timeline: bool, sync: bool, sync_window_ms: tuple[float, float] | None = None) -> ScoreResult:
        if timeline:
            feats = second_features(path, backbones=self.backbones, settings=self.settings, file_timeout=self.extractor.file_timeout)
            per_second, seconds = timeline_scores(feats, model=self.model, settings=self.settings, device=self.backbones.device)
            f = feats.take(seconds)  # the method's MOS: the fusion model on the sampled clips
            res = self._scored(f, *self.score_features([f])[0])
            if res.ok:
                res.timeline = [float(x) for x in per_second]
                if not all(math.isfinite(x) for x in res.timeline):
                    return self.stamp.failed(str(path), "THQAError", f"{path}: {NON_FINITE}")
        else:
            res = next(self.iter_score([path]))
        if sync and res.ok:
            add_sync(res, path, sync_window_ms)
        return res

    def score_many(self, paths: Iterable[str | os.PathLike]) -> list[ScoreResult]:
        """Score many files (decoding in ``workers`` processes, backbones batched). One result per path, in order."""
        return list(self.iter_score(paths))


def add_sync(res: ScoreResult, path: str | os.PathLike, window_ms: tuple[float, float] | None = None) -> ScoreResult:
    """Fill ``res``'s av_* fields from :func:`thqa.analysis.sync.estimate_av_offset` (an unmeasurable offset is said in
    ``av_sync_error`` and ``warnings``, an unreliable one in ``av_sync_reliable`` and ``warnings``; the score
    stands). ``window_ms``: (lead, lag) of ``av_in_sync`` (default :data:`thqa.analysis.sync.IN_SYNC_WINDOW_MS`)."""
    try:
        s = estimate_av_offset(path, SyncSettings(in_sync_window_ms=tuple(window_ms)) if window_ms is not None else None)
    except THQAError as exc:
        res.av_sync_error = str(exc)
    else:
        res.av_offset_ms, res.av_sync_confidence, res.av_sync_error = s.offset_ms, s.confidence, s.error
        res.av_in_sync = s.in_sync
        res.av_sync_reliable, res.av_sync_agreement = s.reliable, s.agreement_per_second or None
        if s.note:
            res.warnings.append(f"{path}: lip sync offset unreliable: {s.note}")
    if res.av_sync_error:
        res.warnings.append(res.av_sync_error)
    return res

