"""Scoring files with a trained fusion checkpoint (or, when asked for by name, with untrained weights)."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch

from thqa.models.checkpoint import Checkpoint, check_backbones, load_checkpoint, weights_for
from thqa.errors import CheckpointError, THQAError, brief
from thqa.models.fusion import FusionConfig, FusionModel
from thqa.features.pipeline import Backbones, ExtractionSettings, FeatureExtractor, VideoFeatures, prepare, warm_up
from thqa.features.registry import SWIN_T, needed as backbones_needed
from thqa.features.weights import DEFAULT_SEED, WeightsOptions, build_spatial, state_digest

__all__ = ["Scorer", "ScoreResult", "NO_MODEL_MESSAGE", "model_digest"]

log = logging.getLogger(__name__)

NO_MODEL_MESSAGE = (
    "there is no trained model: thqa does not ship fusion weights trained on people's opinions yet. "
    "Train one on a data set with MOS labels (e.g. THQA-NTIRE: `thqa extract` then `thqa train`, see the README) and "
    "pass it with --checkpoint, or pass --random-init to run the whole pipeline with untrained weights "
    "(for testing only: the scores then mean nothing)."
)


@dataclass
class ScoreResult:
    """The score of one file. ``mos`` is None when ``error`` says why the file could not be scored."""

    path: str
    mos: float | None
    clip_scores: list[float] | None  #: (N,) one score per clip, in clip order
    error: str | None = None
    error_type: str | None = None
    seconds: list[int] | None = None  #: (N,) start second of each clip
    weights: str = "pretrained"  #: how the backbones were obtained: "pretrained" or "random-init"
    untrained: bool = False  #: True when no trained fusion checkpoint was used (scores are meaningless)
    precision: str = "fp32"  #: what the backbones computed in: "fp32" or "bf16-autocast"
    warnings: list[str] = field(default_factory=list)
    timeline: list[float] | None = None  #: (n,) a score per second of the file (``explain(timeline=True)``)
    av_offset_ms: float | None = None  #: audio/video offset, > 0: sound later than the lips (``explain(sync=True)``)
    #: the offset lies within the in-sync window (ITU-R BT.1359's detectability, :data:`thqa.analysis.sync.IN_SYNC_WINDOW_MS`);
    #: None when no offset was measured
    av_in_sync: bool | None = None
    av_sync_confidence: float | None = None  #: how clearly that offset wins (see :class:`thqa.analysis.sync.SyncResult`)
    av_sync_error: str | None = None  #: why the offset could not be measured (no audio, no speaking face, ...)
    av_sync_reliable: bool | None = None  #: False: the offset is weak or ambiguous, a guess (the reason is in ``warnings``)
    av_sync_agreement: list[float] | None = None  #: (n,) lip/speech agreement per second at that offset
    mos_low: float | None = None  #: prediction interval at ``coverage`` (split conformal); None when not valid
    mos_high: float | None = None
    coverage: float | None = None
    interval_note: str | None = None  #: why there is no interval, or why to doubt it
    recipe: str | None = None  #: the training recipe of the checkpoint ("winner", "frozen", ...); None: none named or recorded
    model: str | None = None  #: :func:`model_digest` of the model that scored it (what ``--resume`` compares)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def interval(self) -> tuple[float, float] | None:
        """``(mos_low, mos_high)``: holds the MOS with probability ``coverage`` for videos like the checkpoint's
        validation videos; None when there is no valid interval (``interval_note`` says why)."""
        return None if self.mos_low is None or self.mos_high is None else (self.mos_low, self.mos_high)

    def to_dict(self) -> dict:
        return asdict(self)


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
    from thqa.analysis.conformal import Calibration

    if ck is None:
        return None, "no prediction interval: no trained checkpoint"
    if ck.calibration is None:
        return None, (
            f"no prediction interval: {ck.path} holds no calibration data (written before thqa kept the validation "
            "residuals); train it again with this version to get intervals"
        )
    return Calibration.from_dict(ck.calibration, where=str(ck.path)), None


def with_interval(res: ScoreResult, calibration, coverage: float, missing_note: str | None) -> ScoreResult:
    """Fill ``mos_low``/``mos_high``/``coverage``/``interval_note`` of a scored result."""
    res.coverage = coverage
    if res.mos is None:
        return res
    if calibration is None:
        res.interval_note = missing_note
        return res
    iv = calibration.interval(res.mos, coverage)
    res.mos_low, res.mos_high, res.interval_note = iv.low, iv.high, iv.note
    return res


class Scorer:
    """Predicts the MOS of talking-head files.

    Args:
        checkpoint: a fusion checkpoint (.safetensors) from ``thqa train``. None requires ``random_init=True``.
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
        checkpoint: str | os.PathLike | None = None,
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
        from thqa.analysis.conformal import check_coverage

        self.coverage = check_coverage(coverage)
        self.checkpoint: Checkpoint | None = None
        #: how the backbones are made, when the checkpoint's record decided it ("random-init backbones (seed 3407), as ...")
        self.weights_note: str | None = None
        if checkpoint is None:
            self.weights, _ = weights_options(
                None, random_init=random_init, seed=seed, swin_weights=swin_weights, slowfast_weights=slowfast_weights, offline=offline
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.weights.seed)
                model = FusionModel(FusionConfig())
            self.settings = (settings or ExtractionSettings()).validate()
            branches = model.config.branches
        else:
            self.checkpoint = load_checkpoint(checkpoint)
            # the backbones it was trained on unless told otherwise; an explicit disagreement is an error naming both
            self.weights, self.weights_note = weights_options(
                self.checkpoint, random_init=random_init, seed=seed, swin_weights=swin_weights, slowfast_weights=slowfast_weights, offline=offline
            )
            if self.weights_note:
                log.info("backbones: %s", self.weights_note)
            model = self.checkpoint.model
            self.settings = self.checkpoint.settings
            branches = model.config.branches
        self.calibration, self.interval_note = calibration_of(self.checkpoint)
        finetuned = self.checkpoint is not None and self.checkpoint.spatial_state is not None
        self.backbones = Backbones(
            self.weights,
            device=device,
            spatial=("spatial" in branches and not finetuned),
            temporal=("temporal" in branches),
            batch_size=batch_size,
            start_workers=workers != 0,
            precision=precision or (self.checkpoint.scoring_precision if self.checkpoint is not None else "auto"),
            lazy=lazy,
        )
        if finetuned:
            # the fine-tuned ECA + Swin-T travel in the checkpoint: no pretrained Swin-T needed
            spatial, info = build_spatial(WeightsOptions(random_init=True, seed=self.weights.seed))
            try:
                spatial.load_state_dict(self.checkpoint.spatial_state, strict=True)
            except RuntimeError as exc:
                raise CheckpointError(f"{checkpoint}: its fine-tuned spatial weights do not fit ECA + Swin-T ({brief(exc)})") from exc
            self.backbones.spatial = spatial.to(self.backbones.device).eval()
            self.backbones.spatial_info = type(info)(SWIN_T.name, "checkpoint", state_digest(spatial), str(checkpoint), None)
        if self.checkpoint is not None:
            names = backbones_needed(("spatial", "temporal"), finetuned_spatial=finetuned)
            check_backbones(self.checkpoint, self.backbones.infos, names=names)
        self.model = model.to(self.backbones.device).eval()
        if workers == "auto" and lazy and self.backbones.device.type == "cpu" and (os.cpu_count() or 1) >= 2:
            workers = 1  # the worker's imports and first file run beside the model building, on the other core
        self.extractor = FeatureExtractor(self.settings, backbones=self.backbones, workers=workers)
        if warm and not lazy and self.extractor.workers == 0:
            warm_up(self.settings, png=False)
        self.untrained = self.checkpoint is None
        self.weights_label = "random-init" if self.backbones.random_init else "pretrained"
        self.recipe = self.checkpoint.recipe if self.checkpoint is not None else None
        self.model_digest = model_digest(self.checkpoint, random_init=self.weights.random_init, seed=self.weights.seed,
                                         precision=self.backbones.precision, settings=self.settings)
        if self.untrained:
            log.warning("scoring with an untrained fusion model and random-init backbones: the scores mean nothing")

    @torch.inference_mode()
    def score_features(self, feats: list[VideoFeatures]) -> list[tuple[float, list[float]]]:
        """MOS and clip scores of several files' features (same number of clips each)."""
        d = self.backbones.device

        def stack(name: str):
            arrs = [getattr(f, name) for f in feats]
            return None if any(a is None for a in arrs) else torch.from_numpy(np.stack(arrs)).to(d)

        mos, clips = self.model(stack("spatial"), stack("temporal"), stack("audio"))
        return [(float(m), [float(c) for c in cs]) for m, cs in zip(mos.cpu(), clips.cpu())]

    def _result(self, f: VideoFeatures, mos: float, clips: list[float]) -> ScoreResult:
        if not (math.isfinite(mos) and all(math.isfinite(c) for c in clips)):
            return self._error(f.path, "THQAError", f"{f.path}: the model produced a non-finite score")
        res = ScoreResult(
            path=f.path,
            mos=mos,
            clip_scores=clips,
            seconds=f.seconds,
            weights=self.weights_label,
            untrained=self.untrained,
            precision=self.backbones.precision,
            warnings=f.warnings,
            recipe=self.recipe,
            model=self.model_digest,
        )
        return with_interval(res, self.calibration, self.coverage, self.interval_note)

    def _error(self, path: str, etype: str, msg: str) -> ScoreResult:
        return ScoreResult(
            path=path, mos=None, clip_scores=None, error=msg, error_type=etype, weights=self.weights_label, untrained=self.untrained, recipe=self.recipe,
            precision=self.backbones.precision, model=self.model_digest,
        )

    def score(self, path: str | os.PathLike) -> ScoreResult:
        """Score one file.

        Raises:
            THQAError subclasses naming the file and the reason (missing, empty, not a video, undecodable).
        """
        f = self.backbones.features([prepare(path, self.settings)])[0]
        mos, clips = self.score_features([f])[0]
        res = self._result(f, mos, clips)
        if res.error:
            raise THQAError(res.error)
        return res

    def iter_score(self, paths: Iterable[str | os.PathLike]) -> Iterator[ScoreResult]:
        """Yield a :class:`ScoreResult` per path, in order; bad files give error results and the batch goes on."""
        for item in self.extractor.iter_extract(paths):
            if item.features is None:
                yield self._error(item.path, item.error_type or "THQAError", item.error or "failed")
                continue
            mos, clips = self.score_features([item.features])[0]
            yield self._result(item.features, mos, clips)

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
                yield self._error(str(p), type(exc).__name__, str(exc))
            except Exception as exc:  # noqa: BLE001 - one broken file must not stop a batch
                log.debug("unexpected error explaining %s", p, exc_info=True)
                yield self._error(str(p), type(exc).__name__, f"{p}: unexpected {type(exc).__name__}: {exc}")

    def _explain(self, path: str | os.PathLike, *, timeline: bool, sync: bool, sync_window_ms: tuple[float, float] | None = None) -> ScoreResult:
        if timeline:
            from thqa.scoring.timeline import second_features, timeline_scores

            feats = second_features(self, path)
            per_second, mos, clips, seconds = timeline_scores(self, feats)
            f = feats.take(seconds)
            res = self._result(f, mos, clips)
            if res.ok:
                res.timeline = [float(x) for x in per_second]
                if not all(math.isfinite(x) for x in res.timeline):
                    return self._error(str(path), "THQAError", f"{path}: the model produced a non-finite score")
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
    from thqa.analysis.sync import SyncSettings, estimate_av_offset

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

