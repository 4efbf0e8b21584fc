"""What the processor offers the backbones: whether it computes bf16 in hardware, and so which precision "auto" picks.

A CPU multiplies bf16 in hardware with AVX-512 BF16 (``avx512_bf16``: Intel Cooper Lake and Sapphire Rapids on, AMD
Zen 4 on) or AMX (``amx_bf16``: Intel Sapphire Rapids on). Elsewhere PyTorch emulates bf16 and autocast is far slower
than fp32: on a 2-core AVX2 machine (2 torch threads) one SlowFast clip took 171 s in bf16 autocast against 1.2 s in
fp32, one Swin-T frame 0.88 s against 0.12 s. So "auto" runs the backbones in bf16 autocast on a GPU and on a CPU with
bf16 in hardware, in fp32 on any other CPU.

The flags come from PyTorch's own CPU detection (``torch.cpu.get_capabilities()``, cpuinfo: the same CPUID bits
oneDNN reads), else from ``/proc/cpuinfo``. ``--precision fp32|bf16`` (``precision=``) overrides the choice.

``THQA_CPU_FLAGS`` replaces the detected flags (a comma- or space-separated list, e.g.
``THQA_CPU_FLAGS=avx2,avx512_bf16,amx_bf16``; ``none`` for no flag at all): "auto" then picks what it would pick on
such a CPU, so the suite can be run as if on the other kind of processor. It decides the choice only; the arithmetic
stays this CPU's (bf16 is emulated where the hardware lacks it, and slow).
"""
from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CpuInfo", "cpu_info", "cpu_has_bf16", "BF16_FLAGS", "FLAGS_ENV"]

log = logging.getLogger(__name__)

#: CPU flags that mean bf16 arithmetic in hardware (names as Linux and cpuinfo spell them)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: the flags reported in :class:`CpuInfo` (what decides how fast each precision is)
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
#: the environment variable that replaces the detected flags (see the module's docstring)
FLAGS_ENV = "THQA_CPU_FLAGS"


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model, the precision-related flags it has, and PyTorch's dispatch level ("AVX2", "AVX512", ...)."""

    model: str | None
    flags: tuple[str, ...]
    torch_capability: str | None
    source: str  #: where the flags came from: "torch", "/proc/cpuinfo", "THQA_CPU_FLAGS" (forced) or "none"

    @property
    def bf16(self) -> bool:
        """bf16 arithmetic in hardware (AVX-512 BF16 or AMX)."""
        return any(f in self.flags for f in BF16_FLAGS)

    def to_dict(self) -> dict:
        return {"model": self.model, "flags": list(self.flags), "torch_capability": self.torch_capability,
                "source": self.source, "bf16_in_hardware": self.bf16}


def _torch_flags() -> tuple[set[str], str | None] | None:
    """(flags, model) from ``torch.cpu.get_capabilities()`` (PyTorch 2.8 and later), else None."""
    try:
        import torch

        caps = torch.cpu.get_capabilities()
    except Exception:  # noqa: BLE001 - older PyTorch, or a platform cpuinfo does not know
        return None
    if not isinstance(caps, Mapping):
        return None
    # cpuinfo spells AVX-512 Foundation "avx512_f"; Linux spells it "avx512f"
    flags = {("avx512f" if k == "avx512_f" else k) for k, v in caps.items() if v is True}
    model = caps.get("cpu_name") if isinstance(caps.get("cpu_name"), str) else None
    return flags, model


def _proc_cpuinfo(text: str | None = None) -> tuple[set[str], str | None] | None:
    """(flags, model) of the first processor in ``/proc/cpuinfo`` (Linux), else None."""
    if text is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return None
    model = flags = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
    return (flags, model) if flags is not None else None


def _torch_capability() -> str | None:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001
        return None


def _forced_flags() -> set[str] | None:
    """The flags ``$THQA_CPU_FLAGS`` forces (lower case; "none": no flag), or None when it is unset or blank."""
    raw = os.environ.get(FLAGS_ENV, "").strip()
    if not raw:
        return None
    flags = {f for f in re.split(r"[\s,]+", raw.lower()) if f}
    return set() if flags == {"none"} else flags


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's :class:`CpuInfo` (read once per process; ``cpu_info.cache_clear()`` reads it again), with the
    flags ``$THQA_CPU_FLAGS`` forces in place of the detected ones."""
    proc = _proc_cpuinfo()
    forced = _forced_flags()
    if forced is not None:
        model = proc[1] if proc is not None else None
        log.debug("CPU flags forced by $%s: %s", FLAGS_ENV, sorted(forced))
        return CpuInfo(model, tuple(f for f in REPORTED_FLAGS if f in forced), _torch_capability(), FLAGS_ENV)
    found, source = _torch_flags(), "torch"
    if found is None or not found[0]:
        found, source = proc, "/proc/cpuinfo"
    if found is None:
        return CpuInfo(None, (), _torch_capability(), "none")
    flags, model = found
    if proc is not None and proc[1]:
        model = proc[1]  # the kernel's name is the full one ("AMD EPYC 9R14", not just "AMD EPYC")
    return CpuInfo(model, tuple(f for f in REPORTED_FLAGS if f in flags), _torch_capability(), source)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX)."""
    return cpu_info().bf16
