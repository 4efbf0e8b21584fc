"""Training the fusion model on cached features: losses, the run directory, best-epoch choice, determinism, resuming,
errors, a frozen-mode run that learns a real quality signal on held-out content, and spatial fine-tuning.

The corpus built here (:func:`talking_head_corpus`) is shared with ``test_cli_experiments.py``: self-made talking
heads (thqa.synthetic.heads, no ../shared needed) with graded degradations, MOS = ``thqa.synthetic.degrade.pseudo_mos``, features extracted
once per session into a feature cache under pytest's base temp folder.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import thqa.training.loop

from thqa.data.cache import FeatureCache
from thqa.models.checkpoint import load_checkpoint
from thqa.data.manifest import Sample, read_manifest, shared_groups, split_by_group
from thqa.errors import ConfigError, MetricError
from thqa.features.pipeline import ExtractionSettings
from thqa.training.loop import LOSSES, FeatureTable, TrainConfig, load_table, loss_fn, predict_table, train

# ---------------------------------------------------------------------------------------------------------------
# the shared talking-head corpus

#: 1 clip of 8 frames at 64 px for SlowFast (the spatial branch still sees a 224 crop of a 520 px frame, and the
#: audio maps keep their full 4 x 128 x 32 size).
CORPUS_SETTINGS = ExtractionSettings(n_clips=1, clip_frames=8, frame_size=64)
#: Every head at these levels besides the untouched original. Audio noise is the defect that random-init backbones
#: (no pretrained weights offline) see clearly: with them, compression, blur or pixel noise are swamped by the
#: differences between heads (a group-held-out ridge probe on the frozen features gave SRCC 0.1-0.3 for compression,
#: 0.7 for pixel noise, 0.94 for audio noise).
CORPUS_VARIANTS = (("audio_noise", 1), ("audio_noise", 3), ("audio_noise", 5))
CORPUS_HEADS = 8
CORPUS_SEED = 100


@dataclass
class Corpus:
    root: Path
    manifest: Path  #: path,mos,group CSV of every video
    cache_dir: Path
    samples: list[Sample]
    settings: ExtractionSettings


def talking_head_corpus(tmp_path_factory: pytest.TempPathFactory, backbones) -> Corpus:
    """8 heads x (original + 3 audio-noise levels) = 32 videos of 2 s, features (and frames) in a cache.

    Built once per session (the manifest is written last, so a half-built corpus is rebuilt).
    """
    from thqa.synthetic.degrade import degrade, pseudo_mos
    from thqa.data.extract import extract_to_cache
    from thqa.features.pipeline import FeatureExtractor
    from thqa.synthetic.heads import make_talking_head

    root = tmp_path_factory.getbasetemp() / "thqa-talking-head-corpus"
    manifest = root / "corpus.csv"
    cache_dir = root / "cache"
    if not manifest.is_file():
        videos = root / "videos"
        videos.mkdir(parents=True, exist_ok=True)
        rows: list[tuple[str, float, str]] = []
        for i in range(CORPUS_HEADS):
            group = f"head{i}"
            src = videos / f"{group}.mp4"
            make_talking_head(src, seed=CORPUS_SEED + i, duration=2.0, size=128, overwrite=True)
            rows.append((str(src), pseudo_mos(None, 0), group))
            for kind, level in CORPUS_VARIANTS:
                info = degrade(src, videos / f"{group}_{kind}{level}.mp4", kind=kind, level=level, overwrite=True)
                rows.append((str(info.dst), info.pseudo_mos, group))
        summary = extract_to_cache(
            [r[0] for r in rows], FeatureCache(cache_dir), FeatureExtractor(CORPUS_SETTINGS, backbones=backbones), frames=True
        )
        assert summary.failed == 0, summary.failures
        tmp = root / ".corpus.csv.partial"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "mos", "group"])
            w.writerows(rows)
        os.replace(tmp, manifest)
    samples = list(read_manifest(manifest).samples)
    assert len(samples) == CORPUS_HEADS * (1 + len(CORPUS_VARIANTS))
    return Corpus(root, manifest, cache_dir, samples, CORPUS_SETTINGS)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, backbones) -> Corpus:
    return talking_head_corpus(tmp_path_factory, backbones)


# ---------------------------------------------------------------------------------------------------------------
# synthetic feature tables (no backbones): for the mechanics of the training loop

FAKE_BACKBONES = {
    "swin_t": {"name": "swin_t", "source": "random-init", "sha256": "1" * 64, "path": None, "seed": 3407},
    "slowfast_r50": {"name": "slowfast_r50", "source": "random-init", "sha256": "2" * 64, "path": None, "seed": 3407},
}
TABLE_SETTINGS = ExtractionSettings(n_clips=1)


def make_table(m: int, seed: int, *, n_clips: int = 1, frames: bool = False) -> FeatureTable:
    """Random features; the first 32 spatial numbers carry the MOS, so there is something to learn."""
    rng = np.random.default_rng(seed)
    mos = rng.uniform(1.0, 5.0, m).astype(np.float32)
    spatial = rng.standard_normal((m, n_clips, 768)).astype(np.float32)
    spatial[:, :, :32] += 2.0 * mos[:, None, None]
    temporal = rng.standard_normal((m, n_clips, 2304)).astype(np.float32)
    audio = rng.standard_normal((m, n_clips, 4, 128, 32)).astype(np.float32)
    fr = None
    if frames:
        fr = [[rng.integers(0, 256, (3, 232, 240), dtype=np.uint8) for _ in range(n_clips)] for _ in range(m)]
    return FeatureTable([f"/videos/{seed}_{i}.mp4" for i in range(m)], mos, spatial, temporal, audio, fr)


TRAIN_TABLE = make_table(16, 1)
VAL_TABLE = make_table(8, 2)
REF_CONFIG = TrainConfig(epochs=5, batch_size=8, lr=1e-3, seed=11)


def _train(run_dir: Path, config: TrainConfig = REF_CONFIG, **kw):
    return train(TRAIN_TABLE, VAL_TABLE, settings=TABLE_SETTINGS, backbones=FAKE_BACKBONES, run_dir=run_dir, config=config, **kw)


def _numbers(history: list[dict]) -> list[dict]:
    """History rows without the wall-clock column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs between {a} and {b}"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("reference-run")
    return _train(run)


