"""``thqa serve``: a warm scoring service on Ray Serve, so one file costs what its work costs.

One Serve deployment (:class:`ScoringService`) holds a warm :class:`thqa.Scorer` per replica and answers HTTP:

    POST /score     a video (multipart field ``file``, or the raw body), or ``?path=`` under ``--allow-paths DIR``;
                    query options ``timeline``, ``sync``, ``coverage``. The answer is the row ``thqa score --json``
                    writes (:mod:`thqa.scoring.columns`), plus ``timings``.
    GET  /healthz   200 with the model's description once the models are built (the replica exists only then)
    GET  /metrics   Prometheus text of every replica of the application, each series labelled ``replica``: requests
                    by outcome, latency, queue depth, batch sizes (this replica's as they are, the others' as they
                    were at most 2 x :data:`~thqa.engines.serve_defaults.METRICS_PUSH_S` ago: replicas exchange them
                    in the background through a small named Ray actor, so /metrics never waits on another process)

Concurrent requests are scored together (Ray Serve's request batching, :data:`MAX_BATCH` files at most); the
backbones run in one thread per replica, so a file's score is the local scorer's whatever the batch. Every refusal is
a JSON ``{"error": one line, "error_type": ...}`` with its status: 401 token, 403 path outside ``--allow-paths``,
404/405 route, 413 upload too large, 422 not a usable video, 503 queue full (Retry-After), 504 over
``--request-timeout``. Replicas are ``--replicas N`` (fixed) or between ``--min-replicas`` and ``--max-replicas``
(Ray Serve's autoscaling: :func:`replica_options`). Uploads are written to a private folder (0700) and deleted when
their request is answered (a request answered 504 keeps its file until its work ends).
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

import ray
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
import torch

from thqa import errors as thqa_errors
from thqa.analysis.conformal import check_coverage
from thqa.errors import ConfigError, MediaError, MediaFileNotFoundError, brief
from thqa.scoring.columns import score_columns
from thqa.scoring.scorer import Scorer, with_interval
from thqa.engines.serve_defaults import (
    AUTOSCALE_TARGET_ONGOING, BATCH_WAIT_S, DEFAULT_HOST, DEFAULT_MAX_QUEUE, DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT, DEFAULT_REQUEST_TIMEOUT,
    MAX_BATCH, METRICS_PUSH_S, METRICS_STALE_S, TOKEN_ENV,
)

__all__ = ["ServeConfig", "ScoringService", "build_app", "run_service", "replica_options", "merged_metrics", "MetricsHub", "TOKEN_ENV"]

log = logging.getLogger(__name__)

#: room for multipart headers and boundaries above --max-upload-mb
_MULTIPART_SLACK = 64 * 1024
_UPLOADS = "thqa-uploads-"
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class ServeConfig:
    """What every replica needs (pickled to the replicas)."""

    checkpoint: str | None = None
    scorer_kwargs: dict = field(default_factory=dict)  #: Scorer keyword arguments (random_init, device, precision, ...)
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_queue: int = DEFAULT_MAX_QUEUE  #: requests waiting per replica beside the one being scored
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT  #: seconds from arrival to answer
    token: str | None = None
    allow_paths: str | None = None  #: ?path= is served only for files under this folder
    upload_dir: str | None = None  #: parent of each replica's private upload folder (default: the system's temp)
    stop_file: str | None = None  #: once this file exists, new /score requests are refused (503): the service is stopping
    threads: int | None = None  #: torch CPU threads of each replica (default: what Ray gives the replica's process)

    @property
    def capacity(self) -> int:
        """Requests a replica holds at once (scored or waiting); more are answered 503."""
        return self.max_queue + 1

    def check(self) -> "ServeConfig":
        if self.max_upload_mb <= 0 or self.max_queue < 0 or self.request_timeout <= 0:
            raise ConfigError("--max-upload-mb and --request-timeout must be > 0, --max-queue >= 0")
        if self.allow_paths is not None and not Path(self.allow_paths).is_dir():
            raise ConfigError(f"--allow-paths {self.allow_paths}: not a folder")
        return self


class HTTPError(Exception):
    """A refusal: its status, the one-line message and the error type of the JSON answer."""

    def __init__(self, status: int, message: str, error_type: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.error_type, self.headers = status, error_type, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": str(self), "error_type": self.error_type}, status_code=self.status, headers=self.headers)


@dataclass
class _Job:
    path: str
    timeline: bool = False
    sync: bool = False


def score_row(result, *, timeline: bool = False, sync: bool = False) -> dict:
    """The JSON row ``thqa score --json`` writes for ``result`` (:mod:`thqa.scoring.columns`)."""
    return score_columns(timeline=timeline, sync=sync).json_row(result)


def _flag(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("", "0", "false", "no"):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise HTTPError(400, f"?{name}={value}: expected true or false", "ConfigError")


def _multipart_file(body: bytes, content_type: str) -> tuple[bytes, str | None]:
    """``(data, filename)`` of the form field ``file`` of a multipart/form-data body."""
    m = Message()
    m["content-type"] = content_type
    boundary = m.get_param("boundary")
    if not boundary:
        raise HTTPError(400, "multipart upload without a boundary", "ConfigError")
    for part in body.split(b"--" + str(boundary).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        h = Message()
        for line in head.decode("utf-8", "replace").strip().splitlines():
            key, _, value = line.partition(":")
            h[key.strip()] = value.strip()
        if h.get_param("name", header="content-disposition") == "file":
            name = h.get_filename()
            return (data[:-2] if data.endswith(b"\r\n") else data), (os.path.basename(name) if name else None)
    raise HTTPError(400, "multipart upload without a 'file' field", "ConfigError")


def _status_of(error_type: str | None) -> int:
    cls = getattr(thqa_errors, error_type or "", None)
    usable = isinstance(cls, type) and issubclass(cls, (MediaError, MediaFileNotFoundError))
    return 422 if usable else 500


class ScoringService:
    """The Serve deployment: one warm :class:`thqa.Scorer` per replica (see the module's docstring)."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.scorer = Scorer(cfg.checkpoint, workers=0, **cfg.scorer_kwargs)
        parent = cfg.upload_dir if cfg.upload_dir and os.path.isdir(cfg.upload_dir) else None
        self.upload_dir = tempfile.mkdtemp(prefix=f"{_UPLOADS}{os.getpid()}-", dir=parent)  # mode 0700
        _remove_orphans(os.path.dirname(self.upload_dir))
        self.allow = os.path.realpath(cfg.allow_paths) if cfg.allow_paths else None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="thqa-score")  # the backbones: one thread
        self.active = 0
        # while this replica holds requests, a marker beside the stop file tells a stopping `thqa serve` to wait
        stop_dir = os.path.dirname(cfg.stop_file) if cfg.stop_file else None
        self.busy_file = os.path.join(stop_dir, f"busy-{uuid.uuid4().hex}") if stop_dir and os.path.isdir(stop_dir) else None
        self.latency_ema = 1.0
        self._metrics()
        self.shared = _SharedMetrics(self.registry)
        self._batched.set_max_batch_size(max(1, min(MAX_BATCH, cfg.capacity)))
        log.info("thqa serve: replica ready (uploads in %s)", self.upload_dir)

    def _metrics(self) -> None:
        self.registry = r = CollectorRegistry()
        self.m_requests = Counter("thqa_requests", "requests answered, by route and outcome", ["route", "outcome"], registry=r)
        self.m_latency = Histogram("thqa_request_seconds", "latency of answered /score requests", registry=r,
                                   buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600, math.inf))
        self.m_queue = Gauge("thqa_queue_depth", "/score requests held by this replica (scored or waiting)", registry=r)
        self.m_batch = Histogram("thqa_batch_size", "files per scoring batch", registry=r, buckets=tuple(range(1, MAX_BATCH + 1)))

    def info(self) -> dict:
        s = self.scorer
        return {"status": "ready", "weights": s.weights_label, "untrained": s.untrained, "precision": s.backbones.precision,
                "model": s.model_digest, "recipe": s.recipe, "checkpoint": self.cfg.checkpoint, "coverage": s.coverage}

    async def __call__(self, request: Request) -> Response:
        route = request.url.path[len(request.scope.get("root_path", "")):] or "/"
        start, outcome = time.perf_counter(), "ok"
        try:
            if route == "/healthz":
                return JSONResponse(self.info())
            self._check_token(request)
            if route == "/metrics":
                return Response(self.shared.gather(), media_type=CONTENT_TYPE_LATEST)
            if route != "/score":
                raise HTTPError(404, f"{route}: no such route (POST /score, GET /healthz, GET /metrics)", "NotFound")
            if request.method != "POST":
                raise HTTPError(405, f"{request.method} {route}: use POST", "MethodNotAllowed")
            resp = await self._score(request)
            outcome = str(resp.status_code)
            return resp
        except HTTPError as exc:
            outcome = str(exc.status)
            return exc.response()
        except Exception as exc:  # noqa: BLE001 - every answer is a JSON row or a JSON error, never a bare 500
            log.exception("thqa serve: %s %s failed", request.method, route)
            outcome = "500"
            return HTTPError(500, f"unexpected {type(exc).__name__}: {brief(exc)} (a thqa bug: please report it)", type(exc).__name__).response()
        finally:
            self.m_requests.labels(route if route in ("/score", "/healthz", "/metrics") else "other", outcome).inc()
            if route == "/score":
                self.m_latency.observe(time.perf_counter() - start)

    def _check_token(self, request: Request) -> None:
        if not self.cfg.token:
            return
        given = request.headers.get("authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), self.cfg.token.encode()):
            raise HTTPError(401, "missing or wrong token (send 'Authorization: Bearer <token>')", "Unauthorized",
                            {"WWW-Authenticate": "Bearer"})

    async def _score(self, request: Request) -> Response:
        if self.cfg.stop_file and os.path.exists(self.cfg.stop_file):
            raise HTTPError(503, "the service is stopping", "Stopping", {"Retry-After": "60", "Connection": "close"})
        if self.active >= self.cfg.capacity:
            retry = max(1, math.ceil(self.latency_ema))
            raise HTTPError(503, f"the queue is full ({self.cfg.max_queue} waiting): try again in {retry} s", "QueueFull",
                            {"Retry-After": str(retry)})
        self._hold(+1)
        start, deadline = time.perf_counter(), time.monotonic() + self.cfg.request_timeout
        fut, upload = None, None
        try:
            q = request.query_params
            job = _Job("", _flag(q.get("timeline"), "timeline"), _flag(q.get("sync"), "sync"))
            coverage = self._coverage(q.get("coverage"))
            job.path, name, upload = await self._timed(self._source(request), deadline)
            fut = asyncio.ensure_future(self._batched(job))
            res = await self._timed(asyncio.shield(fut), deadline)
            return self._answer(res, job, name, upload, coverage, time.perf_counter() - start)
        finally:
            if fut is not None and not fut.done():  # answered 504 (or the client left): the work goes on
                fut.add_done_callback(lambda f: self._release(upload, f))
            else:
                self._release(upload, fut)

    def _hold(self, n: int) -> None:
        self.active += n
        self.m_queue.set(self.active)
        if self.busy_file and self.active == (1 if n > 0 else 0):
            with _suppress_os():
                Path(self.busy_file).touch() if self.active else os.unlink(self.busy_file)

    def _release(self, upload: str | None, fut) -> None:
        if fut is not None and fut.done() and not fut.cancelled():
            fut.exception()  # retrieved: no "never retrieved" warning
        if upload:
            with _suppress_os():
                os.unlink(upload)
        self._hold(-1)

    async def _timed(self, aw, deadline: float):
        try:
            return await asyncio.wait_for(aw, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise HTTPError(504, f"not answered within --request-timeout {self.cfg.request_timeout:g} s", "Timeout") from None

    def _coverage(self, text: str | None) -> float | None:
        if text is None:
            return None
        try:
            return check_coverage(float(text))
        except (ValueError, ConfigError) as exc:
            raise HTTPError(400, f"?coverage={text}: {exc}", "ConfigError") from None

    async def _source(self, request: Request) -> tuple[str, str, str | None]:
        """``(file to score, name to show, upload to delete or None)``."""
        path = request.query_params.get("path")
        if path is not None:
            return self._allowed(path), path, None
        body = await self._body(request)
        ctype = request.headers.get("content-type", "")
        name = request.query_params.get("name")
        if ctype.lower().startswith("multipart/form-data"):
            body, fname = _multipart_file(body, ctype)
            name = name or fname
        if not body:
            raise HTTPError(422, f"{name or 'upload'}: empty upload (send the video as the body or the 'file' field)", "MediaError")
        name = name or "upload"
        dest = os.path.join(self.upload_dir, f"{uuid.uuid4().hex}{Path(name).suffix[:16]}")
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return dest, name, dest

    async def _body(self, request: Request) -> bytes:
        """The request body, refused (413) as soon as it is over the limit, without reading the rest."""
        limit = int(self.cfg.max_upload_mb * 1024 * 1024) + _MULTIPART_SLACK
        too_big = HTTPError(413, f"upload over --max-upload-mb {self.cfg.max_upload_mb:g}", "UploadTooLarge")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise too_big
        return bytes(buf)

    def _allowed(self, path: str) -> str:
        """``path`` (relative: to the allowed folder) when it resolves, symlinks followed, inside ``--allow-paths``."""
        if self.allow is None:
            raise HTTPError(403, "?path= is not served: start the service with --allow-paths DIR", "Forbidden")
        real = os.path.realpath(os.path.join(self.allow, path))
        if os.path.commonpath([real, self.allow]) != self.allow:
            raise HTTPError(403, f"{path}: outside --allow-paths {self.cfg.allow_paths}", "Forbidden")
        return real

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _batched(self, jobs: list[_Job]) -> list:
        self.m_batch.observe(len(jobs))
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._run, jobs)

    def _run(self, jobs: list[_Job]) -> list:
        """One :class:`ScoreResult` per job, in order: plain scores in one pass, explained ones each alone."""
        plain = iter(list(self.scorer.iter_score([j.path for j in jobs if not (j.timeline or j.sync)])))
        return [
            next(self.scorer.iter_explain([j.path], timeline=j.timeline, sync=j.sync)) if j.timeline or j.sync else next(plain)
            for j in jobs
        ]

    def _answer(self, res, job: _Job, name: str, upload: str | None, coverage: float | None, seconds: float) -> Response:
        self.latency_ema = 0.8 * self.latency_ema + 0.2 * seconds
        if upload:  # the user knows the file by its name, not by our temp path
            res.path = name
            res.error = res.error.replace(upload, name) if res.error else None
            res.warnings = [w.replace(upload, name) for w in res.warnings]
        if res.error:
            return JSONResponse({"error": res.error, "error_type": res.error_type, "path": res.path}, status_code=_status_of(res.error_type))
        if coverage is not None:
            with_interval(res, self.scorer.calibration, coverage, self.scorer.interval_note)
        row = score_row(res, timeline=job.timeline, sync=job.sync)
        row["timings"] = {"total_s": round(seconds, 4)}
        return JSONResponse(row)

    def __del__(self) -> None:
        if getattr(self, "shared", None) is not None:
            self.shared.close()
        shutil.rmtree(getattr(self, "upload_dir", ""), ignore_errors=True)


# -- every replica's metrics in /metrics ----------------------------------------------------------------------------
class MetricsHub:
    """The replicas' latest metrics texts, so that /metrics, answered by any one replica, shows them all: a small Ray
    actor per application (``thqa-metrics-APP``, made by the first replica that needs it, made again by the next one
    should it die with its owner). A replica not heard from for :data:`METRICS_STALE_S` is left out."""

    def __init__(self):
        self.latest: dict[str, tuple[float, str]] = {}

    def report(self, replica: str, text: str, max_age: float) -> dict[str, str]:
        """Keep ``replica``'s ``text``; the texts of the other replicas heard from within ``max_age`` seconds."""
        now = time.monotonic()
        self.latest[replica] = (now, text)
        self.latest = {r: (t, txt) for r, (t, txt) in self.latest.items() if now - t <= max_age}
        return {r: txt for r, (_, txt) in self.latest.items() if r != replica}

    def drop(self, replica: str) -> None:
        self.latest.pop(replica, None)


class _Families:
    """A prometheus_client collector of ready metric families."""

    def __init__(self, families: list):
        self.families = families

    def collect(self):
        return iter(self.families)


def merged_metrics(texts: dict[str, str]) -> bytes:
    """One Prometheus exposition of several replicas' metrics (``{replica: its text}``): every series gets the label
    ``replica``, the families of one name are written together."""
    families: dict[str, Metric] = {}
    for replica in sorted(texts):
        for fam in text_string_to_metric_families(texts[replica]):
            merged = families.setdefault(fam.name, Metric(fam.name, fam.documentation, fam.type))
            merged.samples += [s._replace(labels={**s.labels, "replica": replica}) for s in fam.samples]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)


