"""Failure lists: the CSV of files a run could not process (``path,error_type,error,run``), written by ``thqa extract
--failures``, ``train`` and the demo; each run adds its rows (named by :func:`run_id`) without removing earlier ones.
"""
from __future__ import annotations

import csv
import errno
import io
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

from thqa.scoring.output import csv_safe, path_text
from thqa.utils.atomic import atomic_write_text, default_file_mode

__all__ = ["FAILURES_COLUMNS", "run_id", "write_failures", "add_failures", "is_failure_list"]


#: the columns of a failure list; ``run`` names the run that listed the file (:func:`run_id`)
FAILURES_COLUMNS = ("path", "error_type", "error", "run")
#: the header of the lists of earlier versions (no run column): still recognised, and given the column when added to
_LEGACY_FAILURES_COLUMNS = FAILURES_COLUMNS[:3]


def run_id() -> str:
    """This run's id: its start in UTC, its pid and 4 random hex digits, e.g. ``20261207T045300Z-4242-9f1c``."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-{secrets.token_hex(2)}"


def _failure_rows(failures: Iterable[tuple[str, str, str]], run: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for path, etype, msg in failures:
        w.writerow([csv_safe(path_text(path)), etype, csv_safe(msg), run])
    return buf.getvalue()


def write_failures(path: str | os.PathLike, failures: Iterable[tuple[str, str, str]], *, run: str = "") -> Path:
    """Write a failure list: the header (:data:`FAILURES_COLUMNS`) and a row per failed file, atomically."""
    return atomic_write_text(path, ",".join(FAILURES_COLUMNS) + "\n" + _failure_rows(failures, run))


def _header(path: Path) -> tuple[str, ...] | None:
    """The header of the regular file ``path`` (None: absent, not a regular file or unreadable)."""
    try:
        if not path.is_file():
            return None
        with open(path, "rb") as f:
            line = f.readline(200).decode("utf-8", "replace").rstrip("\r\n")
    except OSError:
        return None
    return tuple(line.split(","))


def is_failure_list(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file that starts like a failure list thqa wrote (so rows may be added to it)."""
    return _header(Path(path)) in (FAILURES_COLUMNS, _LEGACY_FAILURES_COLUMNS)


def add_failures(path: str | os.PathLike, failures: Sequence[tuple[str, str, str]], *, run: str) -> Path:
    """Add this run's failures to the list at ``path`` (each row names ``run``); return the file they went to.

    A new list is created (never over a file that appeared meanwhile); a list thqa wrote gets the rows at its end
    (a list of an earlier version without the run column is rewritten with it). A file of someone else's that
    appeared at ``path`` during the run is never touched: the rows then go to ``<stem>-<run><suffix>`` beside it.
    Earlier runs' rows are never removed. The caller holds the lock on ``path`` (thqa.utils.atomic.output_lock).
    """
    p = Path(path)
    rows = _failure_rows(failures, run)
    header = _header(p)
    if header == FAILURES_COLUMNS:
        with open(p, "a", encoding="utf-8", newline="") as f:
            f.write(rows)
            f.flush()
            os.fsync(f.fileno())
        return p
    if header == _LEGACY_FAILURES_COLUMNS:
        with open(p, newline="", encoding="utf-8", errors="surrogateescape") as f:
            old = [r + [""] * (len(FAILURES_COLUMNS) - len(r)) for r in list(csv.reader(f))[1:] if r]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([list(FAILURES_COLUMNS), *old])
        return atomic_write_text(p, buf.getvalue() + rows)
    text = ",".join(FAILURES_COLUMNS) + "\n" + rows
    if not os.path.lexists(p) and _create_new(p, text):
        return p
    other = p.with_name(f"{p.stem}-{run}{p.suffix}")  # someone's file is at p: never touched
    if not _create_new(other, text):
        raise FileExistsError(errno.EEXIST, "exists", str(other))
    return other


def _create_new(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` only if no file is there (a complete file linked in: never over one that appeared
    meanwhile); False when one did."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with open(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(name, default_file_mode())
        try:
            os.link(name, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(name)
