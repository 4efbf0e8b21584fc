"""The defaults and limits of ``thqa serve``, in a module without Ray or torch (the CLI's --help and the client read
them)."""
from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 512.0
DEFAULT_MAX_QUEUE = 16
DEFAULT_REQUEST_TIMEOUT = 600.0
#: files scored together at most (Ray Serve batching); a batch also never exceeds a replica's capacity
MAX_BATCH = 8
BATCH_WAIT_S = 0.02
#: the environment variable of the service's token (server and client)
TOKEN_ENV = "THQA_SERVE_TOKEN"
#: with --min-replicas/--max-replicas, the requests a replica holds (scored or waiting) that Ray Serve's autoscaler aims
#: at: one being scored and one waiting; more on average adds a replica, fewer removes one (down to the minimum)
AUTOSCALE_TARGET_ONGOING = 2
#: seconds between a replica's reports of its metrics to the others (what /metrics shows of the other replicas is at
#: most this old); a replica not heard from for METRICS_STALE_S (killed, stopped) leaves /metrics
METRICS_PUSH_S = 2.0
METRICS_STALE_S = 15.0
