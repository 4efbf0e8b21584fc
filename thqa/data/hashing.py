"""Content hashing and cache keys: the sha256 of a file's content (:func:`file_digest`, memoised per unchanged file)
and the key of a feature-cache entry (:func:`cache_key`: the sha256 of canonical JSON of the content digest, settings,
weights and :data:`CACHE_FORMAT_VERSION`).

The keys are byte-for-byte those of every earlier thqa that had the same :data:`CACHE_FORMAT_VERSION`: a cache made
before keeps being reused.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thqa.errors import ConfigError, MediaError, MediaFileNotFoundError

__all__ = ["CACHE_FORMAT_VERSION", "cache_key", "file_digest", "canonical_json", "check_jsonable", "stat_signature"]

#: Version of the key derivation and of the entry file layout. Bumping it invalidates every cache.
CACHE_FORMAT_VERSION = 1

_CHUNK = 1 << 20  # 1 MiB
_DIGEST_MEMO_MAX = 65536
# A file whose ctime is this close to "now" when hashed is not memoised: on file systems with coarse
# timestamps a later edit within the same tick could leave size, mtime and ctime unchanged ("racy git").
_RACY_MARGIN_NS = 2_000_000_000


# --------------------------------------------------------------------------------------------------------
# content digests


_digest_memo: OrderedDict[tuple[Any, ...], str] = OrderedDict()
_digest_lock = threading.Lock()


def _clear_digest_memo() -> None:
    """Forget every memoised digest (for tests)."""
    with _digest_lock:
        _digest_memo.clear()


def stat_signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """(device, inode, size, mtime_ns, ctime_ns): what changes when a file is replaced or edited."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digest(path: str | os.PathLike[str]) -> str:
    """Return the sha256 hex digest of a file's content, read in 1 MiB chunks.

    The result is memoised in-process per (resolved path, device, inode, size, mtime_ns, ctime_ns), so
    hashing the same unchanged file again costs one ``stat``. A file whose ctime is within 2 s of the
    moment it is hashed is not memoised (a later edit within the same timestamp tick could otherwise go
    unnoticed); any edit, even one that restores the mtime, changes the ctime and so misses the memo.

    Args:
        path: the file (usually a video).

    Returns:
        64 lowercase hex digits.

    Raises:
        MediaFileNotFoundError: ``path`` does not exist or is a directory.
        MediaError: ``path`` is not a regular file (FIFO, device, socket).
        OSError: the file exists but cannot be read (e.g. ``PermissionError``).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise MediaFileNotFoundError(f"media file not found: {p}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise MediaFileNotFoundError(f"media file not found: {p} is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"not a regular file: {p}")
    resolved = os.path.realpath(p)
    memo_key = (resolved, *stat_signature(st))
    with _digest_lock:
        hit = _digest_memo.get(memo_key)
        if hit is not None:
            _digest_memo.move_to_end(memo_key)
            return hit

    started_ns = time.time_ns()
    try:
        f = open(p, "rb")  # noqa: SIM115 - closed below
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        raise MediaFileNotFoundError(f"media file not found: {p}") from exc
    with f:
        before = stat_signature(os.fstat(f.fileno()))
        digest = _hash_open_file(f)
        after = stat_signature(os.fstat(f.fileno()))
    if before == after and before[4] < started_ns - _RACY_MARGIN_NS:
        with _digest_lock:
            _digest_memo[(resolved, *before)] = digest
            _digest_memo.move_to_end((resolved, *before))
            while len(_digest_memo) > _DIGEST_MEMO_MAX:
                _digest_memo.popitem(last=False)
    return digest


def _hash_open_file(f: Any) -> str:
    """sha256 of the rest of a binary file object, read in :data:`_CHUNK` pieces."""
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    while True:
        n = f.readinto(view)
        if not n:
            break
        h.update(view[:n])
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------
# keys


def check_jsonable(value: Any, where: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is plain JSON data (tuples allowed as lists)."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where} = {value!r}: NaN and infinity are not allowed in cache settings")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_jsonable(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: key {k!r} is a {type(k).__name__}; keys must be str")
            check_jsonable(item, f"{where}[{k!r}]")
        return
    raise ConfigError(
        f"{where} = {value!r} is a {type(value).__module__}.{type(value).__qualname__}, not JSON-able; "
        "use str, int, float, bool, None, lists or dicts (e.g. str() a path, int()/float() a numpy scalar)"
    )


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no spaces, ASCII only and no NaN: the same text for the same data in any process."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def cache_key(*, content_digest: str, settings: Mapping[str, Any], weights: Mapping[str, Any]) -> str:
    """Return the cache key of one video's features.

    The key is the sha256 of the canonical JSON (sorted keys, no spaces, ASCII, no NaN) of
    ``{"content": content_digest, "settings": settings, "weights": weights, "format": CACHE_FORMAT_VERSION}``.
    It is independent of dict ordering, of the process and of ``PYTHONHASHSEED``. Values of different
    JSON types differ (``1``, ``1.0``, ``True`` and ``"1"`` give four keys); tuples count as lists.

    Args:
        content_digest: the video's :func:`file_digest` (any non-empty string identifying the content).
        settings: every setting that changes the extracted features (fps, sizes, clip count, ...).
        weights: the identity of the backbone weights (names, file digests, versions).

    Returns:
        64 lowercase hex digits.

    Raises:
        ConfigError: ``content_digest`` is not a non-empty str, or a setting/weights value is not plain
            JSON data (the message names it), or is NaN/infinite.
    """
    if not isinstance(content_digest, str) or not content_digest:
        raise ConfigError(f"content_digest must be a non-empty str, got {content_digest!r}")
    if not isinstance(settings, Mapping):
        raise ConfigError(f"settings must be a mapping, got {type(settings).__name__}")
    if not isinstance(weights, Mapping):
        raise ConfigError(f"weights must be a mapping, got {type(weights).__name__}")
    check_jsonable(settings, "settings")
    check_jsonable(weights, "weights")
    doc = {"content": content_digest, "settings": settings, "weights": weights, "format": CACHE_FORMAT_VERSION}
    return hashlib.sha256(canonical_json(doc).encode("ascii")).hexdigest()
