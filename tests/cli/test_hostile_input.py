"""Hostile and careless input around the media: checkpoints from strangers, output paths, label files, option values.

Every case ends with one line on stderr naming the file or option and the cause, exit 2 for a setup problem and 1 when
some inputs failed, and - where the fault is in a file or an option - without building a backbone: the CLI runs
in-process (``cli.main(argv)``) with a stand-in that fails the test if any backbone is built. Also: file modes under
the umask, the cache's refusal of links and special files, manifests' content duplicates, `thqa score` killed and
resumed, and a seeded fuzz of checkpoint headers, option values and label files.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from thqa.cli import app as cli
from thqa.cli import extract as cli_extract
from thqa.cli import options as cli_options
from thqa.cli import outputs as cli_outputs
from thqa.cli import train as cli_train
from thqa.models.checkpoint import MAX_CLIPS, load_checkpoint, save_checkpoint
from thqa.analysis.conformal import METHOD as CALIBRATION_METHOD
from thqa.errors import CheckpointError, ManifestError, MediaFileNotFoundError
from thqa.models.fusion import FusionConfig, FusionModel
from thqa.features.pipeline import ExtractionSettings
from thqa.scoring.scorer import ScoreResult

#: a fusion model of a few thousand weights (the header is what these tests are about)
TINY = FusionConfig(audio_widths=(2, 2, 2), audio_embed=8, lstm_hidden=(4, 4), head_hidden=4)
BACKBONES = {
    "swin_t": {"name": "swin_t", "source": "random-init", "sha256": "a" * 64, "path": None, "seed": 3407},
    "slowfast_r50": {"name": "slowfast_r50", "source": "random-init", "sha256": "b" * 64, "path": None, "seed": 3407},
}


# -- helpers --------------------------------------------------------------------------------------------------------
def run(argv: list[str], env: dict | None = None) -> tuple[int, str, str]:
    """cli.main(argv) in-process: (exit code, stdout, stderr); argparse's SystemExit becomes its code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _env(env or {}):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def _env(values: dict):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def one_error(err: str, command: str) -> str:
    """The single error line of a failed command (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if f"thqa {command}: error:" in line]
    assert len(lines) == 1, err
    return lines[0]


class NoBackbones:
    """Stands in for Backbones where the fault is in a file or an option: building one is a test failure."""

    built: list = []

    def __init__(self, *args, **kwargs):
        NoBackbones.built.append(kwargs)
        raise AssertionError("a backbone was built although the input was bad")


@pytest.fixture()
def no_backbones(monkeypatch):
    import thqa.training.experiment
    import thqa.features.pipeline
    import thqa.scoring.scorer

    NoBackbones.built = []
    for mod in (thqa.features.pipeline, thqa.training.experiment, thqa.scoring.scorer):
        monkeypatch.setattr(mod, "Backbones", NoBackbones)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # --threads must not change the test process
    yield NoBackbones.built
    assert NoBackbones.built == [], "a backbone was built"


def fake_result(path, i: int = 0) -> ScoreResult:
    mos = 1.0 + (sum(os.fsencode(path)) % 300) / 100
    return ScoreResult(path=os.fsdecode(path), mos=mos, clip_scores=[mos, mos], seconds=[0, 1], weights="random-init", untrained=True)


class FakeScorer:
    """Stands in for Scorer in `thqa score`: one made-up score per file (from its name), no model; records the files."""

    asked: list = []
    fail: set = set()

    def __init__(self, checkpoint=None, **kwargs):
        self.kwargs = kwargs

    def iter_score(self, paths):
        for i, p in enumerate(paths):
            FakeScorer.asked.append(os.fsdecode(p))
            if os.fsdecode(p) in FakeScorer.fail:
                yield ScoreResult(path=os.fsdecode(p), mos=None, clip_scores=None, error=f"{os.fsdecode(p)}: no such file",
                                  error_type="MediaFileNotFoundError", weights="random-init", untrained=True)
            else:
                yield fake_result(p, i)


@pytest.fixture()
def fake_scorer(monkeypatch):
    import thqa.scoring.scorer

    FakeScorer.asked, FakeScorer.fail = [], set()
    monkeypatch.setattr(thqa.scoring.scorer, "Scorer", FakeScorer)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    return FakeScorer


@pytest.fixture(scope="module")
def base_ck(tmp_path_factory):
    """A valid tiny checkpoint: (its header, its tensors)."""
    from safetensors import safe_open

    p = save_checkpoint(tmp_path_factory.mktemp("ck") / "base.safetensors", FusionModel(TINY),
                        settings=ExtractionSettings(n_clips=2), backbones=BACKBONES)
    with safe_open(str(p), framework="pt") as f:
        return json.loads(f.metadata()["thqa"]), {k: f.get_tensor(k) for k in f.keys()}


def write_ck(path: Path, header, tensors: dict, *, raw: str | None = None) -> Path:
    save_file(tensors, str(path), metadata={"thqa": raw if raw is not None else json.dumps(header)})
    return path


# -- checkpoints from strangers: one line, exit 2, no backbone built ------------------------------------------------
def _mutate(header: dict, tensors: dict, case: str):
    h, t = copy.deepcopy(header), dict(tensors)
    if case == "list":
        h = [1, 2]
    elif case == "string":
        h = "thqa"
    elif case == "fusion_config_list":
        h["fusion_config"] = []
    elif case == "lstm_hidden_short":
        h["fusion_config"]["lstm_hidden"] = [1]
    elif case == "backbones_string":
        h["backbones"] = "x"
    elif case == "no_backbones":
        del h["backbones"]
    elif case == "no_slowfast_identity":
        del h["backbones"]["slowfast_r50"]
    elif case == "extraction_list":
        h["extraction"] = []
    elif case == "n_clips_1e9":
        h["extraction"]["n_clips"] = 1e9
    elif case == "n_clips_huge_int":
        h["extraction"]["n_clips"] = 10**9
    elif case == "head_hidden_1e12":
        h["fusion_config"]["head_hidden"] = 10**12
    elif case == "float16_weights":
        t = {k: v.half() if v.is_floating_point() else v for k, v in t.items()}
    elif case == "int64_weights":
        t = {k: v.long() for k, v in t.items()}
    elif case == "frames_size_clips_together":  # issue 21 item 7: each in range, 6.4 GB of clips per file together
        h["extraction"].update(clip_frames=256, frame_size=1024)
    elif case in ("nan_weights", "inf_weights"):
        k = sorted(t)[0]
        t[k] = t[k].clone()
        t[k].view(-1)[0] = float("nan") if case == "nan_weights" else float("inf")
    elif case == "unknown_recipe":  # issue 21 item 14
        h["meta"]["recipe"] = {"name": "turbo", "options": {}}
    elif case == "junk_tensors":
        t["junk.blob"] = torch.zeros(1000)
    elif case == "residuals_1e308":
        h["calibration"] = {"method": CALIBRATION_METHOD, "n": 20, "scores": [1e308] * 20, "prediction_range": [1.0, 5.0]}
    elif case == "spatial_do_not_fit":
        h["finetuned_spatial"] = True
        t["spatial.swin.head.weight"] = torch.zeros(3, 3)
    return h, t


CHECKPOINT_CASES = {
    "list": "the thqa header must be an object, got a list",
    "string": "the thqa header must be an object, got a string",
    "fusion_config_list": "fusion_config must be an object, got a list",
    "lstm_hidden_short": "fusion_config.lstm_hidden must be a list of 2 whole numbers",
    "backbones_string": "backbones must be an object, got a string",
    "no_backbones": "does not say which backbone weights it was trained on",
    "no_slowfast_identity": "backbones has no 'slowfast_r50' entry",
    "extraction_list": "extraction must be an object, got a list",
    "n_clips_1e9": "extraction.n_clips must be a whole number",
    "n_clips_huge_int": f"extraction.n_clips = 1000000000 is out of range (1 to {MAX_CLIPS})",
    "head_hidden_1e12": "fusion_config.head_hidden = 1000000000000 is out of range",
    "float16_weights": "float16 in the file, the model needs float32; not cast",
    "int64_weights": "int64 in the file, the model needs float32; not cast",
    "frames_size_clips_together": "extraction: n_clips, clip_frames and frame_size together (2 clips x 256 frames x 1024x1024 pixels) need 6.0 GiB per file",
    "nan_weights": "holds 1 NaN/Inf value(s)",
    "inf_weights": "holds 1 NaN/Inf value(s)",
    "unknown_recipe": 'meta.recipe.name "turbo" is not a recipe this thqa knows',
    "junk_tensors": "holds 1 tensor(s) that are not part of a thqa model (first: junk.blob)",
    "residuals_1e308": "calibration.scores[0] = 1e+308 is not a residual between 0 and",
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_bad_checkpoint_is_one_line_and_exit_2_before_any_backbone(case, base_ck, tmp_path, no_backbones):
    ck = write_ck(tmp_path / f"{case}.safetensors", *_mutate(*base_ck, case))
    rc, out, err = run(["score", "--random-init", "--checkpoint", str(ck), str(tmp_path / "v.mp4"), "-o", str(tmp_path / "o.csv")])
    line = one_error(err, "score")
    assert rc == 2 and out == ""
    assert str(ck) in line and CHECKPOINT_CASES[case] in line, line
    assert len(line) < 400 and "weights_only" not in line
    assert not (tmp_path / "o.csv").exists()


def test_evaluate_with_spatial_weights_that_do_not_fit_stops_before_extraction(base_ck, tmp_path, no_backbones):
    ck = write_ck(tmp_path / "ft.safetensors", *_mutate(*base_ck, "spatial_do_not_fit"))
    (tmp_path / "v.mp4").write_bytes(b"v")
    (tmp_path / "m.csv").write_text("path,mos\nv.mp4,3\n")
    rc, out, err = run(["evaluate", "--checkpoint", str(ck), str(tmp_path / "m.csv"), "--cache-dir", str(tmp_path / "c"), "--random-init"])
    line = one_error(err, "evaluate")
    assert rc == 2 and "fine-tuned spatial weights do not fit ECA + Swin-T" in line
    assert "1 unexpected (swin.head.weight)" in line and "missing" in line
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.safetensors"))


def test_a_weights_file_with_pickled_code_is_refused_in_one_line_without_advice_to_disable_safety(tmp_path):
    from thqa.errors import WeightsError
    from thqa.features.weights import load_state_file

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"w": torch.zeros(1), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError) as ei:
        load_state_file(tmp_path / "evil.pth")
    msg = str(ei.value)
    assert "\n" not in msg and "weights_only" not in msg.replace("weights-only", "") and "False" not in msg
    assert "unsupported GLOBAL" in msg and str(tmp_path / "evil.pth") in msg
    assert not marker.exists()


def test_state_mismatch_is_one_short_line():
    from thqa.features.weights import state_mismatch

    want = FusionModel(TINY).state_dict()
    got = {k: v for k, v in list(want.items())[3:]}
    got["extra.w"] = torch.zeros(1)
    got["head.1.weight"] = torch.zeros(9, 9)
    msg = state_mismatch(want, got)
    assert msg.startswith("3 missing (") and "1 unexpected (extra.w)" in msg
    assert "1 of another shape (e.g. head.1.weight: [9, 9] in the file, [4, 3080] in the model)" in msg
    assert "\n" not in msg and len(msg) < 400
    assert state_mismatch(want, dict(want)) is None


# -- output paths, checked before any work ------------------------------------------------------------------------
def test_output_paths_are_checked_before_scoring(tmp_path, fake_scorer):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    (tmp_path / "adir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    cases = ((afile / "out.csv", "is a file, not a folder"), (tmp_path / "adir", "is a folder; give a file name"),
             (tmp_path / "fifo", "a pipe that no process reads"))  # a FIFO is written through; nobody reads this one
    for out, words in cases:
        rc, stdout, err = run(["score", "--random-init", "x.mp4", "-o", str(out)])
        assert rc == 2 and stdout == ""
        assert words in one_error(err, "score") and f"--output {out}" in err
    assert fake_scorer.asked == []  # nothing scored, so nothing lost
    assert afile.read_text() == "mine\n"


def test_evaluate_plot_path_checked_before_metrics(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    preds, labels = tmp_path / "p.csv", tmp_path / "l.csv"
    preds.write_text("".join(f"v{i}.mp4,{i * 0.9 + (i % 2) * 0.3}\n" for i in range(8)))
    labels.write_text("Video,Score\n" + "".join(f"v{i}.mp4,{i}\n" for i in range(8)))
    for plot, words in ((afile / "x.png", "is a file, not a folder"), (tmp_path / "x.docx", "cannot write a 'docx' plot")):
        rc, out, err = run(["evaluate", "--predictions", str(preds), "--labels", str(labels), "--plot", str(plot)])
        assert rc == 2 and out == "" and words in one_error(err, "evaluate")
    rc, out, err = run(["evaluate", "--predictions", str(preds), "--labels", str(labels), "-o", str(tmp_path)])
    assert rc == 2 and "is a folder" in one_error(err, "evaluate")


def test_train_refuses_a_run_folder_whose_config_is_not_thqas_before_extracting(tmp_path, no_backbones):
    (tmp_path / "v.mp4").write_bytes(b"v")
    (tmp_path / "m.csv").write_text("path,mos\nv.mp4,3\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for text in ("[1, 2]", "{not json", '{"train": 5}', '"x"'):
        (run_dir / "config.json").write_text(text)
        rc, out, err = run(["train", str(tmp_path / "m.csv"), "--cache-dir", str(tmp_path / "c"), "--out", str(run_dir), "--random-init"])
        assert rc == 2 and "not a thqa run configuration" in one_error(err, "train") and str(run_dir / "config.json") in err
    rc, out, err = run(["train", str(tmp_path / "m.csv"), "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "m.csv"), "--random-init"])
    assert rc == 2 and "is a file, not a folder" in one_error(err, "train")


def test_failures_option_never_touches_a_user_file(tmp_path, no_backbones):
    important = tmp_path / "important.csv"
    important.write_text("name,amount\nrent,900\n")
    (tmp_path / "m.csv").write_text("path\nv.mp4\n")
    rc, out, err = run(["extract", str(tmp_path / "m.csv"), "--cache-dir", str(tmp_path / "c"), "--random-init", "--failures", str(important)])
    line = one_error(err, "extract")
    assert rc == 2 and "is not a failure list written by thqa" in line and str(important) in line
    assert important.read_text() == "name,amount\nrent,900\n"


def test_a_clean_extract_removes_only_its_own_failure_list(tmp_path):
    """The policy of --failures at the end of a run: a stale list thqa wrote goes, anything else stays."""
    from thqa.data.extract import write_failures

    ours = write_failures(tmp_path / "f.csv", [("a.mp4", "DecodeError", "a.mp4: broken")])
    assert cli_extract._is_failure_list(ours)
    theirs = tmp_path / "g.csv"
    theirs.write_text("path,error_type,error,notes\n")
    assert not cli_extract._is_failure_list(theirs) and not cli_extract._is_failure_list(tmp_path) and not cli_extract._is_failure_list(tmp_path / "none")


# -- option values -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, words",
    [
        (["score", "--random-init", "x.mp4", "--seed", "99999999999999999999999"], "argument --seed: must be from 0 to 4294967295"),
        (["train", "m.csv", "--cache-dir", "c", "--out", "r", "--seed", "-1"], "argument --seed: must be from 0"),
        (["score", "--random-init", "x.mp4", "--batch-size", "-7"], "argument --batch-size: must be from 1 to 4096"),
        (["score", "--random-init", "x.mp4", "--batch-size", "0"], "argument --batch-size: must be from 1"),
        (["score", "--random-init", "x.mp4", "--threads", "-7"], "argument --threads: must be from 1"),
        (["score", "--random-init", "x.mp4", "--ray-actors", "-1"], "argument --ray-actors: must be from 1"),
        (["score", "--random-init", "x.mp4", "--workers", "-1"], "argument --workers: must be from 0"),
        (["extract", "m.csv", "--cache-dir", "c", "--clips", "1000000000"], f"argument --clips: must be from 1 to {MAX_CLIPS}"),
        (["train", "m.csv", "--cache-dir", "c", "--out", "r", "--lr", "nan"], "argument --lr: must be a finite number"),
        (["train", "m.csv", "--cache-dir", "c", "--out", "r", "--val-fraction", "1"], "argument --val-fraction: must be a finite number in (0, 1)"),
        (["demo", "--epochs", "0"], "argument --epochs: must be from 1"),
        (["score", "--random-init", "x.mp4", "--resume"], "--resume needs --output"),
    ],
)
def test_option_values_out_of_range_exit_2_in_one_line(argv, words, no_backbones, fake_scorer):
    rc, out, err = run(argv)
    assert rc == 2 and out == "" and fake_scorer.asked == []
    line = one_error(err, argv[0])
    assert words in line


def test_checkpoint_and_cli_agree_on_the_clip_bound():
    assert cli_options.MAX_CLIPS == MAX_CLIPS


# -- the top-level handler ------------------------------------------------------------------------------------------
def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, fake_scorer):
    def boom(self, paths):
        raise KeyError("surprise")
        yield  # pragma: no cover

    monkeypatch.setattr(FakeScorer, "iter_score", boom)
    rc, out, err = run(["score", "--random-init", "x.mp4"])
    line = one_error(err, "score")
    assert rc == 2 and "unexpected KeyError: 'surprise'" in line and "--debug" in line
    rc, out, err = run(["score", "--random-init", "x.mp4", "--debug"])
    assert rc == 2 and "Traceback" in err and "KeyError" in err
    rc, out, err = run(["score", "--random-init", "x.mp4"], env={"THQA_DEBUG": "1"})
    assert rc == 2 and "Traceback" in err


def test_os_errors_name_the_file(monkeypatch, fake_scorer, tmp_path):
    def full(self, paths):
        raise OSError(28, "No space left on device", str(tmp_path / "out.csv"))
        yield  # pragma: no cover

    monkeypatch.setattr(FakeScorer, "iter_score", full)
    rc, out, err = run(["score", "--random-init", "x.mp4"])
    assert rc == 2 and one_error(err, "score").endswith(f"{tmp_path / 'out.csv'}: No space left on device")


def test_a_full_disk_while_writing_rows_names_the_output(monkeypatch, fake_scorer, tmp_path):
    def full(fd, data, pos):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    out = tmp_path / "s.json"
    rc, _, err = run(["score", "--random-init", "a.mp4", "-o", str(out)])
    assert rc == 2 and one_error(err, "score").endswith(f"{out}: No space left on device")
    assert json.loads(out.read_text()) == []  # what is there is still a valid (empty) table


# -- names and files that are not UTF-8 ----------------------------------------------------------------------------
def test_a_non_utf8_file_name_scores_into_valid_utf8_output(tmp_path, fake_scorer):
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.mp4")  # Latin-1 bytes: a surrogate escape in Python
    for out_name, fmt in (("o.csv", "csv"), ("o.json", "json")):
        out = tmp_path / out_name
        rc, stdout, err = run(["score", "--random-init", name, "-o", str(out)])
        assert rc == 0, err
        text = out.read_bytes().decode("utf-8")  # strict: valid UTF-8
        shown = str(tmp_path) + "/caf\\xe9.mp4"
        rows = list(csv.DictReader(io.StringIO(text))) if fmt == "csv" else json.loads(text)
        assert [r["path"] for r in rows] == [shown]
    rc, stdout, err = run(["score", "--random-init", name])  # stdout too
    assert rc == 0 and "caf\\xe9.mp4" in stdout


def test_non_utf8_manifests_and_label_files_are_one_line(tmp_path, no_backbones):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("path,mos\ncaf\xe9.mp4,3\n".encode("latin-1"))
    rc, out, err = run(["extract", str(bad), "--cache-dir", str(tmp_path / "c"), "--random-init"])
    line = one_error(err, "extract")
    assert rc == 2 and "not UTF-8 text" in line and "0xe9" in line and str(bad) in line
    labels = tmp_path / "l.csv"
    labels.write_text("Video,Score\na.mp4,1\n")
    for args in (["--predictions", str(bad), "--labels", str(labels)], ["--predictions", str(labels), "--labels", str(bad)]):
        rc, out, err = run(["evaluate", *args])
        assert rc == 2 and "not UTF-8 text" in one_error(err, "evaluate")


def test_manifest_rows_with_a_nul_byte_or_the_same_content_are_skipped(tmp_path):
    from thqa.data.manifest import read_manifest

    for name, data in (("a.mp4", b"A"), ("b.mp4", b"B"), ("copy_of_a.mp4", b"A")):
        (tmp_path / name).write_bytes(data)
    os.symlink(tmp_path / "b.mp4", tmp_path / "link_to_b.mp4")
    m = tmp_path / "m.csv"
    m.write_text("path,mos\na.mp4,1\nb.mp4,2\nbad\x00name.mp4,3\ncopy_of_a.mp4,4\nlink_to_b.mp4,5\n")
    man = read_manifest(m)
    assert [s.name for s in man] == ["a.mp4", "b.mp4"]
    assert [(r.line, r.reason, r.detail) for r in man.skipped] == [
        (4, "bad_path", "contains a NUL byte"),
        (5, "duplicate", "same content as line 2"),
        (6, "duplicate", "same content as line 3"),
    ]
    assert [s.name for s in read_manifest(m, content_duplicates=False)] == ["a.mp4", "b.mp4", "copy_of_a.mp4", "link_to_b.mp4"]


def test_train_leaves_copies_of_training_videos_out_of_a_validation_manifest(tmp_path):
    from thqa.data.manifest import Sample, shared_content

    for name, data in (("a.mp4", b"A"), ("b.mp4", b"B"), ("a_again.mp4", b"A")):
        (tmp_path / name).write_bytes(data)
    train = [Sample(tmp_path / "a.mp4", 1.0, "a", None, "a.mp4")]
    val = [Sample(tmp_path / n, 2.0, n, None, n) for n in ("b.mp4", "a_again.mp4", "missing.mp4")]
    assert [s.name for s in shared_content(train, val)] == ["a_again.mp4"]
    assert [s.name for s in cli_train._drop_copies(train, val)] == ["b.mp4", "missing.mp4"]


# -- file modes, temp files -------------------------------------------------------------------------------------------
@pytest.fixture()
def umask():
    def set_(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_
    os.umask(old)


def test_written_files_get_the_umask_mode(tmp_path, umask, fake_scorer):
    from thqa.utils.atomic import atomic_write_text
    from thqa.data.extract import write_failures

    ck = save_checkpoint(tmp_path / "ck.safetensors", FusionModel(TINY), settings=ExtractionSettings(), backbones=BACKBONES)
    rc, _, err = run(["score", "--random-init", "x.mp4", "-o", str(tmp_path / "s.json")])
    assert rc == 0, err
    files = [ck, tmp_path / "s.json", atomic_write_text(tmp_path / "t.txt", "x"), write_failures(tmp_path / "f.csv", [])]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    umask(0o027)
    assert stat.S_IMODE(atomic_write_text(tmp_path / "u.txt", "x").stat().st_mode) == 0o640
    assert not list(tmp_path.glob(".*.partial"))


def test_clean_partials_removes_only_dead_writers_temp_files(tmp_path):
    from thqa.utils.atomic import _HOST, atomic_path, clean_partials

    with atomic_path(tmp_path / "x.json") as tmp:  # the names atomic_path gives are the ones cleaned
        assert _HOST in tmp.name and clean_partials(tmp_path) == 0 and tmp.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".best.safetensors.{_HOST}-{dead}-0123456789abcdef.partial"
    live = tmp_path / f".metrics.json.{_HOST}-{os.getpid()}-0123456789abcdef.partial"
    elsewhere = tmp_path / f".last.safetensors.0badc0de-{dead}-0123456789abcdef.partial"  # another machine's writer
    other = tmp_path / ".notes.partial"
    for f in (stale, live, elsewhere, other):
        f.write_text("x")
    assert clean_partials(tmp_path) == 1
    assert not stale.exists() and live.exists() and elsewhere.exists() and other.exists()
    for f in (live, elsewhere):
        os.utime(f, (1, 1))  # old enough to be abandoned even though its pid lives / cannot be checked
    assert clean_partials(tmp_path) == 2 and not live.exists() and not elsewhere.exists() and other.exists()


# -- the cache refuses what it never writes ----------------------------------------------------------------------
def test_cache_sets_aside_links_fifos_and_huge_entries(tmp_path, monkeypatch):
    import thqa.data.cache as C

    cache = C.FeatureCache(tmp_path / "cache")
    key = "ab" * 32
    path = cache.put(key, {"a": np.arange(3, dtype=np.float32)}, {"m": 1})
    good = path.read_bytes()
    os.unlink(path)
    os.symlink("/dev/zero", path)
    assert cache.get(key) is None and Path(str(path) + ".corrupt").is_symlink()
    os.unlink(str(path) + ".corrupt")
    os.mkfifo(path)
    assert cache.get(key) is None  # returns at once: a FIFO is never opened for reading
    os.unlink(str(path) + ".corrupt")
    path.write_bytes(good)
    assert cache.get(key).meta == {"m": 1}
    import thqa.data.cache_format

    monkeypatch.setattr(thqa.data.cache_format, "MAX_ENTRY_BYTES", len(good) - 1)
    assert cache.get(key) is None and Path(str(path) + ".corrupt").is_file()
    assert cache.stats.corrupt == 3


# -- thqa score: rows as they come, killed, resumed ----------------------------------------------------------------
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import thqa.scoring.scorer
    from thqa.cli import app as cli
    from thqa.scoring.scorer import ScoreResult

    class Killed:
        def __init__(self, checkpoint=None, **kwargs):
            pass

        def iter_score(self, paths):
            for i, p in enumerate(paths):
                if i == int(os.environ["KILL_AT"]):
                    os.kill(os.getpid(), signal.SIGKILL)
                yield ScoreResult(path=p, mos=1.0 + i, clip_scores=[1.0 + i], seconds=[0], weights="random-init", untrained=True)

    thqa.scoring.scorer.Scorer = Killed
    sys.exit(cli.main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_killed_score_keeps_its_rows_and_resume_scores_only_the_rest(fmt, tmp_path, umask, fake_scorer):
    # the fake rows say fp32: so does every run (under "auto" a CPU with bf16 in hardware would refuse to resume them)
    files = [str(tmp_path / f"v{i:02d}.mp4") for i in range(20)]
    out = tmp_path / f"scores.{fmt}"
    if fmt == "csv":  # a real kill -9 after 10 files, in its own process
        script = tmp_path / "killer.py"
        script.write_text(KILLER)
        env = dict(os.environ, KILL_AT="10", PYTHONPATH=os.pathsep.join([str(Path(cli.__file__).parents[2]), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, str(script), "score", "--random-init", "--precision", "fp32", *files, "-o", str(out)], env=env, capture_output=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        rows = list(csv.DictReader(io.StringIO(out.read_text())))
    else:  # Ctrl-C after 10 files, in-process
        def interrupted(self, paths):
            for i, p in enumerate(paths):
                if i == 10:
                    raise KeyboardInterrupt
                yield fake_result(p)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(FakeScorer, "iter_score", interrupted)
            rc, _, err = run(["score", "--random-init", "--precision", "fp32", *files, "-o", str(out)])
        assert rc == 130 and "interrupted" in err
        rows = json.loads(out.read_text())  # a complete JSON array of the rows so far
    assert [r["path"] for r in rows] == files[:10]
    assert stat.S_IMODE(out.stat().st_mode) == 0o644

    fake_scorer.fail = {files[12]}
    rc, _, err = run(["score", "--random-init", "--precision", "fp32", *files, "-o", str(out), "--resume"])
    assert rc == 1, err  # one file failed
    assert fake_scorer.asked == files[10:]  # only the other 10 were scored
    assert "resuming" in err and "10 file(s) already scored, 10 to go" in err
    assert "9 scored, 1 failed (and 10 kept from the earlier run)" in err
    text = out.read_text()
    rows = list(csv.DictReader(io.StringIO(text))) if fmt == "csv" else json.loads(text)
    assert [r["path"] for r in rows] == files
    assert all(bool(r["error"]) == (r["path"] == files[12]) for r in rows)
    if fmt == "json":
        assert all(r["mos"] == pytest.approx(fake_result(r["path"]).mos) for r in rows[10:] if not r["error"])

    fake_scorer.asked, fake_scorer.fail = [], set()
    rc, _, err = run(["score", "--random-init", "--precision", "fp32", *files, "-o", str(out), "--resume"])
    assert rc == 0 and fake_scorer.asked == [files[12]]  # the failure is tried again, nothing else
    text = out.read_text()
    rows = list(csv.DictReader(io.StringIO(text))) if fmt == "csv" else json.loads(text)
    assert sorted(r["path"] for r in rows) == files and not any(r["error"] for r in rows)
    assert rows[-1]["path"] == files[12] and len(rows) == 20


def test_resume_refuses_a_file_of_another_model_or_another_table(tmp_path, fake_scorer):
    out = tmp_path / "s.csv"
    assert run(["score", "--random-init", "--precision", "fp32", "a.mp4", "-o", str(out)])[0] == 0
    rc, _, err = run(["score", "--checkpoint", "ck.safetensors", "a.mp4", "b.mp4", "-o", str(out), "--resume"])
    assert rc == 2 and "results of two models do not belong in one table" in one_error(err, "score")
    out.write_text("name,amount\nrent,900\n")
    rc, _, err = run(["score", "--random-init", "--precision", "fp32", "a.mp4", "-o", str(out), "--resume"])
    assert rc == 2 and "is not the header thqa writes" in one_error(err, "score")
    assert out.read_text() == "name,amount\nrent,900\n" and fake_scorer.asked == ["a.mp4"]
    torn = tmp_path / "t.csv"
    assert run(["score", "--random-init", "--precision", "fp32", "a.mp4", "b.mp4", "-o", str(torn)])[0] == 0
    torn.write_text(torn.read_text()[:-7])  # the last row cut short by a kill mid-write
    fake_scorer.asked = []
    assert run(["score", "--random-init", "--precision", "fp32", "a.mp4", "b.mp4", "-o", str(torn), "--resume"])[0] == 0
    assert fake_scorer.asked == ["b.mp4"] and [r["path"] for r in csv.DictReader(open(torn))] == ["a.mp4", "b.mp4"]


def test_rows_are_written_as_they_come(tmp_path, fake_scorer):
    """While file k is scored, the rows of files 0..k-1 are already in the output, readable."""
    out = tmp_path / "s.json"
    seen = []

    def watching(self, paths):
        for p in paths:
            seen.append(len(json.loads(out.read_text())) if out.exists() else None)
            yield fake_result(p)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FakeScorer, "iter_score", watching)
        assert run(["score", "--random-init", "a.mp4", "b.mp4", "c.mp4", "-o", str(out)])[0] == 0
    assert seen == [0, 1, 2]


# -- seeded fuzz: checkpoint headers, option values, label files ------------------------------------------------------
_POOL = [None, True, False, 0, -1, 1, 7, 2**70, 1e9, -0.5, 1e308, "", "x", "x" * 300, [], [1], [1, 2, 3], {}, {"a": 1}, [[]], {"sha256": 5}]


def _paths(obj, prefix=()):
    """Every key path of nested dicts (lists are leaves)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))


