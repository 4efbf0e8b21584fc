"""The method's four audio maps, and :class:`AudioClips`, the batch of clips' sound every map is computed from.

An audio map is a function ``f(clips: AudioClips) -> (N, n_bins, n_frames)``: one map per clip of the batch, on the
common time grid (feature frame ``k`` centred ``(k + 0.5) / n_frames`` s after the clip's first video frame). The
table of maps by name is :data:`thqa.features.audio.AUDIO_MAPS`; :attr:`AudioSettings.maps
<thqa.features.audio.AudioSettings.maps>` picks the maps and their order (the model's input channels).

What several maps share is computed once per batch by :class:`AudioClips` (the STFT power spectrum on the grid),
and the filter banks once per process and settings (:func:`functools.lru_cache`). A new map is a function here or
in its own module (it imports :class:`AudioClips` from here) and one entry in ``AUDIO_MAPS``.

librosa and spafe load inside the functions that use them: this module is loaded with the settings, which the
recipes and checkpoints import without needing an audio library (librosa takes a second to import).
"""
from __future__ import annotations

import warnings
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

__all__ = ["AudioClips", "chroma", "cqt", "mfcc", "gfcc"]


class AudioClips:
    """N clips' sound, as every audio map reads it, with what several maps share computed once.

    ``y``: (N, samples) float32, finite, zero-padded to at least ``(1 + 2 * context) * sample_rate`` samples: each
    row is a clip's buffer, starting ``context`` seconds before the clip's first video frame.
    ``settings``: the :class:`thqa.features.audio.AudioSettings` (typed loosely here: that module imports this one).
    """

    def __init__(self, y: np.ndarray, settings: Any):
        self.y = y
        self.settings = settings

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def first_centre(self) -> int:
        """Sample index (in a clip's buffer) of the centre of feature frame 0."""
        s = self.settings
        return int(round(s.context * s.sample_rate)) + s.hop // 2

    def windowed_span(self, y: np.ndarray) -> np.ndarray:
        """The samples of ``y`` (..., samples) that windows of n_fft centred on the grid cover: frame k starts at k*hop."""
        s = self.settings
        begin = self.first_centre - s.n_fft // 2
        return y[..., begin : begin + (s.n_frames - 1) * s.hop + s.n_fft]

    @cached_property
    def span(self) -> np.ndarray:
        """(N, (n_frames - 1) * hop + n_fft): the samples under the grid's windows."""
        return self.windowed_span(self.y)

    @cached_property
    def power(self) -> np.ndarray:
        """(N, 1 + n_fft/2, n_frames) float32: the STFT power spectrum, one window of n_fft centred on each grid frame."""
        import librosa

        s = self.settings
        return np.abs(librosa.stft(self.span, n_fft=s.n_fft, hop_length=s.hop, center=False)) ** 2

    def librosa_grid(self) -> tuple[int, int]:
        """(first sample to feed a centred librosa feature, frames to skip): librosa centres its frame j at sample
        j*hop of its input, so frame ``skip + k`` of ``y[..., first:]`` is grid frame k."""
        s = self.settings
        c0 = self.first_centre
        first = c0 % s.hop
        return first, (c0 - first) // s.hop


# -- filter banks, built once per process and settings (25 ms a call for librosa's, most of spafe's cost) ----------
@lru_cache(maxsize=16)
def _chroma_bank(sample_rate: int, n_fft: int, tuning: float, n_chroma: int) -> np.ndarray:
    """librosa's chroma bank, (n_chroma, 1 + n_fft/2)."""
    import librosa

    return librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=tuning, n_chroma=n_chroma)


@lru_cache(maxsize=16)
def _mel_bank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's mel bank, (n_mels, 1 + n_fft/2)."""
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


