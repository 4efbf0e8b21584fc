"""Recipes and the switches back to the method (README: "Departures from the method").

* the ``winner`` recipe's values against METHOD.md's list (parsed from ../shared/METHOD.md when it is there);
* every fusion switch changes the model as documented (built models compared: shapes, parameters, outputs with the
  same weights) and every audio switch changes the features' cache key; default keys stay what they were;
* options override a recipe, config.json records every value and where it came from, checkpoints record the recipe
  (old headers without it still load), and ``thqa score`` shows it;
* a smoke test (slow): ``thqa train --recipe winner`` on real files of ../shared/media with random-init backbones,
  2 epochs of fine-tuning ECA + Swin-T, then ``thqa score`` with its checkpoint.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from thqa.models.checkpoint import load_checkpoint, parse_header, save_checkpoint
from thqa.errors import ConfigError
from thqa.features.audio import METHOD_AUDIO, AudioSettings
from thqa.models.fusion import FusionConfig, FusionModel
from thqa.features.pipeline import ExtractionSettings
from thqa.training.recipes import FROZEN, OPTION_NAMES, RECIPES, WINNER, WINNER_EXACT, resolve
from thqa.training.loop import TrainConfig, train

from test_train import FAKE_BACKBONES, make_table

METHOD_MD = Path(__file__).resolve().parents[2].parent / "shared" / "METHOD.md"

#: METHOD.md, "Facts from the public code" (training, fusion, audio net) - transcribed; checked against the file below
METHOD_FACTS = {
    "train.seed": 3407,
    "train.lr": 1e-5,  # "Adam, lr 1e-5" (the whole model)
    "train.lr_spatial": 1e-5,  # "Swin-T is fine-tuned with the rest of the model (learning rate 1e-5)"
    "train.weight_decay": 1e-7,
    "train.step_size": 2,  # "StepLR every 2 epochs"
    "train.gamma": 0.95,
    "train.epochs": 50,
    "train.batch_size": 8,  # given for the baseline ("same optimiser, batch 8"); the winner builds on its code
    "train.loss": "l1+rank",  # "L1 + a pairwise ranking hinge loss"
    "train.finetune_spatial": True,
    "fusion.head": "linear",  # "3200 -> Linear -> a score per clip"
    "fusion.lstm_pool": "mean",  # "averaged to 128 numbers"
    "fusion.lstm_hidden": [128, 64],  # "512 -> 2x128, 256 -> 2x64"
    "fusion.audio_embed": 512,  # "Linear to 512"
    "fusion.dropout": 0.5,
    "fusion.spatial_dim": 768,
    "fusion.temporal_dim": 2304,
    "fusion.audio_input_norm": False,  # blocks: Conv, BN, MaxPool; LeakyReLU - nothing before block 1
    "fusion.embed_activation": False,  # "Linear to 512, dropout 0.5"
}
#: extraction facts of the public code that winner-exact also takes ("clip i starts at second i")
METHOD_EXTRACTION_FACTS = {"extraction.clip_sampling": "first"}
#: the public code's audio settings (METHOD.md: 128 bins each, chroma_cqt with 128 bins per octave, 896 filters)
METHOD_AUDIO_FACTS = {"n_bins": 128, "cqt_kind": "chroma", "cqt_bins": 896, "cqt_bins_per_octave": 128}


def _method_text() -> str:
    if not METHOD_MD.is_file():
        pytest.skip(f"{METHOD_MD} is absent")
    return " ".join(METHOD_MD.read_text(encoding="utf-8").split())


def test_method_facts_are_what_method_md_says() -> None:
    """The transcription above against METHOD.md's own words (a changed METHOD.md fails here)."""
    t = _method_text()
    m = re.search(r"Training: seed (\d+); Adam, lr ([\d.e-]+), weight decay ([\d.e-]+); StepLR every (\d+) epochs, gamma ([\d.]+); (\d+) epochs; loss = L1 \+ a pairwise ranking hinge loss", t)
    assert m, "METHOD.md's training line changed"
    seed, lr, wd, step, gamma, epochs = m.groups()
    assert (int(seed), float(lr), float(wd), int(step), float(gamma), int(epochs)) == (
        METHOD_FACTS["train.seed"], METHOD_FACTS["train.lr"], METHOD_FACTS["train.weight_decay"],
        METHOD_FACTS["train.step_size"], METHOD_FACTS["train.gamma"], METHOD_FACTS["train.epochs"],
    )
    assert int(re.search(r"same optimiser, batch (\d+)", t).group(1)) == METHOD_FACTS["train.batch_size"]
    assert float(re.search(r"Swin-T is fine-tuned with the rest of the model \(learning rate ([\d.e-]+)\)", t).group(1)) == METHOD_FACTS["train.lr_spatial"]
    assert "= 3200 -> Linear -> a score per clip" in t
    m = re.search(r"Linear to (\d+), dropout ([\d.]+); two Bi-LSTM layers \((\d+) -> 2x(\d+), (\d+) -> 2x(\d+)\); averaged to (\d+) numbers", t)
    assert m, "METHOD.md's audio net line changed"
    assert int(m.group(1)) == METHOD_FACTS["fusion.audio_embed"] and float(m.group(2)) == METHOD_FACTS["fusion.dropout"]
    assert [int(m.group(4)), int(m.group(6))] == METHOD_FACTS["fusion.lstm_hidden"] and int(m.group(7)) == 2 * METHOD_FACTS["fusion.lstm_hidden"][1]
    assert re.search(r"\[768 spatial \| 2304 temporal \| 128 audio\]", t)
    m = re.search(r"chroma_cqt with (\d+) bins per octave \((\d+) filters\)", t)
    assert (int(m.group(1)), int(m.group(2))) == (METHOD_AUDIO_FACTS["cqt_bins_per_octave"], METHOD_AUDIO_FACTS["cqt_bins"])
    assert "four features with 128 bins each" in t
    assert "Clips: clip i starts at second i." in t  # METHOD_EXTRACTION_FACTS


