"""Matmuls run over row chunks where that is faster: for frozen weights' training matmuls.

oneDNN, which runs torch's bf16 CPU matmuls, partitions some problem shapes over a single
thread. Measured on the 2-core Sapphire Rapids machine (oneDNN 3.12, torch 2.13): a
(640 x 576) @ (576 x 576) bf16 matmul ran at 1,220 GFLOP/s, the same as with one thread, where
512 rows ran at 2,190; (M x 1536) @ (1536 x 576) ran at ~1,100 for M from 576 to 1,280 and at
2,000 for 512 rows. These are the shapes of a LoRA step's q/o/down projections and of most
input gradients (output width 576), so splitting the rows into chunks of at most
:data:`CHUNK_ROWS` ran them 1.3-1.5x faster. Other shapes (output width 192 or 1536) were
slower chunked, and another machine's thread count changes the picture, so each problem shape
is timed once both ways (:func:`chunk_rows_for`) and chunked where that was clearly faster.

Chunking changes only which rows share a oneDNN call: each output is still one dot product
over the whole inner dimension, equal to the unchunked result up to the accumulation order
of the kernel's blocking (bf16 rounding).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

#: rows per matmul call when chunking: the largest row count that ran on both threads at every
#: shape measured (see the module docstring)
CHUNK_ROWS = 512
#: chunked must take under this share of one call's time: the shapes that gain ran 1.3-1.5x
#: faster, so a margin keeps timing noise from flipping the choice (and the rounding) between runs
MARGIN = 0.9
#: problem shapes -> rows per call (None: one call), filled by timing each shape once
_PLANS: dict[tuple[int, int, bool, torch.dtype, str], int | None] = {}


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
    """:data:`CHUNK_ROWS` if chunking ran this problem shape faster when timed, else None."""
    key = (b.shape[0], b.shape[1], b.stride(0) == 1, a.dtype, a.device.type)
    if key not in _PLANS:
        _PLANS[key] = _faster_plan(a, b) if a.device.type == "cpu" else None
    return _PLANS[key]


Timer = Callable[[Callable[[], None]], float]


def _faster_plan(a: torch.Tensor, b: torch.Tensor, timer: Timer | None = None) -> int | None:
    """Time ``2 * CHUNK_ROWS`` rows of this problem in one call and in two (best of 3 by default)."""
    # its own generator: timing at a shape's first use must not move the run's random stream
    sample = torch.randn(2 * CHUNK_ROWS, a.shape[1], dtype=a.dtype, generator=torch.Generator().manual_seed(0))
    out = sample.new_empty(sample.shape[0], b.shape[1])
    b = b.detach()

    def whole() -> None:
        torch.mm(sample, b, out=out)

    def halves() -> None:
        torch.mm(sample[:CHUNK_ROWS], b, out=out[:CHUNK_ROWS])
        torch.mm(sample[CHUNK_ROWS:], b, out=out[CHUNK_ROWS:])

    timer = timer or _best_time
    return CHUNK_ROWS if timer(halves) < MARGIN * timer(whole) else None


def _best_time(run: Callable[[], None], repeats: int = 3) -> float:
    run()  # warm-up: oneDNN builds its kernel for the shape on the first call
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best

