"""Which seconds of a video the clips come from.

Rule (the winning method's, generalised):

* ``n`` whole seconds, ``k`` clips wanted (6 by default); a video shorter than one second counts as one second
  (its one clip is padded with its last frame).
* ``n <= k`` - cyclic sampling: clip ``i`` reads second ``i mod n`` (the method's rule), so every second is used
  and the sequence keeps its order within each cycle.
* ``n > k`` - clips spread evenly over the whole video: clip ``i`` reads second ``floor(i * n / k)``. Reading only
  the first ``k`` seconds would judge a 60-second video by its first tenth; spreading keeps the start (second 0),
  covers the end, and costs the same. ``spread=False`` (ExtractionSettings ``clip_sampling="first"``) is the
  method's own rule: clip ``i`` reads second ``i`` (the first ``k`` seconds).
"""
from __future__ import annotations

import math

from thqa.errors import ConfigError

__all__ = ["clip_seconds", "whole_seconds"]


def whole_seconds(duration: float) -> int:
    """Whole seconds in ``duration`` (at least 1; a millisecond of slack absorbs timestamp rounding)."""
    return max(1, int(math.floor(duration + 1e-3)))


def clip_seconds(duration: float, *, n_clips: int = 6, spread: bool = True) -> list[int]:
    """Return the start second of each clip, ``(n_clips,)`` ints, for a video of ``duration`` seconds
    (``spread=False``: the first ``n_clips`` seconds of a longer video, as the method).

    >>> clip_seconds(3.9, n_clips=6)
    [0, 1, 2, 0, 1, 2]
    >>> clip_seconds(16.6, n_clips=6)
    [0, 2, 5, 8, 10, 13]
    """
    if isinstance(n_clips, bool) or not isinstance(n_clips, int) or n_clips < 1:
        raise ConfigError(f"n_clips must be a positive integer, got {n_clips!r}")
    if not (isinstance(duration, (int, float)) and math.isfinite(duration)) or duration < 0:
        raise ConfigError(f"duration must be a finite number of seconds >= 0, got {duration!r}")
    n = whole_seconds(duration)
    if n <= n_clips or not spread:
        return [i % n for i in range(n_clips)]
    return [(i * n) // n_clips for i in range(n_clips)]
