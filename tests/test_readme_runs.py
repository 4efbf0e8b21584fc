"""Every fenced ``bash`` and ``python`` block of the README, run as written, in README order (issue 25).

The blocks run in one folder, the README's world: the first block's ``thqa demo`` (made ``--tiny``) trains the model
every later block uses, and the files the snippets name (``best.safetensors``, ``video1.mp4``, ``clips/*.mp4``,
``genA/x.mp4`` with ``labels.csv``, ``talk.wav``, ...) are put there from the demo's corpus, from ../shared/media (real
faces, for lip sync) and from ../shared/thqa-ntire (``thqa_ntire_val.csv``, the challenge's ``preds.txt``).

How each command runs:
- ``thqa ...``: bash expands the words (globs, quotes) exactly as a shell would, then ``thqa.cli.main`` runs them in this
  process with the session's random-init backbones and small clips (:func:`use_session_backbones`), as a CPU without
  bf16 would (``THQA_CPU_FLAGS=avx2``: ``auto`` means fp32). It must exit 0 and write every file it names with ``-o``,
  ``--out`` and ``--plot``.
- ``thqa serve`` starts in the background (a real subprocess on port 8000, as written) until the module ends; ``curl``
  runs for real against it.
- python blocks run one after the other in one namespace (a later block uses an earlier block's ``scorer``).
- A command is skipped, with its reason, only by a rule of :data:`SKIPS` (a GPU, the THQA-NTIRE videos, a Ray cluster of
  several machines, installing packages, the suite itself, what ../shared provides), or when it needs what a skipped
  command would have made. A command no rule knows fails: a new kind of snippet needs a rule here.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

import media
from test_cli_experiments import use_session_backbones
from test_readme import README, blocks
from thqa.cli import app as cli
from thqa.synthetic.speech import synthesize_speech
from thqa.utils import hardware

NTIRE = media.MEDIA_DIR.parent / "thqa-ntire"
#: the README's world files that come from ../shared/thqa-ntire (name in the world -> file there)
NTIRE_FILES = {"thqa_ntire_val.csv": "thqa_ntire_val.csv", "preds.txt": "simplevqa_baseline_val_predictions.txt"}
#: real talking heads (../shared/media) for the snippets about lip sync: dlib finds no face in most self-made heads
REAL_FACES = ("vid_real_vox_00015_224.mp4", "vid_real_vox_00373_224.mp4")
SERVE_URL = "http://127.0.0.1:8000"
#: options whose value is a file or folder a command makes, and of those the ones no other command's output goes into
OUTPUT_OPTIONS = ("-o", "--output", "--out", "--plot", "--cache-dir")
OWN_OUTPUTS = ("-o", "--output", "--out", "--plot")


@dataclass
class Command:
    """One command of a bash block: its text as written and its line in the README."""

    line: int
    text: str

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text)


@dataclass
class World:
    """The folder the README's blocks run in, and what they left there."""

    path: Path
    real_faces: bool
    serve: subprocess.Popen | None = None
    serve_log: Path | None = None
    made_by_skipped: dict[str, int] = field(default_factory=dict)  #: output path -> line of the skipped command
    namespace: dict = field(default_factory=dict)  #: the python blocks' shared globals
    python_done: set[int] = field(default_factory=set)


