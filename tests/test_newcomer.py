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
from pathlib import Path

import numpy as np
import pytest

from thqa import cli
from thqa.checkpoint import save_checkpoint
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
    from thqa.scorer import Scorer

    monkeypatch.setenv("THQA_OFFLINE", "1")  # before the fix: pretrained weights were looked for, and not found
    with caplog.at_level(logging.INFO, logger="thqa.scorer"):
        s = Scorer(random_init_ck, device="cpu", lazy=True, warm=False, workers=0)
    assert s.weights.random_init is True and s.weights.seed == 3407
    assert s.weights_note == f"random-init backbones (seed 3407), as {random_init_ck} records"
    assert any("random-init backbones (seed 3407)" in r.getMessage() for r in caplog.records)


def test_an_explicit_mismatch_with_the_checkpoint_names_both(random_init_ck, pretrained_ck):
    from thqa.scorer import Scorer

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
    from thqa.checkpoint import backbones_made, load_checkpoint, weights_for
    from thqa.models.fusion import FusionModel

    old = {k: {**v, "seed": None} for k, v in backbones.infos.items()}
    ck = load_checkpoint(save_checkpoint(tmp_path / "old.safetensors", FusionModel(), settings=small_settings, backbones=old))
    assert backbones_made(ck) is None
    w, note = weights_for(ck)
    assert w.random_init is False and note is None  # as before: --random-init must be given
    w, note = weights_for(ck, random_init=True, seed=9)
    assert w.random_init is True and w.seed == 9


def test_weights_not_found_names_the_keyword_in_python_and_the_flag_in_the_cli(pretrained_ck, no_network_weights, monkeypatch, good_video, capsys):
    from thqa.scorer import Scorer

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
