"""Extract features of many files into the feature cache, once, and read them back for training and evaluation.

Two entries per video, each complete or absent (see :mod:`thqa.data.cache`):

* features - ``spatial`` (N, 768), ``temporal`` (N, 2304), ``audio`` (N, 4, 128, 32) float32 and ``seconds`` (N,);
  keyed by the file's content, the extraction settings, both backbones' sha256 and the provenance of the numbers
  (:func:`thqa.features.pipeline.extraction_provenance`: the features version, PyAV and FFmpeg, librosa, scipy and spafe,
  and the precision the backbones ran in);
* frames (for fine-tuning the spatial branch) - each clip's first frame resized to short side 520, PNG-encoded
  (lossless: compression artefacts are what is being measured) as uint8 arrays ``png_i``; keyed by content, the
  settings that shape them and the decoder's provenance (no weights are involved).

Every entry's metadata repeats its provenance, so an entry made by another version of the extraction (which the
current keys never reach) can be told apart: :func:`extract_to_cache` reports how many files it extracts again
because of such entries and why, and :func:`prune_cache` removes them.

The keys live in :mod:`thqa.data.entry_keys`, the failure lists in :mod:`thqa.data.failures`, entries of other
versions and settings in :mod:`thqa.data.prune`; their public names are importable from here too.

A run writes each entry as soon as its file is done, so a killed run loses at most the files in flight and a
re-run skips everything already cached.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from thqa import __version__
from thqa.data.cache import FeatureCache
from thqa.data.entry_keys import features_key, features_provenance, frames_key, frames_provenance
from thqa.data.failures import FAILURES_COLUMNS, add_failures, is_failure_list, run_id, write_failures
from thqa.data.hashing import file_digest
from thqa.data.prune import PruneItem, prune_cache, reuse_hints, stale_reasons
from thqa.errors import THQAError
from thqa.features.frames_png import decode_frame_png, encode_frame_png
from thqa.features.settings import ExtractionSettings

if TYPE_CHECKING:  # this module imports no torch: a run whose every entry is cached needs none (DeferredExtractor)
    from thqa.features.extractor import FeatureExtractor
    from thqa.features.runner import VideoFeatures

__all__ = [
    "ExtractSummary",
    "DeferredExtractor",
    "PruneItem",
    "features_key",
    "frames_key",
    "features_provenance",
    "frames_provenance",
    "extract_to_cache",
    "extract_files",
    "load_features",
    "load_frames",
    "prune_cache",
    "stale_reasons",
    "reuse_hints",
    "store_features",
    "is_cached",
    "write_failures",
    "add_failures",
    "is_failure_list",
    "run_id",
    "FAILURES_COLUMNS",
]

log = logging.getLogger(__name__)


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
    #: files extracted again because the cache held their entries from another version of the extraction: why -> count
    stale: dict = field(default_factory=dict)
    #: files extracted although the cache holds their features under other settings: what differs and the option
    #: that reuses them -> count (:func:`reuse_hints`)
    elsewhere: dict = field(default_factory=dict)

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
            "stale": dict(self.stale),
            "elsewhere": dict(self.elsewhere),
            "failures": [{"path": p, "error_type": t, "error": m} for p, t, m in self.failures],
        }


@dataclass(frozen=True)
class DeferredExtractor:
    """A :class:`~thqa.features.extractor.FeatureExtractor` built only when some entry is missing: the settings and
    the backbones' identity that key the cache (``infos``: what ``Backbones.infos`` will be, e.g.
    :func:`thqa.features.identity.known_infos` with :func:`thqa.features.settings.known_precision`), and ``build()``
    making the extractor. A run whose every entry is cached so imports no torch and builds no backbone."""

    settings: ExtractionSettings
    infos: dict
    build: Callable[[], "FeatureExtractor"]


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
    prov = f.provenance or None  # the provenance of the process that prepared the file
    fk, gk = features_key(digest, settings, backbones, prov), frames_key(digest, settings, prov)
    meta = {
        "part": "features",
        "path": path,
        "content_sha256": digest,
        "info": f.info,
        "has_audio": f.has_audio,
        "warnings": f.warnings,
        "timings": f.timings,
        "settings": settings.to_dict(),
        "backbones": backbones,
        "provenance": features_provenance(backbones, prov),
        "thqa_version": __version__,
    }
    if frames and f.first_frames:
        pngs = f.first_frames if f.first_frames_png else [encode_frame_png(im) for im in f.first_frames]
        fmeta = {"part": "frames", "path": path, "n": len(pngs), "content_sha256": digest, "provenance": frames_provenance(prov)}
        cache.put(gk, {f"png_{i}": b for i, b in enumerate(pngs)}, fmeta)
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
    extractor: FeatureExtractor | DeferredExtractor,
    *,
    frames: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Make sure every file's entries are in ``cache``; extract the missing ones.

    Args:
        paths: the video files.
        cache: where entries go.
        extractor: builds the features (its backbones' identity goes into the keys); a :class:`DeferredExtractor` is
            built only when some entry is missing.
        frames: also store the preprocessed first frames (needed by ``thqa train --finetune-spatial``).
        progress: called with the number of files finished, as they finish.

    Returns:
        an :class:`ExtractSummary`; failed files are listed there, never raised.
    """
    t_start = time.perf_counter()
    summary = ExtractSummary()
    tick = progress or (lambda n: None)
    backbones = extractor.infos if isinstance(extractor, DeferredExtractor) else extractor.backbones.infos
    todo, digests = _look_up(paths, cache, extractor.settings, backbones, summary, frames=frames, tick=tick)
    if todo and isinstance(extractor, DeferredExtractor):
        extractor, backbones, todo, digests, summary = _built(extractor, paths, cache, (todo, digests, summary), frames=frames)
    t_extract = time.perf_counter()
    stage_tot = _extract_missing(todo, digests, cache, extractor, backbones, summary, frames=frames, tick=tick) if todo else {}
    summary.seconds = time.perf_counter() - t_start
    summary.pipeline = dict(getattr(extractor, "stats", None) or {})
    if summary.done:
        summary.extract_seconds = time.perf_counter() - t_extract
        summary.per_video_s = summary.extract_seconds / summary.done
        summary.stage_s = {k: v / summary.done for k, v in stage_tot.items()}
    return summary