@pytest.mark.parametrize("recipe", [WINNER, WINNER_EXACT], ids=lambda r: r.name)
def test_winner_recipe_is_the_method(recipe) -> None:
    values = recipe.values()
    for key, want in METHOD_FACTS.items():
        assert values[key] == want, key
    model = FusionModel(recipe.fusion)
    assert [type(m).__name__ for m in model.head] == ["Linear"] and model.head[0].in_features == 3200
    assert recipe.audio == (AudioSettings(**METHOD_AUDIO) if recipe is WINNER_EXACT else AudioSettings())


def test_winner_exact_has_the_public_codes_audio_and_fp32() -> None:
    a = WINNER_EXACT.audio
    for k, v in METHOD_AUDIO_FACTS.items():
        assert getattr(a, k) == v, k
    assert (a.sample_rate, a.n_fft, a.chroma_tuning, a.mfcc_top_db) == (22050, 2048, None, 80.0)  # librosa's defaults
    assert WINNER_EXACT.precision == "fp32" and WINNER.precision == "auto"
    for k, v in METHOD_EXTRACTION_FACTS.items():
        assert WINNER_EXACT.values()[k] == v, k


def test_frozen_recipe_is_todays_default() -> None:
    plan = resolve()
    assert plan.recipe is None and plan.precision == "auto"
    assert set(plan.sources.values()) == {"default"}
    fields = {k: v for k, v in vars(plan.config).items() if k not in ("recipe", "sources")}
    assert fields == {k: v for k, v in vars(TrainConfig()).items() if k not in ("recipe", "sources")}
    assert plan.settings == ExtractionSettings()
    named = resolve("frozen")
    assert named.recipe == "frozen" and named.config.sources["train.lr"] == "recipe" and named.config.lr == FROZEN.lr == 1e-4


# -- options over a recipe ------------------------------------------------------------------------------------
def test_options_override_the_recipe_and_say_so() -> None:
    plan = resolve("winner", epochs=2, head="mlp", mfcc_top_db=80.0, n_clips=4)
    c, s = plan.config, plan.sources
    assert (c.epochs, c.lr, c.finetune_spatial) == (2, 1e-5, True)
    assert FusionConfig.from_dict(c.fusion).head == "mlp" and FusionConfig.from_dict(c.fusion).lstm_pool == "mean"
    assert plan.settings.n_clips == 4 and plan.settings.audio.mfcc_top_db == 80.0
    assert s["train.epochs"] == s["fusion.head"] == s["extraction.audio.mfcc_top_db"] == s["extraction.n_clips"] == "option"
    assert s["train.lr"] == s["fusion.lstm_pool"] == s["extraction.audio.sample_rate"] == s["precision"] == "recipe"
    assert s["train.fit"] == s["extraction.clip_frames"] == "default"
    assert set(s) == set(OPTION_NAMES.values())


