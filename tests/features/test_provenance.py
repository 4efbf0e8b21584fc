"""Cached features say which code made them: the features version, the decoder (PyAV, FFmpeg), the audio libraries
and the backbones' precision are in every key and entry; entries another version made are extracted again, and the
run says how many and why; `thqa cache prune` removes what no current setting reaches."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import media
from thqa.data.cache import FeatureCache, cache_key, file_digest
from thqa.data.extract import extract_to_cache, features_key, frames_key, prune_cache
from thqa.data.prune import _LEGACY
from thqa.features.extractor import FeatureExtractor
from thqa.features.settings import FEATURES_VERSION, ExtractionSettings, extraction_provenance

SMALL = ExtractionSettings(n_clips=1, clip_frames=8, frame_size=64)


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    rng = np.random.default_rng(3)
    return [media.write_video(root / f"v{i}.mp4", seconds=2, audio=(0.1 * rng.standard_normal(32000)).astype(np.float32)) for i in range(2)]


def _extract(paths, cache, backbones):
    return extract_to_cache([str(p) for p in paths], cache, FeatureExtractor(SMALL, backbones=backbones, workers=0), frames=True)


def _newer(monkeypatch, **changes):
    """Pretend to be a thqa whose extraction differs (another features version, another PyAV, ...)."""
    # "from ... import" finds the modules even where tests/test_house.py re-imported their package (thqa.data) fresh
    from thqa.data import entry_keys, prune
    from thqa.features import prepare

    prov = {**extraction_provenance(), **changes}
    for module in (prepare, entry_keys, prune):
        monkeypatch.setattr(module, "extraction_provenance", lambda: dict(prov))
    return prov


def test_provenance_names_the_decoder_the_audio_libraries_and_this_features_version():
    import av
    import librosa
    import scipy

    p = extraction_provenance()
    assert FEATURES_VERSION == 2 and p["features_version"] == 2
    assert p["pyav"] == av.__version__ and p["ffmpeg"] and p["ffmpeg"] != "absent"
    assert p["librosa"] == librosa.__version__ and p["scipy"] == scipy.__version__ and p["spafe"] != "absent"


def test_keys_change_with_every_part_of_the_provenance(backbones):
    infos, d = backbones.infos, "0" * 64
    assert {b["precision"] for b in infos.values()} == {"fp32"}  # the session's backbones: fp32 on every CPU
    base = extraction_provenance()
    key = features_key(d, SMALL, infos)
    assert key == features_key(d, SMALL, infos, base)
    for field, other in [("features_version", 1), ("pyav", "17.0.0"), ("ffmpeg", "7.1"), ("librosa", "0.10.2"), ("scipy", "1.11.0"), ("spafe", "0.3.2")]:
        assert features_key(d, SMALL, infos, {**base, field: other}) != key, field
    bf16 = {k: {**v, "precision": "bf16-autocast"} for k, v in infos.items()}
    assert features_key(d, SMALL, bf16) != key  # GPU bf16 and CPU fp32 features never mix
    # first frames depend on the decoder and the features version, not on the audio libraries or the precision
    fk = frames_key(d, SMALL)
    assert frames_key(d, SMALL, {**base, "pyav": "17.0.0"}) != fk and frames_key(d, SMALL, {**base, "features_version": 1}) != fk
    assert frames_key(d, SMALL, {**base, "librosa": "0.10.2"}) == fk


def test_entries_record_their_provenance(two_videos, backbones, tmp_path):
    cache = FeatureCache(tmp_path / "c")
    s = _extract(two_videos[:1], cache, backbones)
    assert s.done == 1 and s.stale == {}
    metas = {m["part"]: m for _k, _p, _n, m in cache.headers()}
    assert metas["features"]["provenance"] == {**extraction_provenance(), "precision": "fp32"}
    assert metas["frames"]["provenance"] == {k: extraction_provenance()[k] for k in ("features_version", "pyav", "ffmpeg")}
    assert _extract(two_videos[:1], cache, backbones).reused == 1


def _legacy_entries(cache: FeatureCache, paths, infos) -> None:
    """Entries as thqa 0.1.0 wrote them: keys without provenance, metadata without it."""
    for p in paths:
        digest = file_digest(p)
        key = cache_key(content_digest=digest, settings={"part": "features", **SMALL.to_dict()}, weights={n: b["sha256"] for n, b in sorted(infos.items())})
        arrays = {"spatial": np.zeros((1, 768), np.float32), "temporal": np.zeros((1, 2304), np.float32),
                  "audio": np.zeros((1, 4, 128, 32), np.float32), "seconds": np.zeros(1, np.int64)}
        meta = {"path": str(p), "content_sha256": digest, "settings": SMALL.to_dict(), "thqa_version": "0.1.0",
                "backbones": {n: {k: v for k, v in b.items() if k != "precision"} for n, b in infos.items()}}
        cache.put(key, arrays, meta)
        frames_old = cache_key(content_digest=digest, settings={"part": "frames", "n_clips": 1, "short_side": SMALL.short_side}, weights={})
        cache.put(frames_old, {"png_0": np.zeros(8, np.uint8)}, {"path": str(p), "n": 1})


def test_a_cache_made_before_the_change_is_extracted_again_and_says_so(two_videos, backbones, tmp_path, monkeypatch, capsys):
    from test_cli_experiments import use_session_backbones
    from thqa.cli import app as cli
    cache = FeatureCache(tmp_path / "c")
    _legacy_entries(cache, two_videos, backbones.infos)
    use_session_backbones(monkeypatch, backbones)
    import thqa.features.pipeline
    import thqa.training.recipes

    for mod in (thqa.features.pipeline, thqa.training.recipes):  # recipes.resolve builds the CLI's settings
        monkeypatch.setattr(mod, "ExtractionSettings", lambda n_clips=6, **kw: SMALL)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in two_videos))
    summary = tmp_path / "s.json"
    rc = cli.main(["extract", str(manifest), "--cache-dir", str(cache.root), "--random-init", "--precision", "fp32", "--workers", "0", "--clips", "1", "--summary-json", str(summary)])
    out = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(summary.read_text())
    assert doc["done"] == 2 and doc["reused"] == 0 and doc["stale"] == {_LEGACY: 2}
    assert "2 file(s) extracted again" in out and "features version 1" in out and "thqa cache prune" in out
    # the new entries sit beside the old ones, which no current key reaches
    assert len(cache) == 8


def test_another_features_version_is_extracted_again_then_pruned(two_videos, backbones, tmp_path, monkeypatch, capsys):
    from thqa.cli import app as cli
    video = two_videos[:1]
    cache = FeatureCache(tmp_path / "c")
    assert _extract(video, cache, backbones).done == 1
    assert prune_cache(cache) == [] and prune_cache(FeatureCache(tmp_path / "empty")) == []  # all current
    bad = cache.root / "ab" / ("ab" * 32 + ".safetensors.corrupt")
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(b"x" * 100)
    old_files = {p for _k, p, _n, _m in cache.headers()}
    assert len(old_files) == 2  # features and frames

    _newer(monkeypatch, features_version=3)
    s = _extract(video, cache, backbones)
    assert s.done == 1 and s.reused == 0 and s.stale == {"features_version 2 -> 3": 1}
    listed = prune_cache(cache, dry_run=True)
    assert {i.path for i in listed} == old_files | {bad}  # the old features and frames entries, and the corrupt file
    assert all(i.path.exists() for i in listed)  # a dry run deletes nothing
    assert {i.reason for i in listed} == {"features_version 2 -> 3", "quarantined corrupt entry"}
    assert sum(i.bytes for i in listed) == sum(p.stat().st_size for p in old_files) + 100

    rc = cli.main(["cache", "prune", "--cache-dir", str(cache.root), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0 and "would delete 3 file(s)" in out and all(str(p) in out for p in old_files)
    rc = cli.main(["cache", "prune", "--cache-dir", str(cache.root)])
    assert rc == 0 and "deleted 3 file(s)" in capsys.readouterr().out
    assert not any(p.exists() for p in old_files) and not bad.exists()
    assert _extract(video, cache, backbones).reused == 1  # the current entries stayed
    with pytest.raises(SystemExit) as ei:
        cli.main(["cache", "prune", "--cache-dir", str(tmp_path / "nowhere")])
    assert ei.value.code == 2 and "no such cache directory" in capsys.readouterr().err


def test_bf16_autocast_is_recorded_and_close_to_fp32(backbones):
    """The backbones' precision is part of their identity in keys; bf16 autocast (a GPU's default, asked for by name
    on a CPU) agrees with fp32 to within bf16's rounding (random-init weights; see benchmarks/bench_precision.py for
    real files)."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    clips = torch.randint(0, 256, (1, 8, 32, 32, 3), dtype=torch.uint8)  # tiny: bf16 is emulated (slow) on CPUs without it
    outs = {}
    saved = backbones.precision
    try:
        for prec in ("fp32", "bf16-autocast"):
            backbones.precision = prec
            assert {b["precision"] for b in backbones.infos.values()} == {prec}
            outs[prec] = (backbones.run_spatial(x), backbones.run_temporal(clips))
    finally:
        backbones.precision = saved
    for a, b in zip(outs["fp32"], outs["bf16-autocast"]):
        assert a.dtype == b.dtype == np.float32 and not np.array_equal(a, b)  # bf16 really ran
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cos.min() > 0.999, cos
