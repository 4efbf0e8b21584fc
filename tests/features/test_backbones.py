"""Backbones (Swin-T, SlowFast R50), their weights, the fusion model and fusion checkpoints.

Weight files are made by the tests (random weights under a seed other than the default), so every check works
offline: loading from a named file, $THQA_*_WEIGHTS, torch.hub's cache; the offline error; the checkpoint refusals.
"""
from __future__ import annotations

import http.server
import json
import pickle
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from thqa.models.checkpoint import FORMAT, check_backbones, load_checkpoint, save_checkpoint
from thqa.errors import CheckpointError, CheckpointMismatchError, ConfigError, WeightsError, WeightsNotFoundError
from thqa.features.spatial import ECA, eca_kernel_size, preprocess_frame
from thqa.features.temporal import SLOWFAST_MEAN, SLOWFAST_STD, TemporalExtractor, preprocess_clip, slow_indices
from thqa.models.fusion import FusionConfig, FusionModel
from thqa.features.identity import known_identity
from thqa.features.registry import SWIN_T
from thqa.features.weight_caches import cached_weights
from thqa.features.weights import (
    DEFAULT_SEED,
    WeightsOptions,
    build_spatial,
    build_temporal,
    load_state_file,
    slowfast_cache_path,
    state_digest,
)

SWIN_NAME = "swin_tiny_patch4_window7_224"
FILE_SEED = 11  # weights "from a file" differ from the default random init (seed 3407)
OFFLINE_LIMIT_S = 10.0


# -- inputs -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 224, 224, generator=g)


@pytest.fixture(scope="module")
def small_clips():
    """(2, 8, 64, 64, 3) uint8: two short, small clips (SlowFast runs on any size; cheap on a CPU)."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (2, 8, 64, 64, 3), dtype=torch.uint8, generator=g)


# -- weight files made by the tests --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slowfast_file(tmp_path_factory):
    """A SLOWFAST_8x8_R50.pyth as the publisher ships it ({'model_state': full state dict}), random weights under
    FILE_SEED; and the sha256 a TemporalExtractor holding exactly those weights has."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from pytorchvideo.models.hub import slowfast_r50

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FILE_SEED)
        full = slowfast_r50(pretrained=False)
    sd = full.state_dict()
    d = tmp_path_factory.mktemp("slowfast")
    path = d / "SLOWFAST_8x8_R50.pyth"
    torch.save({"model_state": sd, "epoch": 196}, path)
    return path, state_digest(TemporalExtractor(full).eval())


@pytest.fixture(scope="module")
def swin_files(tmp_path_factory):
    """A timm Swin-T state dict (with its 1000-class head, as published) as .pth and .safetensors, random weights
    under FILE_SEED; and the sha256 that ECA + Swin-T (no head) holding them has."""
    import timm
    from safetensors.torch import save_file

    from thqa.features.spatial import SpatialExtractor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FILE_SEED)
        full = timm.create_model(SWIN_NAME, pretrained=False, num_classes=1000)
    sd = {k: v.contiguous() for k, v in full.state_dict().items()}
    d = tmp_path_factory.mktemp("swin")
    pth = d / "swin_t.pth"
    st = d / "model.safetensors"
    torch.save(sd, pth)
    save_file(sd, str(st))
    ref = timm.create_model(SWIN_NAME, pretrained=False, num_classes=0)
    ref.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.fc.")}, strict=True)
    return pth, st, state_digest(SpatialExtractor(ref).eval()), sd