def test_audio_map_size_options_carry_into_the_fusion_model() -> None:
    plan = resolve("winner", n_bins=64, n_frames=16)
    f = FusionConfig.from_dict(plan.config.fusion)
    assert (f.audio_bins, f.audio_frames) == (64, 16) == (plan.settings.audio.n_bins, plan.settings.audio.n_frames)


@pytest.mark.parametrize(
    "recipe, options, match",
    [
        ("best", {}, "unknown recipe 'best'; choose one of frozen, winner, winner-exact"),
        ("winner", {"learning_rate": 1e-3}, "unknown option"),
        ("winner", {"epochs": None}, "epochs given as None"),
        ("winner", {"head": "deep"}, "head must be one of mlp, linear"),
        ("winner", {"lstm_pool": "max"}, "lstm_pool must be one of clip, mean"),
        ("winner", {"cqt_kind": "chroma"}, "cqt_kind 'chroma' folds whole octaves"),
        ("winner", {"precision": "fp16"}, "precision must be one of auto, fp32, bf16"),
        ("winner", {"batch_size": 1}, "batch_size must be >= 2"),
    ],
)
def test_bad_recipes_and_options_are_config_errors(recipe, options, match) -> None:
    with pytest.raises(ConfigError, match=re.escape(match)):
        resolve(recipe, **options)


# -- each fusion switch changes the model as documented -----------------------------------------------------------
def _inputs(b: int = 2, n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 768, generator=g), torch.randn(b, n, 2304, generator=g), torch.randn(b, n, 4, 128, 32, generator=g)


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_head_switch_linear_is_one_linear_3200_to_score() -> None:
    mlp, lin = FusionModel(FusionConfig()), FusionModel(FusionConfig(head="linear"))
    assert [type(m).__name__ for m in mlp.head] == ["LayerNorm", "Linear", "LeakyReLU", "Dropout", "Linear"]
    assert [type(m).__name__ for m in lin.head] == ["Linear"] and tuple(lin.head[0].weight.shape) == (1, 3200)
    assert _n_params(mlp) - _n_params(lin) == (2 * 3200) + (3200 * 128 + 128) + (128 + 1) - (3200 + 1)
    lin.eval()
    sp, tp, au = _inputs()
    mos, clips = lin(sp, tp, au)
    x = torch.cat([sp, tp, lin.audio_net(au)], dim=-1)
    torch.testing.assert_close(clips, x @ lin.head[0].weight[0] + lin.head[0].bias)  # a score per clip: one Linear
    torch.testing.assert_close(mos, clips.mean(dim=1))


def test_lstm_pool_mean_averages_the_bilstm_outputs_over_clips() -> None:
    torch.manual_seed(0)
    per_clip = FusionModel(FusionConfig()).eval()
    pooled = FusionModel(FusionConfig(lstm_pool="mean")).eval()
    pooled.load_state_dict(per_clip.state_dict())  # same parameters: pooling adds none
    _, _, au = _inputs(n=4)
    a, b = per_clip.audio_net(au), pooled.audio_net(au)
    assert b.shape == a.shape == (2, 4, 128)
    torch.testing.assert_close(b, a.mean(dim=1, keepdim=True).expand_as(a))  # 128 numbers per video, every clip the same
    assert (a[:, 0] - a[:, 1]).abs().max() > 1e-4  # per clip they differ: the comparison can fail


