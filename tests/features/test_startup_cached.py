"""A `thqa extract` whose every entry is cached computes its keys without torch (issue 22 item 3): it imports neither
torch nor the backbones' libraries, and a run with entries missing builds the extractor then and writes the entries
that the normal way (a FeatureExtractor built first) writes, under the same keys, bit for bit."""
from __future__ import annotations

import json
import subprocess
import sys

import media
import numpy as np

from thqa.cli import app as cli
from thqa.data.cache import FeatureCache
from thqa.data.entry_keys import features_key, frames_key
from thqa.data.extract import extract_to_cache
from thqa.data.hashing import file_digest
from thqa.features.pipeline import Backbones, ExtractionSettings, FeatureExtractor
from thqa.models.checkpoint import save_checkpoint
from thqa.models.fusion import FusionModel

#: runs the command line, then says what it loaded (the last line of stdout, JSON)
_WRAP = """
import json, sys
from thqa.cli import app as cli
rc = cli.main(sys.argv[1:])
mods = ("torch", "timm", "pytorchvideo", "av", "librosa", "spafe", "scipy.signal", "thqa.features.pipeline")
print(json.dumps({"rc": rc, "loaded": sorted(m for m in mods if m in sys.modules)}))
"""


def _entries(cache: FeatureCache, paths, settings: ExtractionSettings, infos: dict) -> dict[str, dict[str, np.ndarray]]:
    """key -> arrays of both entries of every file (an absent entry fails the test)."""
    out = {}
    for p in paths:
        d = file_digest(p)
        for key in (features_key(d, settings, infos), frames_key(d, settings)):
            entry = cache.get(key)
            assert entry is not None, f"{p}: entry {key} missing"
            out[key] = dict(entry.arrays)
    return out


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert a[key][name].dtype == b[key][name].dtype and np.array_equal(a[key][name], b[key][name]), (key, name)


def test_an_all_cached_extract_loads_no_torch_and_a_missing_entry_is_extracted_as_the_normal_way(
    backbones, good_video, good_video_2s, tmp_path, monkeypatch
):
    from test_batching import _TinySpatial, _TinyTemporal
    from test_cli_experiments import use_session_backbones

    third = media.write_video(tmp_path / "third.mp4", seconds=1, size=(80, 48), audio=np.zeros(16000, np.float32))
    paths = [str(good_video), str(good_video_2s), str(third)]
    settings = ExtractionSettings(n_clips=1)
    # the session's identity (seed 3407, digests remembered in $THQA_CACHE_HOME) with cheap stand-in models
    tiny = Backbones(backbones.weights, device="cpu", lazy=True, start_workers=False, precision="fp32")
    tiny.spatial, tiny.temporal = _TinySpatial(), _TinyTemporal()
    # the normal way: the extractor (and so torch) first
    normal = FeatureCache(tmp_path / "normal")
    s = extract_to_cache(paths, normal, FeatureExtractor(settings, backbones=tiny, workers=0))
    assert (s.done, s.failed) == (3, 0)
    expected = _entries(normal, paths, settings, tiny.infos)

    # the command line: keys without torch, the extractor built because entries are missing
    use_session_backbones(monkeypatch, tiny)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "\n".join(paths) + "\n")
    cache_dir, summary = tmp_path / "c", tmp_path / "s.json"
    argv = ["-q", "extract", str(manifest), "--cache-dir", str(cache_dir), "--random-init", "--precision", "fp32", "--clips", "1",
            "--workers", "0", "--summary-json", str(summary)]
    assert cli.main(argv) == 0 and json.loads(summary.read_text())["done"] == 3
    _same(_entries(FeatureCache(cache_dir), paths, settings, tiny.infos), expected)

    # every entry cached: another process computes the keys, reuses both files and loads no torch
    proc = subprocess.run([sys.executable, "-c", _WRAP, *argv], capture_output=True, text=True, timeout=300)
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["rc"] == 0, proc.stderr[-2000:]
    # nor the decoding side: nothing decodes (the decoder's versions in the keys are remembered)
    assert last["loaded"] == [], last
    doc = json.loads(summary.read_text())
    assert (doc["done"], doc["reused"]) == (0, 3) and doc["backbones"] == tiny.infos

    # one entry missing: that file is extracted again, as the normal way extracts it
    cache = FeatureCache(cache_dir)
    assert cache.remove(features_key(file_digest(good_video_2s), settings, tiny.infos))
    assert cli.main(argv) == 0
    doc = json.loads(summary.read_text())
    assert (doc["done"], doc["reused"]) == (1, 2)
    _same(_entries(FeatureCache(cache_dir), paths, settings, tiny.infos), expected)

    # `thqa evaluate --checkpoint` on cached features: torch for the fusion model, no backbone built (no timm, no
    # pytorchvideo: they load only to build one). (It loads PyAV and OpenCV with thqa.scoring's sync analysis.)
    ck = save_checkpoint(tmp_path / "ck.safetensors", FusionModel(), settings=settings, backbones=tiny.infos)
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("path,mos\n" + "".join(f"{p},{m}\n" for p, m in zip(paths, (2.0, 4.0, 3.0))))
    argv = ["-q", "evaluate", "--checkpoint", str(ck), str(labelled), "--cache-dir", str(cache_dir), "--workers", "0", "--json", "--fit", "none"]
    proc = subprocess.run([sys.executable, "-c", _WRAP, *argv], capture_output=True, text=True, timeout=300)
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["rc"] == 0, proc.stderr[-2000:]
    assert "torch" in last["loaded"] and not {"timm", "pytorchvideo"} & set(last["loaded"]), last
