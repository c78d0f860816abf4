"""Cross-entropy through a linear head without ever holding the whole logits matrix.

A 49k-vocabulary head turns n hidden states into n x 49,152 logits; the plain path keeps
those in bf16, again in fp32, their log-softmax and its gradient: four n x V tensors at the
step's peak. Here the head runs over chunks of tokens: each chunk's logits give its losses
and, at once, its gradient with respect to the hidden states, then are dropped. That works
because token i's loss depends only on hidden state i, so d loss_i / d h_i =
(softmax_i - onehot_i) W whatever the upstream gradient (which only scales row i).

The head's own gradient does depend on the upstream gradient, so when the head trains (full
fine-tuning of a tied embedding) the chunks are recomputed in backward instead.

A chunk's input gradient ``(softmax - onehot) @ W`` sums over the vocabulary, which runs down
W's columns; oneDNN can run it faster as ``(W^T @ (softmax - onehot)^T)^T`` from a contiguous
copy of ``W^T``, both operands then read along the vocabulary. On the AMD EPYC (Zen 4) machine
that ran at ~400 GFLOP/s for a 64-token chunk against ~245, and eager training steps 2.6-4.9%
faster (each step's best of four and of six alternating runs), for the copy held while
training (56 MB for SmolLM2). Whether a machine gains is timed at its first use (:func:`keep_transposed_head`).

Why ours: torch 2.13's ``F.linear_cross_entropy`` with chunking measured 1.7x *slower*
than the plain path on our CPU (250 vs 149 ms for 363 tokens), this one 0.6x (91 ms);
Liger-Kernel and Cut Cross-Entropy need Triton or CUDA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import torch

from finjust.models.load import matmul_dtype
from finjust.models.machine_plans import Timer, best_times, machine_plan
from finjust.models.shapes import ROW_MULTIPLE, round_up

#: tokens per chunk: a chunk's fp32 logits are CHUNK x vocabulary (12.6 MB for SmolLM2);
#: on the demo's steps 64 and 128 ran equally fast (32 and 512 slower), and 64 lowered the
#: training benchmark's peak RSS by 0.08 GB
CHUNK = 64
#: the transposed copy must take under this share of the direct way's time to be worth its
#: memory (Zen 4: 0.62)
MARGIN = 0.8
#: and at most this share of the memory free when it would be made: a larger model's head
#: (152k x 3584 in bf16: 1.1 GB) is left where the step's activations may need the room
COPY_SHARE = 0.05
RowsTimes = Callable[[torch.Tensor], torch.Tensor]
#: frozen head weights whose input gradients may use a transposed copy, by ``id``: the weight
#: (holding it keeps its id unique) and its copies by dtype, None where the direct way is faster
_TRANSPOSED: dict[int, tuple[torch.Tensor, dict[torch.dtype, torch.Tensor | None]]] = {}


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int = CHUNK) -> torch.Tensor:  # fmt: skip
    """Per-token cross-entropy of ``hidden @ weight.T`` against ``targets``, shape (n,).

    Equal to ``F.cross_entropy((hidden @ weight.T).float(), targets, reduction="none")``
    (softmax in fp32, matmuls in the inputs' dtype or autocast's), gradients included, for
    targets that are token ids: tokens without loss (``-100``) are left out by the caller.
    """
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        losses = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        # precompute the input gradient only when it is all backward will need
        ctx.precomputed = hidden.requires_grad and not weight.requires_grad
        grad_hidden = torch.empty_like(hidden) if ctx.precomputed else None
        ctx.dtype, ctx.chunk = matmul_dtype(hidden), chunk  # autocast's choice, repeated in backward
        w = weight.to(ctx.dtype)
        times_w = _times_weight(weight, w, chunk) if grad_hidden is not None else None
        for part, n, _, probs, chunk_losses in _chunks(hidden.to(ctx.dtype), w, targets, chunk):
            losses[part] = chunk_losses[:n]
            if times_w is not None:
                assert grad_hidden is not None  # times_w is made only where grad_hidden is
                grad_hidden[part] = times_w(probs.to(ctx.dtype))[:n]
        ctx.save_for_backward(*((grad_hidden,) if ctx.precomputed else (hidden, weight, targets)))
        return losses

    @staticmethod
    def backward(ctx: Any, grad_losses: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.precomputed:
            (grad_hidden,) = ctx.saved_tensors
            # scaled in fp32, as the other path scales: bf16(1/n) is off by up to 0.4%, and so
            # would the whole step's gradient be
            scaled = (grad_hidden.float() * grad_losses.unsqueeze(1)).to(grad_hidden.dtype)
            return scaled, None, None, None
        hidden, weight, targets = ctx.saved_tensors
        w = weight.to(ctx.dtype)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        for part, n, rows, probs, _ in _chunks(hidden.to(ctx.dtype), w, targets, ctx.chunk):
            scaled = (probs * _pad_rows(grad_losses[part])[0].unsqueeze(1)).to(ctx.dtype)  # padding rows: 0
            if grad_hidden is not None:
                grad_hidden[part] = (scaled @ w)[:n]
            if grad_weight is not None:
                grad_weight += (scaled.T @ rows).float()
        return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None, None


@contextmanager
def keep_transposed_head(weight: torch.Tensor | None) -> Iterator[None]:
    """While inside, frozen ``weight``'s input gradients come from a transposed copy of it where
    this machine computes them faster so (timed at the first use, kept in the plans file).

    The copy is made at the first use and dropped on leaving; ``weight`` must not change while
    inside. A weight that trains, or is no CPU matrix, is left as it is.
    """
    if (weight is None or id(weight) in _TRANSPOSED  # nothing, or kept by an enclosing context
            or weight.requires_grad or weight.dim() != 2 or weight.device.type != "cpu"):  # fmt: skip
        yield
        return
    _TRANSPOSED[id(weight)] = (weight, {})
    try:
        yield
    finally:
        del _TRANSPOSED[id(weight)]


def _times_weight(weight: torch.Tensor, w: torch.Tensor, chunk: int) -> RowsTimes:
    """``rows -> rows @ w`` for ``w``, ``weight`` in the computation's dtype: through the
    transposed copy where :func:`keep_transposed_head` keeps one."""
    kept = _TRANSPOSED.get(id(weight))
    if kept is None:
        return lambda rows: rows @ w
    copies = kept[1]
    if w.dtype not in copies:
        copies[w.dtype] = _transposed_if_faster(w, chunk)
    transposed = copies[w.dtype]
    if transposed is None:
        return lambda rows: rows @ w
    return lambda rows: (transposed @ rows.T).T


def _transposed_if_faster(w: torch.Tensor, chunk: int) -> torch.Tensor | None:
    """A contiguous ``w.T`` where this machine's plan computes a chunk's input gradient from it
    and the copy fits in :data:`COPY_SHARE` of the free memory."""
    if w.nbytes > COPY_SHARE * psutil.virtual_memory().available:
        return None
    vocabulary, width = w.shape
    transposed = None

    def measure() -> str:
        nonlocal transposed
        transposed = w.T.contiguous()
        return _faster_layout(w, transposed, chunk)

    dtype = str(w.dtype).removeprefix("torch.")
    problem = f"{dtype} head input gradient {chunk} x {vocabulary} @ {vocabulary} x {width}"
    if machine_plan(problem, lambda saved: saved in ("direct", "transposed"), measure) == "direct":
        return None
    return transposed if transposed is not None else w.T.contiguous()


def _faster_layout(w: torch.Tensor, transposed: torch.Tensor, chunk: int, timer: Timer | None = None) -> str:
    """Time a chunk's ``rows @ w`` directly and through the transposed copy."""
    # its own generator: timing at the first use must not move the run's random stream
    rows = torch.randn(chunk, w.shape[0], dtype=w.dtype, generator=torch.Generator().manual_seed(0))
    direct, through_copy = rows.new_empty(chunk, w.shape[1]), rows.new_empty(w.shape[1], chunk)
    seconds = (timer or best_times)({
        "direct": lambda: torch.mm(rows, w, out=direct),
        "transposed": lambda: torch.mm(transposed, rows.T, out=through_copy),
    })  # fmt: skip
    return "transposed" if seconds["transposed"] < MARGIN * seconds["direct"] else "direct"


