"""Audio features of one clip: chromagram, CQT, MFCC and GFCC of the clip's own second, on ONE time grid.

Every feature frame ``k`` (``k = 0 .. n_frames-1``) is centred at ``start + (k + 0.5) / n_frames`` seconds, where
``start`` is the timestamp of the clip's first video frame: the four channels describe the same instants, and those
instants lie inside the clip's own second. Windows reach into the neighbouring audio (``context`` seconds are
decoded around each clip), never into another clip's copy of the whole track.

* chroma: ``librosa.feature.chroma_stft`` with ``n_bins`` chroma bins (the method's 128), from a shared STFT;
* cqt: ``librosa.cqt`` log-magnitude, ``cqt_bins`` log-frequency bins from C1 (84 by default: a few tens of ms per
  clip, against ~0.65 s for the public code's 896-filter chroma_cqt), interpolated onto ``n_bins`` rows;
  or, with ``cqt_kind="chroma"``, ``librosa.feature.chroma_cqt`` with ``n_bins`` chroma bins from ``cqt_bins`` CQT
  filters at ``cqt_bins_per_octave`` (the public code's: 128 per octave, 896 filters);
* mfcc: ``n_bins`` coefficients of the log-mel spectrogram (``n_bins`` mel bands) of the same STFT;
* gfcc: ``n_bins`` gammatone cepstral coefficients from spafe, framed so its frames share the centres above.

Result: ``(4, n_bins, n_frames)`` float32 per clip, finite for silence too. Each clip's numbers depend on its own
buffer only, whatever else is in the batch (the tuning estimate and MFCC's ``top_db`` floor are taken per clip), and
not on the process: BLAS (the filter banks' products, spafe's DCT) runs on one thread, as in decoding workers, since
OpenBLAS on 2 threads rounded chroma and MFCC differently (up to 1.4e-6 on noise) from 1 thread.

Where the defaults depart from the public code of the method (its settings are librosa's defaults), one field
restores it (see :data:`METHOD_AUDIO`): ``sample_rate`` 16000 (the method: 22050, librosa.load's default),
``chroma_tuning`` 0 (the method: None, estimated from the clip), ``mfcc_top_db`` None (the method: 80 dB, librosa's
default), ``cqt_kind`` "log" (the method: "chroma" with 896 filters).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from thqa.errors import ConfigError

__all__ = [
    "AudioSettings", "AudioFeatureExtractor", "audio_features", "audio_features_per_second", "clip_samples", "CHANNELS", "CQT_KINDS",
    "METHOD_AUDIO",
]

log = logging.getLogger(__name__)

CHANNELS = ("chroma", "cqt", "mfcc", "gfcc")
#: the CQT channel: "log" (log-magnitude CQT interpolated onto n_bins rows) or "chroma" (librosa's chroma_cqt)
CQT_KINDS = ("log", "chroma")


@dataclass(frozen=True)
class AudioSettings:
    """Settings of the audio features (all part of the feature cache's key)."""

    sample_rate: int = 16000
    n_bins: int = 128  #: rows of every channel (chroma bins, mel bands / MFCCs, GFCCs, CQT after interpolation)
    n_frames: int = 32  #: frames per clip second (the common time grid)
    n_fft: int = 2048  #: STFT / gammatone window, samples
    cqt_bins: int = 84
    cqt_bins_per_octave: int = 12
    cqt_fmin: float = 32.70319566257483  #: C1
    context: float = 0.5  #: seconds of neighbouring audio decoded around each clip for the windows
    # fields added after features version 2: in to_dict() (so in cache keys and checkpoints) only when changed
    cqt_kind: str = "log"  #: see CQT_KINDS
    chroma_tuning: float | None = 0.0  #: tuning of the chroma bins, in fractions of a bin; None: estimated per clip
    mfcc_top_db: float | None = None  #: floor of the log-mel spectrogram under its peak, dB; None: no floor

    def validate(self) -> "AudioSettings":
        if self.sample_rate < 8000:
            raise ConfigError(f"audio sample_rate must be >= 8000 Hz, got {self.sample_rate}")
        if self.n_bins < 12 or self.n_frames < 4:
            raise ConfigError("n_bins must be >= 12 and n_frames >= 4")
        if self.hop < 1 or self.n_fft < 16:
            raise ConfigError(f"n_frames ({self.n_frames}) must be below sample_rate and n_fft >= 16")
        half = self.n_fft / 2 / self.sample_rate
        if self.context < half:
            raise ConfigError(f"context ({self.context} s) must cover half a window ({half:.3f} s)")
        top = self.cqt_fmin * 2 ** ((self.cqt_bins - 1) / self.cqt_bins_per_octave)
        if top >= self.sample_rate / 2:
            raise ConfigError(f"the CQT's top bin ({top:.0f} Hz) must be below Nyquist ({self.sample_rate / 2:.0f} Hz)")
        if self.cqt_kind not in CQT_KINDS:
            raise ConfigError(f"cqt_kind must be one of {', '.join(CQT_KINDS)}, got {self.cqt_kind!r}")
        if self.cqt_kind == "chroma" and (self.cqt_bins % self.cqt_bins_per_octave or self.cqt_bins_per_octave % self.n_bins):
            raise ConfigError(
                f"cqt_kind 'chroma' folds whole octaves onto {self.n_bins} chroma bins: cqt_bins ({self.cqt_bins}) must be a "
                f"multiple of cqt_bins_per_octave ({self.cqt_bins_per_octave}), itself a multiple of n_bins "
                "(the method: 896 bins, 128 per octave)"
            )
        if self.chroma_tuning is not None and not -0.5 <= self.chroma_tuning < 0.5:
            raise ConfigError(f"chroma_tuning must be in [-0.5, 0.5) (a fraction of a bin) or None, got {self.chroma_tuning}")
        if self.mfcc_top_db is not None and not 0 < self.mfcc_top_db <= 400:
            raise ConfigError(f"mfcc_top_db must be in (0, 400] dB or None, got {self.mfcc_top_db}")
        return self

    @property
    def hop(self) -> int:
        """Samples between feature frames: sample_rate / n_frames, rounded down when it is not whole (22050 Hz at
        32 frames: 689, frame centres within 3 samples of (k + 0.5) / n_frames s)."""
        return self.sample_rate // self.n_frames

    def to_dict(self) -> dict:
        """All fields; those added after features version 2 only when set away from their defaults, so that the
        cache keys and checkpoint headers of default settings stay what thqa 0.1 with features version 2 wrote."""
        d = asdict(self)
        for k in _LATER_FIELDS:
            if d[k] == _DEFAULTS[k]:
                del d[k]
        return d


#: AudioSettings fields that enter to_dict() only when changed (see AudioSettings.to_dict)
_LATER_FIELDS = ("cqt_kind", "chroma_tuning", "mfcc_top_db")
_DEFAULTS = {k: AudioSettings.__dataclass_fields__[k].default for k in _LATER_FIELDS}

#: The public code's audio settings (librosa's defaults and its chroma_cqt), as AudioSettings fields. The time grid
#: (n_frames per clip second, one hop for all four features) stays thqa's: the public code's features had different
#: hops, cut to one length - one of the faults thqa fixes.
METHOD_AUDIO = {
    "sample_rate": 22050,
    "n_fft": 2048,
    "cqt_kind": "chroma",
    "cqt_bins": 896,
    "cqt_bins_per_octave": 128,
    "chroma_tuning": None,
    "mfcc_top_db": 80.0,
}


_BLAS: list = []  #: the process's threadpoolctl controller, made once the audio libraries are loaded


def _one_blas_thread():
    """A context in which every loaded BLAS (numpy's, scipy's) runs on one thread: the same arithmetic, so the same
    bits, in the main process as in decoding workers (which run everything on one thread). torch's threads are left
    alone."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a dependency of scikit-learn (librosa's): always there in practice
        return contextlib.nullcontext()
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


class AudioFeatureExtractor:
    """Computes ``(4, n_bins, n_frames)`` features from a clip's audio buffer.

    The buffer is mono float32 at ``sample_rate`` starting ``context`` seconds before the clip's first frame and
    lasting ``1 + 2*context`` seconds (what :func:`thqa.media.decode.read_clips` returns).
    """

    def __init__(self, settings: AudioSettings | None = None):
        self.settings = (settings or AudioSettings()).validate()
        s = self.settings
        # CQT rows onto the common grid: linear interpolation over the log-frequency index
        x = np.linspace(0, s.cqt_bins - 1, s.n_bins)
        self._cqt_lo = np.minimum(np.floor(x).astype(np.int64), s.cqt_bins - 2)
        self._cqt_w = x - self._cqt_lo

    def _first_centre(self) -> int:
        """Sample index (in the clip's buffer) of the centre of feature frame 0."""
        s = self.settings
        return int(round(s.context * s.sample_rate)) + s.hop // 2

    def _windowed_span(self, y: np.ndarray) -> np.ndarray:
        """The samples that windows of n_fft centred on the grid cover: frame k starts at k*hop."""
        s = self.settings
        begin = self._first_centre() - s.n_fft // 2
        return y[..., begin : begin + (s.n_frames - 1) * s.hop + s.n_fft]

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Features of one clip. ``audio``: (n_samples,) float32 as described above. Returns (4, n_bins, n_frames)."""
        return self.batch(np.asarray(audio, dtype=np.float32).reshape(1, -1))[0]

    def batch(self, audios: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Features of N clips at once (the filter banks are built once, not per clip).

        ``audios``: (N, n_samples) float32, or a list of N such buffers. Returns (N, 4, n_bins, n_frames) float32.
        """
        # the audio libraries first: the BLAS they load (scipy's) must be known to the one-thread limit below
        import librosa  # noqa: F401
        import spafe.features.gfcc  # noqa: F401

        s = self.settings
        bufs = [np.asarray(a, dtype=np.float32).reshape(-1) for a in audios]
        if not bufs:
            return np.zeros((0, 4, s.n_bins, s.n_frames), np.float32)
        with _one_blas_thread():
            return self._batch(bufs)

    def _batch(self, bufs: list[np.ndarray]) -> np.ndarray:
        """:meth:`batch` of N non-empty buffers (N >= 1)."""
        import librosa

        s = self.settings
        need = int(round((1 + 2 * s.context) * s.sample_rate))
        y = np.zeros((len(bufs), max(need, max(b.shape[0] for b in bufs))), np.float32)
        for i, b in enumerate(bufs):
            y[i, : b.shape[0]] = b
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        span = self._windowed_span(y)  # (N, samples under the grid's windows)
        power = np.abs(librosa.stft(span, n_fft=s.n_fft, hop_length=s.hop, center=False)) ** 2  # (N, 1+n_fft/2, T)
        chroma_fb, mel_fb = self._filter_banks()
        # what librosa.feature.chroma_stft and .melspectrogram compute from S, with their banks built once
        if s.chroma_tuning is None:  # librosa's default: the tuning estimated from each clip's own spectrogram
            chroma = np.stack([librosa.feature.chroma_stft(S=p, sr=s.sample_rate, n_fft=s.n_fft, n_chroma=s.n_bins, tuning=None) for p in power])
        else:
            chroma = librosa.util.normalize(np.einsum("cf,...ft->...ct", chroma_fb, power, optimize=True), norm=np.inf, axis=-2)
        mel = np.einsum("...ft,mf->...mt", power, mel_fb, optimize=True)
        logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
        if s.mfcc_top_db is not None:  # librosa's top_db, under each clip's own peak (not the batch's)
            logmel = np.maximum(logmel, logmel.max(axis=(-2, -1), keepdims=True) - s.mfcc_top_db)
        mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=s.n_bins)
        gfcc = np.stack([self._gfcc(x) for x in span])
        cqt = self._chroma_cqt(y) if s.cqt_kind == "chroma" else self._cqt(y)
        out = np.stack([chroma, cqt, mfcc, gfcc], axis=1).astype(np.float32)
        if out.shape != (len(bufs), 4, s.n_bins, s.n_frames):
            raise RuntimeError(f"audio features have shape {out.shape}, expected {(len(bufs), 4, s.n_bins, s.n_frames)}")
        if not np.isfinite(out).all():  # defensive: never hand NaN to a model
            log.warning("non-finite audio features replaced by 0")
            out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
        return out

    def _filter_banks(self) -> tuple[np.ndarray, np.ndarray]:
        """librosa's chroma (n_bins, 1+n_fft/2) and mel (n_bins, 1+n_fft/2) banks, built once (25 ms a call)."""
        if getattr(self, "_banks", None) is None:
            import librosa

            s = self.settings
            self._banks = (
                librosa.filters.chroma(sr=s.sample_rate, n_fft=s.n_fft, tuning=s.chroma_tuning or 0.0, n_chroma=s.n_bins),
                librosa.filters.mel(sr=s.sample_rate, n_fft=s.n_fft, n_mels=s.n_bins),
            )
        return self._banks

    def _cqt_grid(self) -> tuple[int, int]:
        """(first sample fed to librosa, frames to skip): librosa centres frame j at sample j*hop of its input."""
        s = self.settings
        c0 = self._first_centre()
        first = c0 % s.hop
        return first, (c0 - first) // s.hop

    def _chroma_cqt(self, y: np.ndarray) -> np.ndarray:
        """(N, samples) -> (N, n_bins, n_frames): librosa.feature.chroma_cqt on the common grid, one clip at a time
        (its tuning estimate must come from the clip alone). The public code's channel: ~0.65 s of CPU per clip at 896 filters
        and 16 kHz, ~2.9 s at 22.05 kHz with the tuning estimated (benchmarks/bench_audio_settings.py)."""
        import librosa

        s = self.settings
        first, skip = self._cqt_grid()
        out = []
        for clip in y:
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

    def _cqt(self, y: np.ndarray) -> np.ndarray:
        """(N, samples) -> (N, n_bins, n_frames) log-magnitude CQT on the common grid."""
        import librosa

        s = self.settings
        first, skip = self._cqt_grid()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            C = librosa.cqt(
                y[..., first:],
                sr=s.sample_rate,
                hop_length=s.hop,
                fmin=s.cqt_fmin,
                n_bins=s.cqt_bins,
                bins_per_octave=s.cqt_bins_per_octave,
            )
        mag = np.abs(C[..., skip : skip + s.n_frames])
        db = 20.0 * np.log10(np.maximum(mag, 1e-5))  # (N, cqt_bins, n_frames)
        # the CQT's rows onto n_bins rows: linear interpolation over the log-frequency index (np.interp per column)
        lo, w = self._cqt_lo, self._cqt_w[:, None]
        return db[:, lo, :] * (1.0 - w) + db[:, lo + 1, :] * w

    def _gammatone_bank(self) -> np.ndarray:
        """spafe's gammatone filter bank for these settings, built once (it is most of spafe's cost per call)."""
        if getattr(self, "_gbank", None) is None:
            from spafe.fbanks.gammatone_fbanks import gammatone_filter_banks

            s = self.settings
            self._gbank, _ = gammatone_filter_banks(nfilts=s.n_bins, nfft=s.n_fft, fs=s.sample_rate)
        return self._gbank

    def _gfcc(self, span: np.ndarray) -> np.ndarray:
        from spafe.features.gfcc import gfcc
        from spafe.utils.preprocessing import SlidingWindow

        s = self.settings
        seg = span.astype(np.float64)
        # spafe frames from sample 0 with int(win*fs) / int(hop*fs): nudge up so float rounding cannot drop a sample
        win = SlidingWindow((s.n_fft + 0.5) / s.sample_rate, (s.hop + 0.25) / s.sample_rate, "hamming")
        # a tiny dither keeps spafe's log filterbank finite on digital silence, deterministically
        dither = 1e-7 * np.sin(np.arange(seg.shape[0]) * 0.7)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            g = gfcc(
                seg + dither,
                fs=s.sample_rate,
                num_ceps=s.n_bins,
                nfilts=s.n_bins,
                nfft=s.n_fft,
                window=win,
                fbanks=self._gammatone_bank(),
            )
        g = np.asarray(g, dtype=np.float64)
        if g.shape[0] != s.n_frames:
            raise RuntimeError(f"spafe returned {g.shape[0]} GFCC frames, expected {s.n_frames}")
        return g.T


def clip_samples(settings: AudioSettings | None = None) -> int:
    """Samples in one clip's buffer: ``(1 + 2 * context) * sample_rate`` (32000 at the defaults: the clip's second
    and half a second either side, at 16 kHz)."""
    s = settings or AudioSettings()
    return int(round((1 + 2 * s.context) * s.sample_rate))


#: seconds of a file handed to the extractor at once by :func:`audio_features_per_second` (bounds its memory)
SECONDS_PER_BATCH = 32


def audio_features(audio: np.ndarray, *, settings: AudioSettings | None = None) -> np.ndarray:
    """Features of ONE clip's audio buffer: (4, n_bins, n_frames) float32. See :class:`AudioFeatureExtractor`.

    ``audio``: (:func:`clip_samples`,) mono float32 at ``settings.sample_rate``: the clip's second with ``context``
    seconds before and after (32000 samples at the defaults). For a whole file, or any longer array, use
    :func:`audio_features_per_second`.

    Raises:
        ConfigError: ``audio`` is not one clip's buffer (another length, several channels, a ``(y, sr)`` pair).
    """
    s = (settings or AudioSettings()).validate()
    need = clip_samples(s)
    what = f"audio_features takes one clip's buffer: {need} mono samples at {s.sample_rate} Hz (its second with {s.context:g} s before and after)"
    whole = "for a whole file or a longer array, use audio_features_per_second(path) or audio_features_per_second(y, sample_rate=sr)"
    if isinstance(audio, tuple):
        raise ConfigError(f"{what}; got a tuple (librosa.load's (y, sr)?): {whole}")
    a = np.asarray(audio)
    if a.ndim != 1 or a.shape[0] != need:
        raise ConfigError(f"{what}; got an array of shape {a.shape}: {whole}")
    return AudioFeatureExtractor(s)(a)


def audio_features_per_second(
    source, sample_rate: int | None = None, *, settings: AudioSettings | None = None
) -> np.ndarray:
    """The audio features of every whole second of a file or an array: (n_seconds, 4, n_bins, n_frames) float32.

    Second ``k``'s maps describe ``[k, k + 1)`` s, with ``context`` seconds of sound around it for the windows (zeros
    before the start and after the end), as the pipeline computes them for a clip whose first frame is at ``k`` s.
    A last partial second is left out.

    Args:
        source: a media file (its first audio stream is decoded as the pipeline decodes it: the same samples), or
            an array of samples, (n,) or (channels, n) as ``librosa.load(..., mono=False)`` gives it (averaged to mono).
        sample_rate: the array's rate in Hz (required with an array; it is resampled to ``settings.sample_rate``
            with librosa, so its numbers can differ slightly from the file route's).
        settings: :class:`AudioSettings` (default: thqa's).

    Raises:
        ConfigError: an array without ``sample_rate``, or shorter than one second.
        MediaFileNotFoundError, MediaError, DecodeError: a file that is missing, has no audio, or cannot be decoded.
    """
    import os

    s = (settings or AudioSettings()).validate()
    sr, ctx = s.sample_rate, int(round(s.context * s.sample_rate))
    if isinstance(source, (str, os.PathLike)):
        from thqa.media.decode import read_audio

        # the whole seconds the stream's headers give, then those seconds with their context as the pipeline reads
        # a clip's (the decoder's samples just before 0 s and past the end included, zeros where there are none)
        n = read_audio(source, rate=sr).shape[0] // sr
        if n == 0:
            raise ConfigError(f"{source}: shorter than the one second a clip's audio maps describe")
        padded = read_audio(source, rate=sr, start=-s.context, end=n + s.context)
        return _per_second(padded, n, s)
    else:
        if isinstance(source, tuple) and len(source) == 2 and sample_rate is None:  # librosa.load's (y, sr)
            source, sample_rate = source
        if sample_rate is None:
            raise ConfigError("audio_features_per_second(array) needs the array's sample_rate (e.g. librosa.load's sr)")
        y, what = np.asarray(source, dtype=np.float32), "the array"
        y = y.mean(axis=0) if y.ndim == 2 else y.reshape(-1)
        if int(sample_rate) != s.sample_rate:
            import librosa

            y = librosa.resample(y, orig_sr=int(sample_rate), target_sr=s.sample_rate).astype(np.float32)
    n = y.shape[0] // sr
    if n == 0:
        raise ConfigError(f"{what}: {y.shape[0] / sr:.2f} s of sound, shorter than the one second a clip's audio maps describe")
    return _per_second(np.concatenate([np.zeros(ctx, np.float32), y.astype(np.float32, copy=False), np.zeros(ctx + sr, np.float32)]), n, s)


def _per_second(padded: np.ndarray, n: int, s: AudioSettings) -> np.ndarray:
    """The maps of seconds 0..n-1 from ``padded``: the sound from ``-context`` s on. Returns (n, 4, n_bins, n_frames)."""
    sr, need = s.sample_rate, clip_samples(s)
    ex = AudioFeatureExtractor(s)
    parts = [ex.batch(np.stack([padded[k * sr : k * sr + need] for k in range(k0, min(n, k0 + SECONDS_PER_BATCH))]))
             for k0 in range(0, n, SECONDS_PER_BATCH)]
    return np.concatenate(parts)
