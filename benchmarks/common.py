"""What the benchmark scripts share: the demo data, this process's memory figures, a child's environment.

The scripts run as ``python benchmarks/NAME.py``, which puts this folder on the import path.
"""

from __future__ import annotations

import os
from pathlib import Path

DEMO_DATA = Path(__file__).resolve().parent.parent / "src" / "finjust" / "demo" / "data"


def memory_bytes(field: str) -> float:
    """A memory figure of this process from /proc (``VmRSS`` now, ``VmHWM`` its peak), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # the kernel's "kB" are KiB
    return float("nan")


def reset_peak_memory() -> None:
    """Linux: restart the kernel's peak-RSS count (``VmHWM``) of this process."""
    Path("/proc/self/clear_refs").write_text("5")


def child_environment(preload: bool) -> dict[str, str] | None:
    """This process's environment for a measured child, with no allocator preloaded; with
    ``preload``, in the one the ``finjust`` command relaunches itself in (None: none installed)."""
    from finjust import allocator

    environment = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.RELAUNCHED)}
    return allocator.preload_environment(environment) if preload else environment
