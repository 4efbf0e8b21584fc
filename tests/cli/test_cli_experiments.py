"""The experiment commands of the CLI: `thqa extract`, `thqa train`, `thqa evaluate` (prediction files and
checkpoints), their messages on stderr, outputs and exit codes.

Most tests call ``thqa.cli.app.main`` in-process with :func:`use_session_backbones`, which hands the CLI the session's
random-init backbones (the same seeded weights ``--random-init`` builds, so the same cache keys and checkpoint
checks) instead of building them again, and - where asked - test-sized SlowFast clips.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import media
from thqa.cli import app as cli
from thqa.features.pipeline import Backbones as _RealBackbones
from thqa.features.pipeline import ExtractionSettings as _RealSettings
from thqa.features.pipeline import precision_for
from thqa.features.weights import WeightsOptions
from test_train import talking_head_corpus

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
NTIRE = SHARED / "thqa-ntire"
#: SlowFast clips of 8 frames at 64 px (what the shared corpus was extracted with)
SMALL_CLIPS = dict(clip_frames=8, frame_size=64)


def use_session_backbones(monkeypatch: pytest.MonkeyPatch, backbones, *, small_clips: bool = False, swin_only_for_other_seeds: bool = False) -> None:
    """Make ``Backbones(...)`` in the CLI's code paths return the session's backbones when it asks for the same
    random-init weights; anything else is really built (pretrained weights, another seed). ``small_clips``: the CLI's
    ``ExtractionSettings(n_clips=N)`` get :data:`SMALL_CLIPS`. ``swin_only_for_other_seeds``: another seed builds only
    its Swin-T (enough for a weights check that fails on Swin-T first)."""
    import thqa.training.experiment
    import thqa.features.pipeline
    import thqa.training.recipes
    import thqa.scoring.scorer

    def make(weights=None, *, device="auto", spatial=True, temporal=True, batch_size=8, **kwargs):
        w = weights or WeightsOptions()
        same = w.random_init and w.seed == backbones.weights.seed and not (w.swin_weights or w.slowfast_weights)
        if same and spatial and temporal:
            # the session's backbones run in fp32: a command that would run another precision here (e.g. "auto" on a
            # CPU with bf16 in hardware, or under $THQA_CPU_FLAGS) must be a test that says --precision fp32
            wanted = precision_for(device, kwargs.get("precision") or "auto")
            assert wanted == backbones.precision, f"the command asks for {wanted} backbones: the test must say --precision {backbones.precision}"
            return backbones
        if w.random_init and not same and swin_only_for_other_seeds:
            temporal = False
        return _RealBackbones(weights, device=device, spatial=spatial, temporal=temporal, batch_size=batch_size, **kwargs)

    for mod in (thqa.features.pipeline, thqa.training.experiment, thqa.scoring.scorer):
        monkeypatch.setattr(mod, "Backbones", make)
    if small_clips:
        for mod in (thqa.features.pipeline, thqa.training.recipes):  # recipes.resolve builds the settings of extract and train
            monkeypatch.setattr(mod, "ExtractionSettings", functools.partial(_RealSettings, **SMALL_CLIPS))


def _run(argv: list[str]) -> tuple[int, str, str]:
    """cli.main(argv) with its stdout and stderr captured (for module-scoped fixtures, where capsys is unavailable)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _table(stdout: str) -> dict[str, float]:
    """The metrics table printed by `thqa evaluate` -> {label: value} (up to the blank line before the intervals'
    coverage, which follows for a checkpoint with calibration data)."""
    rows = {}
    for line in stdout.strip().split("\n\n")[0].splitlines()[1:]:
        label, value = line.rsplit(None, 1)
        rows[label.strip()] = float(value)
    return rows


