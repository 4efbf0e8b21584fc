"""The `thqa` command: score, sync, extract, cache, train, evaluate, compare, demo.

The CLI owns the output: results on stdout (or --output), progress bars and messages on stderr.
Exit codes: 0 success; 1 some files failed (the others were processed); 2 bad usage or a setup error
(no model, missing weights, a checkpoint that does not fit, an output path that cannot be written), checked before any
work where it can be. Whatever goes wrong, the user gets one line on stderr naming the file or option and the cause;
``--debug`` (or ``THQA_DEBUG=1``) adds the traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Sequence

from thqa import __version__
from thqa.utils.choices import FIT_KINDS, PRECISION_CHOICES, RECIPE_NAMES
from thqa.errors import ConfigError, THQAError, brief, terminal_safe

# OpenMP threads that wait for work sleep instead of spinning (the user's own setting wins). Set before torch loads
# its OpenMP runtime, which reads it once. Beside another busy process on a 2-core machine, spinning threads took
# SlowFast from 2.1 s to 6.5 s a clip (torch 2 threads, interleaved runs; benchmarks/bench_cpu.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: the most clips per video (the checkpoint schema's bound; each clip costs a SlowFast pass)
MAX_CLIPS = 64

log = logging.getLogger("thqa")

EXIT_OK, EXIT_FAILURES, EXIT_SETUP = 0, 1, 2


# -- option values ------------------------------------------------------------------------------------------------
#: seeds are 32-bit, as numpy's legacy seeding and most papers' tables have them (every --seed)
MAX_SEED = 2**32 - 1
#: the most bootstrap resamples or permutations `compare` draws (each a row of a (resamples, videos) matrix)
MAX_RESAMPLES = 10_000_000


def _int_in(lo: int, hi: int):
    """An argparse type: a whole number from ``lo`` to ``hi`` (a clear message otherwise, never a silent clamp)."""

    def parse(text: str) -> int:
        try:
            n = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}, got {text[:40]}")
        return n

    parse.__name__ = "whole number"  # argparse names the type in its message
    return parse


def _float_in(lo: float, hi: float, *, open_low: bool = False, open_high: bool = False):
    """An argparse type: a finite number in the range [lo, hi] (or (lo, ...) / (..., hi) where open)."""

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
        inside = math.isfinite(x) and (lo < x if open_low else lo <= x) and (x < hi if open_high else x <= hi)
        if not inside:
            bounds = f"{'(' if open_low else '['}{lo:g}, {hi:g}{')' if open_high else ']'}"
            raise argparse.ArgumentTypeError(f"must be a finite number in {bounds}, got {text[:40]}")
        return x

    parse.__name__ = "number"
    return parse


AUTO_PRECISION = "bf16 autocast on a GPU and on a CPU with bf16 in hardware (AVX-512 BF16 or AMX), else fp32"


def _add_weights_args(p: argparse.ArgumentParser, *, batch_size: bool = True) -> None:
    g = p.add_argument_group("backbone weights and device")
    g.add_argument(
        "--random-init", action="store_true", default=None,
        help="seeded random backbone weights instead of the pretrained ones (testing); with --checkpoint not needed: the "
        "backbones the checkpoint was trained on are used (and said on stderr)",
    )
    g.add_argument("--seed", type=_int_in(0, MAX_SEED), default=None, help="seed of --random-init (default: the checkpoint's, else 3407; 0 to 2^32-1)")
    g.add_argument("--swin-weights", metavar="FILE", help="local Swin-T weights (else $THQA_SWIN_WEIGHTS, the HF cache, a download)")
    g.add_argument(
        "--slowfast-weights", metavar="FILE", help="local SLOWFAST_8x8_R50.pyth (else $THQA_SLOWFAST_WEIGHTS, torch.hub's cache, a download)"
    )
    g.add_argument("--offline", action="store_true", help="never try the network for weights (also $THQA_OFFLINE=1)")
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument(
        "--batch-size" if batch_size else "--backbone-batch-size",
        dest="batch_size" if batch_size else "backbone_batch_size",
        type=_int_in(1, 4096),
        default=None,
        help=("clips (not videos) per backbone forward pass (default: 1 on a CPU, where it is fastest; 48 on a GPU)" if batch_size else
              "clips (not videos) per backbone forward pass while extracting (default: 1 on a CPU, 48 on a GPU); --batch-size is videos per training step"),
    )
    g.add_argument(
        "--workers",
        type=_workers_arg,
        default="auto",
        help="decoding worker processes: a number (0: decode in the main process) or auto (default: all cores but one "
        "beside a GPU, 0 beside a CPU - 1 for `thqa score` on 2 or more cores, which decodes while the models are built)",
    )
    g.add_argument("--threads", type=_int_in(1, 1024), default=None, help="torch CPU threads (default: torch's choice)")


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=["local", "ray"], default="local", help="local (default): this machine; ray: a Ray cluster (pip install 'thqa[ray]')")
    g.add_argument("--ray-address", metavar="ADDR", help="with --engine ray: auto (a cluster started with `ray start`), HOST:PORT or ray://HOST:10001; default: a local Ray instance")
    g.add_argument("--ray-actors", type=_int_in(1, 4096), metavar="N", help="with --engine ray: backbone actors (default: one per GPU, else one per 4 CPUs)")


def _ray_options(args):
    from thqa.engines.ray_engine import RayOptions, import_ray

    import_ray()  # a clear message when Ray is missing, before anything is built
    return RayOptions(address=args.ray_address, actors=args.ray_actors, verbose=bool(getattr(args, "verbose", 0)))


def _workers_arg(text: str):
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if not 0 <= n <= 1024:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1024, got {n}")
    return n


def _coverage_arg(text: str) -> float:
    try:
        c = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 < c < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (e.g. 0.9), got {text}")
    return c


def _weights_options(args):
    from thqa.features.weights import DEFAULT_SEED, WeightsOptions

    return WeightsOptions(
        random_init=bool(args.random_init),
        seed=DEFAULT_SEED if args.seed is None else args.seed,
        swin_weights=args.swin_weights,
        slowfast_weights=args.slowfast_weights,
        offline=True if args.offline else None,
    )


def _setup_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _progress(total: int, desc: str, enabled: bool | None = None):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, disable=(total <= 1) if enabled is None else not enabled, dynamic_ncols=True)


# -- score -------------------------------------------------------------------------------------------------------
def _score(args) -> int:
    from thqa.scoring.columns import printable_result, score_columns
    from thqa.scoring.scorer import Scorer

    _setup_threads(args)
    if args.checkpoint is None and not args.random_init and not args.server:
        from thqa.scoring.scorer import NO_MODEL_MESSAGE

        print(f"thqa score: {NO_MODEL_MESSAGE}", file=sys.stderr)
        return EXIT_SETUP
    if args.plot and not args.timeline:
        raise_usage("--plot draws the per-second scores: add --timeline")
    if args.engine == "ray" and (args.timeline or args.sync):
        raise_usage("--timeline and --sync run with the local engine only")
    fmt = _output_format(args.output, args.format)
    rows = score_columns(timeline=args.timeline, sync=args.sync)
    resumed, model = _check_score_output(args, fmt, rows)
    if args.plot:
        _check_plot_dir(args.plot)
    files = _to_score(args.files, resumed)
    if resumed is not None and (resumed.rows or resumed.dropped):
        print(
            f"thqa score: resuming {args.output}: {len(args.files) - len(files)} file(s) already scored, {len(files)} to go"
            + (f" ({resumed.dropped} earlier failure(s) tried again)" if resumed.dropped else ""),
            file=sys.stderr,
        )
    if not files:
        return EXIT_OK
    if args.engine == "ray":
        return _score_ray(args, files, fmt, resumed, rows, model)
    # lazy: with decoding workers, the backbones are built while the workers start on the first files
    scorer = _server_client(args) if args.server else Scorer(_model_or_checkpoint(args), workers=args.workers, lazy=True, **_scorer_kwargs(args))
    ck = getattr(scorer, "checkpoint", None)
    if ck is not None and not args.quiet:
        print(f"score: {_provenance(ck)}", file=sys.stderr)
        if scorer.weights_note:
            print(f"score: backbones: {_printable(scorer.weights_note)}", file=sys.stderr)
    errors, notes = [], []
    explain = args.timeline or args.sync
    with _score_writer(args, fmt, resumed, rows) as out, _progress(len(files), "scoring") as bar:
        it = scorer.iter_explain(files, timeline=args.timeline, sync=args.sync, sync_window_ms=args.sync_window) if explain else scorer.iter_score(files)
        for i, r in enumerate(it):
            out.add(printable_result(r, model))
            notes.append(r)
            if r.error:
                errors.append(r.error)
            if args.plot and r.ok:
                _plot_timeline(args, files, r, i)
            bar.update(1)
    _print_interval_notes(notes)
    return _scores_done(args, out, errors)


def _check_plot_dir(path: str) -> None:
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


def _check_score_output(args, fmt: str, rows):
    """Before any work: the output can be written (not an input; locked for this run), this run's model digest, and
    with --resume what the output already holds: ``(Resumed or None, model digest or None)``."""
    from thqa.utils.atomic import is_stream

    if args.resume and not args.output:
        raise_usage("--resume needs --output: the file whose rows are kept")
    if args.resume and is_stream(args.output):
        raise_usage(f"--resume needs --output to be a file, not {args.output} (stdout, a device or a pipe)")
    _guard_outputs(args, [("--output", args.output)], [("", f) for f in args.files] + [("--checkpoint", args.checkpoint)])
    if args.server:  # thqa score --server: the rows are the service's model's (its /healthz says which)
        expect = _server_client(args).expect() if args.resume else {}
        model = expect.pop("model", None)
    else:
        model, precision, weights = _run_model(args)
        expect = {"untrained": args.checkpoint is None}
        if precision is not None:
            expect["precision"] = precision
        if weights is not None:
            expect["weights"] = "random-init" if weights.random_init else "pretrained"
    if not args.resume:
        return None, model
    from thqa.scoring.output import read_for_resume

    return read_for_resume(args.output, fmt, rows, expect=expect, model=model), model


def _run_model(args) -> tuple:
    """``(digest, precision, WeightsOptions)`` of the model this run scores with (thqa.scoring.scorer.scoring_model,
    kept in ``args.scoring_model`` for the Scorer: the checkpoint is loaded once); Nones when the checkpoint is missing
    or no model is given (the Scorer then says so)."""
    from thqa.errors import CheckpointError
    from thqa.scoring.scorer import scoring_model

    if args.checkpoint and not Path(args.checkpoint).is_file():
        return None, None, None
    try:
        m = scoring_model(args.checkpoint, **_model_kwargs(args))
    except CheckpointError:
        if not args.checkpoint:  # no model: the Scorer says so
            return None, None, None
        raise
    args.scoring_model = m
    precision = m.resolved_precision(args.device)
    return m.digest(precision), precision, m.weights


def _model_or_checkpoint(args):
    """The scoring model _run_model worked out (loaded once), else the checkpoint's path (the Scorer says what is wrong)."""
    return getattr(args, "scoring_model", None) or args.checkpoint


