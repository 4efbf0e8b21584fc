"""A score for every second of a file: where in a video the quality drops.

The method scores a file from ``k`` clips (6 by default) chosen by cyclic sampling. The timeline scores **every**
second in the same context the model was trained on: the file's seconds are read in order, their features computed
once each (backbone passes batched across seconds, ``batch_size`` clips per pass), and the fusion model is run on
every window of ``k`` consecutive seconds (windows batched, one fusion pass for many windows). A second's score is
the mean of the clip scores it gets in the windows that contain it (``k`` windows in the middle of a file, fewer at
the ends). A file of ``n <= k`` seconds has one window, the method's own cyclic sampling.

The MOS reported beside the timeline stays the method's MOS: the fusion model on the sampled clips, whose features
are among the per-second ones (the same decoded frames and sound), so it equals :meth:`thqa.Scorer.score`'s.

Cost: every second goes through both backbones, so a timeline costs about ``n / k`` times a plain score (the
README's table has measured figures for 10 s, 60 s and 600 s files). Frames are decoded one chunk of seconds at a
time and the allocator's free memory is handed back after each chunk (:mod:`thqa.utils.memory`); the per-second
features are kept (about 50 MB for 600 s). Peak memory was flat up to 240 s in the benchmark but 0.5 GB higher at
600 s, for a reason not yet traced.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from thqa.features.pipeline import Backbones, ExtractionSettings, VideoFeatures, prepare
from thqa.media import probe as media_probe
from thqa.media.sampling import clip_seconds, whole_seconds
from thqa.models.fusion import FusionModel
from thqa.utils.memory import release_free_memory

__all__ = ["SecondFeatures", "second_features", "window_starts", "timeline_scores", "FUSION_WINDOWS_PER_PASS"]

log = logging.getLogger(__name__)

#: windows per fusion-model pass
FUSION_WINDOWS_PER_PASS = 64
#: seconds decoded and run through the backbones together (rounded up to a multiple of the backbones' batch size)
SECONDS_PER_CHUNK = 16
#: a timeline of a file this long (seconds) or longer says up front what it costs, and how long it will take once
#: its first chunk is done
LONG_TIMELINE_S = 600
#: the loggers whose warnings a timeline gathers into one summary (each chunk reads the file again: a problem in
#: the sound, decoded from the start every time, would otherwise be repeated once per chunk)
_GATHERED_LOGGERS = ("thqa.media", "thqa.features.pipeline")  # thqa.media: every media module logs under it
#: distinct warnings kept in a timeline's result; the rest are counted
_MAX_WARNINGS = 3


@dataclass
class SecondFeatures:
    """The features of every second of a file (n seconds)."""

    path: str
    spatial: np.ndarray | None  #: (n, 768)
    temporal: np.ndarray | None  #: (n, 2304)
    audio: np.ndarray  #: (n, 4, 128, 32)
    duration: float
    has_audio: bool
    warnings: list[str]

    @property
    def n(self) -> int:
        return int(self.audio.shape[0])

    def take(self, seconds: list[int]) -> VideoFeatures:
        """The features of the clips that start at ``seconds`` (repeats allowed), as a :class:`VideoFeatures`."""
        idx = np.asarray(seconds)
        return VideoFeatures(
            path=self.path,
            spatial=None if self.spatial is None else self.spatial[idx],
            temporal=None if self.temporal is None else self.temporal[idx],
            audio=self.audio[idx],
            seconds=list(seconds),
            has_audio=self.has_audio,
            info={"duration": self.duration},
            warnings=list(self.warnings),
        )


def _chunk_size(batch_size: int) -> int:
    return max(batch_size, int(math.ceil(SECONDS_PER_CHUNK / batch_size)) * batch_size)


class _Gather(logging.Filter):
    """Holds back the warnings of :data:`_GATHERED_LOGGERS` (their messages are kept in ``messages``)."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING:
            self.messages.append(record.getMessage())
            return False
        return True


@contextlib.contextmanager
def _gathered_warnings(path, n_chunks: int):
    """Decoding warnings during a timeline: held back, then one summary warning (how many, the first)."""
    gather = _Gather()
    loggers = [logging.getLogger(name) for name in _GATHERED_LOGGERS]
    for lg in loggers:
        lg.addFilter(gather)
    try:
        yield gather
    finally:
        for lg in loggers:
            lg.removeFilter(gather)
    if gather.messages:
        log.warning("%s: %d decoding warning(s) while reading %d chunk(s) of seconds for the timeline; the first: %s",
                    path, len(gather.messages), n_chunks, gather.messages[0])


