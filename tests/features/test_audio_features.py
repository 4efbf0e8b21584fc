"""Audio features: (4, 128, 32) per clip, finite on silence, each clip's own second, one time grid for all channels."""
from __future__ import annotations

import math

import numpy as np
import pytest

from media import tone, write_video
from thqa.errors import ConfigError
from thqa.features.audio import AUDIO_MAPS, CHANNELS, DEFAULT_MAPS, AudioFeatureExtractor, AudioMap, AudioSettings, audio_features
from thqa.features.audio_maps import AudioClips
from thqa.features.pipeline import ExtractionSettings, prepare

SR = 16000
BUF = 2 * SR  # 1 s + 2 x 0.5 s context
HOP = SR // 32
#: the CQT row nearest 1 kHz: 84 bins at 12 per octave from C1, interpolated onto 128 rows
ROW_1K = int(round(12 * math.log2(1000 / 32.70319566257483) * 127 / 83))
#: CQT rows from 250 Hz up: their windows are <= 84 ms long (the C1 row's is 0.5 s: it sees a quarter second around)
ROW_250 = int(math.ceil(12 * math.log2(250 / 32.70319566257483) * 127 / 83))


@pytest.fixture(scope="module")
def ex():
    return AudioFeatureExtractor()


@pytest.fixture(scope="module")
def silence(ex):
    return ex(np.zeros(BUF, np.float32))


def test_shape_dtype_and_channels(ex):
    rng = np.random.default_rng(0)
    f = ex((0.1 * rng.standard_normal(BUF)).astype(np.float32))
    assert f.shape == (4, 128, 32) and f.dtype == np.float32
    assert np.isfinite(f).all()
    assert CHANNELS == ("chroma", "cqt", "mfcc", "gfcc")
    # each channel carries information (not constant) for noise
    assert all(f[c].std() > 0 for c in range(4))
    # the chroma channel is normalised per frame (max 1), the CQT is in dB
    np.testing.assert_allclose(f[0].max(axis=0), 1.0, atol=1e-5)


def test_silence_is_finite_and_constant_over_time(silence):
    assert silence.shape == (4, 128, 32) and np.isfinite(silence).all()
    # digital silence: every frame alike (no frame picks up anything)
    np.testing.assert_allclose(silence, np.repeat(silence[:, :, :1], 32, axis=2), atol=1e-4)
    assert silence[1].max() <= -99.0  # CQT at its -100 dB floor


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.full(BUF, np.nan, np.float32),
        lambda: np.where(np.arange(BUF) % 7 == 0, np.inf, 0.1).astype(np.float32),
        lambda: np.zeros(BUF // 3, np.float32),  # too short: padded
        lambda: np.ones(BUF, np.float32) * 1.5,  # DC, clipped level
        lambda: np.zeros(BUF, np.float64),
    ],
    ids=["nan", "inf", "short", "dc", "float64"],
)
def test_odd_buffers_give_finite_features(ex, make):
    f = ex(make())
    assert f.shape == (4, 128, 32) and f.dtype == np.float32
    assert np.isfinite(f).all()


def test_other_sizes_and_function_form():
    s = AudioSettings(n_bins=64, n_frames=16)
    rng = np.random.default_rng(1)
    f = audio_features((0.1 * rng.standard_normal(BUF)).astype(np.float32), settings=s)
    assert f.shape == (4, 64, 16) and np.isfinite(f).all()


