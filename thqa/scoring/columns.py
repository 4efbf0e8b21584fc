"""The columns of ``thqa score``'s table: the one definition that the CSV, the JSON, ``--resume``'s header check
(:mod:`thqa.scoring.output`), ``thqa serve``'s rows and the Ray engine's results all use.

A column is a name, how its value is read from a :class:`~thqa.scoring.result.ScoreResult` and how it is written
in a CSV cell (JSON holds the value as it is). The JSON object lists the columns in :data:`COLUMNS`'s order; the CSV
has the columns with a ``csv_at`` place, in that order (it leaves out what does not fit a cell: clip seconds,
warnings, the interval's coverage and note). The timeline and sync columns follow in both when asked for.

To add a column: one :class:`Column` entry here (``csv_at`` the next free place, to keep old tables' order).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from thqa.scoring.output import MODEL_COLUMN, csv_safe, path_text, printable
from thqa.scoring.result import ScoreResult

__all__ = ["Column", "COLUMNS", "TIMELINE_COLUMNS", "SYNC_COLUMNS", "ScoreColumns", "score_columns", "csv_cell", "bool_cell",
           "printable_result"]


def csv_cell(value) -> str:
    """A CSV cell: numbers as numbers (``:g``), lists space-separated (floats ``.6f``), text made safe for spreadsheets
    (:func:`thqa.scoring.output.csv_safe`), None empty."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, str):
        return csv_safe(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def bool_cell(value: bool | None) -> str:
    """true / false, or empty for None (the in_sync columns)."""
    return "" if value is None else str(bool(value)).lower()


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _scores(values: list[float] | None) -> str:
    return "" if values is None else " ".join(f"{c:.6f}" for c in values)


def _text(value: str | None) -> str:
    return csv_safe(value or "")


def _plain(value: str | None) -> str:
    return value or ""


@dataclass(frozen=True)
class Column:
    """One column: ``name`` (the CSV header and JSON key), ``read`` (its value from a result; default: the attribute
    of that name), ``cell`` (its CSV text from that value; default :func:`csv_cell`) and ``csv_at`` (its place in
    the CSV; None: JSON only)."""

    name: str
    csv_at: int | None = None
    cell: Callable[[Any], str] = csv_cell
    read: Callable[[ScoreResult], Any] | None = None

    def value(self, result: ScoreResult) -> Any:
        return self.read(result) if self.read is not None else getattr(result, self.name)


#: every row's columns, in the JSON object's order
COLUMNS: tuple[Column, ...] = (
    Column("path", 0, _text),
    Column("mos", 1, _score),
    Column("clip_scores", 2, _scores),
    Column("error", 3, _text),
    Column("seconds"),
    Column("recipe"),
    Column("weights", 4, str),
    Column("untrained", 5, lambda v: str(v).lower()),
    Column("precision", 8, str),
    Column(MODEL_COLUMN, 9, _plain, read=lambda r: r.model),
    Column("warnings"),
    Column("mos_low", 6, _score),
    Column("mos_high", 7, _score),
    Column("coverage"),
    Column("interval_note"),
)
#: ``--timeline``'s column (a score per second)
TIMELINE_COLUMNS: tuple[Column, ...] = (Column("timeline"),)
#: ``--sync``'s columns (:func:`thqa.scoring.scorer.add_sync`)
SYNC_COLUMNS: tuple[Column, ...] = (
    Column("av_offset_ms"),
    Column("av_in_sync", cell=bool_cell),
    Column("av_sync_confidence"),
    Column("av_sync_reliable"),
    Column("av_sync_error"),
    Column("av_sync_agreement"),
)


class ScoreColumns:
    """The columns of one run's table (:func:`score_columns`): its CSV header and rows, its JSON objects."""

    def __init__(self, extras: Sequence[Column] = ()):
        self.extras = tuple(extras)
        self.json_columns = COLUMNS + self.extras
        self.csv_columns = tuple(sorted((c for c in COLUMNS if c.csv_at is not None), key=lambda c: c.csv_at)) + self.extras

    def header(self) -> list[str]:
        """The CSV header's names."""
        return [c.name for c in self.csv_columns]

    def csv_row(self, result: ScoreResult) -> list[str]:
        """The CSV cells of ``result`` (text cells made safe for spreadsheets)."""
        return [c.cell(c.value(result)) for c in self.csv_columns]

    def json_row(self, result: ScoreResult) -> dict:
        """The JSON object of ``result`` (values as they are)."""
        return {c.name: c.value(result) for c in self.json_columns}

    def csv_text(self, results: Sequence[ScoreResult], *, header: bool = True) -> str:
        """CSV lines (``\\n``-terminated) of ``results``, after the header when ``header``."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if header:
            w.writerow(self.header())
        w.writerows(self.csv_row(r) for r in results)
        return buf.getvalue()

    def json_block(self, result: ScoreResult) -> str:
        """``result``'s object as it stands in the JSON array (indented, without the separating comma)."""
        return json.dumps([self.json_row(result)], indent=2)[2:-2]

    def format(self, results: Sequence[ScoreResult], fmt: str) -> str:
        """The whole table of ``results``: "csv" (header and rows) or "json" (an array)."""
        if fmt == "json":
            return json.dumps([self.json_row(r) for r in results], indent=2) + "\n"
        return self.csv_text(results)


def score_columns(*, timeline: bool = False, sync: bool = False) -> ScoreColumns:
    """The columns of a ``thqa score`` table: every row's, then the timeline's and the sync's when asked for."""
    return ScoreColumns((TIMELINE_COLUMNS if timeline else ()) + (SYNC_COLUMNS if sync else ()))


def printable_result(result: ScoreResult, model: str | None = None) -> ScoreResult:
    """``result`` with its file name in :func:`thqa.scoring.output.path_text`'s unambiguous UTF-8 (undecodable bytes
    as ``\\xff``) and its messages printable, so that every output is valid UTF-8; stamped with this run's ``model``
    digest where the scorer left it out."""
    fixed = {"path": path_text(result.path), "error": printable(result.error) if result.error else result.error,
             "warnings": [printable(w) for w in result.warnings], "model": result.model or model}
    return result if all(getattr(result, k) == v for k, v in fixed.items()) else dataclasses.replace(result, **fixed)
