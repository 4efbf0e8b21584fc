"""Extract features of many files into the feature cache, once, and read them back for training and evaluation.

Two entries per video, each complete or absent (see :mod:`thqa.cache`):

* features - ``spatial`` (N, 768), ``temporal`` (N, 2304), ``audio`` (N, 4, 128, 32) float32 and ``seconds`` (N,);
  keyed by the file's content, the extraction settings and both backbones' sha256;
* frames (for fine-tuning the spatial branch) - each clip's first frame resized to short side 520, PNG-encoded
  (lossless: compression artefacts are what is being measured) as uint8 arrays ``png_i``; keyed by content and
  settings only (no weights are involved).

A run writes each entry as soon as its file is done, so a killed run loses at most the files in flight and a
re-run skips everything already cached.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from thqa import __version__
from thqa._atomic import atomic_write_text
from thqa.cache import FeatureCache, cache_key, file_digest
from thqa.errors import THQAError
from thqa.pipeline import ExtractionSettings, FeatureExtractor, VideoFeatures, decode_frame_png, encode_frame_png

__all__ = ["ExtractSummary", "features_key", "frames_key", "extract_to_cache", "load_features", "load_frames", "write_failures"]

log = logging.getLogger(__name__)


def _weights_identity(backbones: dict) -> dict:
    return {name: b["sha256"] for name, b in sorted(backbones.items())}


def features_key(digest: str, settings: ExtractionSettings, backbones: dict) -> str:
    """Key of a video's features: its content digest, every extraction setting and the backbones' sha256."""
    return cache_key(content_digest=digest, settings={"part": "features", **settings.to_dict()}, weights=_weights_identity(backbones))


def frames_key(digest: str, settings: ExtractionSettings) -> str:
    """Key of a video's preprocessed first frames (no weights involved)."""
    s = settings.to_dict()
    frame_settings = {"part": "frames", "n_clips": s["n_clips"], "short_side": s["short_side"]}
    return cache_key(content_digest=digest, settings=frame_settings, weights={})


@dataclass
class ExtractSummary:
    """What an extraction run did."""

    done: int = 0  #: files extracted now
    reused: int = 0  #: files already in the cache
    failed: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  #: (path, error type, message)
    seconds: float = 0.0
    per_video_s: float = 0.0  #: wall time per extracted file
    extract_seconds: float = 0.0  #: wall time of the extraction proper (after hashing and cache look-ups)
    #: where the extraction's time went: waiting for prepared files (wait_s), backbone passes (forward_s, passes)
    pipeline: dict = field(default_factory=dict)
    stage_s: dict = field(default_factory=dict)  #: mean seconds per extracted file and stage

    def to_dict(self) -> dict:
        return {
            "done": self.done,
            "reused": self.reused,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "per_video_s": round(self.per_video_s, 3),
            "extract_seconds": round(self.extract_seconds, 3),
            "videos_per_s": round(self.done / self.extract_seconds, 3) if self.extract_seconds else 0.0,
            "stage_s": {k: round(v, 4) for k, v in self.stage_s.items()},
            "pipeline": self.pipeline,
            "failures": [{"path": p, "error_type": t, "error": m} for p, t, m in self.failures],
        }


def _features_arrays(f: VideoFeatures) -> dict[str, np.ndarray]:
    return {
        "spatial": np.asarray(f.spatial, dtype=np.float32),
        "temporal": np.asarray(f.temporal, dtype=np.float32),
        "audio": np.asarray(f.audio, dtype=np.float32),
        "seconds": np.asarray(f.seconds, dtype=np.int64),
    }


def store_features(
    cache: FeatureCache,
    f: VideoFeatures,
    *,
    path: str,
    digest: str,
    settings: ExtractionSettings,
    backbones: dict,
    frames: bool = True,
) -> str:
    """Write one file's entries (first frames, then features: a features entry means the file is complete) with
    the cache's atomic writer. Used by every engine, so the entries are the same whoever makes them. Returns the
    features key."""
    fk, gk = features_key(digest, settings, backbones), frames_key(digest, settings)
    meta = {
        "path": path,
        "content_sha256": digest,
        "info": f.info,
        "has_audio": f.has_audio,
        "warnings": f.warnings,
        "timings": f.timings,
        "settings": settings.to_dict(),
        "backbones": backbones,
        "thqa_version": __version__,
    }
    if frames and f.first_frames:
        pngs = f.first_frames if f.first_frames_png else [encode_frame_png(im) for im in f.first_frames]
        cache.put(gk, {f"png_{i}": b for i, b in enumerate(pngs)}, {"path": path, "n": len(pngs)})
    cache.put(fk, _features_arrays(f), meta)
    return fk


