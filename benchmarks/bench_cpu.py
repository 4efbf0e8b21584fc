"""One file in seconds on a CPU, measured in one run: start-up against the per-file cost of `thqa score`, where the
start-up goes, and each path the backbones could take (precision, memory layout, batch size, oneDNN, torch.compile)
with its time, FLOP fraction, feature agreement and how far a fusion model's MOS moves.

1. `thqa score A` against `thqa score A B C` (three 8 s 512x512 files made from ../shared/media), interleaved,
   ``--repeats`` times, for this tree and, with ``--baseline DIR`` (an older thqa source tree), for that one: with
   random-init backbones and with weight files (the seeded random weights saved to files: the path a user with the
   published weights takes). Marginal per-file cost = (ABC - A) / 2; start-up = A - marginal; target A <= 1.5x marginal.
2. The start-up profile: a fresh process times each stage (imports, building each backbone, hashing the weights,
   the decoding side's imports and numba set-up, the first and second forward pass).
3. The backbones' paths on one file's clips: seconds per clip / frame, GFLOP/s against the matmul peak of the same
   dtype measured in the same run (FLOPs counted by fvcore), cosine similarity and largest difference to the default
   fp32 path; with ``--checkpoint`` the MOS of the file in fp32 and in bf16 (all its clips through both).

On a CPU without bf16 in hardware (no AVX-512 BF16 or AMX) bf16 is emulated: ``--bf16-clips`` (default 1) limits the
SlowFast clips run in bf16. Usage:

    nice -n 10 python benchmarks/bench_cpu.py --threads 2 --repeats 3 --baseline /tmp/thqa-base --checkpoint CK
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import ROOT, SHARED_MEDIA, concat_media, run_timed, write_result

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `thqa` sets it (before torch loads OpenMP)

SOURCES = ("vid_real_vox_00015_224.mp4", "vid_ai_vasa1_man_512.mp4", "vid_real_woman_blue_700.mp4")


def _spread(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3), "n": len(xs)}


def make_files(work: Path) -> list[Path]:
    """Three 8-second 512x512 files, each the sources in another order (same length, different content)."""
    srcs = [SHARED_MEDIA / n for n in SOURCES]
    return [concat_media(srcs[i:] + srcs[:i], work / f"{name}_8s.mp4", seconds=8) for i, name in enumerate("ABC")]


def make_weight_files(work: Path, tree: Path) -> tuple[Path, Path, Path]:
    """The seed-3407 random-init weights of both backbones saved as files (what --swin-weights/--slowfast-weights
    take), so that the route of users with the published weights can be timed offline; and an (untrained, seeded)
    fusion checkpoint that names those backbones, which `thqa score` needs to use weight files."""
    swin, sf, ck = work / "swin_seed3407.safetensors", work / "slowfast_seed3407.pyth", work / "fusion_untrained.safetensors"
    if not (swin.exists() and sf.exists() and ck.exists()):
        code = (
            "import sys, torch; from safetensors.torch import save_file\n"
            "from thqa.features.weights import build_spatial, build_temporal, WeightsOptions\n"
            "from thqa.models.checkpoint import save_checkpoint; from thqa.models.fusion import FusionConfig, FusionModel\n"
            "from thqa.features.pipeline import ExtractionSettings\n"
            "o = WeightsOptions(random_init=True); s, si = build_spatial(o); t, ti = build_temporal(o)\n"
            "save_file({k: v.contiguous() for k, v in s.swin.state_dict().items()}, sys.argv[1])\n"
            "from thqa.features.weights import _seeded; from pytorchvideo.models.hub import slowfast_r50\n"
            "with _seeded(3407): full = slowfast_r50(pretrained=False)  # as build_temporal draws it: the whole net\n"
            "torch.save({'model_state': full.state_dict()}, sys.argv[2])\n"
            "torch.manual_seed(3407); m = FusionModel(FusionConfig())\n"
            "save_checkpoint(sys.argv[3], m, settings=ExtractionSettings(), backbones={'swin_t': si.to_dict(), 'slowfast_r50': ti.to_dict()})\n"
        )
        subprocess.run([sys.executable, "-c", code, str(swin), str(sf), str(ck)], check=True, env={**os.environ, "PYTHONPATH": str(tree)})
    return swin, sf, ck


# -- 1. thqa score A against A B C -------------------------------------------------------------------------------------
def cli_runs(args, files: list[Path], trees: dict[str, Path], weight_files: tuple[Path, Path, Path], home: Path) -> dict:
    """Interleaved A / A B C runs of each variant: (tree, extra options, extra environment)."""
    files_opts = ["--checkpoint", str(weight_files[2]), "--swin-weights", str(weight_files[0]), "--slowfast-weights", str(weight_files[1])]
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}  # what thqa's CLI now sets; given to the baseline too, to compare like with like
    variants: dict[str, tuple[Path, list[str], dict]] = {}
    for label, tree in trees.items():
        variants[f"{label} random-init"] = (tree, ["--random-init"], passive)
        variants[f"{label} weight files"] = (tree, files_opts, passive)
        if label == "this":  # its default on 2+ cores is one decoding worker, started while the models are built
            variants["this random-init --workers 0"] = (tree, ["--random-init", "--workers", "0"], passive)
            if args.omp_active:
                variants["this random-init OMP_WAIT_POLICY=ACTIVE"] = (tree, ["--random-init"], {"OMP_WAIT_POLICY": "ACTIVE"})
    out: dict[str, dict] = {v: {"A": [], "ABC": [], "rss_A_mib": []} for v in variants}
    env_base = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads), "THQA_CACHE_HOME": str(home)}

    def run(variant: str, paths: list[Path]) -> dict:
        tree, extra, env = variants[variant]
        cmd = [sys.executable, "-m", "thqa.cli", "-q", "score", *map(str, paths), "--threads", str(args.threads), "--device", "cpu", *extra]
        r = run_timed(cmd, env={**env_base, **env, "PYTHONPATH": str(tree)})
        if r["rc"] != 0:
            raise SystemExit(f"{variant}: rc {r['rc']}: {r['stderr_tail'][-800:]}")
        return r

    for v in variants:  # one unmeasured run each: the OS file cache, numba's cache, thqa's digest cache
        run(v, files[:1])
    for rep in range(args.repeats):
        for v in variants:
            a = run(v, files[:1])
            abc = run(v, files)
            out[v]["A"].append(a["wall_s"])
            out[v]["ABC"].append(abc["wall_s"])
            out[v]["rss_A_mib"].append(a["peak_rss_mib"])
            print(f"  [{rep + 1}/{args.repeats}] {v:<28} A {a['wall_s']:6.1f} s   A B C {abc['wall_s']:6.1f} s   peak RSS (A) {a['peak_rss_mib']:.0f} MiB", flush=True)
    summary = {}
    for v, d in out.items():
        marg = [(abc - a) / 2 for a, abc in zip(d["A"], d["ABC"])]
        ratio = [a / m for a, m in zip(d["A"], marg) if m > 0]
        summary[v] = {
            "A_s": _spread(d["A"]),
            "ABC_s": _spread(d["ABC"]),
            "marginal_per_file_s": _spread(marg),
            "startup_s": _spread([a - m for a, m in zip(d["A"], marg)]),
            "A_over_marginal": _spread(ratio) if ratio else None,
            "peak_rss_A_mib": _spread(d["rss_A_mib"]),
            "runs": d,
        }
    return summary


# -- 2. where the start-up goes ----------------------------------------------------------------------------------------
PROFILE = r"""
import json, os, sys, time
T, C = {}, {}
t, c = time.perf_counter(), time.process_time()
def lap(name):
    global t, c
    now, cnow = time.perf_counter(), time.process_time()
    T[name], C[name] = round(now - t, 3), round(cnow - c, 3)
    t, c = now, cnow
