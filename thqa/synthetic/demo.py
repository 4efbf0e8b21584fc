"""`thqa demo`: the whole library on one machine, offline, with no data set.

1. a corpus: talking heads that thqa draws and voices itself (or the user's files, ``sources=``), each in graded
   degradations (:mod:`thqa.synthetic.degrade`) with a pseudo-MOS from a documented rule - a rule, not people's opinions;
2. features of every file into a feature cache;
3. the fusion model trained in frozen mode on some sources, the best epoch chosen on a validation source;
4. evaluation on sources held out from both (SRCC, PLCC, KRCC, RMSE, main score, the prediction intervals'
   measured coverage), one file scored with the trained checkpoint;
5. a report (report.md, plot.png, scores.csv, corpus.csv, metrics.json) in the output directory.

Pretrained backbone weights are used when available. Without them (offline, no local files) the demo says so and
runs with seeded random-init backbones: the pipeline, cache, training and metrics all run for real, but random
convolutions see far less of what quality is than ImageNet/Kinetics-trained ones, so the numbers show the
machinery, not the method's accuracy.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from thqa.analysis.plots import scatter_plot
from thqa.data.cache import FeatureCache
from thqa.data.extract import write_failures
from thqa.data.manifest import Sample, split_by_group
from thqa.errors import ConfigError, THQAError, WeightsNotFoundError
from thqa.features import pipeline  # pipeline.Backbones / .ExtractionSettings: looked up at call time (tests swap them)
from thqa.features.pipeline import FeatureExtractor
from thqa.features.weights import WeightsOptions
from thqa.media.probe import probe
from thqa.scoring.scorer import Scorer
from thqa.synthetic.degrade import UNTOUCHED_MOS, degrade, pseudo_mos
from thqa.synthetic.heads import make_talking_head
from thqa.training.experiment import evaluate_checkpoint, extract_files
from thqa.training.loop import TrainConfig, load_table, train
from thqa.utils.atomic import atomic_write_text, clean_partials

__all__ = ["DemoConfig", "DemoResult", "run_demo", "DEFAULT_VARIANTS"]

log = logging.getLogger(__name__)

#: (kind, level) pairs applied to every source, besides the untouched source itself.
DEFAULT_VARIANTS: tuple[tuple[str, int], ...] = (
    ("compression", 2),
    ("compression", 5),
    ("blur", 3),
    ("downscale", 5),
    ("noise", 4),
    ("pause_middle", 5),
    ("audio_noise", 5),
    ("audio_lead", 5),
)


@dataclass
class DemoConfig:
    """Size and settings of a demo run."""

    out: Path = Path("thqa-demo")
    sources: Sequence[str] = ()  #: the user's files; empty: self-made talking heads
    n_synthetic: int = 8
    duration: float = 3.0
    size: int = 192
    variants: Sequence[tuple[str, int]] = DEFAULT_VARIANTS
    n_clips: int = 2
    epochs: int = 40
    n_test_sources: int = 2
    n_val_sources: int = 1
    seed: int = 3407
    device: str = "auto"
    random_init: bool | None = None  #: None: pretrained when available, else random-init (said plainly)
    swin_weights: str | None = None
    slowfast_weights: str | None = None
    offline: bool | None = None
    workers: int = 0
    overwrite: bool = False
    precision: str = "auto"  #: of the backbones: "auto", "fp32" or "bf16" (see thqa.features.pipeline.precision_for)


@dataclass
class DemoResult:
    out: Path
    metrics: dict
    weights: str
    n_videos: int
    n_failed: int
    seconds: float
    report: Path
    scored_file: str
    scored_mos: float
    bad_sources: list[tuple[str, str]] = field(default_factory=list)


def _say(msg: str, echo: Callable[[str], None] | None) -> None:
    log.info(msg)
    if echo:
        echo(msg)


def _check_sources(paths: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    good, bad = [], []
    for p in paths:
        try:
            info = probe(p)
        except THQAError as exc:
            bad.append((str(p), str(exc)))
            continue
        if not info.has_audio:
            bad.append((str(p), f"{p}: has no audio stream; the demo's corpus needs talking heads with sound"))
            continue
        good.append(str(p))
    return good, bad


def run_demo(cfg: DemoConfig, *, echo: Callable[[str], None] | None = None) -> DemoResult:
    """Run the demo end to end; see the module docstring. ``echo`` receives progress lines.

    Raises:
        ConfigError: the output directory exists and is not empty (without ``overwrite``), too few usable sources.
    """
    t_start = time.perf_counter()
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise ConfigError(f"{out}: exists and is not empty; choose another --out or pass --overwrite")
    need = cfg.n_test_sources + cfg.n_val_sources + 2
    for d in (out, out / "run"):  # temp files of a killed earlier run (with --overwrite)
        clean_partials(d)
    sources, src_names, bad = _sources(cfg, out / "corpus", need, echo)  # 1.
    rows = _degraded(cfg, sources, src_names, out, bad, echo)  # 2.
    bb, note = _backbones(cfg, echo)  # 3.
    settings, cache, summary, samples = _features(cfg, rows, out, bb, echo)
    train_s, val_s, test = _split(cfg, samples, need, echo)  # 4.
    infos = bb.infos
    tcfg = TrainConfig(epochs=cfg.epochs, seed=cfg.seed, lr=3e-4)
    result = train(
        load_table(train_s, cache, settings, infos, what="training videos"),
        load_table(val_s, cache, settings, infos, what="validation videos"),
        settings=settings,
        backbones=infos,
        run_dir=out / "run",
        config=tcfg,
        device=str(bb.device),
        resume=False,
    )
    # 5. held-out test, one file scored, report
    _say(f"[5/5] evaluating on the held-out sources; best epoch {result.best_epoch}", echo)
    ev, scored = _evaluate(cfg, out, result.checkpoint, test, bb)
    seconds = time.perf_counter() - t_start
    doc = _metrics_doc(ev, scored, bb, rows, summary, result, (train_s, val_s, test), out, seconds)
    atomic_write_text(out / "metrics.json", json.dumps(doc, indent=2))
    report = out / "report.md"
    nxt = _next_commands(out, cfg, settings.n_clips, bb.random_init, doc["scored_file"])
    atomic_write_text(report, _report(doc, cfg, note, bad, test_sources=sorted({s.group for s in test})) + nxt)
    metrics = doc["metrics"]
    _say(
        f"done in {seconds:.0f} s: held-out SRCC {metrics['srcc']:.3f}, PLCC {metrics['plcc']:.3f}, main {metrics['main_score']:.3f} "
        f"({doc['weights']} backbones); report: {report}",
        echo,
    )
    one = test[0].path
    return DemoResult(out, metrics, doc["weights"], len(rows), summary.failed, seconds, report, str(one), float(scored.mos), bad)


def _sources(
    cfg: DemoConfig, corpus_dir: Path, need: int, echo: Callable[[str], None] | None
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Step 1: the user's usable sources (checked before anything is written, so a refused run leaves no directory
    behind) or self-made talking heads in ``corpus_dir``; their paths, names and the sources skipped (path, why)."""
    bad: list[tuple[str, str]] = []
    if cfg.sources:
        sources, bad = _check_sources(cfg.sources)
        for p, why in bad:
            _say(f"skipping source {why}", echo)
        if len(sources) < need:
            raise ConfigError(
                f"the demo needs at least {need} usable sources ({cfg.n_test_sources} test, {cfg.n_val_sources} validation, 2 training); "
                f"{len(sources)} of {len(cfg.sources)} given are usable"
                + (": " + "; ".join(w for _, w in bad) if bad else "")
            )
        src_names = [f"src{i:02d}_{Path(p).stem}" for i, p in enumerate(sources)]
        corpus_dir.mkdir(parents=True, exist_ok=True)
        return sources, src_names, bad
    if cfg.n_synthetic < need:
        raise ConfigError(f"the demo needs at least {need} synthetic sources, got {cfg.n_synthetic}")
    corpus_dir.mkdir(parents=True, exist_ok=True)
    sources, src_names = [], []
    _say(f"[1/5] drawing {cfg.n_synthetic} talking heads with synthesised speech ({cfg.duration:.0f} s, {cfg.size} px)", echo)
    for i in range(cfg.n_synthetic):
        p = corpus_dir / f"head{i:02d}.mp4"
        make_talking_head(p, seed=cfg.seed + i, duration=cfg.duration, size=cfg.size, overwrite=True)
        sources.append(str(p))
        src_names.append(f"head{i:02d}")
    return sources, src_names, bad


