"""Issue 25: what a newcomer trips on in the first hour (each test fails on the code before the fix).

1. a checkpoint's record of how its backbones were made is followed by Scorer, `thqa score` and `thqa evaluate`;
2. the demo's manifests chain into `thqa extract`, which says why cached entries were not reused;
3. `thqa compare` on the natural layout genA/x.mp4, genB/x.mp4;
4. an in_sync verdict with ITU-R BT.1359's window;
5. the audio extractor used alone on a whole file;
7. help texts, stderr, grouped warnings, quiet Ray.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pytest

from thqa.cli import app as cli
from thqa.cli import outputs as cli_outputs
from thqa.cli import score as cli_score
from thqa.models.checkpoint import save_checkpoint
from thqa.errors import CheckpointMismatchError, WeightsNotFoundError


# -- 1. the checkpoint's backbones -------------------------------------------------------------------------------------
@pytest.fixture()
def random_init_ck(tmp_path, backbones, small_settings) -> Path:
    """A fusion checkpoint trained (as far as its header says) on the session's random-init backbones, seed 3407."""
    from thqa.models.fusion import FusionModel

    return save_checkpoint(tmp_path / "ri.safetensors", FusionModel(), settings=small_settings, backbones=backbones.infos)


@pytest.fixture()
def pretrained_ck(tmp_path, small_settings) -> Path:
    from thqa.models.fusion import FusionModel

    made = {n: {"name": n, "source": "file", "sha256": c * 64, "path": f"/w/{n}", "seed": None} for n, c in (("swin_t", "a"), ("slowfast_r50", "b"))}
    return save_checkpoint(tmp_path / "pre.safetensors", FusionModel(), settings=small_settings, backbones=made)


def test_scorer_uses_the_backbones_a_random_init_checkpoint_records(random_init_ck, no_network_weights, monkeypatch, caplog):
    from thqa.scoring.scorer import Scorer

    monkeypatch.setenv("THQA_OFFLINE", "1")  # before the fix: pretrained weights were looked for, and not found
    with caplog.at_level(logging.INFO, logger="thqa.scoring.scorer"):
        s = Scorer(random_init_ck, device="cpu", lazy=True, warm=False, workers=0)
    assert s.weights.random_init is True and s.weights.seed == 3407
    assert s.weights_note == f"random-init backbones (seed 3407), as {random_init_ck} records"
    assert any("random-init backbones (seed 3407)" in r.getMessage() for r in caplog.records)


def test_an_explicit_mismatch_with_the_checkpoint_names_both(random_init_ck, pretrained_ck):
    from thqa.scoring.scorer import Scorer

    with pytest.raises(CheckpointMismatchError) as ei:
        Scorer(random_init_ck, device="cpu", random_init=True, seed=5, lazy=True)
    msg = str(ei.value)
    assert "trained on random-init backbones (seed 3407)" in msg and "seed=5" in msg
    with pytest.raises(CheckpointMismatchError) as ei:
        Scorer(pretrained_ck, device="cpu", random_init=True, lazy=True)
    msg = str(ei.value)
    assert f"swin_t sha256 {'a' * 12}" in msg and "random_init=True" in msg
    with pytest.raises(CheckpointMismatchError, match="random_init=False"):
        Scorer(random_init_ck, device="cpu", random_init=False, lazy=True)


def test_old_checkpoints_without_a_seed_keep_the_options_as_given(tmp_path, backbones, small_settings):
    from thqa.models.checkpoint import backbones_made, load_checkpoint, weights_for
    from thqa.models.fusion import FusionModel

    old = {k: {**v, "seed": None} for k, v in backbones.infos.items()}
    ck = load_checkpoint(save_checkpoint(tmp_path / "old.safetensors", FusionModel(), settings=small_settings, backbones=old))
    assert backbones_made(ck) is None
    w, note = weights_for(ck)
    assert w.random_init is False and note is None  # as before: --random-init must be given
    w, note = weights_for(ck, random_init=True, seed=9)
    assert w.random_init is True and w.seed == 9


