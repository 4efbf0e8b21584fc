"""The feature cache's entry file: one safetensors file of named numpy arrays whose header metadata carries the
format, the key, a checksum of the arrays, the caller's metadata as canonical JSON and a checksum of those
(see :mod:`thqa.data.cache` for the layout). Encoding, decoding and verifying an entry; reading executes nothing.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thqa.data.hashing import CACHE_FORMAT_VERSION, canonical_json, check_jsonable
from thqa.errors import CacheError, ConfigError

__all__ = ["CorruptEntry", "MAX_ENTRY_BYTES", "array_checksum", "decode_entry", "encode_entry", "open_entry", "read_entry_bytes", "read_header_meta"]

_MAX_HEADER_BYTES = 100_000_000  # same limit as the safetensors reader
#: the largest entry file read (64 clips of raw 520 px first frames are ~100 MB): a bigger one is not thqa's
MAX_ENTRY_BYTES = 1 << 30

_META_FORMAT = "thqa.format"
_META_KEY = "thqa.key"
_META_SHA = "thqa.sha256"
_META_JSON = "thqa.meta"
#: sha256 over the entry's key, format and metadata JSON (:func:`meta_checksum`); entries written before it was
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


class CorruptEntry(Exception):
    """An entry file failed a check (read by :class:`~thqa.data.cache.FeatureCache` as a miss); the message is the reason."""


def array_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over (name, dtype name, shape, byte count, bytes) of each array in sorted name order.

    The arrays must be C-contiguous and little-endian (as :func:`prepare_arrays` makes them and as
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


def meta_checksum(md: Mapping[str, Any]) -> str:
    """sha256 over an entry header's format, key and metadata JSON (the strings as stored), so that a changed byte
    in the metadata (``features_version`` 2 -> 1) makes the entry corrupt instead of reused or pruned as stale."""
    h = hashlib.sha256(b"thqa-cache-meta-v1\0")
    for name in (_META_FORMAT, _META_KEY, _META_JSON):
        v = str(md.get(name, "")).encode("utf-8", "surrogatepass")
        h.update(len(v).to_bytes(8, "little"))
        h.update(v)
    return h.hexdigest()


def meta_intact(md: Mapping[str, Any]) -> bool:
    """Whether the header's metadata checksum matches (True for entries written before there was one)."""
    return _META_META_SHA not in md or md[_META_META_SHA] == meta_checksum(md)


def prepare_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
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


def read_header_meta(f: Any, size: int) -> dict[str, Any] | None:
    """The caller's metadata from an entry file's safetensors header (None when it cannot be parsed)."""
    try:
        n = int.from_bytes(f.read(8), "little")
        if n < 2 or n > _MAX_HEADER_BYTES or n > size - 8:
            return None
        header = json.loads(f.read(n).decode("utf-8"))
        if not meta_intact(header["__metadata__"]):
            return None
        meta = json.loads(header["__metadata__"][_META_JSON])
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        return None
    return meta if isinstance(meta, dict) else None


def encode_entry(key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], where: Path) -> bytes:
    """The bytes of an entry file holding ``arrays`` and ``meta`` under ``key`` (``where``: the entry file, for messages).

    Raises:
        ConfigError: an invalid array name, array type/dtype, or non-JSON-able metadata.
        CacheError: safetensors cannot serialise the arrays.
    """
    import safetensors.numpy  # late: keeps ``import thqa`` light

    prepared = prepare_arrays(arrays)
    if not isinstance(meta, Mapping):
        raise ConfigError(f"meta must be a mapping, got {type(meta).__name__}")
    check_jsonable(meta, "meta")
    header_meta = {
        _META_FORMAT: str(CACHE_FORMAT_VERSION),
        _META_KEY: key,
        _META_SHA: array_checksum(prepared),
        _META_JSON: canonical_json(dict(meta)),
    }
    header_meta[_META_META_SHA] = meta_checksum(header_meta)
    try:
        return safetensors.numpy.save(prepared, metadata=header_meta)
    except Exception as exc:  # safetensors raises its own error types
        raise CacheError(f"cannot serialise cache entry {where}: {exc}") from exc


def decode_entry(key: str, data: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Parse and verify an entry file's bytes: ``(arrays, metadata)``; raise :class:`CorruptEntry` with the reason."""
    import safetensors.numpy  # late: keeps ``import thqa`` light

    if len(data) < 8:
        raise CorruptEntry(f"file too short ({len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > _MAX_HEADER_BYTES or n > len(data) - 8:
        raise CorruptEntry(f"bad header length {n} for a file of {len(data)} bytes (truncated?)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptEntry(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise CorruptEntry("header has no metadata")
    md = header["__metadata__"]
    if md.get(_META_FORMAT) != str(CACHE_FORMAT_VERSION):
        raise CorruptEntry(f"unknown entry format {md.get(_META_FORMAT)!r}")
    if not meta_intact(md):
        raise CorruptEntry("metadata checksum mismatch (bit rot or an edited header)")
    if md.get(_META_KEY) != key:
        raise CorruptEntry(f"entry belongs to key {md.get(_META_KEY)!r}, not to this key")
    try:
        arrays = safetensors.numpy.load(data)
    except Exception as exc:  # SafetensorError, KeyError (dtype), ValueError (buffer size) ...
        raise CorruptEntry(f"safetensors cannot parse it ({type(exc).__name__}: {exc})") from None
    if array_checksum(arrays) != md.get(_META_SHA):
        raise CorruptEntry("array checksum mismatch (bit rot, truncation or edited file)")
    try:
        meta = json.loads(md.get(_META_JSON, ""))
    except ValueError as exc:
        raise CorruptEntry(f"metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CorruptEntry("metadata is not a JSON object")
    return dict(arrays), meta


def open_entry(path: Path):
    """Open an entry file for reading, refusing what the cache never writes: a symbolic link, anything but a regular
    file (a FIFO would block, /dev/zero never ends), or a file larger than :data:`MAX_ENTRY_BYTES`.

    Raises:
        FileNotFoundError: no entry. CorruptEntry: one of the above, with the reason. OSError: cannot open.
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise CorruptEntry("is a symbolic link; the cache only reads the regular files it wrote")
    if not stat.S_ISREG(st.st_mode):
        raise CorruptEntry("is not a regular file")
    if st.st_size > MAX_ENTRY_BYTES:
        raise CorruptEntry(f"{st.st_size} bytes: implausibly large for an entry (limit {MAX_ENTRY_BYTES})")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a link since the lstat
            raise CorruptEntry("is a symbolic link; the cache only reads the regular files it wrote") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ENTRY_BYTES:
        os.close(fd)
        raise CorruptEntry("is not a regular file of plausible size")
    return open(fd, "rb")  # noqa: SIM115 - the caller closes it


def read_entry_bytes(f) -> bytes:
    """The rest of an entry file opened by :func:`open_entry`; raises :class:`CorruptEntry` when it grew past
    :data:`MAX_ENTRY_BYTES` while read (OSError when it cannot be read)."""
    data = f.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        raise CorruptEntry(f"grew past {MAX_ENTRY_BYTES} bytes while read: implausibly large for an entry")
    return data