def test_audio_input_norm_switch_removes_only_the_batchnorm() -> None:
    torch.manual_seed(0)
    with_bn = FusionModel(FusionConfig()).eval()
    without = FusionModel(FusionConfig(audio_input_norm=False)).eval()
    keys = set(with_bn.state_dict()) - set(without.state_dict())
    assert keys == {f"audio_net.norm.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    without.load_state_dict({k: v for k, v in with_bn.state_dict().items() if k not in keys})
    _, _, au = _inputs()
    torch.testing.assert_close(with_bn.audio_net(au), without.audio_net(au), atol=1e-3, rtol=1e-3)  # a fresh BN is ~identity in eval
    with_bn.audio_net.norm.running_mean.fill_(5.0)
    assert (with_bn.audio_net(au) - without.audio_net(au)).abs().max() > 1e-3  # with statistics it does change the input


def test_embed_activation_switch_removes_the_leakyrelu_after_the_linear_512() -> None:
    torch.manual_seed(0)
    act = FusionModel(FusionConfig()).eval()
    plain = FusionModel(FusionConfig(embed_activation=False)).eval()
    assert [type(m).__name__ for m in act.audio_net.embed] == ["Flatten", "Linear", "LeakyReLU", "Dropout"]
    assert [type(m).__name__ for m in plain.audio_net.embed] == ["Flatten", "Linear", "Dropout"]
    plain.load_state_dict(act.state_dict())  # no parameters in an activation
    _, _, au = _inputs()
    assert (act.audio_net(au) - plain.audio_net(au)).abs().max() > 1e-4


def test_audio_widths_switch_sets_the_blocks_channels() -> None:
    m = FusionModel(FusionConfig(audio_widths=(16, 32, 64)))
    convs = [c for blk in (m.audio_net.freq_block, m.audio_net.time_block, m.audio_net.fusion_block) for c in blk if isinstance(c, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 16, 32, 32, 32, 64, 64, 64]
    assert m.audio_net.embed[1].in_features == 64 * (128 // 16) * (32 // 4)
    assert m(*_inputs())[0].shape == (2,)


# -- each audio switch changes the features' cache key -----------------------------------------------------------
def test_every_audio_switch_changes_the_cache_key_and_defaults_keep_theirs() -> None:
    from thqa.data.extract import features_key

    base = ExtractionSettings()
    key = lambda s: features_key("ab" * 32, s, FAKE_BACKBONES, provenance={"features_version": 2})  # noqa: E731
    # the default key is built from the same settings dict as before the switches existed (pinned in
    # test_audio_features.test_default_settings_keep_their_cache_key_dict): features cached then stay valid
    assert set(base.to_dict()["audio"]) == {"sample_rate", "n_bins", "n_frames", "n_fft", "cqt_bins", "cqt_bins_per_octave", "cqt_fmin", "context"}
    switches = {
        "cqt": dict(cqt_kind="chroma", cqt_bins=896, cqt_bins_per_octave=128),
        "sample_rate": dict(sample_rate=22050),
        "n_fft": dict(n_fft=1024),
        "chroma_tuning": dict(chroma_tuning=None),
        "mfcc_top_db": dict(mfcc_top_db=80.0),
    }
    keys = {name: key(ExtractionSettings(audio=AudioSettings(**kw)).validate()) for name, kw in switches.items()}
    keys["clip_sampling"] = key(ExtractionSettings(clip_sampling="first"))
    assert len(set(keys.values()) | {key(base)}) == len(switches) + 2
    assert key(ExtractionSettings(audio=AudioSettings(**METHOD_AUDIO))) not in set(keys.values()) | {key(base)}


def test_clip_sampling_first_reads_the_first_seconds_and_has_its_own_frames() -> None:
    """The method reads seconds 0..5 of a long video; thqa spreads them. First frames come from other seconds, so
    the frames entry has another key; a short video reads the same seconds either way."""
    from thqa.data.extract import frames_key
    from thqa.media.sampling import clip_seconds

    assert clip_seconds(16.6, n_clips=6) == [0, 2, 5, 8, 10, 13]
    assert clip_seconds(16.6, n_clips=6, spread=False) == [0, 1, 2, 3, 4, 5]
    assert clip_seconds(3.9, n_clips=6, spread=False) == clip_seconds(3.9, n_clips=6) == [0, 1, 2, 0, 1, 2]
    first = ExtractionSettings(clip_sampling="first")
    assert frames_key("ab" * 32, first) != frames_key("ab" * 32, ExtractionSettings())
    assert "clip_sampling" not in ExtractionSettings().to_dict() and first.to_dict()["clip_sampling"] == "first"
    assert resolve("winner-exact").settings.clip_sampling == "first" and resolve("winner").settings.clip_sampling == "spread"
    with pytest.raises(ConfigError, match="clip_sampling must be one of spread, first"):
        ExtractionSettings(clip_sampling="last").validate()


# -- config.json, checkpoints, score ------------------------------------------------------------------------------
def _tiny_run(tmp_path: Path, config: TrainConfig) -> tuple[dict, Path]:
    res = train(make_table(6, 1), make_table(5, 2), settings=ExtractionSettings(n_clips=1), backbones=FAKE_BACKBONES,
                run_dir=tmp_path / "run", config=config)
    return json.loads((tmp_path / "run" / "config.json").read_text()), res.checkpoint


def test_config_json_records_every_value_and_where_it_came_from(tmp_path) -> None:
    plan = resolve("winner", finetune_spatial=False, epochs=1, batch_size=4)  # the winner's model on cached features
    cfg, ck_path = _tiny_run(tmp_path, plan.config)
    rec = cfg["recipe"]
    assert rec["name"] == "winner"
    settings = rec["settings"]
    assert set(settings) == set(OPTION_NAMES.values())
    assert settings["train.lr"] == {"value": 1e-5, "from": "recipe"}
    assert settings["train.epochs"] == {"value": 1, "from": "option"}
    assert settings["train.finetune_spatial"] == {"value": False, "from": "option"}
    assert settings["fusion.head"] == {"value": "linear", "from": "recipe"}
    assert settings["train.fit"] == {"value": "poly3", "from": "default"}
    assert settings["extraction.audio.mfcc_top_db"] == {"value": None, "from": "recipe"}
    assert "recipe" not in cfg["train"] and "sources" not in cfg["train"]

    ck = load_checkpoint(ck_path)
    assert ck.recipe == "winner"
    assert ck.meta["recipe"] == {"name": "winner", "options": {"train.batch_size": 4, "train.epochs": 1, "train.finetune_spatial": False}}
    assert ck.model.config.head == "linear" and ck.model.config.lstm_pool == "mean"

    from thqa.cli.outputs import provenance

    line = provenance(ck)
    assert "recipe winner with train.batch_size=4, train.epochs=1, train.finetune_spatial=false" in line
    assert "frozen Swin-T" in line and "random-init backbones" in line


def test_a_config_without_recipe_counts_changed_values_as_options(tmp_path) -> None:
    cfg, ck_path = _tiny_run(tmp_path, TrainConfig(epochs=1, batch_size=4, lr=3e-4))
    s = cfg["recipe"]["settings"]
    assert cfg["recipe"]["name"] is None
    assert s["train.lr"] == {"value": 3e-4, "from": "option"} and s["train.loss"]["from"] == "default"
    assert load_checkpoint(ck_path).meta["recipe"]["name"] is None


def test_resuming_a_run_folder_written_before_recipes(tmp_path) -> None:
    """A config.json without the recipe block and with the old fusion fields resumes (same values, same run)."""
    cfg, _ = _tiny_run(tmp_path, resolve(epochs=1, batch_size=4).config)
    old = dict(cfg)
    del old["recipe"]
    for k in ("head", "lstm_pool", "audio_input_norm", "embed_activation"):
        del old["train"]["fusion"][k]
    (tmp_path / "run" / "config.json").write_text(json.dumps(old))
    plan2 = resolve(epochs=2, batch_size=4)
    res = train(make_table(6, 1), make_table(5, 2), settings=ExtractionSettings(n_clips=1), backbones=FAKE_BACKBONES,
                run_dir=tmp_path / "run", config=plan2.config)
    assert [h["epoch"] for h in res.history] == [1, 2]
    with pytest.raises(ConfigError, match="different configuration"):  # another head is another run
        train(make_table(6, 1), make_table(5, 2), settings=ExtractionSettings(n_clips=1), backbones=FAKE_BACKBONES,
              run_dir=tmp_path / "run", config=resolve(epochs=2, batch_size=4, head="linear").config)


def _header(model: FusionModel, **meta) -> dict:
    from thqa import __version__
    from thqa.models.checkpoint import FORMAT

    return {"format": FORMAT, "thqa_version": __version__, "fusion_config": model.config.to_dict(),
            "extraction": ExtractionSettings().to_dict(), "backbones": FAKE_BACKBONES, "finetuned_spatial": False, "meta": meta}


def test_old_headers_without_the_new_fields_load_with_todays_model() -> None:
    h = _header(FusionModel())
    for k in ("head", "lstm_pool", "audio_input_norm", "embed_activation"):
        del h["fusion_config"][k]
    cfg, settings, _, _, meta = parse_header(h)
    assert cfg == FusionConfig() and settings == ExtractionSettings() and "recipe" not in meta


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda h: h["fusion_config"].update(head="cnn"), "fusion_config.head must be one of mlp, linear"),
        (lambda h: h["fusion_config"].update(lstm_pool=1), "fusion_config.lstm_pool must be one of clip, mean"),
        (lambda h: h["fusion_config"].update(audio_input_norm="yes"), "fusion_config.audio_input_norm must be true or false"),
        (lambda h: h["extraction"]["audio"].update(chroma_tuning="x"), "extraction.audio.chroma_tuning must be a finite number"),
        (lambda h: h["extraction"]["audio"].update(mfcc_top_db=1e9), "extraction.audio.mfcc_top_db = 1000000000.0 is out of range"),
        (lambda h: h["extraction"]["audio"].update(cqt_kind="chroma"), "cqt_kind 'chroma' folds whole octaves"),
        (lambda h: h["extraction"].update(clip_sampling="random"), "extraction.clip_sampling must be one of spread, first"),
        (lambda h: h["meta"].update(recipe={"name": "Winner!"}), "meta.recipe.name must be a recipe name"),
        (lambda h: h["meta"].update(recipe={"name": "winner", "options": {"x": {"y": 1}}}), "meta.recipe.options.x must be a single value"),
        (lambda h: h["meta"].update(recipe={"name": "winner", "extra": 1}), "meta.recipe has unknown key(s) extra"),
        (lambda h: h["meta"].update(recipe=[1]), "meta.recipe must be an object"),
    ],
)
def test_bad_new_header_fields_are_named(edit, match) -> None:
    h = _header(FusionModel())
    edit(h)
    with pytest.raises(ValueError, match=re.escape(match)):
        parse_header(h)


