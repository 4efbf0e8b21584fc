"""What thqa promises about the files it writes (issue 21): an output never replaces an input, a symbolic link or a
device, and is checked before any work; two runs never write one output at once; ``--resume`` never mixes two
models or two names of one file; failure lists are never lost; CSV text cells never start a spreadsheet formula.

The commands run in-process (``cli.main``) with stand-ins for the scorer, the extraction and the analyses, so every
case is cheap; each test says which numbered case of issue 21 it covers.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from test_hostile_input import BACKBONES, TINY, FakeScorer, fake_result, fake_scorer, no_backbones, one_error  # noqa: F401
from test_hostile_input import run as _run
from thqa.cli import app as cli
from thqa.cli import score as cli_score
from thqa.models.checkpoint import load_checkpoint, save_checkpoint
from thqa.models.fusion import FusionModel
from thqa.features.pipeline import ExtractionSettings


def run(argv: list[str], env: dict | None = None) -> tuple[int, str, str]:
    """test_hostile_input's run, with ``thqa score`` in fp32 (the stand-in scorer's precision) on every CPU, so that
    --resume's check of the precision means the same on a CPU where `auto` picks bf16."""
    if argv and argv[0] == "score" and "--precision" not in argv:
        argv = [argv[0], "--precision", "fp32", *argv[1:]]
    return _run(argv, env)


ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
needs_root = pytest.mark.skipif(not ROOT, reason="mknod needs root")


def _rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else list(csv.DictReader(io.StringIO(text)))


def _ck(path: Path, *, bias: float | None = None) -> Path:
    """A tiny checkpoint; ``bias`` changes one bias of the head (a copy that scores differently)."""
    torch.manual_seed(0)
    model = FusionModel(TINY)
    if bias is not None:
        with torch.no_grad():
            next(t for n, t in model.named_parameters() if n.endswith("bias")).add_(bias)
    return save_checkpoint(path, model, settings=ExtractionSettings(n_clips=2), backbones=BACKBONES)


# -- case 1: an output that is an input ------------------------------------------------------------------------------
def _inputs(tmp_path: Path) -> dict:
    video = tmp_path / "a.mp4"
    video.write_bytes(b"not really a video, but the user's file")
    os.link(video, tmp_path / "hard.mp4")
    os.symlink(video, tmp_path / "soft.mp4")
    (tmp_path / "p.csv").write_text("".join(f"v{i}_g{i % 2}.mp4,{i}\n" for i in range(8)))
    (tmp_path / "l.csv").write_text("Video,Score\n" + "".join(f"v{i}_g{i % 2}.mp4,{i}\n" for i in range(8)))
    (tmp_path / "m.csv").write_text("path,mos\na.mp4,3\n")
    return {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    "argv, output",
    [
        (["score", "--random-init", "{d}/a.mp4", "-o", "{d}/a.mp4"], "--output"),
        (["score", "--random-init", "{d}/a.mp4", "-o", "{d}/hard.mp4"], "--output"),  # a hard link to the input
        (["score", "--random-init", "{d}/soft.mp4", "-o", "{d}/a.mp4"], "--output"),  # the input through a link
        (["score", "-c", "{d}/a.mp4", "{d}/x.mp4", "-o", "{d}/a.mp4"], "--output"),  # the checkpoint
        (["sync", "{d}/a.mp4", "-o", "{d}/a.mp4"], "--output"),
        (["compare", "--predictions", "{d}/p.csv", "--group-pattern", "_(g\\d)", "-o", "{d}/p.csv"], "--output"),
        (["compare", "--predictions", "{d}/p.csv", "--labels", "{d}/l.csv", "--group-pattern", "_(g\\d)", "--plot", "{d}/l.csv"], "--plot"),
        (["evaluate", "-c", "{d}/ck.safetensors", "{d}/m.csv", "--cache-dir", "{d}/c", "--random-init", "-o", "{d}/m.csv"], "--output"),
        (["evaluate", "-c", "{d}/ck.safetensors", "{d}/m.csv", "--cache-dir", "{d}/c", "--random-init", "-o", "{d}/hard.mp4"], "--output"),
        (["evaluate", "--predictions", "{d}/p.csv", "--labels", "{d}/l.csv", "--plot", "{d}/x.png", "-o", "{d}/x.png"], "--output"),
        (["extract", "{d}/m.csv", "--cache-dir", "{d}/c", "--random-init", "--summary-json", "{d}/m.csv"], "--summary-json"),
        (["extract", "{d}/m.csv", "--cache-dir", "{d}/c", "--random-init", "--summary-json", "{d}/soft.mp4"], "--summary-json"),
        (["extract", "{d}/m.csv", "--cache-dir", "{d}/c", "--random-init", "--summary-json", "{d}/f.csv", "--failures", "{d}/f.csv"], "--summary-json"),
    ],
)
def test_case1_an_output_that_is_an_input_is_refused_before_any_work(argv, output, tmp_path, fake_scorer, no_backbones, monkeypatch):
    import thqa.analysis.comparison
    import thqa.analysis.sync

    before = _inputs(tmp_path)
    _ck(tmp_path / "ck.safetensors")
    before["ck.safetensors"] = (tmp_path / "ck.safetensors").read_bytes()
    work = []
    monkeypatch.setattr(thqa.analysis.sync, "estimate_av_offset", lambda *a, **k: work.append(a))
    monkeypatch.setattr(thqa.analysis.comparison, "compare", lambda *a, **k: work.append(a))
    argv = [a.format(d=tmp_path) for a in argv]
    rc, out, err = run(argv)
    line = one_error(err, argv[0])
    assert rc == 2 and out == "", err
    assert f"{output} " in line and ("is the input" in line or "is the output" in line) and "give another name" in line
    assert fake_scorer.asked == [] and work == []  # refused before any work
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name in before} == before
    assert (tmp_path / "soft.mp4").is_symlink()


