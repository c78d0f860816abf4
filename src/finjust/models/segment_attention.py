"""Attention for packed rows, computed example by example instead of under a block mask.

transformers handles a packed row by building a block-diagonal causal mask over the whole
row; scaled-dot-product attention then does the work of the full row (every query against
every key of the row, most of them masked) and, given a mask, cannot use its causal
shortcut. Here each example's queries, keys and values are gathered into a padded
(examples, longest, ...) layout, attention runs causally per example with no mask (right
padding sits after every real key, so causality alone hides it), and the outputs are
scattered back into the rows. The padded slots' outputs are never read.

Measured on the demo's steps (8 examples of ~80 tokens, 9 heads, bf16, forward and backward
per layer): block mask over two rows 11.1 ms, per example 7.4 ms with torch's math kernel and
6.4 ms with the recomputing one below. Longer examples favour torch's flash kernel, whose work
grows linearly rather than quadratically with the length, so the kernel is chosen by length
(:data:`MATH_KERNEL_MAX_TOKENS`).

Why ours: transformers' packed-sequence support on the CPU is the block mask; its
``cu_seq_lens`` path needs the CUDA flash-attention package.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, PreTrainedModel

from finjust.models.shapes import round_up

NAME = "finjust_segments"
#: examples up to this many tokens use a math kernel (ours; torch's under dropout), longer ones
#: the flash kernel. Ours against flash, forward and backward, 9 query and 3 key heads of 64,
#: bf16, ~1,024 tokens a step (Zen 4): 9.8 vs 15.9 ms at 192 tokens an example, 17.3 vs 18.9 at
#: 256, even at 512, 47.0 vs 25.6 at 768 (against torch's math kernel, before ours, flash had
#: won from ~256 on the AMX machine: 21 vs 37 ms)
MATH_KERNEL_MAX_TOKENS = 256
#: the padded layout's length is a multiple of this (see :mod:`finjust.models.shapes`)
LENGTH_MULTIPLE = 16


@dataclass(frozen=True)
class SegmentLayout:
    """Where the examples of packed rows sit in a padded (examples, longest) layout."""

    gather: torch.Tensor  # (examples * longest,) flat row position of each padded slot
    scatter: torch.Tensor  # (rows * row length,) padded slot of each flat row position
    examples: int
    longest: int  # the layout's length: the longest example's, rounded up to LENGTH_MULTIPLE
    longest_example: int  # that example's own token count


def segment_layout(position_ids: torch.Tensor, filler: torch.Tensor | None = None) -> SegmentLayout:
    """The layout of rows whose position ids restart at 0 where each example begins.

    ``filler`` (rows, length), True at padding tokens that belong to no example: they get no
    slot (they would be a fifth of the attention work of two padded rows of 8 examples) and
    read slot 0's output back, a finite value nothing depends on.
    """
    flat = position_ids.flatten()
    tokens = torch.arange(flat.numel(), device=flat.device)
    if filler is not None:
        tokens = tokens[~filler.flatten()]
    positions = flat[tokens]
    starts = torch.nonzero(positions == 0).flatten()
    lengths = torch.diff(starts, append=torch.tensor([tokens.numel()], device=flat.device))
    longest_example = int(lengths.max())
    longest = round_up(longest_example, LENGTH_MULTIPLE)
    example = torch.repeat_interleave(torch.arange(len(starts), device=flat.device), lengths)
    slots = example * longest + positions  # slot = example's row in the layout, position within it
    gather = torch.zeros(len(starts) * longest, dtype=torch.long, device=flat.device)  # pads read token 0
    gather[slots] = tokens
    scatter = torch.zeros(flat.numel(), dtype=torch.long, device=flat.device)
    scatter[tokens] = slots
    return SegmentLayout(gather, scatter, len(starts), longest, longest_example)


#: model types that use transformers' attention interface but build their causal mask without
#: the position ids, which is where transformers 5 finds a packed row's example boundaries: their
#: packed examples attend to the ones before them (measured on tiny random OPT, gpt-oss and AFMoE
#: models: a later example's loss moved, the first one's did not; Granite MoE hybrid builds its
#: mask the same way)
MASKS_WITHOUT_POSITION_IDS = frozenset({"opt", "gpt_oss", "afmoe", "granitemoehybrid"})


def separates_packed_examples(model: nn.Module) -> bool:
    """True when examples packed into one row cannot attend to each other in ``model``.

    Models whose attention goes through transformers' attention interface mask (or, here,
    split) a packed row where its position ids restart. Models with attention code of their
    own, such as Bloom and MPT (ALiBi), ignore position ids: a packed row would be one long
    sequence, each example seeing the ones before it (measured: another example's loss moved
    by 0.04 on a tiny MPT); so do those of :data:`MASKS_WITHOUT_POSITION_IDS`. Their batches
    are padded instead.
    """
    found = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if found is None or getattr(found.config, "model_type", None) in MASKS_WITHOUT_POSITION_IDS:
        return False
    return bool(type(found)._supports_attention_backend)


def supports_segments(model: nn.Module, longest_example: int | None = None) -> bool:
    """True when the model's attention goes through transformers' attention interface and
    attending per example is exact: the model has no sliding window, or every example (the
    longest has ``longest_example`` tokens) fits inside it, where the window hides nothing.

    transformers' window lets a query see the keys less than ``sliding_window`` positions back
    (Mistral: 4,096), so an example of at most that many tokens attends causally in full; per-example
    attention ignores the window, so a longer one needs the block mask, which applies it.
    """
    config = model.config
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager", NAME):
        return False
    window = getattr(config, "sliding_window", None)
    return not window or (longest_example is not None and longest_example <= window)


def segment_attention(model: nn.Module) -> AbstractContextManager[None]:
    """Run ``model``'s attention per example while inside; pass ``segment_layout=`` to the call.

    Under this implementation transformers builds no attention mask at all.
    """
    return attention_implementation(model.config, NAME)


@contextmanager
def attention_implementation(config: Any, name: str) -> Iterator[None]:
    """Run the attention that transformers registers as ``name`` for ``config``'s model while inside."""
    saved = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = saved


