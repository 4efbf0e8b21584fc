"""Deprecated: ``thqa.scorer`` moved to :mod:`thqa.scoring.scorer`; this path re-exports it for one release."""
from thqa.utils.deprecation import forward

__getattr__, __dir__, __all__ = forward(__name__, "thqa.scoring.scorer")