def test_case1_a_table_never_replaces_a_video_that_is_not_an_input(tmp_path, fake_scorer, monkeypatch):
    """``cp v.mp4 a.mp4; thqa score -o a.mp4 v.mp4`` (what ``-o *.mp4`` expands to): a.mp4 is no input, but a video."""
    import thqa.analysis.sync

    monkeypatch.setattr(thqa.analysis.sync, "estimate_av_offset", lambda *a, **k: pytest.fail("analysed"))
    video = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00" + bytes(range(256)) * 8
    (tmp_path / "a.mp4").write_bytes(video)
    for argv in (["score", "--random-init", str(tmp_path / "v.mp4"), "-o", str(tmp_path / "a.mp4")],
                 ["sync", str(tmp_path / "v.mp4"), "-o", str(tmp_path / "a.mp4")]):
        rc, _, err = run(argv)
        assert rc == 2 and "exists and is not a text file" in one_error(err, argv[0])
    assert (tmp_path / "a.mp4").read_bytes() == video and fake_scorer.asked == []
    (tmp_path / "old.csv").write_text("path,mos\ncafé.mp4,3\n")  # a text table (UTF-8) is replaced as before
    assert run(["score", "--random-init", "b.mp4", "-o", str(tmp_path / "old.csv")])[0] == 0


def test_case1_check_output_compares_inodes_and_resolved_names(tmp_path):
    from thqa.utils.atomic import check_output
    from thqa.errors import ConfigError

    (tmp_path / "a.mp4").write_bytes(b"v")
    os.link(tmp_path / "a.mp4", tmp_path / "b.mp4")
    check_output(tmp_path / "c.csv", "-o", inputs=[tmp_path / "a.mp4"])  # another file: fine
    for out, given in ((tmp_path / "b.mp4", tmp_path / "a.mp4"), (tmp_path / "sub" / ".." / "new.csv", tmp_path / "new.csv")):
        with pytest.raises(ConfigError, match="is the input"):
            check_output(out, "-o", inputs=[given])
    check_output("-", "-o", inputs=["-"])  # stdout is never an input's file


# -- case 2: links, devices, stdout; case 15: the mode of an existing output ------------------------------------------
def test_case2_a_symlinked_output_is_followed_and_stays_a_link(tmp_path, fake_scorer):
    real, link, dangling = tmp_path / "real.csv", tmp_path / "link.csv", tmp_path / "dangling.csv"
    real.write_text("old\n")
    os.symlink(real.name, link)
    os.symlink("sub/target.csv", dangling)
    for out, target in ((link, real), (dangling, tmp_path / "sub" / "target.csv")):
        rc, _, err = run(["score", "--random-init", "a.mp4", "-o", str(out)])
        assert rc == 0, err
        assert out.is_symlink() and [r["path"] for r in _rows(target)] == ["a.mp4"]
    rc, _, err = run(["sync", str(tmp_path / "missing.mp4"), "-o", str(link)])  # atomic_write_text follows it too
    assert rc == 1 and link.is_symlink() and _rows(real)[0]["path"] == str(tmp_path / "missing.mp4")
    assert not list(tmp_path.glob(".*.partial"))


