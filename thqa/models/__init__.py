"""Models that turn per-clip features into a MOS."""
from thqa.models.fusion_config import BRANCHES, FusionConfig

__all__ = ["FusionConfig", "FusionModel", "AudioNet", "BRANCHES"]


def __getattr__(name: str):
    """FusionModel and AudioNet load torch: imported on first use (late on purpose), so that the torch-free modules
    of this package (fusion_config: the recipes, ``thqa extract``'s plan) do not load it."""
    if name in ("FusionModel", "AudioNet"):
        from thqa.models import fusion  # late: loads torch

        return getattr(fusion, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
