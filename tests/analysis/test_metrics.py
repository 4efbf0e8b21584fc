"""Tests of thqa.analysis.metrics (challenge protocol, fits), thqa.data.predictions (challenge files) and thqa.analysis.plots."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from thqa.analysis import metrics
from thqa.errors import ConfigError, ManifestError, MediaFileNotFoundError, MetricError
from thqa.analysis.metrics import (
    evaluate,
    evaluate_files,
    fit_predictions,
    match_predictions,
    read_labels,
    read_predictions,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "thqa-ntire"


def _data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mos = rng.uniform(0.0, 5.0, n)
    pred = 0.3 * mos**1.5 + rng.normal(0.0, 0.6, n)
    return pred, mos


# ------------------------------------------------------------------------------------------- known answer
@pytest.fixture(scope="module")
def baseline_files() -> tuple[Path, Path]:
    pred, labels = SHARED / "simplevqa_baseline_val_predictions.txt", SHARED / "thqa_ntire_val.csv"
    if not (pred.is_file() and labels.is_file()):
        pytest.skip(f"THQA-NTIRE files not present under {SHARED}")
    return pred, labels


def test_baseline_known_answer_poly3(baseline_files: tuple[Path, Path]) -> None:
    result = evaluate_files(*baseline_files)
    assert result["n"] == 1714
    assert result["n_unmatched_predictions"] == 0 and result["n_unmatched_labels"] == 0
    assert round(result["srcc"], 4) == 0.7702
    assert round(result["plcc"], 4) == 0.8082
    assert round(result["main_score"], 4) == 0.7892


@pytest.mark.parametrize(("fit", "plcc"), [("none", 0.8065), ("logistic4", 0.8081)])
def test_baseline_known_answer_other_fits(baseline_files: tuple[Path, Path], fit: str, plcc: float) -> None:
    result = evaluate_files(*baseline_files, fit=fit)
    assert round(result["plcc"], 4) == plcc
    assert round(result["srcc"], 4) == 0.7702


def test_baseline_files_match_completely(baseline_files: tuple[Path, Path]) -> None:
    preds, labels = read_predictions(baseline_files[0]), read_labels(baseline_files[1])
    assert len(preds) == len(labels) == 1714  # the val CSV has CRLF and no final newline: last row still read
    names, p, m, report = match_predictions(preds, labels)
    assert report.n_matched == 1714 and not report.unmatched_labels and not report.unmatched_predictions
    assert names[-1] == list(labels)[-1]
    assert p.shape == m.shape == (1714,)


# ------------------------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_match_scipy(seed: int) -> None:
    pred, mos = _data(seed=seed)
    result = evaluate(pred, mos, fit="none")
    assert result["srcc"] == pytest.approx(stats.spearmanr(pred, mos).statistic, abs=1e-12)
    assert result["krcc"] == pytest.approx(stats.kendalltau(pred, mos).statistic, abs=1e-12)
    assert result["plcc"] == pytest.approx(stats.pearsonr(pred, mos).statistic, abs=1e-12)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((pred - mos) ** 2)), abs=1e-12)
    assert result["main_score"] == pytest.approx((abs(result["srcc"]) + abs(result["plcc"])) / 2)
    assert result["n"] == len(pred)
    assert set(result) == {"srcc", "plcc", "krcc", "rmse", "main_score", "n"}


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_poly3_matches_direct_numpy(offset: float) -> None:
    pred, mos = _data(seed=3)
    pred = pred + offset
    fitted_np = np.polyval(np.polyfit(pred, mos, 3), pred)
    fitted, curve = fit_predictions(pred, mos, fit="poly3")
    assert curve.kind == "poly3"
    np.testing.assert_allclose(fitted, fitted_np, atol=1e-8)
    np.testing.assert_allclose(curve(pred), fitted)
    result = evaluate(pred, mos, fit="poly3")
    assert result["plcc"] == pytest.approx(stats.pearsonr(fitted_np, mos).statistic, abs=1e-8)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((fitted_np - mos) ** 2)), abs=1e-8)
    assert result["srcc"] == pytest.approx(stats.spearmanr(pred, mos).statistic, abs=1e-12)


def test_logistic_recovers_known_curve() -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(-3.0, 9.0, 300)
    b1, b2, b3, b4 = 4.8, 0.4, 3.0, 1.2
    mos = (b1 - b2) / (1 + np.exp(-(x - b3) / abs(b4))) + b2
    fitted, curve = fit_predictions(x, mos, fit="logistic4")
    assert curve.kind == "logistic4"
    np.testing.assert_allclose(fitted, mos, atol=1e-5)
    assert evaluate(x, mos, fit="logistic4")["plcc"] > 0.999999
    noisy = mos + rng.normal(0.0, 0.05, x.size)
    result = evaluate(x, noisy, fit="logistic4")
    assert result["plcc"] > 0.99
    assert result["plcc"] > evaluate(x, noisy, fit="none")["plcc"]


def test_logistic_failure_falls_back_to_linear(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing_curve_fit(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Optimal parameters not found: maxfev reached")

    monkeypatch.setattr(metrics.optimize, "curve_fit", failing_curve_fit)
    pred, mos = _data(seed=4)
    with caplog.at_level(logging.WARNING, logger="thqa.analysis.metrics"):
        fitted, curve = fit_predictions(pred, mos, fit="logistic4")
        result = evaluate(pred, mos, fit="logistic4")
    assert curve.kind == "linear"
    np.testing.assert_allclose(fitted, np.polyval(np.polyfit(pred, mos, 1), pred), atol=1e-8)
    assert result["plcc"] == pytest.approx(abs(stats.pearsonr(pred, mos).statistic), abs=1e-10)
    assert "falling back to a linear fit" in caplog.text


def test_negative_correlation_uses_absolute_values() -> None:
    pred, mos = _data(seed=5)
    result = evaluate(-pred, mos, fit="none")
    assert result["srcc"] < 0 and result["plcc"] < 0
    assert result["main_score"] == pytest.approx((abs(result["srcc"]) + abs(result["plcc"])) / 2)
    assert result["main_score"] > 0


def test_accepts_lists_and_ints() -> None:
    result = evaluate([1, 2, 3, 4, 5, 6], [1.0, 2.5, 2.0, 4.0, 4.5, 6.0])
    assert 0 < result["main_score"] <= 1
    assert all(math.isfinite(v) for v in result.values())


@pytest.mark.parametrize(
    ("pred", "mos", "fit", "match"),
    [
        ([1, 2, 3, 4, 5], [1, 2, 3, 4], "none", "differ in length"),
        ([1, 2], [1, 2], "none", "at least 3 samples"),
        ([1, 2, 3, 4], [1, 2, 3, 5], "poly3", "at least 5 distinct"),
        ([1, 2, 3, 4, 4, 4], [1, 2, 3, 5, 4, 3], "poly3", "at least 5 distinct"),
        ([1, 2, 3, 4], [1, 2, 3, 5], "logistic4", "at least 5 distinct"),
        ([1, 2, float("nan"), 4, 5], [1, 2, 3, 4, 5], "none", "non-finite"),
        ([1, 2, 3, 4, 5], [1, 2, float("inf"), 4, 5], "poly3", "non-finite"),
        ([2, 2, 2, 2, 2], [1, 2, 3, 4, 5], "none", "predictions are equal"),
        ([1, 2, 3, 4, 5], [3, 3, 3, 3, 3], "poly3", "MOS values are equal"),
        ([[1, 2, 3]], [[1, 2, 3]], "none", "1-D"),
        (["a", "b", "c"], [1, 2, 3], "none", "must be numbers"),
        ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], "cubic", "unknown fit"),
    ],
)
def test_metric_errors(pred: list, mos: list, fit: str, match: str) -> None:
    with pytest.raises(MetricError, match=match):
        evaluate(pred, mos, fit=fit)  # type: ignore[arg-type]


def test_constant_mos_error_for_fit_predictions() -> None:
    with pytest.raises(MetricError, match="MOS values are equal"):
        fit_predictions([1, 2, 3, 4, 5, 6], [2, 2, 2, 2, 2, 2], fit="logistic4")


def test_metric_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        evaluate([1, 2], [1, 2, 3])


# --------------------------------------------------------------------------------------- challenge files
def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize(
    "text",
    [
        "a.mp4,1.5\nb.mp4,2.5\nc.mp4,3\n",
        "path,mos\na.mp4,1.5\nb.mp4,2.5\nc.mp4,3\n",
        "Video,Score\r\na.mp4,1.5\r\nb.mp4,2.5\r\nc.mp4,3",
        "video,score\n\na.mp4,1.5\nb.mp4, 2.5\n\nc.mp4,3e0\n\n",
        "\ufeffVIDEO,MOS\na.mp4,1.5\nb.mp4,2.5\nc.mp4,3\n",
        "Score,Video\n1.5,a.mp4\n2.5,b.mp4\n3,c.mp4\n",
        "a.mp4,1.5\ndir/b.mp4,2.5\nC:\\videos\\c.mp4,3\n",
    ],
)
def test_read_predictions_formats(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "p.csv", text)
    assert read_predictions(path) == {"a.mp4": 1.5, "b.mp4": 2.5, "c.mp4": 3.0}
    assert read_labels(path) == {"a.mp4": 1.5, "b.mp4": 2.5, "c.mp4": 3.0}


def test_read_predictions_thqa_score_csv(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(
        tmp_path / "scores.csv",
        "path,mos,clip_scores,error\n"
        '/v/a.mp4,1.5,"1.4,1.6",\n'
        "/v/bad.mp4,,,DecodeError: truncated\n"
        '/v/b.mp4,2.5,"2.5,2.5",\n',
    )
    with caplog.at_level(logging.WARNING, logger="thqa.data.predictions"):
        assert read_predictions(path) == {"a.mp4": 1.5, "b.mp4": 2.5}
    assert "1 row(s) with a non-empty error" in caplog.text


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a.mp4,1\nb.mp4,2\nx/a.mp4,3\n", r"p\.csv:3: duplicate file name 'a\.mp4' \(first on line 1\)"),
        ("Video,Score\na.mp4,1\nb.mp4,abc\n", r"p\.csv:3: score 'abc' of 'b\.mp4' is not a number"),
        ("Video,Score\na.mp4,1\nb.mp4,nan\n", r"p\.csv:3: score of 'b\.mp4' is 'nan' \(not finite\)"),
        ("a.mp4,1\nb.mp4,-inf\n", r"p\.csv:2: .*not finite"),
        ("a.mp4,nan\n", r"p\.csv:1: .*not finite"),
        ("a.mp4,1\nb.mp4\n", r"p\.csv:2: expected at least 2 columns"),
        ("a.mp4,1,2\n", r"p\.csv:1: expected 'name,score', got 3 columns"),
        ("file,quality\na.mp4,1\n", r"p\.csv:1: cannot read the header"),
        ("a.mp4,1\n,2\n", r"p\.csv:2: empty file name"),
        ("", r"no prediction rows"),
        ("\n\n", r"no prediction rows"),
        ("Video,Score\n", r"no prediction rows"),
    ],
)
def test_read_predictions_errors(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path / "p.csv", text)
    with pytest.raises(ManifestError, match=match):
        read_predictions(path)


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaFileNotFoundError):
        read_predictions(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError):
        read_labels(tmp_path / "nope.csv")


def test_match_predictions_partial(caplog: pytest.LogCaptureFixture) -> None:
    preds = {"a.mp4": 1.0, "b.mp4": 2.0, "extra.mp4": 9.0}
    labels = {"c.mp4": 3.5, "a.mp4": 1.5, "b.mp4": 2.5, "gone1.mp4": 1.0, "gone2.mp4": 1.0}
    with caplog.at_level(logging.WARNING, logger="thqa.data.predictions"):
        names, p, m, report = match_predictions(preds, labels)
    assert names == ["a.mp4", "b.mp4"]  # labels' order
    np.testing.assert_array_equal(p, [1.0, 2.0])
    np.testing.assert_array_equal(m, [1.5, 2.5])
    assert report.n_matched == 2
    assert report.unmatched_predictions == ["extra.mp4"]
    assert report.unmatched_labels == ["c.mp4", "gone1.mp4", "gone2.mp4"]
    assert "1 prediction(s) without label: extra.mp4" in caplog.text
    assert "3 label(s) without prediction" in caplog.text
    assert "+1" in report.summary(max_names=2)


def test_match_predictions_by_basename() -> None:
    names, p, m, report = match_predictions({"/data/x/a.mp4": 1.0}, {"a.mp4": 2.0})
    assert names == ["a.mp4"] and report.n_matched == 1
    with pytest.raises(ManifestError, match="share the file name"):
        match_predictions({"x/a.mp4": 1.0, "y/a.mp4": 2.0}, {"a.mp4": 2.0})


def test_match_predictions_nothing_matches() -> None:
    with pytest.raises(MetricError, match="no prediction matches"):
        match_predictions({"a.mp4": 1.0}, {"b.mp4": 1.0})


def test_evaluate_files_reports_unmatched(tmp_path: Path) -> None:
    pred, mos = _data(n=40, seed=9)
    names = [f"v{i}.mp4" for i in range(40)]
    _write(tmp_path / "pred.txt", "".join(f"out/{n},{p}\n" for n, p in zip(names, pred)) + "zz.mp4,1\n")
    _write(tmp_path / "labels.csv", "Video,Score\n" + "".join(f"{n},{m}\n" for n, m in zip(names, mos)) + "yy.mp4,2\n")
    result = evaluate_files(tmp_path / "pred.txt", tmp_path / "labels.csv", fit="poly3")
    assert result["n"] == 40
    assert result["n_unmatched_predictions"] == 1 and result["n_unmatched_labels"] == 1
    assert result["main_score"] == pytest.approx(evaluate(pred, mos)["main_score"])


# -------------------------------------------------------------------------------------------------- plots
@pytest.mark.parametrize("fit", ["poly3", "logistic4", "none"])
def test_scatter_plot_writes_png(tmp_path: Path, fit: str) -> None:
    import matplotlib

    from thqa.analysis.plots import scatter_plot

    backend = matplotlib.get_backend()
    pred, mos = _data(n=80, seed=11)
    out = scatter_plot(pred, mos, tmp_path / "sub" / "scatter.png", fit=fit, title="baseline")  # type: ignore[arg-type]
    assert out == tmp_path / "sub" / "scatter.png"
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert sorted(p.name for p in out.parent.iterdir()) == ["scatter.png"]  # no temp file left
    assert matplotlib.get_backend() == backend  # no global state changed


def test_scatter_plot_other_format_and_errors(tmp_path: Path) -> None:
    from thqa.analysis.plots import scatter_plot

    pred, mos = _data(n=30, seed=12)
    assert scatter_plot(pred, mos, tmp_path / "s.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(ConfigError, match="cannot write"):
        scatter_plot(pred, mos, tmp_path / "s.xyz")
    with pytest.raises(MetricError):
        scatter_plot(pred[:3], mos[:3], tmp_path / "t.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.svg"]


def test_thqa_plots_imports_matplotlib_lazily() -> None:
    import ast

    import thqa.analysis.plots

    tree = ast.parse(Path(thqa.analysis.plots.__file__).read_text())
    top_level = [
        alias.name if isinstance(node, ast.Import) else node.module
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [None])
    ]
    assert top_level and not any(str(m).startswith("matplotlib") for m in top_level)
