"""Deprecated: ``thqa.digests`` moved to :mod:`thqa.features.digests`; this path re-exports it for one release."""
from thqa.utils.deprecation import forward

__getattr__, __dir__, __all__ = forward(__name__, "thqa.features.digests")