def test_case2_dash_is_stdout(tmp_path, fake_scorer, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(["score", "--random-init", "a.mp4", "b.mp4", "-o", "-"])
    assert rc == 0, err
    assert [r["path"] for r in csv.DictReader(io.StringIO(out))] == ["a.mp4", "b.mp4"]
    rc, out, err = run(["score", "--random-init", "a.mp4", "-o", "-", "--format", "json"])
    assert rc == 0 and json.loads(out)[0]["path"] == "a.mp4"
    assert not os.path.lexists(tmp_path / "-")  # no file named '-'
    rc, _, err = run(["score", "--random-init", "a.mp4", "-o", "-", "--resume"])
    assert rc == 2 and "--resume needs --output to be a file" in one_error(err, "score")


def test_case2_a_fifo_is_written_through(tmp_path, fake_scorer):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a reader that is there before thqa starts (as `cat fifo &`)
    try:
        rc, _, err = run(["score", "--random-init", "a.mp4", "-o", str(fifo)])
        got = os.read(reader, 1 << 16).decode()
    finally:
        os.close(reader)
    assert rc == 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and [r["path"] for r in csv.DictReader(io.StringIO(got))] == ["a.mp4"]


@needs_root
def test_case2_device_nodes_are_written_through_never_replaced(tmp_path, fake_scorer):
    null, full = tmp_path / "null", tmp_path / "full"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    os.symlink(null, tmp_path / "so")
    for out in (null, tmp_path / "so"):
        rc, _, err = run(["score", "--random-init", "a.mp4", "-o", str(out)])
        assert rc == 0, err
        rc, _, err = run(["sync", str(tmp_path / "missing.mp4"), "-o", str(out)])
        assert rc == 1, err
    rc, _, err = run(["score", "--random-init", "a.mp4", "-o", str(full)])
    assert rc == 2 and one_error(err, "score").endswith(f"{full}: No space left on device")
    rc, _, err = run(["sync", str(tmp_path / "missing.mp4"), "-o", str(full)])
    assert rc == 2 and one_error(err, "sync").endswith(f"{full}: No space left on device")
    (tmp_path / "p.csv").write_text("".join(f"v{i}.mp4,{i + (i % 2) * 0.5}\n" for i in range(6)))
    (tmp_path / "l.csv").write_text("Video,Score\n" + "".join(f"v{i}.mp4,{i}\n" for i in range(6)))
    rc, _, err = run(["evaluate", "--predictions", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "l.csv"), "--plot", str(null)])
    assert rc == 0, err  # a plot (written by name: atomic_path) goes through too
    assert stat.S_ISCHR(os.lstat(null).st_mode) and stat.S_ISCHR(os.lstat(full).st_mode)
    assert os.readlink(tmp_path / "so") == str(null)


def test_case2_a_link_to_stdout_is_written_through(tmp_path, capfd):
    """``ln -s /proc/self/fd/1 so; -o so`` (what ``-o /dev/stdout`` is). A link of the test's own, never /dev/stdout
    itself: run against a version with the bug, this test must not replace the machine's /dev/stdout."""
    if not os.path.exists("/proc/self/fd/1"):
        pytest.skip("no /proc/self/fd here")
    so = tmp_path / "so"
    os.symlink("/proc/self/fd/1", so)
    rc, _, err = run(["sync", str(tmp_path / "missing.mp4"), "-o", str(so)])
    assert rc == 1, err
    assert so.is_symlink() and f"{tmp_path / 'missing.mp4'}," in capfd.readouterr().out


