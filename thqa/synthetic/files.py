"""What the writers of :mod:`thqa.synthetic` share: argument checks and an mp4 output that is complete or absent.

With ``overwrite`` an output is written as every thqa output is (:func:`thqa.utils.atomic.atomic_path`: a symbolic
link's target is replaced and the link kept, a device or FIFO is written through, a killed writer's temp file is
cleaned by :func:`thqa.utils.atomic.clean_partials`). Without it the rule is stricter: an existing file is never
replaced (the final step is a hard link, which fails if the file appeared meanwhile). Either way the output's folder
must exist.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from thqa.errors import ConfigError
from thqa.utils.atomic import atomic_path, default_file_mode

__all__ = ["atomic_output", "check_new_output", "validate_int", "validate_seed"]


def check_new_output(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Validate an output path: its folder exists, it is not a folder, and it exists only if ``overwrite``."""
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"output path must be a str or os.PathLike, got {type(path).__name__}")
    out = Path(path)
    if str(path) == "":
        raise ConfigError("output path is empty")
    if out.is_dir():
        raise ConfigError(f"{out}: output path is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"{out}: output folder {parent} does not exist")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: output file exists; pass overwrite=True to replace it")
    return out


@contextmanager
def atomic_output(path: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it into place, on failure delete it.

    Without ``overwrite`` the final step is a hard link (fails if ``path`` appeared meanwhile), so an
    existing file is never replaced; with ``overwrite`` it is :func:`thqa.utils.atomic.atomic_path`'s (a link's
    target replaced, a device or FIFO written through). No half-written file is ever left at ``path``.
    """
    if overwrite:
        with atomic_path(path) as tmp:
            yield tmp
        return
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part.mp4", dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    os.chmod(tmp_name, default_file_mode())  # mkstemp's 0600 -> what the umask gives a new file (0644 under 022)
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ConfigError(f"{path}: output file exists; pass overwrite=True to replace it") from None
        except OSError:  # file system without hard links: fall back to a checked replace
            if path.exists():
                raise ConfigError(f"{path}: output file exists; pass overwrite=True to replace it") from None
            os.replace(tmp, path)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def validate_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def validate_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)

