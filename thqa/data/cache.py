"""On-disk cache of extracted features, keyed by content, settings and weights.

Researchers extract the features of thousands of videos once and train many times. This module stores,
per video, several named numpy arrays (e.g. ``"temporal"`` ``(6, 2304)`` float32, ``"audio"``
``(6, 4, 128, 32)`` float32, ``"spatial"`` ``(6, 768)`` float32, ``"frames"`` ``(6, 3, 224, 224)`` uint8)
plus a small JSON-able metadata dict, in one ``.safetensors`` file per entry.

Guarantees
----------
* **No stale features.** An entry's key (:func:`cache_key`) is the sha256 of the video's *content*
  (:func:`file_digest`), every extraction setting, the identity of the backbone weights and
  :data:`CACHE_FORMAT_VERSION`. Changing any of them gives another key, hence a miss. The key is also
  stored inside the entry and checked on read, so a file copied or renamed to another key's place is
  rejected.
* **No partial entries.** :meth:`FeatureCache.put` writes a uniquely named temporary file in the entry's
  directory, flushes and ``fsync``\\ s it, then ``os.replace``\\ s it onto the final name (atomic on POSIX
  and on local Windows file systems). A killed writer leaves at most a temporary file, never an entry;
  :meth:`FeatureCache.clean_temp` removes such leftovers, and the constructor calls it. Two processes
  writing the same key at once both succeed and the last rename wins: readers see one complete entry.
* **Corruption is detected.** Besides the safetensors header checks, each entry carries a sha256 over the
  names, dtypes, shapes and bytes of its arrays and one over its metadata; truncation, bit rot and hand edits are
  caught. A corrupt
  or unreadable entry is logged (warning naming the file and the reason), renamed to
  ``<name>.safetensors.corrupt`` (deleted if renaming fails) so it is never read again, counted in
  :attr:`FeatureCache.stats` and reported as a miss, so the caller re-extracts.
* **Reading executes nothing.** Only the cache's own ``*.safetensors`` files are ever opened, and they are
  parsed with ``safetensors`` and :mod:`json`; no pickle, no ``np.load``. An entry that is a symbolic link, not
  a regular file (a FIFO, a device) or larger than 1 GiB is never read: it is quarantined like a corrupt one.

On-disk layout
--------------
::

    root/
      ab/                                   two-hex-digit fan-out directory = key[:2]
        ab12...ef.safetensors               one entry: all arrays + metadata
        ab12...ef.safetensors.corrupt       a quarantined corrupt entry (ignored by the cache)
        .tmp-<host>-<pid>-<rand>.partial    a write in progress (or left by a killed writer)

The safetensors header metadata (a ``str -> str`` dict) of an entry holds ``thqa.format``
(:data:`CACHE_FORMAT_VERSION`), ``thqa.key`` (the entry's key), ``thqa.sha256`` (the array checksum),
``thqa.meta`` (the caller's metadata as canonical JSON) and ``thqa.meta_sha256`` (a checksum of the format, key and
metadata; absent from entries written before it, which are read as before).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import re
import secrets
import socket
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thqa.errors import CacheError, ConfigError, MediaError, MediaFileNotFoundError

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CacheEntry",
    "CacheStats",
    "FeatureCache",
    "cache_key",
    "file_digest",
]

logger = logging.getLogger(__name__)

#: Version of the key derivation and of the entry file layout. Bumping it invalidates every cache.
CACHE_FORMAT_VERSION = 1

_CHUNK = 1 << 20  # 1 MiB
_DIGEST_MEMO_MAX = 65536
# A file whose ctime is this close to "now" when hashed is not memoised: on file systems with coarse
# timestamps a later edit within the same tick could leave size, mtime and ctime unchanged ("racy git").
_RACY_MARGIN_NS = 2_000_000_000
_MAX_HEADER_BYTES = 100_000_000  # same limit as the safetensors reader
#: the largest entry file read (64 clips of raw 520 px first frames are ~100 MB): a bigger one is not thqa's
_MAX_ENTRY_BYTES = 1 << 30

_ENTRY_SUFFIX = ".safetensors"
_CORRUPT_SUFFIX = ".corrupt"
_KEY_RE = re.compile(r"[0-9a-f]{8,128}")
_FANOUT_RE = re.compile(r"[0-9a-f]{2}")
_ENTRY_RE = re.compile(r"([0-9a-f]{8,128})\.safetensors")
_TEMP_RE = re.compile(r"\.tmp-([0-9a-f]{12})-(\d+)-([0-9a-f]+)\.partial")

_META_FORMAT = "thqa.format"
_META_KEY = "thqa.key"
_META_SHA = "thqa.sha256"
_META_JSON = "thqa.meta"
#: sha256 over the entry's key, format and metadata JSON (:func:`_meta_checksum`); entries written before it was
#: added (thqa <= 0.3) lack it and are read as before
_META_META_SHA = "thqa.meta_sha256"

#: dtypes an entry may hold (those every safetensors >= 0.4 numpy build round-trips).
_SUPPORTED_DTYPES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    }
)


# --------------------------------------------------------------------------------------------------------
# content digests


_digest_memo: OrderedDict[tuple[Any, ...], str] = OrderedDict()
_digest_lock = threading.Lock()


def _clear_digest_memo() -> None:
    """Forget every memoised digest (for tests)."""
    with _digest_lock:
        _digest_memo.clear()


def _signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
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
    memo_key = (resolved, *_signature(st))
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
        before = _signature(os.fstat(f.fileno()))
        digest = _hash_open_file(f)
        after = _signature(os.fstat(f.fileno()))
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


def _check_jsonable(value: Any, where: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is plain JSON data (tuples allowed as lists)."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where} = {value!r}: NaN and infinity are not allowed in cache settings")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_jsonable(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: key {k!r} is a {type(k).__name__}; keys must be str")
            _check_jsonable(item, f"{where}[{k!r}]")
        return
    raise ConfigError(
        f"{where} = {value!r} is a {type(value).__module__}.{type(value).__qualname__}, not JSON-able; "
        "use str, int, float, bool, None, lists or dicts (e.g. str() a path, int()/float() a numpy scalar)"
    )


def _canonical_json(value: Any) -> str:
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
    _check_jsonable(settings, "settings")
    _check_jsonable(weights, "weights")
    doc = {"content": content_digest, "settings": settings, "weights": weights, "format": CACHE_FORMAT_VERSION}
    return hashlib.sha256(_canonical_json(doc).encode("ascii")).hexdigest()


# --------------------------------------------------------------------------------------------------------
# entries


def _read_header_meta(f: Any, size: int) -> dict[str, Any] | None:
    """The caller's metadata from an entry file's safetensors header (None when it cannot be parsed)."""
    try:
        n = int.from_bytes(f.read(8), "little")
        if n < 2 or n > _MAX_HEADER_BYTES or n > size - 8:
            return None
        header = json.loads(f.read(n).decode("utf-8"))
        if not _meta_intact(header["__metadata__"]):
            return None
        meta = json.loads(header["__metadata__"][_META_JSON])
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        return None
    return meta if isinstance(meta, dict) else None




@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One cached entry as read back by :meth:`FeatureCache.get`.

    Attributes:
        arrays: name -> array, with the dtypes and shapes given to :meth:`FeatureCache.put` (writable,
            C-contiguous, little-endian).
        meta: the metadata given to :meth:`FeatureCache.put`, after a JSON round trip (tuples are lists).
        path: the entry file.
    """

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: Path


