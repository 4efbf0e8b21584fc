"""The Ray engine: the same cache entries and scores (the same bits) as the local engine on a local Ray instance (2 CPUs), a job that
survives a killed actor process, a cluster of two nodes started by the test, and a clear message without Ray."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from thqa.data.cache import FeatureCache
from thqa.data.extract import extract_to_cache
from thqa.features.pipeline import FeatureExtractor
from thqa.features.weights import WeightsOptions

REAL = ("vid_real_vox_00015_224.mp4", "vid_real_vox_00373_224.mp4", "vid_ai_dreamtalk_male_256.mp4")
pytestmark = pytest.mark.slow


def _ray():
    return pytest.importorskip("ray")


@pytest.fixture(scope="module")
def files(shared_media):
    return [str(shared_media / n) for n in REAL] + [str(shared_media / "img_real_woman_624.jpg")]


@pytest.fixture(scope="module")
def local_entries(files, backbones, small_settings, tmp_path_factory):
    """What the local engine writes for ``files`` (the session's random-init backbones, seed 3407)."""
    cache = FeatureCache(tmp_path_factory.mktemp("local_cache"))
    s = extract_to_cache(files, cache, FeatureExtractor(small_settings, backbones=backbones, workers=0))
    assert s.done == 3 and s.failed == 1
    return _entries(cache)


@pytest.fixture(scope="module")
def local_ray():
    ray = _ray()
    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=400 * 1024**2)
    yield ray
    ray.shutdown()


def _entries(cache: FeatureCache) -> dict:
    return {k: cache.get(k).arrays for k in cache.keys()}


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert sorted(a[k]) == sorted(b[k]), k
        for name in a[k]:  # the same bits: a file's features do not depend on the engine
            np.testing.assert_array_equal(a[k][name], b[k][name], err_msg=f"{k}/{name}")


def test_ray_engine_writes_the_local_engines_entries(local_ray, files, small_settings, local_entries, tmp_path) -> None:
    from thqa.engines.ray_engine import RayOptions, extract_with_ray

    opts = RayOptions(actors=1, files_per_batch=2)
    s = extract_with_ray(files, tmp_path / "c", small_settings, WeightsOptions(random_init=True), precision="fp32", options=opts)
    assert (s.done, s.reused, s.failed) == (3, 0, 1)
    assert s.failures[0][0].endswith("img_real_woman_624.jpg") and s.failures[0][1] == "NoVideoStreamError"
    _same(_entries(FeatureCache(tmp_path / "c")), local_entries)
    again = extract_with_ray(files, tmp_path / "c", small_settings, WeightsOptions(random_init=True), precision="fp32", options=opts)
    assert (again.done, again.reused, again.failed) == (0, 3, 1)


def test_ray_scores_equal_the_local_scorer(local_ray, files, small_scorer) -> None:
    from thqa.engines.ray_engine import RayOptions, score_with_ray

    got = score_with_ray(files, random_init=True, settings=small_scorer.settings, precision="fp32", options=RayOptions(actors=1))
    want = small_scorer.score_many(files)
    assert [r.path for r in got] == files
    for g, w in zip(got, want):
        assert (g.error is None) == (w.error is None)
        if w.error is None:
            assert g.mos == w.mos  # the same features, the same numbers
            assert g.clip_scores == w.clip_scores
            assert g.seconds == w.seconds and len(g.seconds) == small_scorer.settings.n_clips
            assert g.warnings == w.warnings
            assert g.to_dict() == w.to_dict()  # made the one way (ResultStamp): digest, precision, interval, labels
        else:
            assert g.error_type == w.error_type == "NoVideoStreamError"


