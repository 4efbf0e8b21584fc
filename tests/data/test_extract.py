"""Extraction into the feature cache: a killed run resumes to exactly what an uninterrupted run makes, settings and
weights are part of the keys, corrupt entries are re-extracted, failing files are listed and the run goes on."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import media
from thqa.data.cache import FeatureCache, file_digest
from thqa.data.extract import extract_to_cache, features_key, frames_key, load_features, load_frames, write_failures
from thqa.features.audio import AudioSettings
from thqa.features.pipeline import ExtractionSettings, FeatureExtractor, prepare

#: 1 clip of 8 frames at 64 px for SlowFast: cheap; the keys and the cache do not care about the size.
SMALL = ExtractionSettings(n_clips=1, clip_frames=8, frame_size=64)
#: small real talking heads in ../shared/media (224 and 256 px)
REAL_FILES = ("vid_real_vox_00015_224.mp4", "vid_real_vox_00373_224.mp4", "vid_ai_dreamtalk_male_256.mp4")


def _extract(paths, cache: FeatureCache, backbones, settings: ExtractionSettings = SMALL, *, frames: bool = True):
    return extract_to_cache([str(p) for p in paths], cache, FeatureExtractor(settings, backbones=backbones), frames=frames)


def _entries(cache: FeatureCache) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for key in cache.keys():
        entry = cache.get(key)
        assert entry is not None, f"entry {key} unreadable"
        out[key] = entry.arrays
    return out


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".partial", ".corrupt"))]


# ---------------------------------------------------------------------------------------------------------------
# killed and restarted


@pytest.mark.slow
def test_extraction_killed_part_way_resumes_to_the_same_entries(real_file, backbones, tmp_path, monkeypatch, capsys) -> None:
    """`thqa extract` on 3 real files in a subprocess, SIGKILLed once the first file's features are in the cache, then
    run again: the second run reuses what the first finished, extracts the rest, and every entry is bit-identical to
    an uninterrupted extraction.

    The restart and the uninterrupted run happen in this process with the session's backbones (the same seeded
    random-init weights as the child's `--random-init`: the child's entries are found under keys made from this
    process's weights digests), one file per backbone batch as in the child."""
    from test_cli_experiments import use_session_backbones
    from thqa.cli import app as cli
    files = [real_file(n) for n in REAL_FILES]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in files))
    full = ExtractionSettings(n_clips=1)  # what `--clips 1` means: full-size clips
    fkeys = [features_key(file_digest(p), full, backbones.infos) for p in files]
    gkeys = [frames_key(file_digest(p), full) for p in files]
    cache_dir = tmp_path / "cache"
    probe_cache = FeatureCache(cache_dir)
    argv = ["extract", str(manifest), "--cache-dir", str(cache_dir), "--random-init", "--precision", "fp32", "--clips", "1", "--batch-size", "1"]
    # --batch-size 1: one file per backbone batch, so the entries land one by one

    with open(tmp_path / "run1.out", "w") as out, open(tmp_path / "run1.err", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "thqa.cli", *argv, "--threads", "2", "--summary-json", str(tmp_path / "s1.json")], stdout=out, stderr=err
        )
        try:
            deadline = time.monotonic() + 240
            first = probe_cache.path_for(fkeys[0])
            while not first.exists():
                if proc.poll() is not None:
                    pytest.fail(f"extraction ended (rc {proc.returncode}) before the first entry: {(tmp_path / 'run1.err').read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail("no cache entry after 240 s")
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = [i for i in range(3) if fkeys[i] in probe_cache and gkeys[i] in probe_cache]
    assert 1 <= len(finished) <= 2, f"the kill was not part-way: {len(finished)} of 3 files finished"
    assert not (tmp_path / "s1.json").exists()

    use_session_backbones(monkeypatch, backbones)
    monkeypatch.setattr(backbones, "batch_size", 1)
    assert cli.main(argv + ["--summary-json", str(tmp_path / "s2.json")]) == 0
    n_done, n_reused = 3 - len(finished), len(finished)
    assert f"extract: {n_done} done, {n_reused} reused, 0 failed" in capsys.readouterr().out
    s2 = json.loads((tmp_path / "s2.json").read_text())
    assert (s2["done"], s2["reused"], s2["failed"]) == (n_done, n_reused, 0)
    assert not _leftovers(cache_dir), _leftovers(cache_dir)  # the killed writer's temp file was cleaned

    ref = FeatureCache(tmp_path / "reference")
    s = _extract(files, ref, backbones, full)  # uninterrupted
    assert (s.done, s.failed) == (3, 0)
    got, want = _entries(FeatureCache(cache_dir)), _entries(ref)
    assert sorted(got) == sorted(want) == sorted(fkeys + gkeys)
    for key in want:
        assert got[key].keys() == want[key].keys()
        for name, arr in want[key].items():
            assert got[key][name].dtype == arr.dtype and got[key][name].shape == arr.shape, (key, name)
            assert np.array_equal(got[key][name], arr), f"{name} of entry {key} differs from the uninterrupted run"
    meta = FeatureCache(cache_dir).get(fkeys[0]).meta
    assert meta["settings"] == full.to_dict() and meta["content_sha256"] == file_digest(files[0])


# ---------------------------------------------------------------------------------------------------------------
# keys: settings and weights


def test_changing_an_extraction_setting_misses_the_cache(good_video_2s, backbones, tmp_path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    first = _extract([good_video_2s], cache, backbones)
    assert (first.done, first.reused, first.failed) == (1, 0, 0)
    assert len(cache) == 2  # features + frames
    again = _extract([good_video_2s], cache, backbones)
    assert (again.done, again.reused) == (0, 1)

    other_audio = replace(SMALL, audio=AudioSettings(n_fft=1024))
    digest = file_digest(good_video_2s)
    assert features_key(digest, other_audio, backbones.infos) != features_key(digest, SMALL, backbones.infos)
    miss = _extract([good_video_2s], cache, backbones, other_audio)
    assert (miss.done, miss.reused) == (1, 0)
    assert len(cache) == 3  # new features; the frames do not depend on the audio settings and were shared
    a = load_features(cache, good_video_2s, SMALL, backbones.infos)
    b = load_features(cache, good_video_2s, other_audio, backbones.infos)
    assert np.array_equal(a["temporal"], b["temporal"]) and not np.array_equal(a["audio"], b["audio"])

    two_clips = replace(SMALL, n_clips=2)
    miss2 = _extract([good_video_2s], cache, backbones, two_clips)
    assert (miss2.done, miss2.reused) == (1, 0)
    assert len(cache) == 5  # the clip count changes both entries
    assert load_features(cache, good_video_2s, two_clips, backbones.infos)["spatial"].shape == (2, 768)


def test_features_key_follows_the_backbone_weights_not_where_they_came_from() -> None:
    settings = ExtractionSettings()
    infos = {
        "swin_t": {"name": "swin_t", "source": "random-init", "sha256": "a" * 64, "path": None, "seed": 3407},
        "slowfast_r50": {"name": "slowfast_r50", "source": "random-init", "sha256": "b" * 64, "path": None, "seed": 3407},
    }
    digest = "c" * 64
    key = features_key(digest, settings, infos)
    other_swin = {**infos, "swin_t": {**infos["swin_t"], "sha256": "d" * 64}}
    other_slowfast = {**infos, "slowfast_r50": {**infos["slowfast_r50"], "sha256": "e" * 64}}
    assert features_key(digest, settings, other_swin) != key
    assert features_key(digest, settings, other_slowfast) != key
    assert features_key("f" * 64, settings, infos) != key
    moved = {**infos, "swin_t": {**infos["swin_t"], "source": "file", "path": "/weights/swin.safetensors", "seed": None}}
    assert features_key(digest, settings, moved) == key  # the same weights from a file: same features
    assert frames_key(digest, settings) != key
    assert frames_key(digest, settings) == frames_key(digest, replace(settings, frame_size=112, clip_frames=16))
    assert frames_key(digest, settings) != frames_key(digest, replace(settings, short_side=480))


def test_seeded_backbones_are_part_of_the_key(backbones) -> None:
    """The session's random-init backbones give keys that carry their sha256 (the identity stored in checkpoints)."""
    infos = backbones.infos
    assert infos["swin_t"]["source"] == infos["slowfast_r50"]["source"] == "random-init"
    digest = "0" * 64
    bumped = {**infos, "slowfast_r50": {**infos["slowfast_r50"], "sha256": "1" * 64}}
    assert features_key(digest, SMALL, infos) != features_key(digest, SMALL, bumped)


# ---------------------------------------------------------------------------------------------------------------
# corruption


def test_corrupt_entry_is_re_extracted(good_video, backbones, tmp_path, caplog) -> None:
    cache = FeatureCache(tmp_path / "cache")
    assert _extract([good_video], cache, backbones).done == 1
    key = features_key(file_digest(good_video), SMALL, backbones.infos)
    original = load_features(cache, good_video, SMALL, backbones.infos)
    path = cache.path_for(key)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte in the arrays
    path.write_bytes(bytes(data))

    summary = _extract([good_video], cache, backbones)
    assert (summary.done, summary.reused, summary.failed) == (1, 0, 0), (
        f"a corrupt entry must count as missing and be extracted again; got done={summary.done}, "
        f"reused={summary.reused} (extract_to_cache only checks that the entry file exists)"
    )
    again = load_features(cache, good_video, SMALL, backbones.infos)
    assert again is not None
    for name, arr in original.items():
        assert np.array_equal(again[name], arr), name


def test_corrupt_entry_is_quarantined_on_read_and_the_next_run_re_extracts_it(good_video, backbones, tmp_path, caplog) -> None:
    cache = FeatureCache(tmp_path / "cache")
    _extract([good_video], cache, backbones, frames=False)
    key = features_key(file_digest(good_video), SMALL, backbones.infos)
    path = cache.path_for(key)
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    assert load_features(cache, good_video, SMALL, backbones.infos) is None
    assert "corrupt cache entry" in caplog.text and path.name in caplog.text
    assert path.with_name(path.name + ".corrupt").exists() and key not in cache
    summary = _extract([good_video], cache, backbones, frames=False)
    assert (summary.done, summary.reused) == (1, 0)
    assert load_features(cache, good_video, SMALL, backbones.infos) is not None


# ---------------------------------------------------------------------------------------------------------------
# failures and frames


def test_failing_files_are_listed_and_the_run_goes_on(good_video, backbones, tmp_path) -> None:
    missing = tmp_path / "missing.mp4"
    audio_only = media.write_audio_only(tmp_path / "speech.m4a", media.tone(220.0, 1.0))
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    paths = [missing, audio_only, text, good_video]
    cache = FeatureCache(tmp_path / "cache")
    ticks: list[int] = []
    summary = extract_to_cache([str(p) for p in paths], cache, FeatureExtractor(SMALL, backbones=backbones), progress=ticks.append)
    assert (summary.done, summary.reused, summary.failed) == (1, 0, 3)
    assert sum(ticks) == 4
    failures = {Path(p).name: (etype, msg) for p, etype, msg in summary.failures}
    assert failures.keys() == {"missing.mp4", "speech.m4a", "notes.mp4"}
    assert failures["missing.mp4"][0] == "MediaFileNotFoundError"
    assert failures["speech.m4a"][0] == "NoVideoStreamError" and "no video stream" in failures["speech.m4a"][1]
    assert failures["notes.mp4"][0] == "DecodeError"
    for name, (_, msg) in failures.items():
        assert name in msg  # every message names its file
    assert load_features(cache, good_video, SMALL, backbones.infos) is not None
    d = summary.to_dict()
    assert d["failed"] == 3 and len(d["failures"]) == 3 and d["per_video_s"] > 0
    assert {"decode_s", "audio_s", "spatial_s", "temporal_s"} <= d["stage_s"].keys()

    import csv

    out = write_failures(tmp_path / "out" / "failures.csv", summary.failures)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["path"], r["error_type"]) for r in rows] == [(p, t) for p, t, _ in summary.failures]

    rerun = extract_to_cache([str(p) for p in paths], cache, FeatureExtractor(SMALL, backbones=backbones))
    assert (rerun.done, rerun.reused, rerun.failed) == (0, 1, 3)


