"""Scorer and `thqa score`: whole-pipeline runs on test-made and real files, and every kind of bad input.

Most runs use the small-settings scorer (2 clips of 8 frames at 64 px: same model, same feature sizes, cheap SlowFast
passes); a few use the full settings (6 clips of 32 frames at 224 px).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from media import MEDIA_DIR, index_frame, tone, truncate, write_audio_only, write_image, write_video
from thqa.cli import app as cli
from thqa.errors import CheckpointError, MediaFileNotFoundError, THQAError
from thqa.features.pipeline import ExtractionSettings, prepare
from thqa.scoring.scorer import NO_MODEL_MESSAGE, Scorer, ScoreResult


def assert_scored(r: ScoreResult, n_clips: int):
    assert r.ok and r.error is None and r.error_type is None, r.error
    assert r.mos is not None and math.isfinite(r.mos)
    assert len(r.clip_scores) == n_clips and all(math.isfinite(c) for c in r.clip_scores)
    assert r.mos == pytest.approx(float(np.mean(r.clip_scores)), abs=1e-5)
    assert r.weights == "random-init" and r.untrained is True
    assert len(r.seconds) == n_clips


def assert_failed(r: ScoreResult, path, etype: str | tuple[str, ...], words: str = ""):
    etypes = (etype,) if isinstance(etype, str) else etype
    assert not r.ok and r.mos is None and r.clip_scores is None
    assert r.error_type in etypes, (r.error_type, r.error)
    assert str(path) in r.error, r.error
    assert words in r.error, r.error


# -- files ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, good_video_2s):
    d = tmp_path_factory.mktemp("bad")
    (d / "a_directory.mp4").mkdir()
    (d / "zero.mp4").write_bytes(b"")
    (d / "readme.mp4").write_text("not a video, just text\n" * 40)
    fast = write_video(d / "fast.mp4", seconds=4, audio=tone(500, 4), faststart=True)
    return {
        "missing": (d / "missing.mp4", "MediaFileNotFoundError", "no such file"),
        "directory": (d / "a_directory.mp4", "MediaFileNotFoundError", "directory"),
        "zero_bytes": (d / "zero.mp4", "MediaError", "empty"),
        "text": (d / "readme.mp4", "DecodeError", "not a media file"),
        "png": (write_image(d / "still.png"), "NoVideoStreamError", "still image"),
        "jpeg": (write_image(d / "still.jpg"), "NoVideoStreamError", "still image"),
        "audio_only": (write_audio_only(d / "speech.m4a", tone(300, 3)), "NoVideoStreamError", "no video stream"),
        "truncated": (truncate(good_video_2s, d / "half.mp4"), "DecodeError", ""),  # the index (moov) is at the end: lost
        "truncated_faststart": (truncate(fast, d / "fast_half.mp4"), None, ""),  # index first: half the video decodes
    }


# -- the Scorer -------------------------------------------------------------------------------------------------------
def test_scorer_needs_a_checkpoint_or_random_init():
    with pytest.raises(CheckpointError) as ei:
        Scorer()
    assert "there is no trained model" in str(ei.value)
    assert "--random-init" in str(ei.value) and "--checkpoint" in str(ei.value)
    assert str(ei.value) == NO_MODEL_MESSAGE


def test_full_size_pipeline_on_a_test_video(scorer, good_video):
    # the backbones' inputs at the default settings
    pv = prepare(good_video, scorer.settings)
    assert scorer.settings == ExtractionSettings()
    assert pv.seconds == [0] * 6 and pv.unique == [0]
    assert tuple(pv.clips.shape) == (1, 32, 224, 224, 3)
    assert tuple(pv.spatial_input.shape) == (1, 3, 224, 224)
    assert pv.audio.shape == (6, 4, 128, 32) and np.isfinite(pv.audio).all()
    r = scorer.score(good_video)
    assert_scored(r, 6)
    assert r.seconds == [0] * 6 and r.path == str(good_video)
    assert r.to_dict()["mos"] == r.mos


def test_small_settings_scorer_and_features(small_scorer, good_video_2s):
    f = small_scorer.extractor.extract(good_video_2s)
    assert f.spatial.shape == (2, 768) and f.temporal.shape == (2, 2304) and f.audio.shape == (2, 4, 128, 32)
    assert np.isfinite(f.spatial).all() and np.isfinite(f.temporal).all() and np.isfinite(f.audio).all()
    assert f.seconds == [0, 1] and f.has_audio
    assert not np.allclose(f.temporal[0], f.temporal[1])  # two different seconds
    r = small_scorer.score(good_video_2s)
    assert_scored(r, 2)
    assert r.seconds == [0, 1]
    # score() is the fusion model on these features (deterministic: eval mode, no dropout)
    mos, clips = small_scorer.score_features([f])[0]
    assert r.mos == pytest.approx(mos, abs=1e-6) and r.clip_scores == pytest.approx(clips, abs=1e-6)


def test_video_without_audio_scores_with_a_warning(small_scorer, media_dir):
    p = write_video(media_dir / "video_only.mp4", seconds=1, size=(80, 64))
    r = small_scorer.score(p)
    assert_scored(r, 2)
    assert any("no audio stream" in w and str(p) in w for w in r.warnings)


def test_one_frame_video_scores(small_scorer, media_dir):
    p = write_video(media_dir / "one_frame.mp4", seconds=0.04, frame_fn=lambda i, t: index_frame(4321, 64, 64), audio=tone(440, 0.04))
    r = small_scorer.score(p)
    assert_scored(r, 2)
    assert r.seconds == [0, 0]


def test_all_black_and_silent_video_scores_finitely(small_scorer, media_dir):
    p = write_video(
        media_dir / "black_silent.mp4", seconds=1, frame_fn=lambda i, t: np.zeros((64, 64, 3), np.uint8), audio=np.zeros(16000, np.float32)
    )
    r = small_scorer.score(p)
    assert_scored(r, 2)
    assert any("silent" in w for w in r.warnings)


def test_score_raises_typed_errors_naming_the_file(small_scorer, bad_files):
    for kind in ("missing", "directory", "zero_bytes", "text", "png", "audio_only", "truncated"):
        path, etype, words = bad_files[kind]
        with pytest.raises(THQAError) as ei:
            small_scorer.score(path)
        assert type(ei.value).__name__ == etype, kind
        assert str(path) in str(ei.value) and words in str(ei.value)
    with pytest.raises(MediaFileNotFoundError):
        small_scorer.score(bad_files["missing"][0])


def test_score_many_keeps_order_and_goes_on_after_bad_files(small_scorer, good_video, bad_files):
    kinds = ["missing", "directory", "zero_bytes", "text", "png", "jpeg", "audio_only", "truncated"]
    paths = [good_video] + [bad_files[k][0] for k in kinds]
    misnamed = MEDIA_DIR / "img_ai_jpeg_named_png.png"  # JPEG data named .png (real file, when present)
    if misnamed.is_file():
        paths.append(misnamed)
    paths.append(good_video)  # the batch goes on to the end
    results = small_scorer.score_many(paths)
    assert [r.path for r in results] == [str(p) for p in paths]
    assert_scored(results[0], 2)
    assert_scored(results[-1], 2)
    for r, k in zip(results[1:], kinds):
        _, etype, words = bad_files[k]
        assert_failed(r, bad_files[k][0], etype, words)
    if misnamed.is_file():
        assert_failed(results[-2], misnamed, "NoVideoStreamError", "still image")
    # iter_score yields the same, lazily
    it = small_scorer.iter_score([bad_files["missing"][0], good_video])
    first = next(it)
    assert first.error_type == "MediaFileNotFoundError"
    assert next(it).ok


def test_truncated_file_with_its_index_first_scores_with_warnings(small_scorer, bad_files):
    path = bad_files["truncated_faststart"][0]
    r = small_scorer.score_many([path])[0]
    # half of the video decodes: it is scored (a poor file, not an unusable one), and the warnings say why
    assert_scored(r, 2)
    assert any(str(path) in w and ("stopped early" in w or "overstate" in w) for w in r.warnings), r.warnings


def test_a_non_finite_score_becomes_an_error(small_scorer, good_video, monkeypatch):
    from thqa.features.pipeline import VideoFeatures

    def fake_features(items, **kw):  # skip the backbones: this test is about the scorer's last step
        return [
            VideoFeatures(it.path, np.zeros((2, 768), np.float32), np.zeros((2, 2304), np.float32), it.audio, it.seconds, it.has_audio, it.info, [])
            for it in items
        ]

    monkeypatch.setattr(small_scorer.backbones, "features", fake_features)
    monkeypatch.setattr(small_scorer, "score_features", lambda feats: [(float("nan"), [float("nan")] * 2) for _ in feats])
    r = small_scorer.score_many([good_video])[0]
    assert not r.ok and r.mos is None and "non-finite" in r.error and str(good_video) in r.error
    with pytest.raises(THQAError, match="non-finite"):
        small_scorer.score(good_video)


@pytest.mark.slow
def test_real_files_small_settings(small_scorer, real_file):
    names = [
        "vid_real_man_map_844.mp4",  # 44.1 kHz stereo AAC, 844 px
        "vid_noaudio_real_mead_m030_256.mp4",  # no audio stream
        "vid_real_man_suit_700_vfr.mp4",  # variable frame rate
        "vid_real_hdtf_short_2s_2997.mp4",  # 29.97 fps, 2.1 s
    ]
    paths = [real_file(n) for n in names]
    results = small_scorer.score_many(paths)
    assert [r.path for r in results] == [str(p) for p in paths]
    for r in results:
        assert_scored(r, 2)
    assert any("no audio stream" in w for w in results[1].warnings)
    for i in (0, 2, 3):
        assert not results[i].warnings, results[i].warnings
    assert results[3].seconds == [0, 1]
    assert len({round(r.mos, 6) for r in results}) == 4  # different files, different scores


# -- thqa score (in-process) ----------------------------------------------------------------------------------------
@pytest.fixture()
def cli_scorer(monkeypatch, small_scorer):
    """Make `thqa score --random-init` use the session's small scorer (no rebuild); records the arguments."""
    import thqa.scoring.scorer

    calls = []

    def fake(checkpoint=None, **kwargs):
        calls.append((checkpoint, kwargs))
        # the model the CLI worked out once for --resume's check (thqa.scoring.scorer.scoring_model), not loaded again
        assert isinstance(checkpoint, thqa.scoring.scorer.ScoringModel) and checkpoint.untrained and kwargs["random_init"] is True
        return small_scorer

    monkeypatch.setattr(thqa.scoring.scorer, "Scorer", fake)
    return calls