def _to_score(files: list[str], resumed) -> list[str]:
    """The files a run scores: all, or with --resume those without a row (names compared made absolute)."""
    from thqa.scoring.output import path_key

    return [f for f in files if resumed is None or path_key(f) not in resumed.done]


def _guard_outputs(args, outputs: list[tuple[str, str | None]], inputs: list[tuple[str, object]], *, lock: bool = True) -> None:
    """Before any work: every output (option, path) can be written and is neither an input (a file the command reads)
    nor another output, by inode (thqa.utils.atomic.check_output); with ``lock``, each is locked until the command ends,
    so a second run writing the same file stops at once (exit 2, naming the pid that holds it)."""
    from thqa.utils.atomic import check_output, output_lock

    given = [(what, p) for what, p in outputs if p is not None]
    for i, (what, p) in enumerate(given):
        check_output(p, what, inputs=inputs, outputs=given[:i], text=what != "--plot")
    if lock:
        for what, p in given:
            args.resources.enter_context(output_lock(p, what))


def _score_writer(args, fmt: str, resumed, rows):
    from thqa.scoring.output import ScoreWriter

    if args.output:
        return ScoreWriter(rows, fmt, path=args.output, resumed=resumed)
    return ScoreWriter(rows, fmt, stream=sys.stdout)


def _printable(path) -> str:
    from thqa.scoring.output import printable

    return printable(os.fsdecode(path))


def _scores_done(args, out, errors: list[str]) -> int:
    for e in errors:
        print(f"thqa score: {e}", file=sys.stderr)
    if args.output:
        kept = f" (and {out.kept} kept from the earlier run)" if out.kept else ""
        print(f"thqa score: {out.n - len(errors)} scored, {len(errors)} failed{kept} -> {args.output}", file=sys.stderr)
    return EXIT_OK if not errors else EXIT_FAILURES


def _plot_name(paths: list[str], index: int, kind: str, *, stem: str | None = None) -> str:
    """``<stem>.<kind>.png`` for ``paths[index]`` (or ``stem``), numbered when two of ``paths`` share a stem."""
    stems = [Path(p).stem for p in paths]
    stem = stem if stem is not None else stems[index]
    return f"{stem}.{kind}.png" if stems.count(stem) == 1 else f"{index:04d}_{stem}.{kind}.png"


def _plot_timeline(args, files: list[str], r, index: int) -> None:
    from thqa.analysis.plots import timeline_plot

    out = timeline_plot(r, Path(args.plot) / _plot_name(files, index, "timeline", stem=Path(r.path).stem))
    log.info("timeline plot of %s -> %s", r.path, out)


def _model_kwargs(args) -> dict:
    """The model options of `thqa score` (thqa.scoring.scorer.scoring_model's)."""
    return {
        "random_init": args.random_init,
        "seed": args.seed,
        "swin_weights": args.swin_weights,
        "slowfast_weights": args.slowfast_weights,
        "offline": True if args.offline else None,
        "precision": args.precision,
    }


def _scorer_kwargs(args) -> dict:
    """The model and device options of `thqa score`, as both engines take them."""
    return {"device": args.device, "batch_size": args.batch_size, "coverage": args.coverage, **_model_kwargs(args)}


def _score_ray(args, files: list[str], fmt: str, resumed, rows, model: str | None) -> int:
    from thqa.engines.ray_engine import score_with_ray
    from thqa.scoring.columns import printable_result

    opts = _ray_options(args)
    with _progress(len(files), "scoring") as bar:
        results = score_with_ray(files, _model_or_checkpoint(args), options=opts, progress=bar.update, **_scorer_kwargs(args))
    _print_interval_notes(results)
    with _score_writer(args, fmt, resumed, rows) as out:
        for r in results:
            out.add(printable_result(r, model))
    return _scores_done(args, out, [r.error for r in results if r.error])


def _print_interval_notes(results) -> None:
    """Why scores carry no interval (said once when every file shares the reason), and per-file doubts (one line
    per kind of doubt, however many files share it)."""
    notes = [r.interval_note for r in results if r.mos is not None and r.interval_note]
    if not notes:
        return
    if len(set(notes)) == 1 and len(notes) == sum(r.mos is not None for r in results) and notes[0].startswith("no prediction interval"):
        print(f"thqa score: {notes[0]}", file=sys.stderr)
        return
    for line in _grouped([(r.path, r.interval_note) for r in results if r.mos is not None and r.interval_note], len(results)):
        print(f"thqa score: {line}", file=sys.stderr)


def _kind(message: str) -> str:
    """A message with its numbers masked: messages that differ only in numbers are of one kind."""
    import re

    return re.sub(r"[-+]?\d+(?:\.\d+)?", "#", message)


def _grouped(items: list[tuple[str, str]], total: int, *, examples: int = 3) -> list[str]:
    """``(file, message)`` pairs as one line per kind of message: the first file's message, and how many more files
    got one like it (a few named)."""
    kinds: dict[str, list[tuple[str, str]]] = {}
    for path, msg in items:
        kinds.setdefault(_kind(msg), []).append((path, msg))
    lines = []
    for group in kinds.values():
        path, msg = group[0]
        if len(group) == 1:
            lines.append(f"{path}: {msg}")
            continue
        others = ", ".join(Path(p).name for p, _ in group[1 : 1 + examples]) + (", ..." if len(group) > 1 + examples else "")
        lines.append(f"{len(group)} of {total} files: e.g. {path}: {msg} (also {others})")
    return lines


