"""Start-up and precision: the CPU's bf16 detection and what "auto" picks from it, --precision through the commands and
into every output, the weight-digest cache (hit, miss after the file changed, a corrupt cache ignored), models built
without random initialisation when a file's weights replace it, and seeded random-init digests as they always were."""
from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

import thqa.utils.hardware as hw
from thqa.cli import app as cli
from thqa.features.digests import DigestCache, file_key, random_init_key, remembered_digest
from thqa.errors import ConfigError, WeightsError
from thqa.features.runner import Backbones as _RealBackbones
from thqa.features.settings import precision_for
from thqa.features.weights import SWIN_NAME, WeightsOptions, _empty, build_spatial, build_temporal, state_digest

#: digests of the seed-3407 random-init backbones as thqa has always computed them (torch 2.14.1, AVX2 kernels)
SEED_3407 = {
    "swin_t": "1bb69d41732e20bfb04058a8884ce5d00a452504a48ceee8f139f13d40e9042d",
    "slowfast_r50": "9a4f6ee19bdac6bf4f9ad16352d12ec23b17735d158d9fe91f326d2dae4b1fb0",
}
SEED_3407_ON = ("2.14.1", "AVX2")


# -- what the CPU offers, and what "auto" picks ------------------------------------------------------------------------
@pytest.fixture()
def fake_cpu(monkeypatch):
    """fake_cpu(flags from torch, /proc/cpuinfo text or None): the detector sees that CPU."""

    parse = hw._proc_cpuinfo
    monkeypatch.delenv(hw.FLAGS_ENV, raising=False)  # the detection itself, not flags forced for the run

    def set_cpu(torch_flags, proc_text=None):
        monkeypatch.setattr(hw, "_torch_flags", lambda: None if torch_flags is None else (set(torch_flags), "Fake CPU"))
        monkeypatch.setattr(hw, "_proc_cpuinfo", lambda text=None: None if proc_text is None else parse(proc_text))
        hw.cpu_info.cache_clear()

    yield set_cpu
    hw.cpu_info.cache_clear()


@pytest.mark.parametrize(
    "torch_flags, proc, bf16",
    [
        ({"avx2", "fma3"}, None, False),  # this test machine's kind: AVX2 only
        ({"avx2", "avx512f", "avx512_vnni"}, None, False),  # AVX-512 without BF16 (Skylake, Ice Lake)
        ({"avx2", "avx512f", "avx512_bf16"}, None, True),  # Zen 4, Cooper Lake
        ({"avx2", "amx_tile", "amx_bf16"}, None, True),  # Sapphire Rapids
        (None, "processor\t: 0\nmodel name\t: Old CPU\nflags\t\t: fpu sse2 avx2\n", False),  # older PyTorch: /proc
        (None, "processor\t: 0\nmodel name\t: Zen 4\nflags\t\t: fpu avx2 avx512f avx512_bf16\n", True),
        (None, None, False),  # nothing known: fp32
    ],
)
def test_cpu_bf16_detection(fake_cpu, torch_flags, proc, bf16):
    fake_cpu(torch_flags, proc)
    info = hw.cpu_info()
    assert hw.cpu_has_bf16() is bf16 and info.bf16 is bf16
    assert precision_for("cpu", "auto") == ("bf16-autocast" if bf16 else "fp32")
    assert precision_for("cpu", "fp32") == "fp32" and precision_for("cpu", "bf16") == "bf16-autocast"
    if proc is not None:
        assert info.source == "/proc/cpuinfo" and info.model in proc
    assert info.to_dict()["bf16_in_hardware"] is bf16


@pytest.mark.parametrize(
    "forced, flags, bf16",
    [
        ("avx2,avx512_bf16,amx_bf16", ("avx2", "avx512_bf16", "amx_bf16"), True),  # the reviewer's Xeon
        (" AVX2  avx512f ", ("avx2", "avx512f"), False),  # spaces, upper case
        ("none", (), False),
        ("avx2 amx_tile,amx_bf16,fma3", ("avx2", "amx_tile", "amx_bf16"), True),  # flags thqa does not report: dropped
    ],
)
def test_forced_cpu_flags_decide_what_auto_picks(cpu_flags, forced, flags, bf16):
    """$THQA_CPU_FLAGS stands in for the detection (to run the suite as if on the other kind of CPU)."""
    cpu_flags(forced)
    info = hw.cpu_info()
    assert info.flags == flags and info.source == "THQA_CPU_FLAGS" and info.bf16 is bf16
    assert precision_for("cpu") == ("bf16-autocast" if bf16 else "fp32")
    assert precision_for("cpu", "fp32") == "fp32"  # a precision asked for by name is not the detector's business