def test_method_settings_round_trip_through_a_checkpoint(tmp_path) -> None:
    plan = resolve("winner-exact")
    model = FusionModel(FusionConfig.from_dict(plan.config.fusion))
    bb = {k: {**v, "precision": "fp32"} for k, v in FAKE_BACKBONES.items()}
    p = save_checkpoint(tmp_path / "m.safetensors", model, settings=plan.settings, backbones=bb, meta={"recipe": {"name": "winner-exact", "options": {}}})
    ck = load_checkpoint(p)
    assert ck.model.config == model.config and ck.settings == plan.settings
    assert ck.settings.audio.chroma_tuning is None and ck.settings.audio.mfcc_top_db == 80.0 and ck.settings.clip_sampling == "first"
    assert ck.recipe == "winner-exact" and ck.scoring_precision == "fp32"
    sp, tp, au = _inputs()
    model.eval()
    torch.testing.assert_close(ck.model(sp, tp, au)[0], model(sp, tp, au)[0])


def test_score_json_rows_carry_the_recipe_and_csv_columns_stay() -> None:
    from thqa.scoring.columns import score_columns
    from thqa.scoring.scorer import ScoreResult

    r = ScoreResult("a.mp4", 3.2, [3.1, 3.3], seconds=[0, 1], recipe="winner")
    assert json.loads(score_columns().format([r], "json"))[0]["recipe"] == "winner"
    header = score_columns().format([r], "csv").splitlines()[0].split(",")
    assert header[:6] == ["path", "mos", "clip_scores", "error", "weights", "untrained"] and "recipe" not in header