# ---------------------------------------------------------------------------------------------------------------
# losses


def test_losses_on_hand_computed_values() -> None:
    pred = torch.tensor([1.0, 2.0, 3.0])
    y = torch.tensor([1.0, 3.0, 2.0])
    # l1: |0| + |1| + |1| over 3; mse: the same squares
    assert loss_fn("l1", pred, y).item() == pytest.approx(2 / 3)
    assert loss_fn("mse", pred, y).item() == pytest.approx(2 / 3)
    # rank: of the 6 ordered pairs with different MOS, (1, 2) and (2, 1) are ordered against the MOS by 1 each
    assert loss_fn("l1+rank", pred, y).item() == pytest.approx(2 / 3 + 2 / 6)
    assert loss_fn("l1+rank", pred, y, rank_weight=2.0).item() == pytest.approx(2 / 3 + 2 * 2 / 6)
    # plcc: centred (-1, 0, 1) and (-1, 1, 0): r = 1 / 2 -> (1 - r) / 2
    assert loss_fn("plcc", pred, y).item() == pytest.approx(0.25, abs=1e-6)
    assert loss_fn("plcc+rank", pred, y).item() == pytest.approx(0.25 + 1 / 3, abs=1e-6)


def test_losses_are_zero_for_perfect_predictions_and_rank_ignores_ties() -> None:
    y = torch.tensor([1.0, 2.0, 4.0, 3.0])
    for name in LOSSES:
        assert loss_fn(name, y.clone(), y).item() == pytest.approx(0.0, abs=1e-6), name
    # the rank term of an order-preserving prediction on another scale is zero; only the l1 part remains
    assert loss_fn("l1+rank", 2 * y, y).item() == pytest.approx(float(y.mean()))
    # all MOS tied: no pair to rank, a zero that still has a gradient
    pred = torch.tensor([3.0, 1.0, 2.0], requires_grad=True)
    tied = torch.full((3,), 2.0)
    loss = loss_fn("plcc+rank", pred, tied) - loss_fn("plcc", pred, tied)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss_fn("l1+rank", pred, tied).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_rank_loss_gradient_pushes_misordered_pair_apart() -> None:
    pred = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = torch.tensor([1.0, 3.0, 2.0])
    (loss_fn("l1+rank", pred, y) - loss_fn("l1", pred, y)).backward()
    g = pred.grad
    assert g[0] == 0.0  # sample 0 is ordered right against both others
    assert g[1] < 0 < g[2]  # descending the loss raises sample 1 and lowers sample 2


