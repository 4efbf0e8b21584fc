"""Many files at once: worker processes give the same features as one process, clips of several files share a
backbone pass, a slow, hanging or crashing file costs only its own time, and the faster decode and audio paths give
the same numbers as the straightforward ones."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch

import media
import thqa.features.runner as runner
import thqa.features.workers as workers
from thqa.features.prepare import prepare
from thqa.errors import DecodeError
from thqa.features.audio import AudioFeatureExtractor
from thqa.features.audio_maps import _cqt_rows
from thqa.media.clips import read_clips
from thqa.media.video import _worth_seeking
from thqa.features.extractor import FeatureExtractor


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
        for a, b in zip(f1, f2):  # the same bits (the audio's BLAS runs on one thread in every process)
            np.testing.assert_array_equal(a, b, err_msg=p1)


def test_workers_from_a_fork_server_give_the_same_features(five_videos, backbones, small_settings, monkeypatch) -> None:
    """Beside a GPU the workers start from a fork server (forking a CUDA process is slow): same results."""
    monkeypatch.setattr(workers, "_START_METHOD", "forkserver")
    assert workers._worker_context().get_start_method() == "forkserver"
    one = list(FeatureExtractor(small_settings, backbones=backbones, workers=0).iter_extract(five_videos[:3]))
    two = list(FeatureExtractor(small_settings, backbones=backbones, workers=2).iter_extract(five_videos[:3]))
    assert [r.error is None for r in two] == [True, True, False]
    for r1, r2 in zip(one[:2], two[:2]):
        np.testing.assert_array_equal(r1.features.temporal, r2.features.temporal)
        np.testing.assert_array_equal(r1.features.audio, r2.features.audio)


def test_the_fork_server_can_start_before_the_models_are_built(monkeypatch) -> None:
    """Backbones on a GPU start the fork server first, so its imports (5-10 s) overlap the model building."""
    from multiprocessing import forkserver

    monkeypatch.setattr(workers, "_START_METHOD", "forkserver")
    assert workers.start_fork_server() is True
    pid = forkserver._forkserver._forkserver_pid
    assert pid is not None and os.path.exists(f"/proc/{pid}")
    assert workers.start_fork_server() is True and forkserver._forkserver._forkserver_pid == pid  # idempotent
    monkeypatch.setattr(workers, "_START_METHOD", "fork")
    assert workers.start_fork_server() is False  # plain fork: nothing to start


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
    real = runner.Backbones.run_temporal

    def spy(self, clips):
        seen.append(clips.shape[0])
        return real(self, clips)

    monkeypatch.setattr(runner.Backbones, "run_temporal", spy)
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
    real = runner.Backbones.run_temporal

    def fails_batched(self, clips):
        if clips.shape[0] > 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(self, clips)

    monkeypatch.setattr(runner.Backbones, "run_temporal", fails_batched)
    monkeypatch.setattr(backbones, "batch_size", 4)
    res = list(FeatureExtractor(small_settings, backbones=backbones, workers=0).iter_extract(five_videos))
    assert [r.error is None for r in res] == [True, True, False, True, True, True]
    assert all(r.features.temporal.shape == (2, 2304) for r in res if r.error is None)


def _misbehave_on(monkeypatch, path: str, action) -> None:
    """Make ``prepare`` run ``action()`` (sleep, crash, hang) before reading ``path``; other files as usual."""
    real = workers.prepare

    def patched(p, *a, **kw):
        if str(p) == path:
            action()
        return real(p, *a, **kw)

    monkeypatch.setattr(workers, "prepare", patched)  # where the decoding workers call it


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


def test_a_hanging_file_is_given_up_and_the_workers_are_stopped(five_videos, backbones, small_settings, monkeypatch, tmp_path) -> None:
    """The hung file's worker is stopped before its read ends (no wall-clock bound: a busy machine only slows it)."""
    hung, woke = five_videos[1], tmp_path / "woke"

    def hang() -> None:  # far past file_timeout + the margin; a worker left to go on would wake, note it and succeed
        time.sleep(120)
        woke.touch()

    _misbehave_on(monkeypatch, hung, hang)
    monkeypatch.setattr(workers, "_HANG_MARGIN_S", 2.0)
    monkeypatch.setattr(workers, "_POLL_S", 0.5)
    res = list(FeatureExtractor(small_settings, backbones=backbones, workers=2, file_timeout=1.0).iter_extract(five_videos))
    assert [r.error is None for r in res] == [True, False, False, True, True, True]
    assert hung in res[1].error
    import multiprocessing

    time.sleep(0.5)
    assert multiprocessing.active_children() == []
    assert not woke.exists()  # given up, not waited for


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
    lo, w = _cqt_rows(s.cqt_bins, s.n_bins)
    w = w[:, None]
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


def test_short_passes_are_padded_to_one_shape_on_every_device() -> None:
    """A short chunk is padded with zeros to batch_size on a GPU (one input shape for cuDNN) and on a CPU (one shape,
    so the same kernels, whatever shares the pass); a full one is run as is."""
    from types import SimpleNamespace

    import torch

    x = torch.ones(3, 2, 5)
    for kind in ("cuda", "cpu"):
        dev = SimpleNamespace(device=SimpleNamespace(type=kind), batch_size=4)
        padded, n = runner.Backbones._pad(dev, x)
        assert n == 3 and padded.shape == (4, 2, 5)
        assert torch.equal(padded[:3], x) and torch.count_nonzero(padded[3]) == 0
        full, n = runner.Backbones._pad(dev, torch.ones(4, 2, 5))
        assert n == 4 and full.shape == (4, 2, 5)
    one = SimpleNamespace(device=SimpleNamespace(type="cpu"), batch_size=1)
    same, n = runner.Backbones._pad(one, x[:1])
    assert same.shape == (1, 2, 5) and n == 1


