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

A run writes each entry as soon as its file is done, so a killed run loses at most the files in flight and a
re-run skips everything already cached.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from thqa import __version__
from thqa.utils.atomic import atomic_write_text, default_file_mode
from thqa.data.cache import FeatureCache, cache_key, file_digest
from thqa.errors import CacheError, THQAError
from thqa.features.pipeline import ExtractionSettings, FeatureExtractor, VideoFeatures, decode_frame_png, encode_frame_png, extraction_provenance

__all__ = [
    "ExtractSummary",
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
    "write_failures",
    "add_failures",
    "is_failure_list",
    "run_id",
    "FAILURES_COLUMNS",
]

log = logging.getLogger(__name__)


def _weights_identity(backbones: dict) -> dict:
    return {name: b["sha256"] for name, b in sorted(backbones.items())}


def _precision(backbones: dict) -> str:
    """The precision the backbones run in (``Backbones.infos`` records it per backbone; "fp32" where absent)."""
    found = {str(b.get("precision", "fp32")) for b in backbones.values()} or {"fp32"}
    return "+".join(sorted(found))


def features_provenance(backbones: dict, provenance: dict | None = None) -> dict:
    """What made a features entry's numbers besides settings and weights: ``provenance`` (default: this process's
    :func:`~thqa.features.pipeline.extraction_provenance`) and the backbones' precision."""
    return {**(provenance or extraction_provenance()), "precision": _precision(backbones)}


def frames_provenance(provenance: dict | None = None) -> dict:
    """The part of the provenance that first frames depend on: the features version and the decoder."""
    p = provenance or extraction_provenance()
    return {k: p[k] for k in ("features_version", "pyav", "ffmpeg")}


def features_key(digest: str, settings: ExtractionSettings, backbones: dict, provenance: dict | None = None) -> str:
    """Key of a video's features: its content digest, every extraction setting, the backbones' sha256 and
    :func:`features_provenance` (``provenance``: that of the process that prepared the file, default this one's)."""
    doc = {"part": "features", **settings.to_dict(), "provenance": features_provenance(backbones, provenance)}
    return cache_key(content_digest=digest, settings=doc, weights=_weights_identity(backbones))


def frames_key(digest: str, settings: ExtractionSettings, provenance: dict | None = None) -> str:
    """Key of a video's preprocessed first frames (no weights involved): which seconds (clips, sampling) and the
    frame size."""
    s = settings.to_dict()
    doc = {"part": "frames", "n_clips": s["n_clips"], "short_side": s["short_side"], "provenance": frames_provenance(provenance)}
    if "clip_sampling" in s:  # only when set away from the default: the keys of default settings stay put
        doc["clip_sampling"] = s["clip_sampling"]
    return cache_key(content_digest=digest, settings=doc, weights={})


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
    if todo:
        summary.stale = stale_reasons(cache, {keys[p] for p in todo}, settings, backbones)
        if summary.stale:
            log.info("extracting again %d file(s) whose entries another version made: %s", sum(summary.stale.values()), summary.stale)
        summary.elsewhere = reuse_hints(cache, {keys[p] for p in todo}, settings, backbones, frames=frames)
        if summary.elsewhere:
            log.info("the cache holds features of %d file(s) under other settings: %s", sum(summary.elsewhere.values()), summary.elsewhere)
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


