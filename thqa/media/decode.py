"""Decoding with PyAV: video frames and audio on the container's clock, reading only the seconds that are needed.

The central function is :func:`read_clips`: given the seconds that the sampled clips start at, it returns per clip

* the first ``n_frames`` frames whose timestamp is at or after the clip's start, resized to ``frame_size`` (the
  temporal branch's input), padded with the last frame when the video ends;
* the clip's first frame at its native size (the spatial branch's input);
* mono float32 audio covering ``[start - context, start + 1 s + context)`` on the same clock as the frames, zeros
  where the file has no sound.

Exactness
---------
A clip's frames and sound do not depend on which other clips are read with it: they are what a plain decode of the
whole file from its start gives (``tests/oracle.py``; ``tests/media/test_exact_decoding.py`` compares them pixel for pixel
and sample for sample on real and made files). Two rules make it so:

* **Video** is read in passes (:class:`_VideoPass`). A pass starts with a seek, which flushes the decoder, to the
  keyframe before a clip, and from then on decodes every packet the demuxer yields, in order: a decoder is never fed a
  packet stream with holes. The next clip either continues the pass (when it is near, or no keyframe interval away)
  or starts a new pass with a new seek. A seek that lands after the clip's start makes the pass start from the top.
  Times are on the container clock, relative to the stream's first frame, which may be negative (a file made with
  ``-itsoffset -2``): no seek goes before it, and the top is a seek checked by its first frame, else a fresh opening.
* **Sound** is decoded in its own pass from the start of the file up to the last clip (audio decoders carry state from
  packet to packet: the overlap of MDCT frames, AAC's noise substitution), then each clip's span is resampled with
  scipy's polyphase filter on fixed grids (native sample ``m`` at ``m / native_rate`` s, output sample ``j`` at
  ``j / rate`` s), from a span that starts on both grids and leaves the filter's length of margin: the samples are
  those of resampling the whole track at once.

The work is split by job, one decoder module per job (the names here are re-exported from them):
:mod:`thqa.media.probe` (checks, opening, stream facts), :mod:`thqa.media.video` (the exact video passes),
:mod:`thqa.media.sound` (the sound and its resampling), :mod:`thqa.media.clips` (:func:`read_clips`,
:func:`read_audio`). They all log under ``thqa.media``.

Memory is bounded by the clips asked for, not by the file's duration: a 10-minute file costs about what a
6-second one does (its sound is decoded, not kept, up to the last clip: 0.4 s of CPU for a 600 s file here).
"""
from __future__ import annotations

from thqa.media.clips import ClipData, VideoClips, read_audio, read_clips
from thqa.media.probe import MediaInfo, check_file, probe, set_decode_threads
from thqa.media.video import iter_frames

__all__ = [
    "MediaInfo",
    "ClipData",
    "VideoClips",
    "probe",
    "read_clips",
    "read_audio",
    "iter_frames",
    "check_file",
    "set_decode_threads",
]