def test_case15_an_existing_output_keeps_its_mode(tmp_path, fake_scorer):
    for name in ("s.csv", "s.json"):
        out = tmp_path / name
        assert run(["score", "--random-init", "a.mp4", "-o", str(out)])[0] == 0
        os.chmod(out, 0o600)
        assert run(["score", "--random-init", "a.mp4", "b.mp4", "-o", str(out), "--resume"])[0] == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o600 and len(_rows(out)) == 2
        assert run(["score", "--random-init", "c.mp4", "-o", str(out)])[0] == 0  # a plain rewrite too
        assert stat.S_IMODE(out.stat().st_mode) == 0o600


# -- case 3: --resume never mixes two models -------------------------------------------------------------------------
def test_case3_resume_refuses_the_rows_of_another_model(tmp_path, fake_scorer, monkeypatch):
    plain = FakeScorer.iter_score

    def trained(self, paths):  # rows as a Scorer with a checkpoint gives them
        for r in plain(self, paths):
            yield dataclasses.replace(r, untrained=False)

    monkeypatch.setattr(fake_scorer, "iter_score", trained)
    ck1, ck2 = _ck(tmp_path / "ck1.safetensors"), _ck(tmp_path / "ck2.safetensors", bias=1e-3)
    files = [f"v{i}.mp4" for i in range(8)]
    out = tmp_path / "s.csv"
    assert run(["score", "-c", str(ck1), "--random-init", *files[:3], "-o", str(out), "--precision", "fp32"])[0] == 0
    digests = {r["model"] for r in _rows(out)}
    assert len(digests) == 1 and len(digests.pop()) == 16
    before = out.read_bytes()
    fake_scorer.asked = []
    rc, _, err = run(["score", "-c", str(ck2), "--random-init", *files, "-o", str(out), "--resume", "--precision", "fp32"])
    line = one_error(err, "score")
    assert rc == 2 and "results of two models do not belong in one table" in line
    assert _rows(out)[0]["model"] in line and cli_score._run_model(cli.build_parser().parse_args(
        ["score", "-c", str(ck2), "--random-init", "x.mp4", "--precision", "fp32"]))[0] in line
    assert out.read_bytes() == before and fake_scorer.asked == []
    rc, _, err = run(["score", "-c", str(ck1), "--random-init", *files, "-o", str(out), "--resume", "--precision", "bf16"])  # another precision
    assert rc == 2 and "precision fp32, this run has bf16-autocast" in one_error(err, "score")
    assert run(["score", "-c", str(ck1), "--random-init", *files, "-o", str(out), "--resume", "--precision", "fp32"])[0] == 0  # the same model
    assert fake_scorer.asked == files[3:] and [r["path"] for r in _rows(out)] == files


def test_case3_json_resume_refuses_rows_without_a_model(tmp_path, fake_scorer):
    out = tmp_path / "s.json"
    out.write_text('[{"path": "good.mp4", "mos": 1}]')
    rc, _, err = run(["score", "--random-init", "good.mp4", "other.mp4", "-o", str(out), "--resume"])
    assert rc == 2 and "names no model" in one_error(err, "score")
    assert json.loads(out.read_text()) == [{"path": "good.mp4", "mos": 1}] and fake_scorer.asked == []


def test_case3_the_model_digest_names_weights_settings_backbones_and_precision(tmp_path):
    from thqa.scoring.scorer import model_digest

    ck1, ck1_copy = load_checkpoint(_ck(tmp_path / "a.safetensors")), load_checkpoint(_ck(tmp_path / "b.safetensors"))
    ck2 = load_checkpoint(_ck(tmp_path / "c.safetensors", bias=1e-3))
    d = dict(random_init=True, seed=3407, precision="fp32")
    assert model_digest(ck1, **d) == model_digest(ck1_copy, **d)  # a copy is the same model
    others = {model_digest(ck2, **d), model_digest(ck1, **{**d, "precision": "bf16-autocast"}), model_digest(ck1, **{**d, "random_init": False}),
              model_digest(None, **d), model_digest(None, **{**d, "seed": 1}), model_digest(None, **d, settings=ExtractionSettings(n_clips=2))}
    assert len(others) == 6 and model_digest(ck1, **d) not in others