def _fuzz_header(rng: random.Random, base: dict):
    h = copy.deepcopy(base)
    kind = rng.choice(["replace", "replace", "replace", "delete", "add", "whole", "nan"])
    paths = list(_paths(h))
    if kind == "whole":
        return rng.choice(_POOL), None
    if kind == "nan":
        path = rng.choice(paths)
        return h, ("NaN", path)
    path = rng.choice(paths)
    parent = h
    for k in path[:-1]:
        parent = parent[k]
    if kind == "replace":
        parent[path[-1]] = copy.deepcopy(rng.choice(_POOL))
    elif kind == "delete":
        del parent[path[-1]]
    else:
        target = parent[path[-1]] if isinstance(parent[path[-1]], dict) else parent
        target[rng.choice(["extra", "n_clips", "zzz", "__proto__"])] = copy.deepcopy(rng.choice(_POOL))
    return h, None


def test_fuzz_checkpoint_headers(base_ck, tmp_path, no_backbones):
    """200 seeded mutations of a valid header (wrong shapes, out-of-range numbers, missing and extra keys, NaN, whole
    headers of every JSON type): load_checkpoint returns a checkpoint or raises CheckpointError with one line naming
    the file; every 10th runs through `thqa score` (exit 2, one line, no backbone built)."""
    header, tensors = base_ck
    rng = random.Random(20240612)
    loaded = 0
    for i in range(200):
        h, nan = _fuzz_header(rng, header)
        raw = None
        if nan:  # a NaN where a value was (valid for Python's json, not for JSON)
            parent = h
            for k in nan[1][:-1]:
                parent = parent[k]
            parent[nan[1][-1]] = "__NAN__"
            raw = json.dumps(h).replace('"__NAN__"', "NaN")
        ck = write_ck(tmp_path / f"f{i}.safetensors", h, tensors, raw=raw)
        try:
            load_checkpoint(ck)
            loaded += 1
            continue
        except CheckpointError as exc:
            msg = str(exc)
        assert "\n" not in msg and str(ck) in msg and len(msg) < 600, msg
        if i % 10 == 0:
            rc, out, err = run(["score", "--random-init", "--checkpoint", str(ck), "v.mp4"])
            assert rc == 2 and one_error(err, "score")
    assert 0 < loaded < 100  # the fuzz reaches valid headers (extra keys, meta) as well as broken ones


