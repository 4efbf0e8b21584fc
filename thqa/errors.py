"""One exception hierarchy for the whole library.

Every error thqa raises on purpose derives from :class:`THQAError`; each subclass also derives from the
matching built-in exception, so ``except FileNotFoundError`` or ``except ValueError`` keep working.
"""
from __future__ import annotations

import re

__all__ = [
    "terminal_safe",
    "THQAError",
    "MediaFileNotFoundError",
    "MediaError",
    "DecodeError",
    "NoVideoStreamError",
    "WeightsNotFoundError",
    "WeightsError",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConfigError",
    "ManifestError",
    "CacheError",
    "MetricError",
    "DependencyError",
    "ServiceError",
]


class THQAError(Exception):
    """Root of every error raised by thqa."""


class MediaFileNotFoundError(THQAError, FileNotFoundError):
    """A media file does not exist or is a directory."""


class MediaError(THQAError, ValueError):
    """A file exists but cannot be used as a talking-head video (empty, not media, ...)."""


class DecodeError(MediaError):
    """FFmpeg could not open or decode the file (truncated, corrupt, unsupported)."""


class NoVideoStreamError(MediaError):
    """The file has no video stream (audio-only file, image, text)."""


class WeightsNotFoundError(THQAError, FileNotFoundError):
    """Pretrained backbone weights are not available (offline, or a named file is missing)."""


class WeightsError(THQAError, ValueError):
    """A weights file exists but cannot be loaded into the backbone."""


class CheckpointError(THQAError, ValueError):
    """A fusion checkpoint is missing, corrupt or of an unknown format."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was trained on other backbone weights or settings than the ones in use."""


class ConfigError(THQAError, ValueError):
    """An invalid setting or argument."""


class ManifestError(THQAError, ValueError):
    """A manifest, label or prediction file is malformed."""


class CacheError(THQAError, OSError):
    """The feature cache cannot be read or written."""


class MetricError(THQAError, ValueError):
    """Metrics cannot be computed from the given numbers (too few, mismatched, non-finite)."""


class DependencyError(THQAError, ImportError):
    """An optional dependency needed for this feature is not installed."""


#: control characters (C0 but tab, DEL, C1): an escape sequence in a file name or a checkpoint's header string would
#: move the cursor, recolour or retitle the terminal it is printed on
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``), for printing to a terminal."""
    return _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class ServiceError(THQAError, ConnectionError):
    """The scoring service (``thqa serve``) refused a request or cannot be reached; ``status`` is the HTTP status
    (None: unreachable), ``error_type`` the service's, ``retry_after`` its Retry-After (503)."""

    status: int | None = None
    error_type: str | None = None
    retry_after: str | None = None


def brief(exc: BaseException, limit: int = 240) -> str:
    """One line for users from an exception's message: its first line, cut at a sentence end near ``limit``.

    Sentences that advise turning a safety off (torch's "Re-running torch.load with weights_only set to False will
    likely succeed") are dropped: thqa never loads a file that way.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    sentences = [s for s in text.replace(". ", ".\n").split("\n") if "weights_only" not in s and "trusted source" not in s]
    text = " ".join(sentences).strip() or type(exc).__name__
    if len(text) > limit:
        cut = text.rfind(". ", 0, limit)
        text = text[: cut + 1] if cut > limit // 3 else text[: limit - 3].rstrip() + "..."
    return text
