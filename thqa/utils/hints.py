"""How a message names a setting: the Python keyword (``random_init=True``) in the library, the option
(``--random-init``) when the ``thqa`` command runs.

A message that tells the user what to change names it the way the user can change it. The CLI wraps every command
in :func:`cli_hints`; everything else (``Scorer(...)``, ``thqa.score``, a notebook) gets the keywords.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

__all__ = ["cli_hints", "option", "in_cli"]

_CLI: contextvars.ContextVar[bool] = contextvars.ContextVar("thqa_cli_hints", default=False)

#: keyword form -> command-line form of the settings messages name
_FORMS = {
    "random_init=True": "--random-init",
    "random_init=False": "no --random-init",
    "seed": "--seed",
    "swin_weights": "--swin-weights",
    "slowfast_weights": "--slowfast-weights",
    "n_clips": "--clips",
    "cqt_kind": "--cqt",
    "sample_rate": "--audio-rate",
    "frames=False": "--no-frames",
}


def in_cli() -> bool:
    """Whether the code runs under the ``thqa`` command (:func:`cli_hints`)."""
    return _CLI.get()


def option(keyword: str, value: str | None = None) -> str:
    """A setting as the user can give it: ``option("swin_weights", "FILE")`` is ``swin_weights=FILE`` in Python and
    ``--swin-weights FILE`` under the CLI; ``option("random_init=True")`` is ``random_init=True`` / ``--random-init``."""
    if _CLI.get():
        flag = _FORMS.get(keyword, "--" + keyword.replace("_", "-"))
        return f"{flag} {value}" if value is not None else flag
    return f"{keyword}={value}" if value is not None else keyword


@contextlib.contextmanager
def cli_hints() -> Iterator[None]:
    """Messages raised inside name command-line options rather than Python keywords."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)
