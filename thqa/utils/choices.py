"""Names and limits the command line offers as choices, in a module that imports nothing heavy: ``thqa --help`` and argument
errors are answered without loading torch (thqa.training.recipes and thqa.features.pipeline, which define what the names mean, import
their values from here)."""
from __future__ import annotations

__all__ = ["RECIPE_NAMES", "PRECISION_CHOICES", "AUTO_PRECISION", "FIT_KINDS", "MAX_CLIPS"]

#: the training recipes by name (thqa.training.recipes.RECIPES, in this order)
RECIPE_NAMES = ("frozen", "winner", "winner-exact")
#: what --precision and ``precision=`` take (thqa.features.pipeline.precision_for)
PRECISION_CHOICES = ("auto", "fp32", "bf16")
#: what precision "auto" picks (thqa.features.pipeline.precision_for), as the command line's help says it
AUTO_PRECISION = "bf16 autocast on a GPU and on a CPU with bf16 in hardware (AVX-512 BF16 or AMX), else fp32"
#: the curve fitted before PLCC (thqa.analysis.metrics.evaluate's ``fit``)
FIT_KINDS: tuple[str, ...] = ("poly3", "logistic4", "none")
#: the most clips per video (--clips, ``n_clips``; a checkpoint asking for more is refused): the method uses 6, and each
#: clip costs a SlowFast pass
MAX_CLIPS = 64
