"""Supervised fine-tuning: next-token loss on answer tokens, over padding-free packed batches.

A micro-batch is its examples laid end to end in rows, with position ids that restart at
every example. For the Llama-style families in ``PLAIN_HEAD_MODELS`` attention then runs
per example (:mod:`finjust.models.segment_attention`); for others, without an attention
mask and without a KV cache, transformers turns those position ids into a block-diagonal
causal mask. Either way no example attends to another. Targets are shifted inside each
example, so no example predicts the first token of the next. Logits are computed only at
positions that carry loss, in chunks (:mod:`finjust.objectives.linear_ce`), which spares the
49k-vocabulary head most of its work and memory.

Methods that add tokens of their own to every sequence (prompt and prefix tuning) cannot
share a row between examples; for them a micro-batch is padded instead (:class:`PaddedBatch`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from finjust.data.templates import IGNORE_INDEX, TokenizedExample
from finjust.methods.peft_adapter import is_prompt_learning, peft_false_alarms_off
from finjust.models.load import autocast
from finjust.models.segment_attention import (
    segment_attention,
    segment_layout,
    separates_packed_examples,
    supports_segments,
)
from finjust.models.shapes import ROW_MULTIPLE, round_up
from finjust.objectives.linear_ce import linear_cross_entropy

#: packed rows of about this many tokens where attention runs under a block mask over the row,
#: whose cost grows with the square of the row's length while matmuls want long rows; measured
#: on the demo (8 examples, ~610 tokens a step): 1 row 352 tokens/s, 2 rows 403, 4 rows 380,
#: 8 rows 345. Where attention runs per example, rows cost nothing and a step is one row
#: (:func:`training_batches`)
ROW_TOKENS = 320

#: families whose logits are ``lm_head(decoder(...))`` and nothing more: their loss runs
#: through :func:`linear_cross_entropy`, which never holds the whole logits matrix
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3"})


@dataclass
class PackedBatch:
    """Rows of packed examples: ids, restarting positions and shifted targets, shape (R, T).

    Rows are made equally long with a filler segment (its own positions, no targets).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    row_fillers: tuple[int, ...]  # each row's filler length (it ends the row)

    @property
    def trained_tokens(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())

    @property
    def filler_tokens(self) -> int:
        return sum(self.row_fillers)

    @property
    def real_tokens(self) -> int:
        return int(self.input_ids.numel()) - self.filler_tokens

    def filler_mask(self) -> torch.Tensor:
        """(rows, length), True at filler tokens."""
        width = self.input_ids.shape[1]
        fillers = torch.tensor(self.row_fillers, device=self.input_ids.device)
        return torch.arange(width, device=self.input_ids.device) >= (width - fillers).unsqueeze(1)

    def to(self, device: torch.device) -> PackedBatch:
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.targets.to(device),
                           self.row_fillers)  # fmt: skip


@dataclass
class PaddedBatch:
    """Examples one per row, right-padded: ids, attention mask and unshifted labels, shape (B, T)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def trained_tokens(self) -> int:
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def to(self, device: torch.device) -> PaddedBatch:
        return PaddedBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


Batch = PackedBatch | PaddedBatch


def make_batch(
    examples: Sequence[TokenizedExample], packing: bool = True, row_tokens: int | None = ROW_TOKENS,
    multiple: int = ROW_MULTIPLE,
) -> Batch:  # fmt: skip
    """A packed batch (rows padded to a multiple of ``multiple``), or a padded one for methods
    that cannot share a row between examples."""
    return pack(examples, row_tokens, multiple) if packing else pad(examples)


def training_batches(model: nn.Module) -> Callable[[Sequence[TokenizedExample], bool], Batch]:
    """:func:`make_batch` for training ``model``: one packed row a micro-batch where attention
    runs per example, rows of :data:`ROW_TOKENS` where a block mask spans each row (a sliding
    window that a micro-batch's longest example outgrows, see :func:`supports_segments`).

    One row pads a step to the next multiple of :data:`ROW_MULTIPLE` only, where two rows must
    both be as long as the longer: 2.6% padding instead of 6.0% on the training benchmark's
    steps, whose eager steps then ran 4.3% faster (the sum of each step's best of four
    alternating runs, Zen 4), for 0.02 GB more at the peak.
    """
    return functools.partial(_training_batch, model)


def _training_batch(model: nn.Module, examples: Sequence[TokenizedExample], packing: bool = True) -> Batch:
    longest = max(len(e.input_ids) for e in examples)
    per_example = plain_head(model) is not None and supports_segments(model, longest)
    return make_batch(examples, packing, row_tokens=None if per_example else ROW_TOKENS)


def pad(examples: Sequence[TokenizedExample]) -> PaddedBatch:
    """One example per row, right-padded (the pad id is irrelevant: it is masked everywhere)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels)
    return PaddedBatch(ids, mask, labels)