def _csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_cli_score_csv_with_bad_files(cli_scorer, capsys, good_video, good_video_2s, bad_files):
    missing, text = bad_files["missing"][0], bad_files["text"][0]
    files = [str(good_video), str(missing), str(good_video_2s), str(text)]
    rc = cli.main(["score", "--random-init", "--device", "cpu", "--precision", "fp32", *files])
    out, err = capsys.readouterr()
    assert rc == 1
    assert cli_scorer[0][1]["device"] == "cpu" and cli_scorer[0][1]["seed"] is None and cli_scorer[0][1]["precision"] == "fp32"
    assert out.splitlines()[0] == "path,mos,clip_scores,error,weights,untrained,mos_low,mos_high,precision,model"
    rows = _csv(out)
    assert [r["path"] for r in rows] == files
    for r in (rows[0], rows[2]):
        clips = [float(x) for x in r["clip_scores"].split()]
        assert len(clips) == 2 and r["error"] == ""
        assert float(r["mos"]) == pytest.approx(np.mean(clips), abs=2e-6)
        assert r["weights"] == "random-init" and r["untrained"] == "true" and r["precision"] == "fp32"
    for r, p in ((rows[1], missing), (rows[3], text)):
        assert r["mos"] == "" and r["clip_scores"] == "" and str(p) in r["error"]
    # stderr: the progress bar and one line per failed file; stdout holds only the table
    assert "scoring" in err and "4/4" in err
    assert f"thqa score: {missing}: no such file" in err
    assert str(text) in err
    assert "Traceback" not in err


