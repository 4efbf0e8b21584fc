"""Deprecated: ``thqa.client`` moved to :mod:`thqa.engines.client`; this path re-exports it for one release."""
from thqa.utils.deprecation import forward

__getattr__, __dir__, __all__ = forward(__name__, "thqa.engines.client")