@lru_cache(maxsize=16)
def _gammatone_bank(n_bins: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """spafe's gammatone filter bank, (n_bins, 1 + n_fft/2)."""
    from spafe.fbanks.gammatone_fbanks import gammatone_filter_banks

    bank, _ = gammatone_filter_banks(nfilts=n_bins, nfft=n_fft, fs=sample_rate)
    return bank


@lru_cache(maxsize=16)
def _cqt_rows(cqt_bins: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The CQT's rows onto n_bins rows: (lower row, weight of the upper) of a linear interpolation over the
    log-frequency index, each (n_bins,)."""
    x = np.linspace(0, cqt_bins - 1, n_bins)
    lo = np.minimum(np.floor(x).astype(np.int64), cqt_bins - 2)
    return lo, x - lo


# -- the maps ---------------------------------------------------------------------------------------------------------
def chroma(clips: AudioClips) -> np.ndarray:
    """(N, n_bins, n_frames): what ``librosa.feature.chroma_stft`` computes from the shared spectrum, with ``n_bins``
    chroma bins; with ``chroma_tuning`` None, the tuning estimated from each clip's own spectrogram (librosa's default)."""
    import librosa

    s = clips.settings
    if s.chroma_tuning is None:
        return np.stack([librosa.feature.chroma_stft(S=p, sr=s.sample_rate, n_fft=s.n_fft, n_chroma=s.n_bins, tuning=None) for p in clips.power])
    bank = _chroma_bank(s.sample_rate, s.n_fft, s.chroma_tuning or 0.0, s.n_bins)
    return librosa.util.normalize(np.einsum("cf,...ft->...ct", bank, clips.power, optimize=True), norm=np.inf, axis=-2)


def mfcc(clips: AudioClips) -> np.ndarray:
    """(N, n_bins, n_frames): ``n_bins`` coefficients of the log-mel spectrogram (``n_bins`` mel bands) of the shared
    spectrum; ``mfcc_top_db`` floors it under each clip's own peak (not the batch's)."""
    import librosa

    s = clips.settings
    mel = np.einsum("...ft,mf->...mt", clips.power, _mel_bank(s.sample_rate, s.n_fft, s.n_bins), optimize=True)
    logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    if s.mfcc_top_db is not None:
        logmel = np.maximum(logmel, logmel.max(axis=(-2, -1), keepdims=True) - s.mfcc_top_db)
    return librosa.feature.mfcc(S=logmel, n_mfcc=s.n_bins)


def cqt(clips: AudioClips) -> np.ndarray:
    """(N, n_bins, n_frames): the log-magnitude CQT (``cqt_kind`` "log") or librosa's chroma_cqt ("chroma")."""
    return _chroma_cqt(clips) if clips.settings.cqt_kind == "chroma" else _log_cqt(clips)


def _chroma_cqt(clips: AudioClips) -> np.ndarray:
    """librosa.feature.chroma_cqt on the common grid, one clip at a time (its tuning estimate must come from the clip
    alone). The public code's channel: ~0.65 s of CPU per clip at 896 filters and 16 kHz, ~2.9 s at 22.05 kHz with the
    tuning estimated (benchmarks/bench_audio_settings.py)."""
    import librosa

    s = clips.settings
    first, skip = clips.librosa_grid()
    out = []
    for clip in clips.y:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = librosa.feature.chroma_cqt(
                y=clip[first:],
                sr=s.sample_rate,
                hop_length=s.hop,
                fmin=s.cqt_fmin,
                n_chroma=s.n_bins,
                n_octaves=s.cqt_bins // s.cqt_bins_per_octave,
                bins_per_octave=s.cqt_bins_per_octave,
                tuning=s.chroma_tuning,
            )
        out.append(c[:, skip : skip + s.n_frames])
    return np.stack(out)


def _log_cqt(clips: AudioClips) -> np.ndarray:
    """Log-magnitude CQT on the common grid, its ``cqt_bins`` rows interpolated onto ``n_bins``."""
    import librosa

    s = clips.settings
    first, skip = clips.librosa_grid()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        C = librosa.cqt(
            clips.y[..., first:],
            sr=s.sample_rate,
            hop_length=s.hop,
            fmin=s.cqt_fmin,
            n_bins=s.cqt_bins,
            bins_per_octave=s.cqt_bins_per_octave,
        )
    mag = np.abs(C[..., skip : skip + s.n_frames])
    db = 20.0 * np.log10(np.maximum(mag, 1e-5))  # (N, cqt_bins, n_frames)
    # the CQT's rows onto n_bins rows: linear interpolation over the log-frequency index (np.interp per column)
    lo, w = _cqt_rows(s.cqt_bins, s.n_bins)
    w = w[:, None]
    return db[:, lo, :] * (1.0 - w) + db[:, lo + 1, :] * w


def gfcc(clips: AudioClips) -> np.ndarray:
    """(N, n_bins, n_frames): ``n_bins`` gammatone cepstral coefficients from spafe, framed so that its frames share
    the grid's centres."""
    return np.stack([_gfcc(x, clips.settings) for x in clips.span])


def _gfcc(span: np.ndarray, s: Any) -> np.ndarray:
    """One clip's GFCCs, (n_bins, n_frames) float64, from the samples under its windows."""
    from spafe.features.gfcc import gfcc as spafe_gfcc
    from spafe.utils.preprocessing import SlidingWindow

    seg = span.astype(np.float64)
    # spafe frames from sample 0 with int(win*fs) / int(hop*fs): nudge up so float rounding cannot drop a sample
    win = SlidingWindow((s.n_fft + 0.5) / s.sample_rate, (s.hop + 0.25) / s.sample_rate, "hamming")
    # a tiny dither keeps spafe's log filterbank finite on digital silence, deterministically
    dither = 1e-7 * np.sin(np.arange(seg.shape[0]) * 0.7)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        g = spafe_gfcc(
            seg + dither,
            fs=s.sample_rate,
            num_ceps=s.n_bins,
            nfilts=s.n_bins,
            nfft=s.n_fft,
            window=win,
            fbanks=_gammatone_bank(s.n_bins, s.n_fft, s.sample_rate),
        )
    g = np.asarray(g, dtype=np.float64)
    if g.shape[0] != s.n_frames:
        raise RuntimeError(f"spafe returned {g.shape[0]} GFCC frames, expected {s.n_frames}")
    return g.T
