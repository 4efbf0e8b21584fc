"""The option groups the commands share, their value parsers and bounds, and the exit codes: one place for each.

``add_*_args`` put a group of options on a command's parser; the functions below them turn the parsed options into
the library's objects. Library modules are imported inside those functions: building the parser (``thqa --help``,
argument errors) must not load torch or numpy (tests/features/test_startup.py).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from thqa.utils.choices import AUTO_PRECISION, FIT_KINDS, MAX_CLIPS, PRECISION_CHOICES, RECIPE_NAMES
from thqa.features.registry import specs as backbone_specs

__all__ = [
    "EXIT_OK", "EXIT_FAILURES", "EXIT_SETUP", "EXIT_INTERRUPTED", "MAX_SEED", "MAX_RESAMPLES", "MAX_CLIPS", "AUTO_PRECISION",
    "CACHE_DIR_HELP", "SYNC_WINDOW_HELP", "CQT_CHOICES", "int_in", "float_in", "workers_arg", "coverage_arg", "sync_window_arg",
    "add_weights_args", "add_engine_args", "add_manifest_args", "add_recipe_args", "add_scoring_precision_arg", "add_debug_arg",
    "GROUP_CHOICES", "weights_options", "ray_options", "setup_threads", "recipe_plan", "say_plan", "load_manifest", "UsageError", "raise_usage", "Parser",
]

# -- exit codes (the module docstring of thqa.cli.app says what each means) -----------------------------------------
EXIT_OK, EXIT_FAILURES, EXIT_SETUP = 0, 1, 2
#: Ctrl-C or SIGTERM: the shell's 128 + SIGINT
EXIT_INTERRUPTED = 130

#: seeds are 32-bit, as numpy's legacy seeding and most papers' tables have them (every --seed)
MAX_SEED = 2**32 - 1
#: the most bootstrap resamples or permutations `compare` draws (each a row of a (resamples, videos) matrix)
MAX_RESAMPLES = 10_000_000
CACHE_DIR_HELP = "the feature cache: a folder of one file per video and setting (made when missing; shared by extract, train and evaluate)"
SYNC_WINDOW_HELP = (
    "in_sync when the sound is at most LEAD ms before and LAG ms after the lips (default 45,125: ITU-R BT.1359's threshold "
    "of detectability; its acceptability threshold is 90,185)"
)


# -- option values ------------------------------------------------------------------------------------------------
def int_in(lo: int, hi: int):
    """An argparse type: a whole number from ``lo`` to ``hi`` (a clear message otherwise, never a silent clamp)."""

    def parse(text: str) -> int:
        try:
            n = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}, got {text[:40]}")
        return n

    parse.__name__ = "whole number"  # argparse names the type in its message
    return parse


def float_in(lo: float, hi: float, *, open_low: bool = False, open_high: bool = False):
    """An argparse type: a finite number in the range [lo, hi] (or (lo, ...) / (..., hi) where open)."""

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
        inside = math.isfinite(x) and (lo < x if open_low else lo <= x) and (x < hi if open_high else x <= hi)
        if not inside:
            bounds = f"{'(' if open_low else '['}{lo:g}, {hi:g}{')' if open_high else ']'}"
            raise argparse.ArgumentTypeError(f"must be a finite number in {bounds}, got {text[:40]}")
        return x

    parse.__name__ = "number"
    return parse


def workers_arg(text: str):
    """An argparse type for --workers: a number from 0 to 1024, or 'auto'."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if not 0 <= n <= 1024:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1024, got {n}")
    return n


def coverage_arg(text: str) -> float:
    """An argparse type for --coverage: a number strictly between 0 and 1."""
    try:
        c = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 < c < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (e.g. 0.9), got {text}")
    return c