# ---------------------------------------------------------------------------------------------------------------
# a file's features are the same bits whatever the path: alone, in a mixed batch, with 0, 1 or 2 workers, as the
# Ray actor and the Scorer run them - in fp32 and in bf16 (emulated on CPUs without it: small stand-in backbones)
class _TinySpatial(torch.nn.Module):
    """Stands in for ECA + Swin-T: (M, 3, H, W) -> (M, 768); records the batch size of every pass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 16, stride=16)
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.fc = torch.nn.Linear(8 * 4 * 4, 768)
        self.passes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes.append(x.shape[0])
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class _TinyTemporal(torch.nn.Module):
    """Stands in for SlowFast: [slow (M, 3, T/4, S, S), fast (M, 3, T, S, S)] -> (M, 2304); records every pass."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = torch.nn.Conv3d(3, 4, (1, 8, 8), stride=(1, 8, 8))
        self.fast = torch.nn.Conv3d(3, 4, (2, 8, 8), stride=(2, 8, 8))
        self.pool = torch.nn.AdaptiveAvgPool3d((1, 2, 2))
        self.fc = torch.nn.Linear(32, 2304)
        self.passes: list[int] = []

    def forward(self, pathways: list[torch.Tensor]) -> torch.Tensor:
        slow, fast = pathways
        self.passes.append(slow.shape[0])
        z = torch.cat([self.pool(torch.relu(self.slow(slow))).flatten(1), self.pool(torch.relu(self.fast(fast))).flatten(1)], 1)
        return self.fc(z)


def _tiny_backbones(precision: str, batch_size: int) -> runner.Backbones:
    from thqa.features.weights import WeightsOptions

    bb = runner.Backbones(WeightsOptions(random_init=True), device="cpu", spatial=False, temporal=False, start_workers=False,
                            batch_size=batch_size, precision=precision)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        bb.spatial, bb.temporal = _TinySpatial().eval(), _TinyTemporal().eval()
    return bb


def _assert_same(paths: dict, alone: dict) -> None:
    for name, got in paths.items():
        assert sorted(got) == sorted(alone), name
        for p in alone:
            for part in ("spatial", "temporal", "audio"):
                np.testing.assert_array_equal(getattr(got[p], part), getattr(alone[p], part), err_msg=f"{name}: {p} {part}")


def _batched(bb: runner.Backbones, items: list) -> dict:
    """What FeatureExtractor.iter_extract does with prepared files: passes of batch_size clips across files."""
    batcher, out = runner.ClipBatcher(bb), {}
    for i, it in enumerate(items):
        batcher.add(i, it)
        while len(batcher) >= bb.batch_size:
            out.update((items[j].path, f) for j, f in batcher.run())
    while len(batcher):
        out.update((items[j].path, f) for j, f in batcher.run())
    return out


@pytest.mark.parametrize("precision", ["fp32", "bf16-autocast"])
def test_a_files_backbone_features_are_the_same_bits_whatever_shares_its_passes(five_videos, small_settings, precision) -> None:
    """Passes of 3 clips over files of 2 clips (so files share passes, differently in every path): exact equality
    with the file run alone, in fp32 and in bf16 autocast, and every pass has one shape (the last ones padded)."""
    good = [p for p in five_videos if "bad" not in p]
    items = [prepare(p, small_settings) for p in good]
    bb = _tiny_backbones(precision, batch_size=3)
    assert bb.precision == precision
    alone = {it.path: bb.features([it])[0] for it in items}  # Scorer.score and Backbones.features of one file
    paths = {
        "mixed": _batched(bb, items),
        "mixed, reversed": _batched(bb, items[::-1]),
        "mixed, rotated": _batched(bb, items[2:] + items[:2]),
        "ray actor": dict(zip(good, bb.features(items))),  # a batch of prepared files through Backbones.features
        "ray actor, two files": dict(zip(good[1:3], bb.features(items[1:3]))),
    }
    paths["ray actor, two files"].update((p, alone[p]) for p in good if p not in good[1:3])
    _assert_same(paths, alone)
    assert set(bb.spatial.passes) == set(bb.temporal.passes) == {3}


def test_a_files_features_are_the_same_bits_with_0_1_or_2_workers(five_videos, small_settings) -> None:
    """This process runs BLAS on 2 threads, decoding workers on 1: the same bits anyway (audio maps included), from
    FeatureExtractor.extract of the file alone and from iter_extract with 0, 1 or 2 workers."""
    from threadpoolctl import threadpool_limits

    good = [p for p in five_videos if "bad" not in p][:3]
    bb = _tiny_backbones("fp32", batch_size=3)

    def ex(workers: int) -> FeatureExtractor:
        return FeatureExtractor(small_settings, backbones=bb, workers=workers)

    with threadpool_limits(2, user_api="blas"):
        alone = {p: ex(0).extract(p) for p in good}
        paths = {f"workers {w}": {r.path: r.features for r in ex(w).iter_extract(good)} for w in (0, 1, 2)}
    _assert_same(paths, alone)
