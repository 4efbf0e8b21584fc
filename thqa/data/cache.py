"""On-disk cache of extracted features, keyed by content, settings and weights.

Researchers extract the features of thousands of videos once and train many times. This module stores,
per video, several named numpy arrays (e.g. ``"temporal"`` ``(6, 2304)`` float32, ``"audio"``
``(6, 4, 128, 32)`` float32, ``"spatial"`` ``(6, 768)`` float32, ``"frames"`` ``(6, 3, 224, 224)`` uint8)
plus a small JSON-able metadata dict, in one ``.safetensors`` file per entry.

Content hashing and the keys live in :mod:`thqa.data.hashing`, the entry file's encoding in
:mod:`thqa.data.cache_format`; ``cache_key``, ``file_digest`` and ``CACHE_FORMAT_VERSION`` are importable from here too.

Guarantees
----------
* **No stale features.** An entry's key (:func:`cache_key`) is the sha256 of the video's *content*
  (:func:`file_digest`), every extraction setting, the identity of the backbone weights and
  :data:`CACHE_FORMAT_VERSION`. Changing any of them gives another key, hence a miss. The key is also
  stored inside the entry and checked on read, so a file copied or renamed to another key's place is
  rejected.
* **No partial entries.** :meth:`FeatureCache.put` writes a uniquely named temporary file in the entry's
  directory, ``fsync``\\ s it, then ``os.replace``\\ s it onto the final name (atomic on POSIX and on local
  Windows file systems) with :func:`thqa.utils.atomic.atomic_path`, thqa's one atomic writer. A killed writer leaves at most a temporary file, never an entry;
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
        .ab12...ef.safetensors.<host>-<pid>-<rand>.partial
                                            a write in progress (or left by a killed writer)

The safetensors header metadata (a ``str -> str`` dict) of an entry holds ``thqa.format``
(:data:`CACHE_FORMAT_VERSION`), ``thqa.key`` (the entry's key), ``thqa.sha256`` (the array checksum),
``thqa.meta`` (the caller's metadata as canonical JSON) and ``thqa.meta_sha256`` (a checksum of the format, key and
metadata; absent from entries written before it, which are read as before).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thqa.data.cache_format import CorruptEntry, decode_entry, encode_entry, open_entry, read_entry_bytes, read_header_meta
from thqa.data.hashing import CACHE_FORMAT_VERSION, cache_key, file_digest, stat_signature
from thqa.errors import CacheError, ConfigError
from thqa.utils.atomic import atomic_path, clean_partials

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CacheEntry",
    "CacheStats",
    "FeatureCache",
    "cache_key",
    "file_digest",
]

logger = logging.getLogger(__name__)

_ENTRY_SUFFIX = ".safetensors"
_CORRUPT_SUFFIX = ".corrupt"
_KEY_RE = re.compile(r"[0-9a-f]{8,128}")
_FANOUT_RE = re.compile(r"[0-9a-f]{2}")
_ENTRY_RE = re.compile(r"([0-9a-f]{8,128})\.safetensors")
#: the probe of a writable root, and the temp files of entries written by thqa <= 0.4 (entries are now written by
#: :func:`thqa.utils.atomic.atomic_path`, whose temp files :func:`thqa.utils.atomic.clean_partials` removes)
_TEMP_RE = re.compile(r"\.tmp-([0-9a-f]{12})-(\d+)-([0-9a-f]+)\.partial")


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


def _write_entry(path: Path, data: bytes) -> None:
    """Write an entry file atomically and durably (:func:`thqa.utils.atomic.atomic_path`: temp file, fsync, rename,
    directory fsync). A symbolic link, FIFO or device in the entry's place is replaced, never written through.

    Raises:
        CacheError: the entry cannot be written (disk full, permissions, ...); the message names it.
    """
    try:
        with contextlib.suppress(FileNotFoundError):
            mode = os.lstat(path).st_mode
            if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
                os.unlink(path)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise CacheError(f"cannot write cache entry {path}: {exc}") from exc


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


class FeatureCache:
    """A directory of feature entries, one ``.safetensors`` file per key (see the module docstring).

    Safe to share between processes (also on one network file system) and between threads of a
    process. Entries are never modified in place: :meth:`put` replaces them atomically.

    Temp files: a writer names its temp file ``.<key>.safetensors.<host>-<pid>-<rand>.partial``
    (:func:`thqa.utils.atomic.atomic_path`), where ``<host>`` identifies this machine's boot and pid namespace. :meth:`clean_temp` removes a temp file when its
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
                yield key, path, st.st_size, read_header_meta(f, st.st_size)

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

        The entry is written to a temp file beside :meth:`path_for` ``(key)``, fsync'ed and renamed onto it
        (:func:`thqa.utils.atomic.atomic_path`); on any error the temp file is removed. Concurrent
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
        path = self.path_for(key)
        data = encode_entry(key, arrays, meta, path)
        _write_entry(path, data)
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
                f = open_entry(path)
            except FileNotFoundError:
                return self._miss()
            except CorruptEntry as exc:
                read_sig = None
                reason = str(exc)
            except OSError as exc:
                read_sig = None
                reason = f"cannot open: {exc}"
            else:
                with f:
                    read_sig = stat_signature(os.fstat(f.fileno()))
                    try:
                        data = read_entry_bytes(f)
                    except OSError as exc:
                        data = None
                        reason = f"cannot read: {exc}"
                    except CorruptEntry as exc:
                        data = None
                        reason = str(exc)
                if data is not None:
                    try:
                        arrays, meta = decode_entry(key, data)
                    except CorruptEntry as exc:
                        reason = str(exc)
                    else:
                        with self._lock:
                            self.stats.hits += 1
                        return CacheEntry(arrays=arrays, meta=meta, path=path)
            # Corrupt. If another process replaced the file meanwhile, read the new one once more
            # instead of quarantining a good entry.
            try:
                now_sig = stat_signature(os.stat(path))
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

        A temp file (of :func:`thqa.utils.atomic.atomic_path`, or ``.tmp-<host>-<pid>-<rand>.partial`` of the
        writability probe and of older thqa versions, in the root or a fan-out directory) is removed
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
            removed += clean_partials(d, older_than_s=older_than_s)
        return removed