def sync_window_arg(text: str) -> tuple[float, float]:
    """--sync-window LEAD,LAG: ms the sound may come before and after the lips (two numbers from 0 to 10000)."""
    parts = text.replace(" ", "").split(",")
    try:
        w = tuple(float(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers of ms like 45,125, got {text[:40]!r}") from None
    if len(w) != 2 or not all(math.isfinite(x) and 0 <= x <= 10000 for x in w):
        raise argparse.ArgumentTypeError(f"expected two numbers of ms from 0 to 10000 like 45,125 (LEAD,LAG), got {text[:40]!r}")
    return w


sync_window_arg.__name__ = "LEAD,LAG"


def widths_arg(text: str) -> tuple[int, int, int]:
    """An argparse type for --audio-widths: three whole numbers from 1 to 1024, like 8,16,32."""
    parts = text.replace(" ", "").split(",")
    try:
        w = tuple(int(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three whole numbers like 8,16,32, got {text[:40]!r}") from None
    if len(w) != 3 or not all(1 <= x <= 1024 for x in w):
        raise argparse.ArgumentTypeError(f"expected three whole numbers from 1 to 1024 like 8,16,32, got {text[:40]!r}")
    return w


def tuning_arg(text: str):
    """An argparse type for --chroma-tuning: a fraction of a bin in [-0.5, 0.5), or 'estimate' (None)."""
    if text == "estimate":
        return None
    x = float_in(-0.5, 0.5, open_high=True)(text)
    return x


def top_db_arg(text: str):
    """An argparse type for --mfcc-top-db: dB in (0, 400], or 'none' (None)."""
    if text == "none":
        return None
    return float_in(0, 400, open_low=True)(text)


tuning_arg.__name__ = "tuning"
top_db_arg.__name__ = "dB"


#: --cqt NAME -> the AudioSettings fields it sets
CQT_CHOICES = {
    "log": {"cqt_kind": "log", "cqt_bins": 84, "cqt_bins_per_octave": 12},
    "chroma": {"cqt_kind": "chroma", "cqt_bins": 896, "cqt_bins_per_octave": 128},
}
#: option dest -> resolve() option name, for the extraction switches (extract and train)
EXTRACTION_SWITCHES = {"clips": "n_clips", "clip_sampling": "clip_sampling", "audio_rate": "sample_rate", "n_fft": "n_fft", "chroma_tuning": "chroma_tuning",
                        "mfcc_top_db": "mfcc_top_db", "precision": "precision"}
#: the same for the training switches (train only)
TRAINING_SWITCHES = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "lr_spatial": "lr_spatial", "weight_decay": "weight_decay",
                      "step_size": "step_size", "gamma": "gamma", "loss": "loss", "rank_weight": "rank_weight", "fit": "fit",
                      "finetune_spatial": "finetune_spatial", "head": "head", "lstm_pool": "lstm_pool", "audio_widths": "audio_widths",
                      "audio_input_norm": "audio_input_norm", "embed_activation": "embed_activation", "seed": "seed"}


# -- option groups ------------------------------------------------------------------------------------------------
def add_weights_args(p: argparse.ArgumentParser, *, batch_size: bool = True) -> None:
    """The backbone weights and device options (--random-init, --seed, weight files, --device, --batch-size or,
    for train, --backbone-batch-size, --workers, --threads)."""
    g = p.add_argument_group("backbone weights and device")
    g.add_argument(
        "--random-init", action="store_true", default=None,
        help="seeded random backbone weights instead of the pretrained ones (testing); with --checkpoint not needed: the "
        "backbones the checkpoint was trained on are used (and said on stderr)",
    )
    g.add_argument("--seed", type=int_in(0, MAX_SEED), default=None, help="seed of --random-init (default: the checkpoint's, else 3407; 0 to 2^32-1)")
    for b in backbone_specs():  # --swin-weights, --slowfast-weights, ...: one per backbone of the registry
        g.add_argument(b.flag, dest=b.keyword, metavar="FILE", help=b.help or f"local {b.title} weights (else ${b.env})")
    g.add_argument("--offline", action="store_true", help="never try the network for weights (also $THQA_OFFLINE=1)")
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument(
        "--batch-size" if batch_size else "--backbone-batch-size",
        dest="batch_size" if batch_size else "backbone_batch_size",
        type=int_in(1, 4096),
        default=None,
        help=("clips (not videos) per backbone forward pass (default: 1 on a CPU, where it is fastest; 48 on a GPU)" if batch_size else
              "clips (not videos) per backbone forward pass while extracting (default: 1 on a CPU, 48 on a GPU); --batch-size is videos per training step"),
    )
    g.add_argument(
        "--workers",
        type=workers_arg,
        default="auto",
        help="decoding worker processes: a number (0: decode in the main process) or auto (default: all cores but one "
        "beside a GPU, 0 beside a CPU - 1 for `thqa score` on 2 or more cores, which decodes while the models are built)",
    )
    g.add_argument("--threads", type=int_in(1, 1024), default=None, help="torch CPU threads (default: torch's choice)")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """--engine local|ray and the Ray options."""
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=["local", "ray"], default="local", help="local (default): this machine; ray: a Ray cluster (pip install 'thqa[ray]')")
    g.add_argument("--ray-address", metavar="ADDR", help="with --engine ray: auto (a cluster started with `ray start`), HOST:PORT or ray://HOST:10001; default: a local Ray instance")
    g.add_argument("--ray-actors", type=int_in(1, 4096), metavar="N", help="with --engine ray: backbone actors (default: one per GPU, else one per 4 CPUs)")


def add_manifest_args(p: argparse.ArgumentParser) -> None:
    """--video-root, for the commands that read a manifest."""
    p.add_argument("--video-root", metavar="DIR", help="folder that relative paths in manifests resolve against (default: the manifest's folder)")


#: --groups: how a manifest without a group column groups its videos by content (:func:`_group_fn`)
GROUP_CHOICES = ("auto", "thqa-ntire", "file")


def add_recipe_args(p: argparse.ArgumentParser, *, training: bool) -> None:
    """--recipe and the switches back to the method (README: "Departures from the method"); every one defaults to the
    recipe's value, and a given one overrides it."""
    g = p.add_argument_group("recipe and the switches back to the method (default: the recipe's value)")
    g.add_argument(
        "--recipe", choices=list(RECIPE_NAMES), default=None,
        help="frozen (default): fusion model on frozen features, fast; winner: the NTIRE 2025 winner as published (ECA + Swin-T "
        "fine-tuned, lr 1e-5, Linear head, averaged Bi-LSTM); winner-exact: winner with the public code's audio settings and fp32",
    )
    g.add_argument("--clips", type=int_in(1, MAX_CLIPS), default=None, help=f"clips per video (default 6; at most {MAX_CLIPS})")
    g.add_argument("--clip-sampling", choices=["spread", "first"], default=None,
                   help="a video longer than the clips: clips spread over all of it (thqa's) or its first seconds (the method's)")
    g.add_argument("--cqt", choices=list(CQT_CHOICES), default=None,
                   help="CQT channel: log (84 log-frequency bins interpolated to 128; thqa's) or chroma (chroma_cqt, 128 bins per octave, 896 filters: the public code's, ~0.65 s of CPU per clip against 13 ms)")
    g.add_argument("--audio-rate", type=int_in(8000, 192000), default=None, metavar="HZ", help="audio resampled to HZ (thqa 16000; the method 22050, librosa's default)")
    g.add_argument("--n-fft", type=int_in(16, 65536), default=None, metavar="N", help="STFT and gammatone window in samples (default 2048, as the method)")
    g.add_argument("--chroma-tuning", type=tuning_arg, default=argparse.SUPPRESS, metavar="T",
                   help="tuning of the chroma bins in fractions of a bin (thqa 0), or 'estimate' per clip (the method, librosa's default)")
    g.add_argument("--mfcc-top-db", type=top_db_arg, default=argparse.SUPPRESS, metavar="DB",
                   help="floor of MFCC's log-mel spectrogram under its peak (the method 80, librosa's default), or 'none' (thqa)")
    g.add_argument("--precision", choices=list(PRECISION_CHOICES), default=None,
                   help="backbones' precision for extraction: auto (thqa's: " + AUTO_PRECISION + "), fp32 (the method), bf16")
    if not training:
        return
    t = p.add_argument_group("training (default: the recipe's value)")
    t.add_argument("--epochs", type=int_in(1, 100000), default=None, help="default 50")
    t.add_argument("--batch-size", type=int_in(1, 65536), default=None, help="videos (not clips) per training step (default 8); the backbones' clips per pass: --backbone-batch-size")
    t.add_argument("--lr", type=float_in(0, 10, open_low=True), default=None, help="fusion model's learning rate (frozen 1e-4; winner 1e-5, the method's)")
    t.add_argument("--lr-spatial", type=float_in(0, 10, open_low=True), default=None, help="ECA + Swin-T's learning rate when fine-tuning (default 1e-5)")
    t.add_argument("--weight-decay", type=float_in(0, 1), default=None, help="Adam's weight decay (default 1e-7)")
    t.add_argument("--step-size", type=int_in(1, 100000), default=None, help="StepLR period in epochs (default 2)")
    t.add_argument("--gamma", type=float_in(0, 1, open_low=True), default=None, help="StepLR factor (default 0.95)")
    t.add_argument("--loss", default=None, choices=["l1+rank", "l1", "plcc", "plcc+rank", "mse"], help="default l1+rank (the method's)")
    t.add_argument("--rank-weight", type=float_in(0, 1000), default=None, help="weight of the rank loss (default 1)")
    t.add_argument("--fit", default=None, choices=list(FIT_KINDS), help="fit before PLCC in validation (default poly3)")
    t.add_argument("--finetune-spatial", action=argparse.BooleanOptionalAction, default=None,
                   help="train ECA + Swin-T with the fusion model from cached frames (winner: on; frozen: off)")
    t.add_argument("--head", choices=["mlp", "linear"], default=None, help="fusion head: mlp (LayerNorm, Linear 128, LeakyReLU, dropout, Linear; thqa's) or linear (Linear 3200 -> score; the method's)")
    t.add_argument("--lstm-pool", choices=["clip", "mean"], default=None, help="Bi-LSTM output: per clip (thqa's) or averaged over the clips to 128 numbers (the method's)")
    t.add_argument("--audio-widths", type=widths_arg, default=None, metavar="W1,W2,W3", help="channels of the audio net's three blocks (default 8,16,32; the method does not fix them)")
    t.add_argument("--audio-input-norm", action=argparse.BooleanOptionalAction, default=None, help="BatchNorm on the four raw audio maps (thqa's; the method has none)")
    t.add_argument("--embed-activation", action=argparse.BooleanOptionalAction, default=None, help="LeakyReLU after the audio net's Linear 512 (thqa's; the method has none)")


def add_scoring_precision_arg(p: argparse.ArgumentParser) -> None:
    """--precision of the commands that score with a checkpoint (its recorded precision by default)."""
    p.add_argument("--precision", choices=list(PRECISION_CHOICES), default=None,
                   help="backbones' precision (default: fp32 for a checkpoint trained on fp32 features, else auto: " + AUTO_PRECISION + ")")


def add_debug_arg(p: argparse.ArgumentParser) -> None:
    """--debug on a command (``thqa score ... --debug`` as well as ``thqa --debug score ...``)."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error (also $THQA_DEBUG=1)")


# -- the options as the library's objects (late imports: the parser alone must not load torch or numpy) --------------
def weights_options(args):
    """The weights options as :class:`thqa.features.weights.WeightsOptions`."""
    from thqa.features.identity import DEFAULT_SEED, WeightsOptions  # late: reads the backbone table

    named = {b.keyword: getattr(args, b.keyword, None) for b in backbone_specs()}  # --swin-weights, ...
    return WeightsOptions(
        random_init=bool(args.random_init),
        seed=DEFAULT_SEED if args.seed is None else args.seed,
        swin_weights=named.pop("swin_weights"),
        slowfast_weights=named.pop("slowfast_weights"),
        offline=True if args.offline else None,
        files=tuple((k, v) for k, v in named.items() if v),  # the further backbones' files
    )


def ray_options(args):
    """The Ray options as :class:`thqa.engines.ray_engine.RayOptions`; a clear error first when Ray is missing."""
    from thqa.engines.ray_engine import RayOptions, import_ray  # late: loads numpy (and Ray when it runs)

    import_ray()  # a clear message when Ray is missing, before anything is built
    return RayOptions(address=args.ray_address, actors=args.ray_actors, verbose=bool(getattr(args, "verbose", 0)))


def setup_threads(args) -> None:
    """--threads: torch's CPU threads (torch is loaded only when it is given)."""
    if getattr(args, "threads", None):
        import torch  # late: torch, only when --threads is given

        torch.set_num_threads(args.threads)


def recipe_plan(args, *, training: bool):
    """The recipe with the options given on the command line on top (thqa.training.recipes.resolve)."""
    from thqa.training.recipes import resolve  # late: loads torch

    options = {}
    switches = dict(EXTRACTION_SWITCHES, **(TRAINING_SWITCHES if training else {}))
    for dest, name in switches.items():
        if dest in ("chroma_tuning", "mfcc_top_db"):  # None is a value here ('estimate', 'none'); absent when not given
            if hasattr(args, dest):
                options[name] = getattr(args, dest)
        elif getattr(args, dest, None) is not None:
            options[name] = getattr(args, dest)
    if getattr(args, "cqt", None):
        options.update(CQT_CHOICES[args.cqt])
    return resolve(args.recipe, **options)


def say_plan(plan, command: str) -> None:
    """One line on stderr: the recipe and what the options changed in it."""
    from thqa.training.recipes import RECIPES  # late: loads torch

    r = RECIPES[plan.recipe or "frozen"]
    recipe_values = r.values()
    given = []
    for key, src in sorted(plan.sources.items()):
        if src != "option":
            continue
        have = _flat_value(plan, key)
        was = recipe_values.get(key)
        source = "recipe" if plan.recipe else "default"
        given.append(f"{key.split('.')[-1]}={have}" + (f" ({source}: {was})" if key in recipe_values and was != have else ""))
    name = f"recipe {plan.recipe}" if plan.recipe else "no recipe named (thqa's defaults, the frozen recipe)"
    print(f"{command}: {name}" + (f"; options: {', '.join(given)}" if given else ""), file=sys.stderr)


def _flat_value(plan, key: str):
    """The value of ``key`` in the plan (a list as comma-separated text)."""
    from thqa.training.recipes import flat_values  # late: loads torch

    v = flat_values(plan.config, plan.settings, plan.precision)[key]
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v


def _group_fn(kind: str, names: list[str] | None = None):
    """The content group of a file name for ``--groups kind`` (None for file: each video its own group)."""
    from thqa.data.manifest import parse_thqa_ntire_name, thqa_ntire_group  # late: loads numpy

    if kind == "thqa-ntire":
        return thqa_ntire_group
    if kind == "file":
        return None
    # auto: THQA-NTIRE names get their portrait group, anything else its own group
    def auto(name: str) -> str:
        try:
            return parse_thqa_ntire_name(name).group
        except ValueError:
            return Path(name).stem

    return auto


def load_manifest(path: str, args, *, require_mos: bool, check_files: bool = True, video_root: str | None = None):
    """The manifest at ``path`` (thqa.data.manifest.read_manifest); skipped rows said on stderr, five shown."""
    from thqa.data.manifest import read_manifest  # late: loads numpy

    m = read_manifest(path, video_root=video_root or args.video_root, require_mos=require_mos, check_files=check_files, group_fn=_group_fn(getattr(args, "groups", "auto")))
    if m.skipped:
        print(f"thqa {args.command}: {path}: skipped {len(m.skipped)} row(s): {m.skipped_summary()}", file=sys.stderr)
        for row in m.skipped[:5]:
            print(f"  line {row.line}: {row.name}: {row.reason} {row.detail}".rstrip(), file=sys.stderr)
    return m


# -- usage errors ----------------------------------------------------------------------------------------------------
class UsageError(Exception):
    """A wrong combination of options: ``thqa CMD: error: ...`` and exit 2, like argparse's own errors."""
    pass


def raise_usage(msg: str):
    """Raise :class:`UsageError` with ``msg``."""
    raise UsageError(msg)


class Parser(argparse.ArgumentParser):
    """argparse with usage errors in one line (the option and the cause) and a pointer to --help."""

    def error(self, message: str):
        self.exit(EXIT_SETUP, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
