"""Throughput of `thqa extract` over N files, as a ratio to the two limits measured in the same run.

1. files: N distinct files made by remuxing the videos of --media (no re-encoding: each copy differs only in a
   metadata tag, so every copy has its own content hash and cache entry);
2. decode-only limit: the same worker processes running only `read_clips` (decode the sampled seconds, scale the
   clip frames, decode the audio) - videos/s;
   prepare-only: the whole CPU side (`prepare`: decode + audio features + spatial preprocessing + PNG frames);
3. forward-only limit: both backbones on synthetic prepared files, batched as `thqa extract` batches them (host
   tensors copied to the device included) - videos/s;
4. `thqa extract` (the command, in a subprocess) on a manifest of the N files into an empty cache - videos/s over
   the extraction proper, and the wall time of the whole command.

Usage:
  python benchmarks/bench_throughput.py [--media DIR] [--n 200] [--device auto] [--workers auto] [--json OUT]
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import os
import tempfile
import time
from pathlib import Path

from _util import SHARED_MEDIA, thqa_cmd, write_result


def pick_sources(media: Path, size: int | None) -> list[Path]:
    from thqa.errors import THQAError
    from thqa.media.decode import probe

    out = []
    for p in sorted(media.iterdir()):
        if p.suffix.lower() not in (".mp4", ".mkv", ".mov", ".webm", ".avi"):
            continue
        try:
            info = probe(p)
        except THQAError:
            continue
        if info.duration >= 2.0 and (size is None or (info.width, info.height) == (size, size)):
            out.append(p)
    return out


def make_copies(sources: list[Path], n: int, dst: Path) -> list[Path]:
    """``n`` files named copy_XXXX.EXT: stream copies of the sources in turn, each with its own metadata tag."""
    import av

    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        src = sources[k % len(sources)]
        p = dst / f"copy_{k:04d}{src.suffix}"
        out.append(p)
        if p.exists():
            continue
        with av.open(str(src)) as ic, av.open(str(p), "w") as oc:
            oc.metadata["comment"] = f"thqa benchmark copy {k} of {src.name}"
            streams = {}
            for s in ic.streams:
                if s.type in ("video", "audio"):
                    streams[s.index] = oc.add_stream_from_template(s)
            for pkt in ic.demux(list(ic.streams)):
                if pkt.dts is None or pkt.stream.index not in streams:
                    continue
                pkt.stream = streams[pkt.stream.index]
                oc.mux(pkt)
    return out


def _cpu_rate(paths: list[str], workers: int, what: str) -> dict:
    """Run the CPU side alone in ``workers`` DataLoader processes (as `thqa extract` does); videos/s."""
    import torch

    from thqa.features.pipeline import ExtractionSettings, _identity, _worker_init, warm_up

    warm_up(ExtractionSettings())  # as FeatureExtractor does before it forks its workers
    spans: list = []  # per worker: (pid, start, end, decode_s, audio_s) of each file

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            from thqa.media.decode import probe, read_clips
            from thqa.features.pipeline import prepare
            from thqa.media.sampling import clip_seconds

            s = ExtractionSettings()
            if what == "decode":
                info = probe(paths[i])
                secs = sorted(set(clip_seconds(info.duration, n_clips=s.n_clips)))
                vc = read_clips(paths[i], secs, info=info, audio_rate=s.audio.sample_rate, audio_context=s.audio.context)
                return torch.from_numpy(__import__("numpy").stack([c.frames for c in vc.clips]))
            t0 = time.time()
            item = prepare(paths[i], s, keep_first_frames="png")
            spans.append((os.getpid(), t0, time.time(), item.seconds_decode, item.seconds_audio))
            return item.clips, list(spans)

    loader = torch.utils.data.DataLoader(
        DS(), batch_size=None, num_workers=workers, collate_fn=_identity, worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None, in_order=False,
    )
    t = time.perf_counter()
    t_wall = time.time()
    n = 0
    last: dict = {}
    for out in loader:
        n += 1
        if isinstance(out, tuple):
            for sp in out[1]:
                last[(sp[0], sp[1])] = sp
    dt = time.perf_counter() - t
    doc = {"videos": n, "seconds": round(dt, 2), "videos_per_s": round(n / dt, 2)}
    if last:  # where the workers' time went: inside prepare, or around it
        sp = sorted(last.values(), key=lambda x: x[1])
        busy = sum(e - s for _, s, e, _, _ in sp)
        firsts = {}
        for pid, s, e, _, _ in sp:
            firsts.setdefault(pid, e - s)
        rest = [e - s for pid, s, e, _, _ in sp if (e - s) != firsts[pid]]
        doc["diag"] = {
            "files_timed": len(sp),
            "busy_fraction": round(busy / (max(1, workers) * dt), 3),
            "first_file_s_mean": round(sum(firsts.values()) / len(firsts), 3),
            "other_files_s_mean": round(sum(rest) / max(1, len(rest)), 3),
            "decode_s_mean": round(sum(x[3] for x in sp) / len(sp), 3),
            "audio_s_mean": round(sum(x[4] for x in sp) / len(sp), 3),
            "first_start_after_s": round(sp[0][1] - t_wall, 3),
            "last_end_after_s": round(max(x[2] for x in sp) - t_wall, 3),
        }
    return doc


def forward_rate(device: str, seconds: float, *, channels_last: bool | None = None, bf16: bool = True) -> dict:
    """Both backbones on synthetic prepared files (6 distinct clips each), batched like `thqa extract`."""
    import numpy as np
    import torch

    from thqa.features.pipeline import Backbones, ExtractionSettings, PreparedVideo
    from thqa.features.weights import WeightsOptions

    s = ExtractionSettings()
    bb = Backbones(WeightsOptions(random_init=True), device=device, channels_last=channels_last)
    if not bf16:
        bb._autocast = lambda: torch.autocast("cuda", enabled=False)
    per_batch = max(1, bb.batch_size // s.n_clips)
    g = torch.Generator().manual_seed(0)
    items = [
        PreparedVideo(
            path=f"synthetic_{k}",
            seconds=list(range(s.n_clips)),
            unique=list(range(s.n_clips)),
            index=list(range(s.n_clips)),
            starts=[float(i) for i in range(s.n_clips)],
            clips=torch.randint(0, 256, (s.n_clips, s.clip_frames, s.frame_size, s.frame_size, 3), dtype=torch.uint8, generator=g),
            first_frames=[],
            spatial_input=torch.randn(s.n_clips, 3, s.crop, s.crop, generator=g),
            audio=np.zeros((s.n_clips, 4, s.audio.n_bins, s.audio.n_frames), np.float32),
            has_audio=True,
            info={},
            warnings=[],
        )
        for k in range(per_batch)
    ]
    if bb.device.type == "cuda":
        items = [it.pin_memory() for it in items]  # as the DataLoader hands them over
    t0 = time.perf_counter()
    bb.features(items)  # warm-up: cuDNN autotuning, allocator
    first_s = time.perf_counter() - t0
    bb.features(items)
    n = 0
    t = time.perf_counter()
    while time.perf_counter() - t < seconds or n < 2 * per_batch:
        bb.features(items)
        n += per_batch
    dt = time.perf_counter() - t
    return {"videos": n, "seconds": round(dt, 2), "videos_per_s": round(n / dt, 2), "first_pass_s": round(first_s, 2), "videos_per_batch": per_batch, "clips_per_pass": bb.batch_size, "channels_last": bb.channels_last, "bf16": bf16 and bb.device.type == "cuda"}


def extract_run(paths: list[Path], device: str, workers: str, cache: Path) -> dict:
    manifest = cache.parent / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path"])
        for p in paths:
            w.writerow([str(p)])
    summary = cache.parent / "summary.json"
    cmd = [*thqa_cmd(), "--quiet", "extract", str(manifest), "--cache-dir", str(cache), "--random-init", "--device", device, "--workers", str(workers), "--summary-json", str(summary)]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode not in (0, 1):
        raise SystemExit(f"thqa extract failed ({p.returncode}):\n{p.stderr[-3000:]}")
    doc = json.loads(summary.read_text())
    return {
        "cmd": " ".join(cmd[1:]),
        "rc": p.returncode,
        "wall_s": round(wall, 2),
        "done": doc["done"],
        "failed": doc["failed"],
        "extract_seconds": doc["extract_seconds"],
        "videos_per_s": doc["videos_per_s"],
        "wall_videos_per_s": round(doc["done"] / wall, 2),
        "stage_s": doc["stage_s"],
        "pipeline": doc.get("pipeline", {}),
        "stdout": p.stdout.strip()[-500:],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", default=str(SHARED_MEDIA), help="folder of source videos (default ../shared/media)")
    ap.add_argument("--size", type=int, default=512, help="use sources of size x size only (0: any size)")
    ap.add_argument("--n", type=int, default=200, help="files in the manifest")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", default="auto")
    ap.add_argument("--forward-seconds", type=float, default=20.0)
    ap.add_argument("--work", help="scratch folder (default: a temporary one)")
    ap.add_argument("--variants", action="store_true", help="GPU: also time the backbones in fp32 and without channels-last")
    ap.add_argument("--json", help="write here (default benchmarks/results/throughput_<cpu|gpu>.json)")
    args = ap.parse_args()

    from thqa.features.pipeline import default_workers, resolve_device

    device = resolve_device(args.device)
    workers = default_workers(device) if args.workers == "auto" else int(args.workers)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="thqa-throughput-"))
    sources = pick_sources(Path(args.media), args.size or None)
    if not sources:
        raise SystemExit(f"no usable {args.size}x{args.size} videos in {args.media}")
    t = time.perf_counter()
    files = make_copies(sources, args.n, work / "files")
    make_s = time.perf_counter() - t
    print(f"{len(files)} files from {len(sources)} sources ({', '.join(s.name for s in sources)}) in {make_s:.1f} s", flush=True)
    strs = [str(p) for p in files]
    res: dict = {"n_files": len(files), "sources": [s.name for s in sources], "device": str(device), "workers": workers}

    def save(doc: dict) -> None:  # after every stage: a run cut short still leaves its numbers
        if args.json:
            write_result("", doc, args.json)

    res["decode_only"] = _cpu_rate(strs, workers, "decode")
    print(f"decode-only   {res['decode_only']['videos_per_s']:8.2f} videos/s", flush=True)
    res["prepare_only"] = _cpu_rate(strs, workers, "prepare")
    print(f"prepare-only  {res['prepare_only']['videos_per_s']:8.2f} videos/s (decode + audio features + preprocessing)", flush=True)
    print(f"  where the workers' time went: {res['prepare_only'].get('diag')}", flush=True)
    save(res)
    res["forward_only"] = forward_rate(str(device), args.forward_seconds)
    print(f"forward-only  {res['forward_only']['videos_per_s']:8.2f} videos/s", flush=True)
    if args.variants and device.type == "cuda":
        res["forward_variants"] = []
        for cl, bf in ((False, True), (True, False), (False, False)):
            v = forward_rate(str(device), args.forward_seconds / 2, channels_last=cl, bf16=bf)
            res["forward_variants"].append(v)
            print(f"  channels_last={cl} bf16={bf}: {v['videos_per_s']:8.2f} videos/s", flush=True)
    save(res)
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    res["extract"] = extract_run(files, str(device), str(workers), cache)
    e = res["extract"]
    limit = min(res["decode_only"]["videos_per_s"], res["forward_only"]["videos_per_s"])
    res["limit_videos_per_s"] = limit
    res["ratio_to_limit"] = round(e["videos_per_s"] / limit, 3)
    res["ratio_to_prepare_or_forward"] = round(e["videos_per_s"] / min(res["prepare_only"]["videos_per_s"], res["forward_only"]["videos_per_s"]), 3)
    print(
        f"thqa extract  {e['videos_per_s']:8.2f} videos/s over the extraction ({e['done']} done, {e['failed']} failed; "
        f"command wall {e['wall_s']} s)\nratio to min(decode-only, forward-only) = {res['ratio_to_limit']:.3f}; "
        f"to min(prepare-only, forward-only) = {res['ratio_to_prepare_or_forward']:.3f}",
        flush=True,
    )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    name = "throughput_gpu" if device.type == "cuda" else "throughput_cpu"
    print(f"-> {write_result(name, res, args.json)}")


if __name__ == "__main__":
    sys.exit(main())
