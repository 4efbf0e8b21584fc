"""Many files at once: worker processes give the same features as one process, clips of several files share a
backbone pass, a slow, hanging or crashing file costs only its own time, and the faster decode and audio paths give
the same numbers as the straightforward ones."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import media
import thqa.pipeline as pipeline
from thqa.errors import DecodeError
from thqa.features.audio import AudioFeatureExtractor
from thqa.io import _worth_seeking, read_clips
from thqa.pipeline import FeatureExtractor


@pytest.fixture(scope="module")
def five_videos(media_dir):
    """Five distinct 2-3 s videos (different noise and lengths) and one broken file in the middle."""
    paths = []
    for k in range(5):
        rng = np.random.default_rng(100 + k)
        audio = (0.05 * (k + 1) * rng.standard_normal(16000 * (2 + k % 2))).astype(np.float32)
        paths.append(str(media.write_video(media_dir / f"batch_{k}.mp4", seconds=2 + k % 2, size=(64, 48), audio=audio)))
    bad = media_dir / "batch_bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    return paths[:2] + [str(bad)] + paths[2:]


def _features(results):
    return [(r.path, None if r.features is None else (r.features.spatial, r.features.temporal, r.features.audio)) for r in results]


def test_workers_give_the_same_features_in_the_same_order(five_videos, backbones, small_settings) -> None:
    one = list(FeatureExtractor(small_settings, backbones=backbones, workers=0).iter_extract(five_videos))
    two = list(FeatureExtractor(small_settings, backbones=backbones, workers=2).iter_extract(five_videos))
    assert [r.path for r in one] == [r.path for r in two] == five_videos
    assert [r.error is None for r in two] == [True, True, False, True, True, True]
    assert "batch_bad.mp4" in two[2].error and two[2].error_type == "DecodeError"
    for (p1, f1), (p2, f2) in zip(_features(one), _features(two)):
        if f1 is None:
            assert f2 is None
            continue
        for a, b in zip(f1, f2):  # workers run BLAS on one thread, this process on two: float32 rounding apart
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=p1)


def test_workers_from_a_fork_server_give_the_same_features(five_videos, backbones, small_settings, monkeypatch) -> None:
    """Beside a GPU the workers start from a fork server (forking a CUDA process is slow): same results."""
    monkeypatch.setattr(pipeline, "_START_METHOD", "forkserver")
    assert pipeline._worker_context().get_start_method() == "forkserver"
    one = list(FeatureExtractor(small_settings, backbones=backbones, workers=0).iter_extract(five_videos[:3]))
    two = list(FeatureExtractor(small_settings, backbones=backbones, workers=2).iter_extract(five_videos[:3]))
    assert [r.error is None for r in two] == [True, True, False]
    for r1, r2 in zip(one[:2], two[:2]):
        np.testing.assert_allclose(r1.features.temporal, r2.features.temporal, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r1.features.audio, r2.features.audio, rtol=1e-5, atol=1e-5)  # BLAS threads differ


def test_the_fork_server_can_start_before_the_models_are_built(monkeypatch) -> None:
    """Backbones on a GPU start the fork server first, so its imports (5-10 s) overlap the model building."""
    from multiprocessing import forkserver

    monkeypatch.setattr(pipeline, "_START_METHOD", "forkserver")
    assert pipeline.start_fork_server() is True
    pid = forkserver._forkserver._forkserver_pid
    assert pid is not None and os.path.exists(f"/proc/{pid}")
    assert pipeline.start_fork_server() is True and forkserver._forkserver._forkserver_pid == pid  # idempotent
    monkeypatch.setattr(pipeline, "_START_METHOD", "fork")
    assert pipeline.start_fork_server() is False  # plain fork: nothing to start


def test_warm_up_runs_one_full_batch_per_shape_once(backbones, small_settings, monkeypatch) -> None:
    """The warm-up pass (cuDNN picks its kernels then, on a GPU) has the shape of every later pass, and runs once."""
    import torch

    seen = []
    monkeypatch.setattr(backbones, "_warm_shapes", set())
    monkeypatch.setattr(backbones, "run_spatial", lambda x, module=None: seen.append(("spatial", tuple(x.shape), x.dtype)))
    monkeypatch.setattr(backbones, "run_temporal", lambda x: seen.append(("temporal", tuple(x.shape), x.dtype)))
    s = small_settings
    assert backbones.warm_up(s) >= 0.0
    b = backbones.batch_size
    assert seen == [
        ("spatial", (b, 3, s.crop, s.crop), torch.float32),
        ("temporal", (b, s.clip_frames, s.frame_size, s.frame_size, 3), torch.uint8),
    ]
    assert backbones.warm_up(s) == 0.0 and len(seen) == 2
    from dataclasses import replace

    backbones.warm_up(replace(s, clip_frames=s.clip_frames * 2))  # another shape: warmed again
    assert len(seen) == 4


def test_clips_of_several_files_share_a_backbone_pass(five_videos, backbones, small_settings, monkeypatch) -> None:
    """batch_size 4 clips, 2 distinct clips per file: every pass holds exactly 4 clips from two files, the last the
    2 left over; the features equal one file at a time."""
    seen = []
    real = pipeline.Backbones.run_temporal

    def spy(self, clips):
        seen.append(clips.shape[0])
        return real(self, clips)

    monkeypatch.setattr(pipeline.Backbones, "run_temporal", spy)
    monkeypatch.setattr(backbones, "batch_size", 4)
    ex = FeatureExtractor(small_settings, backbones=backbones, workers=0)
    res = list(ex.iter_extract(five_videos))
    assert sum(r.error is None for r in res) == 5
    assert seen == [4, 4, 2]
    assert ex.stats["passes"] == 3 and ex.stats["files"] == 6 and ex.stats["forward_s"] > 0
    monkeypatch.setattr(backbones, "batch_size", 1)
    alone = ex.extract(five_videos[4])
    np.testing.assert_allclose(res[5].features.temporal, alone.temporal, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res[5].features.spatial, alone.spatial, rtol=1e-5, atol=1e-6)


def test_a_pass_that_fails_is_redone_file_by_file(five_videos, backbones, small_settings, monkeypatch) -> None:
    real = pipeline.Backbones.run_temporal

    def fails_batched(self, clips):
        if clips.shape[0] > 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(self, clips)

    monkeypatch.setattr(pipeline.Backbones, "run_temporal", fails_batched)
    monkeypatch.setattr(backbones, "batch_size", 4)
    res = list(FeatureExtractor(small_settings, backbones=backbones, workers=0).iter_extract(five_videos))
    assert [r.error is None for r in res] == [True, True, False, True, True, True]
    assert all(r.features.temporal.shape == (2, 2304) for r in res if r.error is None)


def _misbehave_on(monkeypatch, path: str, action) -> None:
    """Make ``prepare`` run ``action()`` (sleep, crash, hang) before reading ``path``; other files as usual."""
    real = pipeline.prepare

    def patched(p, *a, **kw):
        if str(p) == path:
            action()
        return real(p, *a, **kw)

    monkeypatch.setattr(pipeline, "prepare", patched)


def test_a_slow_file_holds_up_nobody(five_videos, backbones, small_settings, monkeypatch, tmp_path) -> None:
    """Unordered results: the other files come out while the slow one is still being read (with one file queued per
    worker; with the default two, the one file queued behind it waits too). The slow file is held until the test has
    received all the others (or 60 s), so the test does not depend on how busy the machine is."""
    slow = five_videos[0]
    go = tmp_path / "go"

    def hold() -> None:
        until = time.monotonic() + 60
        while not go.exists() and time.monotonic() < until:
            time.sleep(0.05)

    _misbehave_on(monkeypatch, slow, hold)
    ex = FeatureExtractor(small_settings, backbones=backbones, workers=2, prefetch=1)
    order = []
    for r in ex.iter_extract(five_videos, ordered=False):
        order.append(r.path)
        if len(order) == len(five_videos) - 1:
            go.touch()
    assert sorted(order) == sorted(five_videos)
    assert order[-1] == slow
    ordered = [r.path for r in ex.iter_extract(five_videos)]
    assert ordered == five_videos


def test_a_crashing_worker_costs_only_its_own_file(five_videos, backbones, small_settings, monkeypatch) -> None:
    """A file that kills its decoding process (as a crash inside FFmpeg would) is reported; the others are done."""
    culprit = five_videos[3]
    _misbehave_on(monkeypatch, culprit, lambda: os.kill(os.getpid(), signal.SIGKILL))
    res = list(FeatureExtractor(small_settings, backbones=backbones, workers=2).iter_extract(five_videos))
    assert [r.path for r in res] == five_videos
    by_path = {r.path: r for r in res}
    assert "died while reading this file" in by_path[culprit].error and culprit in by_path[culprit].error
    assert by_path[five_videos[2]].error_type == "DecodeError"  # the broken file, as usual
    ok = [r for r in res if r.error is None]
    assert len(ok) == 4
    expected = FeatureExtractor(small_settings, backbones=backbones).extract(ok[0].path)
    np.testing.assert_allclose(ok[0].features.temporal, expected.temporal, rtol=1e-5, atol=1e-6)


def test_a_hanging_file_is_given_up_and_the_workers_are_stopped(five_videos, backbones, small_settings, monkeypatch) -> None:
    hung = five_videos[1]
    _misbehave_on(monkeypatch, hung, lambda: time.sleep(3600))
    monkeypatch.setattr(pipeline, "_HANG_MARGIN_S", 2.0)
    monkeypatch.setattr(pipeline, "_POLL_S", 0.5)
    t = time.perf_counter()
    res = list(FeatureExtractor(small_settings, backbones=backbones, workers=2, file_timeout=1.0).iter_extract(five_videos))
    assert time.perf_counter() - t < 60
    assert [r.error is None for r in res] == [True, False, False, True, True, True]
    assert hung in res[1].error
    import multiprocessing

    time.sleep(0.5)
    assert multiprocessing.active_children() == []


def test_decoding_past_its_deadline_is_a_decode_error(good_video_2s) -> None:
    with pytest.raises(DecodeError, match="longer than 0 s") as e:
        read_clips(good_video_2s, [0, 1], timeout=0)
    assert str(good_video_2s) in str(e.value)


def test_workers_argument_is_checked(backbones, small_settings) -> None:
    from thqa.errors import ConfigError

    with pytest.raises(ConfigError, match="workers"):
        FeatureExtractor(small_settings, backbones=backbones, workers="many")
    assert FeatureExtractor(small_settings, backbones=backbones, workers="auto").workers == 0  # CPU backbones


# ---------------------------------------------------------------------------------------------------------------
# the faster paths give the same numbers


def test_batched_audio_features_equal_one_clip_at_a_time() -> None:
    rng = np.random.default_rng(7)
    clips = (0.1 * rng.standard_normal((4, 32000))).astype(np.float32)
    clips[1] = 0.0  # digital silence
    clips[3, :8000] = 0.0
    ex = AudioFeatureExtractor()
    batch = ex.batch(clips)
    assert batch.shape == (4, 4, 128, 32) and batch.dtype == np.float32
    for i in range(4):  # the same samples in; a batch's BLAS calls may sum in another order than one clip's
        one = ex(clips[i])
        np.testing.assert_allclose(batch[i], one, rtol=0, atol=1e-5 * max(1.0, float(np.abs(one).max())))
    # the CQT rows are a linear interpolation of the 84 bins, as np.interp would make them
    s = ex.settings
    x = np.linspace(0, s.cqt_bins - 1, s.n_bins)
    db = np.random.default_rng(0).standard_normal((1, s.cqt_bins, 3))
    lo, w = ex._cqt_lo, ex._cqt_w[:, None]
    mine = db[:, lo, :] * (1 - w) + db[:, lo + 1, :] * w
    ref = np.stack([np.interp(x, np.arange(s.cqt_bins), db[0, :, k]) for k in range(3)], axis=1)
    np.testing.assert_allclose(mine[0], ref, atol=1e-12)


def test_seeking_only_when_it_skips_decoding() -> None:
    assert not _worth_seeking(3.0, 4.0, [0.0])  # a short hop: keep decoding
    assert not _worth_seeking(3.0, 8.0, [0.0, 10.0])  # the keyframe before 8 s is behind us (10 s GOP)
    assert _worth_seeking(3.0, 100.0, [0.0, 10.0])
    assert not _worth_seeking(6.0, 11.0, [0.0])  # no second keyframe in 6 s: the GOP is longer than 5 s
    assert _worth_seeking(1.0, 60.0, [])


def test_one_pass_and_seeking_read_the_same_clips(media_dir) -> None:
    """A 12 s file with 1 s GOPs is read with seeks, one with a single GOP in one pass: same frames and audio."""
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal(16000 * 12)).astype(np.float32)
    kw = dict(seconds=12, size=(64, 48), audio=audio, frame_fn=lambda i, t: media.index_frame(i, 64, 48))
    short_gop = media.write_video(media_dir / "gop25.mp4", gop=25, **kw)
    one_gop = media.write_video(media_dir / "gop300.mp4", gop=300, **kw)
    secs = [0, 2, 4, 6, 8, 10]
    a = read_clips(short_gop, secs, n_frames=8, frame_size=64)
    b = read_clips(one_gop, secs, n_frames=8, frame_size=64)
    for ca, cb in zip(a.clips, b.clips):
        assert [media.read_index(f) for f in ca.frames] == [media.read_index(f) for f in cb.frames] == list(range(25 * ca.second, 25 * ca.second + 8))
        np.testing.assert_allclose(ca.audio, cb.audio, atol=0.02)
        assert np.abs(ca.audio).max() > 0.05


def test_short_passes_are_padded_to_one_shape_on_a_gpu() -> None:
    """On a GPU a short chunk is padded with zeros to batch_size (one input shape for cuDNN); a CPU runs it as is."""
    from types import SimpleNamespace

    import torch

    x = torch.ones(3, 2, 5)
    gpu = SimpleNamespace(device=SimpleNamespace(type="cuda"), batch_size=4)
    padded, n = pipeline.Backbones._pad(gpu, x)
    assert n == 3 and padded.shape == (4, 2, 5)
    assert torch.equal(padded[:3], x) and torch.count_nonzero(padded[3]) == 0
    full, n = pipeline.Backbones._pad(gpu, torch.ones(4, 2, 5))
    assert n == 4 and full.shape == (4, 2, 5)
    cpu = SimpleNamespace(device=SimpleNamespace(type="cpu"), batch_size=4)
    same, n = pipeline.Backbones._pad(cpu, x)
    assert same is x and n == 3
