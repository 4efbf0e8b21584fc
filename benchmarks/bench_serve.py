"""`thqa serve` against `thqa score` (random-init backbones, CPU): warm latency of one 8 s file against a cold
`thqa score` of it and the marginal cost per file of a three-file `thqa score`; throughput with 1, 2, 4 and 8
concurrent clients against `thqa score` of the same files in one call; peak memory of the service idle and under load.

The files are made from ../shared/media (as bench_score.py). Targets (issue 26): warm latency <= 1.2x the marginal
cost; throughput >= 0.9x `thqa score`'s. Needs a quiet machine: on a shared one the numbers say little.
Usage: python benchmarks/bench_serve.py [--threads 2] [--port 8765]
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _util import SHARED_MEDIA, concat_media, run_timed, thqa_cmd, write_result


def _tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (the Ray processes the service starts), MiB (/proc)."""
    parent, rss = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            rss[int(d.name)] = int((d / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    tree, grew = {pid}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in tree} - tree
        tree |= new
        grew = bool(new)
    return sum(rss.get(p, 0) for p in tree) / 2**20


class _PeakRSS(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, _tree_rss_mib(self.pid))


def _start_service(threads: int, port: int) -> subprocess.Popen:
    cmd = [*thqa_cmd(), "serve", "--random-init", "--threads", str(threads), "--port", str(port), "--max-queue", "64"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        if "ready on" in line:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep draining
            return proc
    raise RuntimeError(f"thqa serve did not start (rc {proc.wait()})")


def _throughput(url: str, files: list[Path], clients: int) -> dict:
    from thqa.engines.client import Client

    jobs = [files[i % len(files)] for i in range(max(len(files), clients) * 2)]
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        res = list(pool.map(lambda f: Client(url).score(f), jobs))
    wall = time.perf_counter() - t
    assert all(r.ok for r in res)
    return {"clients": clients, "files": len(jobs), "wall_s": round(wall, 2), "files_per_s": round(len(jobs) / wall, 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "thqa-bench"))
    args = ap.parse_args()
    srcs = [SHARED_MEDIA / n for n in ("vid_real_vox_00015_224.mp4", "vid_ai_vasa1_man_512.mp4", "vid_real_woman_blue_700.mp4")]
    work = Path(args.work)
    files = [concat_media(srcs[i:] + srcs[:i], work / f"serve_8s_{i}.mp4", seconds=8) for i in range(3)]
    base = [*thqa_cmd(), "score", "--random-init", "--threads", str(args.threads), "--format", "json"]
    cold = run_timed([*base, str(files[0])])
    three = run_timed([*base, *map(str, files)])
    marginal = (three["wall_s"] - cold["wall_s"]) / 2
    doc: dict = {"threads": args.threads, "cold_one_file_s": cold["wall_s"], "three_files_s": three["wall_s"],
                 "marginal_per_file_s": round(marginal, 2), "score_files_per_s": round(3 / three["wall_s"], 4)}
    print(f"thqa score: one file {cold['wall_s']:.1f} s cold, three files {three['wall_s']:.1f} s, marginal {marginal:.1f} s/file")
    proc = _start_service(args.threads, args.port)
    url = f"http://127.0.0.1:{args.port}"
    try:
        from thqa.engines.client import Client

        doc["idle_rss_mib"] = round(_tree_rss_mib(proc.pid))
        Client(url).score(files[0])  # the first request: its one-time costs are not the warm latency
        lat = []
        for _ in range(3):
            t = time.perf_counter()
            Client(url).score(files[0])
            lat.append(time.perf_counter() - t)
        doc["warm_latency_s"] = round(statistics.median(lat), 2)
        doc["warm_over_marginal"] = round(doc["warm_latency_s"] / marginal, 2) if marginal > 0 else None
        print(f"warm latency {doc['warm_latency_s']:.2f} s ({doc['warm_over_marginal']}x the marginal cost; target <= 1.2x)")
        peak = _PeakRSS(proc.pid)
        peak.start()
        doc["throughput"] = []
        for c in (1, 2, 4, 8):
            r = _throughput(url, files, c)
            r["over_score"] = round(r["files_per_s"] / doc["score_files_per_s"], 2)
            doc["throughput"].append(r)
            print(f"{c} client(s): {r['files_per_s']:.3f} files/s ({r['over_score']}x thqa score; target >= 0.9x)")
        peak.stop.set()
        doc["load_peak_rss_mib"] = round(peak.peak)
        print(f"service memory: {doc['idle_rss_mib']} MiB idle, {doc['load_peak_rss_mib']} MiB peak under load")
    finally:
        proc.send_signal(signal.SIGTERM)
        doc["exit_code"] = proc.wait(timeout=300)
    print(f"-> {write_result('serve_cpu', doc)}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
