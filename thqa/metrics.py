"""Deprecated: ``thqa.metrics`` moved to :mod:`thqa.analysis.metrics`; this path re-exports it for one release."""
from thqa.utils.deprecation import forward

__getattr__, __dir__, __all__ = forward(__name__, "thqa.analysis.metrics")
