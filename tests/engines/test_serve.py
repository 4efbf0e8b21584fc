"""`thqa serve` on a real Ray Serve instance, over real HTTP on loopback: served scores are the local scorer's
(bit-identical MOS), concurrent clients are each answered once, every refusal is a JSON error with its status and
leaves the service answering, and uploads do not outlive their request."""
from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import media

ray = pytest.importorskip("ray")
serve_mod = pytest.importorskip("thqa.engines.serve")

from thqa.models.checkpoint import save_checkpoint  # noqa: E402
from thqa.engines.client import Client  # noqa: E402
from thqa.errors import MediaError, ServiceError  # noqa: E402
from thqa.models.fusion import FusionModel  # noqa: E402
from thqa.engines.serve import ServeConfig, build_app, score_row  # noqa: E402

TOKEN = "s3cret-token"
KW = {"random_init": True, "device": "cpu", "precision": "fp32", "batch_size": None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(backbones, small_settings, tmp_path_factory) -> str:
    """An untrained fusion model saved as a checkpoint of the small settings and the random-init backbones."""
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "serve.safetensors"
    return str(save_checkpoint(path, FusionModel(), settings=small_settings, backbones=backbones.infos))


@pytest.fixture(scope="module")
def local(checkpoint, videos):
    """The local scorer of the same checkpoint, settings and precision, with its results of ``videos`` kept."""
    from thqa.scoring.scorer import Scorer

    scorer = Scorer(checkpoint, workers=0, **KW)
    scorer.known = {str(v): scorer.score(v) for v in videos}
    return scorer


def _want(local, video):
    import copy

    return copy.deepcopy(local.known[str(video)])


@pytest.fixture(scope="module")
def videos(media_dir) -> list[Path]:
    rng = np.random.default_rng(5)
    out = []
    for i in range(3):
        audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)
        out.append(media.write_video(media_dir / f"serve_{i}.mp4", seconds=1, size=(64 + 16 * i, 64), audio=audio))
    return out


@pytest.fixture(scope="module")
def service(checkpoint, videos, tmp_path_factory):
    """One Serve instance, two applications: "/" (token, ?path= under the videos' folder) and "/tight" (no queue,
    a 0.2 MB upload limit, a request timeout far below a scoring pass)."""
    import torch
    from ray import serve

    uploads = tmp_path_factory.mktemp("uploads")
    port = _free_port()
    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    threads = torch.get_num_threads()  # the local scorer's: fp32 sums in another order would differ in the last bits
    main = ServeConfig(checkpoint, dict(KW), threads=threads, max_queue=8, token=TOKEN, allow_paths=str(videos[0].parent), upload_dir=str(uploads))
    tight = ServeConfig(checkpoint, dict(KW), threads=threads, max_queue=0, max_upload_mb=0.2, request_timeout=0.05, upload_dir=str(uploads))
    serve.run(build_app(main, num_cpus=0.5), name="main", route_prefix="/")
    serve.run(build_app(tight, num_cpus=0.5), name="tight", route_prefix="/tight")
    yield {"url": f"http://127.0.0.1:{port}", "uploads": uploads}
    serve.shutdown()
    ray.shutdown()


def _post(url: str, body: bytes = b"", *, token: str | None = TOKEN, ctype: str = "application/octet-stream") -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def _uploads_left(service) -> list[Path]:
    return [p for p in Path(service["uploads"]).rglob("*") if p.is_file()]


def _assert_same(got, want) -> None:
    assert got.mos == want.mos  # bit-identical
    assert got.clip_scores == want.clip_scores and got.seconds == want.seconds
    assert (got.precision, got.weights, got.untrained, got.warnings) == (want.precision, want.weights, want.untrained, want.warnings)


def _good(service, videos, local) -> None:
    """The service still answers a good request, with the local score."""
    _assert_same(Client(service["url"], TOKEN).score(videos[0]), _want(local, videos[0]))


def test_served_score_is_the_local_scorers_row(service, videos, local) -> None:
    want = _want(local, videos[1])
    status, row, _ = _post(service["url"] + "/score?name=clip.mp4", videos[1].read_bytes())
    assert status == 200
    assert row.pop("timings")["total_s"] > 0
    want.path = "clip.mp4"
    assert row == score_row(want)  # the very row `thqa score --json` writes
    assert row["precision"] == "fp32" and row["mos"] == want.mos
    got = Client(service["url"], TOKEN).score(videos[1])
    _assert_same(got, want)
    assert got.path == str(videos[1])
    assert _uploads_left(service) == []


