"""The `thqa` command: score, extract, train, evaluate, demo.

The CLI owns the output: results on stdout (or --output), progress bars and messages on stderr.
Exit codes: 0 success; 1 some files failed (the others were processed); 2 bad usage or a setup error
(no model, missing weights, a checkpoint that does not fit).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from thqa import __version__
from thqa.errors import THQAError

log = logging.getLogger("thqa")

EXIT_OK, EXIT_FAILURES, EXIT_SETUP = 0, 1, 2


def _add_weights_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backbone weights and device")
    g.add_argument("--random-init", action="store_true", help="seeded random backbone weights instead of the pretrained ones (testing)")
    g.add_argument("--seed", type=int, default=3407, help="seed of --random-init (default 3407)")
    g.add_argument("--swin-weights", metavar="FILE", help="local Swin-T weights (else $THQA_SWIN_WEIGHTS, the HF cache, a download)")
    g.add_argument(
        "--slowfast-weights", metavar="FILE", help="local SLOWFAST_8x8_R50.pyth (else $THQA_SLOWFAST_WEIGHTS, torch.hub's cache, a download)"
    )
    g.add_argument("--offline", action="store_true", help="never try the network for weights (also $THQA_OFFLINE=1)")
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--batch-size", type=int, default=8, help="clips per backbone forward pass (default 8)")
    g.add_argument("--workers", type=int, default=0, help="decoding worker processes (default 0: in the main process)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _weights_options(args):
    from thqa.weights import WeightsOptions

    return WeightsOptions(
        random_init=args.random_init,
        seed=args.seed,
        swin_weights=args.swin_weights,
        slowfast_weights=args.slowfast_weights,
        offline=True if args.offline else None,
    )


def _setup_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(max(1, args.threads))


def _progress(total: int, desc: str, enabled: bool | None = None):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, disable=(total <= 1) if enabled is None else not enabled, dynamic_ncols=True)


# -- score -------------------------------------------------------------------------------------------------------
def _score(args) -> int:
    from thqa.scorer import Scorer

    _setup_threads(args)
    if args.checkpoint is None and not args.random_init:
        from thqa.scorer import NO_MODEL_MESSAGE

        print(f"thqa score: {NO_MODEL_MESSAGE}", file=sys.stderr)
        return EXIT_SETUP
    scorer = Scorer(
        args.checkpoint,
        device=args.device,
        random_init=args.random_init,
        seed=args.seed,
        swin_weights=args.swin_weights,
        slowfast_weights=args.slowfast_weights,
        offline=True if args.offline else None,
        batch_size=args.batch_size,
        workers=args.workers,
    )
    fmt = _output_format(args.output, args.format)
    results = []
    failed = 0
    with _progress(len(args.files), "scoring") as bar:
        for r in scorer.iter_score(args.files):
            results.append(r)
            if r.error:
                failed += 1
                print(f"thqa score: {r.error}", file=sys.stderr)
            bar.update(1)
    text = _format_scores(results, fmt)
    if args.output:
        _write_atomic(Path(args.output), text)
        print(f"thqa score: {len(results) - failed} scored, {failed} failed -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK if failed == 0 else EXIT_FAILURES


def _output_format(output: str | None, fmt: str | None) -> str:
    if fmt:
        return fmt
    if output and output.lower().endswith(".json"):
        return "json"
    return "csv"


def _format_scores(results, fmt: str) -> str:
    if fmt == "json":
        rows = [
            {
                "path": r.path,
                "mos": r.mos,
                "clip_scores": r.clip_scores,
                "error": r.error,
                "seconds": r.seconds,
                "weights": r.weights,
                "untrained": r.untrained,
                "warnings": r.warnings,
            }
            for r in results
        ]
        return json.dumps(rows, indent=2) + "\n"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "mos", "clip_scores", "error", "weights", "untrained"])
    for r in results:
        w.writerow(
            [
                r.path,
                "" if r.mos is None else f"{r.mos:.6f}",
                "" if r.clip_scores is None else " ".join(f"{c:.6f}" for c in r.clip_scores),
                r.error or "",
                r.weights,
                str(r.untrained).lower(),
            ]
        )
    return buf.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- parser --------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thqa", description="Quality (MOS) of talking-head videos, pictures and sound together.")
    parser.add_argument("--version", action="version", version=f"thqa {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log messages on stderr (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("score", help="predict the MOS of video files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--checkpoint", "-c", metavar="CK", help="a fusion checkpoint from `thqa train` (.safetensors)")
    p.add_argument("--output", "-o", metavar="OUT", help="write results to OUT (.csv or .json) instead of stdout")
    p.add_argument("--format", choices=["csv", "json"], help="output format (default: from --output's suffix, else csv)")
    _add_weights_args(p)
    p.set_defaults(func=_score)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="thqa: %(levelname)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_SETUP
    try:
        return int(args.func(args) or 0)
    except THQAError as exc:
        print(f"thqa {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print(f"thqa {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
