"""The fusion model's architecture as settings (:class:`FusionConfig`, stored in every checkpoint), without torch:
the recipes and the training configuration read it, and ``thqa extract`` plans its run from a recipe without loading
torch. The model itself: :mod:`thqa.models.fusion`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from thqa.errors import ConfigError
from thqa.features.audio import AudioSettings

__all__ = ["FusionConfig", "BRANCHES", "HEADS", "LSTM_POOLS"]

BRANCHES = ("spatial", "temporal", "audio")
#: "mlp": LayerNorm -> Linear -> LeakyReLU -> dropout -> Linear (thqa's default); "linear": one Linear (the method's)
HEADS = ("mlp", "linear")
#: "clip": each clip keeps its own Bi-LSTM output (thqa's default); "mean": averaged over the clips (the method's)
LSTM_POOLS = ("clip", "mean")


@dataclass(frozen=True)
class FusionConfig:
    """Architecture of the fusion model (stored in every checkpoint)."""

    spatial_dim: int = 768
    temporal_dim: int = 2304
    audio_channels_in: int = 4  #: the audio maps per clip (AudioSettings.n_maps; :meth:`for_audio` sets it)
    audio_bins: int = 128
    audio_frames: int = 32
    audio_widths: tuple[int, int, int] = (8, 16, 32)  #: conv channels per block (the public code does not fix them; 8-16-32 keeps a CPU epoch over 1,000 videos near a minute)
    audio_embed: int = 512
    lstm_hidden: tuple[int, int] = (128, 64)
    head_hidden: int = 128
    dropout: float = 0.5
    branches: tuple[str, ...] = field(default=BRANCHES)
    head: str = "mlp"  #: see HEADS (the method: "linear")
    lstm_pool: str = "clip"  #: see LSTM_POOLS (the method: "mean")
    audio_input_norm: bool = True  #: BatchNorm over the raw maps, whose scales differ by orders (the method: none)
    embed_activation: bool = True  #: LeakyReLU after the Linear to audio_embed (the method: none)

    def validate(self) -> "FusionConfig":
        unknown = set(self.branches) - set(BRANCHES)
        if unknown or not self.branches:
            raise ConfigError(f"branches must be a non-empty subset of {BRANCHES}, got {self.branches}")
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.lstm_pool not in LSTM_POOLS:
            raise ConfigError(f"lstm_pool must be one of {', '.join(LSTM_POOLS)}, got {self.lstm_pool!r}")
        if len(self.audio_widths) != 3 or min(self.audio_widths) < 1:
            raise ConfigError(f"audio_widths must be 3 positive whole numbers, got {self.audio_widths}")
        if self.audio_bins % 16 or self.audio_frames % 4:
            raise ConfigError("audio_bins must be a multiple of 16 and audio_frames of 4 (the pooling sizes)")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "FusionConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown fusion settings: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}).validate()

    @classmethod
    def for_audio(cls, audio: AudioSettings, **kw) -> "FusionConfig":
        """A config (``kw``: other fields) whose audio input fits what ``audio`` extracts: one channel per audio map
        (``audio.n_maps``), ``n_bins`` rows and ``n_frames`` frames."""
        return cls(audio_channels_in=audio.n_maps, audio_bins=audio.n_bins, audio_frames=audio.n_frames, **kw).validate()

    @property
    def audio_dim(self) -> int:
        return 2 * self.lstm_hidden[1]