def _built(deferred: DeferredExtractor, paths: Sequence[str | os.PathLike], cache: FeatureCache, looked_up: tuple, *, frames: bool) -> tuple:
    """Build the deferred extractor, once the look-up (``looked_up``: todo, digests, summary) found entries missing;
    ``(extractor, backbones' infos, todo, digests, summary)``. Should its backbones
    report another identity than the deferred one (a bug: the keys computed without torch differ from torch's), the
    look-up is done again with theirs, so that no entry is written or reused under a wrong key."""
    extractor = deferred.build()
    backbones = extractor.backbones.infos
    todo, digests, summary = looked_up
    if backbones != deferred.infos:
        log.warning("the backbones' identity differs from the one known before building them (%s, not %s): looking up the cache again",
                    backbones, deferred.infos)
        summary = ExtractSummary()
        todo, digests = _look_up(paths, cache, extractor.settings, backbones, summary, frames=frames, tick=lambda n: None)
    return extractor, backbones, todo, digests, summary


def _look_up(paths: Sequence[str | os.PathLike], cache: FeatureCache, settings: ExtractionSettings, backbones: dict,
             summary: ExtractSummary, *, frames: bool, tick: Callable[[int], None]) -> tuple[list[str], dict[str, str]]:
    """Hash every file and verify its entries: ``(files to extract, {file: content digest})``; files already cached
    count as reused, files that cannot be hashed as failed, and the summary says why the cache's other entries of
    the files to extract cannot be used (``stale``, ``elsewhere``)."""
    todo: list[str] = []
    digests: dict[str, str] = {}
    for p in paths:
        p = str(p)
        try:
            digest = file_digest(p)
        except THQAError as exc:
            summary.failed += 1
            summary.failures.append((p, type(exc).__name__, str(exc)))
            tick(1)
            continue
        digests[p] = digest
        # verify, not just look: a corrupt entry is set aside by get() and extracted again now
        if is_cached(cache, digest, settings, backbones, frames=frames):
            summary.reused += 1
            tick(1)
        else:
            todo.append(p)
    if todo:
        summary.stale = stale_reasons(cache, {digests[p] for p in todo}, settings, backbones)
        if summary.stale:
            log.info("extracting again %d file(s) whose entries another version made: %s", sum(summary.stale.values()), summary.stale)
        summary.elsewhere = reuse_hints(cache, {digests[p] for p in todo}, settings, backbones, frames=frames)
        if summary.elsewhere:
            log.info("the cache holds features of %d file(s) under other settings: %s", sum(summary.elsewhere.values()), summary.elsewhere)
    return todo, digests


def _extract_missing(todo: list[str], digests: dict[str, str], cache: FeatureCache, extractor: FeatureExtractor, backbones: dict,
                     summary: ExtractSummary, *, frames: bool, tick: Callable[[int], None]) -> dict[str, float]:
    """Extract ``todo`` and store each file's entries as it is done; returns the seconds per stage summed over the
    files extracted (the summary counts them and lists the failures)."""
    settings = extractor.settings
    stage_tot: dict[str, float] = {}

    def store(f: VideoFeatures, path: str) -> None:
        store_features(cache, f, path=path, digest=digests[path], settings=settings, backbones=backbones, frames=frames)

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
        tick(1)

    # cache writes (fsync'ed files) run in threads beside the backbones, a bounded number at a time
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="thqa-cache") as pool:
        for item in extractor.iter_extract(todo, keep_first_frames="png" if frames else False, ordered=False):
            if item.features is None:
                summary.failed += 1
                summary.failures.append((item.path, item.error_type or "THQAError", item.error or "failed"))
                log.warning("%s", item.error)
                tick(1)
            else:
                pending.append((item.path, item.features, pool.submit(store, item.features, item.path)))
            while pending and (pending[0][2].done() or len(pending) > 64):
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
    return stage_tot


def extract_files(
    paths: Sequence[str | os.PathLike],
    cache: FeatureCache,
    extractor: FeatureExtractor | DeferredExtractor,
    *,
    frames: bool = True,
    progress: bool = True,
) -> ExtractSummary:
    """:func:`extract_to_cache` with a progress bar on stderr (``thqa extract``, ``train``, ``evaluate``, ``demo``)."""
    from tqdm import tqdm

    with tqdm(total=len(paths), desc="extracting", unit="video", file=sys.stderr, disable=not progress or len(paths) <= 1, dynamic_ncols=True) as bar:
        return extract_to_cache(paths, cache, extractor, frames=frames, progress=bar.update)


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