def _write_manifest(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ---------------------------------------------------------------------------------------------------------------
# thqa train on a manifest with bad rows (the run shared by the evaluate --checkpoint tests); the tests that use it are
# marked slow because the first of them builds the shared talking-head corpus (see test_train.talking_head_corpus)


@pytest.fixture(scope="module")
def cli_train(tmp_path_factory, backbones):
    corpus = talking_head_corpus(tmp_path_factory, backbones)
    d = tmp_path_factory.mktemp("cli-train")
    rows = [[str(s.path), f"{s.mos:.6f}", s.group, "ok"] for s in corpus.samples]
    rows.insert(3, [str(d / "gone.mp4"), "3.0", "head0", "deleted"])  # line 5
    rows.insert(6, [str(corpus.samples[0].path), "4.5", "head0", "again"])  # line 8: same file as line 2
    rows.insert(9, [str(d / "nan.mp4"), "nan", "head9", "unrated"])  # line 11
    manifest = _write_manifest(d / "manifest.csv", ["path", "mos", "group", "notes"], rows)
    records = _Records()
    logging.getLogger("thqa").addHandler(records)
    try:
        with pytest.MonkeyPatch.context() as mp:
            use_session_backbones(mp, backbones, small_clips=True)
            rc, out, err = _run(
                ["train", str(manifest), "--cache-dir", str(corpus.cache_dir), "--out", str(d / "run"), "--random-init", "--precision", "fp32",
                 "--clips", "1", "--epochs", "3", "--batch-size", "4", "--lr", "1e-3", "--loss", "plcc+rank"]
            )
    finally:
        logging.getLogger("thqa").removeHandler(records)
    return SimpleNamespace(rc=rc, out=out, err=err, logs=records.messages, run=d / "run", manifest=manifest, corpus=corpus, dir=d)


@pytest.mark.slow
def test_train_reports_skipped_manifest_rows_and_trains_on_the_rest(cli_train) -> None:
    assert cli_train.rc == 0, cli_train.err
    err = cli_train.err
    assert "skipped 3 row(s)" in err
    for reason in ("1 missing_file", "1 duplicate", "1 bad_mos"):
        assert reason in err
    assert "line 5: " in err and "gone.mp4: missing_file" in err
    assert "line 8: " in err and "duplicate same file as line 2" in err
    assert "line 11: " in err and "bad_mos 'nan' is not finite" in err
    assert any("ignoring unknown column(s) 'notes'" in m for m in cli_train.logs)
    assert "train: 24 training and 8 validation videos (6 and 2 content groups)" in err
    assert cli_train.out == ""  # every message on stderr, the best-epoch line too (issue 25.7)
    line = next(x for x in err.splitlines() if x.startswith("train: best epoch "))
    assert str(cli_train.run / "best.safetensors") in line
    for name in ("best.safetensors", "last.safetensors", "resume.pt", "config.json", "metrics.csv", "metrics.json"):
        assert (cli_train.run / name).is_file(), name
    cfg = json.loads((cli_train.run / "config.json").read_text())
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["loss"] == "plcc+rank" and cfg["extraction"]["n_clips"] == 1


def test_train_command_prints_skips_and_log_warnings_on_real_stderr(tmp_path, good_video) -> None:
    """In a real process (logging set up by the CLI) the unknown-column warning reaches stderr too; a manifest whose
    usable rows form one content group stops with exit 2 before any backbone is built."""
    manifest = _write_manifest(
        tmp_path / "m.csv", ["path", "mos", "comment"],
        [[str(good_video), "3.0", "x"], [str(good_video), "3.5", "dup"], [str(tmp_path / "nope.mp4"), "2.0", ""], [str(tmp_path / "n.mp4"), "NaN", ""]],
    )
    r = subprocess.run(
        [sys.executable, "-m", "thqa.cli", "train", str(manifest), "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"), "--random-init"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "ignoring unknown column(s) 'comment'" in r.stderr
    assert "skipped 3 row(s)" in r.stderr and "1 duplicate" in r.stderr and "1 missing_file" in r.stderr and "1 bad_mos" in r.stderr
    assert "thqa train: error: all 1 samples are in one group" in r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------------------------
# thqa extract


def test_extract_reports_skips_failures_and_reuse(tmp_path, good_video, good_video_2s, backbones, monkeypatch, capsys) -> None:
    use_session_backbones(monkeypatch, backbones, small_clips=True)
    audio_only = media.write_audio_only(tmp_path / "speech.m4a", media.tone(300.0, 1.0))
    text = tmp_path / "notes.mp4"
    text.write_text("hello\n")
    manifest = _write_manifest(
        tmp_path / "m.csv", ["path", "mos", "camera"],
        [[str(good_video), "", "a"], [str(tmp_path / "missing.mp4"), "", ""], [str(audio_only), "", ""], [str(text), "", ""],
         [str(good_video_2s), "4.0", ""], [str(good_video), "", "dup"], [str(tmp_path / "x.mp4"), "inf", ""]],
    )
    cache = tmp_path / "cache"
    argv = ["extract", str(manifest), "--cache-dir", str(cache), "--random-init", "--precision", "fp32", "--clips", "1", "--summary-json", str(tmp_path / "s.json")]
    assert cli.main(argv) == 1  # some files failed, the others were extracted
    out, err = capsys.readouterr()
    assert f"extract: 2 done, 0 reused, 3 failed (listed in {cache / 'failures.csv'})" in out
    assert "[random-init backbones]" in out
    assert "skipped 2 row(s)" in err and "1 duplicate" in err and "1 bad_mos" in err
    with open(cache / "failures.csv", newline="") as f:
        failed = {Path(r["path"]).name: r["error_type"] for r in csv.DictReader(f)}
    assert failed == {"missing.mp4": "MediaFileNotFoundError", "speech.m4a": "NoVideoStreamError", "notes.mp4": "DecodeError"}
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["done"], s["reused"], s["failed"]) == (2, 0, 3) and s["cache_bytes"] > 0
    assert s["backbones"]["swin_t"]["sha256"] == backbones.infos["swin_t"]["sha256"]

    assert cli.main(argv + ["--no-frames"]) == 1
    out, _ = capsys.readouterr()
    assert "extract: 0 done, 2 reused, 3 failed" in out

    assert cli.main(argv + ["--failures", str(tmp_path / "f2.csv")]) == 1
    out, _ = capsys.readouterr()
    assert f"extract: 0 done, 2 reused, 3 failed (listed in {tmp_path / 'f2.csv'})" in out


# ---------------------------------------------------------------------------------------------------------------
# thqa evaluate --predictions / --labels


@pytest.fixture(scope="module")
def baseline_files() -> tuple[Path, Path]:
    preds, labels = NTIRE / "simplevqa_baseline_val_predictions.txt", NTIRE / "thqa_ntire_val.csv"
    if not (preds.is_file() and labels.is_file()):
        pytest.skip(f"THQA-NTIRE label files not available ({NTIRE})")
    return preds, labels


def test_evaluate_baseline_predictions(baseline_files, capsys) -> None:
    preds, labels = baseline_files
    assert cli.main(["evaluate", "--predictions", str(preds), "--labels", str(labels)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split() == ["metric", "value"]
    t = _table(out)
    assert f"{t['SRCC']:.4f}" == "0.7702"
    assert f"{t['PLCC']:.4f}" == "0.8082"
    assert f"{t['main score']:.4f}" == "0.7892"
    assert {"KRCC", "RMSE", "n"} <= t.keys() and t["n"] > 100
    assert "without label" not in err and "without prediction" not in err


def test_evaluate_json_and_plot(baseline_files, tmp_path, capsys) -> None:
    preds, labels = baseline_files
    fig = tmp_path / "plots" / "fig.png"
    assert cli.main(["evaluate", "--predictions", str(preds), "--labels", str(labels), "--json", "--plot", str(fig)]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)  # one JSON object, nothing else on stdout
    assert isinstance(doc, dict)
    assert round(doc["srcc"], 4) == 0.7702 and round(doc["plcc"], 4) == 0.8082 and round(doc["main_score"], 4) == 0.7892
    assert doc["fit"] == "poly3" and doc["n_unmatched_predictions"] == 0 and doc["n_unmatched_labels"] == 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {fig}" in err


def test_evaluate_reports_mismatched_names(tmp_path, capsys) -> None:
    mos = {f"v{i}.mp4": float(i) for i in range(1, 8)}
    preds = tmp_path / "p.txt"
    preds.write_text("".join(f"{n},{m * 0.5 + (0.3 if i % 2 else 0):.3f}\n" for i, (n, m) in enumerate(mos.items()) if n != "v7.mp4") + "extra.mp4,1.0\n")
    labels = tmp_path / "l.csv"
    labels.write_text("Video,Score\n" + "".join(f"{n},{m}\n" for n, m in mos.items()))
    assert cli.main(["evaluate", "--predictions", str(preds), "--labels", str(labels), "--json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["n"] == 6 and doc["n_unmatched_predictions"] == 1 and doc["n_unmatched_labels"] == 1
    assert "6 matched" in err and "1 prediction(s) without label: extra.mp4" in err and "1 label(s) without prediction: v7.mp4" in err


def test_evaluate_without_overlap_or_labels_exits_2(tmp_path, capsys) -> None:
    preds = tmp_path / "p.txt"
    preds.write_text("".join(f"a{i}.mp4,{i}\n" for i in range(6)))
    labels = tmp_path / "l.csv"
    labels.write_text("Video,Score\n" + "".join(f"b{i}.mp4,{i}\n" for i in range(6)))
    assert cli.main(["evaluate", "--predictions", str(preds), "--labels", str(labels)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "thqa evaluate: error: no prediction matches a label by file name" in err
    assert "6 prediction(s) without label" in err

    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "--predictions", str(preds)])
    assert exc.value.code == 2
    assert "--predictions needs --labels" in capsys.readouterr().err
    assert cli.main(["evaluate", "--predictions", str(tmp_path / "none.txt"), "--labels", str(labels)]) == 2
    assert "none.txt" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# thqa evaluate --checkpoint


@pytest.mark.slow
def test_evaluate_checkpoint_prints_table_and_writes_predictions(cli_train, backbones, monkeypatch, tmp_path, capsys) -> None:
    use_session_backbones(monkeypatch, backbones)
    ck = cli_train.run / "best.safetensors"
    out_csv = tmp_path / "preds" / "predictions.csv"
    corpus = cli_train.corpus
    argv = ["evaluate", "--checkpoint", str(ck), str(corpus.manifest), "--cache-dir", str(corpus.cache_dir), "--random-init"]
    assert cli.main(argv + ["--output", str(out_csv)]) == 0
    out, _ = capsys.readouterr()
    t = _table(out)
    assert t["n"] == 32 and all(math.isfinite(v) for v in t.values())
    assert -1 <= t["SRCC"] <= 1 and t["main score"] == pytest.approx((abs(t["SRCC"]) + abs(t["PLCC"])) / 2, abs=1e-4)
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(s.path) for s in corpus.samples]
    assert [float(r["mos"]) for r in rows] == pytest.approx([s.mos for s in corpus.samples], abs=1e-4)
    pred = np.array([float(r["prediction"]) for r in rows])
    assert np.isfinite(pred).all() and np.ptp(pred) > 0

    from thqa.training.experiment import evaluate_checkpoint

    ev = evaluate_checkpoint(ck, corpus.samples, cache_dir=corpus.cache_dir, backbones=backbones, progress=False)
    assert pred == pytest.approx(ev.predictions, abs=2e-6)  # the CLI writes 6 decimals
    assert ev.extraction.reused == 32 and ev.extraction.done == 0  # the checkpoint's settings found the cached features

    assert cli.main(argv + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n"] == 32 and doc["n_failed"] == 0 and doc["srcc"] == pytest.approx(t["SRCC"], abs=1e-4)
    # the checkpoint's prediction intervals, measured on these videos
    assert [r["nominal"] for r in doc["interval_coverage"]] == [0.8, 0.9, 0.95] and doc["interval_coverage"][0]["n"] == 32
    assert ev.coverage == doc["interval_coverage"] and "prediction intervals on these 32 videos" in out


@pytest.mark.slow
def test_evaluate_checkpoint_with_other_backbone_weights_exits_2(cli_train, backbones, monkeypatch, capsys) -> None:
    use_session_backbones(monkeypatch, backbones, swin_only_for_other_seeds=True)
    corpus = cli_train.corpus
    rc = cli.main(
        ["evaluate", "--checkpoint", str(cli_train.run / "best.safetensors"), str(corpus.manifest),
         "--cache-dir", str(corpus.cache_dir), "--random-init", "--seed", "3408"]
    )
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert "thqa evaluate: error:" in err and "best.safetensors: trained on random-init backbones (seed 3407), but random-init backbones with --seed 3408" in err


@pytest.mark.slow
def test_evaluate_checkpoint_with_a_failing_file_exits_1(cli_train, backbones, monkeypatch, tmp_path, capsys) -> None:
    """The CLI's documented exit code 1: some files failed, the others were processed."""
    use_session_backbones(monkeypatch, backbones)
    corpus = cli_train.corpus
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    manifest = _write_manifest(tmp_path / "m.csv", ["path", "mos"], [[str(s.path), s.mos] for s in corpus.samples[:8]] + [[str(bad), "3.0"]])
    rc = cli.main(
        ["evaluate", "--checkpoint", str(cli_train.run / "best.safetensors"), str(manifest), "--cache-dir", str(corpus.cache_dir), "--random-init", "--json"]
    )
    out, _ = capsys.readouterr()
    doc = json.loads(out)
    assert doc["n"] == 8 and doc["n_failed"] == 1
    assert rc == 1, "thqa evaluate exits 0 although a file of the manifest failed (cli docstring: 1 = some files failed)"
