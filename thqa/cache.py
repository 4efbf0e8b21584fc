"""Deprecated: ``thqa.cache`` moved to :mod:`thqa.data.cache`; this path re-exports it for one release."""
from thqa.utils.deprecation import forward

__getattr__, __dir__, __all__ = forward(__name__, "thqa.data.cache")
