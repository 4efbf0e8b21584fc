"""Spatial branch: ECA channel attention on the RGB input, then Swin-T, on each clip's first frame.

Preprocessing (stored with the weights, as timm does): the frame is resized so its short side is 520 px (bicubic,
antialiased), a 224x224 crop is taken (centre when scoring, random when training), and ImageNet mean/std applied.

ECA (efficient channel attention, Wang et al. 2020) gates the input channels with ``2 * sigmoid(conv1d(GAP(x)))``;
its kernel size comes from the ECA formula (1 for 3 channels). The factor 2 and a zero-initialised kernel make the
module the identity at the start, so a pretrained Swin-T sees exactly its usual input until fine-tuning teaches ECA
something; the original's plain sigmoid would halve every input at initialisation.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from thqa.features.settings import CROP, SHORT_SIDE  # defined with the settings, which need no torch

__all__ = ["ECA", "SpatialExtractor", "preprocess_frame", "frame_features", "SPATIAL_DIM", "SHORT_SIDE", "CROP", "IMAGENET_MEAN", "IMAGENET_STD"]

SPATIAL_DIM = 768
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SWIN_NAME = "swin_tiny_patch4_window7_224"


def eca_kernel_size(channels: int, *, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel size: the odd number nearest |log2(C)/gamma + b/gamma| (1 for C = 3)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient channel attention. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int = 3):
        super().__init__()
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)
        nn.init.zeros_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean(dim=(2, 3))  # (B, C)
        w = self.conv(w.unsqueeze(1)).squeeze(1)  # (B, C)
        return x * (2.0 * torch.sigmoid(w))[:, :, None, None]


class SpatialExtractor(nn.Module):
    """ECA + Swin-T. Input (B, 3, 224, 224) normalised float; output (B, 768) pooled features.

    Build it with :func:`thqa.features.weights.build_spatial` (pretrained or seeded random weights).
    """

    def __init__(self, swin: nn.Module):
        super().__init__()
        self.eca = ECA(3)
        self.swin = swin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.swin(self.eca(x))


def resize_short_side(frame: np.ndarray, short_side: int = SHORT_SIDE) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, h, w) uint8 with min(h, w) == short_side (bicubic, antialiased).

    torchvision's ``resize(img, [short_side], BICUBIC, antialias=True)`` done the way it does it on a CPU (its output
    size rule, then PyTorch's antialiased uint8 kernel on the 1CHW channels-last view): the same bytes (a test
    compares them), without importing torchvision (and torch._dynamo with it: 1.4 s) where files are decoded.
    """
    img = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    c, h, w = img.shape
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = short_side, int(short_side * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_h, new_w) == (h, w):
        return img
    x = img.as_strided((1, c, h, w), (img.numel(), *img.stride()))
    out = torch.nn.functional.interpolate(x, size=[new_h, new_w], mode="bicubic", align_corners=False, antialias=True)
    return out.reshape(c, new_h, new_w)


def crop(img: torch.Tensor, *, size: int = CROP, random: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """(3, h, w) -> (3, size, size): centre crop, or a random crop when ``random``."""
    _, h, w = img.shape
    if random:
        top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    else:
        top, left = (h - size) // 2, (w - size) // 2
    return img[:, top : top + size, left : left + size]


def normalize(img_uint8: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) uint8 -> float32 normalised with the ImageNet mean/std."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (img_uint8.float() / 255.0 - mean) / std


def preprocess_frame(frame: np.ndarray) -> torch.Tensor:
    """Scoring preprocessing: (H, W, 3) uint8 -> (3, 224, 224) float32 (short side 520, centre crop, ImageNet)."""
    return normalize(crop(resize_short_side(frame)))


@torch.inference_mode()
def frame_features(model: nn.Module, frames: np.ndarray, *, batch_size: int = 8) -> np.ndarray:
    """The spatial features of pictures, each alone: (N, H, W, 3) uint8 RGB (e.g. a file's frames, or images) ->
    (N, 768) float32, with the scoring preprocessing (:func:`preprocess_frame`). ``model``: from
    :func:`thqa.features.weights.build_spatial`; run on its device, ``batch_size`` pictures per pass."""
    device = next(model.parameters()).device
    out = [model(torch.stack([preprocess_frame(f) for f in frames[i : i + batch_size]]).to(device)).float().cpu().numpy()
           for i in range(0, len(frames), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, SPATIAL_DIM), np.float32)