import torch; lap("import torch")
torch.set_num_threads(int(sys.argv[2]))
import thqa.cli.app, thqa.scoring.scorer; lap("import thqa (cli, scorer, pipeline)")
from thqa.features.pipeline import ExtractionSettings, prepare, warm_up, Backbones
try:
    warm_up(ExtractionSettings(), png=False)
except TypeError:  # an older thqa
    warm_up(ExtractionSettings())
lap("decoding side: imports (PyAV, scipy.signal, librosa; torchvision before) and numba set-up")
item = prepare(sys.argv[1], ExtractionSettings()); lap("prepare() one 8 s file (decode 6 clips, audio maps, crops)")
import timm; lap("import timm (+ torchvision, torch._dynamo)")
import pytorchvideo.models.hub; lap("import pytorchvideo")
from thqa.features.weights import SWIN_NAME, WeightsOptions, build_spatial, build_temporal, state_digest
from pytorchvideo.models.hub import slowfast_r50
torch.manual_seed(3407); s = timm.create_model(SWIN_NAME, pretrained=False, num_classes=0); lap("Swin-T construction with random init")
torch.manual_seed(3407); f = slowfast_r50(pretrained=False); lap("SlowFast construction with random init")
state_digest(s); state_digest(f); lap("hashing both backbones (62 M parameters)")
del s, f
o = WeightsOptions(swin_weights=sys.argv[3], slowfast_weights=sys.argv[4])
build_spatial(o); build_temporal(o); lap("both backbones from weight files, 1st build in this process")
sp, _ = build_spatial(o); tp, _ = build_temporal(o); lap("both backbones from weight files, 2nd build")
bb = Backbones(WeightsOptions(swin_weights=sys.argv[3], slowfast_weights=sys.argv[4]), device="cpu", start_workers=False)
lap("Backbones() (weight files)")
x1, c1 = item.spatial_input[:1], item.clips[:1]
bb.run_spatial(x1); bb.run_temporal(c1); lap("first forward: 1 frame + 1 clip")
bb.run_spatial(x1); bb.run_temporal(c1); lap("second forward: 1 frame + 1 clip")
import resource
T["peak_rss_mib"] = C["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print("PROFILE " + json.dumps({"wall": T, "cpu": C}))
"""


def startup_profile(args, files, trees: dict[str, Path], weight_files, home: Path) -> dict:
    out = {}
    for label, tree in trees.items():
        runs = []
        for _ in range(args.profile_repeats):
            env = {**os.environ, "PYTHONPATH": str(tree), "THQA_CACHE_HOME": str(home), "OMP_NUM_THREADS": str(args.threads),
                   "OMP_WAIT_POLICY": "PASSIVE"}
            p = subprocess.run([sys.executable, "-c", PROFILE, str(files[0]), str(args.threads), *map(str, weight_files[:2])],
                               capture_output=True, text=True, env=env)
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("PROFILE ")), None)
            if line is None:
                raise SystemExit(f"profile ({label}) failed: {p.stderr[-1500:]}")
            runs.append(json.loads(line[len("PROFILE "):]))
        out[label] = {kind: {k: _spread([r[kind][k] for r in runs]) for k in runs[0][kind]} for kind in ("wall", "cpu")}
        print(f"  start-up profile ({label}, median of {len(runs)}): wall s, process CPU s")
        for k, v in out[label]["wall"].items():
            print(f"    {k:<75} {v['median']:8.3f} {out[label]['cpu'][k]['median']:8.3f}")
    return out


# -- 3. the backbones' paths -----------------------------------------------------------------------------------------
def _matmul_gflops(dtype, n: int, threads: int, reps: int = 5) -> float:
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(ts) / 1e9


def _flops(model, inputs) -> float:
    """Multiply-adds of one forward pass as fvcore counts them (its "flops" are MACs), times 2."""
    import logging

    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    fca = FlopCountAnalysis(model, inputs)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    return 2.0 * float(fca.total())


def _agree(ref, got) -> dict:
    import numpy as np

    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-30)
    d = np.abs(ref - got)
    return {"cos_min": float(cos.min()), "max_abs_diff": float(d.max()), "max_rel_diff": float(d.max() / max(np.abs(ref).max(), 1e-30))}


def fold_bn(model):
    """SlowFast with every BatchNorm folded into the convolution before it (pytorchvideo's conv/norm pairs)."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = {"conv": "norm", "conv_a": "norm_a", "conv_b": "norm_b", "conv_c": "norm_c", "branch1_conv": "branch1_norm", "conv_fast_to_slow": "norm"}
    for mod in model.modules():
        for c, b in pairs.items():
            conv, bn = getattr(mod, c, None), getattr(mod, b, None)
            if isinstance(conv, torch.nn.Conv3d) and isinstance(bn, torch.nn.BatchNorm3d):
                setattr(mod, c, fuse_conv_bn_eval(conv, bn))
                setattr(mod, b, torch.nn.Identity())
    return model


def paths(args, files) -> dict:
    import copy

    import torch

    from thqa.features.temporal import preprocess_clips
    from thqa.utils.hardware import cpu_info
    from thqa.features.pipeline import Backbones, ExtractionSettings, prepare
    from thqa.features.weights import WeightsOptions

    torch.set_num_threads(args.threads)
    setup: dict = {}
    item = prepare(files[0], ExtractionSettings())
    bb = Backbones(WeightsOptions(random_init=True), device="cpu", start_workers=False, precision="fp32")
    clips, frames = item.clips[: args.clips], item.spatial_input
    peak = {"fp32": _matmul_gflops(torch.float32, 2048, args.threads), "bf16": _matmul_gflops(torch.bfloat16, 1024 if not cpu_info().bf16 else 2048, args.threads, 3)}
    print(f"  matmul peak: fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s ({args.threads} threads)", flush=True)
    slow, fast = preprocess_clips(clips[:1])
    with torch.inference_mode():
        flops = {"slowfast_clip": _flops(bb.temporal, ([slow, fast],)), "swin_frame": _flops(bb.spatial, (frames[:1],))}
    print(f"  FLOPs: SlowFast {flops['slowfast_clip'] / 1e9:.1f} G per clip, Swin-T {flops['swin_frame'] / 1e9:.1f} G per frame", flush=True)
    variants = []  # (name, branch, fn, inputs, batch, dtype)

    def temporal(model, channels_last=False, autocast=False):
        def run(chunk):
            s, f = preprocess_clips(chunk)
            if channels_last:
                s, f = s.contiguous(memory_format=torch.channels_last_3d), f.contiguous(memory_format=torch.channels_last_3d)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return model([s, f]).float()
        return run

    def spatial(model, autocast=False):
        def run(chunk):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return model(chunk).float()
        return run

    def no_onednn(fn):
        def run(chunk):
            with torch.backends.mkldnn.flags(enabled=False):
                return fn(chunk)
        return run

    def compiled(branch, model, wrap, x):
        """``wrap`` of torch.compile(model), compiled by a first call whose time goes into ``setup``."""
        t = time.perf_counter()
        fn = wrap(torch.compile(model, dynamic=False))
        fn(x[:1])
        setup[f"{branch} torch.compile (first call)"] = round(time.perf_counter() - t, 1)
        return fn

    variants.append(("fp32 (default: batch 1)", "temporal", temporal(bb.temporal), clips, 1, "fp32"))
    cl = copy.deepcopy(bb.temporal).to(memory_format=torch.channels_last_3d)
    variants.append(("fp32 channels-last 3-D", "temporal", temporal(cl, channels_last=True), clips, 1, "fp32"))
    for b in args.batches:
        variants.append((f"fp32 batch {b}", "temporal", temporal(bb.temporal), clips, b, "fp32"))
    variants.append(("fp32 BatchNorm folded into the convs", "temporal", temporal(fold_bn(copy.deepcopy(bb.temporal))), clips, 1, "fp32"))
    variants.append(("fp32 oneDNN off (ATen's own conv3d)", "temporal", no_onednn(temporal(bb.temporal)), clips[:1], 1, "fp32"))
    try:
        s, f = preprocess_clips(clips[:1])
        t = time.perf_counter()
        with torch.inference_mode():
            traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(bb.temporal.eval(), ([s, f],), check_trace=False)))
        setup["temporal TorchScript trace + freeze"] = round(time.perf_counter() - t, 2)
        variants.append(("fp32 TorchScript frozen (deprecated API)", "temporal", temporal(traced), clips, 1, "fp32"))
    except Exception as exc:  # noqa: BLE001 - report, do not stop the run
        setup["temporal TorchScript trace + freeze"] = f"failed: {type(exc).__name__}: {exc}"[:200]
    if args.compile:
        variants.append(("fp32 torch.compile (inductor)", "temporal", compiled("temporal", bb.temporal, temporal, clips), clips, 1, "fp32"))
    if args.bf16_clips:
        variants.append(("bf16 autocast", "temporal", temporal(bb.temporal, autocast=True), clips[: args.bf16_clips], 1, "bf16"))
    variants.append(("fp32 (default: batch 1)", "spatial", spatial(bb.spatial), frames, 1, "fp32"))
    variants.append((f"fp32 batch {frames.shape[0]}", "spatial", spatial(bb.spatial), frames, frames.shape[0], "fp32"))
    if args.compile:
        variants.append(("fp32 torch.compile (inductor)", "spatial", compiled("spatial", bb.spatial, spatial, frames), frames, 1, "fp32"))
    variants.append(("bf16 autocast", "spatial", spatial(bb.spatial, autocast=True), frames, 1, "bf16"))
    for name, branch, fn, x, batch, dtype in variants:  # first call of each: set-up (oneDNN primitives), not counted
        fn(x[:batch])
    # interleaved: round r runs chunk r of every path, so that a busy moment of the machine hits them all alike
    per: dict[int, list[float]] = {k: [] for k in range(len(variants))}
    outs: dict[int, list] = {k: [] for k in range(len(variants))}
    for r in range(max(-(-v[3].shape[0] // v[4]) for v in variants)):
        for k, (name, branch, fn, x, batch, dtype) in enumerate(variants):
            chunk = x[r * batch : (r + 1) * batch]
            if chunk.shape[0] == 0:
                continue
            t = time.perf_counter()
            outs[k].append(fn(chunk))
            per[k].append((time.perf_counter() - t) / chunk.shape[0])
    rows = []
    for k, (name, branch, fn, x, batch, dtype) in enumerate(variants):
        y = torch.cat(outs[k]).float().numpy()
        f = flops["slowfast_clip" if branch == "temporal" else "swin_frame"]
        med = statistics.median(per[k])
        row = {"path": name, "branch": branch, "batch": batch, "dtype": dtype, "s_per_item": _spread(per[k]),
               "gflops_per_s": round(f / med / 1e9, 1), "fraction_of_matmul_peak": round(f / med / 1e9 / peak[dtype], 3)}
        rows.append((row, y))
        print(f"  {branch:<8} {name:<42} {med:7.3f} s/item  {row['gflops_per_s']:6.1f} GFLOP/s = {100 * row['fraction_of_matmul_peak']:5.1f} % of {dtype} peak", flush=True)
    ref_t = next(y for row, y in rows if row["branch"] == "temporal")
    ref_s = next(y for row, y in rows if row["branch"] == "spatial")
    out_rows = []
    for row, y in rows:
        ref = ref_t if row["branch"] == "temporal" else ref_s
        row["agreement_with_fp32_default"] = _agree(ref[: y.shape[0]], y)
        out_rows.append(row)
    return {"matmul_peak_gflops": {k: round(v, 1) for k, v in peak.items()}, "flops": flops, "clips_measured": int(clips.shape[0]),
            "setup_s": setup, "rows": out_rows}


def mos_movement(args, files) -> dict:
    """The checkpoint's MOS of each file with fp32 and with bf16 backbone features (all clips through both)."""
    import torch

    from thqa.features.pipeline import prepare
    from thqa.scoring.scorer import Scorer

    torch.set_num_threads(args.threads)
    scorer = Scorer(args.checkpoint, random_init=True, device="cpu", workers=0, precision="fp32")
    bb = scorer.backbones
    rows = []
    for f in files[: args.mos_files]:
        item = prepare(f, scorer.settings)
        mos, feats_of = {}, {}
        for prec in ("fp32", "bf16-autocast"):
            bb.precision = prec
            t = time.perf_counter()
            feats = feats_of[prec] = bb.features([item])[0]
            mos[prec] = (scorer.score_features([feats])[0][0], time.perf_counter() - t)
        bb.precision = "fp32"
        rows.append({"file": f.name, "clips": len(item.unique), "mos_fp32": mos["fp32"][0], "mos_bf16": mos["bf16-autocast"][0],
                     "move": abs(mos["fp32"][0] - mos["bf16-autocast"][0]), "seconds_fp32": round(mos["fp32"][1], 2),
                     "seconds_bf16": round(mos["bf16-autocast"][1], 2),
                     "features": {b: _agree(getattr(feats_of["fp32"], b), getattr(feats_of["bf16-autocast"], b)) for b in ("spatial", "temporal")}})
        print(f"  {f.name}: MOS fp32 {rows[-1]['mos_fp32']:.5f}  bf16 {rows[-1]['mos_bf16']:.5f}  moved {rows[-1]['move']:.5f}", flush=True)
    rmse = None
    if args.metrics:
        rmse = json.loads(Path(args.metrics).read_text()).get("metrics", {}).get("rmse")
    return {"checkpoint": args.checkpoint, "settings": scorer.settings.to_dict(), "heldout_rmse": rmse, "rows": rows,
            "max_move": max((r["move"] for r in rows), default=None)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved A / A B C runs per variant")
    ap.add_argument("--profile-repeats", type=int, default=2)
    ap.add_argument("--baseline", type=Path, help="an older thqa source tree to run side by side (e.g. a `git archive` of main)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thqa-bench-cpu")
    ap.add_argument("--clips", type=int, default=3, help="SlowFast clips per path (fp32)")
    ap.add_argument("--batches", type=int, nargs="*", default=[3], help="CPU batch sizes to try besides 1")
    ap.add_argument("--bf16-clips", type=int, default=1, help="SlowFast clips in bf16 (emulated, ~170 s each, without bf16 hardware)")
    ap.add_argument("--compile", action="store_true", help="also torch.compile (inductor; minutes of compilation)")
    ap.add_argument("--omp-active", action="store_true", help="also `thqa score` with OMP_WAIT_POLICY=ACTIVE (spinning threads)")
    ap.add_argument("--checkpoint", help="a fusion checkpoint: the MOS of the files in fp32 and in bf16")
    ap.add_argument("--metrics", help="the checkpoint's held-out metrics JSON (thqa demo's metrics.json), for its RMSE")
    ap.add_argument("--mos-files", type=int, default=1)
    ap.add_argument("--skip", nargs="*", default=[], choices=["cli", "profile", "paths", "mos"])
    ap.add_argument("--json", help="output path (default benchmarks/results/cpu_<date>.json)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    files = make_files(args.work)
    trees = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    home = Path(tempfile.mkdtemp(prefix="thqa-home-", dir=args.work))
    doc: dict = {"threads": args.threads, "files": [f.name for f in files], "trees": {k: str(v) for k, v in trees.items()}}
    sys.path.insert(0, str(ROOT))
    from thqa.utils.hardware import cpu_info

    doc["cpu"] = cpu_info().to_dict()
    print(f"CPU: {doc['cpu']}")
    t0 = time.perf_counter()
    if "cli" not in args.skip or "profile" not in args.skip:
        weight_files = make_weight_files(args.work, ROOT)
    if "profile" not in args.skip:
        print("start-up profile")
        doc["startup_profile"] = startup_profile(args, files, trees, weight_files, home)
    if "cli" not in args.skip:
        print("thqa score A against A B C")
        doc["score_cli"] = cli_runs(args, files, trees, weight_files, home)
        for v, s in doc["score_cli"].items():
            r = s["A_over_marginal"]
            print(f"  {v:<28} A {s['A_s']['median']:.1f} s, marginal {s['marginal_per_file_s']['median']:.1f} s/file, start-up "
                  f"{s['startup_s']['median']:.1f} s, A/marginal {r['median'] if r else float('nan'):.2f} ({r['min'] if r else 0:.2f}-{r['max'] if r else 0:.2f})")
    if "paths" not in args.skip:
        print("backbone paths")
        doc["paths"] = paths(args, files)
    if args.checkpoint and "mos" not in args.skip:
        print("MOS movement, fp32 against bf16 features")
        doc["mos_movement"] = mos_movement(args, files)
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    out = write_result(f"cpu_{time.strftime('%Y%m%d')}", doc, args.json)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
