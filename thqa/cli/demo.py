"""``thqa demo``: the whole library offline: self-made talking heads, degradations, cache, training, report.

Library modules are imported inside the function that runs the command: ``thqa --help`` must not load them.
"""
from __future__ import annotations

import sys
from pathlib import Path

from thqa.cli.options import EXIT_FAILURES, EXIT_OK, MAX_CLIPS, add_weights_args, int_in, setup_threads
from thqa.utils.choices import AUTO_PRECISION, PRECISION_CHOICES


def add_parser(sub) -> None:
    """`thqa demo`: its options and help."""
    p = sub.add_parser(
        "demo", help="the whole library offline: self-made talking heads, degradations, cache, training, report",
        description="Run everything on one machine with no data set: draw and voice talking heads, degrade them with a "
        "pseudo-MOS rule, extract, train, test on held-out heads, and write a report with the commands to go on.",
    )
    p.add_argument("--out", default="thqa-demo", metavar="DIR", help="output directory (default ./thqa-demo; never silently overwritten)")
    p.add_argument("--source", nargs="+", metavar="FILE", help="build the corpus from your talking-head files instead of self-made ones")
    p.add_argument("--heads", type=int_in(1, 1000), default=None, help="number of self-made talking heads (default 8)")
    p.add_argument("--clips", type=int_in(1, MAX_CLIPS), default=None, help="clips per video (default 2, to fit a CPU)")
    p.add_argument("--epochs", type=int_in(1, 100000), default=None, help="training epochs (default 40)")
    p.add_argument("--tiny", action="store_true", help="the smallest demo (5 heads, 4 degradations, 1 clip): a few minutes on 2 cores")
    p.add_argument("--overwrite", action="store_true", help="reuse an existing, non-empty output directory")
    add_weights_args(p)
    p.add_argument("--precision", choices=list(PRECISION_CHOICES), default="auto", help="backbones' precision (default auto: " + AUTO_PRECISION + ")")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the demo (thqa.synthetic.demo.run_demo) and say its held-out scores and where its report is."""
    from thqa.synthetic.demo import DemoConfig, run_demo  # late: the demo's modules cost start-up time --help need not pay
    from thqa.utils.atomic import check_writable  # late: start-up time

    setup_threads(args)
    check_writable(args.out, "--out", folder=True)
    cfg = DemoConfig(
        out=Path(args.out),
        sources=args.source or (),
        seed=DemoConfig.seed if args.seed is None else args.seed,
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
