"""The training configuration: :class:`TrainConfig` (every value a training run takes, saved as config.json) and the
losses it may name. :mod:`thqa.training.recipes` builds configs from named recipes; :mod:`thqa.training.loop` trains with
them (and re-exports these names).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from thqa.errors import ConfigError
from thqa.models.fusion_config import FusionConfig
from thqa.utils.choices import FIT_KINDS

__all__ = ["TrainConfig", "LOSSES"]

#: the losses :func:`thqa.training.loop.loss_fn` computes
LOSSES = ("l1+rank", "l1", "plcc", "plcc+rank", "mse")


@dataclass
class TrainConfig:
    """Training settings (saved as config.json in the run directory). The defaults are the ``frozen`` recipe; build
    other recipes' configs with :func:`thqa.training.recipes.resolve` (``resolve("winner", epochs=10).config``)."""

    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-4  #: fusion model (the method's 1e-5, the winner recipe's, is for end-to-end training; on cached features 1e-4 converges in far fewer epochs)
    lr_spatial: float = 1e-5  #: ECA + Swin-T when fine-tuning (the method's)
    weight_decay: float = 1e-7
    step_size: int = 2  #: StepLR every 2 epochs
    gamma: float = 0.95
    loss: str = "l1+rank"
    rank_weight: float = 1.0
    seed: int = 3407
    finetune_spatial: bool = False
    fit: str = "poly3"  #: curve fitted before PLCC in the validation metrics
    fusion: dict = field(default_factory=lambda: FusionConfig().to_dict())
    #: the recipe these values came from (:mod:`thqa.training.recipes`; None: none named) and where each value came from
    #: ({"train.lr": "recipe" | "option" | "default", ...}; empty: work it out against thqa's defaults)
    recipe: str | None = None
    sources: dict = field(default_factory=dict)

    def validate(self) -> "TrainConfig":
        """Check the values; returns ``self``. Raises ConfigError naming the first bad value."""
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1")
        if not (self.lr > 0 and self.lr_spatial > 0):
            raise ConfigError("learning rates must be > 0")
        if self.fit not in FIT_KINDS:
            raise ConfigError(f"unknown fit {self.fit!r}; choose one of {', '.join(FIT_KINDS)}")
        if self.batch_size < 2 and ("rank" in self.loss or "plcc" in self.loss):
            raise ConfigError(f"loss {self.loss!r} compares samples within a batch: batch_size must be >= 2")
        FusionConfig.from_dict(self.fusion)
        return self
