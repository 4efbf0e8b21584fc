"""What scoring returns: :class:`ScoreResult`, and :class:`ResultStamp`, the one way results are made (the local
scorer, the Ray engine and ``thqa serve`` all make theirs with it). No torch here: the client of ``thqa serve`` and the
score table's columns read results without loading the models."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ScoreResult", "ResultStamp", "with_interval", "NON_FINITE"]

#: the error of a file whose score came out NaN or infinite
NON_FINITE = "the model produced a non-finite score"


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
    model: str | None = None  #: :func:`thqa.scoring.scorer.model_digest` of the model that scored it (what ``--resume`` compares)

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


def with_interval(res: ScoreResult, calibration, coverage: float, missing_note: str | None) -> ScoreResult:
    """Fill ``mos_low``/``mos_high``/``coverage``/``interval_note`` of a scored result (``calibration``: a
    :class:`thqa.analysis.conformal.Calibration`, or None and ``missing_note`` says why)."""
    res.coverage = coverage
    if res.mos is None:
        return res
    if calibration is None:
        res.interval_note = missing_note
        return res
    iv = calibration.interval(res.mos, coverage)
    res.mos_low, res.mos_high, res.interval_note = iv.low, iv.high, iv.note
    return res


@dataclass(frozen=True)
class ResultStamp:
    """What every result of one model on one device carries, and the one way results are made
    (:meth:`thqa.scoring.scorer.ScoringModel.stamp`)."""

    weights: str  #: "pretrained" or "random-init"
    untrained: bool
    precision: str  #: resolved: "fp32" or "bf16-autocast"
    recipe: str | None
    model: str  #: the model digest
    coverage: float
    calibration: Any = None  #: a :class:`thqa.analysis.conformal.Calibration`, or None (``interval_note`` says why)
    interval_note: str | None = None

    def scored(self, path: str, mos: float, clips: list[float], *, seconds: list[int] | None = None,
               warnings: list[str] | None = None) -> ScoreResult:
        """The result of a scored file (its prediction interval at ``coverage``); a NaN or infinite score gives an
        error result instead."""
        if not (math.isfinite(mos) and all(math.isfinite(c) for c in clips)):
            return self.failed(path, "THQAError", f"{path}: {NON_FINITE}")
        res = ScoreResult(path=path, mos=mos, clip_scores=clips, seconds=seconds, weights=self.weights, untrained=self.untrained,
                          precision=self.precision, warnings=warnings if warnings is not None else [], recipe=self.recipe,
                          model=self.model)
        return with_interval(res, self.calibration, self.coverage, self.interval_note)

    def failed(self, path: str, error_type: str, message: str) -> ScoreResult:
        """The result of a file that could not be scored."""
        return ScoreResult(path=path, mos=None, clip_scores=None, error=message, error_type=error_type, weights=self.weights,
                           untrained=self.untrained, recipe=self.recipe, precision=self.precision, model=self.model)