def test_png_frames_are_lossless_and_compressed() -> None:
    from thqa.features.pipeline import decode_frame_png, encode_frame_png

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:520, 0:700]
    img = np.stack([(x // 3) % 256, (y // 2) % 256, (x + y) % 256]).astype(np.uint8)  # (3, 520, 700) smooth
    img[:, 100:200, 100:300] = rng.integers(0, 256, (3, 100, 200), dtype=np.uint8)  # and a noisy patch
    buf = encode_frame_png(img)
    assert buf.dtype == np.uint8 and buf.ndim == 1 and bytes(buf[:8]) == b"\x89PNG\r\n\x1a\n"
    assert buf.size < 0.5 * img.size
    assert np.array_equal(decode_frame_png(buf), img)


def test_cached_frames_are_the_lossless_first_frames(good_video_2s, backbones, tmp_path) -> None:
    settings = replace(SMALL, n_clips=2)
    cache = FeatureCache(tmp_path / "cache")
    _extract([good_video_2s], cache, backbones, settings)
    frames = load_frames(cache, good_video_2s, settings)
    expected = prepare(good_video_2s, settings, keep_first_frames=True)
    want = [expected.first_frames[i] for i in expected.index]
    assert len(frames) == len(want) == 2
    for got, ref in zip(frames, want):
        assert got.dtype == np.uint8 and got.shape == ref.shape and min(got.shape[1:]) == settings.short_side
        assert np.array_equal(got, ref)
    # a features-only extraction stores no frames; asking for them later (fine-tuning) extracts again
    nf = FeatureCache(tmp_path / "no-frames")
    _extract([good_video_2s], nf, backbones, SMALL, frames=False)
    assert load_frames(nf, good_video_2s, SMALL) is None
    assert _extract([good_video_2s], nf, backbones, SMALL, frames=True).done == 1
    assert len(load_frames(nf, good_video_2s, SMALL)) == 1
