"""Tests of thqa.synthetic.degrade, measured on the written files (decoded with PyAV).

The source is made here with PyAV: 3 s of 160x160 video at 25 fps with moving texture and a moving
square, and 16 kHz mono audio with tone bursts at irregular times over faint noise.
"""
from __future__ import annotations

import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from scipy import signal

from thqa.synthetic.degrade import KINDS, LEVELS, UNTOUCHED_MOS, DegradationInfo, degrade, level_parameter, pseudo_mos
from thqa.errors import ConfigError, DecodeError, MediaError, MediaFileNotFoundError, NoVideoStreamError, THQAError

FPS = 25
SR = 16000
SIZE = 160
DURATION = 3.0
N_FRAMES = int(DURATION * FPS)
FRAME_S = 1.0 / FPS


def _write_source(path: Path, *, with_audio: bool = True, with_video: bool = True, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (2 * SIZE, 2 * SIZE, 3)).astype(np.float32), (0, 0), 3)
    texture = cv2.normalize(texture, None, 30, 220, cv2.NORM_MINMAX).astype(np.uint8)
    n = int(DURATION * SR)
    audio = (0.003 * rng.standard_normal(n)).astype(np.float32)
    for k, (t0, freq) in enumerate([(0.23, 440), (0.61, 700), (0.93, 330), (1.41, 900), (1.77, 520), (2.29, 610), (2.62, 380)]):
        i0 = int(t0 * SR)
        m = int((0.05 + 0.02 * k) * SR)
        burst = 0.5 * np.sin(2 * np.pi * freq * np.arange(m) / SR) * np.hanning(m)
        audio[i0 : i0 + m] += burst.astype(np.float32)
    with av.open(str(path), "w", format="mp4") as c:
        vs = None
        if with_video:
            vs = c.add_stream("libx264", rate=FPS)
            vs.width = vs.height = SIZE
            vs.pix_fmt = "yuv420p"
            vs.codec_context.options = {"crf": "10", "preset": "ultrafast"}
        a_s = c.add_stream("aac", rate=SR) if with_audio else None
        if a_s is not None:
            a_s.layout = "mono"
        if vs is not None:
            for i in range(N_FRAMES):
                img = texture[i : i + SIZE, (2 * i) % SIZE : (2 * i) % SIZE + SIZE].copy()
                x = 10 + 3 * i
                cv2.rectangle(img, (x % (SIZE - 30), 60), (x % (SIZE - 30) + 25, 95), (250, 250, 250), -1)
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts = i
                for p in vs.encode(f):
                    c.mux(p)
            for p in vs.encode(None):
                c.mux(p)
        if a_s is not None:
            f = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="fltp", layout="mono")
            f.sample_rate = SR
            f.pts = 0
            for p in a_s.encode(f):
                c.mux(p)
            for p in a_s.encode(None):
                c.mux(p)


def _frames(path: Path) -> tuple[list[int], list[np.ndarray]]:
    """Decoded video frames: pts and the raw yuv420p planes (as PyAV gives them)."""
    with av.open(str(path)) as c:
        pts, arrs = [], []
        for f in c.decode(video=0):
            pts.append(f.pts)
            arrs.append(f.to_ndarray())
    return pts, arrs


def _luma(frames: list[np.ndarray]) -> np.ndarray:
    return np.stack([f[:SIZE].astype(np.float64) for f in frames])


def _audio(path: Path) -> np.ndarray | None:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _advance_s(degraded: np.ndarray, source: np.ndarray) -> float:
    """How much earlier (s) the sounds of ``degraded`` come than in ``source`` (cross-correlation peak)."""
    x, y = source[0].astype(np.float64), degraded[0].astype(np.float64)
    corr = signal.correlate(x, y, mode="full", method="fft")
    lag = int(np.argmax(corr)) - (len(y) - 1)  # x[n + lag] ~ y[n]
    return lag / SR


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("degrade_src")
    out = {"src": d / "src.mp4", "noaudio": d / "noaudio.mp4", "audioonly": d / "audioonly.m4a"}
    _write_source(out["src"])
    _write_source(out["noaudio"], with_audio=False)
    _write_source(out["audioonly"], with_video=False)
    return out


