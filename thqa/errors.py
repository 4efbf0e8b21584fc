"""One exception hierarchy for the whole library.

Every error thqa raises on purpose derives from :class:`THQAError`; each subclass also derives from the
matching built-in exception, so ``except FileNotFoundError`` or ``except ValueError`` keep working.
"""
from __future__ import annotations

__all__ = [
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
