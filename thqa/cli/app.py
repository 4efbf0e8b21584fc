"""The `thqa` command: score, sync, extract, cache, train, evaluate, compare, serve, demo.

One module per command in this package (thqa/cli/<command>.py: its ``add_parser(subparsers)`` and the function that
runs it); :data:`COMMANDS` lists them in the order ``thqa --help`` shows them, so a new command is one module and one
entry there. The option groups the commands share, their bounds and the exit codes are in :mod:`thqa.cli.options`;
the checks, locks and messages about outputs in :mod:`thqa.cli.outputs`.

The CLI owns the output: results on stdout (or --output), progress bars and messages on stderr.
Exit codes: 0 success; 1 some files failed (the others were processed); 2 bad usage or a setup error
(no model, missing weights, a checkpoint that does not fit, an output path that cannot be written), checked before any
work where it can be; 130 interrupted (Ctrl-C, SIGTERM). Whatever goes wrong, the user gets one line on stderr naming
the file or option and the cause; ``--debug`` (or ``THQA_DEBUG=1``) adds the traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from typing import Sequence

from thqa import __version__
from thqa.cli import compare, demo, evaluate, extract, score, serve, sync, train
from thqa.cli.options import EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_SETUP, Parser, UsageError, add_debug_arg
# the public names thqa.cli.app had before the commands got their own modules (defined in thqa.cli.options)
from thqa.cli.options import (
    AUTO_PRECISION,
    CACHE_DIR_HELP,
    CQT_CHOICES,
    EXIT_OK,
    MAX_CLIPS,
    MAX_RESAMPLES,
    MAX_SEED,
    SYNC_WINDOW_HELP,
    raise_usage,
)
from thqa.cli.outputs import warnings_at_the_end
from thqa.errors import THQAError, brief, terminal_safe
from thqa.utils.hints import cli_hints

__all__ = [
    "main", "build_parser", "COMMANDS", "EXIT_OK", "EXIT_FAILURES", "EXIT_SETUP", "MAX_CLIPS", "MAX_SEED", "MAX_RESAMPLES", "AUTO_PRECISION",
    "CACHE_DIR_HELP", "CQT_CHOICES", "SYNC_WINDOW_HELP", "UsageError", "raise_usage",
]

# OpenMP threads that wait for work sleep instead of spinning (the user's own setting wins). Set before torch loads
# its OpenMP runtime, which reads it once. Beside another busy process on a 2-core machine, spinning threads took
# SlowFast from 2.1 s to 6.5 s a clip (torch 2 threads, interleaved runs; benchmarks/bench_cpu.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: the commands, in the order `thqa --help` lists them: each module's ``add_parser(subparsers)`` adds its command
#: (extract also adds `cache`) with its options and ``func``, the function that runs it
COMMANDS = (score, sync, extract, train, evaluate, compare, serve, demo)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `thqa` and of every command in :data:`COMMANDS`."""
    parser = Parser(prog="thqa", description="Quality (MOS) of talking-head videos, pictures and sound together.")
    parser.add_argument("--version", action="version", version=f"thqa {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also $THQA_DEBUG=1)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log messages on stderr (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    for p in sub.choices.values():  # `thqa score ... --debug` as well as `thqa --debug score ...`
        add_debug_arg(p)
    return parser


def _debug_wanted(args) -> bool:
    """--debug given, or $THQA_DEBUG set to a true value."""
    return bool(getattr(args, "debug", False)) or os.environ.get("THQA_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


#: what to lower when memory runs out, by the option that sets it (only the options the command has are advised)
_MEMORY_KNOBS = (("workers", "fewer --workers"), ("batch_size", "a smaller --batch-size"), ("n_boot", "a smaller --n-boot"),
                 ("n_perm", "a smaller --n-perm"), ("clips", "fewer --clips"))


def _memory_advice(args) -> str:
    """What to lower after running out of memory, among the options this command has."""
    knobs = [what for dest, what in _MEMORY_KNOBS if args is not None and hasattr(args, dest)]
    return f" (try {' or '.join(knobs)})" if knobs else ""


def _error_line(exc: BaseException, args=None) -> str:
    """One line naming the file or option and the cause, for anything that escaped a command."""
    if isinstance(exc, THQAError):
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return " ".join(lines) if len(lines) <= 3 else lines[0]
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else None
        cause = exc.strerror or brief(exc)
        return f"{os.fsdecode(where)}: {cause}" if where is not None else cause
    if isinstance(exc, MemoryError):
        return "out of memory" + _memory_advice(args)
    return f"unexpected {type(exc).__name__}: {brief(exc)} (this is a thqa bug: please report it with the output of --debug)"


def _interrupt(signum, frame) -> None:
    """SIGTERM's handler: end as Ctrl-C does."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (``kill``, a job scheduler's stop) ends a command as Ctrl-C does: rows written so far are kept, the
    output is closed whole, decoding workers are stopped, exit code 130. Only in the main thread (where Python
    delivers signals); the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `thqa ARGV` (default: the command line) and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="thqa: %(levelname)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_SETUP
    debug = _debug_wanted(args)
    if sys.stdout is None:  # started with standard output closed (`>&-`): Python then has no sys.stdout at all
        if hasattr(args, "output") and args.output in (None, "-"):  # the results would go to standard output
            print(f"thqa {args.command}: error: standard output is closed: nowhere to write the results (give -o FILE)", file=sys.stderr)
            return EXIT_SETUP
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the results go to a file; notes for stdout go nowhere

    args.resources = contextlib.ExitStack()  # output locks (guard_outputs), released when the command ends
    try:
        # messages name options (--random-init), not Python keywords (random_init=True); warnings wait for the end
        held = warnings_at_the_end() if args.verbose < 2 else contextlib.nullcontext()
        with args.resources, _sigterm_as_interrupt(), cli_hints(), held:
            return int(args.func(args) or 0)
    except UsageError as exc:
        parser.exit(EXIT_SETUP, f"thqa {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"thqa {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `thqa score ... | head`: the reader left; say nothing more on a closed pipe
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURES
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes one line and an exit code
        if debug:
            traceback.print_exc()
        print(f"thqa {args.command}: error: {terminal_safe(_error_line(exc, args))}", file=sys.stderr)
        return EXIT_SETUP


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
