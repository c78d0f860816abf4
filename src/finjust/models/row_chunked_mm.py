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
and so the bf16 rounding; like every timed choice it is made once per machine and kept
(:mod:`finjust.models.machine_plans`).
"""

from __future__ import annotations

import torch

from finjust.models.machine_plans import Timer, best_times, machine_plan

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


def _machine_plan(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """The plans file's plan for this problem, timed and added to the file if it has none."""
    return machine_plan(problem(a, b), _is_plan, lambda: _faster_plan(a, b))


def problem(a: torch.Tensor, b: torch.Tensor) -> str:
    """The problem shape's name in the plans file."""
    inputs, outputs = b.shape
    layout = "transposed" if b.stride(0) == 1 else "rows"
    return f"{str(a.dtype).removeprefix('torch.')} {inputs}->{outputs} {layout}"


def _is_plan(saved: object) -> bool:
    return saved is None or (type(saved) is int and saved > 0)


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

    seconds = (timer or best_times)({"whole": whole, "halves": halves})
    return CHUNK_ROWS if seconds["halves"] < MARGIN * seconds["whole"] else None