def test_path_under_allow_paths_is_scored_and_escapes_are_refused(service, videos, local, tmp_path) -> None:
    status, row, _ = _post(service["url"] + f"/score?path={videos[2].name}")
    assert status == 200 and row["mos"] == _want(local, videos[2]).mos
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(videos[2].read_bytes())
    link = videos[2].parent / "serve_link.mp4"
    link.symlink_to(outside)
    try:
        for p in ("../" + tmp_path.name + "/outside.mp4", str(outside), link.name):
            status, doc, _ = _post(service["url"] + "/score?path=" + urllib.request.quote(p))
            assert status == 403 and doc["error_type"] == "Forbidden" and "outside --allow-paths" in doc["error"], p
    finally:
        link.unlink()
    status, doc, _ = _post(service["url"] + "/tight/score?path=x.mp4", token=None)
    assert status == 403 and "--allow-paths" in doc["error"]


def test_query_options_timeline_and_coverage(service, videos, local) -> None:
    want = local.explain(videos[0], timeline=True)
    got = Client(service["url"], TOKEN, coverage=0.8).iter_explain([videos[0]], timeline=True)
    got = next(iter(got))
    assert got.timeline == want.timeline and got.mos == want.mos and got.coverage == 0.8
    status, row, _ = _post(service["url"] + "/score?timeline=true", videos[0].read_bytes())
    assert status == 200 and row["timeline"] == want.timeline
    for bad in ("coverage=1.5", "coverage=x", "timeline=maybe"):
        status, doc, _ = _post(service["url"] + "/score?" + bad, videos[0].read_bytes())
        assert status == 400 and doc["error_type"] == "ConfigError" and bad.split("=")[0] in doc["error"], bad
    assert _uploads_left(service) == []


def test_concurrent_clients_each_get_their_own_scores(service, videos, local) -> None:
    want = {str(v): _want(local, v).mos for v in videos}
    jobs = [videos[(c + k) % 3] for c in range(4) for k in range(2)]  # 4 clients x 2 files
    client = Client(service["url"], TOKEN)

    def one(v):
        return client.score(v)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(one, jobs))
    assert [r.path for r in got] == [str(v) for v in jobs]
    assert [r.mos for r in got] == [want[str(v)] for v in jobs]
    assert _uploads_left(service) == []


def test_not_a_video_is_422_with_the_typed_error(service, videos, local) -> None:
    for body, name in ((b"this is not a video at all" * 40, "notes.mp4"), (b"\x00" * 5000, "zeros.mp4")):
        status, doc, _ = _post(service["url"] + f"/score?name={name}", body)
        assert status == 422, doc
        assert doc["error_type"] in ("DecodeError", "NoVideoStreamError", "MediaError") and doc["error"].startswith(name)
        assert "thqa-uploads" not in doc["error"]  # our temp path is not shown
    text = Path(service["uploads"]).parent / "notes.mp4"
    text.write_bytes(b"this is not a video at all" * 40)
    with pytest.raises(MediaError, match="notes.mp4"):
        Client(service["url"], TOKEN).score(text)
    _good(service, videos, local)
    assert _uploads_left(service) == []


def test_missing_or_wrong_token_is_401(service, videos, local) -> None:
    for token in (None, "wrong", TOKEN + "x"):
        status, doc, headers = _post(service["url"] + "/score", videos[0].read_bytes(), token=token)
        assert status == 401 and doc["error_type"] == "Unauthorized" and headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer"
    with pytest.raises(ServiceError) as exc:
        Client(service["url"], "wrong").score(videos[0])
    assert exc.value.status == 401
    with urllib.request.urlopen(service["url"] + "/healthz") as r:  # health needs no token
        assert json.loads(r.read())["status"] == "ready"
    _good(service, videos, local)


def test_upload_over_the_limit_is_413(service, videos, local) -> None:
    status, doc, _ = _post(service["url"] + "/tight/score", b"\0" * (400 * 1024), token=None)
    assert status == 413 and doc["error_type"] == "UploadTooLarge" and "--max-upload-mb 0.2" in doc["error"]
    _good(service, videos, local)
    assert _uploads_left(service) == []


def test_timeout_is_504_and_a_full_queue_503_with_retry_after(service, videos, local) -> None:
    url = service["url"] + "/tight/score?timeline=true"
    status, doc, _ = _post(url, videos[2].read_bytes(), token=None)
    assert status == 504 and doc["error_type"] == "Timeout" and "--request-timeout 0.05" in doc["error"]
    # its work goes on (a timeline pass takes far longer than 0.05 s): the queue of /tight (0 waiting) is full
    status, doc, headers = _post(url, videos[2].read_bytes(), token=None)
    assert status == 503 and doc["error_type"] == "QueueFull"
    assert int(headers.get("Retry-After", headers.get("retry-after"))) >= 1
    _good(service, videos, local)


def _samples(text: str) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            out.setdefault(smp.name, []).append(smp)
    return out


