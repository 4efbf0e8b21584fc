"""Deprecated: ``thqa.comparison`` moved to :mod:`thqa.analysis.comparison`; this path re-exports it for one release."""
from thqa.utils.deprecation import forward

__getattr__, __dir__, __all__ = forward(__name__, "thqa.analysis.comparison")
