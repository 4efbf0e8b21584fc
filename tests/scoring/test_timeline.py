"""Per-second scores (`thqa score --timeline`, Scorer.explain): windows, the MOS they keep, a degradation confined to
seconds 4-6 found by a trained checkpoint, plots, and `thqa score --timeline --sync --plot` with bad files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from media import write_video
from thqa.cli import app as cli
from thqa.synthetic.heads import make_talking_head
from thqa.scoring.timeline import window_starts


def test_windows():
    assert window_starts(8, 6) == [list(range(j, j + 6)) for j in range(3)]
    assert window_starts(6, 6) == [[0, 1, 2, 3, 4, 5]]
    assert window_starts(3, 6) == [[0, 1, 2, 0, 1, 2]]  # the method's cyclic sampling
    assert window_starts(5, 2) == [[0, 1], [1, 2], [2, 3], [3, 4]]


@pytest.fixture(scope="module")
def head4(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("timeline") / "head4.mp4"
    make_talking_head(p, seed=2, duration=4.0, size=128)
    return p


def test_timeline_keeps_the_method_mos_and_averages_windows(small_scorer, head4):
    from thqa.scoring.timeline import second_features

    r = small_scorer.explain(head4)
    plain = small_scorer.score(head4)
    assert len(r.timeline) == 4 and all(np.isfinite(r.timeline))
    assert r.mos == pytest.approx(plain.mos, abs=1e-5) and r.clip_scores == pytest.approx(plain.clip_scores, abs=1e-5)
    assert r.seconds == plain.seconds == [0, 2]
    # each second's score is the mean of its clip scores over the windows [j, j+1] (2 clips) that contain it
    feats = second_features(head4, backbones=small_scorer.backbones, settings=small_scorer.settings)
    assert feats.n == 4 and feats.audio.shape == (4, 4, 128, 32)
    clip = [small_scorer.score_features([feats.take([j, j + 1])])[0][1] for j in range(3)]
    expected = [clip[0][0], (clip[0][1] + clip[1][0]) / 2, (clip[1][1] + clip[2][0]) / 2, clip[2][1]]
    assert r.timeline == pytest.approx(expected, abs=1e-5)


# -- a degradation confined to seconds 4-6, found by a trained (tiny, spatial-only) checkpoint ------------------------
def blur_span(src: Path, dst: Path, t0: float, t1: float, sigma: float = 4.0) -> Path:
    """Copy of ``src`` whose frames in [t0, t1) are blurred (sound kept)."""
    with av.open(str(src)) as c:
        frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    with av.open(str(src)) as c:
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)[0]
    imgs = [cv2.GaussianBlur(img, (0, 0), sigma) if t0 <= t < t1 else img for t, img in frames]
    h, w = imgs[0].shape[:2]
    return write_video(dst, seconds=len(imgs) / 25, size=(w, h), frame_fn=lambda i, t: imgs[i], audio=audio)


@pytest.fixture(scope="module")
def spatial_checkpoint(tmp_path_factory, small_settings):
    """A fusion model on the spatial branch only (random-init Swin-T features), trained on per-second features of
    two clean synthetic heads (pseudo-MOS 4.5; the tested file is a longer take of the first) and their blurred copies (2.0), saved as a checkpoint."""
    from thqa.models.checkpoint import save_checkpoint
    from thqa.models.fusion import FusionConfig, FusionModel
    from thqa.features.pipeline import Backbones
    from thqa.scoring.timeline import second_features
    from thqa.features.weights import WeightsOptions

    bb = Backbones(WeightsOptions(random_init=True, seed=3407), device="cpu", temporal=False, start_workers=False, precision="fp32")
    d = tmp_path_factory.mktemp("ck")
    xs, ys = [], []
    for seed in (21, 22):
        clean = make_talking_head(d / f"h{seed}.mp4", seed=seed, duration=4.0, size=128).path
        for path, mos in ((clean, 4.5), (blur_span(clean, d / f"b{seed}.mp4", 0, 99), 2.0)):
            sp = second_features(path, backbones=bb, settings=small_settings).spatial  # (4, 768)
            xs += [sp[j : j + 2] for j in range(3)]
            ys += [mos] * 3
    torch.manual_seed(0)
    model = FusionModel(FusionConfig(branches=("spatial",), head_hidden=32, dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(np.stack(xs)), torch.tensor(ys)
    for _ in range(150):
        opt.zero_grad()
        _, clips = model(x, None, None)
        loss = ((clips - y[:, None]) ** 2).mean()  # every clip of a video carries its label
        loss.backward()
        opt.step()
    model.eval()
    return save_checkpoint(d / "spatial.safetensors", model, settings=small_settings, backbones=bb.infos)


@pytest.mark.slow  # ~40 s on 2 quiet cores (Swin-T on 28 frames, training, a 10 s timeline)
def test_blur_in_seconds_4_to_6_lowers_those_seconds(tmp_path, spatial_checkpoint):
    from thqa.scoring.scorer import Scorer

    scorer = Scorer(spatial_checkpoint, random_init=True, device="cpu", workers=0)
    assert scorer.backbones.temporal is None  # spatial only: cheap
    clean = make_talking_head(tmp_path / "h.mp4", seed=21, duration=10.0, size=128).path
    r = scorer.explain(blur_span(clean, tmp_path / "blur4to6.mp4", 4.0, 6.0))
    t = np.asarray(r.timeline)
    inside, outside = t[4:6], np.concatenate([t[:4], t[6:]])
    assert len(t) == 10
    assert inside.max() < outside.min(), t  # every blurred second below every sharp one
    assert outside.mean() - inside.mean() > 0.5, t


# -- the CLI ------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def cli_small_scorer(monkeypatch, small_scorer):
    import thqa.scoring.scorer

    monkeypatch.setattr(thqa.scoring.scorer, "Scorer", lambda checkpoint=None, **kw: small_scorer)


def test_cli_score_timeline_sync_plot_with_bad_files(cli_small_scorer, head4, tmp_path, capsys):
    silent = write_video(tmp_path / "no_audio.mp4", seconds=2)  # scores (with a warning), no sync estimate
    missing = tmp_path / "missing.mp4"
    plots = tmp_path / "plots"
    out = tmp_path / "scores.json"
    rc = cli.main(["score", "--random-init", "--timeline", "--sync", "--plot", str(plots), str(head4), str(silent), str(missing), "-o", str(out)])
    assert rc == 1  # the missing file
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == [str(head4), str(silent), str(missing)]
    assert len(rows[0]["timeline"]) == 4 and abs(rows[0]["av_offset_ms"]) <= 40 and rows[0]["av_sync_confidence"] > 3
    assert len(rows[0]["av_sync_agreement"]) == 4 and rows[0]["av_sync_reliable"] is True
    assert len(rows[1]["timeline"]) == 2 and rows[1]["av_offset_ms"] is None and "no audio stream" in rows[1]["av_sync_error"]
    assert rows[2]["error"] and rows[2]["mos"] is None and rows[2]["timeline"] is None
    pngs = sorted(p.name for p in plots.iterdir())
    assert pngs == ["head4.timeline.png", "no_audio.timeline.png"]
    img = cv2.imread(str(plots / "head4.timeline.png"))
    assert img is not None and img.shape[0] > 400 and img.shape[1] > 600


def test_cli_score_sync_csv_columns(cli_small_scorer, head4, capsys):
    rc = cli.main(["score", "--random-init", "--sync", str(head4)])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(",")[-6:] == ["av_offset_ms", "av_in_sync", "av_sync_confidence", "av_sync_reliable", "av_sync_error", "av_sync_agreement"]
    row = next(csv.DictReader(lines))
    assert abs(float(row["av_offset_ms"])) <= 40 and row["av_in_sync"] == "true"



def test_cli_plot_needs_timeline(capsys, head4):
    with pytest.raises(SystemExit) as ei:
        cli.main(["score", "--random-init", "--plot", "x", str(head4)])
    assert ei.value.code == 2 and "add --timeline" in capsys.readouterr().err


def test_free_memory_is_handed_back_after_every_chunk(small_scorer, head4, monkeypatch):
    """A long timeline grew chunk by chunk (glibc kept each chunk's freed buffers: 2.27 GB at 600 s against 1.60 GB
    at 10 s); the timeline now hands the free memory back after each chunk of seconds."""
    import platform

    import thqa.scoring.timeline as tl
    from thqa.utils.memory import release_free_memory

    calls = []
    monkeypatch.setattr(tl, "_chunk_size", lambda batch_size: 1)  # one second per chunk: 4 chunks
    monkeypatch.setattr(tl, "release_free_memory", lambda: calls.append(1) or True)
    feats = tl.second_features(head4, backbones=small_scorer.backbones, settings=small_scorer.settings)
    assert feats.spatial.shape[0] == 4 and len(calls) == 4
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert release_free_memory() is True
    else:
        assert release_free_memory() in (True, False)
