"""Models that turn per-clip features into a MOS."""
from thqa.models.fusion import BRANCHES, AudioNet, FusionConfig, FusionModel

__all__ = ["FusionConfig", "FusionModel", "AudioNet", "BRANCHES"]
