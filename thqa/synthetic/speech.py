"""A synthesised, speech-like voice: the sound of :mod:`thqa.synthetic.heads`' talking heads.

A glottal-like pulse train with a moving pitch, shaped by formant resonators (one vowel per syllable), with noise
bursts for consonants, syllables of random lengths and short pauses. The voice (pitch, vocal-tract length) varies with
the seed, and the same seed always gives the same samples. Nothing here is a model of a real voice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from thqa.errors import ConfigError
from thqa.synthetic.files import validate_seed

__all__ = ["AAC_SAMPLE_RATES", "synthesize_speech", "synthesize_voice", "validate_duration", "validate_sample_rate"]

#: Sample rates the AAC encoder (and so an mp4 written here) supports.
AAC_SAMPLE_RATES: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)

_MAX_DURATION_S = 600.0

# Vowel formants (F1, F2, F3) in Hz for an adult male vocal tract (Peterson & Barney style averages).
_VOWELS: tuple[tuple[float, float, float], ...] = (
    (730.0, 1090.0, 2440.0),  # a (father)
    (530.0, 1840.0, 2480.0),  # e (bed)
    (270.0, 2290.0, 3010.0),  # i (beet)
    (570.0, 840.0, 2410.0),  # o (bought)
    (300.0, 870.0, 2240.0),  # u (boot)
    (660.0, 1720.0, 2410.0),  # ae (bat)
    (490.0, 1350.0, 1690.0),  # er (bird)
    (640.0, 1190.0, 2390.0),  # uh (but)
)
_BANDWIDTHS = (80.0, 110.0, 160.0)


def validate_duration(duration: object) -> float:
    if isinstance(duration, bool) or not isinstance(duration, (int, float, np.integer, np.floating)):
        raise ConfigError(f"duration must be a number of seconds, got {duration!r}")
    d = float(duration)
    if not math.isfinite(d) or d <= 0 or d > _MAX_DURATION_S:
        raise ConfigError(f"duration must be in (0, {_MAX_DURATION_S:g}] seconds, got {duration!r}")
    return d


def validate_sample_rate(sample_rate: object) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or int(sample_rate) not in AAC_SAMPLE_RATES:
        raise ConfigError(f"sample_rate must be one of {AAC_SAMPLE_RATES}, got {sample_rate!r}")
    return int(sample_rate)


@dataclass(frozen=True)
class _Voice:
    f0_hz: float  # the speaker's mean pitch
    formant_scale: float  # vocal-tract length factor (1 = adult male)
    breathiness: float


def _voice_for_seed(seed: int) -> _Voice:
    rng = np.random.default_rng([seed, 101])
    f0 = float(rng.uniform(90.0, 260.0))
    # higher voices tend to come with shorter vocal tracts
    scale = 0.92 + 0.26 * (f0 - 90.0) / 170.0 + float(rng.uniform(-0.04, 0.04))
    return _Voice(f0_hz=f0, formant_scale=scale, breathiness=float(rng.uniform(0.01, 0.05)))


def _resonator(freq: float, bw: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Second-order all-pole resonator with unit gain at DC."""
    r = math.exp(-math.pi * bw / sr)
    theta = 2.0 * math.pi * freq / sr
    a = np.array([1.0, -2.0 * r * math.cos(theta), r * r])
    b = np.array([a.sum()])
    return b, a


def _raised_cosine_envelope(n: int, attack: int, release: int) -> np.ndarray:
    env = np.ones(n)
    attack = min(attack, n // 2)
    release = min(release, n - attack)
    if attack > 0:
        env[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    if release > 0:
        env[n - release :] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(release) + 1) / release)
    return env


def synthesize_voice(seed: int, duration: float, sample_rate: int) -> tuple[np.ndarray, float]:
    """:func:`synthesize_speech` on checked arguments: the (n,) float32 signal and the median pitch (Hz) over its
    vowels."""
    sr = sample_rate
    n = int(round(duration * sr))
    voice = _voice_for_seed(seed)
    rng = np.random.default_rng([seed, 202])
    f0, source = _excitation(rng, voice, duration, n, sr)
    out = np.zeros(n)
    voiced = np.zeros(n, dtype=bool)
    pos = int(round(rng.uniform(0.05, 0.25) * sr))
    last_vowel = -1
    while pos < n - int(0.08 * sr):
        syl = int(round(rng.uniform(0.12, 0.30) * sr))
        syl = min(syl, n - pos)
        if rng.random() < 0.6:  # optional consonant onset
            pos, syl = _consonant(rng, out, pos, syl, sr)
        if syl <= int(0.03 * sr):
            break
        seg, last_vowel = _vowel(rng, voice, source, pos, syl, sr, last_vowel)
        out[pos : pos + syl] += seg
        voiced[pos : pos + syl] = True
        pos += syl
        # pause: mostly short gaps between syllables, sometimes a phrase break
        if rng.random() < 0.18:
            pos += int(round(rng.uniform(0.25, 0.5) * sr))
        else:
            pos += int(round(rng.uniform(0.03, 0.12) * sr))

    peak = float(np.max(np.abs(out))) if n else 0.0
    if peak > 0:
        out *= 0.8 / peak
    out += 1e-4 * rng.standard_normal(n)  # a faint noise floor, so silences are not digital zero
    median_f0 = float(np.median(f0[voiced])) if voiced.any() else voice.f0_hz
    return np.clip(out, -1.0, 1.0).astype(np.float32), median_f0