def _degraded(
    cfg: DemoConfig, sources: list[str], src_names: list[str], out: Path, bad: list[tuple[str, str]], echo: Callable[[str], None] | None
) -> list[tuple[str, str, str, int, float]]:
    """Step 2: every source in each of ``cfg.variants`` (a failure goes to ``bad``), listed in ``out/corpus.csv``;
    the rows (path, group, kind, level, pseudo-MOS), the originals included."""
    corpus_dir = out / "corpus"
    _say(f"[2/5] degrading {len(sources)} sources x {len(cfg.variants)} variants (+ the originals)", echo)
    rows: list[tuple[str, str, str, int, float]] = []  # path, group, kind, level, pseudo-MOS
    for src, name in zip(sources, src_names):
        rows.append((src, name, "original", 0, pseudo_mos(None, 0)))
        for kind, level in cfg.variants:
            dst = corpus_dir / f"{name}__{kind}{level}.mp4"
            try:
                info = degrade(src, dst, kind=kind, level=level, seed=cfg.seed, overwrite=True)
            except THQAError as exc:
                bad.append((str(src), str(exc)))
                _say(f"  could not make {dst.name}: {exc}", echo)
                continue
            rows.append((str(dst), name, kind, level, info.pseudo_mos))
    # paths relative to the manifest's folder, as manifests resolve them: `thqa extract OUT/corpus.csv` works from anywhere
    _write_csv(out / "corpus.csv", ["path", "mos", "group", "kind", "level"], [[_from(out, p), f"{mos:.3f}", g, k, lv] for p, g, k, lv, mos in rows])
    return rows