_OPTIONS = {  # option -> (subcommands, accepted(value) oracle)
    "--seed": (("score", "train"), lambda v: _int(v) is not None and 0 <= _int(v) <= 2**32 - 1),
    "--batch-size": (("score", "train"), lambda v: _int(v) is not None and 1 <= _int(v) <= 4096),
    "--threads": (("score", "train"), lambda v: _int(v) is not None and 1 <= _int(v) <= 1024),
    "--workers": (("score",), lambda v: v == "auto" or (_int(v) is not None and 0 <= _int(v) <= 1024)),
    "--ray-actors": (("score",), lambda v: _int(v) is not None and 1 <= _int(v) <= 4096),
    "--epochs": (("train",), lambda v: _int(v) is not None and 1 <= _int(v) <= 100000),
    "--clips": (("train",), lambda v: _int(v) is not None and 1 <= _int(v) <= MAX_CLIPS),
    "--lr": (("train",), lambda v: _float(v) is not None and 0 < _float(v) <= 10),
    "--val-fraction": (("train",), lambda v: _float(v) is not None and 0 < _float(v) < 1),
}
_VALUES = ["-7", "0", "1", "3", "auto", "1e9", "99999999999999999999999", "nan", "inf", "-inf", "abc", "", "0x10", "1.5",
           " 3 ", "0.2", "4294967296", "-0"]


