"""The output of ``thqa score``: rows written as they are ready, so that a killed run loses nothing and can resume.

Rows go out in input order, each flushed as soon as its file is scored. A CSV file is the header and whole rows; a JSON
file is a JSON array that is complete after every row (each new row overwrites the closing bracket and writes a new
one in a single write), so whatever moment a run is killed at, the file reads as a valid table of the files scored so
far. :func:`read_for_resume` reads such a file back: the rows that scored are kept, the files they name are skipped by
the next run, and rows with an error are dropped so that those files are tried again.

The row text comes from the table's columns (:class:`thqa.scoring.columns.ScoreColumns`, the one definition of the
columns, passed in as ``columns``). Every row names the model that scored it (the ``model`` column:
:data:`MODEL_COLUMN`, a digest of the fusion weights, settings, backbones and precision: thqa.scoring.scorer.model_digest);
``--resume`` refuses a table of another model, and compares file names made absolute (``./a.mp4`` is ``a.mp4``).

File names are written unambiguously (:func:`path_text`) and text cells of CSV tables cannot start a spreadsheet
formula (:func:`csv_safe`); JSON holds the text unchanged.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, TextIO

from thqa.utils.atomic import atomic_write_text, is_stream, open_through
from thqa.errors import ConfigError

__all__ = ["ScoreWriter", "Resumed", "read_for_resume", "printable", "path_text", "path_key", "csv_safe", "csv_plain", "MODEL_COLUMN"]


class Columns(Protocol):
    """What the writer needs of :class:`thqa.scoring.columns.ScoreColumns` (the table's columns)."""

    def csv_text(self, results: Sequence, *, header: bool = True) -> str: ...

    def json_block(self, result) -> str: ...

#: the column (and JSON key) naming the model behind each score row
MODEL_COLUMN = "model"

#: first characters that make a spreadsheet read a cell as a formula (OWASP's list), and the quote that disarms them
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def csv_safe(cell: str) -> str:
    """A text cell for a CSV file that spreadsheets show as text: one starting with ``= + - @``, a tab or a carriage
    return (a formula) -- or with the quote itself, so the change can be undone -- gets a leading ``'``.
    Only for text (names, messages): numbers are written as they are."""
    return _QUOTE + cell if cell.startswith(_FORMULA_START + (_QUOTE,)) else cell


def csv_plain(cell: str) -> str:
    """The text :func:`csv_safe` was given (its leading quote taken off)."""
    return cell[1:] if cell.startswith(_QUOTE) and cell[1:].startswith(_FORMULA_START + (_QUOTE,)) else cell


def printable(text: str) -> str:
    """``text`` as valid UTF-8: undecodable bytes of a file name (surrogate escapes) become ``\\xff`` escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


def path_text(path: str | os.PathLike) -> str:
    """A file name as valid UTF-8 that names one file only: a name that is UTF-8 without a backslash is written as it
    is; any other has its undecodable bytes as ``\\xff`` escapes and its backslashes as ``\\x5c`` (so ``v\\xff.mp4``
    typed literally and ``v`` + byte 0xff + ``.mp4`` differ)."""
    name = os.fsdecode(path)
    try:
        name.encode("utf-8")
        if "\\" not in name or os.name == "nt":
            return name
    except UnicodeEncodeError:
        pass
    raw = os.fsencode(name) if os.name != "nt" else name.encode("utf-8", "surrogatepass")
    return raw.replace(b"\\", b"\\x5c").decode("utf-8", "backslashreplace")


def _text_path(text: str) -> str:
    """The file name (str, surrogate escapes for undecodable bytes) that :func:`path_text` wrote as ``text``."""
    if "\\" not in text or os.name == "nt":
        return text
    raw = text.encode("utf-8")
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i : i + 2] == b"\\x" and i + 4 <= len(raw):
            try:
                out.append(int(raw[i + 2 : i + 4], 16))
                i += 4
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return os.fsdecode(bytes(out))


def path_key(path: str | os.PathLike) -> str:
    """What two names of one file share for ``--resume``: the name made absolute and normalised (``./a.mp4`` and
    ``a.mp4`` are one), in :func:`path_text`'s unambiguous form."""
    return path_text(os.path.abspath(os.fsdecode(path)))


def _row_key(text: str) -> str:
    return path_key(_text_path(text))


@dataclass
class Resumed:
    """What :func:`read_for_resume` found: the rows to keep (CSV: cell lists, JSON: objects) and the files they name."""

    rows: list = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    dropped: int = 0  #: rows with an error, left out so that their files are scored again


def _csv_header(columns: Columns) -> str:
    return columns.csv_text([])


def _same_run(path: Path, row: dict, expect: dict) -> None:
    for key, want in expect.items():
        have = row.get(key)
        if have is not None and str(have).lower() != str(want).lower():
            raise ConfigError(
                f"--resume {path}: its rows were scored with {key} {str(have).lower()}, this run has {str(want).lower()}; "
                "results of two models do not belong in one table: write to another file"
            )


def _same_model(path: Path, row: dict, model: str | None) -> None:
    if model is None:
        return
    have = row.get(MODEL_COLUMN)
    if not have:
        raise ConfigError(
            f"--resume {path}: a row ({printable(str(row.get('path')))[:80]}) names no model (no {MODEL_COLUMN!r} digest: "
            "not written by this version of thqa score); results of unknown models do not belong in one table: write to another file"
        )
    if str(have) != model:
        raise ConfigError(
            f"--resume {path}: its rows were scored by model {printable(str(have))[:40]}, this run's model is {model}; "
            "results of two models do not belong in one table: write to another file"
        )


def read_for_resume(path: str | os.PathLike, fmt: str, columns: Columns, *, expect: dict | None = None,
                    model: str | None = None) -> Resumed:
    """Read a score file that an earlier (possibly killed) run wrote.

    Args:
        fmt: "csv" or "json". columns: the table's (:func:`thqa.scoring.columns.score_columns`). expect: column -> value every kept row must have (e.g. ``{"untrained": False}``).
        model: this run's model digest (thqa.scoring.scorer.model_digest): every row must carry it (None: not checked).

    Returns:
        The rows to keep; ``done`` holds :func:`path_key` of the files they name.

    Raises:
        ConfigError: not a score table of this format and these columns, or rows of another model (``expect``,
            ``model``), or rows without a model digest.
    """
    p = Path(path)
    expect = expect or {}
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Resumed()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--resume {p}: cannot be read ({exc})") from None
    out = Resumed()
    if fmt == "json":
        try:
            rows = json.loads(text) if text.strip() else []
        except ValueError as exc:
            raise ConfigError(f"--resume {p}: not a complete JSON array of scores ({exc}); write to another file") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("path"), str) for r in rows):
            raise ConfigError(f"--resume {p}: not a thqa score file (a JSON array of objects with a path)")
        for r in rows:
            _take(out, p, r, r, r["path"], expect, model)
        return out
    if not text:
        return out
    if not text.endswith("\n"):  # a row cut short by a kill: its file is scored again
        text = text[: text.rfind("\n") + 1]
    header_line = _csv_header(columns)
    if not text.startswith(header_line):
        first = text.split("\n", 1)[0][:120]
        raise ConfigError(
            f"--resume {p}: its first line {first!r} is not the header thqa writes ({header_line.strip()!r}); "
            "write to another file"
        )
    header = next(csv.reader([header_line]))
    try:
        rows = list(csv.reader(io.StringIO(text[len(header_line):])))
    except csv.Error as exc:
        raise ConfigError(f"--resume {p}: not a readable CSV file ({exc})") from None
    for cells in rows:
        if not cells:
            continue
        if len(cells) != len(header):
            raise ConfigError(f"--resume {p}: a row has {len(cells)} cells, the header {len(header)}; write to another file")
        _take(out, p, dict(zip(header, cells)), cells, csv_plain(cells[header.index("path")]), expect, model)
    return out