def bash_commands(line: int, body: str) -> list[Command]:
    """The commands of a bash block, at ``&&``/``;``/``|`` and line ends (lines joined at a trailing backslash, comments
    dropped), each as its text with the quotes as written."""
    out = []
    for k, text in enumerate(body.split("\n")):
        out.append((line + 1 + k, text))
    joined: list[tuple[int, str]] = []
    for n, text in out:
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + text)
        else:
            joined.append((n, text))
    commands = []
    for n, text in joined:
        lexer = shlex.shlex(text, posix=False, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, "#"
        words: list[str] = []
        for w in [*lexer, ";"]:
            if set(w) <= set(";&|"):
                if words:
                    commands.append(Command(n, " ".join(words)))
                words = []
            else:
                words.append(w)
    return commands


def expand(cmd: Command, cwd: Path) -> list[str]:
    """The argument list bash makes of the command (globs, quotes, escapes), in ``cwd``."""
    proc = subprocess.run(["bash", "-c", "printf '%s\\0' " + cmd.text], cwd=cwd, capture_output=True, check=True)
    return proc.stdout.decode().split("\0")[:-1]


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def _needs_gpu(argv: list[str], world: World) -> bool:
    return (_option(argv, "--device") or "").startswith("cuda") and not torch.cuda.is_available()


def _needs_ntire(argv: list[str], world: World) -> bool:
    return any(Path(a).name in NTIRE_FILES for a in argv) and not NTIRE.is_dir()


def _needs_faces(argv: list[str], world: World) -> bool:
    syncs = argv[:2] == ["thqa", "sync"] or "--sync" in argv or "sync=true" in " ".join(argv)
    return syncs and not world.real_faces


def _needs_serve(argv: list[str], world: World) -> bool:
    return any(SERVE_URL in a for a in argv) and world.serve is None


#: (rule, reason): a command a rule matches is skipped with its reason
SKIPS: list[tuple[Callable[[list[str], World], bool], str]] = [
    (lambda a, w: a[0] == "pip", "installs packages: the set-up that CI runs before this suite"),
    (lambda a, w: a[:3] == ["python", "-m", "pytest"], "the test suite itself"),
    (lambda a, w: a[:2] == ["ray", "start"], "starts a node of a Ray cluster: needs several machines "
     "(tests/engines/test_ray.py::test_a_two_node_cluster_runs_tasks_on_both_nodes runs one on one machine)"),
    (lambda a, w: "--ray-address" in a, "runs on the Ray cluster that `ray start` makes, with a folder its machines share"),
    (_needs_gpu, "needs a GPU (torch sees none here)"),
    (lambda a, w: any("THQA-NTIRE/" in x for x in a), "needs the THQA-NTIRE videos (distributed by their authors)"),
    (_needs_ntire, f"needs the THQA-NTIRE label files ({NTIRE} is absent)"),
    (_needs_faces, f"needs talking heads with a real face ({media.MEDIA_DIR} is absent; dlib finds none in the self-made heads)"),
    (_needs_serve, "needs the `thqa serve` of the line above, which could not start (port 8000 is in use)"),
]


def skip_reason(argv: list[str], world: World) -> str | None:
    """Why the command cannot run here, or None."""
    for rule, reason in SKIPS:
        if rule(argv, world):
            return reason
    made_here = set(outputs(argv, OWN_OUTPUTS))
    for a in argv:
        if a in world.made_by_skipped and a not in made_here and not (world.path / a).exists():
            return f"needs {a}, which the skipped command of README line {world.made_by_skipped[a]} makes"
    return None


def outputs(argv: list[str], options: tuple[str, ...] = OUTPUT_OPTIONS) -> list[str]:
    """The files and folders a thqa command names with ``options`` (default: its outputs, the cache included)."""
    return [v for name in options if (v := _option(argv, name)) not in (None, "-")]


def run_thqa(argv: list[str]) -> tuple[int, str, str]:
    """``thqa.cli.main(argv[1:])`` in this process, its standard output and error captured."""
    if argv[1] == "demo" and "--tiny" not in argv:
        argv = [*argv, "--tiny"]  # the test's demo is the tiny one: a few minutes instead of one hour of CPU
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv[1:])
        except SystemExit as e:  # argparse's usage errors
            rc = e.code if isinstance(e.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def start_serve(argv: list[str], world: World) -> str | None:
    """``thqa serve ...`` as a subprocess (the real command, port 8000 as written) until its /healthz answers; the
    reason it could not start, or None."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8000)) == 0:
            return "port 8000 is in use on this machine: `thqa serve` as written cannot listen there"
    world.serve_log = world.path / "serve.log"
    log = open(world.serve_log, "w")  # noqa: SIM115 - the process's, until the module ends
    world.serve = subprocess.Popen([sys.executable, "-m", "thqa.cli", *argv[1:]], cwd=world.path, stdout=log, stderr=log)
    for _ in range(600):  # the replica builds its models first; a service that never answers fails here, not later
        if world.serve.poll() is not None:
            raise AssertionError(f"`{' '.join(argv)}` exited {world.serve.returncode}: {world.serve_log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(SERVE_URL + "/healthz", timeout=5) as r:
            if r.status == 200:
                return None
        time.sleep(1)
    raise AssertionError(f"`thqa serve` did not become healthy: {world.serve_log.read_text()[-3000:]}")


def stop_serve(world: World) -> None:
    """SIGTERM to the service (it drains and exits), a kill if it has not exited in 2 minutes."""
    if world.serve is None:
        return
    world.serve.send_signal(signal.SIGTERM)
    try:
        world.serve.wait(120)
    except subprocess.TimeoutExpired:
        world.serve.kill()
        world.serve.wait()


def run_command(cmd: Command, world: World) -> str | None:
    """Run one command of a bash block as written: None when it ran, or the reason it was skipped. AssertionError when
    it does not run as written."""
    argv = expand(cmd, world.path)
    reason = skip_reason(argv, world)
    if reason:
        world.made_by_skipped.update({o: cmd.line for o in outputs(argv)})
        return reason
    where = f"README line {cmd.line} `{cmd.text}`"
    if argv[:2] == ["thqa", "serve"]:
        return start_serve(argv, world)
    if argv[0] == "thqa":
        rc, out, err = run_thqa(argv)
        assert rc == 0, f"{where} exited {rc}:\n{err[-4000:]}"
        for o in outputs(argv):
            assert (world.path / o).exists(), f"{where} did not write {o}"
        if argv[1] == "demo":
            populate(world)
    elif argv[0] == "curl":
        proc = subprocess.run(argv, cwd=world.path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{where} exited {proc.returncode}: {proc.stderr[-2000:]}"
        answer = json.loads(proc.stdout)
        assert isinstance(answer.get("mos"), float), f"{where} answered {answer}"
    else:
        raise AssertionError(f"{where}: no rule here says how to run `{argv[0]}` (add one to {__name__})")
    return None


def python_skip_reason(body: str, world: World) -> str | None:
    """Why a python block cannot run here (the rules of :data:`SKIPS` that apply to Python), or None."""
    if any(name in body for name in NTIRE_FILES) and not NTIRE.is_dir():
        return f"needs the THQA-NTIRE label files ({NTIRE} is absent)"
    if "sync" in body and not world.real_faces:
        return f"needs talking heads with a real face ({media.MEDIA_DIR} is absent)"
    if SERVE_URL in body and world.serve is None:
        return "needs the `thqa serve` of the block above, which did not start"
    return None


def run_python(line: int, world: World) -> str | None:
    """Run the python blocks up to the one at ``line`` (those not run yet) in the world's one namespace: None, or why
    the block at ``line`` is skipped."""
    for n, body in blocks(README, {"python", "py"}):
        if n > line or n in world.python_done:
            continue
        world.python_done.add(n)
        reason = python_skip_reason(body, world)
        if reason:
            if n == line:
                return reason
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(body, f"README.md:{n}", "exec"), world.namespace)  # noqa: S102 - the README's own code
    return None


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def populate(world: World) -> None:
    """Put the files the README's snippets name into the world, once the demo has made its corpus and checkpoint."""
    w, demo = world.path, world.path / "thqa-demo"
    for name in ("best.safetensors", "run/best.safetensors", "run1/best.safetensors"):
        _copy(demo / "run" / "best.safetensors", w / name)
    corpus = demo / "corpus"
    _copy(corpus / "head00.mp4", w / "video1.mp4")
    speech = synthesize_speech(seed=7, duration=3.0)
    media.write_video(w / "video2.mkv", seconds=3, size=(96, 96), audio=speech)
    for name in ("head02.mp4", "head02__blur4.mp4", "head02__compression5.mp4"):
        _copy(corpus / name, w / "clips" / name)
    _copy(corpus / "head03.mp4", w / "talking_head.mp4")
    _copy(corpus / "head04.mp4", w / "talk.mp4")
    media.write_audio_only(w / "talk.wav", speech, codec="pcm_s16le")
    faces = [media.MEDIA_DIR / f for f in REAL_FACES] if world.real_faces else [corpus / "head00.mp4", corpus / "head01.mp4"]
    for src, name in zip(faces, ("a.mp4", "b.mp4")):
        _copy(src, w / name)
        _copy(src, w / "renders" / name)
    with open(demo / "corpus.csv", newline="") as f:
        mos = {r["path"]: r["mos"] for r in csv.DictReader(f)}
    rows = []
    for gen, kind in (("genA", "compression5"), ("genB", "blur4")):
        for head in ("head00", "head01", "head02", "head03", "head04"):
            _copy(corpus / f"{head}__{kind}.mp4", w / gen / f"{head}.mp4")
            rows.append(f"{gen}/{head}.mp4,{mos[f'corpus/{head}__{kind}.mp4']}\n")
    (w / "labels.csv").write_text("path,mos\n" + "".join(rows))
    if NTIRE.is_dir():
        for name, src in NTIRE_FILES.items():
            _copy(NTIRE / src, w / name)


ITEMS = [
    *[pytest.param("bash", c, id=f"L{c.line}:{c.words[0]} {c.words[1] if len(c.words) > 1 else ''}".strip())
      for line, body in blocks(README, {"bash", "sh", "shell"}) for c in bash_commands(line, body)],
    *[pytest.param("python", line, id=f"L{line}:python") for line, _ in blocks(README, {"python", "py"})],
]
ITEMS.sort(key=lambda p: (p.values[1].line if p.values[0] == "bash" else p.values[1]))


@pytest.fixture(scope="module")
def world(tmp_path_factory, backbones, shared_media_or_none):
    """The README's world: a folder with the session's random-init backbones and small clips, offline, as a CPU
    without bf16 (``auto`` = fp32), the demo's weights-free fall-back, no network."""
    path = tmp_path_factory.mktemp("readme-world")
    home = tmp_path_factory.mktemp("readme-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path)
        for var, value in {"THQA_OFFLINE": "1", hardware.FLAGS_ENV: "avx2", "HF_HOME": str(home / "hf"),
                           "HF_HUB_CACHE": str(home / "hf" / "hub"), "TORCH_HOME": str(home / "torch")}.items():
            mp.setenv(var, value)
        for var in ("THQA_SWIN_WEIGHTS", "THQA_SLOWFAST_WEIGHTS"):
            mp.delenv(var, raising=False)
        hardware.cpu_info.cache_clear()
        use_session_backbones(mp, backbones, small_clips=True)
        w = World(path, real_faces=shared_media_or_none is not None)
        try:
            yield w
        finally:
            stop_serve(w)
            hardware.cpu_info.cache_clear()
    hardware.cpu_info.cache_clear()


@pytest.fixture(scope="session")
def shared_media_or_none() -> Path | None:
    return media.MEDIA_DIR if all((media.MEDIA_DIR / f).is_file() for f in REAL_FACES) else None


@pytest.mark.slow
@pytest.mark.parametrize("kind, what", ITEMS)
def test_readme_runs_as_written(kind, what, world) -> None:
    """Each command of a bash block and each python block runs as written, in README order, in the README's world."""
    reason = run_command(what, world) if kind == "bash" else run_python(what, world)
    if reason:
        pytest.skip(reason)


# --- the runner itself: it fails a snippet that does not run, and skips only by its rules -------------------------


def test_bash_commands_are_cut_as_a_shell_reads_them():
    body = "pip install -e . && thqa demo   # the main job\nthqa compare --labels x.csv \\\n    --group-pattern '_([^_]+)\\.mp4$' -o out.csv"
    cmds = bash_commands(10, body)
    assert [(c.line, c.words) for c in cmds] == [
        (11, ["pip", "install", "-e", "."]), (11, ["thqa", "demo"]),
        (12, ["thqa", "compare", "--labels", "x.csv", "--group-pattern", "_([^_]+)\\.mp4$", "-o", "out.csv"]),
    ]


def test_a_snippet_that_does_not_run_as_written_fails(tmp_path, monkeypatch, backbones):
    """A misspelt option exits 2 and an unknown program has no rule: both fail (they would pass a test that only parses
    names, not one that runs them); a command naming a missing file exits non-zero and fails too."""
    use_session_backbones(monkeypatch, backbones)
    world = World(tmp_path, real_faces=False)
    with pytest.raises(AssertionError, match="exited 2"):
        run_command(Command(5, "thqa score --no-such-option a.mp4"), world)
    with pytest.raises(AssertionError, match="(?s)exited 1:.*missing.mp4: no such file"):
        run_command(Command(6, "thqa score missing.mp4 --random-init --precision fp32 -o s.csv"), world)
    with pytest.raises(AssertionError, match="no rule here says how to run `make`"):
        run_command(Command(7, "make all"), world)


def test_skips_follow_the_rules_and_what_skipped_commands_would_have_made(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    world = World(tmp_path, real_faces=False)
    assert run_command(Command(1, "thqa score x/*.mp4 -c ck -o clips.csv --device cuda"), world) == "needs a GPU (torch sees none here)"
    assert run_command(Command(2, "thqa extract m.csv --cache-dir cache --video-root THQA-NTIRE/val"), world).startswith("needs the THQA-NTIRE videos")
    # its own output is no dependency (a --resume after a skipped GPU run starts afresh); another's cache is
    assert skip_reason(["thqa", "score", "x.mp4", "-o", "clips.csv", "--resume"], world) is None
    assert skip_reason(["thqa", "cache", "prune", "--cache-dir", "cache"], world) == "needs cache, which the skipped command of README line 2 makes"
    assert skip_reason(["thqa", "sync", "a.mp4"], world).startswith("needs talking heads with a real face")
    assert skip_reason(["thqa", "sync", "a.mp4"], World(tmp_path, real_faces=True)) is None