def test_blank_forced_flags_mean_the_real_detection(fake_cpu, monkeypatch):
    fake_cpu({"avx2", "amx_bf16"})
    monkeypatch.setenv(hw.FLAGS_ENV, "  ")
    hw.cpu_info.cache_clear()
    assert hw.cpu_info().source == "torch" and hw.cpu_has_bf16()


def test_this_machines_detection_matches_its_flags(monkeypatch):
    """The real detector agrees with the kernel's own list of flags (and so "auto" gives fp32 where bf16 is emulated)."""
    monkeypatch.delenv(hw.FLAGS_ENV, raising=False)
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(ln for ln in f if ln.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags here")
    hw.cpu_info.cache_clear()
    assert hw.cpu_has_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})
    assert precision_for("cpu") == ("bf16-autocast" if hw.cpu_has_bf16() else "fp32")
    with pytest.raises(ConfigError, match="precision must be"):
        precision_for("cpu", "fp16")
    hw.cpu_info.cache_clear()  # the next test sees $THQA_CPU_FLAGS again, when it is set


# -- --precision through the commands and into the output ----------------------------------------------------------
@pytest.fixture()
def fake_scorer(monkeypatch, small_scorer):
    """`thqa score --random-init` gets the session's small scorer; records the keyword arguments."""
    import thqa.scoring.scorer

    calls = []

    def fake(checkpoint=None, **kwargs):
        calls.append(kwargs)
        return small_scorer

    monkeypatch.setattr(thqa.scoring.scorer, "Scorer", fake)
    return calls