def _int(v: str):
    try:
        return int(v.strip())
    except ValueError:
        return None


def _float(v: str):
    import math

    try:
        x = float(v)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def test_fuzz_option_values(tmp_path, no_backbones, fake_scorer):
    """Seeded option values against their bounds: an accepted value runs (score: exit 0; train: stops at the missing
    manifest, exit 2), a refused one is exit 2 with one line naming the option; never a traceback, never a clamp."""
    rng = random.Random(12)
    for _ in range(120):
        opt = rng.choice(sorted(_OPTIONS))
        commands, accepted = _OPTIONS[opt]
        command = rng.choice(commands)
        value = rng.choice(_VALUES)
        if command == "score":
            argv = ["score", "--random-init", "v.mp4", opt, value]
        else:
            argv = ["train", str(tmp_path / "none.csv"), "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"), opt, value]
        fake_scorer.asked = []
        rc, out, err = run(argv)
        assert rc in (0, 1, 2) and "Traceback" not in err
        if accepted(value):
            assert (rc, bool(fake_scorer.asked)) == ((0, True) if command == "score" else (2, False)), (argv, err)
            if command == "train":
                assert "manifest not found" in one_error(err, "train")
        else:
            assert rc == 2 and f"argument {opt}" in one_error(err, command), (argv, err)
            assert fake_scorer.asked == []


