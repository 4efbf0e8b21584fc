"""The backbones' weight digests, remembered: each is computed once per weight file (or random-init seed) and machine.

A backbone's identity is the sha256 of its state (:func:`thqa.features.weights.state_digest`): it goes into every cache key
and checkpoint. Hashing 62 M parameters costs a few tenths of a second each time the backbones are built, so the
digest is kept in ``weight-digests.json`` in thqa's cache folder (``$THQA_CACHE_HOME``, else
``$XDG_CACHE_HOME/thqa``, else ``~/.cache/thqa``), keyed by

- a weight file: which backbone, the file's resolved path, size, modification time (ns), inode and device, and the
  versions of the code that turn the file into the module (the backbone's ``code_version`` in the table of
  :mod:`thqa.features.registry`, timm or pytorchvideo, torch). A file rewritten in place gets a new modification time
  and is hashed again;
- random-init weights: which backbone, the seed, the same code versions and PyTorch's CPU dispatch level (the
  vectorised kernels that draw the initial weights).

The file is small JSON, rewritten atomically; one that cannot be read or parsed is ignored (and replaced at the next
write), and one that cannot be written costs only the time saved. ``$THQA_DIGEST_CACHE=0`` turns the cache off.

The key names thqa's code by the backbone's ``code_version``, which survives moving and editing files that do not
change what is built (``tests/features/test_startup.py`` fails when the code of a backbone changes without a bump). thqa 0.x up
to the move into subpackages named it by a hash of three files' bytes (``thqa_code``: :data:`LEGACY_CODE`); an entry
keyed so is code_version 1, reused as it is and copied under the new key (:meth:`DigestCache.get`).
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from thqa.features.registry import spec
from thqa.utils.keyed_store import KeyedStore
from thqa.utils.torch_info import cpu_capability, torch_version

__all__ = ["cache_home", "DigestCache", "remembered_digest", "file_key", "random_init_key", "code_versions", "legacy_keys", "LEGACY_CODE", "ENV_HOME", "ENV_SWITCH"]


ENV_HOME = "THQA_CACHE_HOME"
ENV_SWITCH = "THQA_DIGEST_CACHE"
FILE_NAME = "weight-digests.json"
FORMAT = "thqa-weight-digests/1"
#: entries kept (the newest): a weight file touched again and again must not grow the file without bound
MAX_ENTRIES = 256
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: the ``thqa_code`` of the keys written before code versions (sha256 of the bytes of weights.py, features/spatial.py
#: and features/temporal.py, first 16 hex digits): the release before the move into subpackages (fd2a219), and the
#: move itself (f73d054, the same code at other paths). Each means code_version 1 of both backbones.
LEGACY_CODE = ("57af1e97d7f24629", "ac94fa9f36469acf")


def cache_home() -> Path:
    """thqa's cache folder: ``$THQA_CACHE_HOME``, else ``$XDG_CACHE_HOME/thqa``, else ``~/.cache/thqa``."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "thqa"


def _enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.lru_cache(maxsize=None)
def code_versions(backbone: str) -> dict:
    """The versions of what turns weights (a file or a seed) into the backbone's state: torch, the model library
    (the registry's ``library``: timm for Swin-T, pytorchvideo for SlowFast) and the backbone's ``code_version``."""
    from importlib.metadata import PackageNotFoundError, version

    s = spec(backbone)
    try:
        lib_version = version(s.library)
    except PackageNotFoundError:
        lib_version = "absent"
    # torch's version as torch.__version__ says it (local suffix included), read without importing torch
    return {"torch": torch_version(), s.library: lib_version, "thqa_code_version": s.code_version}


def legacy_keys(key: dict) -> list[dict]:
    """The keys the same entry had before code versions (see the module's docs): none for a code_version above 1."""
    code = key.get("code") or {}
    if code.get("thqa_code_version") != 1:
        return []
    rest = {k: v for k, v in code.items() if k != "thqa_code_version"}
    return [{**key, "code": {**rest, "thqa_code": h}} for h in LEGACY_CODE]


def file_key(backbone: str, path: str | os.PathLike) -> dict | None:
    """The key of a weight file's digest (None when the file cannot be stat'ed)."""
    try:
        p = Path(path).resolve()
        st = p.stat()
    except OSError:
        return None
    return {
        "backbone": backbone,
        "path": str(p),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "inode": st.st_ino,
        "device": st.st_dev,
        "code": code_versions(backbone),
    }


def random_init_key(backbone: str, seed: int) -> dict:
    """The key of a random-init backbone's digest (computed without importing torch where it can be:
    :mod:`thqa.utils.torch_info`)."""
    return {
        "backbone": backbone,
        "random_init_seed": int(seed),
        "code": code_versions(backbone),
        "cpu_capability": cpu_capability(),
    }


def _valid(store: KeyedStore, entries: dict[str, dict], key: dict) -> str | None:
    """The well-formed digest stored for exactly ``key`` in ``entries``, or None."""
    e = store.entry(key, entries)
    if e is None or not isinstance(e.get("sha256"), str) or not _SHA256_RE.fullmatch(e["sha256"]):
        return None
    return e["sha256"]


class DigestCache:
    """Digests by key (see the module's docs), in ``path`` (default: ``weight-digests.json`` in :func:`cache_home`)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else cache_home() / FILE_NAME
        self.enabled = _enabled()
        self._store = KeyedStore(self.path, FORMAT, MAX_ENTRIES)

    def get(self, key: dict | None) -> str | None:
        """The digest stored for ``key``, or None."""
        if key is None or not self.enabled:
            return None
        entries = self._store.read()
        hit = _valid(self._store, entries, key)
        if hit is None:
            for old in legacy_keys(key):
                hit = _valid(self._store, entries, old)
                if hit is not None:
                    self.put(key, hit)  # migrated: found under its own key from now on
                    break
        return hit

    def put(self, key: dict | None, sha256: str) -> None:
        """Remember ``sha256`` for ``key`` (best effort: a cache that cannot be written is left alone)."""
        if key is None or not self.enabled or not _SHA256_RE.fullmatch(sha256):
            return
        self._store.put(key, sha256=sha256)


def remembered_digest(key: dict | None, compute) -> str:
    """``compute()``'s digest, or the one remembered for ``key`` (then ``compute`` is not called)."""
    cache = DigestCache()
    hit = cache.get(key)
    if hit is not None:
        return hit
    sha = compute()
    cache.put(key, sha)
    return sha
