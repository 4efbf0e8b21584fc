"""Data on disk: the feature cache (:mod:`~thqa.data.cache`), manifests and THQA-NTIRE names
(:mod:`~thqa.data.manifest`), label and prediction files, and extraction into the cache (:mod:`~thqa.data.extract`).

The manifest names (``read_manifest``, ``thqa_ntire_source``, ...) are also importable from ``thqa.data`` itself, as
they were when this package was one module.
"""
from thqa.data.manifest import *  # noqa: F401,F403
from thqa.data.manifest import __all__  # noqa: F401
