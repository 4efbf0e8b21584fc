"""The README (and the documents it links: docs/*.md, benchmarks/README.md) as written: every fenced python block
compiles, every `thqa ...` command of a bash block parses with the real parser (files need not exist), every
``from thqa... import X`` and every ``thqa.x.y`` name resolves, and every link to a section or a file lands.

Cheap: nothing runs a backbone; resolving names imports thqa's modules (torch among them), nothing more.
"""
from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

import thqa
from thqa.cli import build_parser

REPO = Path(thqa.__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]
#: lines that name what other branches are still building: checked once the integrator drops the mark
TODO_MARK = "TODO(integrator)"
#: fenced blocks: ```lang ... ``` (indented inside a list item too)
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
SHELLS = {"bash", "sh", "shell", "console"}


def blocks(path: Path, langs: set[str]) -> list[tuple[int, str]]:
    """(line number, dedented body) of each fenced block of one of ``langs`` in ``path``."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        if m.group("lang").lower() in langs:
            indent = len(m.group("indent"))
            body = "\n".join(line[indent:] for line in m.group("body").splitlines())
            out.append((text.count("\n", 0, m.start()) + 1, body))
    return out


def _doc_id(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def python_blocks():
    return [pytest.param(path, line, body, id=f"{_doc_id(path)}:{line}") for path in DOCS for line, body in blocks(path, {"python", "py"})]


def thqa_commands(script: str) -> list[list[str]]:
    """The argument lists of every ``thqa ...`` (or ``python -m thqa[.cli] ...``) command in a shell script: lines joined
    at a trailing backslash, comments dropped, each command cut at the shell's operators (``&&``, ``|``, ``;``,
    redirections)."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        command: list[str] = []
        target = False  # the word after a redirection is its file, not an argument
        for w in [*lexer, ";"]:
            if w and set(w) <= set(";&|<>"):
                if "<" in w or ">" in w:
                    target = True
                    continue
                if command:
                    commands.append(command)
                command = []
            elif target:
                target = False
            else:
                command.append(w)
    out = []
    for c in commands:
        while c and re.fullmatch(r"\w+=.*", c[0]):  # VAR=value thqa ...
            c = c[1:]
        if c[:1] == ["thqa"]:
            out.append(c[1:])
        elif c[:3] in (["python", "-m", "thqa"], ["python", "-m", "thqa.cli"]):
            out.append(c[3:])
    return out


def shell_commands():
    params = []
    for path in DOCS:
        for line, body in blocks(path, SHELLS):
            for argv in thqa_commands(body):
                params.append(pytest.param(argv, id=f"{_doc_id(path)}:{line}:thqa {' '.join(argv)}"[:150]))
    return params


