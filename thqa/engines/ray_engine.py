"""Extraction and scoring on a Ray cluster (``--engine ray``), with Ray Data as the batch pipeline.

    manifest rows -> CPU tasks: content hash, cache look-up, prepare() (decode, clip sampling, audio features)
                  -> a pool of actors that each hold the backbones once (a GPU each where there are GPUs) and run
                     them batched -> cache entries written by the same atomic writer as the local engine
                     (:func:`thqa.data.extract.store_features`), straight from the actor to the cache directory
                     -> one result row per file back to the driver.

The cache directory must be storage that every node sees (NFS, a shared disk): :func:`check_shared_cache` proves
it at start by having a task on every node write a file there that the driver then reads. Entries already in the
cache are skipped, so a re-run after a crash only does what is missing. Ray retries tasks and restarts actors whose
process dies; a file whose preparation fails (a ``THQAError``) is reported as a failure, as in the local engine,
and the job goes on. Scores are made into results on the driver, as the local scorer makes them
(:class:`thqa.scoring.result.ResultStamp`).

Ray itself is imported when first needed (:func:`import_ray`), so that a missing Ray is said with how to install it.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from thqa.analysis.conformal import check_coverage
from thqa.data.cache import FeatureCache, file_digest
from thqa.data.extract import ExtractSummary, is_cached, store_features
from thqa.errors import CacheError, ConfigError, DependencyError, THQAError, WeightsError
from thqa.features.pipeline import Backbones, ExtractionSettings, precision_for, prepare
from thqa.features.weights import WeightsOptions, build_spatial, build_temporal
from thqa.scoring.result import ResultStamp, ScoreResult
from thqa.scoring.scorer import Scorer, ScoringModel, scoring_model

__all__ = ["RayOptions", "check_shared_cache", "extract_with_ray", "score_with_ray", "import_ray"]

log = logging.getLogger(__name__)

#: files per Ray Data block (one CPU task prepares a block)
_FILES_PER_BLOCK = 2

INSTALL_HINT = "Ray is not installed: install the extra with `pip install 'thqa[ray]'` (or `pip install -e '.[ray]'`)"


def import_ray():
    """The ``ray`` module, or a :class:`DependencyError` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part we need
    except ImportError as exc:
        raise DependencyError(f"--engine ray: {INSTALL_HINT} ({exc})") from exc
    return ray