def _segment_attention_forward(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
    dropout: float = 0.0, scaling: float | None = None, segment_layout: SegmentLayout | None = None, **kwargs: Any,
) -> tuple[torch.Tensor, None]:  # fmt: skip
    """transformers' attention-interface signature: (rows, heads, length, dim) in, (rows, length, heads, dim) out."""
    if segment_layout is None:
        raise ValueError(f"the {NAME!r} attention needs segment_layout= in the model call")
    layout = segment_layout
    rows, heads, length, dim = query.shape
    dtype = _attention_dtype(query, key, value)
    q, k, v = (_to_segments(x.to(dtype), layout) for x in (query, key, value))
    gqa = q.shape[1] != k.shape[1]
    if layout.longest <= MATH_KERNEL_MAX_TOKENS and dropout == 0.0:
        attend = _traced_causal_attention if torch.compiler.is_compiling() else _RecomputedCausalAttention.apply
        out = attend(q, k, v, scaling or dim**-0.5)
    elif layout.longest <= MATH_KERNEL_MAX_TOKENS:
        out, _ = torch.ops.aten._scaled_dot_product_attention_math(
            q, k, v, None, dropout, True, scale=scaling, enable_gqa=gqa
        )
    else:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa)
    flat = out.transpose(1, 2).reshape(layout.examples * layout.longest, heads, dim)
    return flat.index_select(0, layout.scatter).view(rows, length, heads, dim), None


class _RecomputedCausalAttention(torch.autograd.Function):
    """softmax(q k^T * scale, causal) v for short sequences, keeping only q, k and v for backward.

    torch's math kernel keeps the attention probabilities and the head-expanded keys and values
    for backward (~150 MB over the demo's 30 layers); recomputing the probabilities in backward
    saves ~95 MB of that and, in bf16, was faster too (6.4 vs 7.2 ms a layer forward and
    backward at the demo's sizes), as it also skips expanding k and v before saving them.
    The scale is applied to q rather than to the (L x L) scores, as torch's math kernel does
    (exact for head size 64, whose scale is 1/8): ~5% less time a layer.

    Grouped-query heads: the query heads that share a key head are stacked along the length
    axis (:func:`_by_key_head`), so keys and values are never copied per query head and their
    gradients sum over the group inside the matmuls: 15-30% less time a layer at 64-160 slots,
    the training benchmark's eager steps 4.5% faster (Zen 4).

    Eager steps only: compiled blocks run :func:`_traced_causal_attention`.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale, ctx.heads = scale, q.shape[1]
        scaled_q = _by_key_head(q * scale, k.shape[1])
        probs = _causal_probs(scaled_q, k)
        ctx.save_for_backward(scaled_q, k, v)
        return _by_query_head(probs @ v, ctx.heads)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        scaled_q, keys, values = ctx.saved_tensors
        grad = _by_key_head(grad, keys.shape[1])
        probs = _causal_probs(scaled_q, keys)
        grad_v = probs.transpose(-1, -2) @ grad
        grad_probs = grad @ values.transpose(-1, -2)
        grad_scores = torch.ops.aten._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        grad_q = _by_query_head((grad_scores @ keys) * ctx.scale, ctx.heads)
        grad_k = grad_scores.transpose(-1, -2) @ scaled_q
        return grad_q, grad_k, grad_v, None


def _traced_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """What :class:`_RecomputedCausalAttention` computes, as plain differentiable ops for compiled
    blocks: inductor fuses the cast, mask and softmax of the fp32 scores, and the partitioner
    decides what backward keeps. An ``autograd.Function`` in the graph kept AOTAutograd's cache
    from holding it (see :mod:`finjust.models.lean_activations`). Keys and values are repeated
    per query head: with the query heads stacked instead, compiled steps ran 5-11% slower."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    return _causal_probs(q * scale, k).to(v.dtype) @ v