@pytest.fixture(scope="module")
def decoded_src(sources: dict[str, Path]) -> dict[str, object]:
    pts, frames = _frames(sources["src"])
    return {"pts": pts, "frames": frames, "luma": _luma(frames), "audio": _audio(sources["src"])}


# -------------------------------------------------------------------------------------------- offsets


@pytest.mark.parametrize("kind,level", [("audio_lead", 1), ("audio_lead", 4), ("video_lead", 2), ("video_lead", 5)])
def test_av_offset_is_the_requested_one(tmp_path: Path, sources, decoded_src, kind: str, level: int) -> None:
    info = degrade(sources["src"], tmp_path / "out.mp4", kind=kind, level=level)
    expected_s = level_parameter(kind, level) / 1000.0
    assert info.parameter == pytest.approx(level_parameter(kind, level))
    audio = _audio(info.dst)
    src_audio = decoded_src["audio"]
    assert audio.shape == src_audio.shape  # duration kept
    advance = _advance_s(audio, src_audio)
    sign = 1.0 if kind == "audio_lead" else -1.0
    assert abs(advance - sign * expected_s) <= FRAME_S, (kind, level, advance)
    # the picture is untouched: same frames, same timestamps -> the A/V offset is the audio's shift
    pts, frames = _frames(info.dst)
    assert pts == decoded_src["pts"]
    assert all(np.array_equal(a, b) for a, b in zip(frames, decoded_src["frames"]))
    assert not info.video_reencoded and info.audio_reencoded


# -------------------------------------------------------------------------------------------- video


def test_quantiser_levels_lower_psnr_monotonically(tmp_path: Path, sources, decoded_src) -> None:
    psnrs, sizes = [], []
    for level in LEVELS:
        info = degrade(sources["src"], tmp_path / f"qp{level}.mp4", kind="compression", level=level)
        pts, frames = _frames(info.dst)
        assert pts == decoded_src["pts"]
        psnrs.append(_psnr(_luma(frames), decoded_src["luma"]))
        sizes.append(info.dst.stat().st_size)
        # the audio packets are copied: decoded samples are bit-identical
        assert np.array_equal(_audio(info.dst), decoded_src["audio"])
    assert all(a > b + 0.5 for a, b in zip(psnrs, psnrs[1:])), psnrs
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes
    assert psnrs[0] > 30 and psnrs[-1] < 30, psnrs


def test_bitrate_levels_lower_psnr(tmp_path: Path, sources, decoded_src) -> None:
    psnr = {}
    for level in (1, 3, 5):
        info = degrade(sources["src"], tmp_path / f"br{level}.mp4", kind="bitrate", level=level)
        psnr[level] = _psnr(_luma(_frames(info.dst)[1]), decoded_src["luma"])
        assert np.array_equal(_audio(info.dst), decoded_src["audio"])
    assert psnr[1] > psnr[3] > psnr[5], psnr


@pytest.mark.parametrize("kind,level", [("pause_start", 2), ("pause_middle", 3)])
def test_pause_freezes_the_requested_span(tmp_path: Path, sources, decoded_src, kind: str, level: int) -> None:
    info = degrade(sources["src"], tmp_path / "out.mp4", kind=kind, level=level)
    span = level_parameter(kind, level)
    assert info.parameter == pytest.approx(span)
    n_span = int(round(span * FPS))
    first = 0 if kind == "pause_start" else int(round((DURATION - span) / 2 * FPS))
    pts, frames = _frames(info.dst)
    assert pts == decoded_src["pts"]
    luma, src = _luma(frames), decoded_src["luma"]
    step = np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2))  # step[i]: frame i -> i + 1
    normal = np.abs(np.diff(src, axis=0)).mean(axis=(1, 2))
    frozen = step[first : first + n_span - 1]
    assert frozen.size == n_span - 1
    assert frozen.max() < 0.05 * normal.min(), (frozen.max(), normal.min())
    # the frozen frame is the first of the span, and the video goes on in sync after it
    assert _psnr(luma[first], src[first]) > 35
    assert _psnr(luma[first + n_span - 1], src[first + n_span - 1]) < 30
    after = first + n_span
    assert step[after - 1] > 0.5 * normal.min()  # the video moves again
    assert _psnr(luma[after], src[after]) > 35
    assert all(_psnr(luma[i], src[i]) > 35 for i in range(len(luma)) if not first < i < after)
    # audio untouched
    assert np.array_equal(_audio(info.dst), decoded_src["audio"])