def test_chroma_and_mfcc_are_librosas_own(ex):
    """The chroma and MFCC channels equal librosa.feature.chroma_stft / mfcc on the same windows (the extractor
    builds the filter banks once instead of on every call; the values must not move)."""
    import librosa

    from thqa.features.audio import _one_blas_thread

    rng = np.random.default_rng(3)
    y = (0.1 * rng.standard_normal((2, BUF))).astype(np.float32)
    y[1, : SR // 2] *= 0.01  # a quiet stretch: normalisation per frame must match too
    got = ex.batch(y)
    s = ex.settings
    span = AudioClips(y, ex.settings).span
    # the oracle under the extractor's own arithmetic rule (BLAS on one thread, so that the maps never depend on the
    # process's thread count): otherwise a 2-thread BLAS sums the filter-bank products in another order (~2e-7)
    with _one_blas_thread():
        power = np.abs(librosa.stft(span, n_fft=s.n_fft, hop_length=s.hop, center=False)) ** 2
        chroma = librosa.feature.chroma_stft(S=power, sr=SR, n_fft=s.n_fft, n_chroma=s.n_bins, tuning=0.0)
        mel = librosa.feature.melspectrogram(S=power, sr=SR, n_fft=s.n_fft, n_mels=s.n_bins)
        mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None), n_mfcc=s.n_bins)
    assert got.shape == (2, 4, 128, 32)
    np.testing.assert_array_equal(got[:, 0], chroma.astype(np.float32))
    np.testing.assert_array_equal(got[:, 2], mfcc.astype(np.float32))
    assert np.abs(got[0, 0] - got[1, 0]).max() > 0.1  # different sounds, different chroma


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sample_rate=4000),
        dict(sample_rate=16000, n_frames=32000),  # less than a sample between frames
        dict(cqt_kind="wavelet"),
        dict(cqt_kind="chroma"),  # 12 bins per octave cannot fold onto 128 chroma bins
        dict(cqt_kind="chroma", cqt_bins=900, cqt_bins_per_octave=128),  # not whole octaves
        dict(chroma_tuning=0.5),
        dict(mfcc_top_db=0.0),
        dict(n_bins=8),
        dict(n_frames=2),
        dict(context=0.01),  # shorter than half a window
        dict(cqt_bins=120),  # top bin above Nyquist
    ],
)
def test_invalid_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        AudioSettings(**kwargs).validate()
    with pytest.raises(ConfigError):
        AudioFeatureExtractor(AudioSettings(**kwargs))


def test_all_channels_share_one_time_grid_shift_by_one_hop(ex):
    """Delaying the audio by one hop (1/32 s) moves every channel by exactly one frame."""
    rng = np.random.default_rng(2)
    y = (0.1 * rng.standard_normal(BUF + HOP)).astype(np.float32)
    a = ex(y[HOP:])  # frame k of `a` is frame k+1 of `b`
    b = ex(y[:BUF])
    for c in range(4):
        scale = np.abs(b[c]).max()
        shifted = np.abs(a[c][:, :-1] - b[c][:, 1:]).max()
        unshifted = np.abs(a[c][:, :-1] - b[c][:, :-1]).max()
        assert shifted <= 1e-3 * scale + 1e-4, (CHANNELS[c], shifted)
        assert unshifted > 100 * (shifted + 1e-6), CHANNELS[c]  # the comparison can fail


def _inner(x: np.ndarray) -> np.ndarray:
    """The frames away from the clip's edges (the windows of edge frames reach 64 ms into the neighbours)."""
    return x[..., 3:-3]


