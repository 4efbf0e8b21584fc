"""Write files so that they are complete or absent: a temp file in the same directory, then os.replace.

The final file gets the mode a plain ``open(path, "w")`` would give it (0666 less the umask: 0644 under the usual
umask 022), not mkstemp's private 0600, so a checkpoint or a score file can be shared. The data is fsync'ed before the
rename and the directory after it, so a power cut leaves the old file or the new one, never an empty one.

A killed writer leaves its temp file (``.<name>.<host>-<pid>-<random>.partial``); :func:`clean_partials` removes such
leftovers of dead writers from a folder (train and the demo call it on their run folders).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_text", "clean_partials", "default_file_mode", "check_writable"]

log = logging.getLogger(__name__)

#: temp names of :func:`atomic_path`: ``.<name>.<host token>-<pid>-<16 hex>.partial``
_PARTIAL_RE = re.compile(r"\..+\.([0-9a-f]{8})-(\d+)-[0-9a-f]{16}\.partial")


def _host_token() -> str:
    """8 hex digits naming this machine's boot and pid namespace, so that a pid in a temp name can be checked here."""
    parts = [socket.gethostname()]
    for p in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        with contextlib.suppress(OSError):
            parts.append(os.readlink(p) if p.endswith("/pid") else Path(p).read_text().strip())
    return hashlib.sha256("\0".join(parts).encode("utf-8", "replace")).hexdigest()[:8]


_HOST = _host_token()


def default_file_mode() -> int:
    """0666 less the process umask: the mode ``open(path, "w")`` gives a new file (0644 under umask 022)."""
    try:  # Linux >= 4.7 shows it without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so that a rename survives a power cut (POSIX only)."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on error it is removed.

    Whatever the caller writes to the temp path (by name: safetensors, torch.save, matplotlib) is fsync'ed, given the
    umask's mode (see :func:`default_file_mode`) and renamed onto ``path``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(8)}.partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
    os.close(fd)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, default_file_mode())  # some writers (safetensors) replace the file with a 0600 one
        os.replace(tmp, p)
        _fsync_dir(p.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this machine; True when that cannot be known (never signals anything)."""
    if pid <= 0 or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def clean_partials(directory: str | os.PathLike, *, older_than_s: float = 3600.0) -> int:
    """Remove temp files that killed writers of :func:`atomic_path` left in ``directory``; return how many.

    A temp file goes when its writer ran on this machine and its pid is no longer running, or when it is older than
    ``older_than_s`` (a writer on another machine sharing the folder cannot be checked). Other files are never touched.
    """
    d = Path(directory)
    removed = 0
    try:
        entries = list(os.scandir(d))
    except OSError:
        return 0
    cutoff = time.time() - older_than_s
    for e in entries:
        m = _PARTIAL_RE.fullmatch(e.name)
        if m is None or not e.is_file(follow_symlinks=False):
            continue
        try:
            old = e.stat(follow_symlinks=False).st_mtime < cutoff
        except OSError:
            continue
        pid = int(m.group(2))
        if old or (m.group(1) == _HOST and pid != os.getpid() and not _pid_alive(pid)):
            with contextlib.suppress(OSError):
                os.unlink(e.path)
                removed += 1
                log.debug("removed %s, left by a killed writer", e.path)
    return removed


def check_writable(path: str | os.PathLike, what: str, *, folder: bool = False) -> Path:
    """Check before any work that ``path`` can be written (a file, or with ``folder`` a folder), and say why not.

    Missing parent folders are fine (writers create them) as long as the nearest existing one is a writable folder.

    Raises:
        ConfigError: ``path`` is a folder where a file is wanted (or a file where a folder is), a parent is a file,
            or the nearest existing folder (or the file itself) cannot be written.
    """
    from thqa.errors import ConfigError

    p = Path(path)
    label = f"{what} {p}" if what else str(p)
    if folder:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{label}: is a file, not a folder")
    else:
        if p.is_dir():
            raise ConfigError(f"{label}: is a folder; give a file name")
        if p.exists() and not p.is_file():  # a device, a FIFO, /dev/stdout: never replaced by a rename
            raise ConfigError(f"{label}: is not a regular file (a device or a pipe); give a file name")
        if p.exists() and not os.access(p, os.W_OK):
            raise ConfigError(f"{label}: cannot be written (permission denied)")
    anc = p if folder else p.parent
    while not os.path.lexists(anc) and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(f"{label}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(f"{label}: cannot write in {anc} (permission denied)")
    return p