def _replica_identity() -> tuple[str, str | None]:
    """``(this replica's tag, its application's name)``; outside a Serve replica ``("pid-N", None)``."""
    try:
        ctx = serve.get_replica_context()
    except Exception:  # noqa: BLE001 - Serve raises its own exception outside a replica
        return f"pid-{os.getpid()}", None
    return ctx.replica_tag, ctx.app_name


class _SharedMetrics:
    """This replica's metrics, reported to the application's :class:`MetricsHub` every :data:`METRICS_PUSH_S`
    seconds by a daemon thread, which keeps the other replicas' in return for /metrics."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.replica, app = _replica_identity()
        self.name = f"thqa-metrics-{app}" if app else None
        self._hub = None
        self.others: dict[str, str] = {}  #: the other replicas' texts, as the hub last gave them
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if self.name:
            threading.Thread(target=self._report, name="thqa-metrics", daemon=True).start()

    def own(self) -> str:
        return generate_latest(self.registry).decode()

    def hub(self):
        with self._lock:
            if self._hub is None:
                self._hub = ray.remote(MetricsHub).options(name=self.name, get_if_exists=True, num_cpus=0).remote()
            return self._hub

    def _lost(self, exc: BaseException) -> None:
        log.debug("thqa serve: metrics hub %s unreachable (%s); made again on the next report", self.name, brief(exc))
        with self._lock:
            self._hub, self.others = None, {}

    def _report(self) -> None:
        while True:
            try:
                self.others = ray.get(self.hub().report.remote(self.replica, self.own(), METRICS_STALE_S), timeout=METRICS_PUSH_S * 5)
            except Exception as exc:  # noqa: BLE001 - the hub died with its owner, or Ray is stopping
                self._lost(exc)
            if self._stop.wait(METRICS_PUSH_S):
                return

    def gather(self) -> bytes:
        """Every replica's metrics (this one's as they are now), labelled by replica."""
        return merged_metrics({**self.others, self.replica: self.own()})

    def close(self) -> None:
        self._stop.set()
        if self._hub is not None:
            with contextlib.suppress(Exception):  # Ray may be stopping
                self._hub.drop.remote(self.replica)


def _remove_orphans(parent: str) -> None:
    """Delete the upload folders of replicas whose process is gone (killed: no ``__del__`` ran), on this machine."""
    for d in Path(parent).glob(f"{_UPLOADS}*-*"):
        pid = d.name[len(_UPLOADS):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            log.info("thqa serve: removing %s (its replica is gone)", d)
            shutil.rmtree(d, ignore_errors=True)


class _suppress_os:
    def __enter__(self):
        return self

    def __exit__(self, etype, exc, tb) -> bool:
        return etype is not None and issubclass(etype, OSError)


def _wait_idle(root: str, timeout: float, grace: float = 2.0) -> None:
    """Until no replica of this machine holds a request (their busy markers in ``root``), then ``grace`` seconds for
    the last answers to pass the proxy (serve.shutdown() drops the connections it still holds)."""
    deadline = time.monotonic() + timeout
    while any(n.startswith("busy-") for n in os.listdir(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(grace)


def replica_options(replicas: int | None = None, *, min_replicas: int | None = None, max_replicas: int | None = None) -> dict:
    """Ray Serve's deployment options for the replicas: ``replicas`` (default 1) fixed, or, with ``max_replicas`` (and
    ``min_replicas``, default 1; 0 lets the service scale to zero), Serve's autoscaling between the two, aiming at
    :data:`~thqa.engines.serve_defaults.AUTOSCALE_TARGET_ONGOING` requests held per replica.

    Raises:
        ConfigError: a fixed number and bounds together, bounds the wrong way round, or a minimum without a maximum.
    """
    if min_replicas is None and max_replicas is None:
        n = 1 if replicas is None else replicas
        if n < 1:
            raise ConfigError(f"--replicas {n}: must be >= 1")
        return {"num_replicas": n}
    if replicas is not None:
        raise ConfigError("--replicas is a fixed number of replicas, --min-replicas/--max-replicas autoscale: give one or the other")
    if max_replicas is None:
        raise ConfigError(f"--min-replicas {min_replicas}: give --max-replicas too (the most replicas to scale up to)")
    lo = 1 if min_replicas is None else min_replicas
    if lo < 0 or max_replicas < max(1, lo):
        raise ConfigError(f"--min-replicas {lo} --max-replicas {max_replicas}: need 0 <= min <= max and max >= 1")
    return {"autoscaling_config": {"min_replicas": lo, "max_replicas": max_replicas, "target_ongoing_requests": AUTOSCALE_TARGET_ONGOING}}


def build_app(cfg: ServeConfig, *, replicas: int | None = None, min_replicas: int | None = None, max_replicas: int | None = None,
              num_cpus: float = 1.0):
    """The Serve application of ``cfg`` (``serve.run(build_app(cfg))``); replicas as :func:`replica_options` says."""
    dep = serve.deployment(
        ScoringService,
        name="thqa",
        **replica_options(replicas, min_replicas=min_replicas, max_replicas=max_replicas),
        # above our own bound, so that the replica answers a full queue itself (503 + Retry-After, JSON)
        max_ongoing_requests=cfg.capacity + 8,
        graceful_shutdown_timeout_s=cfg.request_timeout,
        health_check_timeout_s=max(30.0, cfg.request_timeout),  # a long scoring pass is not a dead replica
        ray_actor_options={"num_cpus": num_cpus},
    )
    return dep.bind(cfg)


def check_bind(host: str, token: str | None) -> None:
    """Binding to anything but loopback needs a token."""
    if host not in _LOOPBACK and not token:
        raise ConfigError(f"--host {host} is reachable from other machines: set --token (or ${TOKEN_ENV}) first")


def run_service(cfg: ServeConfig, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, address: str | None = None,
                replicas: int | None = None, min_replicas: int | None = None, max_replicas: int | None = None, ready=None) -> int:
    """Serve until SIGTERM/SIGINT, then stop accepting, answer what is in flight, remove the uploads; 0 when done.

    Replicas: ``replicas`` fixed, or autoscaling between ``min_replicas`` and ``max_replicas`` (:func:`replica_options`).
    ``ready(url)`` is called once the service answers."""
    check_bind(host, cfg.token)
    cfg.check()
    scaling = {"replicas": replicas, "min_replicas": min_replicas, "max_replicas": max_replicas}
    replica_options(**scaling)  # a bad combination is said before Ray starts
    root = tempfile.mkdtemp(prefix="thqa-serve-")
    cfg.upload_dir = cfg.upload_dir or root
    cfg.stop_file = os.path.join(root, "stopping")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(cfg, **scaling), name="thqa", route_prefix="/")
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own
            signal.signal(sig, lambda *_: stop.set())
        url = f"http://{host}:{port}"
        log.info("thqa serve: ready on %s", url)
        if ready is not None:
            ready(url)
        while not stop.wait(0.5):
            pass
        log.info("thqa serve: stopping (answering the requests in flight, refusing new ones)")
        Path(cfg.stop_file).touch()
        _wait_idle(root, cfg.request_timeout)
        serve.shutdown()
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return 0
