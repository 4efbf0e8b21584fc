"""Audio features of one clip: chromagram, CQT, MFCC and GFCC of the clip's own second, on ONE time grid.

Every feature frame ``k`` (``k = 0 .. n_frames-1``) is centred at ``start + (k + 0.5) / n_frames`` seconds, where
``start`` is the timestamp of the clip's first video frame: the maps describe the same instants, and those
instants lie inside the clip's own second. Windows reach into the neighbouring audio (``context`` seconds are
decoded around each clip), never into another clip's copy of the whole track.

The maps are a table, :data:`AUDIO_MAPS` (name -> function of the clips' sound, in :mod:`thqa.features.audio_maps`);
``AudioSettings.maps`` picks them, by default the method's four in its order (:data:`DEFAULT_MAPS`):

* chroma: ``librosa.feature.chroma_stft`` with ``n_bins`` chroma bins (the method's 128), from a shared STFT;
* cqt: ``librosa.cqt`` log-magnitude, ``cqt_bins`` log-frequency bins from C1 (84 by default: a few tens of ms per
  clip, against ~0.65 s for the public code's 896-filter chroma_cqt), interpolated onto ``n_bins`` rows;
  or, with ``cqt_kind="chroma"``, ``librosa.feature.chroma_cqt`` with ``n_bins`` chroma bins from ``cqt_bins`` CQT
  filters at ``cqt_bins_per_octave`` (the public code's: 128 per octave, 896 filters);
* mfcc: ``n_bins`` coefficients of the log-mel spectrogram (``n_bins`` mel bands) of the same STFT;
* gfcc: ``n_bins`` gammatone cepstral coefficients from spafe, framed so its frames share the centres above.

Result: ``(n_maps, n_bins, n_frames)`` float32 per clip (``(4, 128, 32)`` by default), finite for silence too. Each
clip's numbers depend on its own buffer only, whatever else is in the batch (the tuning estimate and MFCC's
``top_db`` floor are taken per clip), and not on the process: BLAS (the filter banks' products, spafe's DCT) runs on
one thread, as in decoding workers, since OpenBLAS on 2 threads rounded chroma and MFCC differently (up to 1.4e-6 on
noise) from 1 thread.

Where the defaults depart from the public code of the method (its settings are librosa's defaults), one field
restores it (see :data:`METHOD_AUDIO`): ``sample_rate`` 16000 (the method: 22050, librosa.load's default),
``chroma_tuning`` 0 (the method: None, estimated from the clip), ``mfcc_top_db`` None (the method: 80 dB, librosa's
default), ``cqt_kind`` "log" (the method: "chroma" with 896 filters).

librosa and spafe load late (in :meth:`AudioFeatureExtractor.batch` and the maps' functions): the settings here are
imported by the recipes, checkpoints and the pipeline's settings, which need no audio library (librosa takes ~1 s).
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from thqa.errors import ConfigError
from thqa.features.audio_maps import AudioClips, chroma, cqt, gfcc, mfcc
from thqa.media.clips import read_audio

__all__ = [
    "AudioSettings", "AudioFeatureExtractor", "audio_features", "audio_features_per_second", "clip_samples", "CHANNELS", "CQT_KINDS",
    "METHOD_AUDIO", "AudioMap", "AUDIO_MAPS", "DEFAULT_MAPS",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioMap:
    """One audio map: ``compute(clips)`` gives ``(N, n_bins, n_frames)`` from an :class:`AudioClips` of N clips (its
    ``settings`` are the :class:`AudioSettings`); ``summary`` says what it is in a line."""

    compute: Callable[[AudioClips], np.ndarray]
    summary: str


#: The audio maps by name. A new map is one entry here and its function in its own module
#: (``f(clips: AudioClips) -> (N, n_bins, n_frames)``, see :mod:`thqa.features.audio_maps`); ``AudioSettings.maps``
#: picks maps from this table, and the fusion model's audio input channels are their number.
AUDIO_MAPS: dict[str, AudioMap] = {
    "chroma": AudioMap(chroma, "chromagram of the shared STFT (librosa chroma_stft), n_bins chroma bins"),
    "cqt": AudioMap(cqt, "constant-Q transform: log-magnitude onto n_bins rows, or librosa chroma_cqt (cqt_kind)"),
    "mfcc": AudioMap(mfcc, "n_bins MFCCs of the n_bins-band log-mel spectrogram of the shared STFT"),
    "gfcc": AudioMap(gfcc, "n_bins gammatone cepstral coefficients (spafe) on the same windows"),
}
#: the method's maps in its order: the default of ``AudioSettings.maps`` (the model's four audio input channels)
DEFAULT_MAPS: tuple[str, ...] = ("chroma", "cqt", "mfcc", "gfcc")
#: the default maps, under the name thqa 0.1 exported
CHANNELS = DEFAULT_MAPS
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
    #: the audio maps (names in AUDIO_MAPS), in the order of the model's input channels; a list or "a,b,c" is taken
    maps: tuple[str, ...] = DEFAULT_MAPS

    def __post_init__(self):
        if isinstance(self.maps, str):
            object.__setattr__(self, "maps", tuple(m.strip() for m in self.maps.split(",")))
        elif isinstance(self.maps, list):  # from JSON (a checkpoint's header, a cache entry's settings)
            object.__setattr__(self, "maps", tuple(self.maps))

    @property
    def n_maps(self) -> int:
        """How many maps each clip gets: the fusion model's audio input channels."""
        return len(self.maps)

    def validate(self) -> "AudioSettings":
        self._validate_maps()
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

    def _validate_maps(self) -> None:
        m = self.maps
        if not isinstance(m, tuple) or not m or not all(isinstance(x, str) for x in m) or len(set(m)) != len(m):
            raise ConfigError(f"audio maps must be a non-empty list of distinct names from {', '.join(AUDIO_MAPS)}, got {m!r}")
        unknown = [x for x in m if x not in AUDIO_MAPS]
        if unknown:
            raise ConfigError(f"unknown audio map(s) {', '.join(unknown)}; known: {', '.join(AUDIO_MAPS)}")

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
        if "maps" in d:
            d["maps"] = list(d["maps"])
        return d