def _chunks(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
            chunk: int) -> Iterator[tuple[slice, int, torch.Tensor, torch.Tensor, torch.Tensor]]:  # fmt: skip
    """Per chunk: its slice, its real row count, its padded hidden rows, softmax - onehot, losses."""
    for start in range(0, hidden.shape[0], chunk):
        part = slice(start, start + chunk)
        rows, n = _pad_rows(hidden[part])
        probs, losses = _softmax_and_loss(rows @ weight.T, _pad_rows(targets[part])[0])
        yield part, n, rows, probs, losses


def _pad_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x`` with zero rows appended up to a multiple of ROW_MULTIPLE, and its own row count."""
    n = x.shape[0]
    extra = round_up(n, ROW_MULTIPLE) - n
    return (torch.cat([x, x.new_zeros((extra, *x.shape[1:]))]) if extra else x), n


def _softmax_and_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax - onehot, cross-entropy) of a chunk, in fp32.

    ``log_softmax(..., dtype=float32)`` reads bf16 logits and upcasts inside its kernel: 81 vs
    90 ms for 300 tokens' loss and gradient against an explicit ``.float()`` + ``logsumexp``.
    """
    log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
    rows = torch.arange(targets.shape[0], device=targets.device)
    losses = -log_probs[rows, targets]
    probs = log_probs.exp_()
    probs[rows, targets] -= 1
    return probs, losses
