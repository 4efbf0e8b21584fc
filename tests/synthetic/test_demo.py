"""`thqa demo`: the tiny demo end to end offline (report files and numbers), and its refusals."""
from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import media
from thqa.cli import app as cli
from test_cli_experiments import use_session_backbones


@pytest.mark.slow
def test_tiny_demo_offline_writes_a_complete_report(tmp_path, backbones, monkeypatch, no_network_weights, capsys) -> None:
    """`thqa demo --tiny --offline` with no weight files anywhere: the demo says it falls back to random-init backbones
    and runs everything (5 self-made heads x 5 versions, cache, training, held-out test, one file scored, report).

    The session's random-init backbones stand in for the ones the demo builds (same seed, same weights) and SlowFast
    gets 8-frame 64 px clips instead of 32 frames at 224 px, to keep the test around half a minute on 2 CPU cores.
    """
    use_session_backbones(monkeypatch, backbones, small_clips=True)
    out = tmp_path / "demo"
    rc = cli.main(["demo", "--tiny", "--out", str(out), "--offline", "--precision", "fp32"])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr[-3000:]
    assert "Pretrained backbone weights are not available here" in stderr
    for step in range(1, 6):
        assert f"thqa demo: [{step}/5]" in stderr
    m = re.search(r"demo: 25 videos, held-out SRCC (\S+) PLCC (\S+) main (\S+) \(random-init backbones\), \d+ s; report (\S+)", stdout)
    assert m, stdout
    assert all(math.isfinite(float(x)) for x in m.groups()[:3])
    assert Path(m.group(4)) == out / "report.md"

    for name in ("report.md", "plot.png", "scores.csv", "corpus.csv", "metrics.json", "run/best.safetensors", "run/metrics.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not (out / "failures.csv").exists()
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    doc = json.loads((out / "metrics.json").read_text())
    assert doc["weights"] == "random-init" and doc["n_videos"] == 25 and doc["n_failed"] == 0
    assert doc["n_train"] + doc["n_val"] + doc["n_test"] == 25 and doc["n_test"] == 10 and doc["n_val"] >= 5
    for k in ("srcc", "plcc", "krcc", "rmse", "main_score"):
        assert math.isfinite(doc["metrics"][k]), k
        assert math.isfinite(doc["val"][k]), k
    assert doc["metrics"]["n"] == doc["n_test"]
    assert math.isfinite(doc["scored_mos"]) and len(doc["scored_clip_scores"]) == 1
    assert all(math.isfinite(c) for c in doc["scored_clip_scores"])
    assert 1 <= doc["best_epoch"] <= 8
    assert doc["backbones"]["swin_t"]["source"] == "random-init"

    with open(out / "corpus.csv", newline="") as f:
        corpus = list(csv.DictReader(f))
    assert len(corpus) == 25 and {r["kind"] for r in corpus} == {"original", "compression", "blur", "audio_noise"}
    # paths relative to the manifest's folder, as manifests resolve them (issue 25.2)
    assert all(not Path(r["path"]).is_absolute() and (out / r["path"]).is_file() for r in corpus)
    with open(out / "scores.csv", newline="") as f:
        scores = list(csv.DictReader(f))
    assert len(scores) == doc["n_test"]
    pred = np.array([float(r["prediction"]) for r in scores])
    assert np.isfinite(pred).all() and np.isfinite([float(r["pseudo_mos"]) for r in scores]).all()
    test_paths = {r["path"] for r in scores}
    assert doc["scored_file"] in test_paths

    report = (out / "report.md").read_text()
    assert report.startswith("# thqa demo report")
    assert "random-init" in report and "not people's opinions" in report and "![prediction against pseudo-MOS](plot.png)" in report
    assert f"| SRCC | {doc['metrics']['srcc']:.4f} |" in report
    assert f"| main score (\\|SRCC\\| + \\|PLCC\\|) / 2 | {doc['metrics']['main_score']:.4f} |" in report
    assert f"| videos | {doc['n_test']} |" in report
    assert not re.search(r"\b(nan|inf)\b", report, flags=re.IGNORECASE)
    # prediction intervals: calibrated on the validation videos, measured on the held-out ones; 90% and 95% need
    # more validation videos than the tiny demo has, and the report says so
    cov = {r["nominal"]: r for r in doc["interval_coverage"]}
    assert cov[0.8]["n"] == doc["n_test"] and cov[0.8]["n_calibration"] == doc["n_val"]
    # each held-out video against its own interval (clipped to the training labels' range, so not all of one width)
    from thqa.models.checkpoint import load_checkpoint
    from thqa.scoring.scorer import calibration_of

    calibration, _ = calibration_of(load_checkpoint(out / "run" / "best.safetensors"))
    intervals = [calibration.interval(float(p), 0.8) for p in pred]
    measured = np.mean([iv.low <= float(r["pseudo_mos"]) <= iv.high for iv, r in zip(intervals, scores)])
    assert cov[0.8]["measured"] == pytest.approx(measured, abs=1 / doc["n_test"] + 1e-9)  # scores.csv is rounded
    assert f"| 80% | {cov[0.8]['measured']:.0%} | {cov[0.8]['mean_width']:.3f} |" in report
    if doc["n_val"] < 9:
        assert cov[0.9]["measured"] is None and "needs at least 9 validation videos" in report

    # the report's next commands run as written: extract reuses every cached entry, evaluate needs no --random-init
    block = report.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    extract, evaluate, score = (line.split()[1:] for line in block)
    assert extract[0] == "extract" and "--no-frames" in extract and "--random-init" in extract
    assert score[0] == "score" and Path(score[-1]).is_file()
    assert cli.main(extract) == 0
    stdout, stderr = capsys.readouterr()
    assert "extract: 0 done, 25 reused, 0 failed" in stdout, stdout + stderr
    assert evaluate[0] == "evaluate" and "--random-init" not in evaluate
    assert cli.main(evaluate) == 0
    stdout, stderr = capsys.readouterr()
    assert "evaluate: backbones: random-init backbones (seed 3407)" in stderr and "main score" in stdout


def test_demo_refuses_a_non_empty_output_directory(tmp_path, capsys) -> None:
    out = tmp_path / "results"
    out.mkdir()
    keep = out / "keep.txt"
    keep.write_text("mine")
    assert cli.main(["demo", "--tiny", "--out", str(out), "--random-init"]) == 2
    err = capsys.readouterr().err
    assert f"{out}: exists and is not empty; choose another --out or pass --overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and keep.read_text() == "mine"
    a_file = tmp_path / "report.txt"
    a_file.write_text("x")
    assert cli.main(["demo", "--tiny", "--out", str(a_file), "--random-init"]) == 2
    assert a_file.read_text() == "x"


def test_demo_names_unusable_sources_before_building_backbones(tmp_path, good_video, monkeypatch, capsys) -> None:
    import thqa.features.pipeline

    def no_backbones(*a, **k):
        raise AssertionError("the demo built backbones before checking its sources")

    monkeypatch.setattr(thqa.features.pipeline, "Backbones", no_backbones)
    silent = media.write_video(tmp_path / "silent.mp4", seconds=1, size=(64, 64))  # no audio stream
    missing = tmp_path / "missing.mp4"
    rc = cli.main(["demo", "--out", str(tmp_path / "demo"), "--random-init", "--precision", "fp32", "--source", str(missing), str(silent), str(good_video)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "the demo needs at least 5 usable sources" in err and "1 of 3 given are usable" in err
    assert str(missing) in err and "silent.mp4: has no audio stream" in err
    assert "skipping source" in err  # each bad source is also reported as it is found


def test_demo_stopped_by_bad_sources_leaves_an_output_directory_a_rerun_accepts(tmp_path, capsys) -> None:
    """A demo that stops before doing anything (no usable source) should not leave --out non-empty: otherwise the
    corrected rerun is refused with 'exists and is not empty' although nothing of value is there."""
    out = tmp_path / "demo"
    missing = [str(tmp_path / f"missing{i}.mp4") for i in range(5)]
    assert cli.main(["demo", "--out", str(out), "--random-init", "--source", *missing]) == 2
    capsys.readouterr()
    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else []
    assert leftovers == [], f"the failed demo left {leftovers} in {out}"