def _fuzz_label_file(rng: random.Random) -> bytes:
    """A name,score file of 7 videos with 0-3 random faults."""
    lines = [f"{n}.mp4,{rng.uniform(1, 5):.3f}" for n in "abcdefg"]
    if rng.random() < 0.5:
        lines.insert(0, rng.choice(["Video,Score", "path,mos,clip_scores,error", "video,score,notes"]))
    faults = [
        lambda: lines.insert(rng.randrange(len(lines) + 1), rng.choice(["Score,Video", "a,b", "Video,Video", "name,score,extra"])),
        lambda: lines.append(f"{rng.choice('abcdefg')}.mp4,{rng.choice(['nan', 'inf', 'high', '', '1e400', '-1'])}"),
        lambda: lines.append(rng.choice(["a.mp4,1", ",3", "x,y.mp4,2", '"q.mp4",2', "dir/a.mp4,4", "only_a_name"])),
        lambda: lines.__setitem__(slice(None), lines[: rng.randrange(len(lines) + 1)]),
        lambda: lines.append("\x00" * rng.randint(1, 5)),
        lambda: lines.append("caf\udcff.mp4,3"),  # an undecodable byte once encoded
    ]
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        rng.choice(faults)()
    data = ("\n".join(lines) + rng.choice(["", "\n", "\r\n"])).encode("utf-8", "surrogateescape")
    if rng.random() < 0.05:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
    return data