@pytest.mark.parametrize("kind", [k for k, spec in KINDS.items() if spec.stream == "video" and k != "compression"])
def test_video_kinds_change_pictures_keep_audio_and_timing(tmp_path: Path, sources, decoded_src, kind: str) -> None:
    info = degrade(sources["src"], tmp_path / "out.mp4", kind=kind, level=5, seed=3)
    assert isinstance(info, DegradationInfo) and info.video_reencoded and not info.audio_reencoded
    with av.open(str(info.dst)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert (v.codec_context.width, v.codec_context.height) == (SIZE, SIZE)
        assert abs(float(v.duration * v.time_base) - DURATION) <= FRAME_S
    pts, frames = _frames(info.dst)
    assert pts == decoded_src["pts"] and info.n_frames == N_FRAMES
    assert _psnr(_luma(frames), decoded_src["luma"]) < 38  # level 5 visibly changes the pictures
    assert np.array_equal(_audio(info.dst), decoded_src["audio"])


def test_frame_drop_repeats_the_requested_fraction(tmp_path: Path, sources) -> None:
    info = degrade(sources["src"], tmp_path / "out.mp4", kind="frame_drop", level=3)
    luma = _luma(_frames(info.dst)[1])
    step = np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2))
    repeated = np.count_nonzero(step < 0.5) / (N_FRAMES - 1)
    assert repeated == pytest.approx(level_parameter("frame_drop", 3), abs=0.03)
    assert info.parameter == pytest.approx(repeated, abs=0.03)


