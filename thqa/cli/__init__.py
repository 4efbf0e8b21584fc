"""The ``thqa`` command: :mod:`thqa.cli.app` builds the parser and runs a command (``thqa = thqa.cli:main``)."""
from thqa.cli.app import build_parser, main

__all__ = ["main", "build_parser"]