def test_precision_option_reaches_the_scorer_and_every_row(fake_scorer, capsys, good_video, tmp_path):
    out_csv = tmp_path / "scores.csv"
    rc = cli.main(["score", "--random-init", "--device", "cpu", "--precision", "fp32", str(good_video), "-o", str(out_csv)])
    assert rc == 0 and fake_scorer[-1]["precision"] == "fp32"
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert rows[0]["precision"] == "fp32" and rows[0]["weights"] == "random-init"
    # resuming that table in another precision would mix two kinds of numbers: refused before any work
    calls = len(fake_scorer)
    rc = cli.main(["score", "--random-init", "--device", "cpu", "--precision", "bf16", str(good_video), "-o", str(out_csv), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and "precision fp32, this run has bf16-autocast" in err and len(fake_scorer) == calls
    rc = cli.main(["score", "--random-init", "--precision", "fp32", str(good_video), "--format", "json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)[0]["precision"] == "fp32"
    with pytest.raises(SystemExit) as ei:
        cli.main(["score", "--random-init", "--precision", "fp16", str(good_video)])
    assert ei.value.code == 2


@pytest.mark.parametrize("command", ["score", "extract", "train", "evaluate", "demo"])
def test_every_command_that_builds_backbones_takes_precision(command):
    p = cli.build_parser()
    args = {"score": ["score", "f.mp4"], "extract": ["extract", "m.csv", "--cache-dir", "c"],
            "train": ["train", "m.csv", "--cache-dir", "c", "--out", "r"], "evaluate": ["evaluate"], "demo": ["demo"]}[command]
    assert p.parse_args([*args, "--precision", "bf16"]).precision == "bf16"
    # none given: the recipe's (extract, train) or the checkpoint's (score, evaluate) precision, else auto
    assert p.parse_args(args).precision == ("auto" if command == "demo" else None)


def test_scoring_in_bf16_is_labelled_and_close_to_fp32(small_scorer, good_video):
    """Both precisions end to end on a tiny file (bf16 is emulated, so slow, on CPUs without it in hardware)."""
    bb = small_scorer.backbones
    saved = bb.precision
    try:
        res = {}
        for prec in ("fp32", "bf16-autocast"):
            bb.precision = prec
            res[prec] = small_scorer.score(good_video)
    finally:
        bb.precision = saved
    assert res["fp32"].precision == "fp32" and res["bf16-autocast"].precision == "bf16-autocast"
    assert res["fp32"].mos != res["bf16-autocast"].mos  # bf16 really ran
    assert abs(res["fp32"].mos - res["bf16-autocast"].mos) < 0.01


# -- the weight-digest cache ------------------------------------------------------------------------------------------
SHA_A, SHA_B = "a" * 64, "b" * 64


def test_digest_cache_hit_miss_and_corrupt_file(tmp_path):
    w = tmp_path / "w.bin"
    w.write_bytes(b"weights")
    cache = DigestCache(tmp_path / "home" / "weight-digests.json")
    key = file_key("swin_t", w)
    assert cache.get(key) is None
    cache.put(key, SHA_A)
    assert cache.get(key) == SHA_A and DigestCache(cache.path).get(key) == SHA_A  # kept on disk
    assert cache.get(file_key("slowfast_r50", w)) is None  # another backbone, another key
    # the file changes (rewritten in place, same size): a new modification time, so hashed again
    st = os.stat(w)
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache.get(file_key("swin_t", w)) is None
    # a corrupt cache file is ignored, then replaced by the next write
    for junk in (b"{not json", b"\xff\xfe", json.dumps({"format": "other", "entries": {}}).encode(), b"[]"):
        cache.path.write_bytes(junk)
        assert cache.get(key) is None
    cache.put(key, SHA_B)
    assert cache.get(key) == SHA_B
    # an entry whose digest is not a sha256 is not trusted
    doc = json.loads(cache.path.read_text())
    next(iter(doc["entries"].values()))["sha256"] = "../../etc"
    cache.path.write_text(json.dumps(doc))
    assert cache.get(key) is None
    assert file_key("swin_t", tmp_path / "missing") is None


def test_remembered_digest_computes_once_and_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("THQA_CACHE_HOME", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return SHA_A

    key = random_init_key("swin_t", 5)
    assert remembered_digest(key, compute) == SHA_A and remembered_digest(key, compute) == SHA_A and len(calls) == 1
    assert remembered_digest(random_init_key("swin_t", 6), compute) == SHA_A and len(calls) == 2  # another seed
    monkeypatch.setenv("THQA_DIGEST_CACHE", "0")
    assert remembered_digest(key, compute) == SHA_A and len(calls) == 3
    (tmp_path / "weight-digests.json").chmod(0o444)  # a cache that cannot be written costs only time
    monkeypatch.delenv("THQA_DIGEST_CACHE")
    assert remembered_digest(random_init_key("swin_t", 7), compute) == SHA_A


@pytest.fixture()
def counted_digests(monkeypatch):
    import thqa.features.weights

    calls = []
    real = thqa.features.weights.state_digest

    def counting(module):
        calls.append(type(module).__name__)
        return real(module)

    monkeypatch.setattr(thqa.features.weights, "state_digest", counting)
    return calls


def test_random_init_digests_are_remembered_and_unchanged(counted_digests, backbones):
    """The seeded random-init digest comes from the cache the second time, and equals the model's own digest."""
    o = WeightsOptions(random_init=True, seed=21)
    m1, i1 = build_temporal(o)
    m2, i2 = build_temporal(o)
    assert counted_digests == ["TemporalExtractor"]  # hashed once
    assert i1.sha256 == i2.sha256 == state_digest(m2)
    # seed 3407 (the session's backbones): the digests thqa always had, where the kernels are the same
    if (torch.__version__.split("+")[0], torch.backends.cpu.get_cpu_capability()) == SEED_3407_ON:
        assert {k: v["sha256"] for k, v in backbones.infos.items()} == SEED_3407


# -- built empty when a file's weights replace the random ones -----------------------------------------------------------
def test_weights_from_a_file_build_without_random_init_and_match_an_eager_build(tmp_path, counted_digests):
    import timm
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        ref = timm.create_model(SWIN_NAME, pretrained=False, num_classes=0).eval()
    f = tmp_path / "swin.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(f))
    drawn = []  # elements of real (not meta) tensors given random values while building
    real_uniform = torch.Tensor.uniform_
    torch.Tensor.uniform_ = lambda t, *a, **k: (drawn.append(0 if t.is_meta else t.numel()), real_uniform(t, *a, **k))[1]
    try:
        model, info = build_spatial(WeightsOptions(swin_weights=str(f)))
    finally:
        torch.Tensor.uniform_ = real_uniform
    assert sum(drawn) <= 3  # only ECA's 3-weight kernel (then zeroed); none of Swin-T's 28 M the file replaces
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        # same output: the non-persistent buffers (relative position index, shifted-window masks) were computed
        assert torch.equal(model.swin(x), ref(x))
    assert info.sha256 == state_digest(model) and info.source == "file"
    build_spatial(WeightsOptions(swin_weights=str(f)))
    assert counted_digests == ["SpatialExtractor"]  # the second build reads the digest from the cache


def test_empty_build_refuses_a_module_it_cannot_complete():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("table", torch.arange(4.0), persistent=False)

    with pytest.raises(WeightsError, match="non-persistent"):
        _empty(Odd)
    assert np.array_equal(_empty(lambda: nn.Linear(3, 2)).weight.shape, (2, 3))


# -- lazy backbones: built while the decoding workers start ---------------------------------------------------------------
def test_lazy_backbones_are_identified_without_building_and_built_on_first_use(backbones):
    from dataclasses import replace

    from thqa.features.runner import Backbones

    lazy = Backbones(backbones.weights, device="cpu", lazy=True, start_workers=False, precision="fp32")  # seed 3407: digests remembered
    assert not lazy.built and lazy._models == {"spatial": None, "temporal": None}
    assert lazy.infos == backbones.infos  # the identity every cache key and checkpoint check needs, without the models
    assert isinstance(lazy.temporal, nn.Module) and lazy.built  # built on first use
    assert state_digest(lazy.temporal) == backbones.temporal_info.sha256
    # a seed whose digest is not remembered is built at once (its digest needs the weights)
    fresh = Backbones(WeightsOptions(random_init=True, seed=33), device="cpu", spatial=False, lazy=True, start_workers=False, precision="fp32")
    assert fresh.built and fresh.temporal_info.seed == 33
    # weights that changed between the identity and the build are refused
    odd = Backbones(backbones.weights, device="cpu", spatial=False, lazy=True, start_workers=False, precision="fp32")
    odd.temporal_info = replace(odd.temporal_info, sha256="0" * 64)
    with pytest.raises(WeightsError, match="changed while thqa was starting"):
        odd.build()


def test_scorer_with_a_worker_builds_its_models_while_the_worker_decodes(small_settings, small_scorer, good_video, good_video_2s):
    from thqa.scoring.scorer import Scorer

    scorer = Scorer(random_init=True, device="cpu", settings=small_settings, lazy=True, precision="fp32")  # workers "auto", as thqa score
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: no worker to overlap with")
    assert scorer.extractor.workers == 1  # a CPU of 2 or more cores: one worker decodes while the models are built
    assert not scorer.backbones.built  # nothing built yet: the first iter_score builds while its worker decodes
    got = list(scorer.iter_score([good_video, good_video_2s]))
    assert scorer.backbones.built and scorer.extractor.stats.get("build_s", 0) > 0
    want = [small_scorer.score(good_video), small_scorer.score(good_video_2s)]
    assert [r.mos for r in got] == pytest.approx([r.mos for r in want], abs=1e-6)
    assert [r.precision for r in got] == ["fp32", "fp32"]


@pytest.mark.parametrize("hw", [(512, 512), (480, 640), (700, 394), (520, 777), (1080, 1920), (61, 45), (521, 520)])
def test_resize_without_torchvision_gives_torchvisions_bytes(hw):
    """The decoding side resizes first frames with PyTorch alone, exactly as torchvision did (the oracle)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    from thqa.features.spatial import resize_short_side

    frame = np.random.default_rng(hw[0] * 7 + hw[1]).integers(0, 256, (*hw, 3), dtype=np.uint8)
    want = F.resize(torch.from_numpy(frame).permute(2, 0, 1), [520], interpolation=InterpolationMode.BICUBIC, antialias=True)
    got = resize_short_side(frame, 520)
    assert got.dtype == torch.uint8 and got.shape == want.shape and min(got.shape[1:]) == 520
    assert torch.equal(got, want)


def test_resize_of_real_frames_gives_torchvisions_bytes(real_file):
    import av
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    from thqa.features.spatial import resize_short_side

    for name in ("vid_real_woman_blue_700.mp4", "vid_real_vox_00015_224.mp4"):
        with av.open(str(real_file(name))) as c:
            frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
        want = F.resize(torch.from_numpy(frame).permute(2, 0, 1), [520], interpolation=InterpolationMode.BICUBIC, antialias=True)
        assert torch.equal(resize_short_side(frame, 520), want), name


def test_channels_last_on_a_cpu_follows_the_thread_count_and_keeps_the_numbers(backbones, monkeypatch):
    """Channels-last 3-D SlowFast on a CPU of 2+ torch threads (measured faster there, slower on 1): same features to
    float rounding as the default layout."""
    from thqa.features.runner import Backbones

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    two = Backbones(backbones.weights, device="cpu", spatial=False, start_workers=False, precision="fp32")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    one = Backbones(backbones.weights, device="cpu", spatial=False, start_workers=False, precision="fp32")
    monkeypatch.undo()
    assert two.channels_last and not one.channels_last
    clips = torch.randint(0, 256, (1, 8, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    a, b = two.run_temporal(clips), one.run_temporal(clips)
    assert two.temporal.blocks[0].multipathway_blocks[0].conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# -- what start-up does not load ------------------------------------------------------------------------------------------
_NO_TORCH = """
import sys
from thqa.cli import app as cli
try:
    rc = cli.main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
print("rc", rc, "loaded", sorted(m for m in ("torch", "numpy", "av", "librosa", "thqa.features.pipeline") if m in sys.modules))
"""


@pytest.mark.parametrize(
    "argv, rc",
    [(["--help"], 0), (["train", "--help"], 0), (["score", "--precision", "fp16", "x.mp4"], 2), (["extract", "m.csv"], 2),
     (["train", "m.csv", "--cache-dir", "c", "--out", "o", "--recipe", "nope"], 2)],
)
def test_help_and_argument_errors_load_no_torch(argv, rc):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, *argv], capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines()[-1] == f"rc {rc} loaded []", proc.stdout[-500:] + proc.stderr[-2000:]


def test_an_all_cached_extract_builds_and_hashes_no_backbone(backbones, good_video, good_video_2s, tmp_path, monkeypatch, capsys):
    """The keys need only the weights' remembered digests: with every entry cached, `thqa extract` builds nothing."""
    import thqa.features.pipeline
    import thqa.features.runner
    import thqa.features.weights
    from test_batching import _TinySpatial, _TinyTemporal
    from test_cli_experiments import use_session_backbones

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{good_video}\n{good_video_2s}\n")
    summary = tmp_path / "s.json"
    argv = ["extract", str(manifest), "--cache-dir", str(tmp_path / "c"), "--random-init", "--precision", "fp32", "--clips", "1",
            "--workers", "0", "--summary-json", str(summary)]
    # the first run fills the cache with the session's identity (seed 3407) and tiny stand-in models (cheap)
    first = thqa.features.pipeline.Backbones(backbones.weights, device="cpu", lazy=True, start_workers=False, precision="fp32")
    first.spatial, first.temporal = _TinySpatial(), _TinyTemporal()
    use_session_backbones(monkeypatch, first, small_clips=True)
    assert cli.main(argv) == 0 and json.loads(summary.read_text())["done"] == 2

    def no(*_a, **_k):
        raise AssertionError("a backbone was built (or hashed)")

    monkeypatch.setattr(thqa.features.pipeline, "Backbones", _RealBackbones)  # the real class: it would build, were it asked to
    monkeypatch.setattr(thqa.features.runner, "build", no)  # Backbones builds every backbone through it
    monkeypatch.setattr(thqa.features.weights, "state_digest", no)
    capsys.readouterr()
    assert cli.main(argv) == 0
    doc = json.loads(summary.read_text())
    assert (doc["done"], doc["reused"]) == (0, 2) and doc["backbones"] == first.infos
    assert "backbones in fp32" in capsys.readouterr().out


# -- the digest store's keys survive moves; old stores are reused -------------------------------------------------------
def _old_key(backbone: str, lib: str, seed: int) -> dict:
    """A random-init key exactly as thqa before code versions (fd2a219) wrote it: the code named by a hash of the
    bytes of thqa/weights.py, thqa/features/spatial.py and thqa/features/temporal.py."""
    from importlib.metadata import version

    return {
        "backbone": backbone,
        "random_init_seed": seed,
        "code": {"torch": torch.__version__, lib: version(lib), "thqa_code": "57af1e97d7f24629"},
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
    }


def test_a_digest_store_of_the_previous_release_is_reused_without_hashing(backbones, tmp_path, monkeypatch):
    """A weight-digests.json written by the release before code versions: its entries are found (code_version 1),
    so lazy backbones know their identity without building or hashing, and are copied under the new keys."""
    import hashlib

    import thqa.features.runner
    import thqa.features.weights
    from thqa.features.digests import FORMAT, legacy_keys

    seed = backbones.weights.seed
    entries = {}
    for name, lib in (("swin_t", "timm"), ("slowfast_r50", "pytorchvideo")):
        key = _old_key(name, lib, seed)
        kid = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        entries[kid] = {"key": key, "sha256": backbones.infos[name]["sha256"], "written": 1.0}
        assert key in legacy_keys(random_init_key(name, seed))
    home = tmp_path / "home"
    home.mkdir()
    (home / "weight-digests.json").write_text(json.dumps({"format": FORMAT, "entries": entries}, indent=1) + "\n")
    monkeypatch.setenv("THQA_CACHE_HOME", str(home))

    def no(*_a, **_k):
        raise AssertionError("a backbone was built (or hashed)")

    monkeypatch.setattr(thqa.features.runner, "build", no)
    monkeypatch.setattr(thqa.features.weights, "state_digest", no)
    lazy = _RealBackbones(backbones.weights, device="cpu", lazy=True, start_workers=False, precision="fp32")
    assert not lazy.built and lazy.infos == backbones.infos  # byte for byte: the same identities, the same keys
    doc = json.loads((home / "weight-digests.json").read_text())
    new = [e["key"] for e in doc["entries"].values() if "thqa_code_version" in e["key"]["code"]]
    assert sorted(k["backbone"] for k in new) == ["slowfast_r50", "swin_t"] and len(doc["entries"]) == 4
    assert all(DigestCache().get(random_init_key(k["backbone"], seed)) == backbones.infos[k["backbone"]]["sha256"] for k in new)
    # a code_version above 1 is other code: the old entries are not its digests
    assert legacy_keys({**random_init_key("swin_t", seed), "code": {"torch": "x", "thqa_code_version": 2}}) == []


def _normalised(ref: str) -> str:
    """The source of ``module:name`` (a function, class or constant), without docstrings or comments, read with ast."""
    import ast
    import importlib.util

    mod, name = ref.split(":")
    with open(importlib.util.find_spec(mod).origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        if getattr(node, "name", None) == name or name in targets:
            for sub in ast.walk(node):
                body = getattr(sub, "body", None)
                if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                    sub.body = body[1:] or [ast.Pass()]
            return ast.unparse(node)
    raise AssertionError(f"{ref}: not found")


#: (code_version, sha256 of the normalised code) of each backbone, as last reviewed
BACKBONE_CODE = {
    "swin_t": (1, "b64380476b5471d78a4f27c41a335068e1f6dfa7cec383d0f84f2bd989088d8c"),
    "slowfast_r50": (1, "0a8869b873273fb268a7e2293b6f3b2c2befd4de0f969d34685ceb8ae570c131"),
}


@pytest.mark.parametrize("name", sorted(BACKBONE_CODE))
def test_a_change_of_a_backbones_code_comes_with_a_code_version(name):
    """The digests remembered for a backbone are keyed by its code_version, not by the bytes of files (which moves
    and comments change): this fails when the code that turns weights into its state (the entry's ``code``) changes.
    If the change can alter the state built from the same weights or seed, bump the entry's code_version; then (or
    if it cannot) record the new digest here."""
    import hashlib

    from thqa.features.registry import spec

    s = spec(name)
    digest = hashlib.sha256("\n\n".join(sorted(_normalised(r) for r in s.code)).encode()).hexdigest()
    assert (s.code_version, digest) == BACKBONE_CODE[name], f"{name}: code changed: code_version {s.code_version}, code digest {digest}"