class _HeldWarnings:
    """A filter for the stderr log handlers: thqa's warnings are held (not drawn through a progress bar) and said at
    the end, one line per kind of message with how many times it came (:func:`_warnings_at_the_end`)."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.name.startswith("thqa"):
            self.records.append(record)
            return False
        return True


@contextlib.contextmanager
def _warnings_at_the_end():
    """Hold thqa's log warnings while a command runs (progress bars stay clean) and then say each kind once, with
    the count of repeats. Applies to the handlers that write to stderr (those of ``logging.basicConfig``)."""
    held = _HeldWarnings()
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
            kinds.setdefault(_kind(r.getMessage()), []).append(r)
        for group in kinds.values():
            more = f" (and {len(group) - 1} more like it)" if len(group) > 1 else ""
            text = (handlers[0].format(group[0]) if handlers else group[0].getMessage()) + more
            print(text, file=sys.stderr)


def _output_format(output: str | None, fmt: str | None) -> str:
    if fmt:
        return fmt
    if output and output.lower().endswith(".json"):
        return "json"
    return "csv"


def _sync_window_arg(text: str) -> tuple[float, float]:
    """--sync-window LEAD,LAG: ms the sound may come before and after the lips (two numbers from 0 to 10000)."""
    parts = text.replace(" ", "").split(",")
    try:
        w = tuple(float(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers of ms like 45,125, got {text[:40]!r}") from None
    if len(w) != 2 or not all(math.isfinite(x) and 0 <= x <= 10000 for x in w):
        raise argparse.ArgumentTypeError(f"expected two numbers of ms from 0 to 10000 like 45,125 (LEAD,LAG), got {text[:40]!r}")
    return w


_sync_window_arg.__name__ = "LEAD,LAG"
SYNC_WINDOW_HELP = (
    "in_sync when the sound is at most LEAD ms before and LAG ms after the lips (default 45,125: ITU-R BT.1359's threshold "
    "of detectability; its acceptability threshold is 90,185)"
)


def _path_text(path) -> str:
    from thqa.scoring.output import path_text

    return path_text(path)


def _write_atomic(path: Path, text: str) -> None:
    from thqa.utils.atomic import atomic_write_text

    atomic_write_text(path, text)


# -- sync ----------------------------------------------------------------------------------------------------------
def _plot_syncs(folder: str, results) -> None:
    """One ``<stem>.sync.png`` per file with an agreement curve (numbered when two files share a stem)."""
    from thqa.analysis.plots import sync_plot

    paths = [r.path for r in results]
    for i, r in enumerate(results):
        if not r.curve:
            print(f"thqa sync: no plot for {r.path} (no agreement curve)", file=sys.stderr)
            continue
        log.info("sync plot of %s -> %s", r.path, sync_plot(r, Path(folder) / _plot_name(paths, i, "sync")))


def _sync(args) -> int:
    from thqa.analysis.sync import IN_SYNC_WINDOW_MS, SyncResult, SyncSettings, estimate_av_offset
    from thqa.scoring.columns import bool_cell, csv_cell

    try:
        settings = SyncSettings(max_offset_ms=args.max_offset, locator=args.locator, in_sync_window_ms=args.sync_window or IN_SYNC_WINDOW_MS).validate()
    except THQAError as exc:
        raise_usage(str(exc))
    _guard_outputs(args, [("--output", args.output)], [("", f) for f in args.files])
    if args.plot:
        _check_plot_dir(args.plot)
    fmt = "json" if args.json else _output_format(args.output, None)
    results: list[SyncResult] = []
    with _progress(len(args.files), "sync") as bar:
        for f in args.files:
            try:
                r = estimate_av_offset(f, settings)
            except THQAError as exc:
                r = SyncResult(str(f), None, None, (-settings.max_offset_ms, settings.max_offset_ms), 0.0, error=str(exc), error_type=type(exc).__name__)
            results.append(r)
            bar.update(1)
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(f"thqa sync: {r.error}", file=sys.stderr)
        elif r.note:
            print(f"thqa sync: {r.path}: offset {r.offset_ms:+.0f} ms is unreliable: {r.note}", file=sys.stderr)
    if fmt == "json":
        text = json.dumps([r.to_dict(curve=not args.no_curve) for r in results], indent=2) + "\n"
    else:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "offset_ms", "in_sync", "confidence", "reliable", "range_ms", "seconds_used", "fps", "repeated_frames", "mouth_region", "note", "error"])
        for r in results:
            region = " ".join(str(v) for v in r.mouth_region) if r.mouth_region else ""
            w.writerow(
                [csv_cell(_path_text(r.path)), csv_cell(r.offset_ms), bool_cell(r.in_sync), csv_cell(r.confidence), csv_cell(r.reliable), f"{r.range_ms[0]:g} {r.range_ms[1]:g}", csv_cell(r.seconds_used), csv_cell(r.fps), csv_cell(r.repeated_frames), region, csv_cell(r.note or ""), csv_cell(r.error or "")]
            )
        text = buf.getvalue()
    if args.plot:
        _plot_syncs(args.plot, results)
    if args.output:
        _write_atomic(Path(args.output), text)
        print(f"thqa sync: {len(results) - failed} measured, {failed} failed -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK if failed == 0 else EXIT_FAILURES


# -- manifests ----------------------------------------------------------------------------------------------------
def _group_fn(kind: str, names: list[str] | None = None):
    from thqa.data.manifest import parse_thqa_ntire_name, thqa_ntire_group

    if kind == "thqa-ntire":
        return thqa_ntire_group
    if kind == "file":
        return None
    # auto: THQA-NTIRE names get their portrait group, anything else its own group
    def auto(name: str) -> str:
        try:
            return parse_thqa_ntire_name(name).group
        except ValueError:
            return Path(name).stem

    return auto


def _read_manifest(path: str, args, *, require_mos: bool, check_files: bool = True, video_root: str | None = None):
    from thqa.data.manifest import read_manifest

    m = read_manifest(path, video_root=video_root or args.video_root, require_mos=require_mos, check_files=check_files, group_fn=_group_fn(getattr(args, "groups", "auto")))
    if m.skipped:
        print(f"thqa {args.command}: {path}: skipped {len(m.skipped)} row(s): {m.skipped_summary()}", file=sys.stderr)
        for row in m.skipped[:5]:
            print(f"  line {row.line}: {row.name}: {row.reason} {row.detail}".rstrip(), file=sys.stderr)
    return m


def _add_manifest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video-root", metavar="DIR", help="folder that relative paths in manifests resolve against (default: the manifest's folder)")


# -- recipes and the switches back to the method (extract, train); provenance (score, evaluate) ----------------------
def _widths_arg(text: str) -> tuple[int, int, int]:
    parts = text.replace(" ", "").split(",")
    try:
        w = tuple(int(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three whole numbers like 8,16,32, got {text[:40]!r}") from None
    if len(w) != 3 or not all(1 <= x <= 1024 for x in w):
        raise argparse.ArgumentTypeError(f"expected three whole numbers from 1 to 1024 like 8,16,32, got {text[:40]!r}")
    return w


def _tuning_arg(text: str):
    if text == "estimate":
        return None
    x = _float_in(-0.5, 0.5, open_high=True)(text)
    return x


def _top_db_arg(text: str):
    if text == "none":
        return None
    return _float_in(0, 400, open_low=True)(text)


_tuning_arg.__name__ = "tuning"
_top_db_arg.__name__ = "dB"

#: --cqt NAME -> the AudioSettings fields it sets
CQT_CHOICES = {
    "log": {"cqt_kind": "log", "cqt_bins": 84, "cqt_bins_per_octave": 12},
    "chroma": {"cqt_kind": "chroma", "cqt_bins": 896, "cqt_bins_per_octave": 128},
}
#: option dest -> resolve() option name, for the extraction switches (extract and train)
_EXTRACTION_SWITCHES = {"clips": "n_clips", "clip_sampling": "clip_sampling", "audio_rate": "sample_rate", "n_fft": "n_fft", "chroma_tuning": "chroma_tuning",
                        "mfcc_top_db": "mfcc_top_db", "precision": "precision"}
#: the same for the training switches (train only)
_TRAINING_SWITCHES = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "lr_spatial": "lr_spatial", "weight_decay": "weight_decay",
                      "step_size": "step_size", "gamma": "gamma", "loss": "loss", "rank_weight": "rank_weight", "fit": "fit",
                      "finetune_spatial": "finetune_spatial", "head": "head", "lstm_pool": "lstm_pool", "audio_widths": "audio_widths",
                      "audio_input_norm": "audio_input_norm", "embed_activation": "embed_activation", "seed": "seed"}


def _add_recipe_args(p: argparse.ArgumentParser, *, training: bool) -> None:
    """--recipe and the switches back to the method (README: "Departures from the method"); every one defaults to the
    recipe's value, and a given one overrides it."""
    g = p.add_argument_group("recipe and the switches back to the method (default: the recipe's value)")
    g.add_argument(
        "--recipe", choices=list(RECIPE_NAMES), default=None,
        help="frozen (default): fusion model on frozen features, fast; winner: the NTIRE 2025 winner as published (ECA + Swin-T "
        "fine-tuned, lr 1e-5, Linear head, averaged Bi-LSTM); winner-exact: winner with the public code's audio settings and fp32",
    )
    g.add_argument("--clips", type=_int_in(1, MAX_CLIPS), default=None, help=f"clips per video (default 6; at most {MAX_CLIPS})")
    g.add_argument("--clip-sampling", choices=["spread", "first"], default=None,
                   help="a video longer than the clips: clips spread over all of it (thqa's) or its first seconds (the method's)")
    g.add_argument("--cqt", choices=list(CQT_CHOICES), default=None,
                   help="CQT channel: log (84 log-frequency bins interpolated to 128; thqa's) or chroma (chroma_cqt, 128 bins per octave, 896 filters: the public code's, ~0.65 s of CPU per clip against 13 ms)")
    g.add_argument("--audio-rate", type=_int_in(8000, 192000), default=None, metavar="HZ", help="audio resampled to HZ (thqa 16000; the method 22050, librosa's default)")
    g.add_argument("--n-fft", type=_int_in(16, 65536), default=None, metavar="N", help="STFT and gammatone window in samples (default 2048, as the method)")
    g.add_argument("--chroma-tuning", type=_tuning_arg, default=argparse.SUPPRESS, metavar="T",
                   help="tuning of the chroma bins in fractions of a bin (thqa 0), or 'estimate' per clip (the method, librosa's default)")
    g.add_argument("--mfcc-top-db", type=_top_db_arg, default=argparse.SUPPRESS, metavar="DB",
                   help="floor of MFCC's log-mel spectrogram under its peak (the method 80, librosa's default), or 'none' (thqa)")
    g.add_argument("--precision", choices=list(PRECISION_CHOICES), default=None,
                   help="backbones' precision for extraction: auto (thqa's: " + AUTO_PRECISION + "), fp32 (the method), bf16")
    if not training:
        return
    t = p.add_argument_group("training (default: the recipe's value)")
    t.add_argument("--epochs", type=_int_in(1, 100000), default=None, help="default 50")
    t.add_argument("--batch-size", type=_int_in(1, 65536), default=None, help="videos (not clips) per training step (default 8); the backbones' clips per pass: --backbone-batch-size")
    t.add_argument("--lr", type=_float_in(0, 10, open_low=True), default=None, help="fusion model's learning rate (frozen 1e-4; winner 1e-5, the method's)")
    t.add_argument("--lr-spatial", type=_float_in(0, 10, open_low=True), default=None, help="ECA + Swin-T's learning rate when fine-tuning (default 1e-5)")
    t.add_argument("--weight-decay", type=_float_in(0, 1), default=None, help="Adam's weight decay (default 1e-7)")
    t.add_argument("--step-size", type=_int_in(1, 100000), default=None, help="StepLR period in epochs (default 2)")
    t.add_argument("--gamma", type=_float_in(0, 1, open_low=True), default=None, help="StepLR factor (default 0.95)")
    t.add_argument("--loss", default=None, choices=["l1+rank", "l1", "plcc", "plcc+rank", "mse"], help="default l1+rank (the method's)")
    t.add_argument("--rank-weight", type=_float_in(0, 1000), default=None, help="weight of the rank loss (default 1)")
    t.add_argument("--fit", default=None, choices=list(FIT_KINDS), help="fit before PLCC in validation (default poly3)")
    t.add_argument("--finetune-spatial", action=argparse.BooleanOptionalAction, default=None,
                   help="train ECA + Swin-T with the fusion model from cached frames (winner: on; frozen: off)")
    t.add_argument("--head", choices=["mlp", "linear"], default=None, help="fusion head: mlp (LayerNorm, Linear 128, LeakyReLU, dropout, Linear; thqa's) or linear (Linear 3200 -> score; the method's)")
    t.add_argument("--lstm-pool", choices=["clip", "mean"], default=None, help="Bi-LSTM output: per clip (thqa's) or averaged over the clips to 128 numbers (the method's)")
    t.add_argument("--audio-widths", type=_widths_arg, default=None, metavar="W1,W2,W3", help="channels of the audio net's three blocks (default 8,16,32; the method does not fix them)")
    t.add_argument("--audio-input-norm", action=argparse.BooleanOptionalAction, default=None, help="BatchNorm on the four raw audio maps (thqa's; the method has none)")
    t.add_argument("--embed-activation", action=argparse.BooleanOptionalAction, default=None, help="LeakyReLU after the audio net's Linear 512 (thqa's; the method has none)")