def test_fuzz_label_files(tmp_path):
    """Seeded prediction/label files (headers or none, bad numbers, duplicates, empty names, NUL and undecodable bytes):
    `thqa evaluate` ends with 0 or 2, a table or one error line, never a traceback; manifests read the same way raise
    only ManifestError or skip rows."""
    from thqa.data.manifest import read_manifest

    rng = random.Random(7)
    codes = set()
    for i in range(150):
        p, lab = tmp_path / f"p{i}.csv", tmp_path / f"l{i}.csv"
        p.write_bytes(_fuzz_label_file(rng))
        lab.write_bytes(_fuzz_label_file(rng))
        rc, out, err = run(["evaluate", "--predictions", str(p), "--labels", str(lab), "--json"])
        codes.add(rc)
        assert rc in (0, 2) and "Traceback" not in err, err
        if rc == 0:
            assert json.loads(out)["n"] >= 3
        else:
            assert out == "" and one_error(err, "evaluate")
        try:
            read_manifest(lab, check_files=False, require_mos=False)
        except (ManifestError, MediaFileNotFoundError) as exc:
            assert str(lab) in str(exc)
    assert codes == {0, 2}  # both outcomes occur: the fuzz is not all noise


# -- issue 21: processes and inputs ---------------------------------------------------------------------------------
def test_a_mos_beyond_any_scale_is_refused_by_row(tmp_path):
    """Item 11: 1e308 is finite but inf as float32 (train_loss inf every epoch); -2e4 is no rating either. The
    rows are skipped as bad_mos, named by line, and the others are kept."""
    from thqa.data.manifest import read_manifest

    (tmp_path / "m.csv").write_text("path,mos\na.mp4,3.5\nb.mp4,1e308\nc.mp4,-2e4\nd.mp4,100\n")
    m = read_manifest(tmp_path / "m.csv", check_files=False)
    assert [s.name for s in m.samples] == ["a.mp4", "d.mp4"]
    assert [(r.line, r.name, r.reason) for r in m.skipped] == [(3, "b.mp4", "bad_mos"), (4, "c.mp4", "bad_mos")]
    from thqa.data.manifest import MOS_LIMIT

    assert "beyond any rating scale" in m.skipped[0].detail and f"{MOS_LIMIT:g}" in m.skipped[0].detail
    assert np.isfinite(np.float32(MOS_LIMIT) ** 2)  # squared errors of in-range labels stay finite in float32


