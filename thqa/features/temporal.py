"""Temporal branch: a frozen SlowFast R50 (Kinetics-400) with its head removed, on each whole clip.

Input per clip: 32 consecutive frames resized to exactly 224x224, scaled to [0, 1] and normalised with mean 0.45,
std 0.225. The fast pathway takes all 32 frames, the slow pathway 8 evenly spaced ones (alpha = 4). The head (blocks
5 and 6: fixed-kernel pooling and the classifier) is replaced by a mean over time and space of each pathway:
2048 (slow) + 256 (fast) = 2304 numbers per clip.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["TemporalExtractor", "preprocess_clip", "preprocess_clips", "clip_features", "TEMPORAL_DIM", "SLOWFAST_MEAN", "SLOWFAST_STD", "ALPHA"]

TEMPORAL_DIM = 2304
SLOWFAST_MEAN = 0.45
SLOWFAST_STD = 0.225
ALPHA = 4


class TemporalExtractor(nn.Module):
    """SlowFast R50 without its head. Input: a list [slow (B, 3, 8, 224, 224), fast (B, 3, 32, 224, 224)];
    output (B, 2304). Build it with :func:`thqa.features.weights.build_temporal`."""

    def __init__(self, slowfast: nn.Module):
        super().__init__()
        # blocks 0-4: stem and the four residual stages with their lateral connections
        self.blocks = nn.ModuleList(list(slowfast.blocks)[:5])

    def forward(self, pathways: list[torch.Tensor]) -> torch.Tensor:
        x = list(pathways)  # the blocks replace list items in place: never hand them the caller's list
        for block in self.blocks:
            x = block(x)
        return torch.cat([x[0].mean(dim=(2, 3, 4)), x[1].mean(dim=(2, 3, 4))], dim=1)

    def train(self, mode: bool = True) -> "TemporalExtractor":  # frozen: BatchNorm stays in eval mode
        return super().train(False)


def slow_indices(n_frames: int, alpha: int = ALPHA) -> torch.Tensor:
    """Evenly spaced indices of the slow pathway, e.g. 32 frames -> [0, 4, 8, 13, 17, 22, 26, 31]."""
    return torch.linspace(0, n_frames - 1, max(1, n_frames // alpha)).long()


def preprocess_clip(frames: np.ndarray | torch.Tensor) -> list[torch.Tensor]:
    """(T, 224, 224, 3) uint8 -> [slow (3, T/4, 224, 224), fast (3, T, 224, 224)] float32, normalised."""
    slow, fast = preprocess_clips(torch.as_tensor(frames)[None])
    return [slow[0], fast[0]]


def preprocess_clips(frames: torch.Tensor) -> list[torch.Tensor]:
    """(B, T, 224, 224, 3) uint8 -> [slow (B, 3, T/4, 224, 224), fast (B, 3, T, 224, 224)] float32, normalised
    (on the tensor's own device)."""
    x = frames.permute(0, 4, 1, 2, 3).float().div_(255.0).sub_(SLOWFAST_MEAN).div_(SLOWFAST_STD)  # (B, 3, T, H, W)
    slow = x.index_select(2, slow_indices(x.shape[2]).to(x.device))
    return [slow, x]


@torch.inference_mode()
def clip_features(model: nn.Module, clips: np.ndarray | torch.Tensor, *, batch_size: int = 1) -> np.ndarray:
    """The temporal features of clips: (N, T, 224, 224, 3) uint8 RGB (T frames each, 32 for the method; e.g.
    ``thqa.media.decode.read_clips``' clip frames, which are already 224 px) -> (N, 2304) float32. ``model``: from
    :func:`thqa.features.weights.build_temporal`; run on its device, ``batch_size`` clips per pass."""
    device = next(model.parameters()).device
    x = torch.as_tensor(clips)
    out = [model(preprocess_clips(x[i : i + batch_size].to(device))).float().cpu().numpy() for i in range(0, x.shape[0], batch_size)]
    return np.concatenate(out) if out else np.zeros((0, TEMPORAL_DIM), np.float32)