def test_unknown_loss_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown loss 'huber'"):
        loss_fn("huber", torch.zeros(2), torch.zeros(2))
    with pytest.raises(ConfigError, match="unknown loss 'huber'"):
        TrainConfig(loss="huber").validate()


# ---------------------------------------------------------------------------------------------------------------
# the run directory, best epoch, determinism, resuming


def test_run_directory_holds_config_metrics_and_checkpoints(reference_run) -> None:
    run = reference_run.run_dir
    for name in ("config.json", "metrics.csv", "metrics.json", "best.safetensors", "last.safetensors", "resume.pt"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.partial")) and not list(run.glob(".*.partial"))

    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["epochs"] == 5 and cfg["train"]["seed"] == 11 and cfg["train"]["lr"] == 1e-3
    assert cfg["extraction"] == TABLE_SETTINGS.to_dict()
    assert cfg["backbones"] == FAKE_BACKBONES
    assert (cfg["n_train"], cfg["n_val"]) == (16, 8)

    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert {"train_loss", "val_srcc", "val_plcc", "val_krcc", "val_rmse", "val_main_score", "lr"} <= rows[0].keys()
    hist = json.loads((run / "metrics.json").read_text())
    assert len(hist) == 5
    for r, h in zip(rows, hist):
        for k in ("train_loss", "val_srcc", "val_main_score"):
            assert float(r[k]) == pytest.approx(h[k], rel=1e-9)
            assert math.isfinite(h[k])

    resume = torch.load(run / "resume.pt", map_location="cpu", weights_only=True)
    assert resume["epoch"] == 5


def test_best_checkpoint_is_the_epoch_with_the_best_validation_main_score(reference_run) -> None:
    run = reference_run.run_dir
    with open(run / "metrics.csv", newline="") as f:
        scores = [float(r["val_main_score"]) for r in csv.DictReader(f)]
    best_epoch = int(np.argmax(scores)) + 1
    assert reference_run.best_epoch == best_epoch
    assert reference_run.best_metrics["main_score"] == pytest.approx(max(scores))
    best = load_checkpoint(run / "best.safetensors")
    last = load_checkpoint(run / "last.safetensors")
    assert best.meta["epoch"] == best_epoch and last.meta["epoch"] == 5
    assert best.meta["val"]["main_score"] == pytest.approx(max(scores))
    assert best.settings == TABLE_SETTINGS and best.backbones == FAKE_BACKBONES
    # the best checkpoint reproduces the validation numbers recorded for its epoch
    from thqa.analysis.metrics import evaluate

    hist = reference_run.history[best_epoch - 1]
    m = evaluate(predict_table(best.model, VAL_TABLE, TABLE_SETTINGS), VAL_TABLE.mos)
    assert m["srcc"] == pytest.approx(hist["val_srcc"], abs=1e-6)
    assert m["main_score"] == pytest.approx(hist["val_main_score"], abs=1e-6)


def test_a_negative_correlation_is_never_the_best_epoch(tmp_path, monkeypatch) -> None:
    """Issue 24 fault 7: the challenge's score takes |SRCC|, so an epoch with SRCC -0.36 (main score 0.36 with PLCC
    0.36 after the fitted curve) was chosen over one with SRCC 0.30. The choice is made on the signed score."""
    import thqa.training.loop as train_mod

    scripted = iter([(0.10, 0.12), (-0.36, 0.36), (0.30, 0.31)])

    def fake_evaluate(pred, mos, *, fit="poly3"):
        s, p = next(scripted)
        return {"srcc": s, "plcc": p, "krcc": s, "rmse": 1.0, "main_score": (abs(s) + abs(p)) / 2, "n": len(mos)}

    monkeypatch.setattr(thqa.training.loop, "evaluate", fake_evaluate)  # the loop validates with it
    res = _train(tmp_path / "run", replace(REF_CONFIG, epochs=3))
    assert res.best_epoch == 3 and res.best_metrics["srcc"] == pytest.approx(0.30)
    assert res.best_metrics["main_score"] == pytest.approx(0.305)  # the challenge's figure stays for reporting
    assert [r["val_selection_score"] for r in res.history] == pytest.approx([0.11, -0.36, 0.305])
    assert load_checkpoint(tmp_path / "run" / "best.safetensors").meta["epoch"] == 3


def test_best_epoch_follows_validation_not_training_loss_and_skips_undefined_epochs(tmp_path, monkeypatch) -> None:
    """Scripted validation scores: epoch 1 undefined (MetricError), then 0.3, 0.9, 0.5 -> epoch 3 is the best."""
    import thqa.training.loop as train_mod

    scripted = iter([None, 0.3, 0.9, 0.5])

    def fake_evaluate(pred, mos, *, fit="poly3"):
        s = next(scripted)
        if s is None:
            raise MetricError("all predictions are equal")
        return {"srcc": s, "plcc": s, "krcc": s, "rmse": 1.0 - s, "main_score": s, "n": len(mos)}

    monkeypatch.setattr(thqa.training.loop, "evaluate", fake_evaluate)  # the loop validates with it
    res = _train(tmp_path / "run", replace(REF_CONFIG, epochs=4))
    assert res.best_epoch == 3
    assert math.isnan(res.history[0]["val_main_score"])
    assert load_checkpoint(tmp_path / "run" / "best.safetensors").meta["epoch"] == 3
    assert load_checkpoint(tmp_path / "run" / "last.safetensors").meta["epoch"] == 4


def test_seeded_run_repeats_to_the_same_numbers(reference_run, tmp_path) -> None:
    again = _train(tmp_path / "again")
    assert _numbers(again.history) == _numbers(reference_run.history)
    assert again.best_epoch == reference_run.best_epoch
    _assert_same_tensors(again.checkpoint, reference_run.checkpoint)
    _assert_same_tensors(again.run_dir / "last.safetensors", reference_run.run_dir / "last.safetensors")
    other = _train(tmp_path / "other-seed", replace(REF_CONFIG, seed=12, epochs=2))
    assert _numbers(other.history) != _numbers(reference_run.history)[:2]


class _Interrupted(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_numbers_as_an_uninterrupted_one(reference_run, tmp_path) -> None:
    run = tmp_path / "run"

    def stop_after_epoch_2(row: dict) -> None:  # called after the epoch's checkpoints and resume.pt are written
        if row["epoch"] == 2:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        _train(run, on_epoch=stop_after_epoch_2)
    assert torch.load(run / "resume.pt", map_location="cpu", weights_only=True)["epoch"] == 2
    assert len(json.loads((run / "metrics.json").read_text())) == 2

    epochs_run: list[int] = []
    res = _train(run, on_epoch=lambda row: epochs_run.append(row["epoch"]))
    assert epochs_run == [3, 4, 5]  # resumed after epoch 2, did not start over
    assert _numbers(res.history) == _numbers(reference_run.history)
    assert res.best_epoch == reference_run.best_epoch
    assert res.best_metrics == pytest.approx(reference_run.best_metrics)
    _assert_same_tensors(res.checkpoint, reference_run.checkpoint)
    _assert_same_tensors(run / "last.safetensors", reference_run.run_dir / "last.safetensors")
    assert len(json.loads((run / "metrics.json").read_text())) == 5

    # a finished run called again does nothing more and gives the same answer
    epochs_run.clear()
    again = _train(run, on_epoch=lambda row: epochs_run.append(row["epoch"]))
    assert epochs_run == [] and again.best_epoch == res.best_epoch


def test_more_epochs_extend_a_finished_run_to_the_numbers_of_a_longer_one(reference_run, tmp_path) -> None:
    """A finished 2-epoch run called with epochs=5 goes on from epoch 3 and ends where a 5-epoch run ends."""
    run = tmp_path / "run"
    _train(run, replace(REF_CONFIG, epochs=2))
    epochs_run: list[int] = []
    res = _train(run, on_epoch=lambda row: epochs_run.append(row["epoch"]))
    assert epochs_run == [3, 4, 5]
    assert _numbers(res.history) == _numbers(reference_run.history)
    _assert_same_tensors(run / "last.safetensors", reference_run.run_dir / "last.safetensors")


def test_another_setting_on_an_existing_run_is_refused(reference_run, tmp_path) -> None:
    run = tmp_path / "run"
    _train(run, replace(REF_CONFIG, epochs=2))
    with pytest.raises(ConfigError, match="different configuration"):
        _train(run, replace(REF_CONFIG, epochs=2, lr=5e-4))


# ---------------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"val": 4}, "validation set has 4 samples; at least 5"),
        ({"train": 1}, "training set has 1 samples"),
        ({"config": TrainConfig(loss="huber")}, "unknown loss 'huber'"),
        ({"config": TrainConfig(epochs=0)}, "epochs and batch_size must be >= 1"),
        ({"config": TrainConfig(batch_size=1)}, "batch_size must be >= 2"),
        ({"config": TrainConfig(lr=0.0)}, "learning rates must be > 0"),
        ({"config": TrainConfig(fusion={"bogus": 1})}, "unknown fusion settings"),
        ({"config": TrainConfig(finetune_spatial=True)}, "needs the Swin-T model and cached frames"),
    ],
)
def test_bad_training_setups_are_config_errors(tmp_path, kwargs: dict, match: str) -> None:
    tr = make_table(kwargs.pop("train", 4), 1)
    va = make_table(kwargs.pop("val", 5), 2)
    with pytest.raises(ConfigError, match=match):
        train(tr, va, settings=TABLE_SETTINGS, backbones=FAKE_BACKBONES, run_dir=tmp_path / "run", **kwargs)
    assert not (tmp_path / "run" / "resume.pt").exists()


