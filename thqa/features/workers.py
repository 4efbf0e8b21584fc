"""The decoding workers: processes that run :func:`~thqa.features.prepare.prepare` (a DataLoader over the files),
how they start (fork, or a fork server beside a GPU), how they die with the process that started them, and the
warm-up they inherit.
"""
from __future__ import annotations

import ctypes
import functools
import importlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from multiprocessing import forkserver
from typing import Iterator, Sequence

import numpy as np
import torch

from thqa.errors import THQAError
from thqa.features.prepare import _audio_extractor, encode_frame_png, prepare
from thqa.features.settings import LOGGER, ExtractionSettings, resolve_device
from thqa.features.spatial import crop, normalize, resize_short_side
from thqa.media.probe import set_decode_threads

__all__ = ["PrepareDataset", "WorkerCrashed", "prepared", "warm_up", "start_fork_server", "default_workers"]

log = logging.getLogger(LOGGER)

#: a worker that returns nothing for file_timeout + this many seconds is taken for hung and stopped
_HANG_MARGIN_S = 60.0
#: how often the process that drives the backbones checks on its decoding workers (seconds)
_POLL_S = 5.0


class PrepareDataset(torch.utils.data.Dataset):
    """The files of one extraction, for a DataLoader: item ``i`` is ``(i, PreparedVideo, None)``, or
    ``(i, None, (error type, message))`` for a file that cannot be prepared."""

    def __init__(self, paths: Sequence[str], settings: ExtractionSettings, keep_first_frames: bool | str, timeout: float | None):
        self.paths = list(paths)
        self.settings = settings
        self.keep = keep_first_frames
        self.timeout = timeout

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        p = self.paths[i]
        try:
            return i, prepare(p, self.settings, keep_first_frames=self.keep, timeout=self.timeout), None
        except THQAError as exc:
            return i, None, (type(exc).__name__, str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken file must not stop a batch
            log.debug("unexpected error preparing %s", p, exc_info=True)
            return i, None, (type(exc).__name__, f"{p}: unexpected {type(exc).__name__}: {exc}")


def _identity(x):
    return x


#: Linux's prctl option that sends a signal to this process when its parent dies (<linux/prctl.h>)
_PR_SET_PDEATHSIG = 1
#: how often (seconds) a decoding worker checks that its parent is alive, where no parent-death signal exists
_PARENT_POLL_S = 1.0


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie not yet reaped counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _die_with_parent(main_pid: int | None = None) -> None:
    """In a decoding worker: end when the process that started it ends, however it ends (SIGKILL, SIGTERM, a crash),
    instead of living on as an orphan that holds hundreds of MB: Linux's parent-death signal (SIGKILL), and on every
    system a thread that checks every :data:`_PARENT_POLL_S` s that the parent and ``main_pid`` (the process that
    asked for the workers) live. A worker from the fork server needs the second: its parent is the fork server, which
    outlives the main process as long as any worker holds the server's keep-alive pipe (every worker does). A worker
    busy decoding a long file never reaches the DataLoader's own check."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError) as exc:  # the watch below still holds
            log.debug("no parent-death signal (%s); watching the parent pid", exc)

    def orphaned() -> bool:
        return os.getppid() != parent or (main_pid is not None and main_pid != parent and _gone(main_pid))

    if orphaned():  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while not orphaned():
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="thqa-parent-watch", daemon=True).start()


def _worker_init(_worker_id: int, main_pid: int | None = None) -> None:
    """One thread per worker process for the decoder, BLAS and torch: the workers already fill the cores. The worker
    dies with its parent and with ``main_pid``, the process that started the DataLoader (:func:`_die_with_parent`)."""
    _die_with_parent(main_pid)
    # a forked worker inherits the command line's SIGTERM handler (an interrupt); the DataLoader stops a hung worker
    # with SIGTERM, which must end it at once, even inside FFmpeg
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    set_decode_threads(1)
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits  # not a dependency of thqa: limited when present

        threadpool_limits(1)
    except Exception:  # noqa: BLE001 - only a speed matter
        pass


_warm: set = set()


def warm_up(settings: ExtractionSettings | None = None, *, png: bool = True) -> None:
    """Import and compile (numba) what :func:`prepare` needs, once in this process: before worker processes are
    forked (they inherit it instead of each paying about 5 s - imports of scipy.signal/librosa, JIT - on its first
    file), and when a :class:`~thqa.scoring.scorer.Scorer` is built (so that its first file costs what the next ones do).
    ``png``: also the PNG encoder (OpenCV), which only caches of first frames need."""
    s = settings or ExtractionSettings()
    if (s.audio, png) in _warm or (s.audio, True) in _warm:
        return
    t = time.perf_counter()
    n = int(round((1 + 2 * s.audio.context) * s.audio.sample_rate))
    _audio_extractor(s.audio).batch(np.zeros((1, n), np.float32))
    img = resize_short_side(np.zeros((16, 16, 3), np.uint8), 32)
    normalize(crop(img, size=16))
    if png:
        encode_frame_png(img.numpy())
    importlib.import_module("av")

    _warm.add((s.audio, png))
    log.debug("prepare() warmed up in %.2f s", time.perf_counter() - t)


#: how decoding workers start: None picks "fork", or "forkserver" once this process holds a CUDA context
_START_METHOD: str | None = None


def _worker_context(cuda: bool = False):
    """None (fork) normally; a fork server beside CUDA, whose context makes each fork of this process slow."""
    method = _START_METHOD or ("forkserver" if (cuda or torch.cuda.is_initialized()) else None)
    if method is None or method == "fork":
        return None
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["thqa.utils.prefork"])
    return ctx


def start_fork_server() -> bool:
    """Start the fork server that decoding workers beside a GPU come from, now, in the background: its imports and
    numba compilation (5-10 s) then overlap whatever this process does next (building the models, hashing the
    files) instead of delaying the first file. Idempotent; returns whether a fork server is (now) running."""
    ctx = _worker_context(cuda=True)
    if ctx is None:
        return False
    try:
        forkserver.ensure_running()
    except Exception as exc:  # noqa: BLE001 - only a head start: the DataLoader starts it when it needs it
        log.debug("could not start the fork server early (%s)", exc)
        return False
    return True


def default_workers(device: torch.device | str) -> int:
    """Decoding processes when the caller says "auto": all cores but one beside a GPU (it waits on the decoders),
    none beside a CPU (the backbones use the cores; measured: 1.03x of decode + forward in one process)."""
    d = resolve_device(device)
    return max(1, (os.cpu_count() or 2) - 1) if d.type == "cuda" else 0


class WorkerCrashed(Exception):
    """A decoding worker died or hung; ``returned``: the files whose results had come back."""

    def __init__(self, returned: set[int], cause: BaseException):
        super().__init__(str(cause))
        self.returned = returned
        self.cause = cause


def _loader(ds: PrepareDataset, indices: list[int], ctx, *, workers: int, prefetch: int, cuda: bool):
    """A DataLoader yielding ``ds[i]`` for ``indices`` from ``workers`` processes in the order they finish."""
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, indices),
        multiprocessing_context=ctx,
        pin_memory=cuda,
        batch_size=None,
        shuffle=False,
        num_workers=min(workers, len(indices)),
        collate_fn=_identity,
        worker_init_fn=functools.partial(_worker_init, main_pid=os.getpid()),
        prefetch_factor=prefetch,
        persistent_workers=False,
        in_order=False,
        timeout=_POLL_S,  # wake up regularly: a dead worker is noticed, and a hung one below
    )


def prepared(ds: PrepareDataset, indices: list[int], returned: set[int], *, workers: int, prefetch: int,
             file_timeout: float | None, cuda: bool, models_built: bool, on_start=None) -> Iterator[tuple]:
    """Prepare ``indices`` of ``ds`` in ``workers`` processes (or here when 0), yielding ``ds[i]`` as each finishes
    and adding ``i`` to ``returned``. ``on_start()`` runs once the workers are started (before the first file is
    waited for); ``cuda``: the backbones run on a GPU (fork server, pinned memory); ``models_built``: warm up
    before forking (the workers inherit it). Raises :class:`WorkerCrashed` when a worker dies or hangs."""
    if workers == 0:
        if on_start is not None:
            on_start()
        for i in indices:
            returned.add(i)
            yield ds[i]
        return
    ctx = _worker_context(cuda=cuda)
    if ctx is None and models_built:
        # the forked workers inherit it; with models still to build, the workers do it themselves meanwhile
        warm_up(ds.settings)
    loader = _loader(ds, indices, ctx, workers=workers, prefetch=prefetch, cuda=cuda)
    hang_limit = (file_timeout + _HANG_MARGIN_S) if file_timeout else None
    it = iter(loader)
    if on_start is not None:
        on_start()
    last = time.monotonic()
    try:
        while True:
            try:
                out = next(it)
            except StopIteration:
                return
            except RuntimeError as exc:
                text = str(exc)
                if "DataLoader" not in text:
                    raise
                if "timed out" in text:
                    if hang_limit is None or time.monotonic() - last < hang_limit:
                        continue  # still within the time a file may take
                    exc = RuntimeError(f"no file finished in {hang_limit:.0f} s: a worker hangs")
                elif not ("exited unexpectedly" in text or "killed by signal" in text):
                    raise
                raise WorkerCrashed(set(returned), exc) from None
            last = time.monotonic()
            returned.add(out[0])
            yield out
    finally:
        # stop the workers now (a hung one is terminated), not whenever the iterator is collected
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