# -- the readers, on made text ------------------------------------------------------------------------------------------
def test_readers_on_made_text(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("intro\n```bash\nTHQA_OFFLINE=1 thqa score a.mp4 \\\n    -o s.csv   # comment\npip install x && thqa demo --tiny | tee log\n"
                   "git archive <base> thqa | tar -x 2>&1\n```\n"
                   "- item\n\n  ```python\n  import thqa\n  ```\n```sh\npython -m thqa.cli sync a.mp4 > out.txt; echo done\n```\n")
    assert blocks(doc, {"python"}) == [(10, "import thqa")]
    shell = blocks(doc, SHELLS)
    assert [line for line, _ in shell] == [2, 13]
    assert thqa_commands(shell[0][1]) == [["score", "a.mp4", "-o", "s.csv"], ["demo", "--tiny"]]
    assert thqa_commands(shell[1][1]) == [["sync", "a.mp4"]]


def test_the_readme_has_blocks_to_check():
    assert len(blocks(README, {"python"})) >= 4
    assert len([c for line, b in blocks(README, SHELLS) for c in thqa_commands(b)]) >= 20


# -- python blocks --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, line, body", python_blocks())
def test_python_block_compiles(path, line, body):
    compile(body, f"{_doc_id(path)}:{line}", "exec")


# -- thqa commands ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parser():
    return build_parser()


@pytest.mark.parametrize("argv", shell_commands())
def test_thqa_command_parses(parser, argv, capsys):
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        if e.code == 0:  # --help, --version
            return
        pytest.fail(f"`thqa {shlex.join(argv)}` does not parse: {capsys.readouterr().err.strip()}")
    except Exception as e:  # noqa: BLE001 - an option's type that raises its own error
        pytest.fail(f"`thqa {shlex.join(argv)}` does not parse: {type(e).__name__}: {e}")
    assert getattr(args, "command", None) or not argv, f"`thqa {shlex.join(argv)}` names no command"


# -- names --------------------------------------------------------------------------------------------------------------
def _text(path: Path) -> str:
    return "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if TODO_MARK not in line)


def imported_names(text: str) -> set[str]:
    """``module:name`` for every ``from thqa... import a, b`` in ``text`` (prose or code), and ``module:`` for every
    ``import thqa...``."""
    out = set()
    for m in re.finditer(r"from (thqa(?:\.\w+)*) import \(?([\w, \t]+)", text):
        for name in (n.strip().split(" as ")[0] for n in m.group(2).split(",")):
            if name and name.isidentifier():
                out.add(f"{m.group(1)}:{name}")
    for m in re.finditer(r"^\s*import (thqa(?:\.\w+)*)", text, re.M):
        out.add(f"{m.group(1)}:")
    return out


def dotted_names(text: str) -> set[str]:
    """Every ``thqa.a.b`` in ``text`` that is not part of a path, a file name or a longer word."""
    return {m.group(1) for m in re.finditer(r"(?<![\w./-])(thqa(?:\.[A-Za-z_]\w*)+)(?![\w/-])", text)}


def resolve(dotted: str):
    """The object a dotted name names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if e.name and not ".".join(parts[:i]).startswith(e.name) and e.name != ".".join(parts[:i]):
                raise  # a module that exists but imports something missing
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_name_readers_on_made_text():
    text = ("`from thqa.data.manifest import thqa_ntire_source, read_manifest` and thqa.Scorer(...) or "
            "`thqa.analysis.metrics.evaluate(pred, mos)`; not thqa-demo/run, tests/thqa.x.py nor thqa.\n"
            "from thqa import (Scorer as S,\nimport thqa.cli\n")
    assert imported_names(text) == {"thqa.data.manifest:thqa_ntire_source", "thqa.data.manifest:read_manifest",
                                    "thqa:Scorer", "thqa.cli:"}
    assert dotted_names(text) == {"thqa.Scorer", "thqa.analysis.metrics.evaluate", "thqa.data.manifest", "thqa.cli"}


def _all_names():
    out = []
    for path in DOCS:
        text = _text(path)
        out += [pytest.param(n, id=f"{_doc_id(path)}:{n}") for n in sorted(imported_names(text))]
        out += [pytest.param(n, id=f"{_doc_id(path)}:{n}") for n in sorted(dotted_names(text))]
    return out


@pytest.mark.parametrize("name", _all_names())
def test_documented_name_resolves(name):
    module, sep, attr = name.partition(":")
    if sep:
        obj = importlib.import_module(module)
        if attr:
            assert hasattr(obj, attr), f"`from {module} import {attr}`: {module} has no {attr}"
    else:
        try:
            resolve(name)
        except (ImportError, AttributeError) as e:
            pytest.fail(f"{name} does not resolve: {type(e).__name__}: {e}")


# -- links ----------------------------------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens and underscores dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def test_slug_is_githubs():
    assert slug("Scoring: `thqa score`") == "scoring-thqa-score"
    assert slug("No trained model ships (yet)") == "no-trained-model-ships-yet"
    assert slug("The feature cache's key") == "the-feature-caches-key"
    assert slug('"The same numbers"') == "the-same-numbers"


@pytest.mark.parametrize("path", DOCS, ids=_doc_id)
def test_links_land(path):
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    broken = []
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        target = m.group(1)
        if re.match(r"\w+://", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no such section in {dest.name}")
    assert not broken, f"{_doc_id(path)}: " + "; ".join(broken)


def test_readme_set_up_comes_first_and_keeps_its_two_commands():
    """The README's first section is the set-up, and its first two blocks are the main job and the tests (CI runs the
    second as written)."""
    text = README.read_text(encoding="utf-8")
    first = re.search(r"^## (.+)$", text, re.M).group(1)
    assert first.startswith("Set-up")
    shell = blocks(README, SHELLS)
    assert shell[0][1].strip() == "pip install -e . && thqa demo"
    assert shell[1][1].strip() == "pip install -e '.[test]' && python -m pytest"


def test_python_blocks_parse_as_python_three_ten():
    """The README promises Python 3.10+: no block uses syntax of a later version."""
    for path in DOCS:
        for line, body in blocks(path, {"python", "py"}):
            ast.parse(body, feature_version=(3, 10))


def test_readme_has_a_table_of_contents_that_reaches_every_section():
    """Issue 25.6: a newcomer finds a task from the contents: every ``##`` section after the set-up is linked from it."""
    text = README.read_text(encoding="utf-8")
    contents = re.search(r"^## Contents\n(.*?)^## ", text, re.M | re.S)
    assert contents, "the README has no '## Contents' section"
    linked = set(re.findall(r"\]\(#([\w-]+)\)", contents.group(1)))
    sections = [h for h in re.findall(r"^## (.+)$", text, re.M) if h not in ("Contents",) and not h.startswith("Set-up")]
    missing = [h for h in sections if slug(h) not in linked]
    assert not missing, f"sections the contents do not link: {missing}"


def test_readme_is_for_users_and_measurements_live_elsewhere():
    """Issue 25.6: the README stays short (its measurements and their history are in benchmarks/README.md), says how to
    install PyTorch's CPU-only wheels and that ../shared is for the tests only."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 600, "the README grew past 600 lines: move measurements to benchmarks/README.md"
    assert "](benchmarks/README.md" in text
    install = [body for _, body in blocks(README, SHELLS) if "download.pytorch.org/whl/cpu" in body]
    assert install and "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in install[0]
    assert re.search(r"`\.\./shared` is for the tests only", text)