def test_random_kinds_follow_the_seed(tmp_path: Path, sources) -> None:
    # which frames are dropped is drawn from the seed. (The H.264 bytes themselves are not compared: this
    # libx264 build is not bit-exact between runs on high-entropy input such as the "noise" kind.)
    def repeated(seed: int, name: str) -> np.ndarray:
        info = degrade(sources["src"], tmp_path / name, kind="frame_drop", level=2, seed=seed)
        luma = _luma(_frames(info.dst)[1])
        return np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2)) < 0.5

    a, b, c = repeated(5, "a.mp4"), repeated(5, "b.mp4"), repeated(6, "c.mp4")
    assert a.any() and np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_video_kind_on_a_file_without_audio(tmp_path: Path, sources) -> None:
    info = degrade(sources["noaudio"], tmp_path / "out.mp4", kind="blur", level=2)
    assert not info.has_audio
    with av.open(str(info.dst)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 0
    assert len(_frames(info.dst)[0]) == N_FRAMES


# -------------------------------------------------------------------------------------------- audio


def test_audio_noise_reaches_the_requested_snr(tmp_path: Path, sources, decoded_src) -> None:
    info = degrade(sources["src"], tmp_path / "out.mp4", kind="audio_noise", level=4)
    src = decoded_src["audio"][0].astype(np.float64)
    out = _audio(info.dst)[0].astype(np.float64)
    snr = 10 * np.log10(np.mean(src**2) / np.mean((out - src) ** 2))
    assert snr == pytest.approx(level_parameter("audio_noise", 4), abs=1.5)
    pts, frames = _frames(info.dst)
    assert pts == decoded_src["pts"] and all(np.array_equal(a, b) for a, b in zip(frames, decoded_src["frames"]))


def test_audio_lowpass_removes_high_frequencies(tmp_path: Path, sources, decoded_src) -> None:
    info = degrade(sources["src"], tmp_path / "out.mp4", kind="audio_lowpass", level=4)  # 1000 Hz
    src = decoded_src["audio"][0].astype(np.float64)
    out = _audio(info.dst)[0].astype(np.float64)
    f, p_src = signal.welch(src, SR, nperseg=1024)
    _, p_out = signal.welch(out, SR, nperseg=1024)
    band = f > 1800
    assert p_out[band].sum() < 0.02 * p_src[band].sum()
    passband = (f > 300) & (f < 700)
    assert p_out[passband].sum() == pytest.approx(p_src[passband].sum(), rel=0.2)
    # no delay (zero-phase filter): the tone bursts stay where they were
    assert abs(_advance_s(_audio(info.dst), decoded_src["audio"])) <= 1.0 / SR * 2
    pts, frames = _frames(info.dst)
    assert all(np.array_equal(a, b) for a, b in zip(frames, decoded_src["frames"]))


def test_audio_kind_on_a_file_without_audio_raises(tmp_path: Path, sources) -> None:
    with pytest.raises(MediaError, match="no audio"):
        degrade(sources["noaudio"], tmp_path / "out.mp4", kind="audio_lead", level=1)
    assert not (tmp_path / "out.mp4").exists()
    assert os.listdir(tmp_path) == []


# -------------------------------------------------------------------------------------------- errors


def test_bad_inputs_raise_typed_errors(tmp_path: Path, sources) -> None:
    dst = tmp_path / "out.mp4"
    with pytest.raises(MediaFileNotFoundError, match="nope.mp4"):
        degrade(tmp_path / "nope.mp4", dst, kind="blur", level=1)
    with pytest.raises(MediaFileNotFoundError):
        degrade(tmp_path, dst, kind="blur", level=1)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(DecodeError, match="notes.mp4"):
        degrade(text, dst, kind="blur", level=1)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        degrade(empty, dst, kind="blur", level=1)
    with pytest.raises(NoVideoStreamError, match="audioonly"):
        degrade(sources["audioonly"], dst, kind="audio_lead", level=1)
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(NoVideoStreamError, match="still"):
        degrade(image, dst, kind="blur", level=1)
    assert not dst.exists()
    assert sorted(os.listdir(tmp_path)) == ["empty.mp4", "notes.mp4", "still.png"]


def test_bad_arguments_raise_config_error(tmp_path: Path, sources) -> None:
    dst = tmp_path / "out.mp4"
    for kwargs in ({"kind": "sepia", "level": 1}, {"kind": "blur", "level": 0}, {"kind": "blur", "level": 6},
                   {"kind": "blur", "level": 2.5}, {"kind": "blur", "level": True}, {"kind": "blur", "level": 1, "seed": -1}):
        with pytest.raises(ConfigError):
            degrade(sources["src"], dst, **kwargs)
    with pytest.raises(ConfigError, match="source"):
        degrade(sources["src"], sources["src"], kind="blur", level=1, overwrite=True)
    with pytest.raises(ConfigError):
        degrade(sources["src"], tmp_path / "no_such_dir" / "out.mp4", kind="blur", level=1)
    assert not dst.exists()


def test_existing_output_is_not_overwritten(tmp_path: Path, sources) -> None:
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"precious")
    with pytest.raises(ConfigError, match="exists"):
        degrade(sources["src"], dst, kind="audio_lead", level=1)
    assert dst.read_bytes() == b"precious"
    info = degrade(sources["src"], dst, kind="audio_lead", level=1, overwrite=True)
    assert info.dst == dst and dst.stat().st_size > 10_000
    assert os.listdir(tmp_path) == ["out.mp4"]  # no temporary file left behind


# -------------------------------------------------------------------------------------------- tables


def test_kinds_table_and_pseudo_mos() -> None:
    required = {"compression", "bitrate", "audio_lead", "video_lead", "pause_start", "pause_middle"}
    assert required <= set(KINDS)
    for name, spec in KINDS.items():
        assert spec.name == name and spec.stream in ("video", "audio")
        assert len(spec.levels) == 5 and spec.description and spec.unit
        scores = [pseudo_mos(name, lev) for lev in (0, *LEVELS)]
        assert scores[0] == UNTOUCHED_MOS
        assert all(0.0 <= s <= 5.0 for s in scores)
        assert all(a > b for a, b in zip(scores, scores[1:])), (name, scores)
    assert pseudo_mos(None, 0) == UNTOUCHED_MOS == 4.5
    assert pseudo_mos("compression", 5) < pseudo_mos("pause_start", 5)
    with pytest.raises(ConfigError):
        pseudo_mos(None, 2)
    with pytest.raises(ConfigError):
        pseudo_mos("sepia", 1)
    with pytest.raises(ConfigError):
        pseudo_mos("blur", 6)
    with pytest.raises(TypeError):
        KINDS["new"] = KINDS["blur"]  # type: ignore[index]
    assert issubclass(ConfigError, THQAError)
