"""Cache entries the current extraction cannot use: those another version of the extraction made (:func:`stale_reasons`,
removed by :func:`prune_cache`) and those made under other settings, with the option that reuses them
(:func:`reuse_hints`). Reads only the entries' headers.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from thqa.data.cache import FeatureCache
from thqa.data.entry_keys import backbones_precision, features_key, features_provenance, frames_provenance, weights_identity
from thqa.errors import CacheError
from thqa.features.settings import ExtractionSettings, extraction_provenance
from thqa.utils.hints import in_cli, option

__all__ = ["PruneItem", "prune_cache", "stale_reasons", "reuse_hints"]

log = logging.getLogger(__name__)

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
    want_weights = weights_identity(backbones)
    want = features_provenance(backbones)
    why: dict[str, str] = {}
    for _key, _path, _size, meta in cache.headers():
        if meta is None or meta.get("content_sha256") not in digests or meta.get("part", "features") != "features":
            continue
        try:
            same = _canonical(meta.get("settings")) == want_settings and weights_identity(meta.get("backbones") or {}) == want_weights
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
    if weights_identity(have) == weights_identity(want):
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
    want_settings = settings.to_dict()
    want_prec = backbones_precision(backbones)
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
