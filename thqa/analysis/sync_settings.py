"""Settings of the lip-sync estimate (:mod:`thqa.analysis.sync`): the search range, how the mouth is found, the
analysis windows, the confidence thresholds and the in-sync window (ITU-R BT.1359-1, see :mod:`thqa.analysis.sync`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from thqa.errors import ConfigError

__all__ = ["IN_SYNC_WINDOW_MS", "LOCATORS", "MAX_OFFSET_MS", "SyncSettings"]

#: the ways :class:`SyncSettings` can find the mouth
LOCATORS = ("face", "frame")
#: (lead, lag) in ms: the most the sound may come before (lead) and after (lag) the lips to be in sync - ITU-R
#: BT.1359-1's threshold of detectability (+45 ms sound ahead, -125 ms sound behind, in its sign); see the module doc
IN_SYNC_WINDOW_MS: tuple[float, float] = (45.0, 125.0)


#: the widest search asked for (ms): a minute either way is far beyond any lip-sync error; inf or more is refused,
#: not clamped (a file too short for the range asked gets a narrower one, reported in ``range_ms``)
MAX_OFFSET_MS = 60_000.0


@dataclass(frozen=True)
class SyncSettings:
    """Settings of :func:`estimate_av_offset` (the defaults are the benchmarked ones)."""

    max_offset_ms: float = 1000.0  #: search -max_offset .. +max_offset
    #: a shorter file is searched only as far as leaves this many seconds of picture and sound overlapping (a 2 s clip
    #: shifted by 1 s keeps 1 s of overlap, where chance agreement wins); the searched range is in the result
    min_overlap_s: float = 1.5
    step_ms: float = 5.0  #: spacing of the candidate offsets (the peak is refined below it)
    max_seconds: float | None = 30.0  #: analyse at most this many seconds from the start (None: all)
    width: int = 320  #: frames are decoded at this width (aspect kept) in grey: the face detector's picture
    #: how the mouth is found: "face" (dlib's HOG face detector; a file without a detectable face is an error) or
    #: "frame" (no detector: the blocks of the whole picture, scaled to ``frame_width``, that follow the sound best)
    locator: str = "face"
    mouth_size: tuple[int, int] = (96, 72)  #: (width, height) the mouth region is scaled to ("face")
    frame_width: int = 192  #: the whole picture is analysed at this width ("frame")
    detect_every_s: float = 0.5  #: seconds between the frames the face detector looks at
    max_detections: int = 20  #: at most this many frames are searched for a face (spread over the file)
    #: a frame whose mean absolute grey-level difference (0-255) from the previous kept frame is below this repeats
    #: it and is dropped (0: keep every frame)
    repeat_threshold: float = 0.2
    block: int = 8  #: block size in pixels of the analysed picture
    top_blocks: int = 4  #: blocks pooled into the agreement at each offset (in each window)
    #: the agreement curve is the mean of the curves of windows this long (s), each with its own best blocks, so
    #: that a mouth that moves across the picture (head motion) is followed; None: one window over the whole file
    window_s: float | None = 4.0
    window_hop_s: float = 1.0  #: spacing of the windows' starts (s)
    #: the offset is marked unreliable (ambiguous) when the windowed estimate and the whole-file one (one set of best
    #: blocks for the whole file) differ by more than this (ms); None: never
    max_disagreement_ms: float | None = 80.0
    audio_rate: int = 16000
    min_seconds: float = 1.5  #: shorter files are refused
    #: below this confidence no offset is reported (an error: no peak stands out of the curve at all)
    min_confidence: float = 2.0
    #: below this confidence the offset is reported but marked unreliable (a weak peak)
    weak_confidence: float = 3.0
    #: (lead, lag) ms: the sound may come this much before / after the lips and be ``in_sync`` (:data:`IN_SYNC_WINDOW_MS`)
    in_sync_window_ms: tuple[float, float] = IN_SYNC_WINDOW_MS

    def validate(self) -> "SyncSettings":
        if not (0 < self.max_offset_ms <= MAX_OFFSET_MS and 0 < self.step_ms <= 100):
            raise ConfigError(f"max_offset_ms must be in (0, {MAX_OFFSET_MS:g}] and step_ms in (0, 100], got {self.max_offset_ms}, {self.step_ms}")
        if self.width < 32 or self.frame_width < 32 or self.block < 2 or self.top_blocks < 1:
            raise ConfigError("width and frame_width must be >= 32, block >= 2 and top_blocks >= 1")
        if self.locator not in LOCATORS:
            raise ConfigError(f"locator must be one of {', '.join(LOCATORS)}, got {self.locator!r}")
        mw, mh = self.mouth_size
        if min(mw, mh) < 4 * self.block:
            raise ConfigError(f"mouth_size must be at least 4 blocks ({4 * self.block} px) each way, got {self.mouth_size}")
        if not (self.detect_every_s > 0 and self.max_detections >= 1 and self.repeat_threshold >= 0):
            raise ConfigError("detect_every_s must be > 0, max_detections >= 1 and repeat_threshold >= 0")
        if not self.weak_confidence >= self.min_confidence:
            raise ConfigError(f"weak_confidence ({self.weak_confidence}) must be >= min_confidence ({self.min_confidence})")
        if not self.min_overlap_s >= 0:
            raise ConfigError(f"min_overlap_s must be >= 0, got {self.min_overlap_s}")
        if self.max_disagreement_ms is not None and not self.max_disagreement_ms >= 0:
            raise ConfigError(f"max_disagreement_ms must be None or >= 0, got {self.max_disagreement_ms}")
        if self.window_s is not None and not (self.window_s >= 1.0 and self.window_hop_s > 0):
            raise ConfigError(f"window_s must be None or >= 1 s and window_hop_s > 0, got {self.window_s}, {self.window_hop_s}")
        if self.max_seconds is not None and self.max_seconds < self.min_seconds:
            raise ConfigError(f"max_seconds must be at least min_seconds ({self.min_seconds})")
        w = self.in_sync_window_ms
        if not (len(w) == 2 and all(math.isfinite(x) and 0 <= x <= 10000 for x in w)):
            raise ConfigError(f"in_sync_window_ms must be two numbers of ms (lead, lag) from 0 to 10000, got {w}")
        return self