def test_tone_in_second_3_shows_in_clip_3_only(media_dir, silence):
    p = write_video(media_dir / "tone_s3.mp4", seconds=7, audio=tone(1000, 7, start=3.0, end=4.0, amplitude=0.5))
    pv = prepare(p, ExtractionSettings(n_clips=6, clip_frames=4, frame_size=32))
    assert pv.seconds == [0, 1, 2, 3, 4, 5]
    A = pv.audio
    assert A.shape == (6, 4, 128, 32) and np.isfinite(A).all()
    band = A[:, 1, ROW_1K - 2 : ROW_1K + 3].mean(axis=1)  # (6, 32) CQT dB near 1 kHz
    # clip 3: the tone, in every frame
    assert band[3].min() > -20
    # clips 0, 1, 5: nothing; clips 2 and 4: nothing but the 3 frames next to second 3
    for i in (0, 1, 5):
        assert band[i].max() < -90, i
    assert band[2][:-3].max() < -90 and band[4][3:].max() < -90
    # per channel: the distance from silence over the inner frames, clip 3 against the others
    for c in range(4):
        rows = slice(ROW_250, None) if CHANNELS[c] == "cqt" else slice(None)
        d = np.abs(_inner(A[:, c, rows]) - _inner(silence[c, rows])).mean(axis=(1, 2))  # (6,)
        assert d[3] > 0.01, (CHANNELS[c], d)
        others = np.delete(d, 3)
        assert others.max() < 0.01 * d[3], (CHANNELS[c], d)
    # MFCC 0 follows the log energy: clip 3 is far above every other clip in every inner frame
    c0 = _inner(A[:, 2, 0])
    assert (c0[3].min() - np.delete(c0, 3, axis=0).max()) > 50


def test_tone_onset_mid_second_is_at_the_same_frame_in_all_channels(media_dir, silence):
    # the tone starts at 3.5 s: between frame 15 (centre 3.484 s) and frame 16 (centre 3.516 s) of clip 3
    p = write_video(media_dir / "tone_s3p5.mp4", seconds=7, audio=tone(1000, 7, start=3.5, amplitude=0.5))
    pv = prepare(p, ExtractionSettings(n_clips=6, clip_frames=4, frame_size=32))
    F = pv.audio[pv.seconds.index(3)]
    onsets = {}
    for c, name in enumerate(CHANNELS):
        if name == "cqt":  # its low rows have windows of up to 0.5 s: look at the tone's own band
            d = F[1, ROW_1K - 3 : ROW_1K + 4].mean(axis=0) - silence[1, ROW_1K - 3 : ROW_1K + 4].mean(axis=0)
        else:
            d = np.linalg.norm(F[c] - silence[c], axis=0)
        steady = d[-8:].mean()
        assert steady > 0 and d[:8].max() < 0.05 * steady, name  # silent first quarter, tone at the end
        onsets[name] = int(np.argmax(d > 0.5 * steady))
    assert all(13 <= k <= 17 for k in onsets.values()), onsets
    assert max(onsets.values()) - min(onsets.values()) <= 2, onsets
    # and the tone is absent from the clips before
    for s in (0, 1, 2):
        G = pv.audio[pv.seconds.index(s)]
        assert np.abs(G[2] - silence[2]).max() < 1e-3


def test_no_audio_stream_path_gives_silence_features(media_dir, silence):
    p = write_video(media_dir / "mute.mp4", seconds=2)
    pv = prepare(p, ExtractionSettings(n_clips=3, clip_frames=4, frame_size=32))
    assert pv.audio.shape == (3, 4, 128, 32) and np.isfinite(pv.audio).all()
    assert not pv.has_audio
    for i in range(3):
        np.testing.assert_allclose(pv.audio[i], silence, atol=1e-4)
    assert any("no audio stream" in w and str(p) in w for w in pv.warnings)


def test_silent_audio_track_warns_and_is_finite(media_dir, silence):
    p = write_video(media_dir / "silent_track.mp4", seconds=2, audio=np.zeros(2 * SR, np.float32))
    pv = prepare(p, ExtractionSettings(n_clips=2, clip_frames=4, frame_size=32))
    assert np.isfinite(pv.audio).all()
    np.testing.assert_allclose(pv.audio[0], silence, atol=1e-3)
    assert any("silent" in w for w in pv.warnings)


