"""The sound: decoded from the start of the file, mono, resampled on fixed grids, so any span is exact.

The first audio stream is decoded in its own pass from the start of the file up to the last span wanted (audio
decoders carry state from packet to packet: the overlap of MDCT frames, AAC's noise substitution), then each span is
resampled with scipy's polyphase filter on fixed grids (native sample ``m`` at ``m / native_rate`` s, output sample
``j`` at ``j / rate`` s), from a span that starts on both grids and leaves the filter's length of margin: the samples
are those of resampling the whole track at once. Only the wanted spans are kept.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from thqa.media.probe import _av, _Deadline, _open, _warn, log

__all__: list[str] = []  # the readers are in thqa.media.clips (read_clips, read_audio)

_SAMPLE_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0, "flt": 1.0, "dbl": 1.0}


def _mono(frame) -> np.ndarray:
    """(samples,) float32: the mean of the frame's channels (FFmpeg's downmix would weight stereo by 0.707, so the
    same sound stored as stereo would come out 3 dB louder than stored as mono)."""
    a = frame.to_ndarray()
    if not frame.format.is_planar:
        a = a.reshape(-1, len(frame.layout.channels)).T
    base = frame.format.name.rstrip("p")
    a = a.astype(np.float32)
    if base == "u8":
        a -= 128.0
    scale = _SAMPLE_SCALE.get(base, 1.0)
    if scale != 1.0:
        a *= np.float32(1.0 / scale)
    return a.mean(axis=0, dtype=np.float32)


class _Sound:
    """Mono sound at the stream's native rate, kept only where it overlaps the wanted native spans.

    Sample ``m`` belongs at ``m / rate`` s on the container clock: a decoded frame goes where its timestamp says when it
    is the first, or when the timestamp disagrees with the end of the previous frame by more than 20 ms (a gap or an
    overlap in the stream); otherwise it follows the previous frame (timestamps rounded to ms in some containers).
    """

    def __init__(self, rate: int, spans: list[tuple[int, int | None]]):
        self.rate, self.spans = rate, spans
        self.chunks: list[tuple[int, np.ndarray]] = []  #: (first sample index, samples), in decoding order
        self.cursor: int | None = None
        self._other_rate = None  #: a resampler for frames at another rate (the stream changed rate)

    def add(self, frame) -> None:
        if frame.sample_rate != self.rate:
            self._add_other_rate(frame)
            return
        if frame.time is not None:
            expected = int(round(float(frame.time) * self.rate))
            if self.cursor is None or abs(expected - self.cursor) > 0.02 * self.rate:
                self.cursor = expected
        elif self.cursor is None:
            self.cursor = 0
        self._put(_mono(frame))

    def _put(self, x: np.ndarray) -> None:
        a, b = self.cursor, self.cursor + x.shape[0]
        if any(a < (hi if hi is not None else b + 1) and b > lo for lo, hi in self.spans):
            self.chunks.append((a, x))
        self.cursor = b

    def _add_other_rate(self, frame) -> None:
        av = _av()
        if self._other_rate is None:
            log.debug("an audio frame at %d Hz in a %d Hz stream: resampled", frame.sample_rate, self.rate)
            self._other_rate = av.AudioResampler(format="fltp", rate=self.rate)
        for out in self._other_rate.resample(frame):
            if self.cursor is None:
                self.cursor = int(round(float(frame.time or 0.0) * self.rate))
            self._put(_mono(out))

    @property
    def done(self) -> bool:
        ends = [hi for _, hi in self.spans]
        return self.cursor is not None and None not in ends and self.cursor >= max(ends)

    def span(self, lo: int, hi: int | None) -> np.ndarray:
        """Samples ``[lo, hi)`` (``hi`` None: to the last sample decoded), zeros where nothing was decoded."""
        if hi is None:
            hi = max([a + x.shape[0] for a, x in self.chunks], default=lo)
        buf = np.zeros(max(0, hi - lo), dtype=np.float32)
        for a, x in self.chunks:
            s, e = max(a, lo), min(a + x.shape[0], hi)
            if e > s:
                buf[s - lo : e - lo] = x[s - a : e - a]
        return buf

    def heard(self, lo: int, hi: int) -> bool:
        return any(a < hi and a + x.shape[0] > lo for a, x in self.chunks)


def _ratio(native: int, rate: int) -> tuple[int, int]:
    g = math.gcd(native, rate)
    return rate // g, native // g


def _native_span(j0: int, n: int, native: int, rate: int) -> tuple[int, int, int]:
    """The native samples ``[m0, m1)`` whose resampling gives output samples ``[j0, j0 + n)`` exactly as resampling
    the whole track would: ``m0`` is a multiple of the rate ratio's denominator, so the span's output grid is the
    global one (its first output sample is ``q0``), and both ends leave more than the filter's half length."""
    up, down = _ratio(native, rate)
    if up == down:
        return j0, j0 + n, j0
    half = 10 * max(up, down)  # scipy.signal.resample_poly's default filter half length, at the upsampled rate
    pad = half // down + 2
    k = math.floor((j0 - pad) / up)
    return k * down, math.ceil((j0 + n + pad) * down / up) + 1, k * up


