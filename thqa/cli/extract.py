"""``thqa extract`` (features of a manifest's videos into the feature cache) and ``thqa cache prune``.

Library modules are imported inside the functions that run the commands: ``thqa --help`` must not load torch
(tests/features/test_startup.py).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from thqa.cli.options import (
    CACHE_DIR_HELP,
    EXIT_FAILURES,
    EXIT_OK,
    UsageError,
    add_engine_args,
    add_manifest_args,
    add_recipe_args,
    add_weights_args,
    load_manifest,
    ray_options,
    recipe_plan,
    say_plan,
    setup_threads,
    weights_options,
)
from thqa.cli.outputs import check_file_output, guard_outputs, lock, progress, write_atomic
from thqa.errors import ConfigError


def add_parser(sub) -> None:
    """`thqa extract` and `thqa cache prune`: their options and help."""
    p = sub.add_parser(
        "extract", help="extract the features of a manifest's videos into the feature cache",
        description="Compute the backbone and audio features of every video a manifest lists, once, into a feature cache that "
        "train and evaluate read; entries already there are reused, and the run says why any were not.",
    )
    p.add_argument("manifest", metavar="MANIFEST", help="CSV with a path/video column (MOS optional)")
    p.add_argument("--cache-dir", required=True, metavar="DIR", help=CACHE_DIR_HELP)
    add_manifest_args(p)
    p.add_argument("--no-frames", action="store_true", help="do not store first frames (only needed for fine-tuning: --recipe winner, --finetune-spatial)")
    p.add_argument("--failures", metavar="CSV", help="the list failed files are added to, each row naming its run (default DIR/failures.csv; never deleted)")
    p.add_argument("--summary-json", metavar="FILE", help="also write the run's summary as JSON")
    add_recipe_args(p, training=False)
    add_weights_args(p)
    add_engine_args(p)
    p.set_defaults(func=run)

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
    q.set_defaults(func=run_prune)


def run(args) -> int:
    """Extract what the cache lacks; say what was done, reused and failed, and why any entry was not reused."""
    from thqa.data.cache import FeatureCache  # late: loads numpy
    from thqa.data.extract import run_id  # late: loads numpy
    from thqa.features.settings import ExtractionSettings  # late: loads numpy

    setup_threads(args)
    this_run = run_id()
    failures, m = _extract_outputs(args)
    cache = FeatureCache(args.cache_dir)
    plan = recipe_plan(args, training=False)
    if args.recipe or plan.settings.to_dict() != ExtractionSettings(n_clips=plan.settings.n_clips).to_dict() or plan.precision != "auto":
        say_plan(plan, "extract")
    paths = [str(s.path) for s in m.samples]
    summary, random_init, infos, precision = (_extract_ray if args.engine == "ray" else _extract_here)(args, paths, cache, plan)
    if summary.failures:
        failures = _add_failures(failures, summary.failures, this_run)
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
    _say_not_reused(args, summary)
    if args.summary_json:
        write_atomic(Path(args.summary_json), json.dumps({**summary.to_dict(), "cache_bytes": size, "backbones": infos}, indent=2) + "\n")
    return EXIT_OK if summary.failed == 0 else EXIT_FAILURES


def _extract_here(args, paths: list[str], cache, plan) -> tuple:
    """Extraction on this machine: ``(summary, random_init, backbone infos, precision)``. Where the backbones'
    identity and precision are known without torch (remembered digests: :mod:`thqa.features.identity`), the
    extractor is built only when some entry is missing: a run whose every entry is cached imports no torch."""
    from thqa.data.extract import DeferredExtractor, extract_files  # late: loads numpy
    from thqa.features.identity import known_infos  # late: reads the remembered digests
    from thqa.features.settings import known_precision  # late: loads the audio settings

    weights = weights_options(args)
    precision = known_precision(args.device, plan.precision)
    infos = known_infos(weights, precision) if precision is not None else None
    if infos is None:
        ex = _extractor(args, plan, weights)
        infos, precision = ex.backbones.infos, ex.backbones.precision
    else:
        ex = DeferredExtractor(plan.settings, infos, lambda: _extractor(args, plan, weights))
    summary = extract_files(paths, cache, ex, frames=not args.no_frames, progress=not args.quiet)
    return summary, any(i.get("source") == "random-init" for i in infos.values()), infos, precision


def _extractor(args, plan, weights):
    """The FeatureExtractor of ``thqa extract``: lazy backbones (where the weights' digests are remembered,
    thqa.features.digests, the keys need no model, and a run whose every entry is cached builds and hashes none)."""
    from thqa.features.pipeline import Backbones, FeatureExtractor  # late: loads torch

    bb = Backbones(weights, device=args.device, batch_size=args.batch_size, start_workers=str(args.workers) != "0",
                   precision=plan.precision, lazy=True)
    return FeatureExtractor(plan.settings, backbones=bb, workers=args.workers)


def _extract_ray(args, paths: list[str], cache, plan) -> tuple:
    """Extraction on a Ray cluster (--engine ray): ``(summary, random_init, backbone infos, precision)``."""
    from thqa.engines.ray_engine import extract_with_ray  # late: loads numpy (and Ray when it runs)

    opts = ray_options(args)
    with progress(len(paths), "extracting", enabled=not args.quiet) as bar:
        summary = extract_with_ray(
            paths, args.cache_dir, plan.settings, weights_options(args), frames=not args.no_frames,
            device=args.device, batch_size=args.batch_size, options=opts, progress=bar.update, precision=plan.precision,
        )
    return summary, bool(args.random_init), {}, (summary.pipeline or {}).get("precision", plan.precision)


def _say_not_reused(args, summary) -> None:
    """Why cached entries were not reused: made by another version of the extraction, or under other settings."""
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


def _extract_outputs(args):
    """Before any work: --failures and --summary-json checked against the manifest and its videos (the summary locked
    for the run, the failure list when rows are added to it); ``(failure list path, manifest)``."""
    failures = Path(args.failures) if args.failures else Path(args.cache_dir) / "failures.csv"
    _check_failures_path(failures)
    outputs = [("--failures", str(failures)), ("--summary-json", args.summary_json)]
    guard_outputs(args, outputs, [("MANIFEST", args.manifest)], lock=False)
    if args.summary_json:
        args.resources.enter_context(lock(args.summary_json, "--summary-json"))
    m = load_manifest(args.manifest, args, require_mos=False, check_files=False)
    guard_outputs(args, outputs, [("", s.path) for s in m.samples], lock=False)
    return failures, m


def _is_failure_list(path: Path) -> bool:
    """Whether ``path`` is a regular file that starts like a failure list thqa wrote (so rows may be added to it)."""
    from thqa.data.extract import is_failure_list  # late: loads numpy

    return is_failure_list(path)


def _check_failures_path(path: Path) -> None:
    """--failures may name a new file or a failure list thqa wrote before: never another file of the user's."""
    from thqa.data.extract import FAILURES_COLUMNS  # late: loads numpy

    check_file_output(path, "--failures")
    if os.path.lexists(path) and not _is_failure_list(path):
        raise ConfigError(
            f"--failures {path}: exists and is not a failure list written by thqa (first line {','.join(FAILURES_COLUMNS)!r}); "
            "thqa will not overwrite or delete it: give another path"
        )


def _add_failures(path: Path, failures, run: str) -> Path:
    """This run's failures added to the list (rows naming the run; earlier runs' rows stay); return where they went
    (beside ``path`` when a file that is not a failure list appeared there during the run)."""
    from thqa.data.extract import add_failures  # late: loads numpy

    with lock(path, "--failures", wait=True):
        out = add_failures(path, failures, run=run)
    if out != path:
        print(f"thqa extract: {path} is no longer a failure list thqa wrote: left as it is, failures listed in {out}", file=sys.stderr)
    return out


def run_prune(args) -> int:
    """`thqa cache prune`: delete (or with --dry-run list) the entries no current setting can reach."""
    from thqa.data.cache import FeatureCache  # late: loads numpy
    from thqa.data.extract import prune_cache  # late: loads numpy

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
