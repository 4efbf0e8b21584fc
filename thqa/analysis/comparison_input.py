"""The inputs of :func:`thqa.analysis.comparison.compare`: prediction and label files read and matched, every
column of them, and each video's group, source and cluster keys (from a pattern, a column, a function, the folder
or the base name)."""
from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thqa.analysis.metrics import as_1d as _as_1d  # noqa: F401  (re-exported for comparison.py)
from thqa.data.predictions import (
    json_rows as _json_rows,
    match_by_path,
    path_name as _path_name,
    path_tail as _tail,
    read_labels,
    read_predictions,
    unique_tails,
)
from thqa.errors import ConfigError
from thqa.scoring.output import csv_plain

logger = logging.getLogger(__name__)

_EXAMPLES = 5
#: where ``compare(group_from=...)`` takes the group from: "parent" = the folder a file is in
GROUP_FROM = ("parent",)
#: where ``compare(source_from=...)`` takes the source from: "name" = the file's base name
SOURCE_FROM = ("name",)


def key_from_pattern(names: Sequence[str], pattern: str, what: str = "group") -> tuple[dict[str, str], list[str]]:
    """Keys from a regular expression searched in each file name: the first capture group (the whole match when
    the pattern has none).

    Returns:
        ``({name: key}, names the pattern does not match)``.

    Raises:
        ConfigError: the pattern does not compile, or it matches none of the names (the message names it).
    """
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--{what}-pattern {pattern!r} is not a regular expression: {exc}") from None
    keys: dict[str, str] = {}
    missed: list[str] = []
    for name in names:
        m = rx.search(name)
        key = None if m is None else (m.group(1) if rx.groups else m.group(0))
        if key:
            keys[name] = key
        else:
            missed.append(name)
    if not keys:
        raise ConfigError(
            f"the {what} pattern {pattern!r} matches none of the {len(names)} file names (e.g. {', '.join(names[:3])})"
        )
    return keys, missed


def _key_from_fn(names: Sequence[str], fn: Callable[[str], str | None], what: str) -> tuple[dict[str, str], list[str]]:
    keys: dict[str, str] = {}
    missed: list[str] = []
    for name in names:
        try:
            key = fn(name)
        except ValueError:
            key = None
        if key:
            keys[name] = str(key)
        else:
            missed.append(name)
    if not keys:
        label = getattr(fn, "__name__", repr(fn))
        raise ConfigError(f"the {what} key {label} gives no key for any of the {len(names)} file names (e.g. {', '.join(names[:3])})")
    return keys, missed


def _key_from_column(names: Sequence[str], tables: Sequence[tuple[str, dict[str, dict[str, str]]]], column: str, what: str) -> tuple[dict[str, str], list[str]]:
    col = column.lower()
    for label, rows in tables:
        if rows and any(col in r for r in rows.values()):
            keys = {n: rows[n][col] for n in names if n in rows and rows[n].get(col)}
            missed = [n for n in names if n not in keys]
            if not keys:
                raise ConfigError(f"the {what} column {column!r} of {label} is empty for all compared videos")
            return keys, missed
    found = sorted({c for _, rows in tables for r in rows.values() for c in r})
    raise ConfigError(f"no {what} column {column!r} in {' or '.join(l for l, _ in tables)} (columns: {', '.join(found) or 'none'})")


