"""Prediction and label files: reading the challenge's ``name.mp4,score`` files (with or without a header), thqa's
score CSV and JSON, and pairing predictions with labels by file name (:func:`match_predictions`).

:mod:`thqa.analysis.metrics` scores the pairs (and re-exports these names); :mod:`thqa.analysis.comparison` reads the
same files to compare models.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from thqa.data.manifest import readable_csv
from thqa.errors import ManifestError, MediaFileNotFoundError, MetricError
from thqa.scoring.output import csv_plain

__all__ = [
    "MatchReport",
    "read_predictions",
    "read_labels",
    "match_predictions",
    "match_by_path",
    "unique_tails",
    "path_name",
    "path_tail",
    "json_rows",
]

logger = logging.getLogger(__name__)

_NAME_COLUMNS = ("path", "video")
_SCORE_COLUMNS = ("mos", "score")


def _basename(name: str) -> str:
    return re.split(r"[\\/]", name.strip())[-1]


def path_name(name: str) -> str:
    """A file name as written, with ``/`` between folders (also for ``\\``) and no leading ``./``."""
    text = name.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def path_tail(name: str, k: int) -> str:
    """The last ``k`` parts of a path (``path_tail("/d/genA/x.mp4", 2) == "genA/x.mp4"``)."""
    return "/".join(name.split("/")[-k:])


def unique_tails(names: Sequence[str]) -> tuple[dict[str, str], int]:
    """Each name's shortest ending that no other name shares, as path parts: the base name when base names are
    unique (``k`` 1), else e.g. ``genA/x.mp4`` (``k`` 2: the path below the folder the files have in common).

    Returns:
        ``({name: its last k parts}, k)``.
    """
    parts = [n.split("/") for n in names]
    deepest = max((len(p) for p in parts), default=1)
    for k in range(1, deepest + 1):
        tails = ["/".join(p[-k:]) for p in parts]
        if len(set(tails)) == len(tails):
            return dict(zip(names, tails)), k
    return {n: n for n in names}, deepest  # the same path twice: the readers refuse that before


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_name_score_file(path: str | os.PathLike[str], what: str, by_path: bool = False) -> dict[str, float]:
    """Parse ``name,score`` rows (optional header; optional ``error`` column) into ``{basename: score}`` (``by_path``:
    ``{name as written: score}``)."""
    path = Path(path)
    if not path.is_file():
        raise MediaFileNotFoundError(f"{what} file not found: {path}")
    with readable_csv(path):
        return _read_name_score_rows(path, what, by_path)


def _short(row: list[str]) -> str:
    text = repr(row)
    return text if len(text) <= 120 else text[:117] + "..."


def _header_columns(path: Path, line: int, row: list[str], cells: list[str]) -> tuple[int, int, int | None]:
    """(name column, score column, error column or None) of a header line."""
    lower = [c.lower() for c in cells]
    names = [i for i, c in enumerate(lower) if c in _NAME_COLUMNS]
    scores = [i for i, c in enumerate(lower) if c in _SCORE_COLUMNS]
    if len(names) != 1 or len(scores) != 1:
        raise ManifestError(
            f"{path}:{line}: cannot read the header {_short(row)}: expected one name column "
            f"({'/'.join(_NAME_COLUMNS)}) and one score column ({'/'.join(_SCORE_COLUMNS)}), "
            "or no header and rows of 'name.mp4,score'"
        )
    return names[0], scores[0], lower.index("error") if "error" in lower else None


def _row_score(path: Path, line: int, row: list[str], cells: list[str], cols: tuple[int, int], has_header: bool,
               by_path: bool) -> tuple[str, float]:
    """(file name, score) of one data row; ManifestError naming the file and line when it is not one."""
    name_col, score_col = cols
    if max(name_col, score_col) >= len(cells):
        raise ManifestError(f"{path}:{line}: expected at least {max(name_col, score_col) + 1} columns: {_short(row)}")
    if not has_header and len(cells) > 2 and any(cells[2:]):
        raise ManifestError(f"{path}:{line}: expected 'name,score', got {len(cells)} columns: {_short(row)}")
    name, text = (path_name if by_path else _basename)(csv_plain(cells[name_col])), cells[score_col]  # a thqa CSV's '=x.mp4 is =x.mp4
    if not name:
        raise ManifestError(f"{path}:{line}: empty file name")
    try:
        value = float(text)
    except ValueError:
        raise ManifestError(f"{path}:{line}: score {text[:40]!r} of {name[:80]!r} is not a number") from None
    if not math.isfinite(value):
        raise ManifestError(f"{path}:{line}: score of {name!r} is {text!r} (not finite)")
    return name, value


def _read_name_score_rows(path: Path, what: str, by_path: bool = False) -> dict[str, float]:
    out: dict[str, float] = {}
    first_line: dict[str, int] = {}
    n_error_rows = 0
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        name_col, score_col, error_col = 0, 1, None
        header_seen = has_header = False
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            cells = [c.strip() for c in row]
            if not header_seen:
                header_seen = True
                if len(cells) >= 2 and not _is_number(cells[1]):  # a header line
                    name_col, score_col, error_col = _header_columns(path, line, row, cells)
                    has_header = True
                    continue
            if error_col is not None and error_col < len(cells) and cells[error_col]:
                n_error_rows += 1
                continue
            name, value = _row_score(path, line, row, cells, (name_col, score_col), has_header, by_path)
            if name in out:
                raise ManifestError(
                    f"{path}:{line}: duplicate file {'path' if by_path else 'name'} {name!r} (first on line {first_line[name]})"
                    + ("" if by_path else "; names are matched by base name (by_path=True keeps files of one name in different folders apart)")
                )
            out[name] = value
            first_line[name] = line
    if n_error_rows:
        logger.warning("%s: skipped %d row(s) with a non-empty error column", path, n_error_rows)
    if not out:
        raise ManifestError(f"{path}: no {what} rows")
    return out


def json_rows(path: Path) -> list[dict]:
    """The objects of a JSON list (``thqa score --format json``) or of a JSON-lines file, one per row."""
    text = path.read_text(encoding="utf-8-sig")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                doc.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path}:{i}: not JSON (nor a JSON list): {exc}") from None
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise ManifestError(f"{path}: expected a JSON list of objects (one per video)")
    return doc


def _read_name_score_json(path: Path, what: str, by_path: bool = False) -> dict[str, float]:
    """``{basename: score}`` from JSON rows with a name key (path/video) and a score key (mos/score); rows whose
    ``error`` is set are skipped with a logged warning."""
    if not path.is_file():
        raise MediaFileNotFoundError(f"{what} file not found: {path}")
    out: dict[str, float] = {}
    n_error_rows = 0
    for i, row in enumerate(json_rows(path), 1):
        lower = {str(k).lower(): v for k, v in row.items()}
        if lower.get("error"):
            n_error_rows += 1
            continue
        name = next((lower[k] for k in _NAME_COLUMNS if lower.get(k)), None)
        key = next((k for k in _SCORE_COLUMNS if k in lower), None)
        if not isinstance(name, str) or key is None:
            raise ManifestError(f"{path}: row {i} needs a name ({'/'.join(_NAME_COLUMNS)}) and a score ({'/'.join(_SCORE_COLUMNS)}): {row!r}")
        name, value = (path_name if by_path else _basename)(name), lower[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ManifestError(f"{path}: row {i}: score of {name!r} is {value!r} (not a finite number)")
        if name in out:
            raise ManifestError(f"{path}: row {i}: duplicate file {'path' if by_path else 'name'} {name!r}"
                                + ("" if by_path else "; names are matched by base name (by_path=True keeps folders apart)"))
        out[name] = float(value)
    if n_error_rows:
        logger.warning("%s: skipped %d row(s) with an error", path, n_error_rows)
    if not out:
        raise ManifestError(f"{path}: no {what} rows")
    return out


def _is_json(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in (".json", ".jsonl")


def read_predictions(path: str | os.PathLike[str], *, by_path: bool = False) -> dict[str, float]:
    """Read a prediction file into ``{file base name: score}`` (``by_path``: ``{file name as written: score}``, so
    that ``genA/x.mp4`` and ``genB/x.mp4`` stay apart; :func:`match_predictions` matches them by path).

    Accepts the challenge format ``name.mp4,score`` without header, the same with a header (``path,mos``,
    ``Video,Score``, ... case-insensitive), and thqa's score CSV (``path,mos,clip_scores,error``: rows with a
    non-empty ``error`` are skipped with a logged warning) or JSON (``.json``/``.jsonl``: objects with
    ``path`` and ``mos``; rows with an ``error`` are skipped the same way).

    Raises:
        MediaFileNotFoundError: the file does not exist.
        ManifestError: bad header, duplicate base name, non-numeric/NaN/inf score, no rows (file and line named).
    """
    if _is_json(path):
        return _read_name_score_json(Path(path), "prediction", by_path)
    return _read_name_score_file(path, "prediction", by_path)


def read_labels(path: str | os.PathLike[str], *, by_path: bool = False) -> dict[str, float]:
    """Read a label CSV (``Video,Score``; name column ``path``/``video``, score column ``mos``/``score``,
    case-insensitive) into ``{file base name: MOS}`` (``by_path``: names as written). Same errors as
    :func:`read_predictions`."""
    if _is_json(path):
        return _read_name_score_json(Path(path), "label", by_path)
    return _read_name_score_file(path, "label", by_path)


@dataclass
class MatchReport:
    """How predictions and labels matched (by file base name)."""

    n_matched: int
    unmatched_predictions: list[str] = field(default_factory=list)
    unmatched_labels: list[str] = field(default_factory=list)

    def summary(self, *, max_names: int = 5) -> str:
        """One line: counts, and the first few unmatched names of each side."""

        def few(names: list[str]) -> str:
            more = f", ... (+{len(names) - max_names})" if len(names) > max_names else ""
            return ", ".join(names[:max_names]) + more

        parts = [f"{self.n_matched} matched"]
        if self.unmatched_predictions:
            unmatched = self.unmatched_predictions
            parts.append(f"{len(unmatched)} prediction(s) without label: {few(unmatched)}")
        if self.unmatched_labels:
            parts.append(f"{len(self.unmatched_labels)} label(s) without prediction: {few(self.unmatched_labels)}")
        return "; ".join(parts)


def _refuse_ambiguous(short: dict[str, float], other: dict[str, float], what: str, other_what: str) -> None:
    """A name of one side, shorter than the other side's paths, that ends several of them (``a.mp4`` against
    ``x/a.mp4`` and ``y/a.mp4``) cannot be matched: say so rather than drop it."""
    for name in short:
        hits = [o for o in other if o == name or o.endswith("/" + name)]
        if len(hits) > 1:
            raise ManifestError(
                f"two {other_what} share the file name {name!r} ({', '.join(hits[:3])}) and the {what} name only {name!r}: "
                f"give the {what} the folders too (e.g. {hits[0]})"
            )


def _by_tail(values: dict[str, float], k: int, what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        name = path_tail(key, k)
        if name in out:
            raise ManifestError(f"two {what} share the file name {name!r} (e.g. {key!r})")
        out[name] = value
    return out


def match_predictions(
    preds: dict[str, float], labels: dict[str, float]
) -> tuple[list[str], np.ndarray, np.ndarray, MatchReport]:
    """Pair predictions with labels by file name, in the labels' order: by base name when base names are unique on
    both sides, else by the shortest ending of the paths that tells the files apart (``genA/x.mp4`` against
    ``genB/x.mp4``; the keys of ``read_predictions(..., by_path=True)``), so a prediction file with absolute paths
    matches a manifest with paths relative to its folder.

    Returns:
        ``(names, pred, mos, report)``: matched names (those endings), predictions (N,), MOS (N,), and a
        :class:`MatchReport`.

    Raises:
        MetricError: no name matches. A partial mismatch only logs a warning (see ``report``).
    """
    names, pred_arr, mos_arr, report, _ = match_by_path(preds, labels)
    return names, pred_arr, mos_arr, report


def match_by_path(
    preds: dict[str, float], labels: dict[str, float]
) -> tuple[list[str], np.ndarray, np.ndarray, MatchReport, dict[str, str]]:
    """:func:`match_predictions`, also returning ``{matched name: the prediction's name as given}`` (its folders)."""
    p_full = {path_name(k): v for k, v in preds.items()}
    l_full = {path_name(k): v for k, v in labels.items()}
    k = max(unique_tails(list(p_full))[1], unique_tails(list(l_full))[1])
    p = _by_tail(p_full, k, "predictions")
    lab = _by_tail(l_full, k, "labels")
    _refuse_ambiguous(lab, p, "labels", "predictions")
    _refuse_ambiguous(p, lab, "predictions", "labels")
    given = {path_tail(n, k): n for n in p_full}
    names = [n for n in lab if n in p]
    report = MatchReport(
        n_matched=len(names),
        unmatched_predictions=[n for n in p if n not in lab],
        unmatched_labels=[n for n in lab if n not in p],
    )
    if not names:
        raise MetricError(f"no prediction matches a label by file name ({report.summary()})")
    if report.unmatched_predictions or report.unmatched_labels:
        logger.warning("predictions and labels differ: %s", report.summary())
    pred_arr = np.array([p[n] for n in names], dtype=np.float64)
    mos_arr = np.array([lab[n] for n in names], dtype=np.float64)
    return names, pred_arr, mos_arr, report, {n: given[n] for n in names}