def _plan(args, *, training: bool):
    """The recipe with the options given on the command line on top (thqa.training.recipes.resolve)."""
    from thqa.training.recipes import resolve

    options = {}
    switches = dict(_EXTRACTION_SWITCHES, **(_TRAINING_SWITCHES if training else {}))
    for dest, name in switches.items():
        if dest in ("chroma_tuning", "mfcc_top_db"):  # None is a value here ('estimate', 'none'); absent when not given
            if hasattr(args, dest):
                options[name] = getattr(args, dest)
        elif getattr(args, dest, None) is not None:
            options[name] = getattr(args, dest)
    if getattr(args, "cqt", None):
        options.update(CQT_CHOICES[args.cqt])
    return resolve(args.recipe, **options)


def _say_plan(plan, command: str) -> None:
    """One line on stderr: the recipe and what the options changed in it."""
    from thqa.training.recipes import RECIPES

    r = RECIPES[plan.recipe or "frozen"]
    recipe_values = r.values()
    given = []
    for key, src in sorted(plan.sources.items()):
        if src != "option":
            continue
        have = _flat_value(plan, key)
        was = recipe_values.get(key)
        source = "recipe" if plan.recipe else "default"
        given.append(f"{key.split('.')[-1]}={have}" + (f" ({source}: {was})" if key in recipe_values and was != have else ""))
    name = f"recipe {plan.recipe}" if plan.recipe else "no recipe named (thqa's defaults, the frozen recipe)"
    print(f"{command}: {name}" + (f"; options: {', '.join(given)}" if given else ""), file=sys.stderr)


def _flat_value(plan, key: str):
    from thqa.training.recipes import flat_values

    v = flat_values(plan.config, plan.settings, plan.precision)[key]
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v


def _add_scoring_precision_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=list(PRECISION_CHOICES), default=None,
                   help="backbones' precision (default: fp32 for a checkpoint trained on fp32 features, else auto: " + AUTO_PRECISION + ")")


def _provenance(ck) -> str:
    """One line on the model behind the scores: the checkpoint, its recipe, what was trained, its validation score."""
    from thqa.models.checkpoint import describe_recipe

    m = ck.meta
    val = m.get("val", {}).get("main_score") if isinstance(m.get("val"), dict) else None
    parts = [describe_recipe(m), "ECA + Swin-T fine-tuned" if ck.spatial_state is not None else "frozen Swin-T"]
    if isinstance(m.get("epoch"), int):
        parts.append(f"epoch {m['epoch']}" + (f" (validation main score {val:.4f})" if isinstance(val, (int, float)) else ""))
    parts.append(f"{'random-init' if ck.trained_on_random_init else 'pretrained'} backbones, features in {ck.features_precision or 'an unrecorded precision'}")
    return terminal_safe(f"model {_printable(ck.path)}: " + ", ".join(parts))  # header strings never reach a terminal raw


# -- extract ------------------------------------------------------------------------------------------------------
def _extract(args) -> int:
    from thqa.data.cache import FeatureCache
    from thqa.data.extract import extract_files, run_id
    from thqa.features.pipeline import Backbones, ExtractionSettings, FeatureExtractor

    _setup_threads(args)
    run = run_id()
    failures, m = _extract_outputs(args)
    cache = FeatureCache(args.cache_dir)
    plan = _plan(args, training=False)
    settings = plan.settings
    if args.recipe or plan.settings.to_dict() != ExtractionSettings(n_clips=plan.settings.n_clips).to_dict() or plan.precision != "auto":
        _say_plan(plan, "extract")
    if args.engine == "ray":
        from thqa.engines.ray_engine import extract_with_ray

        opts = _ray_options(args)
        with _progress(len(m.samples), "extracting", enabled=not args.quiet) as bar:
            summary = extract_with_ray(
                [str(s.path) for s in m.samples], args.cache_dir, settings, _weights_options(args), frames=not args.no_frames,
                device=args.device, batch_size=args.batch_size, options=opts, progress=bar.update, precision=plan.precision,
            )
        random_init = bool(args.random_init)
        infos = {}
        precision = (summary.pipeline or {}).get("precision", plan.precision)
    else:
        # lazy: where the weights' digests are remembered (thqa.features.digests), the keys need no model, and a run whose
        # every entry is cached builds (and hashes) none
        bb = Backbones(_weights_options(args), device=args.device, batch_size=args.batch_size, start_workers=str(args.workers) != "0",
                       precision=plan.precision, lazy=True)
        ex = FeatureExtractor(settings, backbones=bb, workers=args.workers)
        summary = extract_files([str(s.path) for s in m.samples], cache, ex, frames=not args.no_frames, progress=not args.quiet)
        random_init, infos = bb.random_init, bb.infos
        precision = bb.precision
    if summary.failures:
        failures = _add_failures(failures, summary.failures, run)
    size = cache.size_bytes()
    print(
        f"extract: {summary.done} done, {summary.reused} reused, {summary.failed} failed"
        + (f" (listed in {failures})" if summary.failures else "")
        + f"; {summary.seconds:.1f} s"
        + (f", {summary.per_video_s:.2f} s per extracted video" if summary.done else "")
        + f"; cache {size / 1e6:.1f} MB in {len(cache)} entries"
        + f"; backbones in {precision}"
        + (" [random-init backbones]" if random_init else "")
    )
    if summary.stale:
        why = "; ".join(f"{reason} ({n})" for reason, n in sorted(summary.stale.items(), key=lambda kv: -kv[1]))
        print(
            f"extract: {sum(summary.stale.values())} file(s) extracted again: the cache held entries that another version of the "
            f"extraction made ({why}); `thqa cache prune --cache-dir {args.cache_dir}` removes them"
        )
    if summary.elsewhere:
        why = "; and ".join(f"{reason} ({n})" for reason, n in sorted(summary.elsewhere.items(), key=lambda kv: -kv[1]))
        print(f"extract: the cache held features of {sum(summary.elsewhere.values())} extracted file(s) under other settings, "
              f"so they were extracted again: {why}")
    if args.summary_json:
        _write_atomic(Path(args.summary_json), json.dumps({**summary.to_dict(), "cache_bytes": size, "backbones": infos}, indent=2) + "\n")
    return EXIT_OK if summary.failed == 0 else EXIT_FAILURES


