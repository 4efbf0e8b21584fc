"""``thqa train``: train the fusion model on a manifest's videos and MOS (extracting whatever the cache lacks).

Library modules are imported inside the functions that run the command: ``thqa --help`` must not load torch
(tests/features/test_startup.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

from thqa.cli.options import (
    CACHE_DIR_HELP,
    EXIT_FAILURES,
    EXIT_OK,
    GROUP_CHOICES,
    add_manifest_args,
    add_recipe_args,
    add_weights_args,
    float_in,
    load_manifest,
    recipe_plan,
    say_plan,
    setup_threads,
    weights_options,
)


def add_parser(sub) -> None:
    """`thqa train`: its options and help."""
    p = sub.add_parser(
        "train", help="train the fusion model on cached features",
        description="Train the fusion model on a manifest's videos and MOS (extracting whatever the cache lacks); writes "
        "RUN/best.safetensors, the checkpoint of the best validation epoch, and the run's metrics and config.",
    )
    p.add_argument("manifest", metavar="MANIFEST", help="CSV with path and MOS columns (optional group, split)")
    p.add_argument("--cache-dir", required=True, metavar="DIR", help=CACHE_DIR_HELP)
    p.add_argument("--out", required=True, metavar="RUN", help="run directory (an existing run with the same config resumes)")
    add_manifest_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--val", metavar="MANIFEST", help="validation manifest")
    p.add_argument("--val-video-root", metavar="DIR", help="folder the --val manifest's paths resolve against (default: --video-root)")
    g.add_argument("--val-fraction", type=float_in(0, 1, open_low=True, open_high=True), default=None, help="hold out this fraction of content groups (default 0.2)")
    p.add_argument("--groups", choices=list(GROUP_CHOICES), default="auto", help="content groups for the split when the manifest has no group column; prediction intervals are calibrated one residual per validation group (file: per video)")
    p.add_argument(
        "--calibration-fraction", type=float_in(0, 1, open_high=True), default=0.0, metavar="F",
        help="hold this fraction of the validation groups apart from the epoch choice and calibrate the prediction intervals on them "
        "(used when that is at least 9 groups; the checkpoint records which; default 0: the whole validation set does both)",
    )
    add_recipe_args(p, training=True)
    add_weights_args(p, batch_size=False)
    p.set_defaults(func=run, seed=None)  # --seed: the recipe's (3407) unless given


def run(args) -> int:
    """Split the videos into training and validation, train, and say the best epoch and its prediction intervals."""
    from thqa.training.experiment import train_run  # late: loads torch
    from thqa.training.loop import check_run_dir  # late: loads torch

    setup_threads(args)
    plan = recipe_plan(args, training=True)  # bad values and combinations stop here, before any work
    args.seed = plan.config.seed  # the training seed also seeds --random-init and the group split
    check_run_dir(args.out)
    train_s, val_s = _split(args)
    say_plan(plan, "train")
    print(f"train: every value and where it came from (recipe, option, default): {Path(args.out) / 'config.json'}", file=sys.stderr)

    result, summary = train_run(
        train_s,
        val_s,
        recipe=plan,
        cache_dir=args.cache_dir,
        run_dir=args.out,
        weights=weights_options(args),
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


def _split(args) -> tuple[list, list]:
    """``(training samples, validation samples)``: --val, else the manifest's split column, else content groups held
    out at random (seeded); warns when a content group is on both sides."""
    from thqa.data.manifest import samples_for_split, shared_groups, split_by_group  # late: loads numpy

    m = load_manifest(args.manifest, args, require_mos=True)
    samples = list(m.samples)
    if args.val:
        train_s, val_s = samples, list(load_manifest(args.val, args, require_mos=True, video_root=args.val_video_root).samples)
        val_s = _drop_copies(train_s, val_s)
    elif any(s.split for s in samples) and args.val_fraction is None:
        train_s, val_s = samples_for_split(samples, "train"), samples_for_split(samples, "val")
    else:
        train_s, val_s = split_by_group(samples, val_fraction=args.val_fraction or 0.2, seed=args.seed)
    leak = shared_groups(train_s, val_s)
    if leak:
        print(
            f"thqa train: warning: {len(leak)} content group(s) appear in both training and validation "
            f"({', '.join(sorted(leak)[:5])}): validation scores will be optimistic",
            file=sys.stderr,
        )
    print(f"train: {len(train_s)} training and {len(val_s)} validation videos ({len({s.group for s in train_s})} and {len({s.group for s in val_s})} content groups)", file=sys.stderr)
    return train_s, val_s


def _drop_copies(train_s, val_s):
    """Validation videos whose content is also in training (a copy or link under another name) are left out."""
    from thqa.data.manifest import shared_content  # late: loads numpy

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
    from thqa.models.checkpoint import load_checkpoint  # late: loads torch
    from thqa.analysis.conformal import min_calibration_size  # late: loads numpy

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
