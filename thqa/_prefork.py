"""Deprecated: ``thqa._prefork`` moved to :mod:`thqa.utils.prefork`; this path re-exports it for one release."""
from thqa.utils.deprecation import forward

__getattr__, __dir__, __all__ = forward(__name__, "thqa.utils.prefork")