def test_header_strings_never_reach_the_terminal_raw(base_ck, tmp_path, monkeypatch, capsys):
    """Item 14: escape codes in a checkpoint's header strings (a recipe option's name) and in paths are printed
    escaped, in the provenance line and in error lines."""
    header, tensors = copy.deepcopy(base_ck[0]), base_ck[1]
    header["meta"]["recipe"] = {"name": "winner", "options": {"train.\x1b]0;pwned\x07\x1b[2J": 1}}
    ck = write_ck(tmp_path / "esc.safetensors", header, tensors)
    line = cli_outputs.provenance(load_checkpoint(ck))
    assert "\x1b" not in line and "\x07" not in line and "\\x1b]0;pwned\\x07\\x1b[2J" in line
    rc, out, err = run(["score", "--random-init", "--checkpoint", str(tmp_path / "x\x1b[31m.safetensors"), str(tmp_path / "v.mp4")])
    assert rc == 2 and "\x1b" not in err and "x\\x1b[31m.safetensors" in one_error(err, "score")


def test_a_changed_byte_in_cache_metadata_makes_the_entry_corrupt_never_reused_or_pruned_as_stale(tmp_path):
    """Item 13: features_version 2 -> 1 in an entry's metadata (one byte; the arrays' checksum still matches) was
    reused by extract and deleted as stale by `cache prune`; now the entry is corrupt: a miss, set aside, reported."""
    from thqa.data.cache import FeatureCache
    from thqa.data.extract import prune_cache

    cache = FeatureCache(tmp_path / "c")
    key = "ab" * 32
    path = cache.put(key, {"x": np.arange(4, dtype=np.float32)}, {"part": "features", "provenance": {"features_version": 2}})
    data = path.read_bytes()
    assert data.count(b'\\"features_version\\":2') == 1
    path.write_bytes(data.replace(b'\\"features_version\\":2', b'\\"features_version\\":1'))
    assert [(i.path, i.reason) for i in prune_cache(cache, dry_run=True)] == [(path, "unreadable or altered header (corrupt)")]
    assert cache.get(key) is None and cache.stats.corrupt == 1
    assert not path.exists() and [p for p, _ in cache.quarantined()] == [path.with_name(path.name + ".corrupt")]