def test_metrics_count_outcomes_and_batches_per_replica(service, videos, local) -> None:
    assert _post(service["url"] + "/score", b"x", token="wrong")[0] == 401
    _good(service, videos, local)  # a 200 and a batch
    req = urllib.request.Request(service["url"] + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req) as r:
        got = _samples(r.read().decode())
    outcomes = {(smp.labels["route"], smp.labels["outcome"]) for smp in got["thqa_requests_total"] if smp.value > 0}
    assert {("/score", "200"), ("/score", "401")} <= outcomes
    # every series names its replica; "/" runs one replica (the "/tight" application's are not in its /metrics)
    replicas = {smp.labels.get("replica") for samples in got.values() for smp in samples}
    assert len(replicas) == 1 and None not in replicas and "" not in replicas
    (depth,) = got["thqa_queue_depth"]
    assert depth.value == 0  # nothing held between requests
    (batches,) = got["thqa_batch_size_count"]
    assert batches.value >= 1 and "thqa_request_seconds_bucket" in got


def test_merged_metrics_label_each_replicas_queue_and_batches() -> None:
    from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

    from thqa.engines.serve import merged_metrics

    texts = {}
    for name, depth, batches in (("r1", 3, [1, 4]), ("r2", 0, [8])):
        reg = CollectorRegistry()
        Gauge("thqa_queue_depth", "held", registry=reg).set(depth)
        h = Histogram("thqa_batch_size", "files per batch", registry=reg, buckets=(1, 2, 4, 8))
        for b in batches:
            h.observe(b)
        texts[name] = generate_latest(reg).decode()
    text = merged_metrics(texts).decode()
    got = _samples(text)
    assert {smp.labels["replica"]: smp.value for smp in got["thqa_queue_depth"]} == {"r1": 3.0, "r2": 0.0}
    assert {smp.labels["replica"]: smp.value for smp in got["thqa_batch_size_sum"]} == {"r1": 5.0, "r2": 8.0}
    le4 = {smp.labels["replica"]: smp.value for smp in got["thqa_batch_size_bucket"] if smp.labels["le"] == "4.0"}
    assert le4 == {"r1": 2.0, "r2": 0.0}
    assert text.count("# TYPE thqa_queue_depth gauge") == 1  # one family, a series per replica


def test_replicas_fixed_or_autoscaling_bounds(monkeypatch, capsys) -> None:
    from thqa.cli.app import main
    from thqa.engines import serve as serve_engine
    from thqa.engines.serve_defaults import AUTOSCALE_TARGET_ONGOING
    from thqa.errors import ConfigError

    ro = serve_engine.replica_options
    assert ro() == {"num_replicas": 1} and ro(3) == {"num_replicas": 3}
    assert ro(min_replicas=0, max_replicas=4) == {"autoscaling_config": {"min_replicas": 0, "max_replicas": 4,
                                                                         "target_ongoing_requests": AUTOSCALE_TARGET_ONGOING}}
    assert ro(max_replicas=2)["autoscaling_config"]["min_replicas"] == 1
    for kw, words in (({"replicas": 2, "max_replicas": 3}, "one or the other"), ({"min_replicas": 2}, "give --max-replicas"),
                      ({"min_replicas": 3, "max_replicas": 2}, "min <= max"), ({"min_replicas": 0, "max_replicas": 0}, "max >= 1")):
        with pytest.raises(ConfigError, match=words):
            ro(**kw)
    # Ray Serve takes the bounds as its autoscaling config
    app = build_app(ServeConfig(None, dict(KW)), min_replicas=0, max_replicas=4)
    auto = app._bound_deployment._deployment_config.autoscaling_config
    assert (auto.min_replicas, auto.max_replicas, auto.target_ongoing_requests) == (0, 4, AUTOSCALE_TARGET_ONGOING)
    # the command line's flags reach the service; a fixed number with bounds is a usage error, before Ray starts
    seen = []
    monkeypatch.setattr(serve_engine, "run_service", lambda cfg, **kw: seen.append(kw) or 0)
    assert main(["serve", "--random-init", "--min-replicas", "0", "--max-replicas", "4"]) == 0
    assert main(["serve", "--random-init", "--replicas", "3"]) == 0
    assert [{k: kw[k] for k in ("replicas", "min_replicas", "max_replicas")} for kw in seen] == [
        {"replicas": None, "min_replicas": 0, "max_replicas": 4}, {"replicas": 3, "min_replicas": None, "max_replicas": None}]
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--random-init", "--replicas", "2", "--max-replicas", "4"])
    assert exc.value.code == 2 and "one or the other" in capsys.readouterr().err and len(seen) == 2


