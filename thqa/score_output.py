"""Deprecated: ``thqa.score_output`` moved to :mod:`thqa.scoring.output`; this path re-exports it for one release."""
from thqa.utils.deprecation import forward

__getattr__, __dir__, __all__ = forward(__name__, "thqa.scoring.output")