# -- cache ----------------------------------------------------------------------------------------------------------
def _cache_prune(args) -> int:
    from thqa.data.cache import FeatureCache
    from thqa.data.extract import prune_cache

    if not Path(args.cache_dir).is_dir():
        raise UsageError(f"{args.cache_dir}: no such cache directory")
    items = prune_cache(FeatureCache(args.cache_dir), dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    if args.json:
        doc = {"dry_run": args.dry_run, "files": [{"path": str(i.path), "bytes": i.bytes, "reason": i.reason} for i in items],
               "count": len(items), "bytes": sum(i.bytes for i in items)}
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    if args.dry_run:
        for i in items:
            print(f"{i.path}\t{i.bytes}\t{i.reason}")
    by_reason: dict[str, list[int]] = {}
    for i in items:
        by_reason.setdefault(i.reason, []).append(i.bytes)
    for reason, sizes in sorted(by_reason.items(), key=lambda kv: -sum(kv[1])):
        print(f"cache prune: {verb} {len(sizes)} file(s), {sum(sizes) / 1e6:.1f} MB: {reason}")
    print(f"cache prune: {verb} {len(items)} file(s), {sum(i.bytes for i in items) / 1e6:.1f} MB in all" + ("" if items else " (nothing to prune)"))
    return EXIT_OK


def _extract_outputs(args):
    """Before any work: --failures and --summary-json checked against the manifest and its videos (the summary locked
    for the run, the failure list when rows are added to it); ``(failure list path, manifest)``."""
    failures = Path(args.failures) if args.failures else Path(args.cache_dir) / "failures.csv"
    _check_failures_path(failures)
    outputs = [("--failures", str(failures)), ("--summary-json", args.summary_json)]
    _guard_outputs(args, outputs, [("MANIFEST", args.manifest)], lock=False)
    if args.summary_json:
        args.resources.enter_context(_lock(args.summary_json, "--summary-json"))
    m = _read_manifest(args.manifest, args, require_mos=False, check_files=False)
    _guard_outputs(args, outputs, [("", s.path) for s in m.samples], lock=False)
    return failures, m


def _is_failure_list(path: Path) -> bool:
    """Whether ``path`` is a regular file that starts like a failure list thqa wrote (so rows may be added to it)."""
    from thqa.data.extract import is_failure_list

    return is_failure_list(path)


def _check_failures_path(path: Path) -> None:
    """--failures may name a new file or a failure list thqa wrote before: never another file of the user's."""
    from thqa.data.extract import FAILURES_COLUMNS

    _check_file_output(path, "--failures")
    if os.path.lexists(path) and not _is_failure_list(path):
        raise ConfigError(
            f"--failures {path}: exists and is not a failure list written by thqa (first line {','.join(FAILURES_COLUMNS)!r}); "
            "thqa will not overwrite or delete it: give another path"
        )


def _add_failures(path: Path, failures, run: str) -> Path:
    """This run's failures added to the list (rows naming the run; earlier runs' rows stay); return where they went
    (beside ``path`` when a file that is not a failure list appeared there during the run)."""
    from thqa.data.extract import add_failures

    with _lock(path, "--failures", wait=True):
        out = add_failures(path, failures, run=run)
    if out != path:
        print(f"thqa extract: {path} is no longer a failure list thqa wrote: left as it is, failures listed in {out}", file=sys.stderr)
    return out


def _lock(path, what: str, *, wait: bool = False):
    from thqa.utils.atomic import output_lock

    return output_lock(path, what, wait=wait)


def _check_file_output(path, option: str) -> None:
    from thqa.utils.atomic import check_writable

    check_writable(path, option)


def _check_plot_output(path, option: str = "--plot") -> None:
    from thqa.analysis.plots import check_plot_path

    _check_file_output(path, option)
    check_plot_path(path)


# -- train --------------------------------------------------------------------------------------------------------
def _train(args) -> int:
    from thqa.data.manifest import samples_for_split, split_by_group
    from thqa.training.experiment import train_run

    _setup_threads(args)
    from thqa.training.loop import check_run_dir

    plan = _plan(args, training=True)  # bad values and combinations stop here, before any work
    args.seed = plan.config.seed  # the training seed also seeds --random-init and the group split
    check_run_dir(args.out)
    m = _read_manifest(args.manifest, args, require_mos=True)
    samples = list(m.samples)
    if args.val:
        train_s, val_s = samples, list(_read_manifest(args.val, args, require_mos=True, video_root=args.val_video_root).samples)
        val_s = _drop_copies(train_s, val_s)
    elif any(s.split for s in samples) and args.val_fraction is None:
        train_s, val_s = samples_for_split(samples, "train"), samples_for_split(samples, "val")
    else:
        train_s, val_s = split_by_group(samples, val_fraction=args.val_fraction or 0.2, seed=args.seed)
    from thqa.data.manifest import shared_groups

    leak = shared_groups(train_s, val_s)
    if leak:
        print(
            f"thqa train: warning: {len(leak)} content group(s) appear in both training and validation "
            f"({', '.join(sorted(leak)[:5])}): validation scores will be optimistic",
            file=sys.stderr,
        )
    print(f"train: {len(train_s)} training and {len(val_s)} validation videos ({len({s.group for s in train_s})} and {len({s.group for s in val_s})} content groups)", file=sys.stderr)
    _say_plan(plan, "train")
    print(f"train: every value and where it came from (recipe, option, default): {Path(args.out) / 'config.json'}", file=sys.stderr)

    result, summary = train_run(
        train_s,
        val_s,
        recipe=plan,
        cache_dir=args.cache_dir,
        run_dir=args.out,
        weights=_weights_options(args),
        device=args.device,
        backbone_batch_size=args.backbone_batch_size,
        workers=args.workers,
        progress=not args.quiet,
        calibrate_by_group=args.groups != "file",
        calibration_fraction=args.calibration_fraction,
    )
    b = result.best_metrics
    print(
        f"train: best epoch {result.best_epoch}: val SRCC {b['srcc']:.4f} PLCC {b['plcc']:.4f} main {b['main_score']:.4f}"
        f" -> {result.checkpoint}" + (f"; {summary.failed} file(s) failed extraction and were left out" if summary.failed else ""),
        file=sys.stderr,
    )
    for p, _, msg in summary.failures:
        print(f"thqa train: left out: {msg}", file=sys.stderr)
    _print_calibration(result.checkpoint)
    return EXIT_FAILURES if summary.failed else EXIT_OK


def _drop_copies(train_s, val_s):
    """Validation videos whose content is also in training (a copy or link under another name) are left out."""
    from thqa.data.manifest import shared_content

    copies = shared_content(train_s, val_s)
    if copies:
        print(
            f"thqa train: warning: {len(copies)} validation video(s) have the same content as a training video "
            f"({', '.join(s.name for s in copies[:3])}{', ...' if len(copies) > 3 else ''}): left out of validation",
            file=sys.stderr,
        )
        ids = {id(s) for s in copies}
        val_s = [s for s in val_s if id(s) not in ids]
    return val_s


def _print_calibration(checkpoint) -> None:
    """What prediction intervals the checkpoint supports (its validation residuals; thqa.analysis.conformal)."""
    from thqa.models.checkpoint import load_checkpoint
    from thqa.analysis.conformal import min_calibration_size

    cal = load_checkpoint(checkpoint).calibration
    if cal is None:
        return
    n = int(cal["n"])
    unit = "content groups (one residual each: videos of one portrait are not independent)" if cal.get("unit") == "group" else "videos"
    how = "held apart from the epoch choice" if cal.get("held_apart") else "the same ones that chose the epoch"
    ok = [c for c in (0.8, 0.9, 0.95, 0.99) if n >= min_calibration_size(c)]
    if ok:
        print(f"train: prediction intervals calibrated on {n} validation {unit}, {how} (valid up to {100 * ok[-1]:g}% coverage)", file=sys.stderr)
    else:
        print(f"thqa train: warning: only {n} validation {unit}: too few for 80% prediction intervals (4 needed, 9 for 90%)", file=sys.stderr)


# -- evaluate -----------------------------------------------------------------------------------------------------
def _metrics_table(metrics: dict) -> str:
    rows = [("SRCC", "srcc"), ("PLCC", "plcc"), ("KRCC", "krcc"), ("RMSE", "rmse"), ("main score", "main_score")]
    lines = [f"{'metric':<12}{'value':>8}"]
    lines += [f"{label:<12}{metrics[key]:>8.4f}" for label, key in rows]
    lines.append(f"{'n':<12}{int(metrics['n']):>8d}")
    return "\n".join(lines) + "\n"


def _warn_own_calibration(checkpoint, paths, result: dict) -> None:
    """Warn when the videos evaluated include the checkpoint's own calibration videos: coverage measured on them
    says nothing about new videos."""
    from thqa.models.checkpoint import load_checkpoint
    from thqa.analysis.conformal import Calibration, calibration_overlap

    cal = load_checkpoint(checkpoint).calibration
    if cal is None:
        return
    n = calibration_overlap(Calibration.from_dict(cal, where=str(checkpoint)), paths)
    if n:
        msg = (f"{n} of the {len(paths)} videos evaluated are the checkpoint's own calibration videos: the measured coverage "
               "of its prediction intervals on them is not a check (evaluate on videos it has not seen)")
        result["interval_coverage_warning"] = msg
        print(f"thqa evaluate: warning: {msg}", file=sys.stderr)


def _coverage_table(rows: list[dict] | None) -> str:
    """Nominal against measured coverage of the checkpoint's prediction intervals (empty without calibration)."""
    if not rows:
        return ""
    lines = ["", f"{'interval':<12}{'measured':>9}{'width':>8}   (prediction intervals on these {rows[0]['n']} videos, "
             f"calibrated on {rows[0]['n_calibration']})"]
    for r in rows:
        label = f"{100 * r['nominal']:g}%"
        if r["measured"] is None:
            lines.append(f"{label:<12}{'-':>9}{'-':>8}   {r['note']}")
        else:
            lines.append(f"{label:<12}{r['measured']:>9.3f}{r['mean_width']:>8.3f}")
    return "\n".join(lines) + "\n"


def _evaluate(args) -> int:
    from thqa.analysis import metrics as M
    _setup_threads(args)
    outputs = [("--output", args.output), ("--plot", args.plot)]
    inputs = [("MANIFEST", args.manifest), ("--predictions", args.predictions), ("--labels", args.labels), ("--checkpoint", args.checkpoint)]
    _guard_outputs(args, outputs, inputs)
    if args.plot:
        _check_plot_output(args.plot)
    if args.predictions:
        if not args.labels:
            raise_usage("--predictions needs --labels")
        preds = M.read_predictions(args.predictions, by_path=True)  # genA/x.mp4 and genB/x.mp4 stay apart
        labels = M.read_labels(args.labels, by_path=True)
        names, p, mos, report = M.match_predictions(preds, labels)
        if report.unmatched_predictions or report.unmatched_labels:
            print(f"thqa evaluate: {report.summary()}", file=sys.stderr)
        result = M.evaluate(p, mos, fit=args.fit)
        result.update({"n_unmatched_predictions": len(report.unmatched_predictions), "n_unmatched_labels": len(report.unmatched_labels)})
        pred_arr, mos_arr = p, mos
    else:
        if not (args.checkpoint and args.manifest and args.cache_dir):
            raise_usage("give --predictions P --labels L, or --checkpoint CK MANIFEST --cache-dir DIR")
        from thqa.training.experiment import evaluate_checkpoint

        from thqa.models.checkpoint import load_checkpoint, weights_for

        m = _read_manifest(args.manifest, args, require_mos=True)
        _guard_outputs(args, outputs, [("", s.path) for s in m.samples], lock=False)
        # the backbones the checkpoint was trained on, unless the options say otherwise (then they must agree)
        weights, note = weights_for(
            load_checkpoint(args.checkpoint), random_init=args.random_init, seed=args.seed, swin_weights=args.swin_weights,
            slowfast_weights=args.slowfast_weights, offline=True if args.offline else None,
        )
        if note and not args.quiet:
            print(f"evaluate: backbones: {_printable(note)}", file=sys.stderr)
        ev = evaluate_checkpoint(
            args.checkpoint,
            m.samples,
            cache_dir=args.cache_dir,
            weights=weights,
            device=args.device,
            fit=args.fit,
            backbone_batch_size=args.batch_size,
            workers=args.workers,
            progress=not args.quiet,
            precision=args.precision,
        )
        if not args.quiet:
            from thqa.models.checkpoint import load_checkpoint

            print(f"evaluate: {_provenance(load_checkpoint(args.checkpoint))}", file=sys.stderr)
        result = dict(ev.metrics)
        result["n_failed"] = ev.extraction.failed
        for p, _, msg in ev.extraction.failures:
            print(f"thqa evaluate: not evaluated: {msg}", file=sys.stderr)
        pred_arr, mos_arr = ev.predictions, ev.mos
        if ev.coverage is not None:
            result["interval_coverage"] = ev.coverage
            _warn_own_calibration(args.checkpoint, ev.paths, result)
        if args.output:
            import csv as _csv

            from thqa.scoring.columns import csv_cell

            buf = io.StringIO()
            w = _csv.writer(buf, lineterminator="\n")
            w.writerow(["path", "prediction", "mos"])
            for path, pr, mo in zip(ev.paths, ev.predictions, ev.mos):
                w.writerow([csv_cell(_path_text(path)), f"{pr:.6f}", f"{mo:.4f}"])
            _write_atomic(Path(args.output), buf.getvalue())
    result["fit"] = args.fit
    if args.plot:
        from thqa.analysis.plots import scatter_plot

        scatter_plot(pred_arr, mos_arr, args.plot, fit=args.fit)
        print(f"thqa evaluate: plot written to {args.plot}", file=sys.stderr)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(_metrics_table(result) + _coverage_table(result.get("interval_coverage")))
    return EXIT_FAILURES if result.get("n_failed") else EXIT_OK


# -- compare ------------------------------------------------------------------------------------------------------
def _source_fn(kind: str | None):
    from thqa.data.manifest import thqa_ntire_group, thqa_ntire_source

    return {None: None, "thqa-ntire": thqa_ntire_source, "thqa-ntire-portrait": thqa_ntire_group}[kind]


def _print_left_out(res) -> None:
    m = res.matching
    if m and (m["unmatched_predictions"]["n"] or m["unmatched_labels"]["n"]):
        parts = [f"{m['n_matched']} matched"]
        for key, what in (("unmatched_predictions", "prediction(s) without label"), ("unmatched_labels", "label(s) without prediction")):
            if m[key]["n"]:
                parts.append(f"{m[key]['n']} {what}, e.g. {', '.join(m[key]['examples'])}")
        print(f"thqa compare: {'; '.join(parts)}", file=sys.stderr)
    for key, what in (("no_group", "no group"), ("no_source", "no source key"), ("no_cluster", "no cluster")):
        if key in res.left_out:
            d = res.left_out[key]
            print(f"thqa compare: {d['n']} video(s) with {what} left out, e.g. {', '.join(d['examples'])}", file=sys.stderr)


def _compare(args) -> int:
    from thqa.analysis.comparison import compare, plot_comparison

    _guard_outputs(args, [("--output", args.output), ("--plot", args.plot)], [("--predictions", args.predictions), ("--labels", args.labels)])
    if args.plot:
        _check_plot_output(args.plot)
    res = compare(
        args.predictions,
        args.labels,
        group_pattern=args.group_pattern,
        group_column=args.group_column,
        group_from=args.group_from,
        source_pattern=args.source_pattern,
        source_column=args.source_column,
        source_fn=_source_fn(args.source_key),
        source_from=args.source_from,
        n_boot=args.n_boot,
        ci=args.ci,
        seed=args.seed,
        n_perm=args.n_perm,
        cluster_pattern=args.cluster_pattern,
        cluster_fn=_source_fn(args.cluster),
    )
    _print_left_out(res)
    as_json = args.json or (args.output is not None and args.output.lower().endswith(".json"))
    text = res.to_json() if as_json else res.table()
    if args.plot:
        plot_comparison(res, args.plot)
        print(f"thqa compare: plot written to {args.plot}", file=sys.stderr)
    if args.output:
        _write_atomic(Path(args.output), text)
        print(f"thqa compare: {len(res.groups)} groups, {len(res.pairs)} pairs -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _add_compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="rank groups of videos (generators) by their scores, with confidence intervals and significance tests",
        description="Rank groups of videos (e.g. generators) by mean score (with a source key: least-squares means of "
        "generator + source) with bootstrap confidence intervals, test every pair (sign-flip tests when paired by source, "
        "bootstrap-t otherwise; Holm-corrected), and with labels measure how well the predictions rank the groups.",
    )
    p.add_argument("--predictions", required=True, metavar="P", help="predictions: name,score rows (the challenge's format), or a thqa score CSV/JSON")
    p.add_argument("--labels", metavar="L", help="people's scores: Video,Score CSV or a manifest (path,mos,...)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--group-pattern", metavar="RE", help="regular expression searched in each file name; its first capture group is the group (e.g. '_([^_]+)\\.mp4$': the last _ field)")
    g.add_argument("--group-column", metavar="COL", help="a column of the prediction or label file that names each video's group")
    g.add_argument(
        "--group-from", choices=["parent"],
        help="parent: the folder each file is in (genA/x.mp4 -> genA); files of one name in several folders are then "
        "matched by path, and their base name is the source unless a source option says otherwise",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--source-pattern", metavar="RE", help="regular expression for the source key (first capture group): resample by source, pair groups that share sources")
    g.add_argument("--source-column", metavar="COL", help="a column that names each video's source")
    g.add_argument("--source-from", choices=["name"], help="name: the file's base name (x.mp4 in genA/ and genB/: one input, two renders)")
    g.add_argument(
        "--source-key", choices=["thqa-ntire", "thqa-ntire-portrait"],
        help="THQA-NTIRE names: thqa-ntire = the rendered input (portrait, image model, speech clip: the name without the generator); "
        "thqa-ntire-portrait = the portrait group that thqa train splits by (coarser)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--cluster", choices=["thqa-ntire-portrait"],
        help="the cluster the sources are nested in: resample clusters, then sources within them, and test on clusters "
        "(thqa-ntire-portrait: the portrait; use it when the verdicts should carry over to new faces)",
    )
    g.add_argument("--cluster-pattern", metavar="RE", help="regular expression for the cluster key (first capture group), e.g. the portrait")
    p.add_argument("--n-boot", type=_int_in(100, MAX_RESAMPLES), default=2000, help=f"bootstrap resamples (default 2000; 100 to {MAX_RESAMPLES:,})")
    p.add_argument("--n-perm", type=_int_in(100, MAX_RESAMPLES), default=None, help="random permutations per test (default: enough for Holm's threshold over all pairs)")
    p.add_argument("--ci", type=float, default=0.95, help="confidence level (default 0.95); pairs are significant when Holm's p < 1 - CI")
    p.add_argument("--seed", type=_int_in(0, MAX_SEED), default=0, help="random seed (default 0; 0 to 2^32-1)")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    p.add_argument("--output", "-o", metavar="OUT", help="write the table (or JSON: --json or a .json name) to OUT")
    p.add_argument("--plot", metavar="PNG", help="plot each group's mean and CI (predictions, and labels beside them) and each pair's difference with its CI")
    p.set_defaults(func=_compare)


# -- demo ---------------------------------------------------------------------------------------------------------
def _demo(args) -> int:
    from thqa.utils.atomic import check_writable
    from thqa.synthetic.demo import DemoConfig, run_demo

    _setup_threads(args)
    check_writable(args.out, "--out", folder=True)
    cfg = DemoConfig(
        out=Path(args.out),
        sources=args.source or (),
        seed=3407 if args.seed is None else args.seed,
        device=args.device,
        random_init=True if args.random_init else None,
        swin_weights=args.swin_weights,
        slowfast_weights=args.slowfast_weights,
        offline=True if args.offline else None,
        workers=args.workers,
        overwrite=args.overwrite,
        precision=args.precision,
    )
    if args.tiny:
        cfg.n_synthetic, cfg.duration, cfg.size, cfg.n_clips, cfg.epochs = 5, 2.0, 128, 1, 8
        cfg.variants = (("compression", 2), ("compression", 5), ("blur", 4), ("audio_noise", 5))
    if args.heads is not None:
        cfg.n_synthetic = args.heads
    if args.clips is not None:
        cfg.n_clips = args.clips
    if args.epochs is not None:
        cfg.epochs = args.epochs
    res = run_demo(cfg, echo=None if args.quiet else (lambda line: print(f"thqa demo: {line}", file=sys.stderr)))
    m = res.metrics
    print(
        f"demo: {res.n_videos} videos, held-out SRCC {m['srcc']:.4f} PLCC {m['plcc']:.4f} main {m['main_score']:.4f} "
        f"({res.weights} backbones), {res.seconds:.0f} s; report {res.report}"
    )
    return EXIT_OK if not res.bad_sources and not res.n_failed else EXIT_FAILURES


class UsageError(Exception):
    pass


# -- serve (and score --server) -------------------------------------------------------------------------------------
def _add_server_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", metavar="URL", help="score on a running `thqa serve` at URL (token: $THQA_SERVE_TOKEN) instead of here")


def _server_client(args):
    """The :class:`thqa.engines.client.Client` of ``--server`` (one per run), checked against options it cannot honour."""
    from thqa.engines.client import Client

    if args.engine == "ray" or args.checkpoint or args.random_init:
        raise_usage("--server scores with the service's model: leave out --engine ray, --checkpoint and --random-init")
    if getattr(args, "_client", None) is None:
        args._client = Client(args.server, coverage=args.coverage)
        args._client.health()  # an unreachable service or a wrong URL is said before any output
    return args._client


def _add_serve_parser(sub) -> None:
    from thqa.engines import serve_defaults as d
    p = sub.add_parser(
        "serve", help="a warm scoring service over HTTP (Ray Serve): POST /score, GET /healthz, GET /metrics",
        description="Keep the backbones and the fusion model warm in Ray Serve replicas and score uploaded files over HTTP, "
        "so one file costs what its work costs; answers are the rows of `thqa score --json` (call it with curl, "
        "thqa.Client or `thqa score --server URL`).",
    )
    p.add_argument("--checkpoint", "-c", metavar="CK", help="a fusion checkpoint from `thqa train` (.safetensors)")
    p.add_argument("--host", default=d.DEFAULT_HOST, help=f"address to listen on (default {d.DEFAULT_HOST}; any other needs --token)")
    p.add_argument("--port", type=_int_in(1, 65535), default=d.DEFAULT_PORT, help=f"HTTP port (default {d.DEFAULT_PORT})")
    p.add_argument("--address", metavar="ADDR", help="join a Ray cluster (auto, HOST:PORT, ray://HOST:10001); default: a local Ray instance")
    p.add_argument("--replicas", type=_int_in(1, 1024), default=None, help="scoring replicas, each with its own warm models (default 1)")
    p.add_argument("--min-replicas", type=_int_in(0, 1024), default=None, metavar="N",
                   help="with --max-replicas: let Ray Serve add and remove replicas as the load asks, keeping at least N (default 1; 0: none while idle)")
    p.add_argument("--max-replicas", type=_int_in(1, 1024), default=None, metavar="N", help="autoscale up to N replicas (instead of a fixed --replicas)")
    p.add_argument("--max-upload-mb", type=_float_in(0, 1e6, open_low=True), default=d.DEFAULT_MAX_UPLOAD_MB, help=f"larger uploads are refused, 413 (default {d.DEFAULT_MAX_UPLOAD_MB:g})")
    p.add_argument("--max-queue", type=_int_in(0, 100000), default=d.DEFAULT_MAX_QUEUE, help=f"requests waiting per replica; more are refused, 503 (default {d.DEFAULT_MAX_QUEUE})")
    p.add_argument("--request-timeout", type=_float_in(0, 1e6, open_low=True), default=d.DEFAULT_REQUEST_TIMEOUT, metavar="S", help=f"answer 504 after S seconds (default {d.DEFAULT_REQUEST_TIMEOUT:g})")
    p.add_argument("--token", help=f"require 'Authorization: Bearer TOKEN' (also ${d.TOKEN_ENV})")
    p.add_argument("--allow-paths", metavar="DIR", help="also score files named by ?path= when they resolve inside DIR")
    p.add_argument("--coverage", type=_coverage_arg, default=0.9, help="default coverage of the prediction interval (default 0.9)")
    _add_weights_args(p)
    _add_scoring_precision_arg(p)
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    if args.checkpoint is None and not args.random_init:
        from thqa.scoring.scorer import NO_MODEL_MESSAGE

        print(f"thqa serve: {NO_MODEL_MESSAGE}", file=sys.stderr)
        return EXIT_SETUP
    from thqa.engines import serve_defaults as d
    from thqa.engines.serve import ServeConfig, check_bind, replica_options, run_service

    token = args.token or os.environ.get(d.TOKEN_ENV) or None
    check_bind(args.host, token)
    scaling = {"replicas": args.replicas, "min_replicas": args.min_replicas, "max_replicas": args.max_replicas}
    try:
        replica_options(**scaling)
    except THQAError as exc:
        raise_usage(str(exc))
    _setup_threads(args)
    cfg = ServeConfig(
        checkpoint=args.checkpoint, scorer_kwargs=_scorer_kwargs(args), max_upload_mb=args.max_upload_mb, max_queue=args.max_queue,
        request_timeout=args.request_timeout, token=token, allow_paths=args.allow_paths, threads=args.threads,
    ).check()
    say = (lambda url: None) if args.quiet else (lambda url: print(f"thqa serve: ready on {url} (POST /score, GET /healthz, GET /metrics)", file=sys.stderr))
    return run_service(cfg, host=args.host, port=args.port, address=args.address, ready=say, **scaling)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors in one line (the option and the cause) and a pointer to --help."""

    def error(self, message: str):
        self.exit(EXIT_SETUP, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def raise_usage(msg: str):
    raise UsageError(msg)


CACHE_DIR_HELP = "the feature cache: a folder of one file per video and setting (made when missing; shared by extract, train and evaluate)"


# -- parser --------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="thqa", description="Quality (MOS) of talking-head videos, pictures and sound together.")
    parser.add_argument("--version", action="version", version=f"thqa {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also $THQA_DEBUG=1)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log messages on stderr (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "score", help="predict the MOS of video files",
        description="Predict the MOS of each video file with a trained checkpoint (one row per file on stdout or --output); "
        "--timeline adds a score per second, --sync the audio/video offset and an in-sync verdict.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="video files to score (any format FFmpeg reads; a bad file gives an error row, the others go on)")
    p.add_argument("--checkpoint", "-c", metavar="CK", help="a fusion checkpoint from `thqa train` (.safetensors)")
    p.add_argument("--output", "-o", metavar="OUT", help="write results to OUT (.csv or .json) instead of stdout")
    p.add_argument("--format", choices=["csv", "json"], help="output format (default: from --output's suffix, else csv)")
    p.add_argument("--timeline", action="store_true", help="also score every second (sliding windows of the model's clip count): a 'timeline' per file; costs about n/6 times a plain score for an n-second file")
    p.add_argument("--plot", metavar="DIR", help="with --timeline: write DIR/<file>.timeline.png per file (scores per second, sampled clips, MOS, lip sync with --sync)")
    p.add_argument("--sync", action="store_true", help="add the audio/video offset (av_offset_ms, > 0: sound later than the lips), av_in_sync (true/false, empty without an offset) and av_sync_confidence (see `thqa sync`)")
    p.add_argument("--sync-window", type=_sync_window_arg, default=None, metavar="LEAD,LAG", help="with --sync: " + SYNC_WINDOW_HELP)
    p.add_argument(
        "--resume", action="store_true",
        help="keep the rows --output already holds (from a run that was stopped) and score only the files without one",
    )
    p.add_argument(
        "--coverage", type=_coverage_arg, default=0.9,
        help="coverage of the prediction interval mos_low..mos_high (default 0.9; from the checkpoint's validation residuals)",
    )
    _add_weights_args(p)
    _add_scoring_precision_arg(p)
    _add_engine_args(p)
    _add_server_arg(p)
    p.set_defaults(func=_score)

    p = sub.add_parser(
        "sync", help="audio/video offset of talking heads (lip sync), from the files alone: no trained network",
        description="Measure each file's audio/video offset from its mouth motion and its speech (offset_ms > 0: the sound "
        "comes later than the lips) and say whether it is in sync (in_sync, ITU-R BT.1359's window unless --sync-window).",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="talking-head video files with sound")
    p.add_argument("--json", action="store_true", help="a JSON list on stdout, one object per file (with the agreement curve)")
    p.add_argument("--output", "-o", metavar="OUT", help="write results to OUT (.csv or .json) instead of stdout")
    p.add_argument("--max-offset", type=_float_in(0.0, math.inf, open_low=True), default=1000.0, metavar="MS",
                   help="search -MS..+MS (default 1000)")
    p.add_argument("--sync-window", type=_sync_window_arg, default=None, metavar="LEAD,LAG", help=SYNC_WINDOW_HELP)
    p.add_argument("--no-curve", action="store_true", help="leave the agreement curve out of the JSON")
    p.add_argument(
        "--locator",
        choices=("face", "frame"),
        default="face",
        help="how the mouth is found: 'face' (default: dlib's face detector, a file without a face is an error) or 'frame' (the whole picture, no detector)",
    )
    p.add_argument("--plot", metavar="DIR", help="write DIR/<file>.sync.png per file: the agreement at every candidate offset and per second")
    p.set_defaults(func=_sync)

    p = sub.add_parser(
        "extract", help="extract the features of a manifest's videos into the feature cache",
        description="Compute the backbone and audio features of every video a manifest lists, once, into a feature cache that "
        "train and evaluate read; entries already there are reused, and the run says why any were not.",
    )
    p.add_argument("manifest", metavar="MANIFEST", help="CSV with a path/video column (MOS optional)")
    p.add_argument("--cache-dir", required=True, metavar="DIR", help=CACHE_DIR_HELP)
    _add_manifest_args(p)
    p.add_argument("--no-frames", action="store_true", help="do not store first frames (only needed for fine-tuning: --recipe winner, --finetune-spatial)")
    p.add_argument("--failures", metavar="CSV", help="the list failed files are added to, each row naming its run (default DIR/failures.csv; never deleted)")
    p.add_argument("--summary-json", metavar="FILE", help="also write the run's summary as JSON")
    _add_recipe_args(p, training=False)
    _add_weights_args(p)
    _add_engine_args(p)
    p.set_defaults(func=_extract)

    p = sub.add_parser("cache", help="look after a feature cache", description="Look after a feature cache (see `thqa cache prune --help`).")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    q = csub.add_parser(
        "prune",
        help="delete entries no current setting can reach (another version of the extraction, corrupt)",
        description="Delete the cache entries that no current setting can reach: those made by another version of the "
        "extraction (features version, PyAV/FFmpeg, librosa, scipy, spafe) or before thqa recorded it, entries whose "
        "header cannot be read, and corrupt entries set aside. Entries of other settings, weights or precisions stay.",
    )
    q.add_argument("--cache-dir", required=True, metavar="DIR", help=CACHE_DIR_HELP)
    q.add_argument("--dry-run", "-n", action="store_true", help="list what would be deleted (path, bytes, reason) and delete nothing")
    q.add_argument("--json", action="store_true", help="print the list as JSON")
    q.set_defaults(func=_cache_prune)

    p = sub.add_parser(
        "train", help="train the fusion model on cached features",
        description="Train the fusion model on a manifest's videos and MOS (extracting whatever the cache lacks); writes "
        "RUN/best.safetensors, the checkpoint of the best validation epoch, and the run's metrics and config.",
    )
    p.add_argument("manifest", metavar="MANIFEST", help="CSV with path and MOS columns (optional group, split)")
    p.add_argument("--cache-dir", required=True, metavar="DIR", help=CACHE_DIR_HELP)
    p.add_argument("--out", required=True, metavar="RUN", help="run directory (an existing run with the same config resumes)")
    _add_manifest_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--val", metavar="MANIFEST", help="validation manifest")
    p.add_argument("--val-video-root", metavar="DIR", help="folder the --val manifest's paths resolve against (default: --video-root)")
    g.add_argument("--val-fraction", type=_float_in(0, 1, open_low=True, open_high=True), default=None, help="hold out this fraction of content groups (default 0.2)")
    p.add_argument("--groups", choices=["auto", "thqa-ntire", "file"], default="auto", help="content groups for the split when the manifest has no group column; prediction intervals are calibrated one residual per validation group (file: per video)")
    p.add_argument(
        "--calibration-fraction", type=_float_in(0, 1, open_high=True), default=0.0, metavar="F",
        help="hold this fraction of the validation groups apart from the epoch choice and calibrate the prediction intervals on them "
        "(used when that is at least 9 groups; the checkpoint records which; default 0: the whole validation set does both)",
    )
    _add_recipe_args(p, training=True)
    _add_weights_args(p, batch_size=False)
    p.set_defaults(func=_train, seed=None)  # --seed: the recipe's (3407) unless given

    p = sub.add_parser(
        "evaluate", help="SRCC, PLCC, KRCC, RMSE and the challenge's main score",
        description="Score predictions against MOS labels: either a prediction file against a label file (--predictions, "
        "--labels), or a checkpoint on a manifest's videos (--checkpoint CK MANIFEST --cache-dir DIR, features from the cache).",
    )
    p.add_argument("manifest", nargs="?", metavar="MANIFEST", help="with --checkpoint: the videos and their MOS")
    p.add_argument("--predictions", metavar="P", help="predictions: name,score rows (the challenge's format) or thqa score CSV")
    p.add_argument("--labels", metavar="L", help="labels: Video,Score CSV")
    p.add_argument("--checkpoint", "-c", metavar="CK", help="a fusion checkpoint from `thqa train`: predict MANIFEST's videos with it (the backbones it records are used)")
    p.add_argument("--cache-dir", metavar="DIR", help="with --checkpoint: " + CACHE_DIR_HELP)
    _add_manifest_args(p)
    p.add_argument("--groups", choices=["auto", "thqa-ntire", "file"], default="auto", help=argparse.SUPPRESS)
    p.add_argument("--fit", default="poly3", choices=list(FIT_KINDS), help="curve fitted before PLCC (default poly3, the challenge's)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object instead of a table")
    p.add_argument("--plot", metavar="PNG", help="scatter plot of prediction against MOS with the fitted curve")
    p.add_argument("--output", "-o", metavar="CSV", help="with --checkpoint: write per-video predictions")
    _add_weights_args(p)
    _add_scoring_precision_arg(p)
    p.set_defaults(func=_evaluate)

    _add_compare_parser(sub)
    _add_serve_parser(sub)

    p = sub.add_parser(
        "demo", help="the whole library offline: self-made talking heads, degradations, cache, training, report",
        description="Run everything on one machine with no data set: draw and voice talking heads, degrade them with a "
        "pseudo-MOS rule, extract, train, test on held-out heads, and write a report with the commands to go on.",
    )
    p.add_argument("--out", default="thqa-demo", metavar="DIR", help="output directory (default ./thqa-demo; never silently overwritten)")
    p.add_argument("--source", nargs="+", metavar="FILE", help="build the corpus from your talking-head files instead of self-made ones")
    p.add_argument("--heads", type=_int_in(1, 1000), default=None, help="number of self-made talking heads (default 8)")
    p.add_argument("--clips", type=_int_in(1, MAX_CLIPS), default=None, help="clips per video (default 2, to fit a CPU)")
    p.add_argument("--epochs", type=_int_in(1, 100000), default=None, help="training epochs (default 40)")
    p.add_argument("--tiny", action="store_true", help="the smallest demo (5 heads, 4 degradations, 1 clip): a few minutes on 2 cores")
    p.add_argument("--overwrite", action="store_true", help="reuse an existing, non-empty output directory")
    _add_weights_args(p)
    p.add_argument("--precision", choices=list(PRECISION_CHOICES), default="auto", help="backbones' precision (default auto: " + AUTO_PRECISION + ")")
    p.set_defaults(func=_demo)

    for p in sub.choices.values():  # `thqa score ... --debug` as well as `thqa --debug score ...`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error (also $THQA_DEBUG=1)")
    return parser


def _debug_wanted(args) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("THQA_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


#: what to lower when memory runs out, by the option that sets it (only the options the command has are advised)
_MEMORY_KNOBS = (("workers", "fewer --workers"), ("batch_size", "a smaller --batch-size"), ("n_boot", "a smaller --n-boot"),
                 ("n_perm", "a smaller --n-perm"), ("clips", "fewer --clips"))


def _memory_advice(args) -> str:
    knobs = [what for dest, what in _MEMORY_KNOBS if args is not None and hasattr(args, dest)]
    return f" (try {' or '.join(knobs)})" if knobs else ""


def _error_line(exc: BaseException, args=None) -> str:
    """One line naming the file or option and the cause, for anything that escaped a command."""
    if isinstance(exc, THQAError):
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return " ".join(lines) if len(lines) <= 3 else lines[0]
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else None
        cause = exc.strerror or brief(exc)
        return f"{os.fsdecode(where)}: {cause}" if where is not None else cause
    if isinstance(exc, MemoryError):
        return "out of memory" + _memory_advice(args)
    return f"unexpected {type(exc).__name__}: {brief(exc)} (this is a thqa bug: please report it with the output of --debug)"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (``kill``, a job scheduler's stop) ends a command as Ctrl-C does: rows written so far are kept, the
    output is closed whole, decoding workers are stopped, exit code 130. Only in the main thread (where Python
    delivers signals); the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="thqa: %(levelname)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_SETUP
    debug = _debug_wanted(args)
    if sys.stdout is None:  # started with standard output closed (`>&-`): Python then has no sys.stdout at all
        if hasattr(args, "output") and args.output in (None, "-"):  # the results would go to standard output
            print(f"thqa {args.command}: error: standard output is closed: nowhere to write the results (give -o FILE)", file=sys.stderr)
            return EXIT_SETUP
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the results go to a file; notes for stdout go nowhere
    from thqa.utils.hints import cli_hints

    args.resources = contextlib.ExitStack()  # output locks (_guard_outputs), released when the command ends
    try:
        # messages name options (--random-init), not Python keywords (random_init=True); warnings wait for the end
        held = _warnings_at_the_end() if args.verbose < 2 else contextlib.nullcontext()
        with args.resources, _sigterm_as_interrupt(), cli_hints(), held:
            return int(args.func(args) or 0)
    except UsageError as exc:
        parser.exit(EXIT_SETUP, f"thqa {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"thqa {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `thqa score ... | head`: the reader left; say nothing more on a closed pipe
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURES
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes one line and an exit code
        if debug:
            traceback.print_exc()
        print(f"thqa {args.command}: error: {terminal_safe(_error_line(exc, args))}", file=sys.stderr)
        return EXIT_SETUP


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
