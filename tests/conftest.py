"""Shared fixtures: backbones built once per session (random init, CPU, 2 threads, fp32), test media, ../shared/media.

The session's backbones run in fp32 on every CPU (``precision="fp32"``): on a CPU with bf16 in hardware "auto" would
pick bf16, and the tests' expected numbers are fp32's. ``THQA_CPU_FLAGS`` (thqa.utils.hardware) runs the suite as if on
another kind of CPU, e.g. ``THQA_CPU_FLAGS=avx2,avx512_bf16,amx_bf16 python -m pytest`` where "auto" then means bf16;
the header of the run says which CPU the tests see. Tests of what "auto" picks use :func:`cpu_flags`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# the media helpers live beside the tests
sys.path.insert(0, str(Path(__file__).resolve().parent))

# the tests mirror the packages (tests/media/, tests/features/, ...): a test that imports another test's helpers
# (`from test_train import make_table`) finds it in whatever folder that test lives
for _sub in sorted(p for p in Path(__file__).resolve().parent.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
    sys.path.insert(1, str(_sub))

import media  # noqa: E402

torch.set_num_threads(2)

#: the precision the session's backbones run in (and that every test about fp32 numbers names)
FP32 = "fp32"


def pytest_report_header(config) -> str:
    from thqa.utils.hardware import FLAGS_ENV, cpu_info

    info = cpu_info()
    forced = f" (forced by ${FLAGS_ENV})" if info.source == FLAGS_ENV else ""
    return f"thqa CPU: {info.model}, flags {','.join(info.flags) or 'none'}{forced}; bf16 in hardware: {info.bf16}"


@pytest.fixture(autouse=True)
def _torch_threads_stay_two():
    """Every test starts with the session's 2 torch threads: an in-process `thqa ... --threads N` sets torch's global
    thread count, and a later test comparing bits with a 2-thread run would then compute with N."""
    yield
    if torch.get_num_threads() != 2:
        torch.set_num_threads(2)


@pytest.fixture()
def cpu_flags(monkeypatch):
    """cpu_flags("avx2,amx_bf16") makes thqa.utils.hardware see a CPU with those flags ("none": no flag), whatever this
    machine is and whatever $THQA_CPU_FLAGS says; the real detection comes back after the test."""
    from thqa.utils import hardware
    def set_flags(flags: str) -> None:
        monkeypatch.setenv(hardware.FLAGS_ENV, flags)
        hardware.cpu_info.cache_clear()

    yield set_flags
    monkeypatch.undo()
    hardware.cpu_info.cache_clear()

#: Small extraction settings for tests that are not about the full size: 2 clips of 8 frames at 64 px.
#: (The fusion model's inputs keep their sizes: 768 + 2304 numbers and 4 x 128 x 32 audio maps per clip.)
SMALL = dict(n_clips=2, clip_frames=8, frame_size=64)


@pytest.fixture(scope="session", autouse=True)
def thqa_cache_home(tmp_path_factory) -> Path:
    """thqa's own cache folder (the weight digests, thqa.features.digests) in a temp folder: the tests neither read nor write
    the user's ~/.cache/thqa, and every session starts with no digest remembered."""
    home = tmp_path_factory.mktemp("thqa-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("THQA_CACHE_HOME", str(home))
    yield home
    mp.undo()


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """../shared/media (real talking heads); the test is skipped when it is absent (a fresh clone)."""
    if not media.MEDIA_DIR.is_dir():
        pytest.skip(f"real media not available ({media.MEDIA_DIR} is absent)")
    return media.MEDIA_DIR


@pytest.fixture(scope="session")
def real_file(shared_media):
    """real_file(name) -> Path in ../shared/media, skipping when that file is missing."""

    def get(name: str) -> Path:
        p = shared_media / name
        if not p.is_file():
            pytest.skip(f"{p} is missing")
        return p

    return get


@pytest.fixture(scope="session")
def small_settings():
    from thqa.features.pipeline import ExtractionSettings

    return ExtractionSettings(**SMALL)


@pytest.fixture(scope="session")
def scorer():
    """Scorer(random_init=True) at the default (full) settings: 6 clips of 32 frames at 224 px. Built once."""
    from thqa.scoring.scorer import Scorer

    return Scorer(random_init=True, device="cpu", precision=FP32)


@pytest.fixture(scope="session")
def small_scorer(small_settings):
    """Scorer(random_init=True) with small extraction settings (cheap SlowFast passes)."""
    from thqa.scoring.scorer import Scorer

    return Scorer(random_init=True, device="cpu", settings=small_settings, precision=FP32)


@pytest.fixture(scope="session")
def backbones(small_scorer):
    """The random-init Backbones (seed 3407) on the CPU in fp32: the small scorer's, so they are built once."""
    return small_scorer.backbones


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def good_video(media_dir) -> Path:
    """1 s, 64x64, 25 fps, H.264 + AAC mono 16 kHz noise-like speech stand-in."""
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    return media.write_video(media_dir / "good_1s.mp4", seconds=1, size=(64, 64), audio=audio)


@pytest.fixture(scope="session")
def good_video_2s(media_dir) -> Path:
    """2 s, 96x64, 25 fps, H.264 + AAC stereo 44.1 kHz."""
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal((2, 2 * 44100))).astype(np.float32)
    return media.write_video(media_dir / "good_2s.mp4", seconds=2, size=(96, 64), audio=audio, sample_rate=44100)


@pytest.fixture()
def no_network_weights(monkeypatch, tmp_path):
    """No weight file anywhere: empty $TORCH_HOME and Hugging Face cache, no THQA_* weight variables."""
    for var in ("THQA_SWIN_WEIGHTS", "THQA_SLOWFAST_WEIGHTS", "THQA_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    hf = tmp_path / "hf"
    th = tmp_path / "torch"
    hf.mkdir()
    th.mkdir()
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(th))
    try:  # huggingface_hub reads its cache folder once, at import
        import huggingface_hub.constants as hc

        monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hf / "hub"), raising=False)
    except ImportError:  # pragma: no cover
        pass
    return tmp_path