def test_unknown_fit_is_rejected_before_training(tmp_path) -> None:
    """An unknown ``fit`` should be a ConfigError up front, not a full training run whose every epoch is undefined."""
    with pytest.raises(ConfigError, match="fit"):
        train(
            make_table(4, 1), make_table(5, 2), settings=TABLE_SETTINGS, backbones=FAKE_BACKBONES,
            run_dir=tmp_path / "run", config=TrainConfig(epochs=1, fit="bogus"),
        )


def test_run_directory_with_another_config_is_refused(reference_run, tmp_path) -> None:
    run = tmp_path / "run"
    _train(run, replace(REF_CONFIG, epochs=1))
    before = (run / "config.json").read_text()
    with pytest.raises(ConfigError, match="different configuration; choose another --out"):
        _train(run, replace(REF_CONFIG, epochs=1, lr=5e-4))
    with pytest.raises(ConfigError, match="different configuration"):
        train(TRAIN_TABLE, VAL_TABLE, settings=ExtractionSettings(n_clips=2), backbones=FAKE_BACKBONES, run_dir=run, config=replace(REF_CONFIG, epochs=1))
    other_bb = {**FAKE_BACKBONES, "swin_t": {**FAKE_BACKBONES["swin_t"], "sha256": "3" * 64}}
    with pytest.raises(ConfigError, match="different configuration"):
        train(TRAIN_TABLE, VAL_TABLE, settings=TABLE_SETTINGS, backbones=other_bb, run_dir=run, config=replace(REF_CONFIG, epochs=1))
    assert (run / "config.json").read_text() == before


