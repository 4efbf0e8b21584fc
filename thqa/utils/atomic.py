"""Write files so that they are complete or absent: a temp file in the same directory, then os.replace.

The final file gets the mode a plain ``open(path, "w")`` would give it (0666 less the umask: 0644 under the usual
umask 022), not mkstemp's private 0600, so a checkpoint or a score file can be shared. The data is fsync'ed before the
rename and the directory after it, so a power cut leaves the old file or the new one, never an empty one.

A killed writer leaves its temp file (``.<name>.<host>-<pid>-<random>.partial``); :func:`clean_partials` removes such
leftovers of dead writers from a folder (train and the demo call it on their run folders).

An output is never put in the place of something that is not a regular file: ``-`` is standard output, a device or a
FIFO (``/dev/null``, ``/dev/stdout``) is opened and written through, and a symbolic link is followed (its target is
replaced atomically, the link stays). An existing file keeps its mode. :func:`check_output` checks an output before any
work (writable, not an input, not another output of the run) and :func:`output_lock` keeps two runs from writing one
file at once.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

from thqa.errors import ConfigError

__all__ = ["atomic_path", "atomic_write_text", "clean_partials", "default_file_mode", "check_writable", "check_output",
           "output_lock", "open_through", "is_stream", "STDOUT"]

#: the output name that means standard output
STDOUT = "-"

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


#: names that stand for a process's open files (``/dev/stdout`` links to ``/proc/self/fd/1``)
_FD_NAMES = ("/proc/", "/dev/fd/", "/dev/stdin", "/dev/stdout", "/dev/stderr")


def _via_proc(path: str | os.PathLike) -> bool:
    """Whether ``path`` is, or links through, a process's open file (``/dev/stdout``, ``/proc/self/fd/1``): written
    through even when that is a regular file (``thqa ... -o /dev/stdout > out.txt``)."""
    p = os.path.abspath(os.fsdecode(path))
    for _ in range(40):
        if p.startswith(_FD_NAMES):
            return True
        if not os.path.islink(p):
            return False
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    return False


def _is_our_stdout(path: str | os.PathLike) -> bool:
    """Whether ``path`` (``/dev/stdout``, ``/proc/self/fd/1``) is this process's standard output: written with
    ``sys.stdout``, at its offset (after what the shell's ``> out.txt`` already holds), not from the start."""
    if os.name == "nt" or not _via_proc(path):
        return False
    try:
        a, b = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def is_stream(path: str | os.PathLike) -> bool:
    """Whether writing ``path`` means writing through it: ``-`` (stdout), an existing device, FIFO or socket (also
    through a symbolic link), or a name in /dev or /proc such as ``/dev/stdout`` -- never renamed over."""
    if os.fspath(path) == STDOUT:
        return True
    if os.name != "nt" and _via_proc(path):
        return os.path.exists(path)
    try:
        mode = os.stat(path).st_mode  # follows links
    except (OSError, ValueError):
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _real_target(path: str | os.PathLike) -> Path:
    """The file a write to ``path`` replaces: ``path`` itself, or the target of the symbolic link(s) it names."""
    p = Path(path)
    return Path(os.path.realpath(p)) if os.path.islink(p) else p


def open_through(path: str | os.PathLike, what: str = ""):
    """Open a stream output for writing text (UTF-8): stdout for ``-``, else the device or FIFO itself.

    A FIFO nobody reads is an error at once (never a hang). Raises:
        ConfigError: nothing reads the FIFO. OSError: naming ``path``.
    """
    if os.fspath(path) == STDOUT or _is_our_stdout(path):
        return contextlib.nullcontext(sys.stdout)
    flags = os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if os.path.isfile(path):  # a regular file reached through /proc/self/fd/N: added to, never written over
        flags |= os.O_APPEND
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise ConfigError(f"{what + ' ' if what else ''}{path}: a pipe that no process reads") from None
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
    os.set_blocking(fd, True)
    return open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115 - the caller closes it


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on error it is removed.

    Whatever the caller writes to the temp path (by name: safetensors, torch.save, matplotlib) is fsync'ed and renamed
    onto ``path`` with the mode ``path`` had, or for a new file the umask's (see :func:`default_file_mode`). A symbolic
    link is followed (its target is replaced); ``-``, a device or a FIFO are written through (copied into), never
    replaced. An OSError names ``path``, not the temp file.
    """
    if is_stream(path):
        with _through(path) as tmp:
            yield tmp
        return
    p = _real_target(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.parent / f".{p.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(8)}.partial"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
        os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.filename is not None and os.fspath(exc.filename) == os.fspath(tmp):  # name the output, not the temp file
                raise OSError(exc.errno, exc.strerror, os.fspath(path)) from exc
            raise
        try:
            _fsync_file(tmp)
            _keep_mode(tmp, p)
            os.replace(tmp, p)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
        _fsync_dir(p.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _keep_mode(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the mode (and, as root, the owner) of the file it replaces, or the umask's for a new file."""
    try:
        st = os.stat(target)
    except OSError:
        os.chmod(tmp, default_file_mode())  # some writers (safetensors) replace the file with a 0600 one
        return
    if hasattr(os, "chown") and os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, stat.S_IMODE(st.st_mode))