#: AudioSettings fields that enter to_dict() only when changed (see AudioSettings.to_dict)
_LATER_FIELDS = ("cqt_kind", "chroma_tuning", "mfcc_top_db", "maps")
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
    """Computes ``(n_maps, n_bins, n_frames)`` features (the maps ``settings.maps`` names, in its order; the method's
    four by default) from a clip's audio buffer.

    The buffer is mono float32 at ``sample_rate`` starting ``context`` seconds before the clip's first frame and
    lasting ``1 + 2*context`` seconds (what :func:`thqa.media.clips.read_clips` returns).
    """

    def __init__(self, settings: AudioSettings | None = None):
        self.settings = (settings or AudioSettings()).validate()

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Features of one clip. ``audio``: (n_samples,) float32 as described above. Returns (n_maps, n_bins, n_frames)."""
        return self.batch(np.asarray(audio, dtype=np.float32).reshape(1, -1))[0]

    def batch(self, audios: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Features of N clips at once (what the maps share, and the filter banks, are computed once, not per clip).

        ``audios``: (N, n_samples) float32, or a list of N such buffers. Returns (N, n_maps, n_bins, n_frames) float32.
        """
        # the audio libraries first: the BLAS they load (scipy's) must be known to the one-thread limit below
        import librosa  # noqa: F401
        import spafe.features.gfcc  # noqa: F401

        s = self.settings
        bufs = [np.asarray(a, dtype=np.float32).reshape(-1) for a in audios]
        if not bufs:
            return np.zeros((0, s.n_maps, s.n_bins, s.n_frames), np.float32)
        with _one_blas_thread():
            return self._batch(bufs)

    def _batch(self, bufs: list[np.ndarray]) -> np.ndarray:
        """:meth:`batch` of N non-empty buffers (N >= 1)."""
        s = self.settings
        y = np.zeros((len(bufs), max(clip_samples(s), max(b.shape[0] for b in bufs))), np.float32)
        for i, b in enumerate(bufs):
            y[i, : b.shape[0]] = b
        clips = AudioClips(np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0), s)
        out = np.stack([_compute_map(name, clips) for name in s.maps], axis=1)
        if not np.isfinite(out).all():  # defensive: never hand NaN to a model
            log.warning("non-finite audio features replaced by 0")
            out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
        return out


def _compute_map(name: str, clips: AudioClips) -> np.ndarray:
    """The map ``name`` of every clip: (N, n_bins, n_frames) float32, its shape checked."""
    s = clips.settings
    out = np.asarray(AUDIO_MAPS[name].compute(clips))
    if out.shape != (len(clips), s.n_bins, s.n_frames):
        raise RuntimeError(f"audio map {name!r} has shape {out.shape}, expected {(len(clips), s.n_bins, s.n_frames)}")
    return out.astype(np.float32, copy=False)


def clip_samples(settings: AudioSettings | None = None) -> int:
    """Samples in one clip's buffer: ``(1 + 2 * context) * sample_rate`` (32000 at the defaults: the clip's second
    and half a second either side, at 16 kHz)."""
    s = settings or AudioSettings()
    return int(round((1 + 2 * s.context) * s.sample_rate))


#: seconds of a file handed to the extractor at once by :func:`audio_features_per_second` (bounds its memory)
SECONDS_PER_BATCH = 32


def audio_features(audio: np.ndarray, *, settings: AudioSettings | None = None) -> np.ndarray:
    """Features of ONE clip's audio buffer: (n_maps, n_bins, n_frames) float32. See :class:`AudioFeatureExtractor`.

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
    """The audio features of every whole second of a file or an array: (n_seconds, n_maps, n_bins, n_frames) float32.

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
    s = (settings or AudioSettings()).validate()
    sr, ctx = s.sample_rate, int(round(s.context * s.sample_rate))
    if isinstance(source, (str, os.PathLike)):
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
    """The maps of seconds 0..n-1 from ``padded``: the sound from ``-context`` s on. Returns (n, n_maps, n_bins, n_frames)."""
    sr, need = s.sample_rate, clip_samples(s)
    ex = AudioFeatureExtractor(s)
    parts = [ex.batch(np.stack([padded[k * sr : k * sr + need] for k in range(k0, min(n, k0 + SECONDS_PER_BATCH))]))
             for k0 in range(0, n, SECONDS_PER_BATCH)]
    return np.concatenate(parts)