def test_cli_score_json_output_file(cli_scorer, capsys, tmp_path, good_video, bad_files):
    out_path = tmp_path / "res" / "scores.json"
    zero = bad_files["zero_bytes"][0]
    rc = cli.main(["score", "--random-init", str(good_video), str(zero), "-o", str(out_path)])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    rows = json.loads(out_path.read_text())
    assert [r["path"] for r in rows] == [str(good_video), str(zero)]
    for r in rows:
        assert {"path", "mos", "clip_scores", "error", "weights", "untrained"} <= set(r)
    assert rows[0]["error"] is None and len(rows[0]["clip_scores"]) == 2
    assert rows[0]["mos"] == pytest.approx(np.mean(rows[0]["clip_scores"]), abs=1e-6)
    assert rows[0]["weights"] == "random-init" and rows[0]["untrained"] is True
    assert rows[1]["mos"] is None and rows[1]["clip_scores"] is None and str(zero) in rows[1]["error"]
    assert "1 scored, 1 failed" in err
    assert not list(out_path.parent.glob("*.partial"))


def test_cli_score_json_on_stdout_all_good_exits_0(cli_scorer, capsys, good_video):
    rc = cli.main(["score", "--random-init", "--format", "json", str(good_video)])
    out, err = capsys.readouterr()
    assert rc == 0
    rows = json.loads(out)
    assert len(rows) == 1 and rows[0]["error"] is None and math.isfinite(rows[0]["mos"])