@contextlib.contextmanager
def _through(path: str | os.PathLike) -> Iterator[Path]:
    """A private temp file whose bytes are then copied into stdout, the device or the FIFO ``path``."""
    fd, name = tempfile.mkstemp(prefix="thqa-", suffix=Path(os.fspath(path)).suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as src, open_through(path) as dst:
            dst.flush()
            shutil.copyfileobj(src, dst.buffer)
            dst.buffer.flush()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (``-``, a device or a FIFO: written through)."""
    if is_stream(path):
        try:
            with open_through(path) as f:
                f.write(text)
                f.flush()
        except OSError as exc:
            if exc.filename is None and exc.errno is not None:  # /dev/full: name the output
                raise OSError(exc.errno, exc.strerror, os.fspath(path)) from exc
            raise
        return Path(path)
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
    ``-`` (stdout), a device and a FIFO are fine for a file (they are written through); a symbolic link is checked
    where it points.

    Raises:
        ConfigError: ``path`` is a folder where a file is wanted (or a file where a folder is), a parent is a file,
            or the nearest existing folder (or the file itself) cannot be written.
    """
    label = f"{what} {os.fspath(path)}" if what else os.fspath(path)
    if not folder and os.fspath(path) == STDOUT:
        return Path(path)
    p = Path(path)
    if folder:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{label}: is a file, not a folder")
    else:
        if p.is_dir():
            raise ConfigError(f"{label}: is a folder; give a file name")
        if p.exists() and not os.access(p, os.W_OK):
            raise ConfigError(f"{label}: cannot be written (permission denied)")
        if is_stream(p):
            return p
        p = _real_target(p)
    anc = p if folder else p.parent
    while not os.path.lexists(anc) and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(f"{label}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(f"{label}: cannot write in {anc} (permission denied)")
    return Path(path)


def check_output(path: str | os.PathLike, what: str, *, inputs: Iterable = (), outputs: Iterable = (), folder: bool = False,
                 text: bool = False) -> Path:
    """Check an output before any work: writable (:func:`check_writable`), not one of the run's ``inputs`` (files the
    run reads: a video, a manifest, a checkpoint) and not one of its other ``outputs`` -- by inode, so a hard or
    symbolic link to an input counts. ``-``, devices and FIFOs are written through and never clash. With ``text`` (a
    table), an existing file that is not text (a video: ``-o *.mp4``) is refused too.

    ``inputs``/``outputs``: paths, or ``(label, path)`` pairs that name the option in the message.

    Raises:
        ConfigError: as :func:`check_writable`, or the output is an input or another output of the run, or binary.
    """
    p = check_writable(path, what, folder=folder)
    if is_stream(p):
        return p
    if text and not folder and _is_binary(p):
        raise ConfigError(
            f"{what} {os.fspath(path)}: exists and is not a text file (a video? an image?); thqa writes a text table "
            "there and never replaces such a file: give another name"
        )
    me = _identity(p)
    for kind, items in (("input", inputs), ("output", outputs)):
        for item in items:
            label, other = item if isinstance(item, tuple) else ("", item)
            if other is None or is_stream(other) or _identity(other) != me:
                continue
            name = f"{label} {os.fspath(other)}".strip()
            same = " (the same file)" if os.fspath(other) != os.fspath(path) else ""
            raise ConfigError(
                f"{what} {os.fspath(path)}: is the {kind} {name}{same}; thqa never writes over "
                f"{'an input' if kind == 'input' else 'one output with another'}: give another name"
            )
    return p


def _is_binary(path: Path) -> bool:
    """Whether the regular file ``path`` exists and its first 4 KiB are not UTF-8 text (a NUL byte, or bytes that
    cannot be UTF-8)."""
    import codecs

    try:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            head = f.read(4096)
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a character cut at 4 KiB is fine
    except UnicodeDecodeError:
        return True
    except OSError:
        return False
    return b"\0" in head


def _identity(path: str | os.PathLike):
    """(device, inode) of an existing file (links to one file share it), else the resolved path."""
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except (OSError, ValueError):
        return os.path.realpath(os.fsdecode(path))


def _lock_name(path: str | os.PathLike) -> Path:
    p = _real_target(path)
    return p.parent / f".{p.name}.lock"


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, what: str, *, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the output ``path`` while a run writes it (``.<name>.lock`` beside it, holding the
    pid, removed at the end); ``-``, devices and FIFOs are not locked. ``wait``: wait for another holder (for short
    writes such as adding rows to a list) instead of refusing.

    Raises:
        ConfigError: another process holds the lock (its pid is named).
    """
    if os.name == "nt" or is_stream(path):
        yield
        return
    import fcntl

    lock = _lock_name(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)  # a file system without locks (some network mounts): written unlocked, as before
                log.warning("%s %s: cannot be locked (%s); two runs writing it at once would mix their rows", what, os.fspath(path), exc.strerror)
                with contextlib.suppress(OSError):
                    os.unlink(lock)
                yield
                return
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"{what} {os.fspath(path)}: another thqa run (pid {holder}) is writing it; wait for it to end or give another name"
            ) from None
        with contextlib.suppress(OSError):  # the lock file may have been removed by its last holder: take a fresh one
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
