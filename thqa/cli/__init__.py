"""The ``thqa`` command (``thqa = thqa.cli:main``): :mod:`thqa.cli.app` builds the parser from one module per command
(score, sync, extract with cache, train, evaluate, compare, serve, demo) and runs the command.

Late imports: the command modules import the library inside the functions that run a command, not at their top.
``thqa --help`` and argument errors build only the parser, and must not load torch (tests/features/test_startup.py) nor pay
for modules only a run needs (numpy, scipy, matplotlib, Ray, and even the light thqa.utils.atomic, thqa.scoring.output
and thqa.engines.client, which together cost about 60 ms of a 110 ms ``--help``).
"""
from thqa.cli.app import build_parser, main

__all__ = ["main", "build_parser"]
