"""What the commands share about their outputs: checks and locks before any work, file names of plots, progress bars,
and messages said once at the end (warnings and per-file notes grouped by kind).

The CLI owns the output: results on stdout (or --output), progress bars and messages on stderr. Library modules are
imported inside the functions: building the parser (``thqa --help``) must not load them (they cost start-up time).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path

from thqa.cli.options import UsageError
from thqa.errors import terminal_safe

__all__ = [
    "progress", "output_format", "guard_outputs", "check_file_output", "check_plot_dir", "check_plot_output", "lock", "write_atomic",
    "path_text", "printable", "provenance", "plot_name", "message_kind", "grouped", "HeldWarnings", "warnings_at_the_end",
]


def progress(total: int, desc: str, enabled: bool | None = None):
    """A progress bar of files on stderr (hidden for a single file unless ``enabled``)."""
    from tqdm import tqdm  # late: start-up time --help need not pay

    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, disable=(total <= 1) if enabled is None else not enabled, dynamic_ncols=True)


def output_format(output: str | None, fmt: str | None) -> str:
    """--format, else json for an --output ending in .json, else csv."""
    if fmt:
        return fmt
    if output and output.lower().endswith(".json"):
        return "json"
    return "csv"


def guard_outputs(args, outputs: list[tuple[str, str | None]], inputs: list[tuple[str, object]], *, lock: bool = True) -> None:
    """Before any work: every output (option, path) can be written and is neither an input (a file the command reads)
    nor another output, by inode (thqa.utils.atomic.check_output); with ``lock``, each is locked until the command ends,
    so a second run writing the same file stops at once (exit 2, naming the pid that holds it)."""
    from thqa.utils.atomic import check_output, output_lock  # late: start-up time --help need not pay

    given = [(what, p) for what, p in outputs if p is not None]
    for i, (what, p) in enumerate(given):
        check_output(p, what, inputs=inputs, outputs=given[:i], text=what != "--plot")
    if lock:
        for what, p in given:
            args.resources.enter_context(output_lock(p, what))


def check_file_output(path, option: str) -> None:
    """Before any work: ``path`` can be written as the file of ``option`` (thqa.utils.atomic.check_writable)."""
    from thqa.utils.atomic import check_writable  # late: start-up time --help need not pay

    check_writable(path, option)


def check_plot_dir(path: str) -> None:
    """Before any work: --plot names a folder that exists or can be made, and can be written to."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"--plot {path}: not a folder (it is where one PNG per file goes)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--plot {path}: cannot make the folder ({exc.strerror or exc})") from exc
    if not os.access(p, os.W_OK | os.X_OK):
        raise UsageError(f"--plot {path}: the folder is not writable")


def check_plot_output(path, option: str = "--plot") -> None:
    """Before any work: ``path`` can be written and names a picture format matplotlib writes."""
    from thqa.analysis.plots import check_plot_path  # late: loads matplotlib

    check_file_output(path, option)
    check_plot_path(path)


def lock(path, what: str, *, wait: bool = False):
    """The lock of output ``path`` (thqa.utils.atomic.output_lock), waited for with ``wait``."""
    from thqa.utils.atomic import output_lock  # late: start-up time --help need not pay

    return output_lock(path, what, wait=wait)


def write_atomic(path: Path, text: str) -> None:
    """``text`` written to ``path`` whole or not at all (thqa.utils.atomic.atomic_write_text)."""
    from thqa.utils.atomic import atomic_write_text  # late: start-up time --help need not pay

    atomic_write_text(path, text)


def path_text(path) -> str:
    """``path`` as thqa.scoring.output.path_text writes it (valid UTF-8, undecodable bytes as \\xff)."""
    from thqa.scoring.output import path_text as text  # late: start-up time --help need not pay

    return text(path)


def printable(path) -> str:
    """``path`` (str, bytes or os.PathLike) made printable on a terminal (thqa.scoring.output.printable)."""
    from thqa.scoring.output import printable as safe  # late: start-up time --help need not pay

    return safe(os.fsdecode(path))


def provenance(ck) -> str:
    """One line on the model behind the scores: the checkpoint, its recipe, what was trained, its validation score."""
    from thqa.models.checkpoint import describe_recipe  # late: loads torch

    m = ck.meta
    val = m.get("val", {}).get("main_score") if isinstance(m.get("val"), dict) else None
    parts = [describe_recipe(m), "ECA + Swin-T fine-tuned" if ck.spatial_state is not None else "frozen Swin-T"]
    if isinstance(m.get("epoch"), int):
        parts.append(f"epoch {m['epoch']}" + (f" (validation main score {val:.4f})" if isinstance(val, (int, float)) else ""))
    parts.append(f"{'random-init' if ck.trained_on_random_init else 'pretrained'} backbones, features in {ck.features_precision or 'an unrecorded precision'}")
    return terminal_safe(f"model {printable(ck.path)}: " + ", ".join(parts))  # header strings never reach a terminal raw


def plot_name(paths: list[str], index: int, kind: str, *, stem: str | None = None) -> str:
    """``<stem>.<kind>.png`` for ``paths[index]`` (or ``stem``), numbered when two of ``paths`` share a stem."""
    stems = [Path(p).stem for p in paths]
    stem = stem if stem is not None else stems[index]
    return f"{stem}.{kind}.png" if stems.count(stem) == 1 else f"{index:04d}_{stem}.{kind}.png"


def message_kind(message: str) -> str:
    """A message with its numbers masked: messages that differ only in numbers are of one kind."""
    return re.sub(r"[-+]?\d+(?:\.\d+)?", "#", message)


def grouped(items: list[tuple[str, str]], total: int, *, examples: int = 3) -> list[str]:
    """``(file, message)`` pairs as one line per kind of message: the first file's message, and how many more files
    got one like it (a few named)."""
    kinds: dict[str, list[tuple[str, str]]] = {}
    for path, msg in items:
        kinds.setdefault(message_kind(msg), []).append((path, msg))
    lines = []
    for group in kinds.values():
        path, msg = group[0]
        if len(group) == 1:
            lines.append(f"{path}: {msg}")
            continue
        others = ", ".join(Path(p).name for p, _ in group[1 : 1 + examples]) + (", ..." if len(group) > 1 + examples else "")
        lines.append(f"{len(group)} of {total} files: e.g. {path}: {msg} (also {others})")
    return lines


class HeldWarnings:
    """A filter for the stderr log handlers: thqa's warnings are held (not drawn through a progress bar) and said at
    the end, one line per kind of message with how many times it came (:func:`warnings_at_the_end`)."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.name.startswith("thqa"):
            self.records.append(record)
            return False
        return True


@contextlib.contextmanager
def warnings_at_the_end():
    """Hold thqa's log warnings while a command runs (progress bars stay clean) and then say each kind once, with
    the count of repeats. Applies to the handlers that write to stderr (those of ``logging.basicConfig``)."""
    held = HeldWarnings()
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "stream", None) is sys.stderr]
    for h in handlers:
        h.addFilter(held)
    try:
        yield held
    finally:
        for h in handlers:
            h.removeFilter(held)
        kinds: dict[str, list[logging.LogRecord]] = {}
        for r in held.records:
            kinds.setdefault(message_kind(r.getMessage()), []).append(r)
        for group in kinds.values():
            more = f" (and {len(group) - 1} more like it)" if len(group) > 1 else ""
            text = (handlers[0].format(group[0]) if handlers else group[0].getMessage()) + more
            print(text, file=sys.stderr)