def _backbones(cfg: DemoConfig, echo: Callable[[str], None] | None) -> tuple[object, str]:
    """Step 3a: the backbones (pretrained when available, else seeded random-init, said plainly) and that note."""
    weights = WeightsOptions(
        random_init=bool(cfg.random_init), seed=cfg.seed, swin_weights=cfg.swin_weights, slowfast_weights=cfg.slowfast_weights, offline=cfg.offline
    )
    try:
        return pipeline.Backbones(weights, device=cfg.device, precision=cfg.precision), ""
    except WeightsNotFoundError as exc:
        if cfg.random_init is False:
            raise
        note = (
            "Pretrained backbone weights are not available here, so this demo runs with seeded random-init backbones. "
            "Everything runs for real - decoding, features, cache, training, metrics - but random convolutions see far "
            "less of what quality is than ImageNet/Kinetics-trained ones: the numbers show the machinery, not the "
            "method's accuracy. Provide the weights (see the README) for the real thing. (" + str(exc).split(". ")[0] + ".)"
        )
        _say(note, echo)
        return pipeline.Backbones(WeightsOptions(random_init=True, seed=cfg.seed), device=cfg.device, precision=cfg.precision), note


def _features(cfg: DemoConfig, rows: list[tuple], out: Path, bb, echo: Callable[[str], None] | None) -> tuple[object, FeatureCache, object, list]:
    """Step 3b: features of every video into ``out/cache`` (failures into ``out/failures.csv``); the settings, the
    cache, the extraction summary and the samples that have features."""
    weights_label = "random-init" if bb.random_init else "pretrained"
    settings = pipeline.ExtractionSettings(n_clips=cfg.n_clips).validate()
    cache = FeatureCache(out / "cache")
    extractor = FeatureExtractor(settings, backbones=bb, workers=cfg.workers)
    _say(f"[3/5] extracting features of {len(rows)} videos ({cfg.n_clips} clips each, {weights_label} backbones on {bb.device} in {bb.precision})", echo)
    summary = extract_files([r[0] for r in rows], cache, extractor, frames=False, progress=echo is not None)
    if summary.failures:
        write_failures(out / "failures.csv", summary.failures)
        for p, _, msg in summary.failures:
            _say(f"  failed: {msg}", echo)
    failed = {p for p, _, _ in summary.failures}
    samples = [Sample(Path(p), mos, group, None, Path(p).name) for p, group, _, _, mos in rows if p not in failed]
    return settings, cache, summary, samples