def test_cli_score_without_model_exits_2_with_the_plain_message(capsys, good_video, monkeypatch):
    import thqa.scoring.scorer

    monkeypatch.setattr(thqa.scoring.scorer, "Scorer", lambda *a, **k: pytest.fail("no scorer may be built"))
    rc = cli.main(["score", str(good_video)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert "there is no trained model" in err and "--random-init" in err
    assert "Traceback" not in err


def test_cli_score_setup_errors_exit_2(capsys, tmp_path, good_video, no_network_weights):
    # a checkpoint that does not exist
    rc = cli.main(["score", "--checkpoint", str(tmp_path / "none.safetensors"), str(good_video)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and "none.safetensors" in err and "not found" in err
    # --offline with no weights anywhere: the helpful weights error, fast
    from thqa.models.checkpoint import save_checkpoint
    from thqa.models.fusion import FusionModel

    pretrained = {n: {"name": n, "source": "file", "sha256": "0" * 64, "path": f"/w/{n}", "seed": None} for n in ("swin_t", "slowfast_r50")}
    ck = save_checkpoint(tmp_path / "ck.safetensors", FusionModel(), settings=ExtractionSettings(), backbones=pretrained)
    rc = cli.main(["score", "--offline", "--checkpoint", str(ck), str(good_video)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert "--random-init" in err and ("THQA_SWIN_WEIGHTS" in err or "THQA_SLOWFAST_WEIGHTS" in err)
    assert "Traceback" not in err


def test_cli_usage_errors(capsys):
    assert cli.main([]) == 2
    with pytest.raises(SystemExit) as ei:
        cli.main(["score"])  # no files
    assert ei.value.code == 2


# -- the installed console script -------------------------------------------------------------------------------------
def test_console_script_scores_a_file(good_video, tmp_path, backbones, small_settings):
    """The installed `thqa` entry point, in its own process: --checkpoint (a fusion checkpoint trained on the
    random-init backbones, with the small extraction settings, so the run is cheap) and --random-init."""
    from thqa.models.checkpoint import save_checkpoint
    from thqa.models.fusion import FusionModel

    exe = Path(sys.executable).with_name("thqa")
    if not exe.is_file():
        found = shutil.which("thqa")
        if not found:
            pytest.skip("the thqa console script is not installed")
        exe = Path(found)
    ck = save_checkpoint(tmp_path / "ck.safetensors", FusionModel(), settings=small_settings, backbones=backbones.infos)
    env = dict(os.environ, THQA_OFFLINE="1")
    proc = subprocess.run(
        [str(exe), "score", "--random-init", "--checkpoint", str(ck), "--device", "cpu", "--threads", "2", "--format", "json", str(good_video)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert len(rows) == 1 and rows[0]["path"] == str(good_video) and rows[0]["error"] is None
    clips = rows[0]["clip_scores"]
    assert len(clips) == 2 and math.isfinite(rows[0]["mos"])
    assert rows[0]["mos"] == pytest.approx(np.mean(clips), abs=1e-6)
    assert rows[0]["untrained"] is False and rows[0]["weights"] == "random-init"
    assert "Traceback" not in proc.stderr


# -- one model, one way to make results, one definition of the columns ----------------------------------------------
def test_a_scoring_model_is_worked_out_once_and_keeps_its_options(small_scorer, small_settings):
    from types import SimpleNamespace

    from thqa.errors import ConfigError
    from thqa.scoring.scorer import default_precision, model_digest

    m = small_scorer.scoring_model
    assert m.untrained and m.precision == "fp32" and m.settings == small_settings and m.weights.seed == 3407
    assert m.digest("fp32") == small_scorer.model_digest == model_digest(None, random_init=True, seed=3407, precision="fp32",
                                                                           settings=small_settings)
    with pytest.raises(ConfigError, match="precision"):  # the model was made for fp32: refused before any backbone is built
        Scorer(m, precision="bf16")
    assert default_precision(None) == "auto" and default_precision(None, "bf16") == "bf16"
    assert default_precision(SimpleNamespace(scoring_precision="fp32")) == "fp32"  # a checkpoint trained on fp32 features


def test_ray_rows_become_results_the_way_the_local_scorer_makes_them(small_scorer):
    from thqa.engines.ray_engine import _result

    stamp = small_scorer.stamp
    meta = json.dumps({"seconds": [0, 1], "warnings": ["a.mp4: short audio"]})
    ok = _result(stamp, "a.mp4", {"status": "done", "mos": 3.25, "clip_scores": "[3.0, 3.5]", "meta": meta})
    assert ok == stamp.scored("a.mp4", 3.25, [3.0, 3.5], seconds=[0, 1], warnings=["a.mp4: short audio"])
    assert (ok.model, ok.precision, ok.weights, ok.coverage) == (small_scorer.model_digest, "fp32", "random-init", 0.9)
    assert ok.interval_note == small_scorer.interval_note
    nan = _result(stamp, "b.mp4", {"status": "done", "mos": float("nan"), "clip_scores": "[NaN, 1.0]", "meta": ""})
    assert nan.mos is None and nan.error_type == "THQAError" and nan.error == "b.mp4: the model produced a non-finite score"
    lost = _result(stamp, "c.mp4", None)
    failed = _result(stamp, "d.mp4", {"status": "failed", "error_type": "DecodeError", "error": "d.mp4: broken"})
    assert (lost.error, lost.error_type) == ("c.mp4: not scored", "THQAError")
    assert (failed.error_type, failed.error) == ("DecodeError", "d.mp4: broken")
    assert lost.model == failed.model == small_scorer.model_digest and failed.coverage is None


def test_a_new_score_column_is_one_entry():
    from thqa.scoring.columns import COLUMNS, Column, ScoreColumns, score_columns

    r = ScoreResult("=a.mp4", 3.5, [3.0, 4.0], seconds=[0, 1], model="0123456789abcdef", av_in_sync=False)
    base = score_columns()
    assert base.header() == ["path", "mos", "clip_scores", "error", "weights", "untrained", "mos_low", "mos_high", "precision", "model"]
    assert list(base.json_row(r)) == [c.name for c in COLUMNS]
    assert base.csv_row(r)[:3] == ["'=a.mp4", "3.500000", "3.000000 4.000000"]  # a formula is disarmed in CSV only
    assert base.json_row(r)["path"] == "=a.mp4"
    assert score_columns(sync=True).csv_row(r)[len(base.header()) + 1] == "false"  # av_in_sync
    extra = ScoreColumns((Column("seconds_scored", read=lambda res: len(res.seconds)),))
    assert extra.header()[-1] == "seconds_scored" and extra.csv_row(r)[-1] == "2" and extra.json_row(r)["seconds_scored"] == 2
    assert extra.csv_text([r]).splitlines()[0].endswith(",seconds_scored")