def test_weights_not_found_names_the_keyword_in_python_and_the_flag_in_the_cli(pretrained_ck, no_network_weights, monkeypatch, good_video, capsys):
    from thqa.scoring.scorer import Scorer

    monkeypatch.setenv("THQA_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as ei:
        Scorer(pretrained_ck, device="cpu", workers=0)
    msg = str(ei.value)
    assert "random_init=True" in msg and "_weights=FILE" in msg and "--random-init" not in msg
    rc = cli.main(["score", "--checkpoint", str(pretrained_ck), str(good_video)])
    err = capsys.readouterr().err
    assert rc == 2 and "--random-init" in err and "-weights FILE" in err and "random_init=True" not in err


def test_cli_score_follows_the_checkpoint_and_says_so(random_init_ck, backbones, monkeypatch, good_video, capsys):
    from test_cli_experiments import use_session_backbones

    use_session_backbones(monkeypatch, backbones)
    monkeypatch.setenv("THQA_OFFLINE", "1")
    rc = cli.main(["score", "--checkpoint", str(random_init_ck), "--device", "cpu", "--workers", "0", "--format", "json", str(good_video)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"score: backbones: random-init backbones (seed 3407), as {random_init_ck} records" in err
    row = json.loads(out)[0]
    assert row["error"] is None and row["weights"] == "random-init" and row["untrained"] is False
    rc = cli.main(["score", "--checkpoint", str(random_init_ck), "--random-init", "--seed", "7", str(good_video)])
    err = capsys.readouterr().err
    assert rc == 2 and "seed 3407" in err and "--seed 7" in err


# -- 2. the demo's files chain; extract says why it does not reuse -------------------------------------------------------
def test_extract_says_which_setting_keeps_cached_features_from_being_reused(tmp_path, backbones, small_settings, good_video):
    import dataclasses

    from thqa.data.cache import FeatureCache, file_digest
    from thqa.data.extract import extract_to_cache, reuse_hints
    from thqa.utils.hints import cli_hints
    from thqa.features.pipeline import FeatureExtractor

    cache = FeatureCache(tmp_path / "cache")
    s = extract_to_cache([good_video], cache, FeatureExtractor(small_settings, backbones=backbones, workers=0), frames=False)
    assert s.done == 1 and s.elsewhere == {}
    digest = {file_digest(good_video)}
    infos = backbones.infos
    hints = reuse_hints(cache, digest, small_settings, infos, frames=True)
    assert hints == {"stored without first frames, which only fine-tuning needs (pass frames=False)": 1}
    with cli_hints():
        assert list(reuse_hints(cache, digest, small_settings, infos, frames=True)) == [
            "stored without first frames, which only fine-tuning needs (pass --no-frames)"
        ]
        (why,) = reuse_hints(cache, digest, dataclasses.replace(small_settings, n_clips=6), infos, frames=False)
        assert why == "n_clips 2 (pass --clips 2)"
        pretrained = {k: {**v, "source": "file", "sha256": "c" * 64, "seed": None} for k, v in infos.items()}
        (why,) = reuse_hints(cache, digest, small_settings, pretrained, frames=False)
        assert why == "made with random-init backbones (seed 3407): --random-init --seed 3407"
    assert reuse_hints(cache, digest, small_settings, infos, frames=False) == {}  # reusable as it is: nothing to say


# -- 3. compare on genA/x.mp4, genB/x.mp4 ------------------------------------------------------------------------------
def _two_generators(tmp_path: Path) -> tuple[Path, Path]:
    """Predictions (absolute paths, as `thqa score genA/*.mp4 genB/*.mp4` writes them from another folder) and a
    manifest (paths relative to its folder) of 12 inputs rendered by two generators: genB is 0.3 better on every
    input, the inputs differ by far more than that (so the groups' intervals overlap; the paired difference is clear)."""
    rng = np.random.default_rng(0)
    base = rng.normal(3.0, 0.8, 12)
    root = tmp_path / "renders"
    preds, labels = io.StringIO(), io.StringIO()
    wp, wl = csv.writer(preds), csv.writer(labels)
    wp.writerow(["path", "mos", "error"])
    wl.writerow(["path", "mos"])
    for gen, shift in (("genA", 0.0), ("genB", 0.3)):
        for i, b in enumerate(base):
            wp.writerow([f"{root}/{gen}/x{i:02d}.mp4", f"{b + shift + rng.normal(0, 0.02):.4f}", ""])
            wl.writerow([f"{gen}/x{i:02d}.mp4", f"{b + shift + rng.normal(0, 0.05):.4f}"])
    (tmp_path / "scores.csv").write_text(preds.getvalue())
    root.mkdir()
    (root / "labels.csv").write_text(labels.getvalue())
    return tmp_path / "scores.csv", root / "labels.csv"


def test_compare_takes_the_natural_layout(tmp_path, capsys):
    pred, lab = _two_generators(tmp_path)
    png = tmp_path / "cmp.png"
    rc = cli.main(["compare", "--predictions", str(pred), "--labels", str(lab), "--group-from", "parent", "--n-boot", "300", "--json", "--plot", str(png)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["matching"]["n_matched"] == 24 and doc["n"] == 24
    assert {g["group"] for g in doc["groups"]} == {"genA", "genB"}
    (pair,) = doc["pairs"]
    assert pair["paired"] and pair["n_paired"] == 12 and pair["significant"]
    assert abs(pair["diff"]) == pytest.approx(0.3, abs=0.03)
    assert any("base name" in n for n in doc["notes"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same files, scored against the labels: matched by path too
    rc = cli.main(["evaluate", "--predictions", str(pred), "--labels", str(lab), "--json", "--fit", "none"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out)["n"] == 24


def test_matching_by_path_ending_and_base_names_as_before():
    from thqa.analysis.metrics import match_predictions, unique_tails

    assert unique_tails(["/a/genA/x.mp4", "/a/genB/x.mp4"]) == ({"/a/genA/x.mp4": "genA/x.mp4", "/a/genB/x.mp4": "genB/x.mp4"}, 2)
    names, p, m, rep = match_predictions({"/d/genA/x.mp4": 1.0, "/d/genB/x.mp4": 2.0, "/d/genB/y.mp4": 3.0}, {"genB/x.mp4": 5.0, "genA/x.mp4": 4.0})
    assert names == ["genB/x.mp4", "genA/x.mp4"] and p.tolist() == [2.0, 1.0] and m.tolist() == [5.0, 4.0]
    assert rep.unmatched_predictions == ["genB/y.mp4"]
    names, *_ = match_predictions({"/d/a.mp4": 1.0, "/e/b.mp4": 2.0}, {"a.mp4": 1.0, "b.mp4": 2.0})
    assert names == ["a.mp4", "b.mp4"]  # unique base names: matched by base name, as always


# -- 4. the in_sync verdict ------------------------------------------------------------------------------------------
def test_in_sync_window_follows_bt1359_in_thqas_sign():
    """offset_ms > 0: the sound later than the lips. BT.1359 detects sound 45 ms ahead or 125 ms behind."""
    from thqa.analysis.sync import IN_SYNC_WINDOW_MS, SyncSettings, in_sync

    assert IN_SYNC_WINDOW_MS == (45.0, 125.0)
    assert [in_sync(x) for x in (-46.0, -45.0, 0.0, 100.0, 125.0, 126.0)] == [False, True, True, True, True, False]
    assert in_sync(None) is None
    assert in_sync(150.0, (90.0, 185.0)) is True and in_sync(-100.0, (90.0, 185.0)) is False
    with pytest.raises(ValueError, match="in_sync_window_ms"):
        SyncSettings(in_sync_window_ms=(-1.0, 100.0)).validate()
    with pytest.raises(SystemExit):
        cli.main(["sync", "--sync-window", "45", "x.mp4"])



# -- 5. the extractors alone ---------------------------------------------------------------------------------------------
def test_audio_features_refuses_anything_but_one_clip(good_video_2s):
    from thqa.errors import ConfigError
    from thqa.features.audio import audio_features, clip_samples

    assert clip_samples() == 32000
    eight_seconds = np.zeros(8 * 22050, np.float32)
    with pytest.raises(ConfigError, match=r"one clip's buffer: 32000 mono samples.*got an array of shape \(176400,\): .*audio_features_per_second"):
        audio_features(eight_seconds)
    with pytest.raises(ConfigError, match="librosa.load"):
        audio_features((eight_seconds, 22050))
    with pytest.raises(ConfigError, match="shape"):
        audio_features(np.zeros((2, 32000), np.float32))
    assert audio_features(np.zeros(32000, np.float32)).shape == (4, 128, 32)


def test_audio_features_per_second_of_a_file_are_the_pipelines(good_video_2s, tmp_path):
    """Oracle: second k of the whole-file entry is the pipeline's audio maps of the clip that starts at k s."""
    import soundfile as sf

    from thqa.features.audio import audio_features_per_second
    from thqa.features.pipeline import ExtractionSettings, prepare

    per_second = audio_features_per_second(good_video_2s)
    assert per_second.shape == (2, 4, 128, 32) and per_second.dtype == np.float32
    prepared = prepare(good_video_2s, ExtractionSettings(n_clips=2, clip_frames=8, frame_size=64))
    assert prepared.seconds == [0, 1]
    np.testing.assert_array_equal(per_second[prepared.seconds], prepared.audio)
    # an array with its rate (a wav read by any library): every whole second, resampled to 16 kHz
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal((2, int(3.5 * 22050)))).astype(np.float32)
    wav = tmp_path / "talk.wav"
    sf.write(wav, y.T, 22050)
    assert audio_features_per_second(y, sample_rate=22050).shape == (3, 4, 128, 32)
    assert audio_features_per_second((y, 22050)).shape == (3, 4, 128, 32)  # librosa.load's pair
    assert audio_features_per_second(wav).shape == (3, 4, 128, 32)


def test_spatial_and_temporal_extractors_alone(backbones, small_settings, good_video_2s):
    """frame_features / clip_features: the backbones on pictures and on the clips thqa.media.decode decodes."""
    from thqa.features.spatial import frame_features
    from thqa.features.temporal import clip_features
    from thqa.media.clips import read_clips

    pictures = np.random.default_rng(0).integers(0, 256, (1, 120, 90, 3), dtype=np.uint8)
    f = frame_features(backbones.spatial, pictures)
    assert f.shape == (1, 768) and f.dtype == np.float32 and np.isfinite(f).all()
    clips = read_clips(good_video_2s, [0, 1], n_frames=8, frame_size=64).clips
    t = clip_features(backbones.temporal, np.stack([c.frames for c in clips]))
    assert t.shape == (2, 2304) and np.isfinite(t).all() and not np.array_equal(t[0], t[1])


# -- 7. the small things ---------------------------------------------------------------------------------------------------
def test_every_command_describes_itself_and_its_options():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.description, name
        helps = {a.dest: a.help for a in p._actions}
        for dest in ("cache_dir", "checkpoint", "files"):
            if dest in helps:
                assert helps[dest], (name, dest)
    score, train, evaluate = (sub.choices[n].format_help() for n in ("score", "train", "evaluate"))
    assert "clips (not videos) per backbone forward pass" in score
    assert "videos (not clips) per training step" in " ".join(train.split())
    assert "the backbones it records are used" in " ".join(evaluate.split())


def test_every_command_is_run_by_the_registered_module_named_after_it():
    """A command is one module of thqa/cli (its parser and the function that runs it) and one entry of COMMANDS."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    modules = {m.__name__.rsplit(".", 1)[1]: m for m in cli.COMMANDS}
    assert list(sub.choices) == ["score", "sync", "extract", "cache", "train", "evaluate", "compare", "serve", "demo"]
    for name, p in sub.choices.items():
        home = "extract" if name == "cache" else name  # `thqa cache prune` lives beside extract, which fills the cache
        func = p.get_default("func") or p._subparsers._group_actions[0].choices["prune"].get_default("func")
        assert func.__module__ == modules[home].__name__ == f"thqa.cli.{home}", name


def test_repeated_warnings_are_said_once_at_the_end(capsys):
    import sys
    from types import SimpleNamespace

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("thqa: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with cli_outputs.warnings_at_the_end():
            for i in range(15):
                logging.getLogger("thqa.features.pipeline").warning("f%d.mp4: audio %.1f s shorter than the video", i, 0.5 + i)
            logging.getLogger("thqa.media.decode").warning("something else")
            print("progress", file=sys.stderr)
    finally:
        root.removeHandler(handler)
    err = capsys.readouterr().err.splitlines()
    assert err == ["progress", "thqa: WARNING: f0.mp4: audio 0.5 s shorter than the video (and 14 more like it)", "thqa: WARNING: something else"]
    note = "the prediction {:.3f} lies outside the validation predictions' range [2.000, 3.000]: this video may be unlike the validation videos"
    results = [SimpleNamespace(path=f"/v/{i}.mp4", mos=3.5 + i, interval_note=note.format(3.5 + i)) for i in range(15)]
    results += [SimpleNamespace(path=f"/v/ok{i}.mp4", mos=2.5, interval_note=None) for i in range(9)]
    cli_score._print_interval_notes(results)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("thqa score: 15 of 24 files: e.g. /v/0.mp4: the prediction 3.500 lies outside") and "(also 1.mp4, 2.mp4, 3.mp4, ...)" in line


def test_ray_is_quiet_unless_verbose(monkeypatch):
    import thqa.engines.ray_engine as re_

    calls = []
    fake = SimpleNamespace(is_initialized=lambda: False, init=lambda **kw: calls.append(kw),
                           data=SimpleNamespace(DataContext=SimpleNamespace(get_current=lambda: SimpleNamespace())))
    monkeypatch.setattr(re_, "import_ray", lambda: fake)
    re_._connect(re_.RayOptions())
    re_._connect(re_.RayOptions(verbose=True))
    assert calls[0]["logging_level"] == logging.ERROR and calls[0]["log_to_driver"] is False
    assert calls[1]["logging_level"] == logging.INFO and calls[1]["log_to_driver"] is True


def test_plots_say_what_each_line_is(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from thqa.analysis.plots import scatter_plot, timeline_plot

    figs = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figs.append(self), real(self, *a, **k))[1])
    r = SimpleNamespace(path="a.mp4", timeline=[3.1, 3.3, 3.2, 3.4], seconds=[0, 2], mos=2.9, untrained=False, av_sync_agreement=None, av_sync_error=None)
    timeline_plot(r, tmp_path / "t.png")
    legend = [t.get_text() for t in figs[-1].axes[0].get_legend().get_texts()]
    assert any("score of each second" in t for t in legend) and any("sampled for the file's MOS" in t for t in legend)
    assert any(t.startswith("file MOS 2.90: the model on the shaded seconds together") and "not the line's mean" in t for t in legend)
    scatter_plot(np.arange(8.0), np.arange(8.0) ** 1.1, tmp_path / "s.png", label="pseudo-MOS (a rule, not people)")
    assert figs[-1].axes[0].get_ylabel() == "pseudo-MOS (a rule, not people)"


def test_compare_and_sync_never_replace_a_device(tmp_path, capsys):
    """`thqa compare -o /dev/null` used to rename its output over the device (found on journey (b)); a FIFO stands in
    for the device here, so that a regression breaks no machine."""
    import os
    import stat

    pred, _ = _two_generators(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert cli.main(["compare", "--predictions", str(pred), "--group-from", "parent", "-o", str(fifo)]) == 2
    assert cli.main(["sync", "x.mp4", "-o", str(fifo)]) == 2
    err = capsys.readouterr().err  # a device or a FIFO is written through; one that nobody reads is refused
    assert err.count("a pipe that no process reads") == 2, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
