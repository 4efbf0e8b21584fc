"""thqa.analysis.sync and `thqa sync`: offsets of synthetic talking heads (sound delayed in the samples and on the container
clock), injected offsets on real talking heads, and the files that cannot be analysed."""
from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from media import tone, write_video
from thqa.cli import app as cli
from thqa.errors import DependencyError, MediaFileNotFoundError
from thqa.analysis.sync import SyncSettings, analysis_windows, decode_av, drop_repeated_frames, estimate_av_offset, estimate_offset_arrays, mouth_region
from thqa.synthetic.heads import _face_for_seed, _mouth_box, make_talking_head, synthesize_speech


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Path:
    """6 s synthetic talking head, 160 px, 25 fps: picture and sound in sync by construction."""
    p = tmp_path_factory.mktemp("sync") / "head.mp4"
    make_talking_head(p, seed=5, duration=6.0, size=160)
    return p


@pytest.fixture(scope="module")
def head_data(head):
    return decode_av(head)


def shift_samples(data, ms: float):
    n = int(round(ms / 1000 * data.audio_rate))
    a = data.audio
    b = np.concatenate([np.zeros(n, np.float32), a[:-n]]) if n > 0 else np.concatenate([a[-n:], np.zeros(-n, np.float32)])
    return dataclasses.replace(data, audio=b)


def remux_with_delay(src: Path, dst: Path, ms: float) -> Path:
    """Copy ``src`` without re-encoding, the audio stream's timestamps moved ``ms`` later (earlier if negative:
    then the video's are moved later instead, so no timestamp is negative)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vi, ai = inp.streams.video[0], inp.streams.audio[0]
        vo, ao = out.add_stream_from_template(vi), out.add_stream_from_template(ai)
        for packet in inp.demux(vi, ai):
            if packet.dts is None:
                continue
            delay = ms if packet.stream is ai else 0.0
            if ms < 0:
                delay = 0.0 if packet.stream is ai else -ms
            shift = int(round(delay / 1000 / packet.time_base))
            packet.pts += shift
            packet.dts += shift
            packet.stream = ao if packet.stream is ai else vo
            out.mux(packet)
    return dst


@pytest.mark.parametrize("locator", ["face", "frame"])
def test_synthetic_head_in_sync(head, locator):
    r = estimate_av_offset(head, SyncSettings(locator=locator))
    assert r.ok, r.error
    # the mouth still and the head barely swaying, a few frames show no visible change and are dropped as repeats
    assert r.locator == locator and 0 <= r.repeated_frames < 0.15 * 150
    assert abs(r.offset_ms) <= 20
    assert r.confidence >= 6
    assert r.range_ms == (-1000.0, 1000.0) and r.fps == pytest.approx(25, abs=0.01)
    assert len(r.curve) == len(r.curve_offsets_ms) == 401
    assert r.curve_offsets_ms[int(np.argmax(r.curve))] == pytest.approx(r.offset_ms, abs=5)
    assert len(r.agreement_per_second) == 6 and min(r.agreement_per_second) > 0.5


@pytest.mark.parametrize("ms", [-640, 120, 760])
def test_delays_in_the_samples_sign_and_size(head_data, ms):
    r = estimate_offset_arrays(shift_samples(head_data, ms))
    assert r.ok, r.error
    assert r.offset_ms == pytest.approx(ms, abs=25)  # > 0: the sound comes later than the lips


@pytest.mark.parametrize("ms", [300, -450])
def test_delays_on_the_container_clock(head, tmp_path, ms):
    p = remux_with_delay(head, tmp_path / f"delay{ms}.mp4", ms)

    def start_gap(path):  # first sound - first picture, s, on the container clock
        d = decode_av(path)
        return d.audio_start - d.frame_times[0]

    # the samples are untouched, only the timestamps differ (within AAC's 64 ms of priming samples, which the copy's
    # muxer no longer marks as skipped)
    assert start_gap(p) - start_gap(head) == pytest.approx(ms / 1000, abs=0.065)
    r = estimate_av_offset(p)
    assert r.ok, r.error
    assert r.offset_ms == pytest.approx(ms, abs=25)


@pytest.mark.parametrize("fps", [24, 30, 60])
def test_frame_rates_from_24_to_60(tmp_path, fps):
    """The synthetic head at 24, 30 and 60 fps, sound 240 ms late in the samples: found within 25 ms."""
    p = make_talking_head(tmp_path / f"head{fps}.mp4", seed=7, duration=5.0, size=128, fps=fps).path
    d = decode_av(p)
    assert d.fps == pytest.approx(fps, rel=1e-3)
    r = estimate_offset_arrays(shift_samples(d, 240))
    assert r.ok and r.offset_ms == pytest.approx(240, abs=25), (r.offset_ms, r.error)


def test_variable_frame_rate(head_data):
    """A fifth of the frames removed at random (irregular timestamps, as in a variable-frame-rate file): the
    offset (sound 200 ms late) is still found within 25 ms, because every signal is sampled on the frames' own times."""
    rng = np.random.default_rng(3)
    keep = np.sort(rng.choice(len(head_data.frames), size=int(0.8 * len(head_data.frames)), replace=False))
    keep[0] = 0
    vfr = dataclasses.replace(head_data, frame_times=head_data.frame_times[keep], frames=head_data.frames[keep], motion=None)
    assert len(np.unique(np.round(np.diff(vfr.frame_times), 3))) >= 3
    r = estimate_offset_arrays(shift_samples(vfr, 200))
    assert r.ok and r.offset_ms == pytest.approx(200, abs=25), (r.offset_ms, r.error)