def _read_columns(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Every column of a CSV with a header, or of a JSON list of objects: ``{file name as written: {column: text}}``
    (column names lower-case). Empty for a headerless ``name,score`` file."""
    path = Path(path)
    if path.suffix.lower() in (".json", ".jsonl"):
        rows = _json_rows(path)
    else:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [{(k or "").strip().lower(): v.strip() if isinstance(v, str) else "" for k, v in r.items()} for r in csv.DictReader(fh)]
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        r = {str(k).lower(): "" if v is None else str(v) for k, v in r.items()}
        name = r.get("path") or r.get("video")
        if name:
            out[_path_name(csv_plain(name))] = r  # a thqa score CSV's '=x.mp4 is =x.mp4 (thqa.scoring.output.csv_safe)
    return out


def _keys(names: Sequence[str], tables, pattern: str | None, column: str | None, fn, what: str) -> tuple[dict[str, str] | None, list[str]]:
    """Keys of one kind (from a pattern, a column or a function; None when none is given) and the names without."""
    if pattern is not None:
        return key_from_pattern(names, pattern, what)
    if column is not None:
        if not tables:
            raise ConfigError(f"{what}_column needs a prediction or label file to read the column from")
        return _key_from_column(names, tables, column, what)
    if fn is not None:
        return _key_from_fn(names, fn, what)
    return None, []


def _base_name(name: str) -> str:
    """The source of ``genA/x.mp4``: ``x.mp4``."""
    return name.rsplit("/", 1)[-1]


def _on_base_name(fn: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """``fn`` applied to a name's base name (names keep folders where base names repeat)."""

    def on_base(name: str) -> str | None:
        return fn(_base_name(name))

    on_base.__name__ = getattr(fn, "__name__", "group_fn")
    return on_base


def _parent_folder(given: Mapping[str, str]) -> Callable[[str], str | None]:
    """name -> the folder its prediction's file is in, as the prediction file names it (None: no folder)."""

    def parent_folder(name: str) -> str | None:
        parts = given.get(name, name).split("/")
        return parts[-2] if len(parts) >= 2 and parts[-2] not in ("", ".", "..") else None

    return parent_folder


def _default_source(names: Sequence[str], group_of: Callable[[str], str | None]) -> str | None:
    """"name" when some base name is in two or more groups (the same input rendered by several generators)."""
    seen: dict[str, set] = {}
    for n in names:
        seen.setdefault(_base_name(n), set()).add(group_of(n))
    return "name" if any(len(g - {None}) >= 2 for g in seen.values()) else None



# ------------------------------------------------------------------------------------------- reading and keys
@dataclass
class Inputs:
    """The compared videos: names (base names, or the shortest path endings that tell them apart), scores (N,),
    labels (N,) or None, matching counts, each name's path as the prediction file gave it, every column read."""

    names: list[str]
    pred: np.ndarray
    labels: np.ndarray | None
    matching: dict | None
    given: dict[str, str]
    tables: list[tuple[str, dict[str, dict[str, str]]]]


def _summary(names: list[str]) -> dict:
    return {"n": len(names), "examples": names[:_EXAMPLES]}


def read_inputs(predictions: str | os.PathLike[str] | Mapping[str, float], labels: str | os.PathLike[str] | Mapping[str, float] | None) -> Inputs:
    """Read the predictions (and labels), match them by path ending, and read every column of the files (keyed by
    the matched names)."""
    tables: list[tuple[str, dict[str, dict[str, str]]]] = []
    if isinstance(predictions, Mapping):
        preds = {_path_name(str(k)): float(v) for k, v in predictions.items()}
    else:
        preds = read_predictions(predictions, by_path=True)
        tables.append((str(predictions), _read_columns(predictions)))
    matching = None
    lab_arr = None
    if labels is not None:
        if isinstance(labels, Mapping):
            labs = {str(k): float(v) for k, v in labels.items()}
        else:
            labs = read_labels(labels, by_path=True)
            tables.append((str(labels), _read_columns(labels)))
        names, pred_arr, lab_arr, report, given = match_by_path(preds, labs)
        matching = {
            "n_matched": report.n_matched,
            "unmatched_predictions": _summary(report.unmatched_predictions),
            "unmatched_labels": _summary(report.unmatched_labels),
        }
    else:
        tails, _ = unique_tails(list(preds))
        names, given = list(tails.values()), {t: n for n, t in tails.items()}
        pred_arr = np.array(list(preds.values()), dtype=np.float64)
    depth = max(n.count("/") + 1 for n in names)  # the path parts names keep (1: base names)
    tables = [(label, {_tail(n, depth): r for n, r in rows.items()}) for label, rows in tables]
    return Inputs(names, pred_arr, lab_arr, matching, given, tables)


@dataclass
class KeyOptions:
    """Where one kind of key (group, source, cluster) comes from: at most one of a pattern, a column, a function
    (on the base name) or ``from_`` (:data:`GROUP_FROM`, :data:`SOURCE_FROM`)."""

    pattern: str | None = None
    column: str | None = None
    fn: Callable[[str], str | None] | None = None
    from_: str | None = None

    def given(self) -> int:
        return sum(x is not None for x in (self.pattern, self.column, self.fn, self.from_))


@dataclass
class Keys:
    """Each kept video's group, source and cluster (None: not asked for), the names without one (``left_out``),
    and whether the source was taken from the base name without being asked."""

    kept: list[int]
    group: dict[str, str]
    source: dict[str, str] | None
    cluster: dict[str, str] | None
    left_out: dict
    auto_source: bool


def resolve_keys(inp: Inputs, group: KeyOptions, source: KeyOptions, cluster: KeyOptions) -> Keys:
    """Each video's keys; videos without a group (or a source, or a cluster, when asked for) are left out, counted
    and logged."""
    group_fn = None if group.fn is None else _on_base_name(group.fn)
    source_fn = None if source.fn is None else _on_base_name(source.fn)
    source_from, auto_source = source.from_, False
    if group.from_ == "parent":
        group_fn = _parent_folder(inp.given)
        if source.given() == 0:
            source_from = _default_source(inp.names, group_fn)
            auto_source = source_from is not None
    if source_from == "name":
        source_fn = _base_name
    names, tables = inp.names, inp.tables
    gkeys, no_group = _keys(names, tables, group.pattern, group.column, group_fn, "group")
    skeys, no_source = _keys(names, tables, source.pattern, source.column, source_fn, "source")
    ckeys, no_cluster = _keys(names, tables, cluster.pattern, cluster.column, cluster.fn, "cluster")
    kept = [i for i, n in enumerate(names) if n in gkeys and (skeys is None or n in skeys) and (ckeys is None or n in ckeys)]
    left_out = {}
    for what, missed in (("group", no_group), ("source key", no_source), ("cluster", no_cluster)):
        if missed:
            left_out["no_" + what.split()[0]] = _summary(missed)
            logger.warning("%d video(s) have no %s and are left out, e.g. %s", len(missed), what, ", ".join(missed[:3]))
    return Keys(kept, gkeys, skeys, ckeys, left_out, auto_source)
