"""Deprecated: ``thqa.ray_engine`` moved to :mod:`thqa.engines.ray_engine`; this path re-exports it for one release."""
from thqa.utils.deprecation import forward

__getattr__, __dir__, __all__ = forward(__name__, "thqa.engines.ray_engine")
