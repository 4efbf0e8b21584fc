"""Deprecated: ``thqa.io`` moved to :mod:`thqa.media.decode`; this path re-exports it for one release."""
from thqa.utils.deprecation import forward

__getattr__, __dir__, __all__ = forward(__name__, "thqa.media.decode")