class RayOptions:
    """Where and how to run on Ray.

    Args:
        address: "auto" (a cluster started with ``ray start``), "ray://host:10001", "host:6379", or None for a
            local Ray instance started here (``num_cpus`` CPUs).
        actors: backbone actors (default: one per GPU of the cluster, else one per 4 CPUs, at least 1).
        files_per_batch: files handed to an actor at once (its backbones run over all their clips).
        max_retries: retries of a task or an actor call whose process died.
        verbose: show Ray's own log lines (its start-up, workers' output); quiet by default (errors only).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        actors: int | None = None,
        files_per_batch: int = 8,
        max_retries: int = 3,
        verbose: bool = False,
    ):
        self.address = address
        self.num_cpus = num_cpus
        self.actors = actors
        self.files_per_batch = max(1, int(files_per_batch))
        self.max_retries = max(0, int(max_retries))
        self.verbose = bool(verbose)


def _connect(opts: RayOptions):
    ray = import_ray()
    if not ray.is_initialized():
        # Ray's own log lines (start-up, dashboard, workers' output) only when asked for: thqa says what matters
        kw: dict[str, Any] = {"log_to_driver": opts.verbose, "logging_level": logging.INFO if opts.verbose else logging.ERROR}
        if opts.address:
            kw["address"] = opts.address
        else:  # a local instance, started here
            kw["include_dashboard"] = False
            if opts.num_cpus:
                kw["num_cpus"] = opts.num_cpus
        try:
            ray.init(**kw)
        except ConnectionError as exc:
            raise THQAError(f"--engine ray: cannot reach a Ray cluster at {opts.address!r} ({exc})") from exc
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    return ray


def check_shared_cache(cache_dir: str | os.PathLike) -> list[str]:
    """Check that a task on every alive node can write into ``cache_dir`` and that the driver sees what it wrote.

    Returns the node ids checked. Raises :class:`CacheError` naming the node and the problem.
    """
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root = Path(cache_dir).resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"{root}: cannot create the cache directory ({exc})") from exc

    @ray.remote(num_cpus=0, max_retries=0)
    def probe(path: str) -> tuple[str, str, str | None]:
        host = socket.gethostname()
        node = ray.get_runtime_context().get_node_id()
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(node)
        except OSError as exc:
            return node, host, f"cannot write there ({exc})"
        return node, host, None

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    tag = uuid.uuid4().hex[:8]
    probes = {n: root / f".probe-{tag}-{n[:12]}" for n in nodes}
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(str(p)) for n, p in probes.items()]
    try:
        for node, host, err in ray.get(refs, timeout=120):
            if err is not None:
                raise CacheError(f"{root}: a worker on node {node[:12]} ({host}) {err}; the cache must be storage every node can write")
        for n, p in probes.items():
            if not p.exists():
                raise CacheError(
                    f"{root}: a file written there by node {n[:12]} is not visible to the driver; the cache directory "
                    "must be shared storage (NFS, a shared disk) mounted at the same path on every node"
                )
    finally:
        for p in probes.values():
            try:
                p.unlink()
            except OSError:
                pass
    return nodes


# -- the pipeline's stages ----------------------------------------------------------------------------------------
def _prepare_row(row: dict, spec: dict) -> dict:
    """CPU task: hash, look the file up in the cache, prepare it. Never raises for a bad file."""
    import ray

    path = str(row["path"])
    out = {"path": path, "status": "failed", "digest": "", "item": b"", "error_type": "", "error": "", "prep_node": ray.get_runtime_context().get_node_id()}
    settings = ExtractionSettings.from_dict(spec["settings"])
    try:
        if spec["mode"] == "extract":
            digest = file_digest(path)
            out["digest"] = digest
            if is_cached(FeatureCache(spec["cache_dir"]), digest, settings, spec["backbones"], frames=spec["frames"]):
                out["status"] = "reused"
                return out
        item = prepare(path, settings, keep_first_frames="png" if spec["frames"] else False, timeout=spec["file_timeout"])
        out["item"] = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        out["status"] = "prepared"
    except THQAError as exc:
        out["error_type"], out["error"] = type(exc).__name__, str(exc)
    except Exception as exc:  # noqa: BLE001 - one broken file must not stop the job
        out["error_type"], out["error"] = type(exc).__name__, f"{path}: unexpected {type(exc).__name__}: {exc}"
    return out


class _BackboneActor:
    """Holds the backbones (and, for scoring, the fusion model) once; runs them over batches of prepared files."""

    def __init__(self, spec: dict):
        torch.set_num_threads(max(1, int(spec.get("threads") or 1)))
        self.spec = spec
        self.settings = ExtractionSettings.from_dict(spec["settings"])
        if spec["mode"] == "score":
            self.scorer = Scorer(
                spec["checkpoint"], workers=0, device=spec["device"], batch_size=spec["batch_size"], precision=spec["precision"], warm=False,
                **spec["weights_kw"],
            )
            self.backbones = self.scorer.backbones
        else:
            self.scorer = None
            # Ray tasks prepare the files: no decoding workers (nor their fork server) in an actor
            self.backbones = Backbones(
                spec["weights"], device=spec["device"], batch_size=spec["batch_size"], start_workers=False, precision=spec["precision"]
            )
            mine = {k: v["sha256"] for k, v in self.backbones.infos.items()}
            if mine != {k: v["sha256"] for k, v in spec["backbones"].items()}:  # paths may differ between nodes
                raise WeightsError(
                    f"node {socket.gethostname()}: its backbone weights ({mine}) differ from the driver's; every node "
                    "must have the same weight files (or all use --random-init with one seed)"
                )
            expected = {v.get("precision", "fp32") for v in spec["backbones"].values()}
            if expected != {self.backbones.precision}:
                raise ConfigError(
                    f"node {socket.gethostname()}: runs the backbones in {self.backbones.precision}, but the driver "
                    f"keys the cache for {', '.join(sorted(expected))}"
                )
            self.cache = FeatureCache(spec["cache_dir"])

    def __call__(self, batch: dict) -> dict:
        import ray

        node = ray.get_runtime_context().get_node_id()
        n = len(batch["path"])
        status = [str(s) for s in batch["status"]]
        err_t = [str(e) for e in batch["error_type"]]
        err = [str(e) for e in batch["error"]]
        mos = [float("nan")] * n
        clips = [""] * n
        meta = [""] * n  #: score mode: JSON of the clip seconds and the file's warnings
        todo = [k for k in range(n) if status[k] == "prepared"]
        items = [pickle.loads(batch["item"][k]) for k in todo]
        feats: dict[int, Any] = {}
        if items:
            try:
                for k, f in zip(todo, self.backbones.features(items)):
                    feats[k] = f
            except Exception:  # noqa: BLE001 - isolate the file that breaks the batch
                for k, it in zip(todo, items):
                    try:
                        feats[k] = self.backbones.features([it])[0]
                    except Exception as exc:  # noqa: BLE001
                        status[k], err_t[k], err[k] = "failed", type(exc).__name__, f"{batch['path'][k]}: feature extraction failed ({exc})"
        for k, f in feats.items():
            path = str(batch["path"][k])
            try:
                if self.scorer is not None:  # the driver makes the result (ResultStamp.scored, as the local scorer)
                    m, c = self.scorer.score_features([f])[0]
                    mos[k], clips[k] = float(m), json.dumps([float(x) for x in c])
                    meta[k] = json.dumps({"seconds": [int(x) for x in f.seconds], "warnings": list(f.warnings)})
                else:
                    store_features(
                        self.cache, f, path=path, digest=str(batch["digest"][k]), settings=self.settings,
                        backbones=self.spec["backbones"], frames=self.spec["frames"],
                    )
                status[k] = "done"
            except THQAError as exc:
                status[k], err_t[k], err[k] = "failed", type(exc).__name__, str(exc)
        return {
            "path": [str(p) for p in batch["path"]],
            "status": status,
            "error_type": err_t,
            "error": err,
            "mos": np.asarray(mos, dtype=np.float64),
            "clip_scores": clips,
            "meta": meta,
            "prep_node": [str(x) for x in batch["prep_node"]],
            "actor_node": [node] * n,
            "actor_pid": [os.getpid()] * n,
        }


def _run(paths: Sequence[str], spec: dict, opts: RayOptions, progress: Callable[[int], None] | None) -> list[dict]:
    ray = _connect(opts)
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    use_gpu = gpus > 0 and spec["device"] in ("auto", "cuda")
    spec["device"] = "cuda" if use_gpu else ("cpu" if spec["device"] == "auto" else spec["device"])
    # decided here, once: every actor runs in it (a node's own "auto" could differ), and it is part of the keys
    spec["precision"] = precision_for(spec["device"], spec.get("precision", "auto"))
    for info in (spec.get("backbones") or {}).values():
        info["precision"] = spec["precision"]
    actors = opts.actors or (gpus if use_gpu else max(1, int(res.get("CPU", 1)) // 4))
    if not use_gpu:
        # an actor runs the backbones on its share of the CPUs, at most the threads the local engine would use here:
        # in bf16 a CPU's kernels (oneDNN's) are bit-reproducible for one thread count, so where an actor gets as
        # many threads as a local run (one actor on a machine like this one) both engines give the same numbers
        spec["threads"] = max(1, min(torch.get_num_threads(), int(res.get("CPU", 1)) // actors))
    # small blocks: each CPU task prepares a few files, so all the cluster's CPUs share the work, results stream,
    # and a block that fails on every retry loses few files (they are reported, the job goes on)
    n_blocks = max(1, -(-len(paths) // _FILES_PER_BLOCK))
    ray.data.DataContext.get_current().max_errored_blocks = n_blocks
    ds = ray.data.from_items([{"path": str(p)} for p in paths], override_num_blocks=n_blocks)
    with warnings.catch_warnings():
        # retries and placement are passed as remote arguments, which Ray 2.60 flags as a deprecated style
        warnings.simplefilter("ignore", DeprecationWarning)
        return _execute(ray, ds, spec, opts, actors, use_gpu, progress)


def _execute(ray, ds, spec: dict, opts: RayOptions, actors: int, use_gpu: bool, progress) -> list[dict]:
    ds = ds.map(_prepare_row, fn_kwargs={"spec": spec}, num_cpus=1, max_retries=opts.max_retries, scheduling_strategy="SPREAD")
    actor_res = {"num_gpus": 1} if use_gpu else {"num_cpus": 1}
    ds = ds.map_batches(
        _BackboneActor,
        fn_constructor_kwargs={"spec": spec},
        batch_size=opts.files_per_batch,
        batch_format="numpy",
        zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=actors),
        max_restarts=opts.max_retries,
        max_task_retries=opts.max_retries,
        scheduling_strategy="SPREAD",
        **actor_res,
    )
    rows = []
    for row in ds.iter_rows():
        rows.append(dict(row))
        if progress:
            progress(1)
    return rows


def _with_lost(paths: list[str], rows: list[dict]) -> list[dict]:
    """``rows`` plus a failure row for every path that came back without one (its Ray task failed on every
    retry, e.g. its process crashed each time, and Ray Data dropped its block)."""
    seen = {r["path"] for r in rows}
    lost = [
        {
            "path": p, "status": "failed", "error_type": "DecodeError", "prep_node": "", "actor_node": "",
            "error": f"{p}: its Ray task failed on every retry (a crash while reading it, or of its node); see Ray's logs",
        }
        for p in dict.fromkeys(paths) if p not in seen
    ]
    if lost:
        log.warning("%d file(s) came back without a result from Ray", len(lost))
    return rows + lost


def _spec(
    mode: str, settings, frames: bool, cache_dir, device: str, batch_size: int | None, file_timeout: float | None, precision: str = "auto"
) -> dict:
    return {
        "precision": precision,
        "mode": mode,
        "settings": settings.to_dict(),
        "frames": bool(frames),
        "cache_dir": str(Path(cache_dir).resolve()) if cache_dir else None,
        "device": device,
        "batch_size": batch_size,
        "file_timeout": file_timeout,
        "threads": 1,
    }


def extract_with_ray(
    paths: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike,
    settings=None,
    weights=None,
    *,
    frames: bool = True,
    device: str = "auto",
    batch_size: int | None = None,
    file_timeout: float | None = 300.0,
    options: RayOptions | None = None,
    progress: Callable[[int], None] | None = None,
    precision: str = "auto",
):
    """The Ray engine's :func:`thqa.data.extract.extract_to_cache`: same cache entries, same summary.

    Returns:
        an :class:`thqa.data.extract.ExtractSummary`; ``pipeline`` holds the nodes that prepared files and ran actors.
    """
    opts = options or RayOptions()
    settings = (settings or ExtractionSettings()).validate()
    weights = weights or WeightsOptions()
    t0 = time.perf_counter()
    _connect(opts)
    check_shared_cache(cache_dir)
    # the keys need the backbones' identity: the driver hashes the weights once (the actors check they agree)
    infos = {}
    for build in (build_spatial, build_temporal):
        _, info = build(weights)
        infos[info.name] = info.to_dict()
    spec = _spec("extract", settings, frames, cache_dir, device, batch_size, file_timeout, precision)
    spec.update(weights=weights, backbones=infos)
    t1 = time.perf_counter()
    rows = _with_lost([str(p) for p in paths], _run([str(p) for p in paths], spec, opts, progress))
    summary = ExtractSummary()
    for r in rows:
        if r["status"] == "done":
            summary.done += 1
        elif r["status"] == "reused":
            summary.reused += 1
        else:
            summary.failed += 1
            summary.failures.append((r["path"], r["error_type"] or "THQAError", r["error"] or "failed"))
    summary.seconds = time.perf_counter() - t0
    summary.extract_seconds = time.perf_counter() - t1
    if summary.done:
        summary.per_video_s = summary.extract_seconds / summary.done
    summary.pipeline = {
        "engine": "ray",
        "precision": spec["precision"],  # resolved by _run
        "prep_nodes": sorted({r["prep_node"] for r in rows if r.get("prep_node")}),
        "actor_nodes": sorted({r["actor_node"] for r in rows if r["status"] in ("done", "failed") and r.get("actor_node")}),
        "actor_pids": sorted({int(r["actor_pid"]) for r in rows if r.get("actor_pid")}),
    }
    return summary


def score_with_ray(
    paths: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike | ScoringModel | None = None,
    *,
    random_init: bool | None = None,
    seed: int | None = None,
    swin_weights: str | None = None,
    slowfast_weights: str | None = None,
    offline: bool | None = None,
    settings=None,
    device: str = "auto",
    batch_size: int | None = None,
    file_timeout: float | None = 300.0,
    options: RayOptions | None = None,
    progress: Callable[[int], None] | None = None,
    coverage: float = 0.9,
    precision: str | None = None,
) -> list[ScoreResult]:
    """Score files on Ray; one :class:`thqa.scoring.result.ScoreResult` per path, in order, made as the local
    scorer makes them (:func:`thqa.scoring.scorer.scoring_model`, :class:`thqa.scoring.result.ResultStamp`; with
    prediction intervals at ``coverage``). ``checkpoint``: a path, or a :class:`~thqa.scoring.scorer.ScoringModel`
    already worked out (its options, when given too, must agree)."""
    coverage = check_coverage(coverage)
    model_options = {"random_init": random_init, "seed": seed, "swin_weights": swin_weights, "slowfast_weights": slowfast_weights,
                     "offline": offline, "precision": precision, "settings": settings}
    m = (checkpoint.check_options(**model_options) if isinstance(checkpoint, ScoringModel)
         else scoring_model(checkpoint, **model_options))  # a mismatch with the checkpoint's record raises here
    spec = _spec("score", m.settings, False, None, device, batch_size, file_timeout, m.precision)
    w = m.weights
    spec.update(  # every actor's Scorer: this model (the backbones resolved here), on its own node
        checkpoint=str(m.checkpoint.path) if m.checkpoint is not None else None,
        weights_kw={"random_init": w.random_init, "seed": w.seed, "swin_weights": w.swin_weights, "slowfast_weights": w.slowfast_weights,
                    "offline": w.offline, "settings": m.settings},
    )
    str_paths = [str(p) for p in paths]
    rows = {r["path"]: r for r in _with_lost(str_paths, _run(str_paths, spec, options or RayOptions(), progress))}
    stamp = m.stamp(spec["precision"], coverage)  # the precision _run resolved for every actor
    return [_result(stamp, p, rows.get(p)) for p in str_paths]


def _result(stamp: ResultStamp, path: str, row: dict | None) -> ScoreResult:
    """The result of ``path`` from its row (None: it came back without one)."""
    if row is None or row["status"] != "done":
        row = row or {}
        return stamp.failed(path, row.get("error_type") or "THQAError", row.get("error") or f"{path}: not scored")
    extra = json.loads(row.get("meta") or "{}")
    return stamp.scored(path, float(row["mos"]), json.loads(row["clip_scores"]), seconds=extra.get("seconds"),
                        warnings=extra.get("warnings", []))
