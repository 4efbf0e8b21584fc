"""``thqa compare``: rank groups of videos (generators) by their scores, with confidence intervals and significance
tests, and with labels how well the predictions rank the groups.

Library modules are imported inside the functions that run the command: ``thqa --help`` must not load them.
"""
from __future__ import annotations

import sys
from pathlib import Path

from thqa.cli.options import EXIT_OK, MAX_RESAMPLES, MAX_SEED, int_in
from thqa.cli.outputs import check_plot_output, guard_outputs, write_atomic


def add_parser(sub) -> None:
    """`thqa compare`: its options and help."""
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
    p.add_argument("--n-boot", type=int_in(100, MAX_RESAMPLES), default=2000, help=f"bootstrap resamples (default 2000; 100 to {MAX_RESAMPLES:,})")
    p.add_argument("--n-perm", type=int_in(100, MAX_RESAMPLES), default=None, help="random permutations per test (default: enough for Holm's threshold over all pairs)")
    p.add_argument("--ci", type=float, default=0.95, help="confidence level (default 0.95); pairs are significant when Holm's p < 1 - CI")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="random seed (default 0; 0 to 2^32-1)")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    p.add_argument("--output", "-o", metavar="OUT", help="write the table (or JSON: --json or a .json name) to OUT")
    p.add_argument("--plot", metavar="PNG", help="plot each group's mean and CI (predictions, and labels beside them) and each pair's difference with its CI")
    p.set_defaults(func=run)


def run(args) -> int:
    """The comparison as a table (or JSON) on stdout or --output; --plot the groups' means and the pairs' differences."""
    from thqa.analysis.comparison import compare, plot_comparison  # late: loads scipy and matplotlib

    guard_outputs(args, [("--output", args.output), ("--plot", args.plot)], [("--predictions", args.predictions), ("--labels", args.labels)])
    if args.plot:
        check_plot_output(args.plot)
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
        write_atomic(Path(args.output), text)
        print(f"thqa compare: {len(res.groups)} groups, {len(res.pairs)} pairs -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _source_fn(kind: str | None):
    """The function giving a THQA-NTIRE name's source (or portrait) key for --source-key/--cluster, or None."""
    from thqa.data.manifest import thqa_ntire_group, thqa_ntire_source  # late: loads numpy

    return {None: None, "thqa-ntire": thqa_ntire_source, "thqa-ntire-portrait": thqa_ntire_group}[kind]


def _print_left_out(res) -> None:
    """On stderr: the videos left unmatched or without a group, source or cluster key (a few named)."""
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