def _say_cost(path, n: int, k: int, n_chunks: int, first_chunk_s: float | None = None) -> None:
    """For a long file: the timeline's cost up front, then (after the first chunk) the time it will take."""
    if n < LONG_TIMELINE_S:
        return
    if first_chunk_s is None:
        log.warning("%s: a timeline of %d s reads every second through both backbones in %d chunks: about %.0f times the "
                    "work of a plain score; an estimate of the time follows the first chunk", path, n, n_chunks, n / k)
    elif n_chunks > 1:
        left = first_chunk_s * (n_chunks - 1)
        log.warning("%s: timeline: about %.0f min to go (the first of %d chunks took %.1f s)", path, left / 60, n_chunks, first_chunk_s)


def _capped(warnings: list[str]) -> list[str]:
    if len(warnings) <= _MAX_WARNINGS:
        return warnings
    return warnings[:_MAX_WARNINGS] + [f"... and {len(warnings) - _MAX_WARNINGS} more warning(s)"]


def second_features(path: str | os.PathLike, *, backbones: Backbones, settings: ExtractionSettings,
                    file_timeout: float | None = None) -> SecondFeatures:
    """Decode every whole second of ``path`` (with ``settings``, each decoding pass within ``file_timeout`` seconds)
    and run it through ``backbones``, one chunk of seconds at a time (each chunk is one decoding pass and
    ``chunk / batch_size`` full backbone passes). A long file's cost is said up front (:data:`LONG_TIMELINE_S`);
    decoding warnings come as one summary, not one per chunk.

    Raises:
        THQAError subclasses naming the file (missing, empty, not a video, undecodable).
    """
    info = media_probe.probe(path)
    n = whole_seconds(info.duration)
    chunk = _chunk_size(backbones.batch_size)
    n_chunks = max(1, math.ceil(n / chunk))
    _say_cost(path, n, settings.n_clips, n_chunks)
    sp, tp, au = [], [], []
    warnings: list[str] = []
    has_audio = False
    with _gathered_warnings(path, n_chunks):
        for start in range(0, n, chunk):
            t = time.perf_counter()
            secs = list(range(start, min(n, start + chunk)))
            item = prepare(path, settings, seconds=secs, timeout=file_timeout)
            f = backbones.features([item])[0]
            sp.append(f.spatial)
            tp.append(f.temporal)
            au.append(f.audio)
            has_audio = has_audio or f.has_audio
            warnings += [w for w in f.warnings if w not in warnings]
            del item, f
            release_free_memory()  # else glibc keeps each chunk's freed buffers and the process grows chunk by chunk
            if start == 0:
                _say_cost(path, n, settings.n_clips, n_chunks, time.perf_counter() - t)
    return SecondFeatures(
        path=str(path),
        spatial=None if sp[0] is None else np.concatenate(sp),
        temporal=None if tp[0] is None else np.concatenate(tp),
        audio=np.concatenate(au),
        duration=info.duration,
        has_audio=has_audio,
        warnings=_capped(warnings),
    )


def window_starts(n: int, k: int) -> list[list[int]]:
    """The windows of a file of ``n`` seconds for a model of ``k`` clips: every run of ``k`` consecutive seconds,
    or, when ``n <= k``, the one cyclic window the method itself uses.

    >>> window_starts(8, 6)
    [[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7]]
    >>> window_starts(3, 6)
    [[0, 1, 2, 0, 1, 2]]
    """
    if n <= k:
        return [clip_seconds(float(n), n_clips=k)]
    return [list(range(j, j + k)) for j in range(n - k + 1)]


@torch.inference_mode()
def timeline_scores(feats: SecondFeatures, *, model: FusionModel, settings: ExtractionSettings,
                    device: str | torch.device = "cpu") -> tuple[list[float], list[int]]:
    """Per-second scores of the fusion ``model`` (on ``device``) over every window of ``settings.n_clips`` seconds,
    and the seconds the method samples for the file's MOS.

    Returns:
        timeline: (n,) one score per second; seconds: (k,) the clip seconds of the method's MOS (score
        ``feats.take(seconds)`` for it).
    """
    k = settings.n_clips
    n = feats.n
    windows = window_starts(n, k)
    d = device
    total = np.zeros(n)
    count = np.zeros(n)

    def tensor(a: np.ndarray | None, idx: np.ndarray):
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a[idx])).to(d)

    for i in range(0, len(windows), FUSION_WINDOWS_PER_PASS):
        idx = np.asarray(windows[i : i + FUSION_WINDOWS_PER_PASS])  # (W, k)
        _, clips = model(tensor(feats.spatial, idx), tensor(feats.temporal, idx), tensor(feats.audio, idx))
        np.add.at(total, idx.reshape(-1), clips.float().cpu().numpy().reshape(-1))
        np.add.at(count, idx.reshape(-1), 1.0)
    timeline = (total / np.maximum(count, 1)).tolist()
    return timeline, clip_seconds(feats.duration, n_clips=k, spread=settings.clip_sampling == "spread")
