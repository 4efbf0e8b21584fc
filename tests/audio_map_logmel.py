"""A fifth audio map, as a newcomer would add one: its own small module and one entry in thqa's AUDIO_MAPS.

``log_mel``: the log-mel spectrogram (``n_bins`` mel bands, dB) of the spectrum the other maps share.
"""
from __future__ import annotations

import librosa
import numpy as np

from thqa.features.audio_maps import AudioClips


def log_mel(clips: AudioClips) -> np.ndarray:
    """(N, n_bins, n_frames): 10 log10 of the mel power, floored at -100 dB."""
    s = clips.settings
    bank = librosa.filters.mel(sr=s.sample_rate, n_fft=s.n_fft, n_mels=s.n_bins)
    return librosa.power_to_db(np.einsum("mf,...ft->...mt", bank, clips.power), ref=1.0, amin=1e-10, top_db=None)