def test_score_server_cli_writes_the_local_rows_and_resumes(service, videos, local, tmp_path, monkeypatch, capsys) -> None:
    from thqa.cli.app import main

    monkeypatch.setenv("THQA_SERVE_TOKEN", TOKEN)
    out = tmp_path / "scores.json"
    assert main(["score", "--server", service["url"], str(videos[0]), "--output", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["mos"] for r in rows] == [_want(local, videos[0]).mos]
    assert main(["score", "--server", service["url"], str(videos[0]), str(videos[1]), "--output", str(out), "--resume"]) == 0
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == [str(videos[0]), str(videos[1])]
    assert rows[1]["mos"] == _want(local, videos[1]).mos
    with pytest.raises(SystemExit) as exc:  # the service's model, not ours
        main(["score", "--server", service["url"], "--random-init", str(videos[0])])
    assert exc.value.code == 2


def test_non_loopback_without_token_is_refused_at_start() -> None:
    from thqa.cli.app import main

    assert main(["serve", "--random-init", "--host", "0.0.0.0"]) == 2


@pytest.mark.slow  # waits for Serve to build a new replica
def test_a_killed_replica_fails_its_requests_clearly_and_is_replaced(service, videos, local) -> None:
    """ray.kill of the replica while it scores: each request gets its score or a ServiceError (never a wrong score,
    never a hang), the service answers again once Serve has replaced the replica, and no upload is left behind."""
    import time

    name = next(n["name"] for n in ray.util.list_named_actors(all_namespaces=True) if n["name"].startswith("SERVE_REPLICA::main#"))
    client = Client(service["url"], TOKEN)

    def one(v):
        try:
            return client.score(v)
        except ServiceError as exc:
            return exc

    with ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(one, videos[i % 3]) for i in range(4)]
        req = urllib.request.Request(service["url"] + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        while True:  # until the replica holds requests
            with urllib.request.urlopen(req) as r:
                if "thqa_queue_depth 0.0" not in r.read().decode():
                    break
            time.sleep(0.02)
        ray.kill(ray.get_actor(name, namespace="serve"))
        got = [f.result(timeout=600) for f in futs]
    for v, g in zip([videos[i % 3] for i in range(4)], got):
        assert isinstance(g, ServiceError) or g.mos == _want(local, v).mos
    # in flight at the kill: a ServiceError (Serve does not retry a request whose replica died), or a score if Serve
    # had not yet handed it to the replica
    deadline = time.monotonic() + 600
    while True:  # Serve starts a new replica, which builds its models
        try:
            _good(service, videos, local)
            break
        except ServiceError:
            assert time.monotonic() < deadline
            time.sleep(1)
    replicas = [n["name"] for n in ray.util.list_named_actors(all_namespaces=True) if n["name"].startswith("SERVE_REPLICA::main#")]
    assert replicas and name not in replicas  # a new replica answered
    assert _uploads_left(service) == []
    assert len(list(Path(service["uploads"]).iterdir())) == 2  # the new replica's folder and /tight's; the dead one's removed


def _pump(proc, lines: list[str], ready) -> None:
    for line in proc.stderr:
        lines.append(line)
        if "ready on" in line:
            ready.set()
    ready.set()


@pytest.mark.slow  # its own `thqa serve` process, Ray instance and replica: ~2 min on 2 cores
def test_sigterm_answers_requests_in_flight_refuses_new_ones_and_exits_0(checkpoint, videos, local) -> None:
    """`thqa serve` in its own process: SIGTERM while two requests are scored; both are answered with the local
    scores, a request after it is not scored, the exit code is 0 and the upload folder is gone."""
    import glob
    import signal
    import subprocess
    import sys
    import tempfile
    import threading
    import time

    import torch

    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "thqa-serve-*")))
    port = _free_port()
    cmd = [sys.executable, "-m", "thqa.cli", "serve", "--checkpoint", checkpoint, "--random-init", "--device", "cpu",
           "--precision", "fp32", "--port", str(port), "--threads", str(torch.get_num_threads())]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    ready = threading.Event()
    threading.Thread(target=_pump, args=(proc, lines, ready), daemon=True).start()
    try:
        assert ready.wait(600) and proc.poll() is None, "".join(lines[-20:])
        url = f"http://127.0.0.1:{port}"
        with ThreadPoolExecutor(2) as pool:
            futs = [pool.submit(Client(url).score, v) for v in videos[:2]]
            req = urllib.request.Request(url + "/metrics")
            while True:  # until both are held by the replica
                with urllib.request.urlopen(req) as r:
                    if [smp.value for smp in _samples(r.read().decode())["thqa_queue_depth"]] == [2.0]:  # its one replica
                        break
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            late = None
            try:
                late = Client(url).score(videos[2])
            except ServiceError as exc:
                assert exc.status in (None, 503)
            assert late is None
            got = [f.result(timeout=600) for f in futs]
        assert [g.mos for g in got] == [_want(local, v).mos for v in videos[:2]]
        assert proc.wait(timeout=300) == 0, "".join(lines[-20:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "thqa-serve-*"))) == before