def test_cache_entries_written_without_a_metadata_checksum_are_still_reused(tmp_path):
    """Item 13: entries written by thqa before the metadata checksum (its header had four fields) read as before."""
    import safetensors.numpy

    from thqa.data.cache import CACHE_FORMAT_VERSION, FeatureCache
    from thqa.data.cache_format import array_checksum as _array_checksum
    from thqa.data.hashing import canonical_json as _canonical_json

    cache = FeatureCache(tmp_path / "c")
    key = "cd" * 32
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    meta = {"part": "features", "provenance": {"features_version": 2}}
    old = {"thqa.format": str(CACHE_FORMAT_VERSION), "thqa.key": key, "thqa.sha256": _array_checksum(arrays), "thqa.meta": _canonical_json(meta)}
    path = cache.path_for(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(safetensors.numpy.save(arrays, metadata=old))
    entry = cache.get(key)
    assert entry is not None and entry.meta == meta and np.array_equal(entry.arrays["x"], arrays["x"])
    assert [(k, m) for k, _, _, m in cache.headers()] == [(key, meta)]


def _thqa_subprocess_env(**extra) -> dict:
    return dict(os.environ, **extra, PYTHONPATH=os.pathsep.join([str(Path(cli.__file__).parents[2]), os.environ.get("PYTHONPATH", "")]))


class _SigtermUnhandled(Exception):
    """Raised by the test's own SIGTERM handler: the command did not take the signal over."""


def test_sigterm_stops_score_like_ctrl_c_keeping_its_rows(tmp_path, fake_scorer, monkeypatch):
    """Item 6: SIGTERM (kill, a scheduler's stop) ends `thqa score` as Ctrl-C does: exit 130, "interrupted", the
    rows so far kept in a whole file (it used to die by the signal, leaving the workers behind). In-process: the
    test's own handler stands in for the default (which would end the test run) and fails the test if reached."""
    files = [str(tmp_path / f"v{i:02d}.mp4") for i in range(8)]
    out = tmp_path / "scores.csv"

    def terminated(self, paths):
        for i, p in enumerate(paths):
            if i == 5:
                os.kill(os.getpid(), signal.SIGTERM)
            yield fake_result(p)

    def unhandled(signum, frame):
        raise _SigtermUnhandled

    monkeypatch.setattr(FakeScorer, "iter_score", terminated)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        rc, _, err = run(["score", "--random-init", *files, "-o", str(out)])
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the command's handler is gone afterwards
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert rc == 130 and "thqa score: interrupted" in err, err[-2000:]
    assert [r["path"] for r in csv.DictReader(io.StringIO(out.read_text()))] == files[:5]


#: the stand-in for prepare() in a decoding worker: it is busy with a long file (it writes its pid, then blocks)
BUSY_WORKER = textwrap.dedent(
    """
    import os, time
    import thqa.features.workers

    def busy(path, settings, **kwargs):
        tmp = os.environ["WORKER_PID"] + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, os.environ["WORKER_PID"])
        time.sleep(600)

    thqa.features.workers.prepare = busy  # what the decoding workers call
    """
)
#: `thqa extract` with forked workers (a CPU)
ORPHAN = textwrap.dedent(
    """
    import sys
    import busy_worker
    from thqa.cli import app as cli
    sys.exit(cli.main(sys.argv[1:]))
    """
)
#: the workers of a FeatureExtractor beside a GPU come from a fork server (which imports busy_worker first); the
#: backbones are never reached, the worker never finishes its file
ORPHAN_FORKSERVER = textwrap.dedent(
    """
    import multiprocessing as mp
    import sys
    from types import SimpleNamespace

    import torch
    import thqa.features.pipeline as pl
    import thqa.features.workers

    def fork_server(cuda=False):
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["busy_worker"])
        return ctx

    if __name__ == "__main__":
        thqa.features.workers._worker_context = fork_server
        stub = SimpleNamespace(device=torch.device("cpu"), built=True, batch_size=1)
        ex = pl.FeatureExtractor(pl.ExtractionSettings(n_clips=1), backbones=stub, workers=1)
        list(ex.iter_extract(sys.argv[1:]))
    """
)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("start", ["fork", "forkserver"])
def test_a_killed_extract_leaves_no_decoding_worker_behind(start, tmp_path):
    """Item 6: SIGKILL of `thqa extract` while its decoding worker is busy on a file: the worker (reparented, 578-833 MB
    each in the report) dies with it - Linux's parent-death signal, and a watch on the parent and on the process that
    started the workers. A worker from the fork server (beside a GPU) needs the watch: its parent, the fork server,
    outlives the main process as long as a worker holds its keep-alive pipe."""
    (tmp_path / "v.mp4").write_bytes(b"not decoded: the worker's prepare() is a stand-in that blocks")
    (tmp_path / "m.csv").write_text("path\nv.mp4\n")
    (tmp_path / "busy_worker.py").write_text(BUSY_WORKER)
    script, pid_file = tmp_path / "orphan.py", tmp_path / "worker.pid"
    if start == "fork":  # the real command line
        script.write_text(ORPHAN)
        argv = ["extract", str(tmp_path / "m.csv"), "--cache-dir", str(tmp_path / "c"), "--random-init", "--workers", "1", "--no-frames"]
    else:
        script.write_text(ORPHAN_FORKSERVER)
        argv = [str(tmp_path / "v.mp4")]
    env = _thqa_subprocess_env(WORKER_PID=str(pid_file))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    proc = subprocess.Popen([sys.executable, str(script), *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    worker = None
    try:
        for _ in range(1200):  # the worker starts once the parent has read the manifest (generous: a slow machine)
            if pid_file.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert pid_file.exists(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no worker started"
        worker = int(pid_file.read_text())
        assert worker != proc.pid and _alive(worker)
        proc.kill()
        proc.wait(timeout=60)
        polls = 0
        while _alive(worker) and polls < 600:  # the parent-death signal acts at once, the watch within a second
            polls += 1
            time.sleep(0.1)
        assert not _alive(worker), f"decoding worker {worker} outlived its killed parent ({polls} polls of 0.1 s)"
    finally:
        if proc.poll() is None:
            proc.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.parametrize(
    "argv, words",
    [  # item 15: one seed range for every --seed; resamples bounded; a sync range that is finite and plausible
        (["compare", "--predictions", "p.csv", "--group-pattern", "_(.)", "--seed", "-1"], "argument --seed: must be from 0 to 4294967295"),
        (["compare", "--predictions", "p.csv", "--group-pattern", "_(.)", "--seed", str(2**64 + 1)], "argument --seed: must be from 0 to 4294967295"),
        (["compare", "--predictions", "p.csv", "--group-pattern", "_(.)", "--n-boot", "1e11"], "argument --n-boot: expected a whole number, got '1e11'"),
        (["compare", "--predictions", "p.csv", "--group-pattern", "_(.)", "--n-boot", str(10**11)], "argument --n-boot: must be from 100 to 10000000"),
        (["compare", "--predictions", "p.csv", "--group-pattern", "_(.)", "--n-perm", "-5"], "argument --n-perm: must be from 100"),
        (["sync", "x.mp4", "--max-offset", "inf"], "argument --max-offset: must be a finite number"),
        (["sync", "x.mp4", "--max-offset", "1e9"], "max_offset_ms must be in (0, 60000]"),
    ],
)
def test_compare_and_sync_option_values_are_refused_in_one_line(argv, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(argv)
    line = one_error(err, argv[0])
    assert rc == 2 and words in line, line
    assert "--workers" not in line and "--batch-size" not in line


def test_out_of_memory_advises_only_the_commands_own_options(monkeypatch):
    """Item 15: `compare --n-boot` huge ran out of memory and advised --workers and --batch-size, which compare lacks."""
    import thqa.analysis.comparison

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(thqa.analysis.comparison, "compare", exhausted)
    rc, out, err = run(["compare", "--predictions", "p.csv", "--group-pattern", "_(.)"])
    assert rc == 2 and one_error(err, "compare").endswith("out of memory (try a smaller --n-boot or a smaller --n-perm)")


def test_score_with_standard_output_closed_says_so(tmp_path, fake_scorer, monkeypatch):
    """Item 15: `thqa score v.mp4 >&-` (Python then has sys.stdout None) said "unexpected AttributeError"; now it is
    a setup error before any work, and with -o FILE the command runs."""
    monkeypatch.setattr(sys, "stdout", None)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli.main(["score", "--random-init", str(tmp_path / "v.mp4")])
    assert rc == 2 and "thqa score: error: standard output is closed" in err.getvalue() and fake_scorer.asked == []
    with contextlib.redirect_stderr(io.StringIO()):
        rc = cli.main(["score", "--random-init", str(tmp_path / "v.mp4"), "-o", str(tmp_path / "s.csv")])
    assert rc == 0 and fake_scorer.asked == [str(tmp_path / "v.mp4")] and (tmp_path / "s.csv").exists()


def test_a_long_timeline_says_its_cost_up_front_and_warns_once(monkeypatch, caplog):
    """Item 15: `--timeline` on a 10-hour file gave no estimate up front and one warning per chunk (each chunk reads
    the sound from the start again, so a problem in it is met every time); now the cost comes first, then the time
    after the first chunk, and the chunks' warnings come as one summary (the result keeps three and a count)."""
    import logging
    from types import SimpleNamespace

    import thqa.media.probe
    import thqa.scoring.timeline as tl
    from thqa.features.pipeline import VideoFeatures

    n, chunk = 36_000, 16  # ten hours
    io_log = logging.getLogger("thqa.media")

    def prepare(path, settings, *, seconds, timeout):
        io_log.warning("%s: audio decoding stopped near %d.00 s (Invalid data); the rest is silence", path, seconds[0] + 3)
        return SimpleNamespace(seconds=seconds, warnings=[f"{path}: audio decoding stopped near {seconds[0] + 3}.00 s"])

    def features(items):
        k = len(items[0].seconds)
        return [VideoFeatures(path="long.mp4", spatial=None, temporal=None, audio=np.zeros((k, 1), np.float32),
                              seconds=items[0].seconds, has_audio=True, info={}, warnings=items[0].warnings)]

    backbones = SimpleNamespace(batch_size=chunk, features=features)
    monkeypatch.setattr(thqa.media.probe, "probe", lambda path: SimpleNamespace(duration=float(n)))
    monkeypatch.setattr(tl, "prepare", prepare)
    monkeypatch.setattr(tl, "release_free_memory", lambda: True)
    with caplog.at_level(logging.INFO):
        feats = tl.second_features("long.mp4", backbones=backbones, settings=ExtractionSettings())
    assert feats.n == n
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3, warned[:5]
    assert "a timeline of 36000 s reads every second through both backbones in 2250 chunks" in warned[0]
    assert "timeline: about" in warned[1] and "min to go (the first of 2250 chunks" in warned[1]
    assert "2250 decoding warning(s) while reading 2250 chunk(s)" in warned[2] and "near 3.00 s" in warned[2]
    assert len(feats.warnings) == 4 and feats.warnings[-1] == "... and 2247 more warning(s)"
