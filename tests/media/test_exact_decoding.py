"""Exact decoding: a clip's frames and sound never depend on what else is read with it.

Differential tests of :func:`thqa.media.decode.read_clips` (and of :func:`thqa.features.pipeline.prepare`) against the oracle in
``tests/oracle.py``, a plain decode of the whole file from its start with nothing skipped:

* frames and first frames must be **identical**, pixel for pixel: a decoder that is fed every packet from a keyframe on
  produces the same pictures as one that started at the top of the file;
* sound must be **identical**, sample for sample: it is decoded from the start of the file in both readers (so even
  AAC's noise substitution, which draws from a random state that runs on from packet to packet, gives the same
  samples) and resampled on the same grid by the same filter (a span's samples do not depend on where the span
  starts, because it starts on both rates' grids and the filter's margin is cut away). Tolerance: none.

Each file is read with several seeded sets of seconds - repeats, adjacent seconds, far-apart seconds - on every
video in ../shared/media and on files made here for the cases real files rarely show.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from media import MEDIA_DIR, index_frame, remux_with_offset, write_video
from oracle import reference_frames, reference_sound
from thqa.media.clips import read_clips
from thqa.media.probe import probe

N_FRAMES = 32  # the method's clip length: clips of neighbouring seconds overlap (32 frames > 1 s at 25-30 fps)
SIZE = 32  # small frames keep the scaler cheap; which decoded picture a clip gets does not depend on the size


def second_sets(n_seconds: int, seed: int, k: int = 3) -> list[list[int]]:
    """``k`` sets of clip starts: random with repeats (6, like the sampler), adjacent seconds, far-apart seconds,
    then more random ones."""
    rng = np.random.default_rng(seed)
    n = max(1, n_seconds)
    a = int(rng.integers(0, max(1, n - 2)))
    sets = [
        [int(x) for x in rng.integers(0, n, 6)],
        sorted({a, min(a + 1, n - 1), min(a + 2, n - 1)}),
        sorted({0, n // 2, n - 1}),
    ]
    while len(sets) < k:
        sets.append([int(x) for x in rng.choice(n, size=min(6, n), replace=False)])
    return sets[:k]


def assert_matches_oracle(path: Path, sets: list[list[int]]) -> int:
    """Read ``path`` with each set of seconds and compare every clip with the oracle; returns the clips compared."""
    info = probe(path)
    wanted = sorted({s for secs in sets for s in secs})
    ref = reference_frames(path, wanted, n_frames=N_FRAMES, frame_size=SIZE)
    sound = reference_sound(path, {s: float(ref[s].stamps[0]) for s in wanted}) if info.has_audio else None
    compared = 0
    for secs in sets:
        vc = read_clips(path, secs, n_frames=N_FRAMES, frame_size=SIZE)
        assert [c.second for c in vc.clips] == list(secs)
        for c in vc.clips:
            r = ref[c.second]
            where = f"{path.name}, second {c.second}, read with {secs}"
            d = np.abs(c.frames.astype(np.int16) - r.frames.astype(np.int16))
            assert d.max() == 0, f"{where}: frames differ from a sequential decode (mean {d.mean():.2f}, max {d.max()})"
            assert np.array_equal(c.first_frame, r.first_frame), f"{where}: first frame differs"
            np.testing.assert_array_equal(c.timestamps, r.stamps, err_msg=where)
            assert c.n_real_frames == r.n_real, where
            if sound is not None:
                e = np.abs(c.audio - sound[c.second])
                assert e.max() == 0, f"{where}: sound differs from a decode of the whole track (max {e.max():.2e})"
            else:
                assert not c.audio.any()
            compared += 1
    return compared


# -- every video in ../shared/media -------------------------------------------------------------------------------------
REAL_VIDEOS = sorted(p.name for p in MEDIA_DIR.glob("vid_*")) if MEDIA_DIR.is_dir() else []


@pytest.mark.parametrize("name", REAL_VIDEOS or ["(../shared/media absent)"])
def test_real_videos_match_a_sequential_decode(real_file, name):
    path = real_file(name)
    n = probe(path).n_seconds
    assert assert_matches_oracle(path, second_sets(n, zlib.crc32(name.encode()))) >= 3


def test_the_reported_reproduction_gives_identical_arrays(real_file):
    """Issue 11's example: the clip at 5 s read with [0, 2, 5, 8, 13] differed from the same second read alone
    (mean 2.3, max 111 of 255) because the decoder had skipped packets while the sound was still being collected."""
    f = real_file("vid_ai_dreamtalk_male_256.mp4")
    together = read_clips(f, [0, 2, 5, 8, 13])
    for c in together.clips:
        alone = read_clips(f, [c.second]).clips[0]
        assert np.array_equal(c.frames, alone.frames) and np.array_equal(c.first_frame, alone.first_frame)
        assert np.array_equal(c.audio, alone.audio)


# -- files made for the awkward cases ----------------------------------------------------------------------------------
def moving_frame(i: int, w: int, h: int) -> np.ndarray:
    """The frame index blocks over a texture that moves every frame: every P/B-frame carries a real residual, so a
    picture predicted from a missing reference comes out visibly wrong."""
    rng = np.random.default_rng(7)
    tex = rng.integers(0, 256, (h, w + 64, 3), dtype=np.uint8)
    shift = (3 * i) % 64
    img = tex[:, shift : shift + w] // 2
    return np.where(index_frame(i, w, h) > 0, img + 128, img).astype(np.uint8)


def noise(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(t))) + 0.05 * rng.standard_normal(t.size)
    return np.stack([np.roll(x, 37 * k) for k in range(channels)]).astype(np.float32) if channels > 1 else x.astype(np.float32)


MADE = {
    # name: (suffix, write_video keyword arguments, how many sets of seconds)
    "long_gop250": (".mp4", dict(seconds=60, audio=noise(60, 16000), gop=250), 8),
    "open_gop_bframes": (".mp4", dict(seconds=12, audio=noise(12, 44100), sample_rate=44100, gop=50, x264_preset="fast", x264_params="open-gop=1:bframes=3"), 4),
    "vfr": (".mp4", dict(seconds=8, timestamps=list(np.cumsum(np.tile([0.02, 0.05, 0.03, 0.06], 40))), audio=noise(8, 16000), gop=30), 4),
    "audio_big_chunks": (".mov", dict(seconds=10, audio=noise(10, 16000), audio_codec="pcm_s16le", audio_chunk=16000, audio_ahead=2.0, gop=40), 4),
    "audio_tiny_chunks": (".mkv", dict(seconds=10, audio=noise(10, 48000), sample_rate=48000, audio_codec="pcm_s16le", audio_chunk=64, gop=40), 4),
    "start_offset": (".mp4", dict(seconds=9, timestamps=[0.7 + i / 25 for i in range(225)], audio=noise(10, 16000), gop=40), 4),
    "rotated": (".mp4", dict(seconds=8, size=(64, 48), rotation=90, audio=noise(8, 16000), gop=40), 3),
    "mono_8k": (".mp4", dict(seconds=9, audio=noise(9, 8000), sample_rate=8000, gop=40), 4),
    "surround_48k": (".mp4", dict(seconds=9, audio=noise(9, 48000, channels=6), sample_rate=48000, gop=40), 4),
    "shorter_than_1s": (".mp4", dict(seconds=0.6, audio=noise(0.6, 16000)), 2),
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("exact")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            suffix, kw = MADE[name][:2]
            size = kw.pop("size", (64, 64))
            cache[name] = write_video(root / f"{name}{suffix}", size=size, frame_fn=lambda i, t: moving_frame(i, *size), **kw)
            kw["size"] = size
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(MADE))
def test_made_files_match_a_sequential_decode(made, name):
    path = made(name)
    n = probe(path).n_seconds
    assert assert_matches_oracle(path, second_sets(n, zlib.crc32(name.encode()), k=MADE[name][2])) >= 2


#: issue 21 item 9: files whose streams start before 0 (made with PyAV as the FFmpeg commands would: no ffmpeg here)
NEGATIVE_START = {
    # name: (suffix, offset s, how) - `ffmpeg -itsoffset -2 -i v.mp4 -c copy -avoid_negative_ts disabled n.ts`,
    # `ffmpeg -i v.mp4 -c copy -output_ts_offset -1 -avoid_negative_ts disabled n.mkv`
    "negative_start_ts": (".ts", -2.0, "input"),
    "negative_start_mkv": (".mkv", -1.0, "output"),
}


@pytest.mark.parametrize("name", list(NEGATIVE_START))
def test_files_with_a_negative_start_time_match_a_sequential_decode(made, name, tmp_path):
    """Every clip equals a sequential decode, the first clip included (it failed with "no video frame could be
    decoded" or a seek's EPERM, or was read from the wrong keyframe: seeks to 0 land after the first second)."""
    suffix, offset, how = NEGATIVE_START[name]
    path = remux_with_offset(made("long_gop250"), tmp_path / f"{name}{suffix}", offset, how=how)
    info = probe(path)
    n = info.n_seconds
    sets = [[0, 1], [2, 0, 5], sorted({0, n // 2, n - 1})] + second_sets(n, zlib.crc32(name.encode()), k=3)
    assert assert_matches_oracle(path, sets) >= 9
    first = read_clips(path, [0], n_frames=N_FRAMES, frame_size=SIZE).clips[0]
    assert first.n_real_frames == N_FRAMES


def test_the_long_file_is_read_with_seeks(made, monkeypatch):
    """The 60 s file must exercise the seeking passes (else the comparison above would prove little)."""
    import thqa.media.video as video

    passes = []
    real = video._VideoPass.__init__
    monkeypatch.setattr(video._VideoPass, "__init__", lambda self, *a, **k: passes.append(a[2]) or real(self, *a, **k))
    read_clips(made("long_gop250"), [3, 14, 15, 33, 52], n_frames=N_FRAMES, frame_size=SIZE)
    assert len(passes) >= 3, passes


# -- prepare(): what reaches the backbones and the audio maps ----------------------------------------------------------
@pytest.mark.parametrize("which", ["vid_ai_dreamtalk_male_256.mp4", "vid_real_man_suit_700_vfr.mp4", "long_gop250"])
def test_prepare_matches_each_second_read_alone(real_file, made, which):
    """The arrays prepare() hands on (SlowFast clips, Swin-T inputs, audio maps) equal those built from a read of each
    second on its own. Audio maps: same samples in; the maps of a file's clips are computed in one batch (BLAS may
    sum in another order than for one clip), so they are compared to 1e-5 of their scale."""
    import torch

    from thqa.features.spatial import crop, normalize, resize_short_side
    from thqa.features.pipeline import ExtractionSettings, _audio_extractor, prepare

    path = made(which) if which in MADE else real_file(which)
    s = ExtractionSettings()
    item = prepare(path, s)
    extractor = _audio_extractor(s.audio)
    for u, sec in enumerate(item.unique):
        alone = read_clips(path, [sec], n_frames=s.clip_frames, frame_size=s.frame_size, audio_rate=s.audio.sample_rate, audio_context=s.audio.context).clips[0]
        assert torch.equal(item.clips[u], torch.from_numpy(alone.frames)), f"second {sec}: SlowFast input differs"
        want = normalize(crop(resize_short_side(alone.first_frame, s.short_side), size=s.crop))
        assert torch.equal(item.spatial_input[u], want), f"second {sec}: Swin-T input differs"
        maps = extractor.batch([alone.audio])[0]
        for k in np.flatnonzero(np.asarray(item.seconds) == sec):
            np.testing.assert_allclose(item.audio[k], maps, rtol=0, atol=1e-5 * max(1.0, float(np.abs(maps).max())))


def test_a_seek_that_lands_late_is_caught(made, monkeypatch):
    """A demuxer whose index is approximate may land after the wanted keyframe: the pass notices that its first frame
    comes after the clip's start and decodes from the top instead, so the clips are still exact."""
    import thqa.media.video as video

    real = video._seek
    landed = []

    def sloppy(container, t, path):
        real(container, t + 15.0 if t > 0 else t, path)  # lands on a keyframe after the clip (10 s apart here)
        landed.append(t)

    monkeypatch.setattr(video, "_seek", sloppy)
    path = made("long_gop250")
    assert assert_matches_oracle(path, [[20, 21, 45]]) == 3
    assert 0.0 in landed[1:], landed  # the late landing was noticed and the pass started again from the top