def test_load_table_names_the_samples_missing_from_the_cache(tmp_path, good_video, backbones) -> None:
    samples = [Sample(Path(good_video), 3.0, "g", None, Path(good_video).name)]
    with pytest.raises(ConfigError, match=r"1 of the training samples are not in the feature cache.*good_1s\.mp4.*thqa extract"):
        load_table(samples, FeatureCache(tmp_path / "cache"), CORPUS_SETTINGS, backbones.infos, what="training samples")


# ---------------------------------------------------------------------------------------------------------------
# the real thing: features of degraded talking heads, frozen backbones


@pytest.mark.slow
def test_frozen_training_learns_quality_that_holds_on_held_out_heads(corpus, backbones, tmp_path) -> None:
    """Train on 4 heads, pick the epoch on 2 others, test on 2 more never seen: MOS (pseudo-MOS of the audio-noise
    level) is predicted well above chance on content the model never saw.

    Observed with random-init backbones on this corpus over split seeds 0/1/2 x training seeds 3407/1/2 (9 runs):
    best validation SRCC 0.88-0.98, held-out test SRCC 0.73-0.98 (this configuration: 0.976 / 0.927). Chance is 0
    (sd ~0.38 for 8 samples). With loss "l1" instead of "plcc+rank" the test SRCC dropped to 0.44 in some runs.
    """
    from thqa.training.experiment import evaluate_checkpoint, train_run

    rest, test = split_by_group(corpus.samples, val_fraction=0.25, seed=0)
    train_s, val_s = split_by_group(rest, val_fraction=1 / 3, seed=0)
    assert (len(train_s), len(val_s), len(test)) == (16, 8, 8)
    assert not shared_groups(train_s, val_s) and not shared_groups(rest, test)

    cfg = TrainConfig(epochs=15, batch_size=4, lr=1e-3, loss="plcc+rank", seed=3407)
    result, summary = train_run(
        train_s, val_s, cache_dir=corpus.cache_dir, run_dir=tmp_path / "run", config=cfg,
        settings=corpus.settings, backbones=backbones, progress=False,
    )
    assert (summary.done, summary.reused, summary.failed) == (0, 24, 0)  # everything came from the cache
    val_srcc = result.best_metrics["srcc"]
    ev = evaluate_checkpoint(result.checkpoint, test, cache_dir=corpus.cache_dir, backbones=backbones, progress=False)
    print(f"frozen training: best epoch {result.best_epoch}, val SRCC {val_srcc:.3f}, test SRCC {ev.metrics['srcc']:.3f}")
    assert val_srcc > 0.7
    assert ev.metrics["srcc"] > 0.6
    assert ev.extraction.reused == len(test) and ev.extraction.done == 0
    # each held-out head: its untouched original is predicted above its worst (0 dB SNR) copy
    pred = dict(zip(ev.paths, ev.predictions))
    for s in test:
        if s.mos == max(t.mos for t in test):
            worst = next(t for t in test if t.group == s.group and t.mos == min(t.mos for t in test))
            assert pred[str(s.path)] > pred[str(worst.path)], s.group