# -- the switches back to the method's audio settings (README: "Departures from the method") ----------------------
def test_default_settings_keep_their_cache_key_dict():
    """Fields added for the method's settings enter to_dict() (so cache keys and checkpoint headers) only when changed:
    features cached at the defaults before they existed stay reachable."""
    assert AudioSettings().to_dict() == {
        "sample_rate": 16000, "n_bins": 128, "n_frames": 32, "n_fft": 2048, "cqt_bins": 84, "cqt_bins_per_octave": 12,
        "cqt_fmin": 32.70319566257483, "context": 0.5,
    }
    assert AudioSettings(mfcc_top_db=80.0).to_dict()["mfcc_top_db"] == 80.0
    assert AudioSettings(chroma_tuning=None).to_dict()["chroma_tuning"] is None
    assert AudioSettings(cqt_kind="chroma", cqt_bins=896, cqt_bins_per_octave=128).to_dict()["cqt_kind"] == "chroma"


def test_mfcc_top_db_floors_each_clip_under_its_own_peak():
    """mfcc_top_db=80 is librosa.feature.mfcc's default floor, taken per clip: a loud clip beside a quiet one in the
    batch does not change the quiet one's MFCCs."""
    import librosa

    rng = np.random.default_rng(5)
    y = (0.1 * rng.standard_normal((2, BUF))).astype(np.float32)
    y[1] *= 1e-4
    y[1, SR : SR + 400] = 0.5  # a click: 110 dB over the rest of that clip
    ex80 = AudioFeatureExtractor(AudioSettings(mfcc_top_db=80.0))
    got = ex80.batch(y)
    s = ex80.settings
    power = np.abs(librosa.stft(AudioClips(y[1], ex80.settings).span, n_fft=s.n_fft, hop_length=s.hop, center=False)) ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=SR, n_fft=s.n_fft, n_mels=s.n_bins)
    want = librosa.feature.mfcc(S=librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0), n_mfcc=s.n_bins)
    np.testing.assert_allclose(got[1, 2], want, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(ex80.batch(y[1:])[0], got[1], rtol=1e-5, atol=1e-4)  # alone or beside a loud clip
    plain = AudioFeatureExtractor().batch(y)[1]
    assert np.abs(plain[2] - got[1, 2]).max() > 1.0  # the floor changed the MFCCs of the quiet clip
    np.testing.assert_array_equal(plain[[0, 1, 3]], got[1, [0, 1, 3]])  # and nothing else


def test_estimated_chroma_tuning_is_librosas_default_per_clip():
    """chroma_tuning=None: librosa.feature.chroma_stft's own tuning estimate, from each clip alone."""
    import librosa

    t = np.arange(BUF) / SR
    y = np.stack([0.3 * np.sin(2 * np.pi * 440 * 2 ** (0.4 / 12) * t), 0.3 * np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    ex = AudioFeatureExtractor(AudioSettings(chroma_tuning=None))
    got = ex.batch(y)
    s = ex.settings
    for i in range(2):
        power = np.abs(librosa.stft(AudioClips(y[i], ex.settings).span, n_fft=s.n_fft, hop_length=s.hop, center=False)) ** 2
        want = librosa.feature.chroma_stft(S=power, sr=SR, n_fft=s.n_fft, n_chroma=s.n_bins)  # tuning=None
        np.testing.assert_allclose(got[i, 0], want, rtol=1e-5, atol=1e-6)
    fixed = AudioFeatureExtractor().batch(y[:1])[0]
    assert np.abs(fixed[0] - got[0, 0]).max() > 0.1  # a tone 0.4 semitone sharp: its estimated tuning moves the bins


def test_chroma_cqt_at_the_methods_resolution_on_22050_hz():
    """The public code's CQT channel: chroma_cqt with 128 bins per octave (896 filters), at librosa's 22.05 kHz: a
    tone at A4 lands in the A chroma bin (96 of 128); 22050 Hz gives a hop of 689 samples on the 32-frame grid."""
    from thqa.features.audio import METHOD_AUDIO

    s = AudioSettings(**{**METHOD_AUDIO, "cqt_bins": 128 * 2, "cqt_fmin": 220.0})  # 2 octaves from A3: same filters per octave, faster
    assert s.hop == 689
    sr = s.sample_rate
    t = np.arange(2 * sr) / sr
    f = AudioFeatureExtractor(s)((0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32))
    assert f.shape == (4, 128, 32) and np.isfinite(f).all()
    cq = f[1]
    assert cq.max() == pytest.approx(1.0, abs=1e-5)  # chroma, normalised per frame
    peak = np.bincount(cq.argmax(axis=0), minlength=128).argmax()
    assert abs(int(peak) - 96) <= 1  # librosa's chroma starts at C: A is 9/12 of the way, bin 96 (+-1: the estimated tuning)


def test_all_channels_share_one_time_grid_at_22050_hz():
    """With the method's 22.05 kHz the hop is rounded down (689 samples), and one hop of delay still moves every
    channel by one frame."""
    s = AudioSettings(sample_rate=22050)
    ex22 = AudioFeatureExtractor(s)
    hop, buf = s.hop, 2 * s.sample_rate
    rng = np.random.default_rng(2)
    y = (0.1 * rng.standard_normal(buf + hop)).astype(np.float32)
    a, b = ex22(y[hop:]), ex22(y[:buf])
    for c in range(4):
        scale = np.abs(b[c]).max()
        assert np.abs(a[c][:, :-1] - b[c][:, 1:]).max() <= 1e-3 * scale + 1e-4, CHANNELS[c]


# -- the audio-map table: a fifth map is one entry and its own module -----------------------------------------------
@pytest.fixture
def five_maps(monkeypatch):
    """AudioSettings with the method's four maps and a fifth, the log-mel spectrogram of tests/audio_map_logmel.py,
    registered by one entry in AUDIO_MAPS."""
    import audio_map_logmel

    monkeypatch.setitem(AUDIO_MAPS, "logmel", AudioMap(audio_map_logmel.log_mel, "log-mel spectrogram, dB"))
    return AudioSettings(maps=(*DEFAULT_MAPS, "logmel"))


def test_the_default_maps_are_the_methods_four_and_leave_keys_alone():
    assert DEFAULT_MAPS == CHANNELS and set(DEFAULT_MAPS) <= set(AUDIO_MAPS)
    assert AudioSettings().n_maps == 4 and "maps" not in AudioSettings().to_dict()
    assert "maps" not in AudioSettings(maps=["chroma", "cqt", "mfcc", "gfcc"]).to_dict()  # a JSON list: the default
    assert AudioSettings(maps="mfcc, gfcc").maps == ("mfcc", "gfcc")
    assert AudioSettings(maps=["gfcc", "chroma"]).to_dict()["maps"] == ["gfcc", "chroma"]
    for bad, said in ((("chroma", "nope"), "unknown audio map"), ((), "non-empty"), (("mfcc", "mfcc"), "distinct"), (7, "non-empty")):
        with pytest.raises(ConfigError, match=said):
            AudioSettings(maps=bad).validate()


def test_a_subset_of_maps_gives_the_same_numbers_as_the_four(ex):
    rng = np.random.default_rng(5)
    y = (0.1 * rng.standard_normal((2, BUF))).astype(np.float32)
    four = ex.batch(y)
    two = AudioFeatureExtractor(AudioSettings(maps=("gfcc", "chroma"))).batch(y)
    assert two.shape == (2, 2, 128, 32)
    assert np.array_equal(two[:, 0], four[:, 3]) and np.array_equal(two[:, 1], four[:, 0])


def test_a_fifth_map_extracts_five_channels_and_feeds_a_model(five_maps, media_dir, ex):
    import librosa
    import torch

    from thqa.models.fusion import FusionConfig, FusionModel

    rng = np.random.default_rng(9)
    y = (0.1 * rng.standard_normal((3, BUF))).astype(np.float32)
    y[1] = 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(BUF) / SR)
    five = AudioFeatureExtractor(five_maps).batch(y)
    assert five.shape == (3, 5, 128, 32)
    assert np.array_equal(five[:, :4], ex.batch(y))  # the four maps' bits do not move
    # the fifth is librosa's mel spectrogram of the grid's windows (frame k centred (k + 0.5) / 32 s into the second)
    begin = SR // 2 + HOP // 2 - 1024
    mel = librosa.feature.melspectrogram(y=y[1, begin : begin + 31 * HOP + 2048], sr=SR, n_fft=2048, hop_length=HOP, center=False, n_mels=128)
    np.testing.assert_allclose(five[1, 4], librosa.power_to_db(mel, top_db=None), atol=2e-3)

    p = write_video(media_dir / "five_maps.mp4", seconds=3, audio=tone(440, 3, amplitude=0.5))
    pv = prepare(p, ExtractionSettings(n_clips=2, clip_frames=4, frame_size=32, audio=five_maps))
    assert pv.audio.shape == (2, 5, 128, 32) and np.isfinite(pv.audio).all()

    cfg = FusionConfig.for_audio(five_maps, audio_widths=(2, 2, 2), audio_embed=8, lstm_hidden=(4, 4), head_hidden=4)
    assert cfg.audio_channels_in == 5
    torch.manual_seed(0)
    model = FusionModel(cfg).eval()
    with torch.no_grad():
        mos, clips = model(torch.zeros(1, 2, 768), torch.zeros(1, 2, 2304), torch.from_numpy(pv.audio[None]))
    assert mos.shape == (1,) and clips.shape == (1, 2) and torch.isfinite(mos).all()
    with pytest.raises(RuntimeError):  # a four-channel model refuses five maps
        FusionModel(FusionConfig.for_audio(AudioSettings(), audio_widths=(2, 2, 2)))(
            torch.zeros(1, 2, 768), torch.zeros(1, 2, 2304), torch.from_numpy(pv.audio[None]))


def test_checkpoints_record_their_maps_and_old_ones_mean_the_four(five_maps, tmp_path):
    import json

    from safetensors import safe_open

    from thqa.models.checkpoint import load_checkpoint, parse_header, save_checkpoint
    from thqa.models.fusion import FusionConfig, FusionModel
    from thqa.training.recipes import resolve

    backbones = {n: {"name": n, "source": "random-init", "sha256": c * 64, "path": None, "seed": 3407}
                 for n, c in (("swin_t", "a"), ("slowfast_r50", "b"))}
    tiny = dict(audio_widths=(2, 2, 2), audio_embed=8, lstm_hidden=(4, 4), head_hidden=4)
    settings = ExtractionSettings(n_clips=2, audio=five_maps)
    p = save_checkpoint(tmp_path / "five.safetensors", FusionModel(FusionConfig.for_audio(five_maps, **tiny)), settings=settings, backbones=backbones)
    ck = load_checkpoint(p)
    assert ck.settings.audio.maps == (*DEFAULT_MAPS, "logmel") and ck.model.config.audio_channels_in == 5
    with safe_open(str(p), framework="pt") as f:
        header = json.loads(f.metadata()["thqa"])
    assert header["extraction"]["audio"]["maps"] == [*DEFAULT_MAPS, "logmel"]
    # a header without maps (every checkpoint written before the table) is the four maps, and needs 4 channels
    del header["extraction"]["audio"]["maps"]
    with pytest.raises(ValueError, match="audio_channels_in = 5 does not match the number of extraction.audio.maps .4."):
        parse_header(header)
    header["fusion_config"]["audio_channels_in"] = 4
    assert parse_header(header)[1].audio.maps == DEFAULT_MAPS
    header["extraction"]["audio"]["maps"] = ["chroma", "nope"]
    with pytest.raises(ValueError, match="unknown audio map"):
        parse_header(header)
    # a recipe's option: the model's channels follow the maps
    plan = resolve(maps=("mfcc", "logmel"))
    assert plan.settings.audio.maps == ("mfcc", "logmel") and plan.config.fusion["audio_channels_in"] == 2
