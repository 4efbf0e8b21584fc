"""``thqa evaluate``: SRCC, PLCC, KRCC, RMSE and the challenge's main score, of a prediction file against a label file
or of a checkpoint on a manifest's videos (features from the cache), with the coverage of its prediction intervals.

Library modules are imported inside the functions that run the command: ``thqa --help`` must not load torch
(tests/features/test_startup.py).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from thqa.cli.options import (
    CACHE_DIR_HELP,
    EXIT_FAILURES,
    EXIT_OK,
    GROUP_CHOICES,
    add_manifest_args,
    add_scoring_precision_arg,
    add_weights_args,
    load_manifest,
    raise_usage,
    setup_threads,
)
from thqa.cli.outputs import check_plot_output, guard_outputs, path_text, printable, provenance, write_atomic

from thqa.utils.choices import FIT_KINDS


def add_parser(sub) -> None:
    """`thqa evaluate`: its options and help."""
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
    add_manifest_args(p)
    p.add_argument("--groups", choices=list(GROUP_CHOICES), default="auto", help=argparse.SUPPRESS)
    p.add_argument("--fit", default="poly3", choices=list(FIT_KINDS), help="curve fitted before PLCC (default poly3, the challenge's)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object instead of a table")
    p.add_argument("--plot", metavar="PNG", help="scatter plot of prediction against MOS with the fitted curve")
    p.add_argument("--output", "-o", metavar="CSV", help="with --checkpoint: write per-video predictions")
    add_weights_args(p)
    add_scoring_precision_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """The metrics as a table (or JSON) on stdout; --plot a scatter plot, --output the per-video predictions."""
    setup_threads(args)
    outputs = [("--output", args.output), ("--plot", args.plot)]
    inputs = [("MANIFEST", args.manifest), ("--predictions", args.predictions), ("--labels", args.labels), ("--checkpoint", args.checkpoint)]
    guard_outputs(args, outputs, inputs)
    if args.plot:
        check_plot_output(args.plot)
    if args.predictions:
        result, pred_arr, mos_arr = _evaluate_files(args)
    else:
        result, pred_arr, mos_arr = _evaluate_checkpoint(args, outputs)
    result["fit"] = args.fit
    if args.plot:
        from thqa.analysis.plots import scatter_plot  # late: loads matplotlib

        scatter_plot(pred_arr, mos_arr, args.plot, fit=args.fit)
        print(f"thqa evaluate: plot written to {args.plot}", file=sys.stderr)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(_metrics_table(result) + _coverage_table(result.get("interval_coverage")))
    return EXIT_FAILURES if result.get("n_failed") else EXIT_OK


def _evaluate_files(args) -> tuple:
    """--predictions against --labels, matched by path: ``(metrics, predictions, mos)``."""
    from thqa.analysis import metrics as M  # late: loads scipy

    if not args.labels:
        raise_usage("--predictions needs --labels")
    preds = M.read_predictions(args.predictions, by_path=True)  # genA/x.mp4 and genB/x.mp4 stay apart
    labels = M.read_labels(args.labels, by_path=True)
    names, p, mos, report = M.match_predictions(preds, labels)
    if report.unmatched_predictions or report.unmatched_labels:
        print(f"thqa evaluate: {report.summary()}", file=sys.stderr)
    result = M.evaluate(p, mos, fit=args.fit)
    result.update({"n_unmatched_predictions": len(report.unmatched_predictions), "n_unmatched_labels": len(report.unmatched_labels)})
    return result, p, mos


def _evaluate_checkpoint(args, outputs: list[tuple[str, str | None]]) -> tuple:
    """--checkpoint on MANIFEST's videos (features from --cache-dir): ``(metrics, predictions, mos)``."""
    from thqa.models.checkpoint import load_checkpoint, weights_for  # late: loads torch
    from thqa.training.experiment import evaluate_checkpoint  # late: loads torch

    if not (args.checkpoint and args.manifest and args.cache_dir):
        raise_usage("give --predictions P --labels L, or --checkpoint CK MANIFEST --cache-dir DIR")
    m = load_manifest(args.manifest, args, require_mos=True)
    guard_outputs(args, outputs, [("", s.path) for s in m.samples], lock=False)
    # the backbones the checkpoint was trained on, unless the options say otherwise (then they must agree)
    weights, note = weights_for(
        load_checkpoint(args.checkpoint), random_init=args.random_init, seed=args.seed, swin_weights=args.swin_weights,
        slowfast_weights=args.slowfast_weights, offline=True if args.offline else None,
    )
    if note and not args.quiet:
        print(f"evaluate: backbones: {printable(note)}", file=sys.stderr)
    ev = evaluate_checkpoint(
        args.checkpoint, m.samples, cache_dir=args.cache_dir, weights=weights, device=args.device, fit=args.fit,
        backbone_batch_size=args.batch_size, workers=args.workers, progress=not args.quiet, precision=args.precision,
    )
    if not args.quiet:
        print(f"evaluate: {provenance(load_checkpoint(args.checkpoint))}", file=sys.stderr)
    result = dict(ev.metrics)
    result["n_failed"] = ev.extraction.failed
    for p, _, msg in ev.extraction.failures:
        print(f"thqa evaluate: not evaluated: {msg}", file=sys.stderr)
    if ev.coverage is not None:
        result["interval_coverage"] = ev.coverage
        _warn_own_calibration(args.checkpoint, ev.paths, result)
    if args.output:
        _write_predictions(Path(args.output), ev)
    return result, ev.predictions, ev.mos


def _write_predictions(path: Path, ev) -> None:
    """--output: one row per video evaluated (path, prediction, mos)."""
    from thqa.scoring.columns import csv_cell  # late: start-up time --help need not pay
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "prediction", "mos"])
    for p, pr, mo in zip(ev.paths, ev.predictions, ev.mos):
        w.writerow([csv_cell(path_text(p)), f"{pr:.6f}", f"{mo:.4f}"])
    write_atomic(path, buf.getvalue())


def _metrics_table(metrics: dict) -> str:
    """The metrics as a two-column text table."""
    rows = [("SRCC", "srcc"), ("PLCC", "plcc"), ("KRCC", "krcc"), ("RMSE", "rmse"), ("main score", "main_score")]
    lines = [f"{'metric':<12}{'value':>8}"]
    lines += [f"{label:<12}{metrics[key]:>8.4f}" for label, key in rows]
    lines.append(f"{'n':<12}{int(metrics['n']):>8d}")
    return "\n".join(lines) + "\n"


def _warn_own_calibration(checkpoint, paths, result: dict) -> None:
    """Warn when the videos evaluated include the checkpoint's own calibration videos: coverage measured on them
    says nothing about new videos."""
    from thqa.analysis.conformal import Calibration, calibration_overlap  # late: loads numpy
    from thqa.models.checkpoint import load_checkpoint  # late: loads torch

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
