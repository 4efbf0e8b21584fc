"""A stand-in third backbone, as a new backbone is added: one registry entry (:data:`ENTRY`) and this module.

A tiny seeded convolution over each clip's first frame (the input Swin-T reads): (B, 3, 224, 224) -> (B, 16).
Random-init, or a local file named by ``texture_weights`` / ``$THQA_TEXTURE_WEIGHTS``; no download.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from thqa.errors import WeightsError, WeightsNotFoundError
from thqa.features.registry import BackboneSpec
from thqa.features.weights import BackboneInfo, WeightsOptions, _digest, _locate, _seeded, load_state_file

DIM = 16

ENTRY = BackboneSpec(
    name="texture_cnn",
    slot="texture",
    title="Texture CNN",
    module=__name__,
    builder="build_texture",
    dim=DIM,
    input="spatial_input",
    library="torch",
    weights="",
    weight_file="texture.pt",
    env="THQA_TEXTURE_WEIGHTS",
    keyword="texture_weights",
    code_version=1,
    code=(f"{__name__}:TextureNet", f"{__name__}:build_texture"),
    help="local texture CNN weights (else $THQA_TEXTURE_WEIGHTS)",
)


class TextureNet(nn.Module):
    """(B, 3, H, W) float -> (B, 16): a strided convolution, ReLU, global average."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, DIM, 8, stride=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def _no_download() -> Path:
    raise WeightsNotFoundError("no texture weights: pass texture_weights=FILE or use random_init=True")


def weights_file(o: WeightsOptions, how: str) -> tuple[Path, str]:
    """A named file only (nothing published to download)."""
    return _locate(o.named_file(ENTRY.name), ENTRY.title, how, lambda: None, _no_download)


def build_texture(options: WeightsOptions | None = None) -> tuple[nn.Module, BackboneInfo]:
    """The texture CNN, seeded random-init or from a file, recorded like every backbone."""
    o = options or WeightsOptions()
    with _seeded(o.seed):
        model = TextureNet()
    path = None
    source = "random-init"
    if not o.random_init:
        p, source = weights_file(o, "")
        path = str(p)
        try:
            model.load_state_dict(load_state_file(p), strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"{p}: does not fit the texture CNN") from exc
    model.eval()
    info = BackboneInfo(ENTRY.name, source, _digest(ENTRY.name, model, o, path), path, o.seed if o.random_init else None)
    return model, info
