"""Tests of thqa.synthetic.heads: a drawn talking head whose mouth follows a synthesised voice.

Everything is measured on the written file (decoded with PyAV), not taken from the returned info.
"""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from thqa.errors import ConfigError, THQAError
from thqa.synthetic.heads import TalkingHeadInfo, make_talking_head, synthesize_speech

DURATION = 3.0
SIZE = 160
FPS = 25
SR = 16000


def _decode(path: Path) -> tuple[list[tuple[float, np.ndarray]], np.ndarray, float]:
    """Video frames as (time in s, RGB array), the mono audio, and the audio start time in s."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = [(float(f.pts * vs.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(vs)]
    with av.open(str(path)) as c:
        chunks, start = [], None
        for f in c.decode(audio=0):
            if start is None:
                start = float(f.pts * f.time_base)
            chunks.append(f.to_ndarray().astype(np.float64))
    audio = np.concatenate(chunks, axis=1).mean(axis=0)
    return frames, audio, float(start or 0.0)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _pitch_hz(x: np.ndarray, sr: int) -> float:
    """Median autocorrelation pitch over the loud 40 ms windows."""
    win = int(0.04 * sr)
    hop = win // 2
    lo, hi = int(sr / 400), int(sr / 60)
    frames = [x[i : i + win] for i in range(0, len(x) - win, hop)]
    rms = np.array([np.sqrt(np.mean(f**2)) for f in frames])
    loud = rms > 0.4 * rms.max()
    pitches = []
    for f, ok in zip(frames, loud):
        if not ok:
            continue
        f = f - f.mean()
        ac = np.correlate(f, f, mode="full")[win - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            pitches.append(sr / lag)
    return float(np.median(pitches))


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> TalkingHeadInfo:
    path = tmp_path_factory.mktemp("synth") / "head.mp4"
    return make_talking_head(path, seed=1, duration=DURATION, size=SIZE, fps=FPS, sample_rate=SR)


def test_file_has_h264_and_aac_with_requested_duration(head: TalkingHeadInfo) -> None:
    assert head.path.is_file()
    with av.open(str(head.path)) as c:
        assert c.format.name.startswith("mov,mp4")
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert (v.codec_context.width, v.codec_context.height) == (SIZE, SIZE)
        assert a.codec_context.name == "aac" and a.codec_context.sample_rate == SR
        assert a.codec_context.layout.nb_channels == 1
        frame = 1.0 / FPS
        assert abs(float(v.duration * v.time_base) - DURATION) <= frame
        assert abs(float(a.duration * a.time_base) - DURATION) <= frame
    frames, audio, _ = _decode(head.path)
    assert len(frames) == head.n_frames == round(DURATION * FPS)
    assert abs(len(frames) / FPS - DURATION) <= 1.0 / FPS
    # the decoder keeps AAC's padding of the last block (< 1024 samples), nothing else
    assert head.n_samples <= len(audio) < head.n_samples + 1024
    assert np.array_equal(head.mouth_opening.shape, (head.n_frames,))
    assert head.audio_envelope.shape == (head.n_frames,)


def test_mouth_opening_in_pixels_follows_audio_envelope(head: TalkingHeadInfo) -> None:
    frames, audio, a_start = _decode(head.path)
    x0, y0, x1, y1 = head.mouth_box
    interior_luma = _luma(np.array(head.mouth_interior_rgb, dtype=np.float64))
    dark = []
    rms = []
    for t, rgb in frames:
        region = _luma(rgb[y0:y1, x0:x1].astype(np.float64))
        dark.append(np.count_nonzero(region < interior_luma + 30))
        lo = int(round((t - a_start) * SR))
        hi = int(round((t + 1.0 / FPS - a_start) * SR))
        seg = audio[max(lo, 0) : max(hi, 0)]
        rms.append(np.sqrt(np.mean(seg**2)) if seg.size else 0.0)
    dark_a, rms_a = np.array(dark, float), np.array(rms)
    assert dark_a.max() > 50, "the mouth interior never shows"
    assert np.count_nonzero(dark_a == 0) >= 3, "the mouth never closes"
    r = np.corrcoef(dark_a, rms_a)[0, 1]
    assert r > 0.6, f"pixel mouth opening vs audio RMS: Pearson r = {r:.3f}"
    # the drawn opening is what the info reports
    assert np.corrcoef(dark_a, head.mouth_opening)[0, 1] > 0.9
    # and a shift by 5 frames destroys most of the correlation: it is the same clock, not a trend
    r_shift = np.corrcoef(dark_a[5:], rms_a[:-5])[0, 1]
    assert r_shift < r - 0.2


def test_blinks_happen(head: TalkingHeadInfo) -> None:
    assert head.eye_openness.shape == (head.n_frames,)
    assert head.eye_openness.min() < 0.2 and np.median(head.eye_openness) == 1.0


def test_seeds_give_different_faces_and_voices(tmp_path: Path, head: TalkingHeadInfo) -> None:
    other = make_talking_head(tmp_path / "other.mp4", seed=3, duration=1.0, size=SIZE, fps=FPS, sample_rate=SR)
    f_a, _, _ = _decode(head.path)
    f_b, audio_b, _ = _decode(other.path)
    diff = np.abs(f_a[0][1].astype(float) - f_b[0][1].astype(float)).mean()
    assert diff > 15, f"faces of seeds 1 and 3 differ by only {diff:.1f} grey levels"
    p1 = _pitch_hz(synthesize_speech(seed=1, duration=2.0, sample_rate=SR).astype(float), SR)
    p3 = _pitch_hz(synthesize_speech(seed=3, duration=2.0, sample_rate=SR).astype(float), SR)
    assert abs(p1 / p3 - 1.0) > 0.15, (p1, p3)
    # measured pitch matches the voice the info reports, within a semitone or two
    assert abs(p1 / head.f0_hz - 1.0) < 0.12, (p1, head.f0_hz)
    assert abs(p3 / other.f0_hz - 1.0) < 0.12, (p3, other.f0_hz)
    # and the decoded file carries that voice too
    assert abs(_pitch_hz(audio_b, SR) / p3 - 1.0) < 0.1


def test_speech_is_deterministic_and_speech_like() -> None:
    a = synthesize_speech(seed=7, duration=2.0, sample_rate=SR)
    b = synthesize_speech(seed=7, duration=2.0, sample_rate=SR)
    c = synthesize_speech(seed=8, duration=2.0, sample_rate=SR)
    assert a.dtype == np.float32 and a.shape == (2 * SR,)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a).max() <= 1.0
    # syllables and pauses: the 10 ms energy has loud parts and near-silent gaps
    e = np.sqrt(np.mean(a[: len(a) // 160 * 160].reshape(-1, 160).astype(float) ** 2, axis=1))
    assert np.count_nonzero(e < 0.02 * e.max()) >= 10 and np.count_nonzero(e > 0.3 * e.max()) >= 20
    # other sample rates work
    assert synthesize_speech(seed=1, duration=0.5, sample_rate=44100).shape == (22050,)


def test_bad_arguments_raise_config_error(tmp_path: Path) -> None:
    p = tmp_path / "x.mp4"
    for kwargs in (
        {"size": 161},
        {"size": 16},
        {"seed": -1},
        {"duration": 0},
        {"duration": float("nan")},
        {"fps": 0},
        {"sample_rate": 12345},
    ):
        with pytest.raises(ConfigError):
            make_talking_head(p, **kwargs)
    with pytest.raises(ConfigError):
        make_talking_head(tmp_path / "missing_dir" / "x.mp4", duration=0.5)
    with pytest.raises(ConfigError):
        synthesize_speech(seed=0, duration=-1.0, sample_rate=SR)
    assert not p.exists()
    assert issubclass(ConfigError, THQAError)


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    p = tmp_path / "x.mp4"
    p.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="exists"):
        make_talking_head(p, duration=0.4, size=64)
    assert p.read_bytes() == b"keep me"
    info = make_talking_head(p, duration=0.4, size=64, overwrite=True)
    assert info.path == p and p.stat().st_size > 1000
    # no temporary files are left beside it
    assert sorted(os.listdir(tmp_path)) == ["x.mp4"]


def test_overwrite_replaces_a_links_target_and_writes_through_a_fifo(tmp_path: Path) -> None:
    """An output never takes the place of a link or a FIFO (thqa.utils.atomic's rule): the link stays and its target
    gets the file; a FIFO stays a FIFO and its reader gets the bytes. Without overwrite both are refused untouched."""
    import stat
    import threading

    target = tmp_path / "target.mp4"
    target.write_bytes(b"old")
    link = tmp_path / "link.mp4"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="exists"):
        make_talking_head(link, duration=0.4, size=64)
    assert link.is_symlink() and target.read_bytes() == b"old"
    make_talking_head(link, duration=0.4, size=64, overwrite=True)
    plain = make_talking_head(tmp_path / "plain.mp4", duration=0.4, size=64)
    assert link.is_symlink() and target.read_bytes() == plain.path.read_bytes()

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)  # never blocks the run
    reader.start()
    make_talking_head(fifo, duration=0.4, size=64, overwrite=True)
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and got == [plain.path.read_bytes()]
    assert sorted(os.listdir(tmp_path)) == ["link.mp4", "pipe.mp4", "plain.mp4", "target.mp4"]
