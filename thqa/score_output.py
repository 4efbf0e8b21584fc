"""The output of ``thqa score``: rows written as they are ready, so that a killed run loses nothing and can resume.

Rows go out in input order, each flushed as soon as its file is scored. A CSV file is the header and whole rows; a JSON
file is a JSON array that is complete after every row (each new row overwrites the closing bracket and writes a new
one in a single write), so whatever moment a run is killed at, the file reads as a valid table of the files scored so
far. :func:`read_for_resume` reads such a file back: the rows that scored are kept, the files they name are skipped by
the next run, and rows with an error are dropped so that those files are tried again.

The row text itself comes from the caller (``format_rows(results, fmt) -> str``, the whole table for those results),
so the columns are defined in one place.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TextIO

from thqa._atomic import atomic_write_text
from thqa.errors import ConfigError

__all__ = ["ScoreWriter", "Resumed", "read_for_resume", "printable"]

FormatRows = Callable[[Sequence, str], str]


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


@dataclass
class Resumed:
    """What :func:`read_for_resume` found: the rows to keep (CSV: cell lists, JSON: objects) and the files they name."""

    rows: list = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    dropped: int = 0  #: rows with an error, left out so that their files are scored again


def _blocks_of(format_rows: FormatRows, results: Sequence) -> str:
    """The JSON array's row blocks for ``results`` (the text between ``[\\n`` and ``\\n]\\n``)."""
    return format_rows(results, "json")[2:-3]


def _csv_header(format_rows: FormatRows) -> str:
    return format_rows([], "csv")


def _same_run(path: Path, row: dict, expect: dict) -> None:
    for key, want in expect.items():
        have = row.get(key)
        if have is not None and str(have).lower() != str(want).lower():
            raise ConfigError(
                f"--resume {path}: its rows were scored with {key} {str(have).lower()}, this run has {str(want).lower()}; "
                "results of two models do not belong in one table: write to another file"
            )


def read_for_resume(path: str | os.PathLike, fmt: str, format_rows: FormatRows, *, expect: dict | None = None) -> Resumed:
    """Read a score file that an earlier (possibly killed) run wrote.

    Args:
        fmt: "csv" or "json". expect: column -> value every kept row must have (e.g. ``{"untrained": False}``).

    Raises:
        ConfigError: not a score table of this format and these columns, or rows of another model (``expect``).
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
            if r.get("error") or r.get("mos") is None:
                out.dropped += 1
                continue
            _same_run(p, r, expect)
            out.rows.append(r)
            out.done.add(r["path"])
        return out
    if not text:
        return out
    if not text.endswith("\n"):  # a row cut short by a kill: its file is scored again
        text = text[: text.rfind("\n") + 1]
    header_line = _csv_header(format_rows)
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
        row = dict(zip(header, cells))
        if row.get("error") or not row.get("mos"):
            out.dropped += 1
            continue
        _same_run(p, row, expect)
        out.rows.append(cells)
        out.done.add(row["path"])
    return out


class ScoreWriter:
    """Writes score rows as they come: to ``path`` (created or, with ``resumed``, rewritten with the kept rows first)
    or to ``stream`` (stdout). Use as a context manager; :meth:`add` one result at a time, in input order."""

    def __init__(self, format_rows: FormatRows, fmt: str, *, path: str | os.PathLike | None = None, stream: TextIO | None = None,
                 resumed: Resumed | None = None):
        self.format_rows, self.fmt = format_rows, fmt
        self.path = Path(path) if path is not None else None
        self.stream = stream
        self.n = 0  #: rows written by this run
        self.kept = len(resumed.rows) if resumed else 0
        self._fd: int | None = None
        self._file: TextIO | None = None
        if self.path is None:
            self._out(_csv_header(format_rows) if fmt == "csv" else "[\n")
            return
        kept = resumed.rows if resumed else []
        if fmt == "csv":
            buf = io.StringIO()
            buf.write(_csv_header(format_rows))
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
        self.stream.write(text)
        self.stream.flush()

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
            row = self.format_rows([result], "csv").split("\n", 1)[1]
            if self._file is not None:
                self._file.write(row)
                self._file.flush()
            else:
                self._out(row)
        else:
            block = _blocks_of(self.format_rows, [result])
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
            if self.fmt == "json":
                self._out(("\n" if self.n else "") + "]\n")
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