def _by_key_head(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """(examples, heads, length, dim) -> (examples, kv heads, groups * length, dim): the query
    heads sharing a key head one after another along the length axis."""
    examples, heads, length, dim = x.shape
    return x.reshape(examples, kv_heads, heads // kv_heads * length, dim)


def _by_query_head(x: torch.Tensor, heads: int) -> torch.Tensor:
    """The inverse of :func:`_by_key_head` (a no-op for (examples, heads, length, dim))."""
    examples, kv_heads, rows, dim = x.shape
    return x.view(examples, heads, rows * kv_heads // heads, dim)


def _causal_probs(scaled_q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal attention probabilities, (examples, heads, rows, length); softmax computed in fp32.

    ``scaled_q`` may hold several query heads one after another per key head (``rows`` a
    multiple of ``length``, see :func:`_by_key_head`): the causal mask repeats for each.

    Eager, the causal mask is the matmul's own addend (-inf above the diagonal) and the softmax
    reads and writes q's dtype, computing in fp32 inside (torch's CPU kernels do for bf16):
    scores cast to fp32, masked, soft-maxed and cast back took 20-33% longer a layer at the
    demo's sizes, forward and backward, with bf16 gradients as far from fp32 ones as before
    (~0.4%); the training benchmark's eager steps ran 2-4% faster. Compiled, inductor fuses
    the cast, mask and softmax of the fp32 form into one kernel, and that form ran ~2% faster
    there, so traced code keeps it (fp32 probabilities).
    """
    examples, heads, rows, dim = scaled_q.shape
    length = k.shape[2]
    if torch.compiler.is_compiling():
        scores = (scaled_q @ k.transpose(-1, -2)).float()
        future = torch.ones(length, length, dtype=torch.bool, device=scaled_q.device).triu(1)
        return scores.masked_fill_(future.repeat(rows // length, 1), float("-inf")).softmax(-1)
    future = torch.full((length, length), float("-inf"), dtype=scaled_q.dtype, device=scaled_q.device).triu(1)
    scores = torch.baddbmm(future.repeat(rows // length, 1).expand(examples * heads, rows, length),
                           scaled_q.reshape(examples * heads, rows, dim),
                           k.reshape(examples * heads, length, dim).transpose(-1, -2))  # fmt: skip
    return scores.softmax(-1).view(examples, heads, rows, length)


def _attention_dtype(*states: torch.Tensor) -> torch.dtype:
    """The dtype attention runs in: autocast's where it is on, as for torch's own attention (the
    custom kernel below is not autocast's to cast), else the inputs' common one. They differ when
    the model trains fp32 master weights under bf16 autocast: rotary position embeddings with
    fp32 cos/sin return fp32 queries and keys beside bf16 values."""
    device = states[0].device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return functools.reduce(torch.promote_types, (s.dtype for s in states))


def _to_segments(states: torch.Tensor, layout: SegmentLayout) -> torch.Tensor:
    """(rows, heads, length, dim) -> (examples, heads, longest, dim)."""
    rows, heads, length, dim = states.shape
    flat = states.transpose(1, 2).reshape(rows * length, heads, dim)
    return flat.index_select(0, layout.gather).view(layout.examples, layout.longest, heads, dim).transpose(1, 2)


AttentionInterface.register(NAME, _segment_attention_forward)
