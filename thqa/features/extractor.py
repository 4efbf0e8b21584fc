"""Features of files: :func:`~thqa.features.prepare.prepare` in decoding workers (:mod:`thqa.features.workers`), the
backbones batched across files (:class:`~thqa.features.runner.Backbones`); the scorer and the cache use it.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from thqa.errors import ConfigError
from thqa.features.prepare import prepare
from thqa.features.runner import Backbones, ClipBatcher, VideoFeatures
from thqa.features.settings import LOGGER, ExtractionSettings
from thqa.features.weights import WeightsOptions
from thqa.features.workers import PrepareDataset, WorkerCrashed, default_workers, prepared

__all__ = ["FeatureExtractor", "ItemResult"]

log = logging.getLogger(LOGGER)


@dataclass
class ItemResult:
    """One file's outcome in a batch: features, or the error that stopped it."""

    path: str
    features: VideoFeatures | None = None
    error: str | None = None
    error_type: str | None = None


class FeatureExtractor:
    """Features of files: decoding + audio on the CPU (in worker processes when ``workers`` > 0), backbones batched
    across files.

    Args:
        workers: decoding processes; 0 decodes in this process, ``"auto"`` picks :func:`default_workers`.
        file_timeout: seconds one file may take to decode before it is reported as failed (None: no limit).
        prefetch: files queued per worker. A slow file delays only the ``prefetch - 1`` files queued behind it in
            its worker (the other workers go on); 2 keeps every worker busy while the backbones run.
        precision: of the backbones this builds when none are given (see :class:`Backbones`).
    """

    def __init__(
        self,
        settings: ExtractionSettings | None = None,
        weights: WeightsOptions | None = None,
        *,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        workers: int | str = "auto",
        backbones: Backbones | None = None,
        file_timeout: float | None = 300.0,
        prefetch: int = 2,
        precision: str = "auto",
    ):
        self.settings = (settings or ExtractionSettings()).validate()
        self.backbones = backbones or Backbones(weights, device=device, batch_size=batch_size, precision=precision)
        if workers == "auto":
            workers = default_workers(self.backbones.device)
        try:
            self.workers = max(0, int(workers))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"workers must be a number or 'auto', got {workers!r}") from exc
        self.file_timeout = file_timeout
        self.prefetch = max(1, int(prefetch))
        #: where the last iter_extract's time went: waiting for prepared files, backbone passes
        self.stats: dict = {}

    def extract(self, path: str | os.PathLike, *, keep_first_frames: bool | str = False) -> VideoFeatures:
        """Features of one file. Raises the file's error (a THQAError subclass)."""
        item = prepare(path, self.settings, keep_first_frames=keep_first_frames, timeout=self.file_timeout)
        return self.backbones.features([item])[0]

    def iter_extract(
        self, paths: Iterable[str | os.PathLike], *, keep_first_frames: bool | str = False, ordered: bool = True
    ) -> Iterator[ItemResult]:
        """Yield one :class:`ItemResult` per path; a bad file yields its error and the rest goes on.

        Files are prepared by the workers in whatever order they finish (a slow file holds up nobody) and run
        through the backbones in batches of about ``batch_size`` clips taken from several files. ``ordered`` (the
        default) yields results in the order of ``paths``; ``ordered=False`` yields each as soon as it is ready.
        A worker process that dies (a crash inside FFmpeg, say) costs only the file it was reading: that file is
        reported as failed and the others are prepared again.
        """
        paths = [str(p) for p in paths]
        if not paths:
            return
        ds = PrepareDataset(paths, self.settings, keep_first_frames, self.file_timeout)
        ready: dict[int, ItemResult] = {}
        next_out = 0
        for res in self._results(ds):
            if not ordered:
                yield res[1]
                continue
            ready[res[0]] = res[1]
            while next_out in ready:
                yield ready.pop(next_out)
                next_out += 1

    # -- internals --------------------------------------------------------------------------------------------
    def _results(self, ds: PrepareDataset) -> Iterator[tuple[int, ItemResult]]:
        """(index, result) for every file of ``ds``, in the order they finish."""
        batcher = ClipBatcher(self.backbones)
        self.stats = {"wait_s": 0.0, "forward_s": 0.0, "passes": 0, "files": 0}
        todo = list(range(len(ds)))
        try:
            while todo:
                returned: set[int] = set()
                try:
                    for i, item, err in self._timed(self._prepared(ds, todo, returned, on_start=self._warm_backbones)):
                        if err is not None:
                            yield i, ItemResult(ds.paths[i], error=err[1], error_type=err[0])
                            continue
                        batcher.add(i, item)
                        yield from self._pump(ds, batcher)
                    yield from self._pump(ds, batcher, final=True)
                    return
                except WorkerCrashed as crash:
                    left = [i for i in todo if i not in crash.returned]
                    # the files in flight when it died: prepare each alone in a fresh process to find the culprit(s)
                    in_flight = left[: self.workers * self.prefetch]
                    log.warning("a decoding worker died (%s); retrying %d file(s) one at a time", crash.cause, len(in_flight))
                    for i in in_flight:
                        got: set[int] = set()
                        try:
                            for j, item, err in self._prepared(ds, [i], got, workers=1):
                                if err is not None:
                                    yield j, ItemResult(ds.paths[j], error=err[1], error_type=err[0])
                                else:
                                    batcher.add(j, item)
                                    yield from self._pump(ds, batcher)
                        except WorkerCrashed as again:
                            msg = f"{ds.paths[i]}: the decoding process died while reading this file ({again.cause})"
                            log.warning("%s", msg)
                            yield i, ItemResult(ds.paths[i], error=msg, error_type="DecodeError")
                    todo = left[len(in_flight) :]
            yield from self._pump(ds, batcher, final=True)
        finally:
            self.stats.update(forward_s=round(batcher.forward_s, 3), passes=batcher.passes, wait_s=round(self.stats["wait_s"], 3))
            log.debug("extraction: %s", self.stats)

    def _warm_backbones(self) -> None:
        """While the workers that have just started prepare the first files: build the models if they wait for it
        (``Backbones(lazy=True)``), and on a GPU tune the kernels."""
        if not self.backbones.built:
            t = time.perf_counter()
            self.backbones.build()
            self.stats["build_s"] = round(time.perf_counter() - t, 3)
            self.stats["wait_s"] -= time.perf_counter() - t  # _timed counts it as waiting: it is not
        if self.backbones.device.type == "cuda":
            dt = self.backbones.warm_up(self.settings)
            self.stats["warm_up_s"] = round(dt, 3)
            self.stats["wait_s"] -= dt  # _timed counts it as waiting: it is not

    def _timed(self, gen):
        """Pass ``gen`` through, adding the time spent waiting for it to ``stats['wait_s']``."""
        while True:
            t = time.perf_counter()
            try:
                out = next(gen)
            except StopIteration:
                return
            finally:
                self.stats["wait_s"] += time.perf_counter() - t
            self.stats["files"] += 1
            yield out

    def _pump(self, ds: PrepareDataset, batcher: "ClipBatcher", final: bool = False) -> Iterator[tuple[int, ItemResult]]:
        """Run full passes (and, when ``final``, the last partial one); a pass that fails is redone file by file,
        so one file that breaks the backbones costs only itself."""
        while len(batcher) >= self.backbones.batch_size or (final and len(batcher)):
            try:
                done = batcher.run()
            except Exception as exc:  # noqa: BLE001 - isolate the culprit
                log.debug("batched forward failed (%s); retrying its files one at a time", exc)
                files = batcher.items(batcher.rows[: self.backbones.batch_size])
                batcher.drop(i for i, _ in files)
                for i, it in files:
                    try:
                        yield i, ItemResult(ds.paths[i], features=self.backbones.features([it])[0])
                    except Exception as exc1:  # noqa: BLE001
                        msg = f"{ds.paths[i]}: feature extraction failed ({type(exc1).__name__}: {exc1})"
                        yield i, ItemResult(ds.paths[i], error=msg, error_type=type(exc1).__name__)
                continue
            for i, f in done:
                yield i, ItemResult(ds.paths[i], features=f)

    def _prepared(self, ds: PrepareDataset, indices: list[int], returned: set[int], workers: int | None = None, on_start=None):
        """Prepare ``indices`` in worker processes (or here when there are none), yielding as each finishes
        (:func:`thqa.features.workers.prepared`). ``on_start()`` runs once the workers are started."""
        return prepared(
            ds, indices, returned, workers=self.workers if workers is None else workers, prefetch=self.prefetch,
            file_timeout=self.file_timeout, cuda=self.backbones.device.type == "cuda", models_built=self.backbones.built,
            on_start=on_start,
        )