def _split(cfg: DemoConfig, samples: list, need: int, echo: Callable[[str], None] | None) -> tuple[list, list, list]:
    """Step 4: training, validation and test samples, split by source (test sources never seen in training or epoch
    selection)."""
    groups = sorted({s.group for s in samples})
    if len(groups) < need:
        raise ConfigError(f"only {len(groups)} sources produced features; the demo needs {need}")
    rest, test = split_by_group(samples, val_fraction=cfg.n_test_sources / len(groups), seed=cfg.seed)
    train_s, val_s = split_by_group(rest, val_fraction=cfg.n_val_sources / len({s.group for s in rest}), seed=cfg.seed + 1)
    _say(
        f"[4/5] training the fusion model (frozen backbones) on {len({s.group for s in train_s})} sources ({len(train_s)} videos), "
        f"choosing the epoch on {len({s.group for s in val_s})} ({len(val_s)} videos); {len({s.group for s in test})} sources "
        f"({len(test)} videos) held out for the test",
        echo,
    )
    return train_s, val_s, test


def _evaluate(cfg: DemoConfig, out: Path, checkpoint, test: list, bb):
    """Step 5a: the checkpoint on the held-out ``test`` samples (plot.png, scores.csv) and one of them scored."""
    weights_label = "random-init" if bb.random_init else "pretrained"
    ev = evaluate_checkpoint(checkpoint, test, cache_dir=out / "cache", backbones=bb, progress=False)
    scatter_plot(ev.predictions, ev.mos, out / "plot.png", title=f"thqa demo: held-out sources ({weights_label} backbones)", label="pseudo-MOS (a rule, not people)")
    _write_csv(out / "scores.csv", ["path", "prediction", "pseudo_mos"], [[_from(out, p), f"{pr:.4f}", f"{mo:.3f}"] for p, pr, mo in zip(ev.paths, ev.predictions, ev.mos)])
    scorer = Scorer(
        checkpoint, device=str(bb.device), random_init=bb.random_init, seed=cfg.seed, swin_weights=cfg.swin_weights, slowfast_weights=cfg.slowfast_weights,
        precision=bb.precision,
    )
    return ev, scorer.score(test[0].path)


def _metrics_doc(ev, scored, bb, rows: list, summary, result, splits: tuple[list, list, list], out: Path, seconds: float) -> dict:
    """metrics.json: the held-out metrics, the run's sizes and settings, the scored file and the intervals' coverage."""
    train_s, val_s, test = splits
    return {
        "metrics": {k: float(v) for k, v in ev.metrics.items()},
        "weights": "random-init" if bb.random_init else "pretrained",
        "precision": bb.precision,
        "backbones": bb.infos,
        "n_videos": len(rows),
        "n_failed": summary.failed,
        "n_train": len(train_s),
        "n_val": len(val_s),
        "n_test": len(test),
        "best_epoch": result.best_epoch,
        "val": result.best_metrics,
        "scored_file": _from(out, test[0].path),
        "scored_mos": scored.mos,
        "scored_clip_scores": scored.clip_scores,
        "scored_interval": scored.interval,
        "scored_coverage": scored.coverage,
        "scored_interval_note": scored.interval_note,
        "interval_coverage": ev.coverage,
        "seconds": round(seconds, 1),
        "extraction_per_video_s": round(summary.per_video_s, 2),
    }


