"""Data on disk: the feature cache (:mod:`~thqa.data.cache`; its keys and content hashing in :mod:`~thqa.data.hashing`,
its entry file in :mod:`~thqa.data.cache_format`), manifests and THQA-NTIRE names (:mod:`~thqa.data.manifest`), label
and prediction files (:mod:`~thqa.data.predictions`), and extraction into the cache (:mod:`~thqa.data.extract`; the
entries' keys in :mod:`~thqa.data.entry_keys`, failure lists in :mod:`~thqa.data.failures`, entries of other versions
and settings in :mod:`~thqa.data.prune`).

The manifest names (``read_manifest``, ``thqa_ntire_source``, ...) are also importable from ``thqa.data`` itself, as
they were when this package was one module.
"""
from thqa.data.manifest import *  # noqa: F401,F403
from thqa.data.manifest import __all__  # noqa: F401
