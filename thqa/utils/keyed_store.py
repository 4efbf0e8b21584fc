"""A small JSON file of remembered facts, one entry per key (a dict, named by its sha256), the newest kept: thqa's
weight digests (:mod:`thqa.features.digests`) and decoder versions (:mod:`thqa.features.decoder_versions`).

Best effort both ways: a file that is missing, unreadable or of another format reads as empty, and one that cannot be
written is left alone (logged at debug level). Writes are atomic (:func:`thqa.utils.atomic.atomic_write_text`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from thqa.utils.atomic import atomic_write_text

__all__ = ["KeyedStore", "key_id"]

log = logging.getLogger(__name__)


def key_id(key: dict) -> str:
    """The name of ``key``'s entry: the sha256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class KeyedStore:
    """Entries ``{"key": key, **fields, "written": time}`` by :func:`key_id` in ``path`` (``{"format": fmt, "entries":
    ...}``), at most ``limit`` of them, the newest."""

    def __init__(self, path: Path, fmt: str, limit: int):
        self.path, self.fmt, self.limit = Path(path), fmt, limit

    def read(self) -> dict[str, dict]:
        """Every entry (empty when the file is missing, unreadable or not of this format)."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.debug("%s ignored: %s", self.path, exc)
            return {}
        if not isinstance(doc, dict) or doc.get("format") != self.fmt or not isinstance(doc.get("entries"), dict):
            log.debug("%s ignored: not a %s file", self.path, self.fmt)
            return {}
        return {k: v for k, v in doc["entries"].items() if isinstance(v, dict)}

    def entry(self, key: dict, entries: dict[str, dict] | None = None) -> dict | None:
        """The entry stored for exactly ``key`` (in ``entries``, default: the file's), or None."""
        e = (self.read() if entries is None else entries).get(key_id(key))
        return e if e is not None and e.get("key") == json.loads(json.dumps(key)) else None

    def put(self, key: dict, **fields) -> None:
        """Remember ``fields`` for ``key``, keeping the newest ``limit`` entries."""
        entries = self.read()
        entries[key_id(key)] = {"key": key, **fields, "written": time.time()}
        newest = sorted(entries.items(), key=lambda kv: float(kv[1].get("written") or 0), reverse=True)[: self.limit]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps({"format": self.fmt, "entries": dict(newest)}, indent=1) + "\n")
        except OSError as exc:
            log.debug("%s not written: %s", self.path, exc)
