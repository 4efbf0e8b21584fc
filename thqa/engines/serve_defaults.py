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
