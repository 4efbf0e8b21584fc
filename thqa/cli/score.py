"""``thqa score``: predict the MOS of video files (one row per file), locally, on Ray or on a running ``thqa serve``.

The score table's columns are defined once, in :mod:`thqa.scoring.columns`. Library modules are imported inside the
functions that run the command: ``thqa --help`` must not load torch (tests/features/test_startup.py) and pays no
start-up time for what only a run needs.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from thqa.cli.options import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_SETUP,
    SYNC_WINDOW_HELP,
    add_engine_args,
    add_scoring_precision_arg,
    add_weights_args,
    coverage_arg,
    raise_usage,
    ray_options,
    setup_threads,
    sync_window_arg,
)
from thqa.cli.outputs import check_plot_dir, grouped, guard_outputs, output_format, plot_name, printable, progress, provenance
from thqa.errors import CheckpointError

log = logging.getLogger("thqa")


def add_parser(sub) -> None:
    """`thqa score`: its options and help."""
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
    p.add_argument("--sync-window", type=sync_window_arg, default=None, metavar="LEAD,LAG", help="with --sync: " + SYNC_WINDOW_HELP)
    p.add_argument(
        "--resume", action="store_true",
        help="keep the rows --output already holds (from a run that was stopped) and score only the files without one",
    )
    p.add_argument(
        "--coverage", type=coverage_arg, default=0.9,
        help="coverage of the prediction interval mos_low..mos_high (default 0.9; from the checkpoint's validation residuals)",
    )
    add_weights_args(p)
    add_scoring_precision_arg(p)
    add_engine_args(p)
    _add_server_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Score the files (skipping those --resume finds done) and write one row per file; exit 1 when any failed."""
    from thqa.scoring.columns import printable_result, score_columns  # late: start-up time --help need not pay
    from thqa.scoring.scorer import NO_MODEL_MESSAGE, Scorer  # late: loads torch

    setup_threads(args)
    if args.checkpoint is None and not args.random_init and not args.server:
        print(f"thqa score: {NO_MODEL_MESSAGE}", file=sys.stderr)
        return EXIT_SETUP
    if args.plot and not args.timeline:
        raise_usage("--plot draws the per-second scores: add --timeline")
    if args.engine == "ray" and (args.timeline or args.sync):
        raise_usage("--timeline and --sync run with the local engine only")
    fmt = output_format(args.output, args.format)
    rows = score_columns(timeline=args.timeline, sync=args.sync)
    resumed, model = _check_score_output(args, fmt, rows)
    if args.plot:
        check_plot_dir(args.plot)
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
    scorer = _server_client(args) if args.server else Scorer(_model_or_checkpoint(args), workers=args.workers, lazy=True, **scorer_kwargs(args))
    ck = getattr(scorer, "checkpoint", None)
    if ck is not None and not args.quiet:
        print(f"score: {provenance(ck)}", file=sys.stderr)
        if scorer.weights_note:
            print(f"score: backbones: {printable(scorer.weights_note)}", file=sys.stderr)
    errors, notes = [], []
    explain = args.timeline or args.sync
    with _score_writer(args, fmt, resumed, rows) as out, progress(len(files), "scoring") as bar:
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


def _check_score_output(args, fmt: str, rows):
    """Before any work: the output can be written (not an input; locked for this run), this run's model digest, and
    with --resume what the output already holds: ``(Resumed or None, model digest or None)``."""
    from thqa.utils.atomic import is_stream  # late: start-up time --help need not pay

    if args.resume and not args.output:
        raise_usage("--resume needs --output: the file whose rows are kept")
    if args.resume and is_stream(args.output):
        raise_usage(f"--resume needs --output to be a file, not {args.output} (stdout, a device or a pipe)")
    guard_outputs(args, [("--output", args.output)], [("", f) for f in args.files] + [("--checkpoint", args.checkpoint)])
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
    from thqa.scoring.output import read_for_resume  # late: start-up time --help need not pay

    return read_for_resume(args.output, fmt, rows, expect=expect, model=model), model


def _run_model(args) -> tuple:
    """``(digest, precision, WeightsOptions)`` of the model this run scores with (thqa.scoring.scorer.scoring_model,
    kept in ``args.scoring_model`` for the Scorer: the checkpoint is loaded once); Nones when the checkpoint is missing
    or no model is given (the Scorer then says so)."""
    from thqa.scoring.scorer import scoring_model  # late: loads torch

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
    from thqa.scoring.output import path_key  # late: start-up time --help need not pay

    return [f for f in files if resumed is None or path_key(f) not in resumed.done]


def _score_writer(args, fmt: str, resumed, rows):
    """The ScoreWriter of this run: --output (keeping --resume's rows) or stdout."""
    from thqa.scoring.output import ScoreWriter  # late: start-up time --help need not pay

    if args.output:
        return ScoreWriter(rows, fmt, path=args.output, resumed=resumed)
    return ScoreWriter(rows, fmt, stream=sys.stdout)


def _scores_done(args, out, errors: list[str]) -> int:
    """Each failure on stderr and, with --output, the count; the exit code."""
    for e in errors:
        print(f"thqa score: {e}", file=sys.stderr)
    if args.output:
        kept = f" (and {out.kept} kept from the earlier run)" if out.kept else ""
        print(f"thqa score: {out.n - len(errors)} scored, {len(errors)} failed{kept} -> {args.output}", file=sys.stderr)
    return EXIT_OK if not errors else EXIT_FAILURES


def _plot_timeline(args, files: list[str], r, index: int) -> None:
    """--plot: the per-second scores of ``r`` (``files[index]``) as DIR/<stem>.timeline.png."""
    from thqa.analysis.plots import timeline_plot  # late: loads matplotlib

    out = timeline_plot(r, Path(args.plot) / plot_name(files, index, "timeline", stem=Path(r.path).stem))
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


def scorer_kwargs(args) -> dict:
    """The model and device options of `thqa score`, as both engines take them."""
    return {"device": args.device, "batch_size": args.batch_size, "coverage": args.coverage, **_model_kwargs(args)}


def _score_ray(args, files: list[str], fmt: str, resumed, rows, model: str | None) -> int:
    """Score ``files`` on a Ray cluster (--engine ray), then write the rows in the files' order."""
    from thqa.engines.ray_engine import score_with_ray  # late: loads numpy (and Ray when it runs)
    from thqa.scoring.columns import printable_result  # late: start-up time --help need not pay

    opts = ray_options(args)
    with progress(len(files), "scoring") as bar:
        results = score_with_ray(files, _model_or_checkpoint(args), options=opts, progress=bar.update, **scorer_kwargs(args))
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
    for line in grouped([(r.path, r.interval_note) for r in results if r.mos is not None and r.interval_note], len(results)):
        print(f"thqa score: {line}", file=sys.stderr)


def _add_server_arg(p: argparse.ArgumentParser) -> None:
    """--server URL: score on a running `thqa serve`."""
    p.add_argument("--server", metavar="URL", help="score on a running `thqa serve` at URL (token: $THQA_SERVE_TOKEN) instead of here")


def _server_client(args):
    """The :class:`thqa.engines.client.Client` of ``--server`` (one per run), checked against options it cannot honour."""
    from thqa.engines.client import Client  # late: loads urllib and http.client: start-up time --help need not pay

    if args.engine == "ray" or args.checkpoint or args.random_init:
        raise_usage("--server scores with the service's model: leave out --engine ray, --checkpoint and --random-init")
    if getattr(args, "_client", None) is None:
        args._client = Client(args.server, coverage=args.coverage)
        args._client.health()  # an unreachable service or a wrong URL is said before any output
    return args._client
