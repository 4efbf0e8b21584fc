"""Deprecated: ``thqa.weights`` moved to :mod:`thqa.features.weights`; this path re-exports it for one release."""
from thqa.utils.deprecation import forward

__getattr__, __dir__, __all__ = forward(__name__, "thqa.features.weights")