@pytest.mark.parametrize("kind", ["noise", "music"])
def test_noise_or_music_beside_the_speech(head_data, kind):
    """Speech with white noise at 0 dB SNR, or with a chord of steady tones as loud as the speech: the offset
    (sound 320 ms early) is still found within 25 ms."""
    a = head_data.audio
    rms = float(np.sqrt(np.mean(a**2)))
    rng = np.random.default_rng(0)
    if kind == "noise":
        extra = rng.standard_normal(len(a)).astype(np.float32) * rms
    else:
        t = np.arange(len(a)) / head_data.audio_rate
        extra = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0, 523.3)).astype(np.float32)
        extra *= rms / float(np.sqrt(np.mean(extra**2)))
    mixed = dataclasses.replace(head_data, audio=(a + extra).astype(np.float32))
    r = estimate_offset_arrays(shift_samples(mixed, -320))
    assert r.ok and r.offset_ms == pytest.approx(-320, abs=25), (r.offset_ms, r.error)


# -- real talking heads with injected offsets -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vid_ai_dreamtalk_male_256.mp4", "vid_real_woman_blue_700.mp4"])
def test_real_talking_heads_with_injected_offsets(real_file, name):
    """Two real files on which the estimate is reliable (benchmarks/bench_sync.py reports all of them, failures
    included): the estimate follows the injected offset within 80 ms, both signs. woman_blue is a 24 fps recording
    stored at 30 fps: without dropping its repeated frames the estimate was refused or wrong at every offset."""
    data = decode_av(real_file(name), max_seconds=10)
    base = estimate_offset_arrays(data)
    assert base.ok and abs(base.offset_ms) <= 40, base
    if name == "vid_real_woman_blue_700.mp4":
        assert 45 <= base.repeated_frames <= 55  # every 4th-5th of its 199 frames
    for ms in (-600, 360):
        r = estimate_offset_arrays(shift_samples(data, ms))
        assert r.ok and r.offset_ms - base.offset_ms == pytest.approx(ms, abs=80), (ms, r.offset_ms)


@pytest.mark.parametrize("name", ["vid_real_musicaudio_man_512.mp4", "vid_real_landscape_smallface_1280x720.mp4"])
def test_real_files_with_music_instead_of_speech_give_no_reliable_offset(real_file, name):
    """A face on screen but music in the sound: no offset, or one marked unreliable (both files: the windowed and
    whole-file analyses disagree, and one peak is weak) - never a reliable offset."""
    r = estimate_av_offset(real_file(name))
    assert r.mouth_region is not None  # a face was found: the doubt comes from the sound
    if r.ok:
        assert r.reliable is False and "ambiguous" in r.note and "treat the offset as a guess" in r.note, r
    else:
        assert r.offset_ms is None and r.error_type == "SyncError" and "edge of the searched range" in r.error, r