@pytest.fixture()
def clean_env(monkeypatch):
    for var in ("THQA_SWIN_WEIGHTS", "THQA_SLOWFAST_WEIGHTS", "THQA_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


# -- extractors: shapes, seeding -------------------------------------------------------------------------------------
def test_backbone_output_shapes(backbones, image_batch, small_clips):
    sp = backbones.run_spatial(image_batch)
    tp = backbones.run_temporal(small_clips)
    assert sp.shape == (2, 768) and sp.dtype == np.float32 and np.isfinite(sp).all()
    assert tp.shape == (2, 2304) and tp.dtype == np.float32 and np.isfinite(tp).all()
    assert not np.allclose(sp[0], sp[1]) and not np.allclose(tp[0], tp[1])  # the input matters


def test_random_init_is_labelled(backbones):
    for info in (backbones.spatial_info, backbones.temporal_info):
        assert info.source == "random-init" and info.random_init
        assert info.seed == DEFAULT_SEED and info.path is None
        assert len(info.sha256) == 64
    assert backbones.random_init
    assert set(backbones.infos) == {"swin_t", "slowfast_r50"}
    assert backbones.spatial_info.sha256 == state_digest(backbones.spatial)
    assert backbones.temporal_info.sha256 == state_digest(backbones.temporal)


def test_random_init_is_seeded_same_seed_same_weights(backbones, image_batch, small_clips):
    sp2, sinfo = build_spatial(WeightsOptions(random_init=True))
    tp2, tinfo = build_temporal(WeightsOptions(random_init=True))
    assert sinfo.sha256 == backbones.spatial_info.sha256
    assert tinfo.sha256 == backbones.temporal_info.sha256
    with torch.inference_mode():
        a = sp2(image_batch[:1])
        b = tp2(preprocess_batch(small_clips[:1]))
    np.testing.assert_array_equal(a.numpy(), backbones.run_spatial(image_batch[:1]))
    np.testing.assert_array_equal(b.numpy(), backbones.run_temporal(small_clips[:1]))


@pytest.mark.parametrize("build", [build_spatial, build_temporal], ids=["spatial", "temporal"])
def test_building_a_backbone_leaves_the_callers_rng_alone(build):
    """Seeded building happens in a forked RNG: the caller's torch random stream goes on as if nothing happened."""
    torch.manual_seed(123)
    x = torch.rand(3)
    torch.manual_seed(123)
    build(WeightsOptions(random_init=True, seed=5))
    assert torch.equal(torch.rand(3), x)


def test_other_seed_other_weights(backbones, image_batch, slowfast_file):
    sp, sinfo = build_spatial(WeightsOptions(random_init=True, seed=FILE_SEED))
    _, tinfo = build_temporal(WeightsOptions(random_init=True, seed=FILE_SEED))
    assert sinfo.sha256 != backbones.spatial_info.sha256
    assert tinfo.sha256 != backbones.temporal_info.sha256
    assert sinfo.seed == FILE_SEED
    # build_temporal(seed) is slowfast_r50 under manual_seed(seed): the file fixture made the same weights
    assert tinfo.sha256 == slowfast_file[1]
    with torch.inference_mode():
        assert not torch.allclose(sp(image_batch[:1]), torch.from_numpy(backbones.run_spatial(image_batch[:1])))


def preprocess_batch(clips: torch.Tensor) -> list[torch.Tensor]:
    paths = [preprocess_clip(c) for c in clips]
    return [torch.stack([p[0] for p in paths]), torch.stack([p[1] for p in paths])]


def test_slowfast_pathways_and_normalisation():
    assert slow_indices(32).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]
    assert slow_indices(8).tolist() == [0, 7]
    # frame t has value t everywhere: the slow pathway holds frames 0, 4, 8, 13, ..., the fast one all 32
    frames = torch.arange(32, dtype=torch.uint8).view(32, 1, 1, 1).expand(32, 4, 4, 3).contiguous()
    slow, fast = preprocess_clip(frames)
    assert slow.shape == (3, 8, 4, 4) and fast.shape == (3, 32, 4, 4)

    def value(x):  # undo the normalisation
        return torch.round((x * SLOWFAST_STD + SLOWFAST_MEAN) * 255)

    assert value(slow[0, :, 0, 0]).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]
    assert value(fast[1, :, 2, 3]).tolist() == list(range(32))
    assert fast[0, 0, 0, 0].item() == pytest.approx((0 - 0.45) / 0.225)


def test_temporal_extractor_is_frozen(backbones):
    t = backbones.temporal
    assert all(not p.requires_grad for p in t.parameters())
    t.train()
    assert not t.training and not any(m.training for m in t.modules())


def test_eca_is_identity_at_init_and_kernel_formula():
    assert eca_kernel_size(3) == 1
    assert eca_kernel_size(64) == 3 and eca_kernel_size(256) == 5
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(ECA(3)(x), x)


def test_spatial_preprocessing_takes_the_centre_of_a_short_side_520_resize():
    # a wide frame: thirds red | green | blue; the 224 crop of the 520-high resize lies in the green third
    f = np.zeros((320, 960, 3), np.uint8)
    f[:, :320, 0] = 255
    f[:, 320:640, 1] = 255
    f[:, 640:, 2] = 255
    x = preprocess_frame(f)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    rgb = (x * std + mean).mean(dim=(1, 2))
    assert rgb.tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-3)


# -- weights from local files --------------------------------------------------------------------------------------
def _check_slowfast(info, expect_sha, path, source="file"):
    assert info.source == source and not info.random_init
    assert info.sha256 == expect_sha
    assert Path(info.path) == Path(path)