def pack(examples: Sequence[TokenizedExample], row_tokens: int | None = None, multiple: int = 1) -> PackedBatch:
    """Lay ``examples`` end to end in rows of about ``row_tokens`` (None: one row, in order),
    padded to a multiple of ``multiple`` tokens.

    Each example's targets are its own labels shifted left by one. Several rows are balanced
    longest-first, so the examples' order within the batch changes (the loss does not).
    """
    total = sum(len(e.input_ids) for e in examples)
    n_rows = 1 if row_tokens is None else max(1, min(len(examples), round(total / row_tokens)))
    rows = _balanced_rows(examples, n_rows)
    width = round_up(max(sum(len(e.input_ids) for e in row) for row in rows), multiple)
    ids, positions, targets = [], [], []
    for row in rows:
        row_ids, row_positions, row_targets = _pack_row(row, width)
        ids.append(row_ids)
        positions.append(row_positions)
        targets.append(row_targets)
    fillers = tuple(width - sum(len(e.input_ids) for e in row) for row in rows)
    as_tensor = lambda rows_: torch.tensor(rows_, dtype=torch.long)  # noqa: E731
    return PackedBatch(as_tensor(ids), as_tensor(positions), as_tensor(targets), fillers)


def _balanced_rows(examples: Sequence[TokenizedExample], n_rows: int) -> list[list[TokenizedExample]]:
    if n_rows == 1:
        return [list(examples)]
    rows: list[list[TokenizedExample]] = [[] for _ in range(n_rows)]
    sizes = [0] * n_rows
    for example in sorted(examples, key=lambda e: -len(e.input_ids)):
        shortest = sizes.index(min(sizes))
        rows[shortest].append(example)
        sizes[shortest] += len(example.input_ids)
    return rows


def _pack_row(row: Sequence[TokenizedExample], width: int) -> tuple[list[int], list[int], list[int]]:
    ids: list[int] = []
    positions: list[int] = []
    targets: list[int] = []
    for example in row:
        ids.extend(example.input_ids)
        positions.extend(range(len(example.input_ids)))
        targets.extend([*example.labels[1:], IGNORE_INDEX])
    filler = width - len(ids)  # a segment of its own (positions restart), trained on nothing
    return ids + [0] * filler, positions + list(range(filler)), targets + [IGNORE_INDEX] * filler


def unpacked(batch: PackedBatch) -> PaddedBatch:
    """The packed segments one per row, right-padded, in segment order (the filler segments
    too, trained on nothing): row i is segment i, so per-example indices stay the same."""
    ids, targets = batch.input_ids.flatten(), batch.targets.flatten()
    starts = [*torch.nonzero(batch.position_ids.flatten() == 0).flatten().tolist(), ids.numel()]
    spans = list(zip(starts, starts[1:]))
    width = max(end - start for start, end in spans)
    padded = PaddedBatch(ids.new_zeros((len(spans), width)), ids.new_zeros((len(spans), width)),
                         ids.new_full((len(spans), width), IGNORE_INDEX))  # fmt: skip
    for row, (start, end) in enumerate(spans):
        padded.input_ids[row, : end - start] = ids[start:end]
        padded.attention_mask[row, : end - start] = 1
        padded.labels[row, 1 : end - start] = targets[start : end - 1]  # targets are labels shifted left
    return padded


