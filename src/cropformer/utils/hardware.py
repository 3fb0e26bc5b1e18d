"""Defaults that follow the machine: ``num_workers: auto``, ``pin_memory: auto``, and whether
this CPU runs bf16/fp16 natively (a one-line warning when a reduced precision would be emulated)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from cropformer.utils.precision import precision_of

#: upper bound of ``num_workers: auto`` (more workers than this rarely speed up one process)
MAX_AUTO_WORKERS = 8


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_num_workers(value: Any) -> int:
    """``auto`` -> min(8, usable CPUs - 1), leaving one core to the training process; else int."""
    if str(value) == "auto":
        return max(0, min(MAX_AUTO_WORKERS, usable_cpus() - 1))
    return int(value)


def auto_pin_memory(value: Any, use_cuda: bool | None = None) -> bool:
    """``auto`` -> pinned memory only when batches go to a CUDA device; else bool."""
    if str(value) == "auto":
        if use_cuda is None:
            import torch

            use_cuda = torch.cuda.is_available()
        return bool(use_cuda)
    return bool(value)


# -- reduced precision on CPU ------------------------------------------------------------------

#: measured on the 2-core AMD EPYC VM (torch CPU capability AVX2, no bf16 units), 2 threads:
#: bf16 / fp32 time of a 1024x1024 matmul, a 3x3 convolution and a Swin-T forward
EMULATED_SLOWDOWN = "5-45x"


def cpu_capability() -> str:
    """torch's vectorisation level of this CPU (``AVX2``, ``AVX512``, ``SVE256``...)."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - very old or unusual builds
        return "unknown"


def _probe(name: str) -> bool:
    """A CPU feature probe of torch (``torch.cpu._is_amx_tile_supported``...); False if absent."""
    import torch

    fn = getattr(torch.cpu, name, None)
    try:
        return bool(fn()) if callable(fn) else False
    except Exception:  # noqa: BLE001 - a probe that cannot run counts as "no"
        return False


def _cpuinfo_flags() -> set[str]:
    """``flags`` / ``Features`` words of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    words: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            words.update(value.split())
    return words


def cpu_reduced_precision_units(dtype: str) -> tuple[str, ...] | None:
    """The units of this CPU that run ``bf16`` / ``fp16`` matrix products natively.

    ``()``: none (torch emulates the type through fp32 conversions: slower than fp32);
    ``None``: cannot tell on this architecture.
    """
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        if dtype == "bf16":
            found = {
                "AMX": _probe("_is_amx_tile_supported"),
                "AVX512_BF16": _probe("_is_avx512_bf16_supported"),
            }
        else:
            found = {
                "AMX_FP16": _probe("_is_amx_fp16_supported"),
                "AVX512_FP16": "avx512_fp16" in _cpuinfo_flags(),
            }
        return tuple(k for k, v in found.items() if v)
    if machine in ("aarch64", "arm64"):
        flags = _cpuinfo_flags()
        if not flags:
            return None
        flag = "bf16" if dtype == "bf16" else "asimdhp"
        return (flag.upper(),) if flag in flags else ()
    return None


def cpu_precision_warning(precision: str) -> str | None:
    """One line when ``precision`` (bf16/fp16 autocast) would run emulated on this CPU.

    None for fp32, on CPUs with the units (AMX, AVX512_BF16, AVX512_FP16, Arm BF16/FP16), and
    where the architecture cannot be probed.
    """
    entry = precision_of(precision)
    if entry is None or entry.family not in ("bf16", "fp16"):
        return None
    dtype = entry.family
    units = cpu_reduced_precision_units(dtype)
    if units is None or units:
        return None
    wanted = "AVX512_BF16 or AMX" if dtype == "bf16" else "AVX512_FP16 or AMX-FP16"
    return (
        f"precision={precision} on a CPU without {dtype} units (torch CPU capability "
        f"{cpu_capability()}, no {wanted}): {dtype} is emulated through fp32 here, measured "
        f"{EMULATED_SLOWDOWN} slower than fp32; use precision=fp32 on this machine ({dtype} pays "
        "off on CPUs with those units or on a GPU)"
    )
