"""What the benchmark ran on: the CPU, its vector extensions as torch sees them, and how fast
it reads memory, so a run's figures can be set against the machine's own floor.

A decode step reads every decoder weight once, so its floor on a CPU is the weights' bytes over
the memory read rate. That rate differs several-fold between machines (and between moments on a
shared VM), and so does what transformers gets out of the vector units (AVX-512 lets oneDNN run
`F.linear` near that floor), so ratios from different machines are not comparable.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

__all__ = ["describe"]

_READ_BYTES = 512 << 20  # well past any CPU cache


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_read_gbps(repeats: int = 5) -> float:
    """The best of `repeats` timed reads of 512 MB with torch's threads (a sum), in GB/s."""
    import torch

    data = torch.ones(_READ_BYTES // 4)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return _READ_BYTES / best / 1e9


def describe() -> dict[str, Any]:
    """The CPU model, core count, torch's CPU capability and the measured memory read rate."""
    import torch

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_read_gbps": memory_read_gbps(),
    }