def _from(out: Path, path: str | Path) -> str:
    """``path`` as a manifest in ``out`` names it: relative to ``out`` when inside it (manifests resolve relative paths
    from their own folder), else absolute (the user's source files)."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path(out).resolve()).as_posix()
    except ValueError:
        return str(p)


def _next_commands(out: Path, cfg: DemoConfig, n_clips: int, random_init: bool, scored: str) -> str:
    """The report's last section: commands that reuse what the demo made, as they run from the demo's working folder.
    ``extract`` names the settings the demo cached under (clips, no first frames, the backbones) so it reuses
    every entry; ``score`` and ``evaluate`` need no backbone options (the checkpoint records them)."""
    o = out.as_posix()
    backbone = (" --random-init" + (f" --seed {cfg.seed}" if cfg.seed != DemoConfig.seed else "")) if random_init else ""
    if cfg.precision != "auto":
        backbone += f" --precision {cfg.precision}"
    return "\n".join([
        "",
        "## Next: the same files with the thqa command",
        "",
        "From the folder the demo ran in (the demo cached its features without first frames, at "
        f"{n_clips} clip(s) per video{', with random-init backbones' if random_init else ''}: these options reuse them):",
        "",
        "```bash",
        f"thqa extract {o}/corpus.csv --cache-dir {o}/cache --clips {n_clips} --no-frames{backbone}",
        f"thqa evaluate --checkpoint {o}/run/best.safetensors {o}/corpus.csv --cache-dir {o}/cache",
        f"thqa score --checkpoint {o}/run/best.safetensors {o}/{scored}" if not Path(scored).is_absolute() else
        f"thqa score --checkpoint {o}/run/best.safetensors {scored}",
        "```",
        "",
    ])


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """A CSV file written atomically (complete or absent, even when the demo is killed)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _coverage_lines(doc: dict) -> list[str]:
    """The report's section on prediction intervals: nominal against measured coverage on the held-out sources."""
    rows = doc.get("interval_coverage")
    if not rows:
        return ["No prediction intervals: the checkpoint holds no calibration data.", ""]
    lines = [
        "## Prediction intervals",
        "",
        f"Split conformal intervals from the {rows[0]['n_calibration']} validation videos' residuals (`thqa.analysis.conformal`), "
        f"checked on the {rows[0]['n']} held-out videos: how often the interval held the pseudo-MOS.",
        "",
        "| nominal coverage | measured | mean width |",
        "|---|---|---|",
    ]
    for r in rows:
        if r["measured"] is None:
            lines.append(f"| {r['nominal']:.0%} | - | - ({r['note']}) |")
        else:
            lines.append(f"| {r['nominal']:.0%} | {r['measured']:.0%} | {r['mean_width']:.3f} |")
    lines += [
        "",
        "Few validation videos and held-out sources make these figures noisy; the guarantee holds for videos exchangeable "
        "with the validation videos, and a held-out source is only roughly that (see the README for a measurement over "
        "many source splits).",
        "",
    ]
    if doc.get("scored_interval"):
        lo, hi = doc["scored_interval"]
        lines += [f"The scored file's {doc.get('scored_coverage') or 0.9:.0%} interval: {lo:.3f} to {hi:.3f}.", ""]
    elif doc.get("scored_interval_note"):
        lines += [f"The scored file: {doc['scored_interval_note']}.", ""]
    return lines


def _report(doc: dict, cfg: DemoConfig, note: str, bad: list[tuple[str, str]], *, test_sources: list[str]) -> str:
    m = doc["metrics"]
    lines = [
        "# thqa demo report",
        "",
        f"{doc['n_videos']} videos: {'self-made talking heads' if not cfg.sources else 'your files'} and their graded degradations; "
        f"features from **{doc['weights']}** backbones in {doc.get('precision', 'fp32')}; trained on {doc['n_train']} videos, epoch chosen on {doc['n_val']}, "
        f"tested on {doc['n_test']} videos of held-out sources ({', '.join(test_sources)}). Wall time {doc['seconds']:.0f} s.",
        "",
    ]
    if note:
        lines += [f"> {note}", ""]
    lines += [
        "The labels are a **pseudo-MOS from a rule, not people's opinions**: the untouched source gets "
        f"{UNTOUCHED_MOS}, each degradation subtracts a penalty that grows with its level (see `thqa.synthetic.degrade.pseudo_mos`).",
        "",
        "## Held-out test metrics",
        "",
        "| metric | value |",
        "|---|---|",
        f"| SRCC | {m['srcc']:.4f} |",
        f"| PLCC (after the challenge's 3rd-order polynomial fit) | {m['plcc']:.4f} |",
        f"| KRCC | {m['krcc']:.4f} |",
        f"| RMSE | {m['rmse']:.4f} |",
        f"| main score (\\|SRCC\\| + \\|PLCC\\|) / 2 | {m['main_score']:.4f} |",
        f"| videos | {int(m['n'])} |",
        "",
        f"Validation at the chosen epoch ({doc['best_epoch']}): SRCC {doc['val']['srcc']:.4f}, PLCC {doc['val']['plcc']:.4f}.",
        "",
        "![prediction against pseudo-MOS](plot.png)",
        "",
        f"One file scored with the trained checkpoint: `{doc['scored_file']}` -> MOS {doc['scored_mos']:.3f} "
        f"(clips: {', '.join(f'{c:.3f}' for c in doc['scored_clip_scores'])}).",
        "",
    ]
    lines += _coverage_lines(doc)
    lines += [
        "Files: `corpus.csv` (every video, its kind, level and pseudo-MOS), `scores.csv` (held-out predictions), "
        "`metrics.json`, `run/` (checkpoints, per-epoch metrics), `cache/` (features).",
    ]
    if bad:
        lines += ["", "## Skipped", ""] + [f"- {why}" for _, why in bad]
    return "\n".join(lines) + "\n"
