"""What a way of answering costs: peak memory while it runs, and the one-off cost of training.

Peak memory is the process's resident set size (RSS), sampled by a background thread, because
``getrusage``'s maximum only ever grows over the life of the process and so cannot tell one
comparison row from the one before it. On CUDA the allocator's own peak is reported too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import torch

from finjust.train.log import MetricsLog

_MB = 1024 * 1024


class PeakMemory:
    """Context manager: the highest RSS (and CUDA allocation) seen while the block runs, in MB."""

    def __init__(self, device: torch.device | None = None, interval: float = 0.02) -> None:
        self.device = device or torch.device("cpu")
        self.interval = interval
        self.rss_mb = 0.0
        self.gpu_mb: float | None = None
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.rss_mb = max(self.rss_mb, self._process.memory_info().rss / _MB)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.rss_mb = max(self.rss_mb, self._process.memory_info().rss / _MB)
        if self.device.type == "cuda":
            self.gpu_mb = torch.cuda.max_memory_allocated(self.device) / _MB


def training_cost(metrics_path: str | Path) -> dict[str, Any] | None:
    """Steps, wall seconds and tokens of the optimizer steps in a run's ``metrics.jsonl``.

    Validation passes are not counted: they measure the run, they are not needed to produce it.
    Returns None when the log has no training steps (or does not exist).
    """
    return cost_of_steps(MetricsLog(Path(metrics_path)).records())


def cost_of_steps(records: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """:func:`training_cost` of a metrics log's records already read."""
    steps = [r for r in records if r.get("type") == "train"]
    if not steps:
        return None
    return {
        "kind": "training",
        "steps": len(steps),
        "seconds": round(sum(float(r.get("seconds", 0.0)) for r in steps), 3),
        "tokens": int(sum(int(r.get("tokens", 0)) for r in steps)),
    }