def extract_files(
    paths: Sequence[str | os.PathLike],
    cache: FeatureCache,
    extractor: FeatureExtractor,
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


#: the columns of a failure list; ``run`` names the run that listed the file (:func:`run_id`)
FAILURES_COLUMNS = ("path", "error_type", "error", "run")
#: the header of the lists of earlier versions (no run column): still recognised, and given the column when added to
_LEGACY_FAILURES_COLUMNS = FAILURES_COLUMNS[:3]


def run_id() -> str:
    """This run's id: its start in UTC, its pid and 4 random hex digits, e.g. ``20261207T045300Z-4242-9f1c``."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-{secrets.token_hex(2)}"


def _failure_rows(failures: Iterable[tuple[str, str, str]], run: str) -> str:
    from thqa.scoring.output import csv_safe, path_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for path, etype, msg in failures:
        w.writerow([csv_safe(path_text(path)), etype, csv_safe(msg), run])
    return buf.getvalue()


def write_failures(path: str | os.PathLike, failures: Iterable[tuple[str, str, str]], *, run: str = "") -> Path:
    """Write a failure list: the header (:data:`FAILURES_COLUMNS`) and a row per failed file, atomically."""
    return atomic_write_text(path, ",".join(FAILURES_COLUMNS) + "\n" + _failure_rows(failures, run))


def _header(path: Path) -> tuple[str, ...] | None:
    """The header of the regular file ``path`` (None: absent, not a regular file or unreadable)."""
    try:
        if not path.is_file():
            return None
        with open(path, "rb") as f:
            line = f.readline(200).decode("utf-8", "replace").rstrip("\r\n")
    except OSError:
        return None
    return tuple(line.split(","))


def is_failure_list(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file that starts like a failure list thqa wrote (so rows may be added to it)."""
    return _header(Path(path)) in (FAILURES_COLUMNS, _LEGACY_FAILURES_COLUMNS)


def add_failures(path: str | os.PathLike, failures: Sequence[tuple[str, str, str]], *, run: str) -> Path:
    """Add this run's failures to the list at ``path`` (each row names ``run``); return the file they went to.

    A new list is created (never over a file that appeared meanwhile); a list thqa wrote gets the rows at its end
    (a list of an earlier version without the run column is rewritten with it). A file of someone else's that
    appeared at ``path`` during the run is never touched: the rows then go to ``<stem>-<run><suffix>`` beside it.
    Earlier runs' rows are never removed. The caller holds the lock on ``path`` (thqa.utils.atomic.output_lock).
    """
    p = Path(path)
    rows = _failure_rows(failures, run)
    header = _header(p)
    if header == FAILURES_COLUMNS:
        with open(p, "a", encoding="utf-8", newline="") as f:
            f.write(rows)
            f.flush()
            os.fsync(f.fileno())
        return p
    if header == _LEGACY_FAILURES_COLUMNS:
        with open(p, newline="", encoding="utf-8", errors="surrogateescape") as f:
            old = [r + [""] * (len(FAILURES_COLUMNS) - len(r)) for r in list(csv.reader(f))[1:] if r]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([list(FAILURES_COLUMNS), *old])
        return atomic_write_text(p, buf.getvalue() + rows)
    text = ",".join(FAILURES_COLUMNS) + "\n" + rows
    if not os.path.lexists(p) and _create_new(p, text):
        return p
    other = p.with_name(f"{p.stem}-{run}{p.suffix}")  # someone's file is at p: never touched
    if not _create_new(other, text):
        raise FileExistsError(errno.EEXIST, "exists", str(other))
    return other


def _create_new(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` only if no file is there (a complete file linked in: never over one that appeared
    meanwhile); False when one did."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with open(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(name, default_file_mode())
        try:
            os.link(name, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(name)


# -- entries made by another version of the extraction -------------------------------------------------------------
_LEGACY = "made before thqa recorded how features were made (features version 1)"


def _canonical(x) -> str:
    return json.dumps(x, sort_keys=True, default=str)


def _provenance_change(old, new: dict) -> str:
    """Why an entry with provenance ``old`` is not one the current keys reach ("" when it is)."""
    if not isinstance(old, dict):
        return _LEGACY
    return ", ".join(f"{k} {old.get(k, '?')} -> {v}" for k, v in new.items() if old.get(k) != v)


def stale_reasons(cache: FeatureCache, digests: set[str], settings: ExtractionSettings, backbones: dict) -> dict[str, int]:
    """For files about to be extracted: the cache's features entries of the same content, settings and weights that
    another version of the extraction made (so the current keys miss them), counted by reason - one per file.
    Reads only the entries' headers."""
    want_settings = _canonical(settings.to_dict())
    want_weights = _weights_identity(backbones)
    want = features_provenance(backbones)
    why: dict[str, str] = {}
    for _key, _path, _size, meta in cache.headers():
        if meta is None or meta.get("content_sha256") not in digests or meta.get("part", "features") != "features":
            continue
        try:
            same = _canonical(meta.get("settings")) == want_settings and _weights_identity(meta.get("backbones") or {}) == want_weights
        except (AttributeError, KeyError, TypeError):
            continue
        reason = _provenance_change(meta.get("provenance"), want) if same else ""
        if reason:
            why.setdefault(meta["content_sha256"], reason)
    counts: dict[str, int] = {}
    for reason in why.values():
        counts[reason] = counts.get(reason, 0) + 1
    return counts


@dataclass(frozen=True)
class PruneItem:
    """A file :func:`prune_cache` removes (or would remove), with its size and the reason."""

    path: Path
    bytes: int
    reason: str


def _unreachable(meta: dict | None) -> str:
    """Why no current setting reaches an entry ("" when one does)."""
    if meta is None:
        return "unreadable or altered header (corrupt)"
    if meta.get("part") == "frames":
        return _provenance_change(meta.get("provenance"), frames_provenance())
    old = meta.get("provenance")
    if isinstance(old, dict):  # any precision is a current setting (fp32 on a CPU, bf16 on a GPU)
        old = {k: v for k, v in old.items() if k != "precision"}
    return _provenance_change(old, extraction_provenance())


def prune_cache(cache: FeatureCache, *, dry_run: bool = True) -> list[PruneItem]:
    """Find (and unless ``dry_run``, delete) what no current setting can reach: entries made by another version of
    the extraction (features version, PyAV/FFmpeg, librosa, scipy or spafe) or before versions were recorded,
    entries whose header cannot be read, and quarantined corrupt entries. Entries of other settings, weights or
    precisions stay: a setting can reach them.

    Returns:
        what was (or would be) removed, in cache order.

    Raises:
        CacheError: the cache cannot be listed, or a file cannot be deleted.
    """
    items = [PruneItem(path, size, why) for _key, path, size, meta in cache.headers() if (why := _unreachable(meta))]
    items += [PruneItem(path, size, "quarantined corrupt entry") for path, size in cache.quarantined()]
    if not dry_run:
        for it in items:
            try:
                it.path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CacheError(f"cannot delete {it.path}: {exc}") from exc
        log.info("pruned %d file(s), %d bytes, from %s", len(items), sum(i.bytes for i in items), cache.root)
    return items


# -- entries made under other settings -----------------------------------------------------------------------------
def _setting_changes(have: dict, want: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(setting, cached value, wanted value) of every extraction setting that differs (audio settings flattened)."""
    out = []
    for k in sorted(set(have) | set(want)):
        a, b = have.get(k), want.get(k)
        if isinstance(a, dict) or isinstance(b, dict):
            out += _setting_changes(a or {}, b or {}, f"{k}.")
        elif a != b:
            out.append((prefix + k, a, b))
    return out


#: extraction setting -> the keyword that sets it (the CLI names its option instead: thqa.utils.hints)
_SETTING_KEYWORD = {"n_clips": "n_clips", "clip_sampling": "clip_sampling", "audio.sample_rate": "sample_rate", "audio.n_fft": "n_fft",
                    "audio.cqt_kind": "cqt_kind", "audio.chroma_tuning": "chroma_tuning", "audio.mfcc_top_db": "mfcc_top_db"}


def _backbone_change(have: dict, want: dict) -> str | None:
    """What differs between the backbones an entry was made with and those in use, and how to use the entry's."""
    from thqa.utils.hints import in_cli, option

    if _weights_identity(have) == _weights_identity(want):
        return None
    rec = next(iter(have.values()), {}) if have else {}
    if rec.get("source") == "random-init":
        seed = rec.get("seed")
        how = option("random_init=True") + ((" " if in_cli() else ", ") + option("seed", str(seed)) if seed is not None else "")
        return f"made with random-init backbones (seed {seed}): {how}"
    return "made with pretrained backbones (" + ", ".join(f"{n} sha256 {b.get('sha256', '')[:12]}" for n, b in sorted(have.items())) + \
        f"): the same weight files, without {option('random_init=True')}"


def reuse_hints(cache: FeatureCache, digests: set[str], settings: ExtractionSettings, backbones: dict, *, frames: bool) -> dict[str, int]:
    """For files about to be extracted: the cache's entries of the same content that this run cannot use, with the
    setting that differs and how to reuse them ("n_clips 2 (pass --clips 2)", "stored without first frames (pass
    --no-frames)"), counted by reason - one per file, the entry that differs least. Entries of another version of
    the extraction are :func:`stale_reasons`' business. Reads only the entries' headers."""
    from thqa.utils.hints import option

    want_settings = settings.to_dict()
    want_prec = _precision(backbones)
    best: dict[str, list[str]] = {}
    for key, _path, _size, meta in cache.headers():
        if meta is None or meta.get("content_sha256") not in digests or meta.get("part", "features") != "features":
            continue
        prov = meta.get("provenance")
        if not isinstance(prov, dict) or _provenance_change({k: v for k, v in prov.items() if k != "precision"},
                                                            {k: v for k, v in features_provenance(backbones).items() if k != "precision"}):
            continue  # another version of the extraction: not reusable under any setting
        try:
            diffs = [f"{name} {a} (pass {option(_SETTING_KEYWORD[name], _value_text(name, a))})" if name in _SETTING_KEYWORD else f"{name} {a} (yours {b})"
                     for name, a, b in _setting_changes(meta.get("settings") or {}, want_settings)]
            bb = _backbone_change(meta.get("backbones") or {}, backbones)
        except (AttributeError, TypeError):
            continue
        diffs += [bb] if bb else []
        if prov.get("precision") != want_prec:
            diffs.append(f"backbones in {prov.get('precision')} (pass {option('precision', _precision_option(prov.get('precision')))})")
        if not diffs and frames and key == features_key(meta["content_sha256"], settings, backbones):
            diffs.append(f"stored without first frames, which only fine-tuning needs (pass {option('frames=False')})")
        d = meta["content_sha256"]
        if diffs and (d not in best or len(diffs) < len(best[d])):
            best[d] = diffs
    counts: dict[str, int] = {}
    for diffs in best.values():
        reason = "; ".join(diffs)
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def _value_text(name: str, value) -> str:
    """A setting's value as its option takes it (None is 'estimate' for the chroma tuning, 'none' for MFCC's floor)."""
    if value is None:
        return {"audio.chroma_tuning": "estimate", "audio.mfcc_top_db": "none"}.get(name, "none")
    return str(value)


def _precision_option(recorded) -> str:
    """The --precision value that gives features in ``recorded`` ("fp32" or "bf16-autocast")."""
    return "bf16" if str(recorded).startswith("bf16") else "fp32"