# -- the CLI's switches ----------------------------------------------------------------------------------------
def test_cli_switches_map_to_the_recipes_options() -> None:
    from thqa.cli.app import build_parser
    from thqa.cli.options import recipe_plan

    args = build_parser().parse_args(
        ["train", "m.csv", "--cache-dir", "c", "--out", "o", "--recipe", "winner", "--epochs", "3", "--head", "mlp",
         "--no-finetune-spatial", "--cqt", "chroma", "--chroma-tuning", "estimate", "--mfcc-top-db", "80", "--audio-rate", "22050",
         "--audio-widths", "4,8,16", "--no-audio-input-norm", "--precision", "fp32"]
    )
    plan = recipe_plan(args, training=True)
    f = FusionConfig.from_dict(plan.config.fusion)
    a = plan.settings.audio
    assert (plan.recipe, plan.config.epochs, plan.config.finetune_spatial, plan.config.lr) == ("winner", 3, False, 1e-5)
    assert (f.head, f.lstm_pool, f.audio_widths, f.audio_input_norm) == ("mlp", "mean", (4, 8, 16), False)
    assert (a.cqt_kind, a.cqt_bins, a.cqt_bins_per_octave, a.chroma_tuning, a.mfcc_top_db, a.sample_rate) == ("chroma", 896, 128, None, 80.0, 22050)
    assert plan.precision == "fp32" and plan.sources["train.seed"] == "recipe"
    plain = recipe_plan(build_parser().parse_args(["train", "m.csv", "--cache-dir", "c", "--out", "o"]), training=True)
    assert plain.recipe is None and set(plain.sources.values()) == {"default"}
    ext = recipe_plan(build_parser().parse_args(["extract", "m.csv", "--cache-dir", "c", "--recipe", "winner-exact"]), training=False)
    assert ext.settings.audio == AudioSettings(**METHOD_AUDIO) and ext.precision == "fp32"