@dataclasses.dataclass
class CacheStats:
    """Counters of one :class:`FeatureCache` object (this process only).

    Attributes:
        hits: ``get`` calls that returned an entry.
        misses: ``get`` calls that returned ``None`` (absent or corrupt).
        writes: successful ``put`` calls.
        corrupt: entries found corrupt or unreadable (each also counts as a miss).
    """

    hits: int = 0
    misses: int = 0
    writes: int = 0
    corrupt: int = 0


class _CorruptEntry(Exception):
    """Internal: an entry file failed a check; the message is the reason."""


def _array_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over (name, dtype name, shape, byte count, bytes) of each array in sorted name order.

    The arrays must be C-contiguous and little-endian (as :func:`_prepare_arrays` makes them and as
    safetensors returns them).
    """
    h = hashlib.sha256(b"thqa-cache-arrays-v1\0")
    for name in sorted(arrays):
        a = arrays[name]
        head = json.dumps([name, a.dtype.name, list(a.shape), a.nbytes], separators=(",", ":")).encode()
        h.update(len(head).to_bytes(8, "little"))
        h.update(head)
        h.update(a.data)
    return h.hexdigest()


def _meta_checksum(md: Mapping[str, Any]) -> str:
    """sha256 over an entry header's format, key and metadata JSON (the strings as stored), so that a changed byte
    in the metadata (``features_version`` 2 -> 1) makes the entry corrupt instead of reused or pruned as stale."""
    h = hashlib.sha256(b"thqa-cache-meta-v1\0")
    for name in (_META_FORMAT, _META_KEY, _META_JSON):
        v = str(md.get(name, "")).encode("utf-8", "surrogatepass")
        h.update(len(v).to_bytes(8, "little"))
        h.update(v)
    return h.hexdigest()


def _meta_intact(md: Mapping[str, Any]) -> bool:
    """Whether the header's metadata checksum matches (True for entries written before there was one)."""
    return _META_META_SHA not in md or md[_META_META_SHA] == _meta_checksum(md)