def test_slowfast_from_a_named_file(clean_env, slowfast_file):
    path, sha = slowfast_file
    model, info = build_temporal(WeightsOptions(slowfast_weights=str(path)))
    _check_slowfast(info, sha, path)
    assert state_digest(model) == sha


def test_slowfast_from_the_environment(clean_env, slowfast_file):
    path, sha = slowfast_file
    clean_env.setenv("THQA_SLOWFAST_WEIGHTS", str(path))
    _, info = build_temporal(WeightsOptions())
    _check_slowfast(info, sha, path)


def test_slowfast_from_torch_hub_cache(clean_env, tmp_path, slowfast_file):
    path, sha = slowfast_file
    clean_env.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "SLOWFAST_8x8_R50.pyth"
    assert slowfast_cache_path() == cached
    cached.parent.mkdir(parents=True)
    cached.symlink_to(path)
    _, info = build_temporal(WeightsOptions(offline=True))
    _check_slowfast(info, sha, cached, source="cache")
    # what an all-cached run knows without torch (torch.hub's folder by torch's rule, the digest remembered) is the
    # build's own report
    assert known_identity("slowfast_r50", WeightsOptions(offline=True)) == info


def _hf_cache(clean_env, root: Path, repo_id: str, files: dict[str, Path]) -> None:
    """A Hugging Face hub cache under ``root`` holding ``files`` (name -> file) as the hub lays them out (a snapshot
    of revision "main"), and huggingface_hub pointed at it."""
    import huggingface_hub.constants as hc

    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    for name, src in files.items():
        (repo / "snapshots" / "0123abcd").mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / "0123abcd" / name).symlink_to(src)
    clean_env.setenv("HF_HUB_CACHE", str(root))
    clean_env.setattr(hc, "HF_HUB_CACHE", str(root))


def test_swin_from_the_hugging_face_cache_is_known_without_a_build(clean_env, tmp_path, swin_files):
    """Swin-T's published weights found in the hub's cache: the build reports source "cache" and the snapshot's path,
    and once its digest is remembered :func:`known_identity` (no torch, no timm) reports exactly that."""
    _, st, sha, _ = swin_files
    _hf_cache(clean_env, tmp_path / "hub", SWIN_T.weights, {"model.safetensors": st})
    snapshot = tmp_path / "hub" / ("models--" + SWIN_T.weights.replace("/", "--")) / "snapshots" / "0123abcd" / "model.safetensors"
    assert cached_weights(SWIN_T) == snapshot
    _, info = build_spatial(WeightsOptions(offline=True))
    assert (info.source, info.sha256, Path(info.path)) == ("cache", sha, snapshot)
    assert known_identity("swin_t", WeightsOptions(offline=True)) == info
    # a named file comes first; no cache and no name: the module's own route decides (False)
    assert known_identity("swin_t", WeightsOptions(swin_weights=str(st))).source == "file"
    _hf_cache(clean_env, tmp_path / "empty", "someone/else", {})
    assert cached_weights(SWIN_T) is None and known_identity("swin_t", WeightsOptions(offline=True)) is False


def test_swin_from_pth_and_safetensors_files(clean_env, swin_files):
    pth, st, sha, _ = swin_files
    for f in (pth, st):
        model, info = build_spatial(WeightsOptions(swin_weights=str(f)))
        assert info.source == "file" and Path(info.path) == f
        assert info.sha256 == sha, f.name
        assert state_digest(model) == sha


def test_swin_from_the_environment(clean_env, swin_files):
    pth, _, sha, _ = swin_files
    clean_env.setenv("THQA_SWIN_WEIGHTS", str(pth))
    _, info = build_spatial(WeightsOptions())
    assert info.source == "file" and info.sha256 == sha


def test_missing_named_files_raise_weights_not_found(clean_env, tmp_path):
    gone = tmp_path / "not_here" / "SLOWFAST_8x8_R50.pyth"
    with pytest.raises(WeightsNotFoundError) as ei:
        build_temporal(WeightsOptions(slowfast_weights=str(gone)))
    assert str(gone) in str(ei.value) and "random_init=True" in str(ei.value)  # Python: the keyword, not the flag
    clean_env.setenv("THQA_SWIN_WEIGHTS", str(tmp_path / "swin_missing.pth"))
    with pytest.raises(WeightsNotFoundError) as ei:
        build_spatial(WeightsOptions())
    assert "swin_missing.pth" in str(ei.value) and "THQA_SWIN_WEIGHTS" in str(ei.value)
    assert isinstance(ei.value, FileNotFoundError)