# -- the smoke test -----------------------------------------------------------------------------------------------
#: real talking heads with sound in ../shared/media, small enough to decode fast; made-up MOS (this proves the
#: recipe runs end to end, not that it learns)
SMOKE_FILES = (
    "vid_ai_dreamtalk_male_256.mp4", "vid_ai_dreamtalk_painting_zh_256.mp4", "vid_real_vox_00015_224.mp4",
    "vid_real_vox_00373_224.mp4", "vid_real_hdtf_short_2s_2997.mp4", "vid_real_lowq_man_480.mp4",
    "vid_real_silentaudio_man_480.mp4", "vid_ai_woman_512_oddavgfps.mp4",
)


@pytest.mark.slow
def test_winner_recipe_trains_end_to_end_on_real_files_and_score_shows_it(shared_media, backbones, tmp_path, monkeypatch, capsys) -> None:
    """`thqa train --recipe winner` (random-init backbones, 1 clip, 2 epochs, fine-tuning ECA + Swin-T from the cached
    frames) on 8 real files, then `thqa score` with its checkpoint: the recipe in config.json, the checkpoint and
    the score's provenance."""
    from test_cli_experiments import use_session_backbones
    from thqa.cli import app as cli
    files = [shared_media / f for f in SMOKE_FILES]
    for f in files:
        if not f.is_file():
            pytest.skip(f"{f} is missing")
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "mos", "group"])
        for i, f in enumerate(files):
            w.writerow([str(f), f"{1.0 + (i * 7 % 8) / 2:.1f}", f"g{i}"])
    use_session_backbones(monkeypatch, backbones, small_clips=True)
    run = tmp_path / "run"
    rc = cli.main(["-q", "train", str(manifest), "--cache-dir", str(tmp_path / "cache"), "--out", str(run), "--recipe", "winner",
                   "--epochs", "2", "--clips", "1", "--val-fraction", "0.6", "--random-init", "--precision", "fp32"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "train: recipe winner; options: n_clips=1, precision=fp32 (recipe: auto), epochs=2 (recipe: 50)" in err
    cfg = json.loads((run / "config.json").read_text())
    s = cfg["recipe"]["settings"]
    assert cfg["recipe"]["name"] == "winner" and s["train.finetune_spatial"] == {"value": True, "from": "recipe"}
    assert s["train.lr"]["value"] == 1e-5 and s["fusion.head"]["value"] == "linear" and s["precision"]["value"] == "fp32"
    hist = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2] and all(np.isfinite(h["train_loss"]) for h in hist)
    ck = load_checkpoint(run / "best.safetensors")
    assert ck.spatial_state is not None and ck.recipe == "winner" and ck.model.config.lstm_pool == "mean"

    rc = cli.main(["score", str(files[0]), "--checkpoint", str(run / "best.safetensors"), "--random-init", "--format", "json", "--workers", "0"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    row = json.loads(out)[0]
    assert row["recipe"] == "winner" and np.isfinite(row["mos"])
    assert "score: model " in err and 'recipe winner with extraction.n_clips=1, precision="fp32", train.epochs=2' in err and "ECA + Swin-T fine-tuned" in err
