"""What the benchmark scripts share: the demo data, this process's memory figures, a child's environment.

The scripts run as ``python benchmarks/NAME.py``, which puts this folder on the import path.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
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


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``low`` (0 steps or rounds divide by zero later)."""

    def whole_number(text: str) -> int:
        if not text.lstrip("-").isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"{text!r}: a whole number of at least {low}")
        return int(text)

    return whole_number


def output_path(path: str) -> str:
    """An argparse type for ``--json``/``--out``: refused at the start, not after the minutes the run takes."""
    from finjust import atomic

    try:
        atomic.require_writable(path, "name a file in a folder you can write")
    except PermissionError as exc:
        raise argparse.ArgumentTypeError(exc.strerror) from exc
    return path
