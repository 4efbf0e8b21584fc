"""``thqa serve``: a warm scoring service over HTTP (Ray Serve): POST /score, GET /healthz, GET /metrics.

Library modules are imported inside the function that runs the command: ``thqa --help`` must not load torch or Ray.
"""
from __future__ import annotations

import os
import sys

from thqa.cli.options import (
    EXIT_SETUP,
    add_scoring_precision_arg,
    add_weights_args,
    coverage_arg,
    float_in,
    int_in,
    raise_usage,
    setup_threads,
)
from thqa.cli.score import scorer_kwargs
from thqa.engines import serve_defaults as d
from thqa.errors import THQAError


def add_parser(sub) -> None:
    """`thqa serve`: its options and help (defaults from thqa.engines.serve_defaults)."""
    p = sub.add_parser(
        "serve", help="a warm scoring service over HTTP (Ray Serve): POST /score, GET /healthz, GET /metrics",
        description="Keep the backbones and the fusion model warm in Ray Serve replicas and score uploaded files over HTTP, "
        "so one file costs what its work costs; answers are the rows of `thqa score --json` (call it with curl, "
        "thqa.Client or `thqa score --server URL`).",
    )
    p.add_argument("--checkpoint", "-c", metavar="CK", help="a fusion checkpoint from `thqa train` (.safetensors)")
    p.add_argument("--host", default=d.DEFAULT_HOST, help=f"address to listen on (default {d.DEFAULT_HOST}; any other needs --token)")
    p.add_argument("--port", type=int_in(1, 65535), default=d.DEFAULT_PORT, help=f"HTTP port (default {d.DEFAULT_PORT})")
    p.add_argument("--address", metavar="ADDR", help="join a Ray cluster (auto, HOST:PORT, ray://HOST:10001); default: a local Ray instance")
    p.add_argument("--replicas", type=int_in(1, 1024), default=None, help="scoring replicas, each with its own warm models (default 1)")
    p.add_argument("--min-replicas", type=int_in(0, 1024), default=None, metavar="N",
                   help="with --max-replicas: let Ray Serve add and remove replicas as the load asks, keeping at least N (default 1; 0: none while idle)")
    p.add_argument("--max-replicas", type=int_in(1, 1024), default=None, metavar="N", help="autoscale up to N replicas (instead of a fixed --replicas)")
    p.add_argument("--max-upload-mb", type=float_in(0, 1e6, open_low=True), default=d.DEFAULT_MAX_UPLOAD_MB, help=f"larger uploads are refused, 413 (default {d.DEFAULT_MAX_UPLOAD_MB:g})")
    p.add_argument("--max-queue", type=int_in(0, 100000), default=d.DEFAULT_MAX_QUEUE, help=f"requests waiting per replica; more are refused, 503 (default {d.DEFAULT_MAX_QUEUE})")
    p.add_argument("--request-timeout", type=float_in(0, 1e6, open_low=True), default=d.DEFAULT_REQUEST_TIMEOUT, metavar="S", help=f"answer 504 after S seconds (default {d.DEFAULT_REQUEST_TIMEOUT:g})")
    p.add_argument("--token", help=f"require 'Authorization: Bearer TOKEN' (also ${d.TOKEN_ENV})")
    p.add_argument("--allow-paths", metavar="DIR", help="also score files named by ?path= when they resolve inside DIR")
    p.add_argument("--coverage", type=coverage_arg, default=0.9, help="default coverage of the prediction interval (default 0.9)")
    add_weights_args(p)
    add_scoring_precision_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Serve until stopped (thqa.engines.serve.run_service); a model is needed: --checkpoint or --random-init."""
    if args.checkpoint is None and not args.random_init:
        from thqa.scoring.scorer import NO_MODEL_MESSAGE  # late: loads torch

        print(f"thqa serve: {NO_MODEL_MESSAGE}", file=sys.stderr)
        return EXIT_SETUP
    from thqa.engines.serve import ServeConfig, check_bind, replica_options, run_service  # late: loads torch and Ray Serve

    scaling = {"replicas": args.replicas, "min_replicas": args.min_replicas, "max_replicas": args.max_replicas}
    try:
        replica_options(**scaling)
    except THQAError as exc:
        raise_usage(str(exc))

    token = args.token or os.environ.get(d.TOKEN_ENV) or None
    check_bind(args.host, token)
    setup_threads(args)
    cfg = ServeConfig(
        checkpoint=args.checkpoint, scorer_kwargs=scorer_kwargs(args), max_upload_mb=args.max_upload_mb, max_queue=args.max_queue,
        request_timeout=args.request_timeout, token=token, allow_paths=args.allow_paths, threads=args.threads,
    ).check()
    say = (lambda url: None) if args.quiet else (lambda url: print(f"thqa serve: ready on {url} (POST /score, GET /healthz, GET /metrics)", file=sys.stderr))
    return run_service(cfg, host=args.host, port=args.port, address=args.address, ready=say, **scaling)
