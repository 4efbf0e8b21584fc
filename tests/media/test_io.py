"""thqa.media.decode: which frames each clip gets (by the index drawn in them), timestamps, padding, rotation, audio on the
container clock, reading only the sampled seconds, containers, and typed errors for unusable files."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from media import index_frame, read_index, tone, truncate, write_audio_only, write_image, write_video
from thqa.errors import DecodeError, MediaError, MediaFileNotFoundError, NoVideoStreamError, THQAError
from thqa.media.clips import read_audio, read_clips
from thqa.media.probe import check_file, probe
from thqa.media.video import iter_frames
from thqa.media.sampling import clip_seconds

SR = 16000
CTX = 0.5  # read_clips' default audio context
BUF = int(round((1 + 2 * CTX) * SR))  # samples per clip buffer
FRAME_25 = SR // 25  # one video frame at 25 fps, in audio samples


def onset(y: np.ndarray, thr: float = 0.05) -> int | None:
    """Index of the first sample above ``thr`` in magnitude, None if none."""
    hit = np.flatnonzero(np.abs(y) > thr)
    return int(hit[0]) if hit.size else None


@pytest.fixture(scope="module")
def indexed_6s(media_dir):
    """6 s, 25 fps, 64x64, frame i shows i; audio: a 1 kHz tone from 3.0 to 4.0 s only."""
    return write_video(media_dir / "indexed_6s.mp4", seconds=6, audio=tone(1000, 6, start=3.0, end=4.0))


@pytest.fixture(scope="module")
def indexed_6s_bframes(media_dir):
    """As indexed_6s, encoded with B-frames (decode order differs from presentation order; negative dts)."""
    return write_video(media_dir / "indexed_6s_b.mp4", seconds=6, audio=tone(1000, 6, start=3.0, end=4.0), x264_preset="medium")


# -- which frames ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bframes", [False, True], ids=["ipp", "bframes"])
def test_each_clip_starts_at_the_first_frame_of_its_second(indexed_6s, indexed_6s_bframes, bframes):
    vc = read_clips(indexed_6s_bframes if bframes else indexed_6s, [0, 1, 2, 3, 4, 5], n_frames=8, frame_size=64)
    assert vc.info.fps == pytest.approx(25.0) and vc.info.duration == pytest.approx(6.0, abs=0.05)
    assert [c.second for c in vc.clips] == [0, 1, 2, 3, 4, 5]
    for c in vc.clips:
        assert c.frames.shape == (8, 64, 64, 3) and c.frames.dtype == np.uint8
        assert c.n_real_frames == 8
        want = [25 * c.second + j for j in range(8)]
        assert [read_index(f) for f in c.frames] == want
        assert read_index(c.first_frame) == want[0]
        assert c.first_frame.shape == (64, 64, 3)
        np.testing.assert_allclose(c.timestamps, np.array(want) / 25.0, atol=1e-3)
        assert c.start == pytest.approx(c.second, abs=1e-3)
        assert c.audio.shape == (BUF,) and c.audio.dtype == np.float32


def test_ntsc_rate_first_frame_at_or_after_the_second(media_dir):
    fps = 30000 / 1001
    p = write_video(media_dir / "ntsc.mp4", seconds=4, fps=29.97, size=(64, 64))
    vc = read_clips(p, [0, 1, 2, 3], n_frames=3, frame_size=64)
    for c in vc.clips:
        first = math.ceil(c.second * fps - 1e-6)  # 1 s -> frame 30 (1.001 s), not frame 29 (0.968 s)
        assert read_index(c.first_frame) == first, c.second
        assert c.timestamps[0] >= c.second - 1e-4
        assert c.timestamps[0] - c.second < 1 / fps
        assert [read_index(f) for f in c.frames] == [first, first + 1, first + 2]


def test_clips_come_back_in_the_order_asked_and_repeats_share_frames(indexed_6s):
    vc = read_clips(indexed_6s, [4, 0, 4, 2], n_frames=2, frame_size=32)
    assert [c.second for c in vc.clips] == [4, 0, 4, 2]
    assert [read_index(c.first_frame) for c in vc.clips] == [100, 0, 100, 50]
    np.testing.assert_array_equal(vc.clips[0].frames, vc.clips[2].frames)


def test_variable_frame_rate_uses_timestamps_not_frame_counts(media_dir):
    # 10 fps for two seconds, then 30 fps: frame counts would put second 3 at frame 30 (it is frame 50)
    ts = [i / 10 for i in range(20)] + [2 + i / 30 for i in range(120)]
    p = write_video(media_dir / "vfr.mp4", seconds=6, timestamps=ts)
    vc = read_clips(p, clip_seconds(probe(p).duration), n_frames=4, frame_size=64)
    expect_first = {0: 0, 1: 10, 2: 20, 3: 50, 4: 80, 5: 110}
    for c in vc.clips:
        idx = [read_index(f) for f in c.frames]
        assert idx == list(range(expect_first[c.second], expect_first[c.second] + 4))
        np.testing.assert_allclose(c.timestamps, [ts[i] for i in idx], atol=2e-3)


def test_seconds_count_from_the_first_frame(media_dir):
    # the video starts 0.5 s into the container clock; the audio starts at 0 and has a tone from 2.0 to 2.5 s
    p = write_video(
        media_dir / "offset.mp4", seconds=3, timestamps=[0.5 + i / 25 for i in range(75)], audio=tone(1000, 3.5, start=2.0, end=2.5)
    )
    info = probe(p)
    assert info.start_time == pytest.approx(0.5, abs=1e-3)
    assert info.duration == pytest.approx(3.0, abs=0.05)
    vc = read_clips(p, [0, 1, 2], n_frames=2, frame_size=64)
    assert [read_index(c.first_frame) for c in vc.clips] == [0, 25, 50]
    assert [c.start for c in vc.clips] == pytest.approx([0.5, 1.5, 2.5], abs=1e-3)
    # audio on the same (container) clock: clip 1's buffer covers [1.0, 3.0) s, so the tone starts at 1.0 s into it
    assert onset(vc.clips[1].audio) == pytest.approx(SR, abs=FRAME_25)
    assert np.abs(vc.clips[0].audio).max() < 0.01  # [0.0, 2.0): silence
    assert onset(vc.clips[2].audio) == pytest.approx(0, abs=FRAME_25)  # [2.0, 4.0): the tone from its start


# -- padding ----------------------------------------------------------------------------------------------------------
def test_short_clip_is_padded_with_its_last_frame(media_dir):
    p = write_video(media_dir / "1p2s.mp4", seconds=1.2, size=(64, 64))  # 30 frames
    vc = read_clips(p, [0, 1], n_frames=32, frame_size=48)
    c0, c1 = vc.clips
    assert c0.n_real_frames == 30 and c1.n_real_frames == 5
    idx1 = [read_index(f) for f in c1.frames]
    assert idx1 == [25, 26, 27, 28, 29] + [29] * 27
    assert c1.frames.shape == (32, 48, 48, 3)
    assert np.all(c1.timestamps[5:] == c1.timestamps[4])
    assert [read_index(f) for f in c0.frames] == list(range(30)) + [29, 29]


def test_one_frame_video(media_dir):
    p = write_video(media_dir / "oneframe.mp4", seconds=0.04, size=(64, 64), frame_fn=lambda i, t: index_frame(777, 64, 64))
    info = probe(p)
    assert info.n_seconds == 1
    vc = read_clips(p, clip_seconds(info.duration), n_frames=32, frame_size=64)
    assert len(vc.clips) == 6
    for c in vc.clips:
        assert c.n_real_frames == 1 and c.frames.shape == (32, 64, 64, 3)
        assert all(read_index(f) == 777 for f in c.frames)
    assert not vc.has_audio
    assert all(np.all(c.audio == 0) for c in vc.clips)


# -- sizes and rotation -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(322, 180), (180, 320)])
def test_non_square_sizes(media_dir, size):
    w, h = size
    p = write_video(media_dir / f"size_{w}x{h}.mp4", seconds=2, size=size)
    info = probe(p)
    assert (info.width, info.height) == (w, h)
    vc = read_clips(p, [0, 1], n_frames=4, frame_size=64)
    for c in vc.clips:
        assert c.first_frame.shape == (h, w, 3)  # native size
        assert c.frames.shape == (4, 64, 64, 3)  # squashed to the square
        assert read_index(c.first_frame) == 25 * c.second
        assert [read_index(f) for f in c.frames] == [25 * c.second + j for j in range(4)]


def test_odd_sizes(media_dir):
    # H.264 4:4:4 and MPEG-4 Part 2 allow odd sizes
    for codec, pix in (("h264", "yuv444p"), ("mpeg4", "yuv420p")):
        p = write_video(media_dir / f"odd_{codec}.mkv", seconds=2, size=(321, 181), codec=codec, pix_fmt=pix)
        info = probe(p)
        assert (info.width, info.height) == (321, 181)
        vc = read_clips(p, [0, 1], n_frames=2, frame_size=64)
        assert vc.clips[1].first_frame.shape == (181, 321, 3)
        assert [read_index(c.first_frame) for c in vc.clips] == [0, 25]


@pytest.mark.parametrize("suffix", [".avi", ".mov", ".mkv"])
def test_mjpeg_video_is_a_video_not_a_still_image(media_dir, suffix):
    """Motion-JPEG (webcams, cameras) is a video of JPEG frames; in Matroska the stream has no frame count/duration."""
    p = write_video(media_dir / f"mjpeg{suffix}", seconds=2, codec="mjpeg")
    info = probe(p)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    vc = read_clips(p, [0, 1], n_frames=2, frame_size=64)
    assert [read_index(c.first_frame) for c in vc.clips] == [0, 25]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(media_dir, rotation):
    import av

    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write display-matrix rotation")
    p = write_video(
        media_dir / f"rot{rotation}.mp4", seconds=1, size=(64, 32), rotation=rotation, frame_fn=lambda i, t: index_frame(1000 + i, 64, 32)
    )
    info = probe(p)
    assert info.rotation == rotation
    assert (info.width, info.height) == ((32, 64) if rotation in (90, 270) else (64, 32))
    vc = read_clips(p, [0], n_frames=3, frame_size=64)
    ff = vc.clips[0].first_frame
    assert ff.shape == (info.height, info.width, 3)
    k = rotation // 90  # displayed = stored rotated counter-clockwise by `rotation`
    assert read_index(np.rot90(ff, k=-k)) == 1000
    assert read_index(ff if rotation != 180 else np.rot90(ff, 1)) != 1000  # (the check can fail)
    assert [read_index(np.rot90(f, k=-k)) for f in vc.clips[0].frames] == [1000, 1001, 1002]


# -- audio ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate, channels", [(8000, 1), (16000, 1), (22050, 1), (44100, 2), (48000, 1), (48000, 2)])
def test_audio_is_mono_float32_16k_and_on_time(media_dir, rate, channels):
    a = tone(440, 5, sample_rate=rate, start=2.5, end=4.0)
    if channels == 2:
        a = np.stack([a, a])
    p = write_video(media_dir / f"sr_{rate}_{channels}.mp4", seconds=5, audio=a, sample_rate=rate)
    info = probe(p)
    assert info.has_audio and info.audio_rate == rate and info.audio_channels == channels
    vc = read_clips(p, [1, 2, 3], n_frames=2, frame_size=32)
    assert vc.has_audio and vc.audio_rate == SR
    c1, c2, c3 = vc.clips
    for c in vc.clips:
        assert c.audio.dtype == np.float32 and c.audio.shape == (BUF,)
    # clip 2's buffer covers [1.5, 3.5) s: the tone starts 1.0 s in, within one video frame (here: a few samples)
    assert onset(c2.audio) == pytest.approx(SR, abs=FRAME_25)
    assert np.abs(c1.audio[: SR + int(CTX * SR) - FRAME_25]).max() < 0.01  # [0.5, 2.0 + ...) is silent
    # clip 3's buffer covers [2.5, 4.5): tone from its start to 4.0 s, then silence
    assert onset(c3.audio) == pytest.approx(0, abs=FRAME_25)
    assert np.abs(c3.audio[int(1.5 * SR) + FRAME_25 :]).max() < 0.01
    # the pitch survives resampling: the spectrum's peak is at 440 Hz
    seg = c3.audio[: SR]
    spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
    assert np.argmax(spec) * SR / seg.size == pytest.approx(440, abs=2)
    # read_audio: the whole track, same clock
    y = read_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1
    assert y.size == pytest.approx(5 * SR, abs=FRAME_25 * 2)
    assert onset(y) == pytest.approx(int(2.5 * SR), abs=FRAME_25)


def test_stereo_downmix_keeps_the_level_of_the_same_mono_content(media_dir):
    """A recording stored as stereo (two identical channels) must give the same mono signal as stored as mono."""
    a = tone(440, 3, start=0.0, amplitude=0.4)
    pm = write_video(media_dir / "level_mono.mp4", seconds=3, audio=a)
    ps = write_video(media_dir / "level_stereo.mp4", seconds=3, audio=np.stack([a, a]))
    rms = {}
    for name, p in (("mono", pm), ("stereo", ps)):
        y = read_clips(p, [1], n_frames=2, frame_size=32).clips[0].audio
        rms[name] = float(np.sqrt(np.mean(y[int(CTX * SR) : int(CTX * SR) + SR] ** 2)))
    assert rms["mono"] == pytest.approx(0.4 / math.sqrt(2), rel=0.05)
    gain_db = 20 * math.log10(rms["stereo"] / rms["mono"])
    assert abs(gain_db) < 0.5, f"stereo -> mono changes the level by {gain_db:+.2f} dB"


def test_file_without_audio_gives_zeros(media_dir):
    p = write_video(media_dir / "noaudio.mp4", seconds=2)
    info = probe(p)
    assert not info.has_audio and info.audio_rate is None
    vc = read_clips(p, [0, 1], n_frames=2, frame_size=32)
    assert not vc.has_audio
    assert all(c.audio.shape == (BUF,) and not c.audio.any() for c in vc.clips)
    with pytest.raises(MediaError, match="no audio stream") as ei:
        read_audio(p)
    assert str(p) in str(ei.value)


def test_audio_context_sets_the_buffer(indexed_6s):
    vc = read_clips(indexed_6s, [3], n_frames=2, frame_size=32, audio_context=0.25, audio_rate=8000)
    y = vc.clips[0].audio
    assert y.shape == (int(1.5 * 8000),)
    # buffer covers [2.75, 4.25): tone 3.0-4.0
    assert onset(y) == pytest.approx(int(0.25 * 8000), abs=8000 // 25)
    assert np.abs(y[int(1.25 * 8000) + 8000 // 25 :]).max() < 0.01


# -- cost does not grow with duration -----------------------------------------------------------------------------
def test_long_file_reads_only_the_sampled_seconds(media_dir):
    rng = np.random.default_rng(5)
    paths = {}
    for d in (6, 120):
        audio = (0.05 * rng.standard_normal(d * SR)).astype(np.float32)
        paths[d] = write_video(media_dir / f"long_{d}.mp4", seconds=d, size=(128, 96), audio=audio, gop=50)
    times = {}
    for d, p in paths.items():
        secs = clip_seconds(probe(p).duration)
        best = math.inf
        for _ in range(2):
            t0 = time.perf_counter()
            vc = read_clips(p, secs)
            best = min(best, time.perf_counter() - t0)
        times[d] = best
        assert [read_index(c.first_frame) for c in vc.clips] == [25 * s for s in secs]
        assert all(c.frames.shape == (32, 224, 224, 3) for c in vc.clips)
        assert all(np.abs(c.audio).max() > 0.05 for c in vc.clips)
    assert clip_seconds(120.0) == [0, 20, 40, 60, 80, 100]
    # 20x the frames; decoding them all would take far longer than the 6 s file
    assert times[120] < 3 * times[6] + 0.2, times


# -- containers ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "suffix, codec, rate",
    [(".mkv", "h264", 48000), (".webm", "vp9", 48000), (".avi", "mpeg4", 16000), (".mov", "h264", 44100)],
)
def test_other_containers_decode(media_dir, suffix, codec, rate):
    import av

    enc = {"vp9": "libvpx-vp9"}.get(codec, codec)
    try:
        av.codec.Codec(enc, "w")
    except Exception:  # noqa: BLE001
        pytest.skip(f"PyAV has no {enc} encoder")
    p = write_video(media_dir / f"cont{suffix}", seconds=3, codec=codec, audio=tone(1000, 3, sample_rate=rate, start=1.5), sample_rate=rate)
    info = probe(p)
    assert info.has_audio and info.fps == pytest.approx(25, abs=0.1)
    vc = read_clips(p, [0, 1, 2], n_frames=4, frame_size=64)
    for c in vc.clips:
        assert [read_index(f) for f in c.frames] == [25 * c.second + j for j in range(4)]
    # clip 1's buffer covers [0.5, 2.5): the tone starts at 1.5 s, 1.0 s in (opus pre-skip, mp3/pcm delays included)
    assert onset(vc.clips[1].audio) == pytest.approx(SR, abs=FRAME_25)


def test_iter_frames_yields_timestamps_and_frames(indexed_6s):
    got = list(iter_frames(indexed_6s, start=2.0, end=2.2, size=32))
    assert [round(t, 3) for t, _ in got] == [2.0, 2.04, 2.08, 2.12, 2.16]
    assert [read_index(f) for _, f in got] == [50, 51, 52, 53, 54]


# -- unusable files: typed errors that name the file ----------------------------------------------------------------
def _bad_files(tmp_path, good):
    d = tmp_path / "adir.mp4"
    d.mkdir()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    return {
        "missing": (tmp_path / "nope.mp4", MediaFileNotFoundError, "no such file"),
        "directory": (d, MediaFileNotFoundError, "directory"),
        "empty": (empty, MediaError, "empty"),
        "text": (text, DecodeError, "not a media file"),
        "png": (write_image(tmp_path / "img.png"), NoVideoStreamError, "still image"),
        "jpeg": (write_image(tmp_path / "img.jpg"), NoVideoStreamError, "still image"),
        "jpeg_named_png": (write_image(tmp_path / "jpeg_inside.png", fmt="mjpeg"), NoVideoStreamError, "still image"),
        "audio_only": (write_audio_only(tmp_path / "voice.m4a", tone(300, 2)), NoVideoStreamError, "no video stream"),
        "audio_only_wav": (write_audio_only(tmp_path / "voice.wav", tone(300, 2), codec="pcm_s16le"), NoVideoStreamError, "no video stream"),
        "truncated": (truncate(good, tmp_path / "half.mp4"), DecodeError, ""),
    }


@pytest.mark.parametrize(
    "kind", ["missing", "directory", "empty", "text", "png", "jpeg", "jpeg_named_png", "audio_only", "audio_only_wav", "truncated"]
)
def test_unusable_files_raise_typed_errors_naming_the_file(tmp_path, indexed_6s, kind):
    path, etype, words = _bad_files(tmp_path, indexed_6s)[kind]
    for fn in (probe, lambda p: read_clips(p, [0, 1])):
        with pytest.raises(etype) as ei:
            fn(path)
        assert isinstance(ei.value, THQAError)
        assert str(path) in str(ei.value)
        assert words in str(ei.value)


def test_check_file_accepts_a_real_file_and_builtin_exception_kinds_still_match(tmp_path, indexed_6s):
    assert check_file(str(indexed_6s)) == indexed_6s
    with pytest.raises(FileNotFoundError):
        check_file(tmp_path / "missing.mp4")
    (tmp_path / "z.mp4").write_bytes(b"")
    with pytest.raises(ValueError):
        check_file(tmp_path / "z.mp4")


def test_read_clips_needs_seconds(indexed_6s):
    with pytest.raises(ValueError):
        read_clips(indexed_6s, [])
    with pytest.raises(ValueError):
        read_clips(indexed_6s, lambda info: [])


def test_seconds_chosen_from_the_probe_open_the_file_once(indexed_6s, monkeypatch):
    """``seconds`` as a function of the MediaInfo: the same clips as probe + read_clips; the file is probed and its
    video read in one opening (the sound has its own, decoded from the start: see test_exact_decoding.py)."""
    import thqa.media.clips
    import thqa.media.probe
    import thqa.media.sound

    opened = []
    real_open = thqa.media.probe._open
    for module in (thqa.media.clips, thqa.media.sound):  # the video's opening and the sound's
        monkeypatch.setattr(module, "_open", lambda p: opened.append(p) or real_open(p))
    seen = []

    def choose(info):
        seen.append(info.duration)
        return sorted(set(clip_seconds(info.duration, n_clips=4)))

    vc = read_clips(indexed_6s, choose, n_frames=6, frame_size=32)
    assert len(opened) == 2 and seen == [pytest.approx(6.0, abs=0.05)]
    ref = read_clips(indexed_6s, sorted(set(clip_seconds(probe(indexed_6s).duration, n_clips=4))), n_frames=6, frame_size=32)
    assert [c.second for c in vc.clips] == [c.second for c in ref.clips] and len(vc.clips) >= 3
    for a, b in zip(vc.clips, ref.clips):
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)


def test_worker_processes_scale_frames_on_one_thread():
    """set_decode_threads(1) (what decoding workers call) also holds PyAV 17+'s scaler to one thread: its
    default, a thread per core, costs 1.6x the CPU time and would compete with the other workers."""
    import av

    from thqa.media.probe import set_decode_threads
    from thqa.media.video import _scaler_threads

    try:
        set_decode_threads(1)
        if int(av.__version__.split(".")[0]) >= 17:
            assert _scaler_threads() == {"threads": 1}
        else:
            assert _scaler_threads() == {}
    finally:
        set_decode_threads(0)
    assert _scaler_threads() in ({"threads": 0}, {})


# -- real files ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, fps, rate, channels",
    [
        ("vid_real_man_map_844.mp4", 25.0, 44100, 2),
        ("vid_real_hdtf_short_2s_2997.mp4", 30000 / 1001, 16000, 1),
        ("vid_real_woman_shorthair_512_48k.mp4", 25.0, 48000, 2),
        ("vid_noaudio_real_mead_m030_256.mp4", 25.0, None, None),
        ("vid_real_man_suit_700_vfr.mp4", None, 44100, 2),
    ],
)
def test_real_files_probe_and_read(real_file, name, fps, rate, channels):
    p = real_file(name)
    info = probe(p)
    if fps is not None:
        assert info.fps == pytest.approx(fps, rel=1e-3)
    assert info.audio_rate == rate and info.audio_channels == channels
    secs = clip_seconds(info.duration)
    vc = read_clips(p, sorted(set(secs)), n_frames=32, frame_size=64)
    for c in vc.clips:
        assert c.frames.shape == (32, 64, 64, 3)
        assert c.first_frame.shape == (info.height, info.width, 3)
        assert c.timestamps[0] >= info.start_time + c.second - 1e-3
        assert c.timestamps[0] - (info.start_time + c.second) < 0.1  # the first frame at/after the second
        assert np.all(np.diff(c.timestamps) >= 0)
        assert np.isfinite(c.audio).all()
    assert vc.has_audio == (rate is not None)
    if rate is not None:
        assert max(float(np.abs(c.audio).max()) for c in vc.clips) > 0.01


def test_real_silent_audio_track(real_file):
    p = real_file("vid_real_silentaudio_man_480.mp4")
    vc = read_clips(p, [0, 3], n_frames=4, frame_size=32)
    assert probe(p).has_audio
    assert all(np.abs(c.audio).max() < 1e-3 for c in vc.clips)


@pytest.mark.parametrize("name", ["img_ai_jpeg_named_png.png", "img_real_woman_474.png", "aud_en_dreamtalk_ack_48k.m4a", "aud_wav_content_named_mp3.mp3"])
def test_real_non_videos_are_refused(real_file, name):
    p = real_file(name)
    with pytest.raises(NoVideoStreamError) as ei:
        read_clips(p, [0])
    assert str(p) in str(ei.value)


def test_decode_keeps_every_public_name_of_the_split_modules():
    """thqa.media.decode stays the public face of decoding: every name it had, the very objects of the modules that
    now hold them (probe, video, sound, clips), imported without a deprecation warning."""
    import importlib
    import warnings as w

    import thqa.media.clips
    import thqa.media.probe
    import thqa.media.video

    with w.catch_warnings():
        w.simplefilter("error")
        decode = importlib.reload(importlib.import_module("thqa.media.decode"))
    homes = {"MediaInfo": thqa.media.probe, "ClipData": thqa.media.clips, "VideoClips": thqa.media.clips, "probe": thqa.media.probe,
             "read_clips": thqa.media.clips, "read_audio": thqa.media.clips, "iter_frames": thqa.media.video,
             "check_file": thqa.media.probe, "set_decode_threads": thqa.media.probe}
    assert sorted(decode.__all__) == sorted(homes)
    for name, home in homes.items():
        assert getattr(decode, name) is getattr(home, name), name


def test_decoding_warnings_come_from_the_media_packages_logger(media_dir, caplog):
    """Every media module logs under 'thqa.media' (the logger whose warnings thqa.scoring.timeline gathers): a file
    cut in half, its index first, decodes with warnings, and those records carry that logger's name."""
    import logging

    fast = write_video(media_dir / "fast_for_log.mp4", seconds=4, audio=tone(500, 4), faststart=True)
    half = truncate(fast, media_dir / "fast_for_log_half.mp4")
    with caplog.at_level(logging.WARNING, logger="thqa.media"):
        vc = read_clips(half, [0, 3], n_frames=4, frame_size=32)
    assert vc.warnings and all(str(half) in w for w in vc.warnings)
    records = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in records] == vc.warnings
    assert {r.name for r in records} == {"thqa.media"}
