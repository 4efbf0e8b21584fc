"""Helpers shared by the benchmark scripts: long test files made from ../shared/media, machine facts, JSON output."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDIA = ROOT.parent / "shared" / "media"
RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_facts() -> dict:
    """The CPU's model name and the flags that decide which precisions are fast (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), None)
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return {"cpu_model": model, "cpu_flags": [f for f in wanted if f in flags]}


def machine() -> dict:
    import torch

    return {
        **_cpu_facts(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_result(name: str, doc: dict, path: str | os.PathLike | None = None) -> Path:
    """Write ``doc`` with the machine's facts to ``path``, or to ``benchmarks/results/<name>.json``."""
    p = Path(path) if path else RESULTS / f"{name}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"machine": machine(), **doc}, indent=2))
    return p


def concat_media(sources: list[Path], dst: Path, *, seconds: float, size: int = 512, fps: int = 25, rate: int = 16000) -> Path:
    """Write an H.264 + AAC mp4 of ``seconds`` made by playing ``sources`` one after another (looping),
    every frame resized to size x size, audio resampled to mono ``rate``."""
    import av
    import cv2

    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".partial.mp4")
    out = av.open(str(tmp), "w")
    vs = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "23"})
    vs.width = vs.height = size
    vs.pix_fmt = "yuv420p"
    aus = out.add_stream("aac", rate=rate, layout="mono")
    n_frames = int(round(seconds * fps))
    n_samples = int(round(seconds * rate))
    written_v = written_a = 0
    i = 0
    while written_v < n_frames:
        src = sources[i % len(sources)]
        i += 1
        with av.open(str(src)) as c:
            for frame in c.decode(video=0):
                if written_v >= n_frames:
                    break
                img = cv2.resize(frame.to_ndarray(format="rgb24"), (size, size), interpolation=cv2.INTER_AREA)
                vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                vf.pts = written_v
                vf.time_base = Fraction(1, fps)
                for pkt in vs.encode(vf):
                    out.mux(pkt)
                written_v += 1
        # audio of the same source, trimmed to the frames it gave
        with av.open(str(src)) as c:
            if c.streams.audio:
                rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
                chunks = [f2.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f2 in rs.resample(fr)]
                y = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
            else:
                y = np.zeros(0, np.float32)
        want = min(n_samples, int(round(written_v / fps * rate))) - written_a
        y = np.pad(y[:want], (0, max(0, want - y.shape[0]))).astype(np.float32)
        for k in range(0, y.shape[0], 1024):
            chunk = y[k : k + 1024]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            af.sample_rate = rate
            af.pts = written_a + k
            af.time_base = Fraction(1, rate)
            for pkt in aus.encode(af):
                out.mux(pkt)
        written_a += y.shape[0]
    for pkt in vs.encode(None):
        out.mux(pkt)
    for pkt in aus.encode(None):
        out.mux(pkt)
    out.close()
    os.replace(tmp, dst)
    return dst


def run_timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run a command; wall seconds and peak RSS (MiB) of the child from /usr/bin/time -v."""
    full = ["/usr/bin/time", "-v", *cmd] if Path("/usr/bin/time").exists() else cmd
    t = time.perf_counter()
    p = subprocess.run(full, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t
    rss = None
    for line in p.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.split(":")[1]) / 1024.0
    return {"cmd": " ".join(cmd), "rc": p.returncode, "wall_s": round(wall, 2), "peak_rss_mib": rss, "stdout": p.stdout[-2000:], "stderr_tail": p.stderr[-1500:]}


def thqa_cmd() -> list[str]:
    return [sys.executable, "-m", "thqa.cli"]