# -- case 10: --resume compares names made absolute, and unambiguous ---------------------------------------------------
def test_case10_resume_compares_absolute_names(tmp_path, fake_scorer, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "s.csv"
    assert run(["score", "--random-init", "good.mp4", "-o", str(out)])[0] == 0
    fake_scorer.asked = []
    assert run(["score", "--random-init", "./good.mp4", str(tmp_path / "good.mp4"), "b.mp4", "-o", str(out), "--resume"])[0] == 0
    assert fake_scorer.asked == ["b.mp4"]


def test_case10_a_literal_backslash_name_and_a_non_utf8_name_stay_apart(tmp_path, fake_scorer):
    raw = os.fsdecode(os.fsencode(str(tmp_path)) + b"/v\xff.mp4")  # byte 0xff: not UTF-8
    literal = str(tmp_path / "v\\xff.mp4")  # a backslash, x, f, f
    for fmt in ("csv", "json"):
        out = tmp_path / f"s.{fmt}"
        fake_scorer.asked = []
        assert run(["score", "--random-init", raw, "-o", str(out)])[0] == 0
        assert run(["score", "--random-init", raw, literal, "-o", str(out), "--resume"])[0] == 0
        assert fake_scorer.asked == [raw, literal]  # the literal name was scored, not mistaken for the other
        paths = [r["path"] for r in _rows(out)]
        assert len(set(paths)) == 2 and paths[0].endswith("/v\\xff.mp4") and out.read_bytes().decode("utf-8")


# -- case 4: two runs, one output --------------------------------------------------------------------------------------
SLOW = textwrap.dedent(
    """
    import os, sys, time
    import thqa.scoring.scorer
    from thqa.cli import app as cli
    from thqa.scoring.scorer import ScoreResult

    class Slow:
        def __init__(self, checkpoint=None, **kwargs):
            pass

        def iter_score(self, paths):
            for p in paths:
                while not os.path.exists(os.environ["GO"]):
                    time.sleep(0.01)
                yield ScoreResult(path=p, mos=1.0, clip_scores=[1.0], seconds=[0], weights="random-init", untrained=True)

    thqa.scoring.scorer.Scorer = Slow
    sys.exit(cli.main(sys.argv[1:]))
    """
)


def test_case4_a_second_run_on_the_same_output_stops_and_names_the_first(tmp_path, fake_scorer):
    out, go = tmp_path / "same.csv", tmp_path / "go"
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    env = dict(os.environ, GO=str(go), PYTHONPATH=os.pathsep.join([str(Path(cli.__file__).parents[2]), os.environ.get("PYTHONPATH", "")]))
    first = subprocess.Popen([sys.executable, str(script), "score", "--random-init", "a.mp4", "b.mp4", "-o", str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(6000):  # until the first run has started writing (its header is there)
            if out.exists() or first.poll() is not None:
                break
            time.sleep(0.01)
        rc, _, err = run(["score", "--random-init", "c.mp4", "-o", str(out)])
        assert rc == 2 and f"another thqa run (pid {first.pid}) is writing it" in one_error(err, "score")
        assert fake_scorer.asked == []
    finally:
        go.touch()
        _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err.decode()[-2000:]
    assert [r["path"] for r in _rows(out)] == ["a.mp4", "b.mp4"]
    assert run(["score", "--random-init", "c.mp4", "-o", str(out)])[0] == 0  # the lock went with its run
    assert not list(tmp_path.glob(".*.lock"))


# -- case 5: failure lists -----------------------------------------------------------------------------------------------
class _FakeBackbones:
    random_init, infos, precision = True, {}, "fp32"

    def __init__(self, *args, **kwargs):
        pass


@pytest.fixture()
def fake_extract(monkeypatch):
    """`thqa extract` without backbones: each run fails the files listed in ``fake_extract.fail``."""
    import thqa.data.extract
    import thqa.features.pipeline
    from thqa.data.extract import ExtractSummary

    state = {"fail": [], "during": None}

    def extract_files(paths, cache, ex, **kwargs):
        if state["during"]:
            state["during"]()
        bad = [(p, "DecodeError", f"{p}: broken") for p in paths if Path(p).name in state["fail"]]
        return ExtractSummary(done=len(paths) - len(bad), failed=len(bad), failures=bad)

    monkeypatch.setattr(thqa.features.pipeline, "Backbones", _FakeBackbones)
    monkeypatch.setattr(thqa.features.pipeline, "FeatureExtractor", lambda *a, **k: None)
    monkeypatch.setattr(thqa.data.extract, "extract_files", extract_files)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    return state


def test_case5_a_clean_run_never_deletes_the_failure_list(tmp_path, fake_extract):
    (tmp_path / "A.csv").write_text("path\na.mp4\nb.mp4\nc.mp4\n")
    (tmp_path / "B.csv").write_text("path\nd.mp4\n")
    cache = tmp_path / "C"
    fake_extract["fail"] = ["a.mp4", "b.mp4"]
    assert run(["extract", str(tmp_path / "A.csv"), "--cache-dir", str(cache), "--random-init"])[0] == 1
    first = _rows(cache / "failures.csv")
    assert [Path(r["path"]).name for r in first] == ["a.mp4", "b.mp4"] and len({r["run"] for r in first}) == 1
    fake_extract["fail"] = []
    assert run(["extract", str(tmp_path / "B.csv"), "--cache-dir", str(cache), "--random-init"])[0] == 0  # clean
    assert _rows(cache / "failures.csv") == first
    fake_extract["fail"] = ["c.mp4"]
    assert run(["extract", str(tmp_path / "A.csv"), "--cache-dir", str(cache), "--random-init"])[0] == 1
    rows = _rows(cache / "failures.csv")
    assert rows[:2] == first and Path(rows[2]["path"]).name == "c.mp4" and rows[2]["run"] != first[0]["run"]


def test_case5_a_user_file_made_at_the_failures_path_during_the_run_is_kept(tmp_path, fake_extract):
    (tmp_path / "A.csv").write_text("path\na.mp4\n")
    target = tmp_path / "f.csv"
    fake_extract["fail"] = ["a.mp4"]
    fake_extract["during"] = lambda: target.write_text("name,amount\nrent,900\n")
    rc, out, err = run(["extract", str(tmp_path / "A.csv"), "--cache-dir", str(tmp_path / "C"), "--random-init", "--failures", str(target)])
    assert rc == 1 and target.read_text() == "name,amount\nrent,900\n"
    moved = [p for p in tmp_path.glob("f-*.csv")]
    assert len(moved) == 1 and Path(_rows(moved[0])[0]["path"]).name == "a.mp4"
    assert f"listed in {moved[0]}" in out and "left as it is" in err


def test_case5_a_list_of_an_earlier_version_gets_the_run_column(tmp_path):
    from thqa.data.extract import add_failures

    old = tmp_path / "f.csv"
    old.write_text("path,error_type,error\nold.mp4,DecodeError,old.mp4: broken\n")
    add_failures(old, [("new.mp4", "DecodeError", "new.mp4: broken")], run="R1")
    assert [(r["path"], r["run"]) for r in _rows(old)] == [("old.mp4", ""), ("new.mp4", "R1")]


# -- case 8: sync and compare check their outputs first, and errors name the output ------------------------------------
def test_case8_sync_and_compare_check_outputs_before_any_work(tmp_path, monkeypatch):
    import thqa.analysis.comparison
    import thqa.analysis.sync

    work = []
    monkeypatch.setattr(thqa.analysis.sync, "estimate_av_offset", lambda *a, **k: work.append(a))
    monkeypatch.setattr(thqa.analysis.comparison, "compare", lambda *a, **k: work.append(a))
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "p.csv").write_text("a_g1.mp4,1\nb_g2.mp4,2\n")
    cases = [
        ["sync", "s.mp4", "-o", str(afile / "x.csv")],
        ["compare", "--predictions", str(tmp_path / "p.csv"), "--group-pattern", "_(g\\d)", "-o", str(afile / "x.txt")],
        ["compare", "--predictions", str(tmp_path / "p.csv"), "--group-pattern", "_(g\\d)", "--plot", str(afile / "x.png")],
        ["compare", "--predictions", str(tmp_path / "p.csv"), "--group-pattern", "_(g\\d)", "--plot", str(tmp_path / "x.docx")],
    ]
    for argv in cases:
        rc, out, err = run(argv)
        assert rc == 2 and out == "" and str(afile if "afile" in argv[-1] else tmp_path / "x.docx") in one_error(err, argv[0])
    assert work == []


def test_case8_a_failed_write_names_the_output_not_the_temp_file(tmp_path, monkeypatch):
    import thqa.analysis.sync
    from thqa.analysis.sync import SyncResult

    monkeypatch.setattr(thqa.analysis.sync, "estimate_av_offset", lambda f, s: SyncResult(str(f), -40.0, 5.0, (-1000, 1000), 3.0))

    def read_only(src, dst):
        raise OSError(30, "Read-only file system", str(src), str(dst))

    monkeypatch.setattr(os, "replace", read_only)
    rc, _, err = run(["sync", "s.mp4", "-o", str(tmp_path / "x.csv")])
    line = one_error(err, "sync")
    assert rc == 2 and line.endswith(f"{tmp_path / 'x.csv'}: Read-only file system") and ".partial" not in line


# -- case 12: CSV cells that would start a formula ---------------------------------------------------------------------
NAMES = ["=HYPERLINK(A1).mp4", "+1.mp4", "-2.mp4", "@SUM(A1).mp4", "'quoted.mp4", "plain.mp4"]


def test_case12_score_csv_text_cells_never_start_a_formula(tmp_path, fake_scorer, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(["score", "--random-init", "-o", "s.csv", "--", *NAMES])[0] == 0
    assert run(["score", "--random-init", "-o", "s.json", "--", *NAMES])[0] == 0
    cells = list(csv.reader(open(tmp_path / "s.csv", newline="", encoding="utf-8")))[1:]
    assert [c[0] for c in cells] == ["'" + n for n in NAMES[:-1]] + ["plain.mp4"]
    assert all(float(c[1]) == pytest.approx(fake_result(n).mos, abs=1e-6) for c, n in zip(cells, NAMES))  # numbers stay numbers
    assert [r["path"] for r in _rows(tmp_path / "s.json")] == NAMES  # JSON holds the names as they are
    fake_scorer.asked = []
    assert run(["score", "--random-init", "-o", "s.csv", "--resume", "--", *NAMES])[0] == 0 and fake_scorer.asked == []  # read back
    (tmp_path / "l.csv").write_text("Video,Score,gen\n" + "".join(f'"{n}",{i},g{i % 2}\n' for i, n in enumerate(NAMES)))
    rc, out, err = run(["evaluate", "--predictions", "s.csv", "--labels", "l.csv", "--json"])
    assert rc == 0 and json.loads(out)["n"] == len(NAMES), err  # the names match the labels again
    rc, out, err = run(["compare", "--predictions", "s.csv", "--labels", "l.csv", "--group-column", "gen", "--n-boot", "100", "--json"])
    assert rc == 0 and json.loads(out)["n"] == len(NAMES), err  # and compare's columns too


def test_case12_sync_csv_quotes_names_and_notes_not_negative_offsets(tmp_path, monkeypatch):
    import thqa.analysis.sync
    from thqa.analysis.sync import SyncResult

    monkeypatch.setattr(thqa.analysis.sync, "estimate_av_offset",
                        lambda f, s: SyncResult(str(f), -40.0, 5.0, (-1000, 1000), 3.0, note="-weak peak"))
    rc, _, err = run(["sync", "=cmd.mp4", "-o", str(tmp_path / "s.csv")])
    assert rc == 0, err
    row = _rows(tmp_path / "s.csv")[0]
    assert (row["path"], row["offset_ms"], row["note"], row["range_ms"]) == ("'=cmd.mp4", "-40", "'-weak peak", "-1000 1000")


def test_case12_csv_safe_is_undone_by_csv_plain():
    from thqa.scoring.output import csv_plain, csv_safe

    for text in NAMES + ["", "'", "''=", "-", "a=b", "\tx", "\rx"]:
        assert csv_plain(csv_safe(text)) == text
        assert not csv_safe(text).startswith(("=", "+", "-", "@", "\t", "\r"))


def test_case3_the_scorer_stamps_every_row_with_the_digest_the_cli_checks(small_scorer, small_settings, tmp_path):
    from thqa.scoring.scorer import model_digest

    precision = small_scorer.backbones.precision
    r = next(small_scorer.iter_score([tmp_path / "missing.mp4"]))  # an error row carries it too
    assert r.model == small_scorer.model_digest == model_digest(None, random_init=True, seed=3407, precision=precision, settings=small_settings)
    args = cli.build_parser().parse_args(["score", "--random-init", "--device", "cpu", "--precision", "fp32", "x.mp4"])
    digest, run_precision, weights = cli_score._run_model(args)
    assert (digest, run_precision) == (model_digest(None, random_init=True, seed=3407, precision=precision), precision)
    assert (weights.random_init, weights.seed) == (True, 3407)