def test_garbage_weight_files_raise_weights_error(clean_env, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00\x01 not a checkpoint " * 64)
    junk_st = tmp_path / "junk.safetensors"
    junk_st.write_bytes(b"\xff" * 100)
    for build, key, f in (
        (build_temporal, "slowfast_weights", junk),
        (build_temporal, "slowfast_weights", junk_st),
        (build_spatial, "swin_weights", junk),
    ):
        with pytest.raises(WeightsError) as ei:
            build(WeightsOptions(**{key: str(f)}))
        assert str(f) in str(ei.value)


def test_slowfast_file_of_another_model_is_refused(clean_env, tmp_path):
    f = tmp_path / "other.pyth"
    torch.save({"model_state": {"conv.weight": torch.zeros(3, 3)}}, f)
    with pytest.raises(WeightsError, match="does not fit SlowFast"):
        build_temporal(WeightsOptions(slowfast_weights=str(f)))


@pytest.mark.parametrize("what", ["other_model", "half_of_swin"])
def test_swin_file_that_does_not_fit_is_refused(clean_env, tmp_path, swin_files, what):
    """A state dict with other keys must not be accepted (and silently leave random weights labelled 'file')."""
    sd = swin_files[3]
    if what == "other_model":
        sd = {"conv.weight": torch.zeros(3, 3)}
    else:
        sd = {k: v for k, v in sd.items() if not k.startswith("layers.3.")}
    f = tmp_path / f"{what}.pth"
    torch.save(sd, f)
    with pytest.raises(WeightsError) as ei:
        build_spatial(WeightsOptions(swin_weights=str(f)))
    assert str(f) in str(ei.value)


def test_weight_files_never_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    f = tmp_path / "evil.pth"
    with open(f, "wb") as fh:
        pickle.dump({"model_state": Evil()}, fh)
    with pytest.raises(WeightsError):
        load_state_file(f)
    with pytest.raises(WeightsError):
        build_temporal(WeightsOptions(slowfast_weights=str(f)))
    assert not marker.exists()


def test_load_state_file_unwraps_training_checkpoints(tmp_path):
    sd = {"a": torch.ones(2), "b.c": torch.zeros(1, 3)}
    for key in ("model_state", "state_dict", "model"):
        f = tmp_path / f"{key}.pt"
        torch.save({key: sd, "epoch": 3}, f)
        got = load_state_file(f)
        assert set(got) == {"a", "b.c"} and torch.equal(got["a"], sd["a"])
    f = tmp_path / "not_tensors.pt"
    torch.save({"a": 1, "b": "x"}, f)
    with pytest.raises(WeightsError, match="no state dict"):
        load_state_file(f)


# -- offline --------------------------------------------------------------------------------------------------------
def _assert_offline_error(exc: BaseException, which: str):
    msg = str(exc)
    assert "random_init=True" in msg  # raised from Python: the keyword (the CLI names its flags: test_scoring)
    if which == "swin":
        assert "THQA_SWIN_WEIGHTS" in msg and "swin_weights=FILE" in msg and "model.safetensors" in msg
    else:
        assert "THQA_SLOWFAST_WEIGHTS" in msg and "slowfast_weights=FILE" in msg and "SLOWFAST_8x8_R50.pyth" in msg


@pytest.mark.parametrize("how", ["offline_option", "THQA_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_without_weights_fails_fast_with_a_helpful_error(no_network_weights, monkeypatch, how):
    if how == "offline_option":
        opts = WeightsOptions(offline=True)
    else:
        monkeypatch.setenv(how, "1")
        opts = WeightsOptions()
    assert opts.is_offline()
    for which, build in (("swin", build_spatial), ("slowfast", build_temporal)):
        t0 = time.perf_counter()
        with pytest.raises(WeightsNotFoundError) as ei:
            build(opts)
        assert time.perf_counter() - t0 < OFFLINE_LIMIT_S
        _assert_offline_error(ei.value, which)
    assert str(no_network_weights / "torch" / "hub" / "checkpoints" / "SLOWFAST_8x8_R50.pyth") in str(ei.value)


def test_no_network_and_no_offline_flag_still_fails_fast(no_network_weights):
    from thqa.features.weights import SLOWFAST_URL, _reachable

    if _reachable("https://huggingface.co") or _reachable(SLOWFAST_URL):
        pytest.skip("the network is reachable here: this test is about an offline machine")
    opts = WeightsOptions()
    assert not opts.is_offline()
    for which, build in (("swin", build_spatial), ("slowfast", build_temporal)):
        t0 = time.perf_counter()
        with pytest.raises(WeightsNotFoundError) as ei:
            build(opts)
        assert time.perf_counter() - t0 < OFFLINE_LIMIT_S, which
        _assert_offline_error(ei.value, which)


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(404)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture()
def http_404():
    """A local HTTP server that answers 404 to everything: a hub that is 'reachable' but serves no weights."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("which", ["slowfast", "swin"])
def test_download_that_fails_raises_weights_not_found(no_network_weights, monkeypatch, http_404, which):
    """The hub answers but has no file (a proxy, a mirror): the same helpful WeightsNotFoundError, fast."""
    import thqa.features.slowfast

    monkeypatch.setattr(thqa.features.slowfast, "SLOWFAST_URL", f"{http_404}/SLOWFAST_8x8_R50.pyth")
    monkeypatch.setenv("HF_ENDPOINT", http_404)
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "ENDPOINT", http_404, raising=False)
    monkeypatch.setattr(hc, "HUGGINGFACE_CO_URL_TEMPLATE", http_404 + "/{repo_id}/resolve/{revision}/{filename}", raising=False)
    build = build_temporal if which == "slowfast" else build_spatial
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as ei:
        build(WeightsOptions())
    assert time.perf_counter() - t0 < OFFLINE_LIMIT_S
    assert "random_init=True" in str(ei.value)


# -- fusion model -----------------------------------------------------------------------------------------------------
def _inputs(b: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, n, 768, generator=g),
        torch.randn(b, n, 2304, generator=g),
        torch.randn(b, n, 4, 128, 32, generator=g),
    )


@pytest.mark.parametrize("b, n", [(1, 1), (2, 6), (3, 4)])
def test_fusion_shapes_and_mos_is_the_mean_of_clip_scores(b, n):
    torch.manual_seed(0)
    m = FusionModel().eval()
    with torch.inference_mode():
        mos, clips = m(*_inputs(b, n))
    assert mos.shape == (b,) and clips.shape == (b, n)
    assert torch.isfinite(mos).all() and torch.isfinite(clips).all()
    torch.testing.assert_close(mos, clips.mean(dim=1))
    if n > 1:
        assert clips.std() > 0


def test_fusion_uses_each_branch_and_the_clip_context():
    torch.manual_seed(0)
    m = FusionModel().eval()
    sp, tp, au = _inputs(1, 6)
    with torch.inference_mode():
        base = m(sp, tp, au)[1]
        for i, changed in enumerate([(sp + 1, tp, au), (sp, tp + 1, au), (sp, tp, au + 1)]):
            assert not torch.allclose(base, m(*changed)[1]), ["spatial", "temporal", "audio"][i]
        # the Bi-LSTM: changing clip 5's audio changes clip 0's audio features (the backward direction), and
        # without it nothing would reach clip 0 at all
        au2 = au.clone()
        au2[:, 5] += 3
        d = (m.audio_net(au) - m.audio_net(au2)).abs().amax(dim=-1)[0]  # (6,)
        assert d[0] > 1e-6 and d[5] > d[0]


@pytest.mark.parametrize(
    "branches", [("spatial",), ("temporal",), ("audio",), ("spatial", "temporal"), ("spatial", "audio"), ("temporal", "audio")]
)
def test_fusion_ablations(branches):
    cfg = FusionConfig(branches=branches)
    m = FusionModel(cfg).eval()
    sp, tp, au = _inputs(2, 6)
    args = [sp if "spatial" in branches else None, tp if "temporal" in branches else None, au if "audio" in branches else None]
    with torch.inference_mode():
        mos, clips = m(*args)
    assert mos.shape == (2,) and clips.shape == (2, 6)
    torch.testing.assert_close(mos, clips.mean(dim=1))
    assert (m.audio_net is not None) == ("audio" in branches)
    dim = 768 * ("spatial" in branches) + 2304 * ("temporal" in branches) + 128 * ("audio" in branches)
    assert m.head[0].normalized_shape == (dim,)


@pytest.mark.parametrize("bad", [dict(branches=()), dict(branches=("spatial", "video")), dict(audio_bins=100), dict(audio_frames=30)])
def test_fusion_config_validation(bad):
    with pytest.raises(ConfigError):
        FusionModel(FusionConfig(**bad))


def test_fusion_config_round_trip():
    c = FusionConfig(branches=("spatial", "audio"), head_hidden=64)
    assert FusionConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ConfigError):
        FusionConfig.from_dict({**c.to_dict(), "wings": 2})


# -- checkpoints ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(backbones, small_settings, tmp_path_factory):
    """A fusion model (seeded, perturbed so it is not the default init) saved as a checkpoint trained on the
    session's random-init backbones with the small extraction settings."""
    torch.manual_seed(42)
    model = FusionModel().eval()
    with torch.no_grad():
        model.head[-1].bias.fill_(2.5)
    path = tmp_path_factory.mktemp("ck") / "fusion.safetensors"
    save_checkpoint(path, model, settings=small_settings, backbones=backbones.infos, meta={"epoch": 7, "val_main": 0.5})
    return path, model


def test_checkpoint_round_trip(trained, backbones, small_settings):
    path, model = trained
    ck = load_checkpoint(path)
    assert ck.settings == small_settings
    assert ck.backbones == backbones.infos
    assert ck.meta == {"epoch": 7, "val_main": 0.5}
    assert ck.trained_on_random_init and ck.spatial_state is None and ck.path == path
    assert ck.model.config == model.config and not ck.model.training
    with torch.inference_mode():
        a = model(*_inputs(2, 6))
        b = ck.model(*_inputs(2, 6))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert float(a[0].mean()) == pytest.approx(2.5, abs=2.0)  # the perturbed bias travelled


def test_checkpoint_is_safetensors_with_a_json_header(trained):
    path, _ = trained
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["thqa"])
    assert meta["format"] == FORMAT
    assert set(meta) >= {"fusion_config", "extraction", "backbones", "finetuned_spatial", "meta", "thqa_version"}
    assert all(k.startswith("fusion.") for k in header if k != "__metadata__")
    assert b"\x80\x02" not in raw[:16] and not raw.startswith(b"PK")  # not a pickle, not a torch zip


def test_checkpoint_with_a_pickle_payload_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    for name, writer in (
        ("torch_zip.safetensors", lambda f: torch.save({"fusion.x": torch.ones(1)}, f)),
        ("evil.safetensors", lambda f: f.write_bytes(pickle.dumps({"x": Evil()}))),
    ):
        f = tmp_path / name
        writer(f)
        with pytest.raises(CheckpointError) as ei:
            load_checkpoint(f)
        assert str(f) in str(ei.value)
    assert not marker.exists()


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path, trained):
    from safetensors.torch import save_file

    path, model = trained
    raw = path.read_bytes()
    cases = {}
    cases["missing"] = tmp_path / "nope.safetensors"
    (tmp_path / "half.safetensors").write_bytes(raw[: len(raw) // 2])
    cases["truncated"] = tmp_path / "half.safetensors"
    (tmp_path / "empty.safetensors").write_bytes(b"")
    cases["empty"] = tmp_path / "empty.safetensors"
    save_file({"w": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    cases["no_header"] = tmp_path / "plain.safetensors"
    sd = {f"fusion.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(tmp_path / "badjson.safetensors"), metadata={"thqa": "{not json"})
    cases["bad_json"] = tmp_path / "badjson.safetensors"
    hdr = json.loads(json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]["thqa"])
    save_file(sd, str(tmp_path / "future.safetensors"), metadata={"thqa": json.dumps({**hdr, "format": "thqa-fusion/99"})})
    cases["unknown_format"] = tmp_path / "future.safetensors"
    save_file(sd, str(tmp_path / "otherarch.safetensors"), metadata={"thqa": json.dumps({**hdr, "fusion_config": {**hdr["fusion_config"], "head_hidden": 64}})})
    cases["weights_do_not_fit"] = tmp_path / "otherarch.safetensors"
    for kind, f in cases.items():
        with pytest.raises(CheckpointError) as ei:
            load_checkpoint(f)
        assert str(f) in str(ei.value), kind


def test_check_backbones_refuses_other_weights(trained, backbones):
    ck = load_checkpoint(trained[0])
    check_backbones(ck, backbones.infos, names=("swin_t", "slowfast_r50"))  # same: fine
    other = {k: dict(v) for k, v in backbones.infos.items()}
    other["slowfast_r50"].update(source="file", sha256="0" * 64, path="/w/SLOWFAST_8x8_R50.pyth", seed=None)
    with pytest.raises(CheckpointMismatchError) as ei:
        check_backbones(ck, other, names=("swin_t", "slowfast_r50"))
    msg = str(ei.value)
    assert "slowfast_r50" in msg and "random_init=True" in msg and str(trained[0]) in msg
    check_backbones(ck, other, names=("swin_t",))  # only the names asked for


def test_scorer_refuses_a_random_init_checkpoint_on_pretrained_backbones(clean_env, trained, swin_files, slowfast_file):
    from thqa.scoring.scorer import Scorer

    path, _ = trained
    with pytest.raises(CheckpointMismatchError) as ei:
        Scorer(path, device="cpu", swin_weights=str(swin_files[0]), slowfast_weights=str(slowfast_file[0]))
    msg = str(ei.value)
    # both sides named: the checkpoint's random-init backbones and the weight files asked for
    assert str(path) in msg and "random-init backbones (seed 3407)" in msg and f"swin_weights={swin_files[0]}" in msg


def test_scorer_refuses_a_pretrained_checkpoint_on_random_init_backbones(clean_env, tmp_path, small_settings, swin_files, slowfast_file):
    from thqa.scoring.scorer import Scorer

    pretrained = {
        "swin_t": {"name": "swin_t", "source": "file", "sha256": swin_files[2], "path": str(swin_files[0]), "seed": None},
        "slowfast_r50": {"name": "slowfast_r50", "source": "file", "sha256": slowfast_file[1], "path": str(slowfast_file[0]), "seed": None},
    }
    path = save_checkpoint(tmp_path / "pre.safetensors", FusionModel(), settings=small_settings, backbones=pretrained)
    with pytest.raises(CheckpointMismatchError) as ei:
        Scorer(path, device="cpu", random_init=True)
    msg = str(ei.value)
    assert "pretrained backbones (swin_t sha256" in msg and "drop random_init=True" in msg


def test_scorer_with_a_matching_checkpoint_scores_with_its_model(trained, small_scorer, good_video):
    from thqa.scoring.scorer import Scorer

    path, model = trained
    s = Scorer(path, device="cpu", random_init=True)
    assert s.settings == small_scorer.settings and not s.untrained
    r = s.score(good_video)
    # the same features through the saved model by hand
    f = small_scorer.extractor.extract(good_video)
    with torch.inference_mode():
        mos, clips = model(*(torch.from_numpy(np.stack([x])) for x in (f.spatial, f.temporal, f.audio)))
    assert r.mos == pytest.approx(float(mos[0]), abs=1e-5)
    assert r.clip_scores == pytest.approx(clips[0].tolist(), abs=1e-5)
    assert r.untrained is False and r.weights == "random-init"


def test_scorer_with_missing_or_corrupt_checkpoint(tmp_path):
    from thqa.scoring.scorer import Scorer

    with pytest.raises(CheckpointError, match="not found"):
        Scorer(tmp_path / "none.safetensors", random_init=True, device="cpu")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError):
        Scorer(bad, random_init=True, device="cpu")


# -- the backbone registry --------------------------------------------------------------------------------------------
def test_the_registry_is_the_one_table_of_the_backbones():
    """Names, slots, widths, weight sources, variables and flags of Swin-T and SlowFast come from the table."""
    import thqa.features.slowfast
    import thqa.features.swin
    import thqa.features.weights as w
    from thqa.features import registry
    from thqa.features.spatial import SPATIAL_DIM
    from thqa.features.temporal import TEMPORAL_DIM

    assert [(s.name, s.slot, s.dim, s.flag, s.env) for s in registry.specs()] == [
        ("swin_t", "spatial", SPATIAL_DIM, "--swin-weights", "THQA_SWIN_WEIGHTS"),
        ("slowfast_r50", "temporal", TEMPORAL_DIM, "--slowfast-weights", "THQA_SLOWFAST_WEIGHTS"),
    ]
    assert w.SWIN_HUB_ID == thqa.features.swin.SWIN_HUB_ID == "timm/swin_tiny_patch4_window7_224.ms_in1k"
    assert w.SLOWFAST_URL == thqa.features.slowfast.SLOWFAST_URL and w.SLOWFAST_URL.endswith("/SLOWFAST_8x8_R50.pyth")
    assert registry.module_of("swin_t") is thqa.features.swin and registry.by_slot("temporal").name == "slowfast_r50"
    assert registry.needed(("spatial", "temporal", "audio")) == ("swin_t", "slowfast_r50")
    assert registry.needed(("spatial", "temporal"), finetuned_spatial=True) == ("slowfast_r50",)
    assert registry.needed(("temporal", "audio")) == ("slowfast_r50",)
    with pytest.raises(ValueError, match="registered already"):
        registry.register(registry.SWIN_T)
    with pytest.raises(KeyError, match="known: swin_t, slowfast_r50"):
        registry.spec("vit")


@pytest.fixture()
def third_backbone(monkeypatch, tmp_path):
    """The stand-in third backbone of tests/third_backbone.py registered (for this test only)."""
    import third_backbone as tb

    from thqa.features import registry

    monkeypatch.setitem(registry.BACKBONES, tb.ENTRY.name, tb.ENTRY)
    monkeypatch.setenv("THQA_CACHE_HOME", str(tmp_path / "home"))
    return tb


def test_a_third_backbone_is_one_registry_entry_and_its_own_module(third_backbone, good_video, small_settings, capsys):
    """Registered from a test (tests/third_backbone.py: an entry and a module, no file of the package touched), a
    third backbone is built, recorded, run over the clips by both of extraction's paths, and its features land in
    the result; the command line offers its weights flag."""
    from test_batching import _TinySpatial, _TinyTemporal
    from thqa.cli import app as cli
    from thqa.cli import options as cli_options
    from thqa.features.extractor import FeatureExtractor
    from thqa.features.prepare import prepare
    from thqa.features.runner import Backbones
    from thqa.features.weights import known_info

    tb = third_backbone
    bb = Backbones(WeightsOptions(random_init=True), device="cpu", spatial=False, temporal=False, start_workers=False,
                   batch_size=2, precision="fp32")
    assert bb.slots == ("spatial", "temporal", "texture") and bb.built
    with torch.random.fork_rng():
        torch.manual_seed(0)
        bb.spatial, bb.temporal = _TinySpatial().eval(), _TinyTemporal().eval()  # cheap stand-ins for Swin-T, SlowFast
    info = bb.infos["texture_cnn"]
    assert (info["source"], info["seed"], info["precision"]) == ("random-init", DEFAULT_SEED, "fp32")
    assert info["sha256"] == state_digest(bb.model("texture"))
    assert known_info("texture_cnn", bb.weights).sha256 == info["sha256"]  # remembered like the others'

    item = prepare(good_video, small_settings)
    with torch.random.fork_rng():
        torch.manual_seed(DEFAULT_SEED)
        ref = tb.TextureNet().eval()
    with torch.inference_mode():
        want = ref(item.spatial_input)[np.asarray(item.index)].numpy()
    batched = next(FeatureExtractor(small_settings, backbones=bb, workers=0).iter_extract([good_video])).features
    alone = bb.features([item])[0]
    for f in (batched, alone):
        assert sorted(f.extra) == ["texture"] and f.extra["texture"].shape == (small_settings.n_clips, tb.DIM)
        np.testing.assert_allclose(f.extra["texture"], want, rtol=1e-5, atol=1e-6)
        assert f.spatial.shape == (small_settings.n_clips, 768) and "texture_s" in f.timings
    np.testing.assert_array_equal(batched.extra["texture"], alone.extra["texture"])

    with pytest.raises(SystemExit):
        cli.main(["extract", "--help"])
    assert "--texture-weights FILE" in capsys.readouterr().out
    args = cli.build_parser().parse_args(["extract", "m.csv", "--cache-dir", "c", "--texture-weights", "t.pt", "--swin-weights", "s.pt"])
    o = cli_options.weights_options(args)
    assert (o.swin_weights, o.slowfast_weights, o.files) == ("s.pt", None, (("texture_weights", "t.pt"),))
    assert o.named_file("texture_cnn") == "t.pt" and o.named_file("swin_t") == "s.pt"


def test_a_third_backbones_weights_file_is_named_like_the_others(third_backbone, tmp_path, monkeypatch):
    """WeightsOptions.files (what --texture-weights gives) or the entry's environment variable name its file."""
    from thqa.features.runner import Backbones

    tb = third_backbone
    model, _ = tb.build_texture(WeightsOptions(random_init=True, seed=5))
    f = tmp_path / "texture.pt"
    torch.save(model.state_dict(), f)
    built, info = tb.build_texture(WeightsOptions(files=(("texture_weights", str(f)),)))
    assert (info.source, info.path) == ("file", str(f)) and info.sha256 == state_digest(model)
    monkeypatch.setenv("THQA_TEXTURE_WEIGHTS", str(f))
    bb = Backbones(WeightsOptions(), device="cpu", spatial=False, temporal=False, start_workers=False, precision="fp32")
    assert list(bb.infos) == ["texture_cnn"] and bb.infos["texture_cnn"]["sha256"] == info.sha256
    monkeypatch.delenv("THQA_TEXTURE_WEIGHTS")
    with pytest.raises(WeightsNotFoundError, match="no texture weights"):
        tb.build_texture(WeightsOptions())
