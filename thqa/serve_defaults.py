"""Deprecated: ``thqa.serve_defaults`` moved to :mod:`thqa.engines.serve_defaults`; this path re-exports it for one release."""
from thqa.utils.deprecation import forward

__getattr__, __dir__, __all__ = forward(__name__, "thqa.engines.serve_defaults")