def _take(out: Resumed, p: Path, row: dict, kept, name: str, expect: dict, model: str | None) -> None:
    """Keep a scored row of this run's model (its file ``name`` is not scored again) or drop a failed one (tried again)."""
    if row.get("error") or row.get("mos") in (None, ""):
        _same_model(p, row, model)
        out.dropped += 1
        return
    _same_run(p, row, expect)  # the readable reasons first (precision, weights), then the digest
    _same_model(p, row, model)
    out.rows.append(kept)
    out.done.add(_row_key(name))


class ScoreWriter:
    """Writes score rows as they come: to ``path`` (created or, with ``resumed``, rewritten with the kept rows first)
    or to ``stream`` (stdout), in the table's ``columns`` (:func:`thqa.scoring.columns.score_columns`). A ``path`` that
    is ``-``, a device or a FIFO is written through as a stream. Use as a context manager; :meth:`add` one result at
    a time, in input order."""

    def __init__(self, columns: Columns, fmt: str, *, path: str | os.PathLike | None = None, stream: TextIO | None = None,
                 resumed: Resumed | None = None):
        self.columns, self.fmt = columns, fmt
        self.path = Path(path) if path is not None else None
        self.stream = stream
        self.n = 0  #: rows written by this run
        self.kept = len(resumed.rows) if resumed else 0
        self._fd: int | None = None
        self._file: TextIO | None = None
        self._owned: TextIO | None = None
        self._where = self.path  #: the name errors give (a stream's too)
        if self.path is not None and is_stream(self.path):
            self._owned = self.stream = open_through(self.path, "--output").__enter__()
            self.path = None
        if self.path is None:
            self._out(_csv_header(columns) if fmt == "csv" else "[\n")
            return
        kept = resumed.rows if resumed else []
        if fmt == "csv":
            buf = io.StringIO()
            buf.write(_csv_header(columns))
            csv.writer(buf, lineterminator="\n").writerows(kept)
            self._start_file(buf.getvalue())
            self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
        else:
            blocks = ",\n".join(json.dumps([r], indent=2)[2:-2] for r in kept)
            self._start_file("[\n" + blocks + ("\n" if blocks else "") + "]\n")
            self._fd = os.open(self.path, os.O_WRONLY)
            self._size = os.fstat(self._fd).st_size
            self._rows_in_file = len(kept)

    def _start_file(self, text: str) -> None:
        atomic_write_text(self.path, text)  # the kept rows (or just the header) replace the old file at once

    def _out(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError as exc:
            if exc.filename is None and self._where is not None and exc.errno is not None:
                raise OSError(exc.errno, exc.strerror, str(self._where)) from exc
            raise

    def add(self, result) -> None:
        """Write one result's row and flush it (an OSError names the output file)."""
        try:
            self._add(result)
        except OSError as exc:
            if exc.filename is None and self.path is not None:
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
            raise
        self.n += 1

    def _add(self, result) -> None:
        if self.fmt == "csv":
            row = self.columns.csv_text([result], header=False)
            if self._file is not None:
                self._file.write(row)
                self._file.flush()
            else:
                self._out(row)
        else:
            block = self.columns.json_block(result)
            if self._fd is not None:
                # overwrite the closing bracket with the row and a new closing bracket: one write, valid after it
                if self._rows_in_file:
                    pos, data = self._size - len("\n]\n"), ",\n" + block + "\n]\n"
                else:
                    pos, data = self._size - len("]\n"), block + "\n]\n"
                raw = data.encode("utf-8")
                if hasattr(os, "pwrite"):
                    os.pwrite(self._fd, raw, pos)
                else:  # pragma: no cover - Windows
                    os.lseek(self._fd, pos, os.SEEK_SET)
                    os.write(self._fd, raw)
                self._size = pos + len(raw)
                self._rows_in_file += 1
            else:
                self._out(("" if self.n == 0 else ",\n") + block)

    def close(self) -> None:
        """Finish the table (stdout JSON: its closing bracket) and fsync the file."""
        if self.path is None:
            if self.fmt == "json" and self.stream is not None:
                self._out(("\n" if self.n else "") + "]\n")
            if self._owned is not None and self._owned is not sys.stdout:
                self._owned.close()
            self._owned = self.stream = None
            return
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ScoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