def _pids_of(fragment: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if fragment in (d / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def test_a_killed_actor_is_replaced_and_every_entry_is_made(local_ray, files, small_settings, local_entries, tmp_path) -> None:
    from thqa.engines.ray_engine import RayOptions, extract_with_ray

    killed: list[int] = []

    def killer() -> None:  # SIGKILL the backbone actor's process once it has started on the files
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for pid in _pids_of("_BackboneActor"):
                if any((tmp_path / "c").rglob("*.safetensors")):  # it has written at least one entry
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    s = extract_with_ray(files * 1, tmp_path / "c", small_settings, WeightsOptions(random_init=True), precision="fp32", options=RayOptions(actors=1, files_per_batch=1))
    t.join(timeout=5)
    assert killed, "the actor process was never seen"
    assert (s.done + s.reused, s.failed) == (3, 1)
    _same(_entries(FeatureCache(tmp_path / "c")), local_entries)
    assert not list((tmp_path / "c").rglob("*.partial"))


def test_extract_command_with_engine_ray(local_ray, shared_media, tmp_path) -> None:
    import json

    from thqa.cli import app as cli
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{shared_media / REAL[0]}\n{shared_media / 'aud_de_16k_mono.wav'}\n")
    summary = tmp_path / "s.json"
    argv = ["-q", "extract", str(manifest), "--cache-dir", str(tmp_path / "c"), "--engine", "ray", "--ray-actors", "1"]
    rc = cli.main([*argv, "--random-init", "--precision", "fp32", "--clips", "1", "--summary-json", str(summary)])
    doc = json.loads(summary.read_text())
    assert rc == 1 and (doc["done"], doc["failed"]) == (1, 1)
    assert doc["failures"][0]["error_type"] == "NoVideoStreamError"
    rows = (tmp_path / "c" / "failures.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(f"{shared_media / 'aud_de_16k_mono.wav'},NoVideoStreamError,")
    assert doc["pipeline"]["engine"] == "ray"


def test_a_cache_the_workers_cannot_write_is_refused(local_ray, tmp_path) -> None:
    from thqa.errors import CacheError
    from thqa.engines.ray_engine import check_shared_cache

    assert len(check_shared_cache(tmp_path / "ok")) == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="cache"):
        check_shared_cache(blocker / "sub")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_two_node_cluster_runs_tasks_on_both_nodes(files, small_settings, local_entries, tmp_path) -> None:
    ray = _ray()
    ray.shutdown()
    exe = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    common = ["--num-cpus=2", "--object-store-memory=300000000", "--disable-usage-stats"]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    try:
        subprocess.run([exe, "start", "--head", f"--port={port}", "--include-dashboard=false", '--resources={"node_a": 1}', *common], check=True, capture_output=True, env=env, timeout=120)
        subprocess.run([exe, "start", f"--address=127.0.0.1:{port}", '--resources={"node_b": 1}', *common], check=True, capture_output=True, env=env, timeout=120)
        from thqa.engines.ray_engine import RayOptions, extract_with_ray

        opts = RayOptions(address=f"127.0.0.1:{port}", actors=2, files_per_batch=1)  # connects as --ray-address does
        s = extract_with_ray(files, tmp_path / "c", small_settings, WeightsOptions(random_init=True), precision="fp32", options=opts)
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2
        assert (s.done, s.failed) == (3, 1)
        assert sorted(s.pipeline["prep_nodes"]) == sorted(nodes)  # CPU tasks ran on both nodes
        # the backbone actors were placed on both nodes; which of them got rows depends on which started first
        assert s.pipeline["actor_nodes"] and set(s.pipeline["actor_nodes"]) <= set(nodes)
        from ray._private.state import actors

        placed = {a["Address"]["NodeID"] for a in actors().values() if "BackboneActor" in a.get("ActorClassName", "")}
        assert placed == set(nodes), [(a.get("ActorClassName"), a["Address"]["NodeID"]) for a in actors().values()]
        _same(_entries(FeatureCache(tmp_path / "c")), local_entries)
    finally:
        ray.shutdown()
        subprocess.run([exe, "stop", "--force"], capture_output=True, timeout=120)


def test_engine_ray_without_ray_says_how_to_install(monkeypatch, tmp_path, capsys, shared_media) -> None:
    from thqa.cli import app as cli
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{shared_media / REAL[0]}\n")
    monkeypatch.setitem(sys.modules, "ray", None)
    rc = cli.main(["extract", str(manifest), "--cache-dir", str(tmp_path / "c"), "--engine", "ray", "--random-init"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "pip install 'thqa[ray]'" in err


def test_files_that_come_back_without_a_result_are_reported() -> None:
    """A block whose task failed on every retry is dropped by Ray Data (max_errored_blocks): its files are failures."""
    from thqa.engines.ray_engine import _with_lost

    rows = [{"path": "a.mp4", "status": "done", "error": "", "error_type": ""}]
    out = _with_lost(["a.mp4", "b.mp4", "b.mp4"], rows)
    assert [r["path"] for r in out] == ["a.mp4", "b.mp4"]
    assert out[1]["status"] == "failed" and "b.mp4" in out[1]["error"] and "every retry" in out[1]["error"]