def batch_loss_sum(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch's trained tokens, and their count."""
    losses, _ = token_losses(model, batch)
    return losses.sum(), int(losses.numel())


def token_losses(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of every trained token, and the index of the example it belongs to."""
    if isinstance(batch, PackedBatch) and not separates_packed_examples(model):
        batch = unpacked(batch)
    if isinstance(batch, PaddedBatch):
        return _padded_token_losses(model, batch)
    keep = batch.targets != IGNORE_INDEX
    starts = (batch.position_ids == 0).flatten()
    segments = (torch.cumsum(starts, dim=0) - 1).view_as(batch.position_ids)[keep]
    if not bool(keep.any()):
        return torch.zeros(0, device=batch.input_ids.device), segments
    # no cache: a cache would make transformers ignore the packing boundaries
    head = plain_head(model)
    if head is None:
        out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False, logits_to_keep=keep)
        logits = out.logits.reshape(-1, out.logits.shape[-1]).float()
        return F.cross_entropy(logits, batch.targets[keep], reduction="none"), segments
    hidden = packed_hidden_states(model, batch)
    return linear_cross_entropy(hidden[keep], head.weight, batch.targets[keep]), segments


def packed_hidden_states(model: nn.Module, batch: PackedBatch) -> torch.Tensor:
    """The decoder's last hidden states of a packed batch, attention computed per example."""
    # torch types a module's attributes as Tensor | Module; get_decoder is transformers' method
    decoder = cast("Callable[[], nn.Module]", model.get_decoder)()
    layout = segment_layout(batch.position_ids, batch.filler_mask())
    if not supports_segments(model, layout.longest_example):
        return decoder(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).last_hidden_state
    with segment_attention(model):
        out = decoder(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False,
                      segment_layout=layout)  # fmt: skip
    return out.last_hidden_state


def plain_head(model: nn.Module) -> nn.Linear | None:
    """The output head when logits are exactly ``head(decoder(...))``, else None.

    Only for model families known to do nothing else to their logits (no soft-capping or
    scaling), and only while the head is a plain bias-free ``nn.Linear`` (not an adapter).
    """
    if getattr(model.config, "model_type", None) not in PLAIN_HEAD_MODELS:
        return None
    head = cast("Callable[[], nn.Module | None]", model.get_output_embeddings)()  # transformers' method, as above
    return head if type(head) is nn.Linear and head.bias is None else None


def _padded_token_losses(model: nn.Module, batch: PaddedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    # prefix tuning: peft hands its prefix over by transformers 4's name, which transformers 5
    # still takes, with a FutureWarning the user can do nothing about (see methods/peft_adapter.py)
    with peft_false_alarms_off() if is_prompt_learning(model) else nullcontext():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    # methods such as prompt tuning put virtual tokens before the sequence: skip their logits
    logits = out.logits[:, out.logits.shape[1] - batch.input_ids.shape[1] :]
    targets = batch.labels[:, 1:]
    keep = targets != IGNORE_INDEX
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)[keep]
    return F.cross_entropy(logits[:, :-1][keep].float(), targets[keep], reduction="none"), rows


@torch.no_grad()
def mean_loss(
    model: nn.Module, batches: Sequence[Any], device: torch.device, autocast_dtype: torch.dtype | None,
    loss_sum: Callable[[nn.Module, Any], tuple[torch.Tensor, int]] | None = None,
) -> float:  # fmt: skip
    """Token-weighted mean loss over ``batches`` (evaluation: no gradients).

    ``loss_sum`` is another objective's (summed loss, count) of a batch; SFT's by default.
    """
    loss_sum = loss_sum or batch_loss_sum
    total, count = 0.0, 0
    for batch in batches:
        with autocast(device, autocast_dtype):
            loss, n = loss_sum(model, batch.to(device))
        total, count = total + float(loss), count + n
    return total / max(count, 1)


def perplexity(loss: float) -> float:
    """exp(loss), capped so a diverged model reports a huge number instead of overflowing."""
    return math.exp(min(loss, 50.0))


@torch.no_grad()
def example_losses(
    model: nn.Module, batches: Sequence[Batch], device: torch.device, autocast_dtype: torch.dtype | None
) -> list[tuple[float, int]]:
    """(summed loss, trained tokens) of every example, in order: the items a bootstrap resamples."""
    items: list[tuple[float, int]] = []
    for batch in batches:
        with autocast(device, autocast_dtype):
            losses, segments = token_losses(model, batch.to(device))
        n_examples = _examples_in(batch)
        sums = torch.zeros(n_examples).index_add_(0, segments.cpu(), losses.float().cpu())
        counts = torch.bincount(segments.cpu(), minlength=n_examples)
        items.extend((float(s), int(c)) for s, c in zip(sums, counts, strict=True))
    return items


def _examples_in(batch: Batch) -> int:
    if isinstance(batch, PaddedBatch):
        return int(batch.input_ids.shape[0])
    return int((batch.position_ids == 0).sum())


def eval_batches(
    examples: Sequence[TokenizedExample], packing: bool = True, tokens_per_batch: int = 4096
) -> list[Batch]:
    """Group examples in order into batches of about ``tokens_per_batch`` tokens."""
    batches: list[Batch] = []
    current: list[TokenizedExample] = []
    size = 0
    for example in examples:
        if current and size + len(example.input_ids) > tokens_per_batch:
            batches.append(make_batch(current, packing, row_tokens=None, multiple=1))
            current, size = [], 0
        current.append(example)
        size += len(example.input_ids)
    if current:
        batches.append(make_batch(current, packing, row_tokens=None, multiple=1))
    return batches
