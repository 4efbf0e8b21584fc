"""What PyTorch would answer about itself and this machine, found without importing it (2 s of a 3 s start-up).

A run whose every feature is cached needs only the cache keys, and three of their parts come from PyTorch: its
version (the remembered digests' keys, :mod:`thqa.features.digests`), its CPU dispatch level (the keys of random-init
digests) and, for ``--precision auto`` and ``--device auto``, whether CUDA is there and whether the CPU computes bf16.
Each function here gives PyTorch's own answer: read from its files, derived by PyTorch's rule from what the kernel
reports, or - wherever the derivation is not certain - by importing torch and asking it (``None`` from the ``*_known``
functions: the caller asks torch). ``tests/features/test_torch_info.py`` compares each with torch's answer.
"""
from __future__ import annotations

import functools
import glob
import importlib.util
import os
import platform
import re
import sys
from pathlib import Path

from thqa.utils.hardware import BF16_FLAGS, _forced_flags, _proc_cpuinfo

__all__ = ["torch_version", "torch_build", "cpu_capability", "cpu_capability_known", "no_cuda_proven", "bf16_known", "CAPABILITY_ENV"]

#: PyTorch's environment variable that overrides its CPU dispatch level
CAPABILITY_ENV = "ATEN_CPU_CAPABILITY"
#: ATEN_CPU_CAPABILITY's values an x86-64 build of PyTorch knows, and the level each gives (any other is ignored
#: with a warning, and the level detected as without it: then torch is asked)
_ENV_LEVELS = {"avx512": "AVX512", "avx2": "AVX2", "default": "DEFAULT"}
#: the CPU flags (as Linux spells them) PyTorch's AVX512 level needs (cpuinfo_has_x86_avx512vl/bw/dq and fma3), and
#: its AVX2 level (avx2 and fma3): aten/src/ATen/native/DispatchStub.cpp, compute_cpu_capability()
_AVX512_FLAGS = ("avx512vl", "avx512bw", "avx512dq", "fma")
_AVX2_FLAGS = ("avx2", "fma")
_VERSION_LINE = re.compile(r"""^(\w+)(?:\s*:\s*[\w\[\]. ]+)?\s*=\s*(?:'([^']*)'|"([^"]*)"|None)\s*$""")


@functools.lru_cache(maxsize=1)
def torch_build() -> dict[str, str | None] | None:
    """``torch/version.py``'s ``__version__``, ``cuda`` and ``hip`` (what ``torch.__version__``, ``torch.version.cuda``
    and ``torch.version.hip`` are), read from the file without importing torch; None when it cannot be read."""
    try:
        spec = importlib.util.find_spec("torch")  # a top-level package: found, not imported
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    found: dict[str, str | None] = {}
    for line in text.splitlines():
        m = _VERSION_LINE.match(line.strip())
        if m and m.group(1) in ("__version__", "cuda", "hip"):
            found[m.group(1)] = m.group(2) if m.group(2) is not None else m.group(3)
    return found if isinstance(found.get("__version__"), str) and {"cuda", "hip"} <= set(found) else None


def torch_version() -> str:
    """``str(torch.__version__)``, local suffix included ("2.14.1+cu130"; the installed distribution's metadata says
    only "2.14.1"), from ``torch/version.py``; torch is imported only when that file cannot be read."""
    build = torch_build()
    if build is not None:
        return str(build["__version__"])
    import torch  # late: only where torch/version.py could not be read

    return str(torch.__version__)


def cpu_capability_known(env: dict | None = None, flags: set[str] | None = None, machine: str | None = None) -> str | None:
    """``torch.backends.cpu.get_cpu_capability()`` by PyTorch's rule on x86-64 Linux: ``$ATEN_CPU_CAPABILITY``
    (avx512, avx2, default) first, then AVX512 when the CPU has avx512vl, avx512bw, avx512dq and fma, AVX2 when it
    has avx2 and fma. None where the rule is not certain (another processor or system, an unknown value of the
    variable, a CPU below AVX2, no /proc/cpuinfo): ask torch. ``env``, ``flags``, ``machine``: stand-ins for tests."""
    env = os.environ if env is None else env
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64") or (flags is None and not sys.platform.startswith("linux")):
        return None
    raw = env.get(CAPABILITY_ENV)
    if raw is not None:
        return _ENV_LEVELS.get(raw)  # case-sensitive in PyTorch; anything else is ignored there: ask torch
    if flags is None:
        proc = _proc_cpuinfo()
        if proc is None:
            return None
        flags = proc[0]
    if all(f in flags for f in _AVX512_FLAGS):
        return "AVX512"
    if all(f in flags for f in _AVX2_FLAGS):
        return "AVX2"
    return None  # DEFAULT on most builds, but not certainly (other vector levels): ask torch


def cpu_capability() -> str:
    """``str(torch.backends.cpu.get_cpu_capability())``: :func:`cpu_capability_known`, else torch's answer."""
    known = cpu_capability_known()
    if known is not None:
        return known
    import torch  # late: only where the rule is not certain

    return str(torch.backends.cpu.get_cpu_capability())


def no_cuda_proven(build: dict | None = None, root: str = "/") -> bool:
    """Whether ``torch.cuda.is_available()`` is certainly False, without asking torch: a build without CUDA and HIP
    (``torch.version.cuda`` and ``.hip`` None), or Linux with no NVIDIA driver (no ``/proc/driver/nvidia``, no
    ``/dev/nvidia*`` device, no ``/dev/dxg`` of WSL) under a build without HIP. False means: ask torch.
    ``build``, ``root``: stand-ins for tests."""
    build = torch_build() if build is None else build
    if build is None:
        return False
    if build.get("cuda") is None and build.get("hip") is None:
        return True
    if build.get("hip") is not None or not (sys.platform.startswith("linux") or root != "/"):
        return False
    p = Path(root)
    return not ((p / "proc/driver/nvidia").exists() or glob.glob(str(p / "dev/nvidia*")) or (p / "dev/dxg").exists())


def bf16_known(flags: set[str] | None = None, machine: str | None = None) -> bool | None:
    """:func:`thqa.utils.hardware.cpu_has_bf16` without torch where it is certain, else None (ask torch):
    ``$THQA_CPU_FLAGS`` when set (it decides alone); else, on x86-64 Linux, True when /proc/cpuinfo lists
    avx512_bf16 or amx_bf16, False when it lists neither AVX-512 (avx512f) nor AMX (amx_tile, amx_bf16), which
    PyTorch's cpuinfo cannot then see either (both need state the kernel enables). ``flags``, ``machine``: stand-ins."""
    forced = _forced_flags()
    if forced is not None:
        return any(f in forced for f in BF16_FLAGS)
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        return None
    if flags is None:
        proc = _proc_cpuinfo() if sys.platform.startswith("linux") else None
        if proc is None:
            return None
        flags = proc[0]
    if any(f in flags for f in BF16_FLAGS):
        return True
    if not any(f in flags for f in ("avx512f", "amx_tile", "amx_bf16")):
        return False
    return None
