"""Oracles of :mod:`thqa.utils.torch_info` (what PyTorch would answer, found without importing it) and of the keys
computed with it: each fast path against torch's own answer on this machine, and against stand-in inputs for the
branches this CPU cannot show (forced $ATEN_CPU_CAPABILITY, other CPU flags, other builds, a machine with a GPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import thqa.utils.hardware as hw
import thqa.utils.torch_info as ti
import thqa.features.decoder_versions as dv
from thqa.features.digests import code_versions, random_init_key
from thqa.features.identity import WeightsOptions, known_infos
from thqa.features.settings import extraction_provenance, known_precision, precision_for, resolve_device


def test_torch_version_and_build_are_torchs():
    assert ti.torch_version() == str(torch.__version__)  # local suffix included (+cu130, +cpu), unlike the metadata
    build = ti.torch_build()
    assert build is not None and (build["__version__"], build["cuda"], build["hip"]) == (str(torch.__version__), torch.version.cuda, torch.version.hip)
    assert code_versions("swin_t")["torch"] == torch.__version__


_CAPABILITY = "import json, torch; from thqa.utils.torch_info import cpu_capability, cpu_capability_known; print(json.dumps([str(torch.backends.cpu.get_cpu_capability()), cpu_capability(), cpu_capability_known()]))"


@pytest.mark.parametrize("env", [None, "default", "avx512", "AVX2"])
def test_cpu_capability_is_torchs_with_and_without_atens_variable(env):
    """torch reads $ATEN_CPU_CAPABILITY once per process: each value in a process of its own."""
    environ = {k: v for k, v in os.environ.items() if k != ti.CAPABILITY_ENV}
    if env is not None:
        environ[ti.CAPABILITY_ENV] = env
    proc = subprocess.run([sys.executable, "-c", _CAPABILITY], capture_output=True, text=True, timeout=120, env=environ)
    torchs, ours, known = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ours == torchs, proc.stderr[-1000:]
    assert known in (None, torchs)  # None: not certain, torch was asked
    if env in ("default", "avx512"):  # avx512 even on a CPU without it: torch believes the variable
        assert known == {"default": "DEFAULT", "avx512": "AVX512"}[env]
    if env == "AVX2":  # case-sensitive in torch, which ignores it with a warning: torch is asked
        assert known is None


@pytest.mark.parametrize(
    "flags, machine, expected",
    [({"avx512vl", "avx512bw", "avx512dq", "avx512f", "fma", "avx2"}, "x86_64", "AVX512"),
     ({"avx512vl", "avx512bw", "avx2", "fma"}, "x86_64", "AVX2"),  # no avx512dq: AVX2
     ({"avx2", "fma"}, "x86_64", "AVX2"),
     ({"avx2"}, "x86_64", None),  # no fma: DEFAULT on x86 builds, but torch is asked
     ({"sse4_2"}, "x86_64", None),
     ({"avx2", "fma"}, "aarch64", None)],  # another processor: torch is asked
)
def test_cpu_capability_rule_on_other_cpus(flags, machine, expected):
    assert ti.cpu_capability_known(env={}, flags=flags, machine=machine) == expected


def test_the_random_init_key_is_the_one_torch_gives():
    """The key of a remembered random-init digest, field by field as torch gave it before (existing stores reused)."""
    key = random_init_key("slowfast_r50", 3407)
    assert key["cpu_capability"] == str(torch.backends.cpu.get_cpu_capability())
    assert key["code"]["torch"] == torch.__version__


def test_no_cuda_proof_agrees_with_torch(tmp_path):
    if ti.no_cuda_proven():
        assert not torch.cuda.is_available()
    assert ti.no_cuda_proven({"__version__": "2.0+cpu", "cuda": None, "hip": None}, root=str(tmp_path))
    assert not ti.no_cuda_proven({"__version__": "2.0+rocm", "cuda": None, "hip": "6.0"}, root=str(tmp_path))
    build = {"__version__": "2.0+cu130", "cuda": "13.0", "hip": None}
    assert ti.no_cuda_proven(build, root=str(tmp_path))  # a CUDA build on a machine with no NVIDIA driver
    for where in ("dev/nvidia0", "dev/dxg", "proc/driver/nvidia"):
        machine = tmp_path / where.replace("/", "_")
        (machine / where).parent.mkdir(parents=True)
        (machine / where).write_text("")
        assert not ti.no_cuda_proven(build, root=str(machine)), where


@pytest.mark.parametrize("forced", [None, "none", "avx2", "avx2,avx512f", "avx512_bf16", "amx_tile amx_bf16"])
def test_bf16_where_known_is_what_auto_decides_by(forced, monkeypatch):
    """Against cpu_has_bf16() (torch's detection first): forced flags decide alone; unforced, /proc/cpuinfo only
    where it is certain."""
    if forced is None:
        monkeypatch.delenv(hw.FLAGS_ENV, raising=False)
    else:
        monkeypatch.setenv(hw.FLAGS_ENV, forced)
    hw.cpu_info.cache_clear()
    known = ti.bf16_known()
    if forced is not None:
        assert known is hw.cpu_has_bf16()
    else:
        assert known in (None, hw.cpu_has_bf16())


@pytest.mark.parametrize(
    "flags, expected",
    [({"avx2", "fma"}, False), ({"avx2", "avx512f"}, None), ({"avx512f", "avx512_bf16"}, True), ({"amx_tile", "amx_bf16"}, True),
     ({"amx_tile"}, None)],
)
def test_bf16_rule_on_other_cpus(flags, expected, monkeypatch):
    monkeypatch.delenv(hw.FLAGS_ENV, raising=False)
    assert ti.bf16_known(flags=flags, machine="x86_64") is expected
    assert ti.bf16_known(flags=flags, machine="aarch64") is None


@pytest.mark.parametrize("forced", [None, "none", "avx2,avx512_bf16,amx_bf16"])
@pytest.mark.parametrize("device", ["auto", "cpu"])
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_known_precision_is_the_backbones_precision(forced, device, precision, monkeypatch):
    """The precision part of the keys: where known without torch, what Backbones computes with it. $THQA_CPU_FLAGS
    changes what "auto" picks and nothing else: an fp32 extraction keys the same under any flags."""
    if forced is None:
        monkeypatch.delenv(hw.FLAGS_ENV, raising=False)
    else:
        monkeypatch.setenv(hw.FLAGS_ENV, forced)
    hw.cpu_info.cache_clear()
    known = known_precision(device, precision)
    torchs = precision_for(resolve_device(device), precision)
    assert known in (None, torchs)
    if precision != "auto":
        assert known == torchs == ("fp32" if precision == "fp32" else "bf16-autocast")
    if forced is not None and ti.no_cuda_proven():
        assert known == torchs


def test_known_precision_leaves_other_devices_to_torch():
    assert known_precision("cuda", "fp32") is None and known_precision("cuda:0", "auto") is None
    assert known_precision(torch.device("cpu"), "fp32") is None


def test_known_infos_are_the_lazy_backbones_infos(backbones):
    """The whole identity part of the keys: what Backbones(lazy=True).infos reports (the session's digests are
    remembered); not known where a digest is not remembered (another seed)."""
    assert known_infos(backbones.weights, "fp32") == backbones.infos
    assert known_infos(WeightsOptions(random_init=True, seed=backbones.weights.seed + 12345), "fp32") is None


def test_remembered_decoder_versions_are_pyavs(tmp_path, monkeypatch):
    """The decoder's part of every key, remembered per installation, against PyAV's own answer; a changed
    installation (a file of PyAV or of its bundled FFmpeg rewritten) is asked again; the switch turns it off."""
    asked = dv.asked_versions()
    prov = extraction_provenance()
    assert (prov["pyav"], prov["ffmpeg"]) == (asked["pyav"], asked["ffmpeg"])
    store = tmp_path / "versions.json"
    assert dv.decoder_versions(store) == asked
    key = dv.installation_key()
    if key is None:  # a PyAV without bundled FFmpeg: asked every time, nothing remembered
        assert not store.exists()
        return
    assert any(name.startswith("av.libs/libavcodec") for name, _, _ in key["files"])
    calls = []
    monkeypatch.setattr(dv, "asked_versions", lambda: calls.append(1) or {"pyav": "x", "ffmpeg": "y"})
    assert dv.decoder_versions(store) == asked and calls == []  # remembered
    name, size, mtime = key["files"][-1]
    changed = {**key, "files": key["files"][:-1] + [(name, size, mtime + 1)]}
    monkeypatch.setattr(dv, "installation_key", lambda: changed)
    assert dv.decoder_versions(store) == {"pyav": "x", "ffmpeg": "y"} and calls == [1]  # another installation: asked
    monkeypatch.setenv("THQA_DIGEST_CACHE", "0")
    monkeypatch.setattr(dv, "installation_key", lambda: key)
    assert dv.decoder_versions(store) == {"pyav": "x", "ffmpeg": "y"} and calls == [1, 1]  # switched off: asked


@pytest.mark.parametrize("env", [{}, {"TORCH_HOME": "/tmp/th-home"}, {"XDG_CACHE_HOME": "/tmp/xdg"}, {"TORCH_HOME": "~/th", "XDG_CACHE_HOME": "/tmp/xdg"}])
def test_torch_hub_dir_without_torch_is_torchs(monkeypatch, env):
    """torch.hub's folder by torch's rule (as if torch were not loaded) equals torch.hub.get_dir() under the same
    environment; with torch loaded, torch's own answer (which torch.hub.set_dir may move) is given."""
    import sys

    import torch

    from thqa.features.weight_caches import torch_hub_dir

    for var in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert torch_hub_dir() == Path(torch.hub.get_dir())
    monkeypatch.delitem(sys.modules, "torch")
    assert torch_hub_dir() == Path(torch.hub.get_dir())
