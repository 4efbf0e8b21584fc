"""``thqa sync``: each file's audio/video offset from its mouth motion and its speech, and an in-sync verdict.

Library modules are imported inside the functions that run the command: ``thqa --help`` must not load them.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
from pathlib import Path

from thqa.cli.options import EXIT_FAILURES, EXIT_OK, SYNC_WINDOW_HELP, float_in, raise_usage, sync_window_arg
from thqa.cli.outputs import check_plot_dir, guard_outputs, output_format, path_text, plot_name, progress, write_atomic

from thqa.errors import THQAError

log = logging.getLogger("thqa")

#: the columns of `thqa sync`'s CSV
SYNC_COLUMNS = ("path", "offset_ms", "in_sync", "confidence", "reliable", "range_ms", "seconds_used", "fps", "repeated_frames", "mouth_region", "note", "error")


def add_parser(sub) -> None:
    """`thqa sync`: its options and help."""
    p = sub.add_parser(
        "sync", help="audio/video offset of talking heads (lip sync), from the files alone: no trained network",
        description="Measure each file's audio/video offset from its mouth motion and its speech (offset_ms > 0: the sound "
        "comes later than the lips) and say whether it is in sync (in_sync, ITU-R BT.1359's window unless --sync-window).",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="talking-head video files with sound")
    p.add_argument("--json", action="store_true", help="a JSON list on stdout, one object per file (with the agreement curve)")
    p.add_argument("--output", "-o", metavar="OUT", help="write results to OUT (.csv or .json) instead of stdout")
    p.add_argument("--max-offset", type=float_in(0.0, math.inf, open_low=True), default=1000.0, metavar="MS",
                   help="search -MS..+MS (default 1000)")
    p.add_argument("--sync-window", type=sync_window_arg, default=None, metavar="LEAD,LAG", help=SYNC_WINDOW_HELP)
    p.add_argument("--no-curve", action="store_true", help="leave the agreement curve out of the JSON")
    p.add_argument(
        "--locator",
        choices=("face", "frame"),
        default="face",
        help="how the mouth is found: 'face' (default: dlib's face detector, a file without a face is an error) or 'frame' (the whole picture, no detector)",
    )
    p.add_argument("--plot", metavar="DIR", help="write DIR/<file>.sync.png per file: the agreement at every candidate offset and per second")
    p.set_defaults(func=run)


def run(args) -> int:
    """Measure every file (a failure is a row with its error), then write the table and the plots."""
    from thqa.analysis.sync import IN_SYNC_WINDOW_MS, SyncResult, SyncSettings, estimate_av_offset  # late: loads numpy

    try:
        settings = SyncSettings(max_offset_ms=args.max_offset, locator=args.locator, in_sync_window_ms=args.sync_window or IN_SYNC_WINDOW_MS).validate()
    except THQAError as exc:
        raise_usage(str(exc))
    guard_outputs(args, [("--output", args.output)], [("", f) for f in args.files])
    if args.plot:
        check_plot_dir(args.plot)
    fmt = "json" if args.json else output_format(args.output, None)
    results: list[SyncResult] = []
    with progress(len(args.files), "sync") as bar:
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
    text = _sync_table(results, fmt, curve=not args.no_curve)
    if args.plot:
        _plot_syncs(args.plot, results)
    if args.output:
        write_atomic(Path(args.output), text)
        print(f"thqa sync: {len(results) - failed} measured, {failed} failed -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK if failed == 0 else EXIT_FAILURES


def _sync_table(results, fmt: str, *, curve: bool) -> str:
    """The results as JSON (with the agreement curves unless ``curve`` is false) or CSV (SYNC_COLUMNS)."""
    from thqa.scoring.columns import bool_cell, csv_cell  # late: start-up time --help need not pay
    if fmt == "json":
        return json.dumps([r.to_dict(curve=curve) for r in results], indent=2) + "\n"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SYNC_COLUMNS)
    for r in results:
        region = " ".join(str(v) for v in r.mouth_region) if r.mouth_region else ""
        w.writerow(
            [csv_cell(path_text(r.path)), csv_cell(r.offset_ms), bool_cell(r.in_sync), csv_cell(r.confidence), csv_cell(r.reliable), f"{r.range_ms[0]:g} {r.range_ms[1]:g}", csv_cell(r.seconds_used), csv_cell(r.fps), csv_cell(r.repeated_frames), region, csv_cell(r.note or ""), csv_cell(r.error or "")]
        )
    return buf.getvalue()


def _plot_syncs(folder: str, results) -> None:
    """One ``<stem>.sync.png`` per file with an agreement curve (numbered when two files share a stem)."""
    from thqa.analysis.plots import sync_plot  # late: loads matplotlib

    paths = [r.path for r in results]
    for i, r in enumerate(results):
        if not r.curve:
            print(f"thqa sync: no plot for {r.path} (no agreement curve)", file=sys.stderr)
            continue
        log.info("sync plot of %s -> %s", r.path, sync_plot(r, Path(folder) / plot_name(paths, i, "sync")))
