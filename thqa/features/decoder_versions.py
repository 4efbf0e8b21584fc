"""The decoder's versions - PyAV's and the FFmpeg's it carries - part of every cache key, remembered per installation.

Asking PyAV means importing it (60-80 ms); a process that only looks entries up (a run whose every entry is cached;
the main process when decoding workers do the decoding) needs the versions, not the decoder. They are kept in
``decoder-versions.json`` in thqa's cache folder (:func:`thqa.features.digests.cache_home`), keyed by the installation:
where PyAV is, and the name, size and modification time (ns) of each file of its package folder and of the FFmpeg
libraries its wheel bundles (``av.libs``). A PyAV that links FFmpeg from elsewhere (a system or conda FFmpeg, which
can change under it) is asked every time. ``$THQA_DIGEST_CACHE=0`` turns the remembering off, as it does for digests.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from thqa.features.digests import _enabled, cache_home
from thqa.utils.keyed_store import KeyedStore

__all__ = ["decoder_versions", "asked_versions", "installation_key", "FILE_NAME"]


FILE_NAME = "decoder-versions.json"
FORMAT = "thqa-decoder-versions/1"
#: installations remembered (the newest): one per environment that ran thqa
MAX_ENTRIES = 16


def asked_versions() -> dict[str, str]:
    """``{"pyav": ..., "ffmpeg": ...}`` from PyAV itself (imports it): the reference the remembered ones come from."""
    import av  # late: the decoder loads only where its versions are not remembered (or where it decodes)

    ffmpeg = getattr(av, "ffmpeg_version_info", None) or ".".join(map(str, av.library_versions.get("libavcodec", ())))
    return {"pyav": str(av.__version__), "ffmpeg": str(ffmpeg)}


def installation_key() -> dict | None:
    """What identifies this PyAV and its FFmpeg (see the module's docs), or None where it cannot be told without
    importing PyAV (not found, or no bundled FFmpeg)."""
    try:
        spec = importlib.util.find_spec("av")  # a top-level package: found, not imported
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg = Path(next(iter(spec.submodule_search_locations)))
    libs = pkg.parent / "av.libs"
    try:
        if not libs.is_dir():
            return None
        files = [(f"{d.name}/{f.name}", st.st_size, st.st_mtime_ns) for d in (pkg, libs) for f in sorted(d.iterdir())
                 if f.is_file() and (st := f.stat())]
    except OSError:
        return None
    return {"package": str(pkg), "files": files} if any(n.startswith("av.libs/") for n, _, _ in files) else None


def _valid(entry: dict | None) -> dict[str, str] | None:
    v = (entry or {}).get("versions")
    ok = isinstance(v, dict) and set(v) == {"pyav", "ffmpeg"} and all(isinstance(x, str) for x in v.values())
    return dict(v) if ok else None


def decoder_versions(path: Path | None = None) -> dict[str, str]:
    """``{"pyav": ..., "ffmpeg": ...}`` of this installation: remembered (see the module's docs), else
    :func:`asked_versions` (then remembered). ``path``: the file (default in :func:`cache_home`)."""
    key = installation_key() if _enabled() else None
    if key is None:
        return asked_versions()
    store = KeyedStore(path or cache_home() / FILE_NAME, FORMAT, MAX_ENTRIES)
    hit = _valid(store.entry(key))
    if hit is not None:
        return hit
    got = asked_versions()
    store.put(key, versions=got)
    return got
