"""Matmuls run over row chunks where that is faster: for frozen weights' training matmuls.

oneDNN, which runs torch's bf16 CPU matmuls, partitions some problem shapes over a single
thread. Measured on the 2-core Sapphire Rapids machine (oneDNN 3.12, torch 2.13): a
(640 x 576) @ (576 x 576) bf16 matmul ran at 1,220 GFLOP/s, the same as with one thread, where
512 rows ran at 2,190; (M x 1536) @ (1536 x 576) ran at ~1,100 for M from 576 to 1,280 and at
2,000 for 512 rows. These are the shapes of a LoRA step's q/o/down projections and of most
input gradients (output width 576), so splitting the rows into chunks of at most
:data:`CHUNK_ROWS` ran them 1.3-1.5x faster. No rule of shape predicts it: 960 x 960 and
1024 x 1024 gained as much, 2560 -> 960, 4096 -> 1024 and 2048 x 2048 lost 8-15%, and widths
192 and 1536 lost too. So each problem shape is timed both ways (:func:`chunk_rows_for`).

Chunking changes only which rows share a oneDNN call, but that changes the kernel's blocking
and so the bf16 rounding: a run's numbers depend on the plans. Timed afresh in every process,
the plans followed the machine's load at that moment (beside a busy process, 4 of 8 timings
of 1536 -> 576 chose the other way), and so did a run's scorecard. A plan is therefore
measured once per machine, thread count and torch version, and kept in the plans file
(:func:`plans_file`): a machine repeats its runs, and a resumed run continues with the plans
it started with. Delete the file to measure again (after moving the machine, say).
"""

from __future__ import annotations

import functools
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from finjust import atomic
from finjust.models.load import cache_root

#: rows per matmul call when chunking: the largest row count that ran on both threads at every
#: shape measured (see the module docstring)
CHUNK_ROWS = 512
#: chunked must take under this share of one call's time: the shapes that gain ran 1.5-1.7x
#: faster, those that lose 1.0-1.8x slower, so noise in a timing cannot cross it
MARGIN = 0.8
#: the plans of this process, by problem shape and thread count: read from the plans file or timed
_PLANS: dict[tuple[int, int, bool, torch.dtype, int], int | None] = {}


def chunked_mm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b (+ bias)`` in row chunks where timing showed that faster for this shape."""
    chunk = chunk_rows_for(a, b)
    if chunk is None or a.shape[0] <= chunk:
        return torch.mm(a, b) if bias is None else torch.addmm(bias, a, b)
    out = a.new_empty(a.shape[0], b.shape[1])
    for start in range(0, a.shape[0], chunk):
        rows = slice(start, start + chunk)
        if bias is None:
            torch.mm(a[rows], b, out=out[rows])
        else:
            torch.addmm(bias, a[rows], b, out=out[rows])
    return out


def chunk_rows_for(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """:data:`CHUNK_ROWS` where this machine ran the problem shape faster chunked, else None."""
    if a.device.type != "cpu":
        return None
    # looked up at every matmul (~600 a step): a tuple here, the file's key only on a miss
    shape = (b.shape[0], b.shape[1], b.stride(0) == 1, a.dtype, torch.get_num_threads())
    if shape not in _PLANS:
        _PLANS[shape] = _machine_plan(a, b)
    return _PLANS[shape]


def plans_file() -> Path:
    """Where this machine's plans are kept: beside the converted models."""
    return cache_root() / "matmul-plans.json"


def _machine_plan(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """The plans file's plan for this problem, timed and added to the file if it has none."""
    key = _plan_key(a, b)
    saved = _read_plans()
    if key in saved:
        return saved[key]
    plan = _faster_plan(a, b)
    _save_plan(key, plan)
    return plan


def _plan_key(a: torch.Tensor, b: torch.Tensor) -> str:
    """The problem shape, and what else decides how oneDNN runs it."""
    inputs, outputs = b.shape
    layout = "transposed" if b.stride(0) == 1 else "rows"
    return (f"{_cpu_name()} | {torch.get_num_threads()} threads | torch {torch.__version__} | "
            f"{str(a.dtype).removeprefix('torch.')} {inputs}->{outputs} {layout}")  # fmt: skip


@functools.cache
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_plans() -> dict[str, int | None]:
    """The plans file's entries; none where it is missing or damaged (they are measured again)."""
    try:
        saved = json.loads(plans_file().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    return {key: plan for key, plan in saved.items() if plan is None or (type(plan) is int and plan > 0)}


def _save_plan(key: str, plan: int | None) -> None:
    """Add a plan to the file (merged with what other processes wrote since); a cache that
    cannot be written leaves the plan to this process."""
    try:
        atomic.write_json(plans_file(), {**_read_plans(), key: plan})
    except OSError:
        pass


Timer = Callable[[dict[str, Callable[[], None]]], dict[str, float]]


def _faster_plan(a: torch.Tensor, b: torch.Tensor, timer: Timer | None = None) -> int | None:
    """Time ``2 * CHUNK_ROWS`` rows of this problem in one call and in two."""
    # its own generator: timing at a shape's first use must not move the run's random stream
    sample = torch.randn(2 * CHUNK_ROWS, a.shape[1], dtype=a.dtype, generator=torch.Generator().manual_seed(0))
    out = sample.new_empty(sample.shape[0], b.shape[1])
    b = b.detach()

    def whole() -> None:
        torch.mm(sample, b, out=out)

    def halves() -> None:
        torch.mm(sample[:CHUNK_ROWS], b, out=out[:CHUNK_ROWS])
        torch.mm(sample[CHUNK_ROWS:], b, out=out[CHUNK_ROWS:])

    seconds = (timer or _best_times)({"whole": whole, "halves": halves})
    return CHUNK_ROWS if seconds["halves"] < MARGIN * seconds["whole"] else None


def _best_times(runs: dict[str, Callable[[], None]], rounds: int = 5) -> dict[str, float]:
    """Each run's best time over ``rounds`` taken in turn, so that a burst of load elsewhere
    slows both ways rather than one."""
    for run in runs.values():
        run()  # warm-up: oneDNN builds its kernel for the shape on the first call
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best