def is_cached(cache: FeatureCache, digest: str, settings: ExtractionSettings, backbones: dict, *, frames: bool = True) -> bool:
    """Both entries of a file are in the cache and verify (a corrupt one is set aside, so it is made again)."""
    if cache.get(features_key(digest, settings, backbones)) is None:
        return False
    return not frames or cache.get(frames_key(digest, settings)) is not None


def extract_to_cache(
    paths: Sequence[str | os.PathLike],
    cache: FeatureCache,
    extractor: FeatureExtractor,
    *,
    frames: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Make sure every file's entries are in ``cache``; extract the missing ones.

    Args:
        paths: the video files.
        cache: where entries go.
        extractor: builds the features (its backbones' identity goes into the keys).
        frames: also store the preprocessed first frames (needed by ``thqa train --finetune-spatial``).
        progress: called with the number of files finished, as they finish.

    Returns:
        an :class:`ExtractSummary`; failed files are listed there, never raised.
    """
    t_start = time.perf_counter()
    summary = ExtractSummary()
    settings = extractor.settings
    backbones = extractor.backbones.infos
    todo: list[str] = []
    keys: dict[str, str] = {}  #: path -> content digest
    for p in paths:
        p = str(p)
        try:
            digest = file_digest(p)
        except THQAError as exc:
            summary.failed += 1
            summary.failures.append((p, type(exc).__name__, str(exc)))
            if progress:
                progress(1)
            continue
        keys[p] = digest
        # verify, not just look: a corrupt entry is set aside by get() and extracted again now
        if is_cached(cache, digest, settings, backbones, frames=frames):
            summary.reused += 1
            if progress:
                progress(1)
        else:
            todo.append(p)
    stage_tot: dict[str, float] = {}
    t_extract = time.perf_counter()

    def store(f: VideoFeatures, path: str) -> None:
        digest = keys[path]
        store_features(cache, f, path=path, digest=digest, settings=settings, backbones=backbones, frames=frames)

    def finish(path: str, f: VideoFeatures, fut) -> None:
        try:
            fut.result()
        except THQAError as exc:
            summary.failed += 1
            summary.failures.append((path, type(exc).__name__, str(exc)))
        else:
            summary.done += 1
            for k, v in f.timings.items():
                stage_tot[k] = stage_tot.get(k, 0.0) + float(v)
        if progress:
            progress(1)

    # cache writes (fsync'ed files) run in threads beside the backbones, a bounded number at a time
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="thqa-cache") as pool:
        for item in extractor.iter_extract(todo, keep_first_frames="png" if frames else False, ordered=False):
            if item.features is None:
                summary.failed += 1
                summary.failures.append((item.path, item.error_type or "THQAError", item.error or "failed"))
                log.warning("%s", item.error)
                if progress:
                    progress(1)
            else:
                pending.append((item.path, item.features, pool.submit(store, item.features, item.path)))
            while pending and (pending[0][2].done() or len(pending) > 64):
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
    summary.seconds = time.perf_counter() - t_start
    summary.pipeline = dict(getattr(extractor, "stats", {}) or {})
    if summary.done:
        summary.extract_seconds = time.perf_counter() - t_extract
        summary.per_video_s = summary.extract_seconds / summary.done
        summary.stage_s = {k: v / summary.done for k, v in stage_tot.items()}
    return summary


def load_features(cache: FeatureCache, path: str | os.PathLike, settings: ExtractionSettings, backbones: dict) -> dict[str, np.ndarray] | None:
    """The cached feature arrays of one file, or None when absent (or found corrupt)."""
    entry = cache.get(features_key(file_digest(path), settings, backbones))
    return None if entry is None else entry.arrays


def load_frames(cache: FeatureCache, path: str | os.PathLike, settings: ExtractionSettings) -> list[np.ndarray] | None:
    """The cached first frames of one file, N x (3, 520, w) uint8, or None when absent."""
    entry = cache.get(frames_key(file_digest(path), settings))
    if entry is None:
        return None
    n = len(entry.arrays)
    return [decode_frame_png(entry.arrays[f"png_{i}"]) for i in range(n)]


def write_failures(path: str | os.PathLike, failures: Iterable[tuple[str, str, str]]) -> Path:
    """Write ``path,error_type,error`` rows (CSV) of failed files."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "error_type", "error"])
    for row in failures:
        w.writerow(row)
    p = atomic_write_text(path, buf.getvalue())
    return p
