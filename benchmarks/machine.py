"""What machine a benchmark ran on: every benchmark prints this line first.

Speed differs between the project's CPUs (AVX2 only, or AVX-512 / AMX with fast bf16), so
a ratio means little without the features it was measured with.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_features() -> str:
    """The SIMD/matrix features this run had, and what torch dispatches to."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    have = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
            if f in flags]
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    return f"{platform.processor() or platform.machine()}; flags {' '.join(have) or 'none'}; " \
           f"torch capability {capability}"


def machine_line() -> str:
    """One line: torch, threads, load average and CPU features (with a warning if busy)."""
    load = os.getloadavg()[0]
    line = (f"torch {torch.__version__}, {torch.get_num_threads()} threads of "
            f"{os.cpu_count()} CPUs, load average {load:.2f}; {cpu_features()}")
    if load > 0.5:
        line += "\nwarning: the machine is busy; timings (and ratios) will be noisy"
    return line
