"""The Ray engine against the local one on this machine: throughput on 1 node and on 2 nodes (both started here with
`ray start`), and the time Ray adds per video.

* throughput: N files at the default settings (6 clips), local engine vs Ray on one node vs Ray on two nodes of
  ``--cpus-per-node`` logical CPUs each (on a 2-core machine the two nodes share the same two cores);
* overhead: the same N files at tiny settings (1 clip of 8 frames at 64 px), where the backbones cost almost
  nothing, so (Ray time - local time) / N is what Ray adds per video (scheduling, object store, actor calls).

Usage: python benchmarks/bench_ray.py [--n 8] [--cpus-per-node 2] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import SHARED_MEDIA, write_result


def _files(n: int) -> list[str]:
    from bench_throughput import make_copies, pick_sources

    srcs = pick_sources(SHARED_MEDIA, 512)
    return [str(p) for p in make_copies(srcs, n, Path(tempfile.mkdtemp(prefix="thqa-ray-")) / "files")]


def local(files, settings) -> dict:
    from thqa.data.cache import FeatureCache
    from thqa.data.extract import extract_to_cache
    from thqa.features.pipeline import FeatureExtractor
    from thqa.features.weights import WeightsOptions

    ex = FeatureExtractor(settings, WeightsOptions(random_init=True), device="cpu", workers=0)
    t = time.perf_counter()
    s = extract_to_cache(files, FeatureCache(tempfile.mkdtemp()), ex)
    return {"done": s.done, "seconds": round(time.perf_counter() - t, 2), "videos_per_s": round(s.done / (time.perf_counter() - t), 3)}


def on_ray(files, settings, actors: int) -> dict:
    from thqa.engines.ray_engine import RayOptions, extract_with_ray
    from thqa.features.weights import WeightsOptions

    t = time.perf_counter()
    s = extract_with_ray(files, tempfile.mkdtemp(), settings, WeightsOptions(random_init=True), device="cpu", options=RayOptions(actors=actors, files_per_batch=1))
    wall = time.perf_counter() - t
    return {
        "done": s.done,
        "seconds": round(wall, 2),
        "pipeline_seconds": round(s.extract_seconds, 2),
        "videos_per_s": round(s.done / s.extract_seconds, 3),
        "nodes_used": len(s.pipeline["actor_nodes"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--cpus-per-node", type=int, default=2)
    ap.add_argument("--only-overhead", action="store_true", help="only the per-video overhead: tiny settings at N and 3N files")
    ap.add_argument("--json")
    args = ap.parse_args()

    import ray

    from thqa.features.pipeline import ExtractionSettings

    files = _files(args.n)
    full, tiny = ExtractionSettings(), ExtractionSettings(n_clips=1, clip_frames=8, frame_size=64)
    if args.only_overhead:
        more = _files(3 * args.n)
        doc = {"n_files": [len(files), len(more)], "local_tiny": [local(files, tiny), local(more, tiny)]}
        ray.init(num_cpus=args.cpus_per_node, include_dashboard=False, log_to_driver=False)
        doc["ray_1_node_tiny"] = [on_ray(files, tiny, actors=1), on_ray(more, tiny, actors=1)]
        ray.shutdown()
        lo = [x["seconds"] for x in doc["local_tiny"]]
        ry = [x["pipeline_seconds"] for x in doc["ray_1_node_tiny"]]
        extra = len(more) - len(files)
        doc["ray_s_per_video"] = round((ry[1] - ry[0]) / extra, 3)
        doc["local_s_per_video"] = round((lo[1] - lo[0]) / extra, 3)
        doc["ray_overhead_s_per_video"] = round(doc["ray_s_per_video"] - doc["local_s_per_video"], 3)
        doc["ray_fixed_s"] = round(ry[0] - len(files) * doc["ray_s_per_video"], 2)
        print(json.dumps(doc, indent=1))
        print(f"-> {write_result('ray_overhead_cpu', doc)}")
        return
    res: dict = {"n_files": len(files), "cpus_per_node": args.cpus_per_node}
    res["local"] = local(files, full)
    print("local", res["local"], flush=True)
    res["local_tiny"] = local(files, tiny)
    print("local tiny", res["local_tiny"], flush=True)

    ray.init(num_cpus=args.cpus_per_node, include_dashboard=False, log_to_driver=False)
    res["ray_1_node"] = on_ray(files, full, actors=1)
    print("ray 1 node", res["ray_1_node"], flush=True)
    res["ray_1_node_tiny"] = on_ray(files, tiny, actors=1)
    print("ray 1 node tiny", res["ray_1_node_tiny"], flush=True)
    ray.shutdown()

    exe = str(Path(sys.executable).parent / "ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = [f"--num-cpus={args.cpus_per_node}", "--disable-usage-stats", "--object-store-memory=500000000"]
    try:
        subprocess.run([exe, "start", "--head", f"--port={port}", "--include-dashboard=false", *common], check=True, capture_output=True)
        subprocess.run([exe, "start", f"--address=127.0.0.1:{port}", *common], check=True, capture_output=True)
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
        res["ray_2_nodes"] = on_ray(files, full, actors=2)
        print("ray 2 nodes", res["ray_2_nodes"], flush=True)
    finally:
        ray.shutdown()
        subprocess.run([exe, "stop", "--force"], capture_output=True)
    res["two_over_one_node"] = round(res["ray_2_nodes"]["videos_per_s"] / res["ray_1_node"]["videos_per_s"], 3)
    res["ray_overhead_s_per_video"] = round((res["ray_1_node_tiny"]["pipeline_seconds"] - res["local_tiny"]["seconds"]) / len(files), 3)
    print(f"2 nodes / 1 node = {res['two_over_one_node']}; Ray adds {res['ray_overhead_s_per_video']} s per video", flush=True)
    print(f"-> {write_result('ray_cpu', res, args.json)}")


if __name__ == "__main__":
    main()