def _prepare_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate arrays and return C-contiguous little-endian versions (copies only where needed)."""
    if not isinstance(arrays, Mapping):
        raise ConfigError(f"arrays must be a mapping of name -> numpy array, got {type(arrays).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"array names must be non-empty str, got {name!r}")
        if name == "__metadata__":
            raise ConfigError("'__metadata__' is reserved by safetensors and cannot name an array")
        if not isinstance(a, np.ndarray):
            raise ConfigError(
                f"array {name!r} is a {type(a).__name__}, not a numpy.ndarray (convert it with np.asarray)"
            )
        if a.dtype.name not in _SUPPORTED_DTYPES or a.dtype.fields is not None:
            raise ConfigError(
                f"array {name!r} has dtype {a.dtype}, which the cache cannot store; "
                f"supported: {', '.join(sorted(_SUPPORTED_DTYPES))}"
            )
        if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and np.little_endian is False):
            a = a.astype(a.dtype.newbyteorder("<"))
        if not a.flags.c_contiguous:
            a = a.copy(order="C")
        out[name] = a
    return out


def _temp_host_token() -> str:
    """12 hex digits naming this host *and* pid namespace, so a pid in a temp name can be checked."""
    parts = [socket.gethostname()]
    for p in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        with contextlib.suppress(OSError):
            parts.append(os.readlink(p) if p.endswith("/pid") else Path(p).read_text().strip())
    return hashlib.sha256("\0".join(parts).encode("utf-8", "replace")).hexdigest()[:12]


_HOST_TOKEN = _temp_host_token()


def _temp_name(pid: int | None = None) -> str:
    """A fresh temp file name ``.tmp-<host token>-<pid>-<random>.partial``."""
    return f".tmp-{_HOST_TOKEN}-{os.getpid() if pid is None else pid}-{secrets.token_hex(8)}.partial"


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host; ``True`` when that cannot be known (never signals anything)."""
    if pid <= 0 or os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: exists, other user
        return True
    return True


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so a rename survives a power cut (POSIX only)."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _open_entry(path: Path):
    """Open an entry file for reading, refusing what the cache never writes: a symbolic link, anything but a regular
    file (a FIFO would block, /dev/zero never ends), or a file larger than :data:`_MAX_ENTRY_BYTES`.

    Raises:
        FileNotFoundError: no entry. _CorruptEntry: one of the above, with the reason. OSError: cannot open.
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise _CorruptEntry("is a symbolic link; the cache only reads the regular files it wrote")
    if not stat.S_ISREG(st.st_mode):
        raise _CorruptEntry("is not a regular file")
    if st.st_size > _MAX_ENTRY_BYTES:
        raise _CorruptEntry(f"{st.st_size} bytes: implausibly large for an entry (limit {_MAX_ENTRY_BYTES})")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a link since the lstat
            raise _CorruptEntry("is a symbolic link; the cache only reads the regular files it wrote") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_ENTRY_BYTES:
        os.close(fd)
        raise _CorruptEntry("is not a regular file of plausible size")
    return open(fd, "rb")  # noqa: SIM115 - the caller closes it


class FeatureCache:
    """A directory of feature entries, one ``.safetensors`` file per key (see the module docstring).

    Safe to share between processes (also on one network file system) and between threads of a
    process. Entries are never modified in place: :meth:`put` replaces them atomically.

    Temp files: a writer names its temp file ``.tmp-<host>-<pid>-<rand>.partial``, where ``<host>``
    identifies this machine's boot and pid namespace. :meth:`clean_temp` removes a temp file when its
    writer is known dead (same host token and no such pid) or when it is older than ``older_than_s``
    (writers on other machines/containers cannot be checked; an entry takes well under a minute to write,
    so one hour is conservative).

    Args:
        root: the cache directory; created with its parents if missing.
        temp_max_age_s: age above which the constructor removes temp files of writers it cannot check.

    Raises:
        CacheError: ``root`` cannot be created or is not a writable directory (the message names it).
        ConfigError: ``temp_max_age_s`` is negative or not finite.
    """

    def __init__(self, root: str | os.PathLike[str], *, temp_max_age_s: float = 3600.0) -> None:
        self._root = Path(root).expanduser().absolute()
        self._lock = threading.Lock()
        self.stats = CacheStats()
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create feature cache directory {self._root}: {exc}") from exc
        if not self._root.is_dir():
            raise CacheError(f"feature cache root {self._root} is not a directory")
        probe = self._root / _temp_name()
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, b"thqa")
            finally:
                os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(probe)
            raise CacheError(f"feature cache directory {self._root} is not writable: {exc}") from exc
        try:
            removed = self.clean_temp(older_than_s=temp_max_age_s)
        except CacheError as exc:
            logger.warning("could not clean stale temp files in %s: %s", self._root, exc)
        else:
            if removed:
                logger.info("removed %d stale temp file(s) left by killed writers in %s", removed, self._root)

    # ---------------------------------------------------------------- paths

    @property
    def root(self) -> Path:
        """The cache directory (absolute)."""
        return self._root

    def __repr__(self) -> str:
        return f"FeatureCache({str(self._root)!r})"

    def path_for(self, key: str) -> Path:
        """Return the entry file of ``key``: ``root/key[:2]/key.safetensors`` (it may not exist).

        Raises:
            ConfigError: ``key`` is not 8 to 128 lowercase hex digits (as :func:`cache_key` returns).
        """
        if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
            raise ConfigError(f"invalid cache key {key!r}: expected 8-128 lowercase hex digits (see cache_key)")
        return self._root / key[:2] / f"{key}{_ENTRY_SUFFIX}"

    def __contains__(self, key: object) -> bool:
        """Whether an entry file exists for ``key`` (cheap: no read, no verification)."""
        if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
            return False
        return self.path_for(key).is_file()

    def _fanout_dirs(self) -> list[Path]:
        try:
            with os.scandir(self._root) as it:
                return sorted(
                    Path(e.path) for e in it if _FANOUT_RE.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
                )
        except OSError as exc:
            raise CacheError(f"cannot list feature cache directory {self._root}: {exc}") from exc

    def keys(self) -> Iterator[str]:
        """Yield the keys of all entry files, sorted (no verification; temp and corrupt files excluded).

        Raises:
            CacheError: the cache directory cannot be listed.
        """
        for d in self._fanout_dirs():
            try:
                with os.scandir(d) as it:
                    names = sorted(e.name for e in it if e.is_file(follow_symlinks=False))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CacheError(f"cannot list feature cache directory {d}: {exc}") from exc
            for name in names:
                m = _ENTRY_RE.fullmatch(name)
                if m is not None and m.group(1)[:2] == d.name:
                    yield m.group(1)

    def headers(self) -> Iterator[tuple[str, Path, int, dict[str, Any] | None]]:
        """Yield ``(key, file, size in bytes, metadata)`` of every entry, reading only each file's header (no array
        checksum: :meth:`get` verifies). ``metadata`` is None when the header cannot be read or parsed. Symbolic
        links and anything but regular files are skipped, as :meth:`keys` does.

        Raises:
            CacheError: the cache directory cannot be listed.
        """
        for key in self.keys():
            path = self.path_for(key)
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
            except OSError:
                continue
            with open(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    continue
                yield key, path, st.st_size, _read_header_meta(f, st.st_size)

    def quarantined(self) -> Iterator[tuple[Path, int]]:
        """Yield ``(file, size in bytes)`` of the corrupt entries set aside as ``*.safetensors.corrupt``."""
        for d in self._fanout_dirs():
            try:
                with os.scandir(d) as it:
                    found = [(Path(e.path), e.stat(follow_symlinks=False).st_size) for e in it
                             if e.name.endswith(_ENTRY_SUFFIX + _CORRUPT_SUFFIX) and e.is_file(follow_symlinks=False)]
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CacheError(f"cannot list feature cache directory {d}: {exc}") from exc
            yield from sorted(found)

    def __len__(self) -> int:
        """Number of entry files (see :meth:`keys`)."""
        return sum(1 for _ in self.keys())

    def size_bytes(self) -> int:
        """Total size in bytes of the entry files (temp and quarantined corrupt files not counted)."""
        total = 0
        for key in self.keys():
            with contextlib.suppress(FileNotFoundError):
                total += self.path_for(key).stat().st_size
        return total

    # ---------------------------------------------------------------- write

    def put(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
        """Store ``arrays`` and ``meta`` under ``key`` atomically, replacing any previous entry.

        The entry is written to ``root/key[:2]/.tmp-<host>-<pid>-<rand>.partial``, flushed and fsync'ed,
        then renamed onto :meth:`path_for` ``(key)``; on any error the temp file is removed. Concurrent
        ``put`` of the same key from several processes is safe: the last rename wins.

        Args:
            key: an entry key (:func:`cache_key`).
            arrays: name -> numpy array of any shape (0-d and empty allowed) with dtype bool, (u)int8-64
                or float16/32/64; e.g. ``{"temporal": (6, 2304) float32, "frames": (6, 3, 224, 224) uint8}``.
                Non-contiguous or big-endian arrays are copied; the caller's arrays are never modified.
            meta: small JSON-able metadata (settings, weights identity, source path, timings, version).

        Returns:
            The entry file.

        Raises:
            ConfigError: invalid key, array name, array type/dtype, or non-JSON-able metadata.
            CacheError: the entry cannot be written (disk full, permissions, ...); the message names it.
        """
        import safetensors.numpy  # lazy: keeps ``import thqa`` light

        path = self.path_for(key)
        prepared = _prepare_arrays(arrays)
        if not isinstance(meta, Mapping):
            raise ConfigError(f"meta must be a mapping, got {type(meta).__name__}")
        _check_jsonable(meta, "meta")
        header_meta = {
            _META_FORMAT: str(CACHE_FORMAT_VERSION),
            _META_KEY: key,
            _META_SHA: _array_checksum(prepared),
            _META_JSON: _canonical_json(dict(meta)),
        }
        header_meta[_META_META_SHA] = _meta_checksum(header_meta)
        try:
            data = safetensors.numpy.save(prepared, metadata=header_meta)
        except Exception as exc:  # safetensors raises its own error types
            raise CacheError(f"cannot serialise cache entry {path}: {exc}") from exc

        directory = path.parent
        tmp = directory / _temp_name()
        try:
            try:
                directory.mkdir(exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
                with open(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except OSError as exc:
                raise CacheError(f"cannot write cache entry {path}: {exc}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(directory)
        with self._lock:
            self.stats.writes += 1
        logger.debug("cached %s (%d bytes)", path, len(data))
        return path

    # ---------------------------------------------------------------- read

    def get(self, key: str) -> CacheEntry | None:
        """Read and verify the entry of ``key``.

        Returns:
            The entry, or ``None`` when there is none or it is corrupt/unreadable. A corrupt entry is
            logged (warning naming the file and the reason), renamed to ``<file>.corrupt`` (deleted if the
            rename fails) so it is never read again, and counted in ``stats.corrupt`` and
            ``stats.misses``; the caller should re-extract and :meth:`put` it.

        Raises:
            ConfigError: ``key`` is not a valid key.
        """
        path = self.path_for(key)
        for attempt in range(2):
            try:
                f = _open_entry(path)
            except FileNotFoundError:
                return self._miss()
            except _CorruptEntry as exc:
                read_sig = None
                reason = str(exc)
            except OSError as exc:
                read_sig = None
                reason = f"cannot open: {exc}"
            else:
                with f:
                    read_sig = _signature(os.fstat(f.fileno()))
                    try:
                        data = f.read(_MAX_ENTRY_BYTES + 1)
                    except OSError as exc:
                        data = None
                        reason = f"cannot read: {exc}"
                    if data is not None and len(data) > _MAX_ENTRY_BYTES:
                        data = None
                        reason = f"grew past {_MAX_ENTRY_BYTES} bytes while read: implausibly large for an entry"
                if data is not None:
                    try:
                        entry = self._decode(key, path, data)
                    except _CorruptEntry as exc:
                        reason = str(exc)
                    else:
                        with self._lock:
                            self.stats.hits += 1
                        return entry
            # Corrupt. If another process replaced the file meanwhile, read the new one once more
            # instead of quarantining a good entry.
            try:
                now_sig = _signature(os.stat(path))
            except FileNotFoundError:
                return self._miss()
            except OSError:
                now_sig = read_sig
            if read_sig is not None and now_sig != read_sig and attempt == 0:
                continue
            break
        self._quarantine(path, reason)
        with self._lock:
            self.stats.corrupt += 1
        return self._miss()

    def _miss(self) -> None:
        with self._lock:
            self.stats.misses += 1
        return None

    @staticmethod
    def _decode(key: str, path: Path, data: bytes) -> CacheEntry:
        """Parse and verify an entry file's bytes; raise :class:`_CorruptEntry` with the reason."""
        import safetensors.numpy

        if len(data) < 8:
            raise _CorruptEntry(f"file too short ({len(data)} bytes)")
        n = int.from_bytes(data[:8], "little")
        if n < 2 or n > _MAX_HEADER_BYTES or n > len(data) - 8:
            raise _CorruptEntry(f"bad header length {n} for a file of {len(data)} bytes (truncated?)")
        try:
            header = json.loads(data[8 : 8 + n].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _CorruptEntry(f"header is not valid JSON ({exc})") from None
        if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
            raise _CorruptEntry("header has no metadata")
        md = header["__metadata__"]
        if md.get(_META_FORMAT) != str(CACHE_FORMAT_VERSION):
            raise _CorruptEntry(f"unknown entry format {md.get(_META_FORMAT)!r}")
        if not _meta_intact(md):
            raise _CorruptEntry("metadata checksum mismatch (bit rot or an edited header)")
        if md.get(_META_KEY) != key:
            raise _CorruptEntry(f"entry belongs to key {md.get(_META_KEY)!r}, not to this key")
        try:
            arrays = safetensors.numpy.load(data)
        except Exception as exc:  # SafetensorError, KeyError (dtype), ValueError (buffer size) ...
            raise _CorruptEntry(f"safetensors cannot parse it ({type(exc).__name__}: {exc})") from None
        if _array_checksum(arrays) != md.get(_META_SHA):
            raise _CorruptEntry("array checksum mismatch (bit rot, truncation or edited file)")
        try:
            meta = json.loads(md.get(_META_JSON, ""))
        except ValueError as exc:
            raise _CorruptEntry(f"metadata is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise _CorruptEntry("metadata is not a JSON object")
        return CacheEntry(arrays=dict(arrays), meta=meta, path=path)

    def _quarantine(self, path: Path, reason: str) -> None:
        """Move a corrupt entry aside (``*.corrupt``), or delete it, and log a warning naming it."""
        target = path.with_name(path.name + _CORRUPT_SUFFIX)
        try:
            os.replace(path, target)
        except FileNotFoundError:
            logger.warning("corrupt cache entry %s (%s); it has vanished; will re-extract", path, reason)
            return
        except OSError as exc:
            try:
                if path.is_dir():
                    raise IsADirectoryError(str(path))
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc2:
                logger.error(
                    "corrupt cache entry %s (%s) could not be moved aside (%s) or deleted (%s); "
                    "it will be rewritten by the next put", path, reason, exc, exc2,
                )
                return
            logger.warning("corrupt cache entry %s (%s); deleted it; will re-extract", path, reason)
            return
        logger.warning("corrupt cache entry %s (%s); moved it to %s; will re-extract", path, reason, target)

    # ---------------------------------------------------------------- maintenance

    def remove(self, key: str) -> bool:
        """Delete the entry of ``key``; return whether there was one.

        Raises:
            ConfigError: invalid key.
            CacheError: the entry exists but cannot be deleted.
        """
        path = self.path_for(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise CacheError(f"cannot remove cache entry {path}: {exc}") from exc
        return True

    def clean_temp(self, *, older_than_s: float = 3600.0) -> int:
        """Remove temp files left by killed writers; return how many were removed.

        A temp file (``.tmp-<host>-<pid>-<rand>.partial`` in the root or a fan-out directory) is removed
        when its writer ran on this host (same boot and pid namespace) and that pid no longer exists, or
        when its mtime is more than ``older_than_s`` seconds old. Files of live local writers younger
        than that are kept, since they may be being written right now. ``older_than_s=0`` removes every
        temp file, including those of running writers (whose ``put`` then fails): only use it when no
        other process uses the cache. A pid reused by an unrelated process keeps a leftover until it ages.

        Raises:
            ConfigError: ``older_than_s`` is negative or not finite.
            CacheError: the cache directory cannot be listed.
        """
        if not isinstance(older_than_s, (int, float)) or not math.isfinite(older_than_s) or older_than_s < 0:
            raise ConfigError(f"older_than_s must be a finite number >= 0, got {older_than_s!r}")
        cutoff = time.time() - older_than_s
        removed = 0
        for d in [self._root, *self._fanout_dirs()]:
            try:
                with os.scandir(d) as it:
                    candidates = [(m, Path(e.path)) for e in it if (m := _TEMP_RE.fullmatch(e.name))]
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CacheError(f"cannot list feature cache directory {d}: {exc}") from exc
            for m, p in candidates:
                try:
                    mtime = p.stat().st_mtime
                except FileNotFoundError:
                    continue
                except OSError:
                    mtime = time.time()
                dead = m.group(1) == _HOST_TOKEN and not _pid_alive(int(m.group(2)))
                if dead or mtime < cutoff:
                    try:
                        os.unlink(p)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        logger.warning("cannot remove stale temp file %s: %s", p, exc)
                        continue
                    logger.debug("removed stale temp file %s (%s)", p, "dead writer" if dead else "old")
                    removed += 1
        return removed