def test_short_clips_are_searched_only_as_far_as_overlap_allows(head_data):
    """Offsets are searched only as far as leaves 1.5 s of picture and sound overlapping: a 2.52 s cut of the
    synthetic head is searched +-1000 ms, a 2.0 s cut +-500 ms, and the range says so."""
    def cut(seconds):
        n = int(round(seconds * 25))
        return dataclasses.replace(head_data, frame_times=head_data.frame_times[:n], frames=head_data.frames[:n], motion=None)

    assert estimate_offset_arrays(cut(2.52)).range_ms == (-1000.0, 1000.0)
    r = estimate_offset_arrays(cut(2.0))
    assert r.range_ms == (-500.0, 500.0) and len(r.curve) == 201 and r.ok and abs(r.offset_ms) <= 25, r.error
    assert estimate_offset_arrays(cut(2.0), SyncSettings(min_overlap_s=0)).range_ms == (-1000.0, 1000.0)


# -- files that cannot be analysed ------------------------------------------------------------------------------------
def _speech(seconds: float) -> np.ndarray:
    return synthesize_speech(seed=3, duration=seconds)


@pytest.mark.parametrize(
    "kind, words",
    [
        ("no_audio", "has no audio stream"),
        ("silent", "the audio is silent"),
        ("short", "too short"),
        ("still_picture", "does not move"),
    ],
)
def test_files_that_cannot_be_analysed_give_error_results(tmp_path, kind, words):
    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 3), 120, np.uint8)
    p = tmp_path / f"{kind}.mp4"
    if kind == "no_audio":
        write_video(p, seconds=3, frame_fn=lambda i, t: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    elif kind == "silent":
        write_video(p, seconds=3, audio=np.zeros(48000, np.float32))
    elif kind == "short":
        write_video(p, seconds=1, audio=_speech(1.0))
    else:
        write_video(p, seconds=4, frame_fn=lambda i, t: flat, audio=_speech(4.0))
    r = estimate_av_offset(p)
    assert not r.ok and r.offset_ms is None
    assert words in r.error and str(p) in r.error, r.error
    assert r.error_type == "SyncError"


@pytest.mark.parametrize("seed", [0, 1])
def test_picture_without_a_face_is_an_error(tmp_path, seed):
    """Moving noise beside speech: the face detector finds no face, so no offset is reported. Without the
    detector (locator "frame") the best blocks of noise agree with any sound by chance: that estimate refuses it
    (no peak) or marks it unreliable (a weak or ambiguous peak), or at least never reports a clear peak
    (confidence >= 6, which the synthetic head reaches)."""
    rng = np.random.default_rng(seed)
    p = tmp_path / "noise.mp4"
    write_video(p, seconds=5, frame_fn=lambda i, t: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), audio=_speech(5.0))
    r = estimate_av_offset(p)
    assert not r.ok and r.offset_ms is None and r.error_type == "SyncError"
    assert f"{p}: no face found" in r.error and r.mouth_region is None, r.error
    r = estimate_av_offset(p, SyncSettings(locator="frame"))
    if r.ok:
        assert r.reliable is False or r.confidence < 6, r
    else:
        assert str(p) in r.error and r.error_type == "SyncError"
        assert "no offset makes the picture's motion follow the speech" in r.error or "edge of the searched range" in r.error