def _resample(x: np.ndarray, native: int, rate: int) -> np.ndarray:
    """``x`` (native rate, starting on the global grid) at ``rate``: scipy's polyphase filter, same for any span."""
    up, down = _ratio(native, rate)
    if up == down:
        return x
    from scipy.signal import resample_poly

    return resample_poly(x, up, down).astype(np.float32, copy=False)


def _decode_sound(path: Path, spans_out: list[tuple[int, int | None]], rate: int, deadline: _Deadline, warnings: list[str]) -> tuple[_Sound | None, int]:
    """Decode the first audio stream from the start of the file (a second opening, no seek: audio decoders carry
    state from packet to packet - the overlap of MDCT frames, AAC's noise substitution - so only an unbroken decode
    from the start is exact) until every wanted span is complete. ``spans_out`` are output-rate sample ranges.
    Returns the native-rate sound and its rate, (None, 0) when no frame decoded."""
    av = _av()
    sound: _Sound | None = None
    native = 0
    with _open(path) as container:
        astream = container.streams.audio[0]
        _discard_all_but(container, astream)
        try:
            for packet in container.demux(astream):
                deadline.check()
                for frame in packet.decode():
                    if sound is None:
                        native = int(frame.sample_rate)
                        spans = [_native_span(j0, n, native, rate)[:2] if n is not None else (_native_lo(j0, native, rate), None) for j0, n in spans_out]
                        sound = _Sound(native, spans)
                    sound.add(frame)
                if sound is not None and sound.done:
                    break
        except av.error.FFmpegError as exc:
            at = sound.cursor / native if sound is not None and sound.cursor is not None else 0.0
            _warn(warnings, f"{path}: audio decoding stopped near {at:.2f} s ({exc}); the rest is silence")
    return sound, native


def _native_lo(j0: int, native: int, rate: int) -> int:
    return _native_span(j0, 1, native, rate)[0]


def _discard_all_but(container, keep) -> None:
    """Tell the demuxer to skip the other streams' packets (MP4 then reads only the audio's bytes)."""
    try:
        from av.stream import Discard
    except ImportError:  # PyAV < 15
        return
    for s in container.streams:
        if s.index != keep.index:
            try:
                s.discard = Discard.all
            except (AttributeError, ValueError, TypeError):
                return


def _clip_sound(sound: _Sound | None, native: int, j0: int, n: int, rate: int) -> tuple[np.ndarray, bool]:
    """Output samples ``[j0, j0 + n)`` at ``rate`` and whether any decoded sound fell in them."""
    if sound is None:
        return np.zeros(n, dtype=np.float32), False
    m0, m1, q0 = _native_span(j0, n, native, rate)
    y = _resample(sound.span(m0, m1), native, rate)
    up, down = _ratio(native, rate)
    heard = sound.heard(math.floor(j0 * down / up), math.ceil((j0 + n) * down / up))
    return np.ascontiguousarray(y[j0 - q0 : j0 - q0 + n], dtype=np.float32), heard


def _audio_duration(container) -> float | None:
    """When the audio stream ends on the container clock, from the headers (the stream's start time plus its
    duration, else the container's duration), None if unknown."""
    astream = container.streams.audio[0]
    if astream.duration is not None and astream.time_base:
        start = astream.start_time if astream.start_time is not None else 0
        return float((start + astream.duration) * astream.time_base)
    if container.duration:
        return float(container.duration) / _av().time_base
    return None