@pytest.mark.slow
def test_finetuning_changes_swin_weights_and_the_scorer_uses_them(corpus, backbones, tmp_path) -> None:
    """One fine-tuning epoch from cached frames: Swin-T's weights change, travel in the checkpoint under ``spatial.``,
    and Scorer(checkpoint) and evaluate_checkpoint predict with them; the shared frozen Swin-T is untouched."""
    from thqa.training.experiment import evaluate_checkpoint, train_run
    from thqa.scoring.scorer import Scorer
    from thqa.features.weights import state_digest

    frozen_before = state_digest(backbones.spatial)
    assert frozen_before == backbones.spatial_info.sha256
    by_group: dict[str, list[Sample]] = {}
    for s in corpus.samples:
        by_group.setdefault(s.group, []).append(s)
    train_s = [by_group["head0"][0], by_group["head0"][-1]]
    val_s = by_group["head1"] + [by_group["head2"][0]]
    cfg = TrainConfig(finetune_spatial=True, epochs=1, batch_size=2, seed=5)
    result, summary = train_run(
        train_s, val_s, cache_dir=corpus.cache_dir, run_dir=tmp_path / "ft", config=cfg,
        settings=corpus.settings, backbones=backbones, progress=False,
    )
    assert summary.reused == 7 and summary.done == 0  # features and frames were cached
    assert state_digest(backbones.spatial) == frozen_before  # fine-tuning trained a copy

    ck = load_checkpoint(result.checkpoint)
    assert ck.spatial_state is not None and ck.meta["finetune_spatial"] is True
    frozen = backbones.spatial.state_dict()
    assert ck.spatial_state.keys() == frozen.keys()
    changed = [k for k in frozen if not torch.equal(ck.spatial_state[k].float(), frozen[k].float())]
    assert any("swin" in k or "layers" in k for k in changed), "no Swin-T weight changed"
    assert len(changed) > len(frozen) // 2

    scorer = Scorer(result.checkpoint, random_init=True, device="cpu", precision="fp32")  # as the training code predicts
    assert scorer.backbones.spatial_info.source == "checkpoint"
    sd = scorer.backbones.spatial.state_dict()
    assert all(torch.equal(sd[k], ck.spatial_state[k]) for k in ck.spatial_state)
    # the scorer's prediction for a file equals the training code's prediction from its cached frames
    sample = val_s[0]
    table = load_table([sample], FeatureCache(corpus.cache_dir), corpus.settings, backbones.infos, frames=True)
    expected = predict_table(ck.model, table, corpus.settings, spatial_net=scorer.backbones.spatial)[0]
    got = scorer.score(sample.path).mos
    assert got == pytest.approx(float(expected), rel=1e-4, abs=1e-4)

    ev = evaluate_checkpoint(result.checkpoint, val_s, cache_dir=corpus.cache_dir, backbones=backbones, progress=False)
    assert ev.metrics["srcc"] == pytest.approx(result.history[0]["val_srcc"], abs=1e-6)