# -- repeated frames and the mouth region -------------------------------------------------------------------------------
def test_drop_repeated_frames_keeps_each_picture_at_its_first_time():
    """A 24 fps source stored at 30 fps (every 5th frame repeats the one before, with compression noise): the
    repeats go, the kept frames keep their own times; a threshold of 0 keeps all."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (30, 24, 32), dtype=np.uint8)
    for i in range(4, 30, 5):
        frames[i] = np.clip(frames[i - 1].astype(int) + rng.integers(-1, 2, (24, 32)) * (rng.random((24, 32)) < 0.1), 0, 255)
    times = np.arange(30) / 30.0
    t, f, n = drop_repeated_frames(times, frames, threshold=0.2)
    kept = [i for i in range(30) if i % 5 != 4]
    assert n == 6 and np.array_equal(t, times[kept]) and np.array_equal(f, frames[kept])
    t, f, n = drop_repeated_frames(times, frames, threshold=0.0)
    assert n == 0 and f is frames


def test_held_frames_are_dropped_and_the_offset_stays(head_data):
    """Every other frame of the synthetic head held (a 12.5 fps render stored at 25 fps): half the frames are
    dropped as repeats and the offset is found, in sync and with the sound 200 ms late."""
    fr = head_data.frames.copy()
    fr[1::2] = fr[0:-1:2][: len(fr[1::2])]
    held = dataclasses.replace(head_data, frames=fr, motion=None)
    for ms in (0, 200):
        r = estimate_offset_arrays(shift_samples(held, ms) if ms else held)
        assert r.ok, r.error
        assert len(fr) // 2 <= r.repeated_frames < 0.6 * len(fr) and r.offset_ms == pytest.approx(ms, abs=40), (ms, r.offset_ms)


def test_face_locator_region_holds_the_synthetic_mouth(head):
    """The region analysed (in the file's pixels) contains the synthetic head's mouth box and is much smaller than
    the picture."""
    r = estimate_av_offset(head)
    x0, y0, x1, y1 = r.mouth_region
    mx0, my0, mx1, my1 = _mouth_box(_face_for_seed(5, 160))
    assert x0 <= mx0 and y0 <= my0 and x1 >= mx1 and y1 >= my1, (r.mouth_region, (mx0, my0, mx1, my1))
    assert (x1 - x0) * (y1 - y0) < 0.5 * 160 * 160


def test_side_by_side_the_face_that_speaks_gives_the_offset(head_data, tmp_path):
    """Two synthetic heads side by side (a generator comparison), the sound being the right one's: both faces are
    found and analysed, and the right one's mouth gives the offset, in sync and with the sound 300 ms late."""
    other = decode_av(make_talking_head(tmp_path / "other.mp4", seed=11, duration=6.0, size=160).path)
    n = min(len(other.frames), len(head_data.frames))
    pair = dataclasses.replace(
        head_data,
        frame_times=head_data.frame_times[:n],
        frames=np.concatenate([other.frames[:n], head_data.frames[:n]], axis=2),
        source_width=320,
        motion=None,
    )
    for ms in (0, 300):
        r = estimate_offset_arrays(shift_samples(pair, ms) if ms else pair)
        assert r.ok and r.offset_ms == pytest.approx(ms, abs=25), (ms, r.offset_ms, r.error)
        assert r.faces == 2 and r.mouth_region[0] >= 160, r.mouth_region  # the right half's face


def test_mouth_region_geometry():
    """From the median box: its width, 45-120 % of its height, widened by the boxes' spread, clipped to the picture."""
    boxes = np.array([[100, 100, 200, 200]] * 5, float)
    assert mouth_region(boxes, (400, 400)) == (100, 145, 200, 220)
    moving = np.array([[100 + 10 * i, 100, 200 + 10 * i, 200] for i in range(11)], float)  # centres 150..250
    x0, y0, x1, y1 = mouth_region(moving, (400, 400))
    assert (x0, x1) == (round(200 - 50 - 40), round(200 + 50 + 40)) and (y0, y1) == (145, 220)
    assert mouth_region(np.array([[300, 300, 400, 400]], float), (380, 390)) == (300, 345, 390, 380)


def test_face_locator_without_dlib_raises_dependency_error(head_data, monkeypatch):
    import sys

    from thqa.analysis import sync_signals
    sync_signals._face_detector.cache_clear()  # the detector is built once per process
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    with pytest.raises(DependencyError, match="pip install dlib-bin"):
        estimate_offset_arrays(dataclasses.replace(head_data, motion=None))
    assert estimate_offset_arrays(head_data, SyncSettings(locator="frame")).ok  # the whole picture needs no dlib
    monkeypatch.undo()
    sync_signals._face_detector.cache_clear()


def test_analysis_windows_cover_the_material():
    w = analysis_windows(100, 25.0, 1.0, 0.4)  # 25-row windows every 10 rows, the last one ending at 100
    assert w[:3] == [(0, 25), (10, 35), (20, 45)] and w[-1] == (75, 100)
    assert all(b - a == 25 for a, b in w) and len(set(w)) == len(w)
    assert analysis_windows(100, 25.0, None, 1.0) == [(0, 100)]
    assert analysis_windows(100, 25.0, 5.0, 1.0) == [(0, 100)]  # a window longer than the material: one


def test_windows_follow_a_mouth_that_moves_across_the_picture(head_data):
    """The head jumps 60 px sideways and 30 px down after 3 s: each window finds the mouth where it is."""
    fr = head_data.frames.copy()
    half = len(fr) // 2
    fr[half:] = np.roll(np.roll(fr[half:], 60, axis=2), 30, axis=1)
    moved = dataclasses.replace(head_data, frames=fr, motion=None)
    for ms in (0, -320):
        r = estimate_offset_arrays(shift_samples(moved, ms) if ms else moved)
        assert r.ok and r.offset_ms == pytest.approx(ms, abs=25), (ms, r.offset_ms, r.error)


def test_windowed_and_whole_file_estimates_must_agree_to_be_reliable(head_data):
    """The two analyses agree on the synthetic head (a few ms apart): reliable. A tolerance of 0 ms marks the same
    offset unreliable (ambiguous) and None switches the check off."""
    r = estimate_offset_arrays(head_data)
    assert r.ok and r.reliable is True and r.note is None
    r0 = estimate_offset_arrays(head_data, SyncSettings(max_disagreement_ms=0.0))
    assert r0.ok and r0.offset_ms == r.offset_ms and r0.reliable is False and r0.note.startswith("ambiguous: the analysis in 4 s windows")
    assert estimate_offset_arrays(head_data, SyncSettings(max_disagreement_ms=None)).reliable is True


def test_confidence_thresholds(head_data):
    """Below weak_confidence the offset is reported but unreliable; below min_confidence it is an error."""
    conf = estimate_offset_arrays(head_data).confidence
    weak = estimate_offset_arrays(head_data, SyncSettings(weak_confidence=conf + 1))
    assert weak.ok and weak.reliable is False and weak.note.startswith(f"weak peak (confidence {conf:.1f} <")
    none = estimate_offset_arrays(head_data, SyncSettings(min_confidence=conf + 1, weak_confidence=conf + 1))
    assert not none.ok and "no offset makes the picture's motion follow the speech" in none.error and none.curve
    from thqa.errors import ConfigError

    with pytest.raises(ConfigError, match="weak_confidence"):
        SyncSettings(min_confidence=3, weak_confidence=2).validate()


def test_missing_file_raises_typed_error(tmp_path):
    with pytest.raises(MediaFileNotFoundError):
        estimate_av_offset(tmp_path / "missing.mp4")


def test_settings_are_checked():
    from thqa.errors import ConfigError

    with pytest.raises(ConfigError):
        SyncSettings(max_offset_ms=0).validate()
    with pytest.raises(ConfigError):
        SyncSettings(window_s=0.5).validate()
    with pytest.raises(ConfigError):
        SyncSettings(window_hop_s=0).validate()
    with pytest.raises(ConfigError):
        SyncSettings(max_disagreement_ms=-1).validate()
    with pytest.raises(ConfigError, match="locator"):
        SyncSettings(locator="mouth").validate()
    with pytest.raises(ConfigError, match="mouth_size"):
        SyncSettings(mouth_size=(24, 72)).validate()
    with pytest.raises(ConfigError):
        SyncSettings(repeat_threshold=-1).validate()


# -- thqa sync ---------------------------------------------------------------------------------------------------------
def test_cli_sync_json_goes_on_past_bad_files(head, tmp_path, capsys):
    no_audio = write_video(tmp_path / "no_audio.mp4", seconds=2)
    missing = tmp_path / "missing.mp4"
    rc = cli.main(["sync", "--json", str(head), str(no_audio), str(missing)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert [o["path"] for o in out] == [str(head), str(no_audio), str(missing)]
    assert abs(out[0]["offset_ms"]) <= 20 and out[0]["error"] is None and len(out[0]["curve"]) == 401
    assert out[0]["locator"] == "face" and len(out[0]["mouth_region"]) == 4 and out[0]["repeated_frames"] < 0.15 * 150
    assert out[0]["in_sync"] is True
    # a window narrower than the measured offset: the same offset, out of sync (--sync-window LEAD,LAG)
    off = out[0]["offset_ms"]
    rc = cli.main(["sync", "--json", "--sync-window", f"{max(0.0, -off - 1)},{max(0.0, off - 1)}", str(head)])
    again = json.loads(capsys.readouterr().out)[0]
    assert rc == 0 and again["offset_ms"] == off and again["in_sync"] is (off == 0)
    assert out[1]["offset_ms"] is None and out[1]["in_sync"] is None and "no audio stream" in out[1]["error"]
    assert out[2]["error_type"] == "MediaFileNotFoundError"


def test_cli_sync_csv_file(head, tmp_path, capsys):
    out = tmp_path / "sync.csv"
    rc = cli.main(["sync", str(head), "-o", str(out), "--max-offset", "500"])
    assert rc == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "path,offset_ms,in_sync,confidence,reliable,range_ms,seconds_used,fps,repeated_frames,mouth_region,note,error"
    assert rows[1].startswith(f"{head},") and ",-500 500," in rows[1]
    assert rows[1].split(",")[2] == "true" and rows[1].split(",")[4] == "True"  # in sync (within 45 ms ahead / 125 behind), reliable
    x0, y0, x1, y1 = map(int, rows[1].split(",")[9].split())  # the region analysed, in the file's pixels
    assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 160
    rc = cli.main(["sync", str(head), "-o", str(out), "--locator", "frame"])
    assert rc == 0 and out.read_text().splitlines()[1].endswith(",,,")  # no region without the face locator, no note, no error


def test_cli_sync_plot(head, tmp_path, capsys):
    """--plot writes one PNG per file with an agreement curve and says which files have none."""
    no_audio = write_video(tmp_path / "no_audio.mp4", seconds=2)
    plots = tmp_path / "plots"
    rc = cli.main(["sync", str(head), str(no_audio), "--plot", str(plots), "-o", str(tmp_path / "s.json")])
    assert rc == 1  # the file without audio failed
    assert sorted(p.name for p in plots.iterdir()) == ["head.sync.png"]
    png = (plots / "head.sync.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert f"no plot for {no_audio}" in capsys.readouterr().err


def test_sync_plot_of_a_refused_estimate_and_of_no_curve(head_data, tmp_path):
    """A refused estimate that has a curve is drawn (with why no offset is reported); one without a curve is a
    ConfigError naming the file."""
    from thqa.errors import ConfigError
    from thqa.analysis.plots import sync_plot

    refused = estimate_offset_arrays(head_data, SyncSettings(min_confidence=100.0, weak_confidence=100.0))
    assert not refused.ok and refused.curve
    unreliable = estimate_offset_arrays(head_data, SyncSettings(max_disagreement_ms=0.0))
    assert unreliable.reliable is False and sync_plot(unreliable, tmp_path / "unreliable.png").stat().st_size > 20_000
    assert sync_plot(refused, tmp_path / "refused.png").stat().st_size > 20_000
    empty = dataclasses.replace(refused, curve=[], curve_offsets_ms=[])
    with pytest.raises(ConfigError, match="no agreement curve"):
        sync_plot(empty, tmp_path / "empty.png")