def _excitation(rng: np.random.Generator, voice: _Voice, duration: float, n: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,) pitch (Hz) and (n,) glottal-like source of a voice with intonation, declination and vibrato."""
    t = np.arange(n) / sr
    # pitch contour: random control points every ~0.35 s (intonation), phrase declination, slow vibrato
    n_ctrl = max(2, int(math.ceil(duration / 0.35)) + 2)
    ctrl_t = np.linspace(0.0, duration, n_ctrl)
    ctrl_v = rng.uniform(0.82, 1.22, size=n_ctrl)
    contour = np.interp(t, ctrl_t, ctrl_v)
    declination = 1.0 + 0.08 * np.cos(np.pi * np.mod(t, 2.5) / 2.5)
    vibrato = 1.0 + 0.01 * np.sin(2 * np.pi * rng.uniform(4.5, 6.0) * t)
    f0 = np.clip(voice.f0_hz * contour * declination * vibrato, 60.0, 0.45 * sr)
    phase = np.cumsum(f0 / sr)
    p = np.mod(phase, 1.0)
    # Rosenberg glottal flow pulse, differentiated (lip radiation) -> glottal-like excitation
    tp, tn = 0.40, 0.16
    flow = np.where(p < tp, 0.5 - 0.5 * np.cos(np.pi * p / tp), np.where(p < tp + tn, np.cos(0.5 * np.pi * (p - tp) / tn), 0.0))
    source = np.diff(flow, prepend=flow[0]) * (sr / voice.f0_hz) * 0.25
    source = source + voice.breathiness * rng.standard_normal(n)
    return f0, source


def _consonant(rng: np.random.Generator, out: np.ndarray, pos: int, syl: int, sr: int) -> tuple[int, int]:
    """Add a fricative (longer band of noise) or a plosive burst to ``out`` at ``pos``; return the position and the
    length of the syllable's vowel after it."""
    n = len(out)
    nyq = 0.5 * sr
    if rng.random() < 0.5:
        clen = int(round(rng.uniform(0.04, 0.09) * sr))
        lo, hi = rng.uniform(1800.0, 3500.0), rng.uniform(5000.0, 7500.0)
        gain = rng.uniform(0.08, 0.2)
    else:
        clen = int(round(rng.uniform(0.012, 0.025) * sr))
        lo, hi = rng.uniform(500.0, 1500.0), rng.uniform(2500.0, 4500.0)
        gain = rng.uniform(0.2, 0.4)
    clen = min(clen, n - pos)
    hi = min(hi, 0.9 * nyq)
    lo = min(lo, 0.5 * hi)
    if clen > 8:
        sos = signal.butter(4, [lo / nyq, hi / nyq], btype="band", output="sos")
        burst = signal.sosfilt(sos, rng.standard_normal(clen + 64))[64:]
        burst *= np.hanning(clen) * gain / (np.std(burst) + 1e-9)
        out[pos : pos + clen] += burst
        pos += clen + int(round(rng.uniform(0.0, 0.02) * sr))
        syl = min(syl, n - pos)
    return pos, syl


def _vowel(
    rng: np.random.Generator, voice: _Voice, source: np.ndarray, pos: int, syl: int, sr: int, last_vowel: int
) -> tuple[np.ndarray, int]:
    """(syl,) a vowel nucleus at ``pos``: the voiced source through three formant resonators, with its loudness
    envelope; and the vowel's index (never ``last_vowel`` again)."""
    vowel = int(rng.integers(len(_VOWELS)))
    if vowel == last_vowel:
        vowel = (vowel + 1 + int(rng.integers(len(_VOWELS) - 1))) % len(_VOWELS)
    margin = min(pos, int(0.02 * sr))
    seg = source[pos - margin : pos + syl]
    for k, (freq, bw) in enumerate(zip(_VOWELS[vowel], _BANDWIDTHS)):
        fk = freq * voice.formant_scale * float(rng.uniform(0.95, 1.05))
        if fk >= 0.45 * sr:
            continue
        b, a = _resonator(fk, bw * voice.formant_scale, sr)
        seg = signal.lfilter(b, a, seg) * (1.0 if k == 0 else 0.7)
    seg = seg[margin:]
    env = _raised_cosine_envelope(syl, int(rng.uniform(0.015, 0.04) * sr), int(rng.uniform(0.03, 0.07) * sr))
    env *= np.linspace(1.0, rng.uniform(0.55, 0.9), syl)  # loudness decays within a syllable
    seg = seg / (np.std(seg) + 1e-9) * rng.uniform(0.45, 1.0)
    return seg * env, vowel


def synthesize_speech(*, seed: int = 0, duration: float = 4.0, sample_rate: int = 16000) -> np.ndarray:
    """Synthesise a speech-like mono signal.

    A glottal-like pulse train (Rosenberg pulses, pitch between about 90 and 260 Hz depending on the
    seed, with intonation and slow vibrato) is filtered by three formant resonators per vowel; syllables
    last 120-300 ms, are separated by short pauses (30-120 ms, sometimes a 250-500 ms phrase break), often
    start with a noise burst (fricative or plosive) and have their own loudness envelope.

    Args:
        seed: non-negative integer; the same seed gives the same signal, different seeds different voices.
        duration: length in seconds, in (0, 600].
        sample_rate: samples per second, one of :data:`AAC_SAMPLE_RATES`.

    Returns:
        ``float32`` array of ``round(duration * sample_rate)`` samples in [-1, 1] (peak about 0.8).

    Raises:
        ConfigError: an argument is out of range.
    """
    seed = validate_seed(seed)
    duration = validate_duration(duration)
    sample_rate = validate_sample_rate(sample_rate)
    audio, _ = synthesize_voice(seed, duration, sample_rate)
    return audio

