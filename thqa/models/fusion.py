"""The fusion model: audio separable-convolution network, Bi-LSTM across clips, fully connected head.

Per video with N clips (N = 6 by default):

* audio maps (N, A, 128, 32), A = ``audio_channels_in`` (the extraction's audio maps: the method's four by default,
  :data:`thqa.features.audio.AUDIO_MAPS`) -> input BatchNorm over the A channels (the maps live on very different
  scales) -> three blocks, each two Conv2D + a 1x1 Conv2D, BatchNorm, LeakyReLU(0.01), MaxPool:
  frequency block 1x3 kernels, MaxPool(1, 2); time block 5x1 kernels, MaxPool(4, 1); fusion block 5x3 kernels,
  MaxPool(4, 2) -> flatten -> Linear to 512, dropout 0.5 -> (N, 512)
* two Bi-LSTM layers across the clips (512 -> 2x128, 256 -> 2x64): (N, 128) - context from past and future clips
* per clip [spatial 768 | temporal 2304 | audio 128] = 3200 -> LayerNorm -> Linear 3200->128 -> LeakyReLU ->
  dropout -> Linear 128->1: a score per clip; the video's MOS is the mean over its clips.

A branch can be switched off (``branches``) for ablations; the head's input then shrinks accordingly.

Where these defaults depart from the method (METHOD.md), one field restores it (the ``winner`` recipe sets them all):
``head="linear"`` (one Linear 3200 -> score), ``lstm_pool="mean"`` (the Bi-LSTM's outputs averaged over the clips
to 128 numbers per video, the same for every clip), ``audio_input_norm=False`` (no BatchNorm on the raw maps),
``embed_activation=False`` (no LeakyReLU after the Linear to 512). The audio blocks' widths (``audio_widths``) are
not fixed by the method. Checkpoints written before these fields existed load with today's values.
"""
from __future__ import annotations

import torch
from torch import nn

from thqa.models.fusion_config import BRANCHES, HEADS, LSTM_POOLS, FusionConfig  # torch-free there; importable from here

__all__ = ["FusionConfig", "AudioNet", "FusionModel", "BRANCHES", "HEADS", "LSTM_POOLS"]

def _block(c_in: int, c_out: int, kernel: tuple[int, int], pool: tuple[int, int]) -> nn.Sequential:
    pad = (kernel[0] // 2, kernel[1] // 2)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=pad),
        nn.Conv2d(c_out, c_out, kernel, padding=pad),
        nn.Conv2d(c_out, c_out, 1),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.01),
        nn.MaxPool2d(pool),
    )


class AudioNet(nn.Module):
    """(B, N, A, F, T) audio maps -> (B, N, 2*lstm_hidden[1]) per-clip audio features (``lstm_pool="mean"``: their
    mean over the N clips, the same for every clip)."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        w1, w2, w3 = cfg.audio_widths
        self.pool = cfg.lstm_pool
        self.norm = nn.BatchNorm2d(cfg.audio_channels_in) if cfg.audio_input_norm else nn.Identity()
        self.freq_block = _block(cfg.audio_channels_in, w1, (1, 3), (1, 2))
        self.time_block = _block(w1, w2, (5, 1), (4, 1))
        self.fusion_block = _block(w2, w3, (5, 3), (4, 2))
        flat = w3 * (cfg.audio_bins // 16) * (cfg.audio_frames // 4)
        act = [nn.LeakyReLU(0.01)] if cfg.embed_activation else []
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(flat, cfg.audio_embed), *act, nn.Dropout(cfg.dropout))
        self.lstm1 = nn.LSTM(cfg.audio_embed, cfg.lstm_hidden[0], batch_first=True, bidirectional=True)
        self.lstm2 = nn.LSTM(2 * cfg.lstm_hidden[0], cfg.lstm_hidden[1], batch_first=True, bidirectional=True)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        b, n = audio.shape[:2]
        x = audio.reshape(b * n, *audio.shape[2:])
        x = self.fusion_block(self.time_block(self.freq_block(self.norm(x))))
        x = self.embed(x).reshape(b, n, -1)
        x, _ = self.lstm1(x)
        x, _ = self.lstm2(x)
        if self.pool == "mean":  # one 128-number audio feature per video, given to every clip
            x = x.mean(dim=1, keepdim=True).expand(-1, n, -1)
        return x


class FusionModel(nn.Module):
    """Scores a video from its per-clip features.

    forward(spatial (B, N, 768), temporal (B, N, 2304), audio (B, N, A, 128, 32)) ->
    (mos (B,), clip_scores (B, N)). Inputs of switched-off branches may be None.
    """

    def __init__(self, config: FusionConfig | None = None):
        super().__init__()
        self.config = (config or FusionConfig()).validate()
        c = self.config
        self.audio_net = AudioNet(c) if "audio" in c.branches else None
        dim = 0
        dim += c.spatial_dim if "spatial" in c.branches else 0
        dim += c.temporal_dim if "temporal" in c.branches else 0
        dim += c.audio_dim if "audio" in c.branches else 0
        if c.head == "linear":
            self.head = nn.Sequential(nn.Linear(dim, 1))
        else:
            self.head = nn.Sequential(
                nn.LayerNorm(dim),
                nn.Linear(dim, c.head_hidden),
                nn.LeakyReLU(0.01),
                nn.Dropout(c.dropout * 0.5),
                nn.Linear(c.head_hidden, 1),
            )

    def forward(
        self,
        spatial: torch.Tensor | None,
        temporal: torch.Tensor | None,
        audio: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        c = self.config
        if "spatial" in c.branches:
            parts.append(spatial)
        if "temporal" in c.branches:
            parts.append(temporal)
        if "audio" in c.branches:
            parts.append(self.audio_net(audio))
        x = torch.cat(parts, dim=-1)  # (B, N, D)
        clip_scores = self.head(x).squeeze(-1)  # (B, N)
        return clip_scores.mean(dim=1), clip_scores
