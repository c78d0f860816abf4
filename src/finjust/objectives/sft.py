"""Supervised fine-tuning: next-token loss on answer tokens, over padding-free packed batches.

A micro-batch is its examples laid end to end in one row, with position ids that restart at
every example. Without an attention mask and without a KV cache, transformers turns those
position ids into a block-diagonal causal mask, so no example attends to another; padding
costs nothing because there is none. Targets are shifted inside each example, so no
example predicts the first token of the next. Logits are computed only at positions that
carry loss (``logits_to_keep``), which spares the 49k-vocabulary head most of its work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from finjust.data.templates import IGNORE_INDEX, TokenizedExample


@dataclass
class PackedBatch:
    """One row of packed examples: ids, restarting positions and shifted targets, shape (1, T)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor

    @property
    def trained_tokens(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())

    def to(self, device: torch.device) -> PackedBatch:
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.targets.to(device))


def pack(examples: Sequence[TokenizedExample]) -> PackedBatch:
    """Lay ``examples`` end to end; each one's targets are its own labels shifted left by one."""
    ids: list[int] = []
    positions: list[int] = []
    targets: list[int] = []
    for example in examples:
        ids.extend(example.input_ids)
        positions.extend(range(len(example.input_ids)))
        targets.extend([*example.labels[1:], IGNORE_INDEX])
    as_row = lambda values: torch.tensor([values], dtype=torch.long)  # noqa: E731
    return PackedBatch(as_row(ids), as_row(positions), as_row(targets))


def batch_loss_sum(model: nn.Module, batch: PackedBatch) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch's trained tokens, and their count."""
    keep = batch.targets != IGNORE_INDEX
    count = int(keep.sum())
    if count == 0:
        return batch.input_ids.new_zeros((), dtype=torch.float32), 0
    out = model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        use_cache=False,  # a cache would make transformers ignore the packing boundaries
        logits_to_keep=keep,
    )
    logits = out.logits.reshape(-1, out.logits.shape[-1]).float()
    loss = F.cross_entropy(logits, batch.targets[keep], reduction="sum")
    return loss, count


@torch.no_grad()
def mean_loss(
    model: nn.Module, batches: Sequence[PackedBatch], device: torch.device, autocast_dtype: torch.dtype | None
) -> float:
    """Token-weighted mean loss over ``batches`` (evaluation: no gradients)."""
    total, count = 0.0, 0
    for batch in batches:
        with _autocast(device, autocast_dtype):
            loss, n = batch_loss_sum(model, batch.to(device))
        total, count = total + float(loss), count + n
    return total / max(count, 1)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def eval_batches(examples: Sequence[TokenizedExample], tokens_per_batch: int = 4096) -> list[PackedBatch]:
    """Pack examples in order into batches of about ``tokens_per_batch`` tokens."""
    batches: list[PackedBatch] = []
    current: list[TokenizedExample] = []
    size = 0
    for example in examples:
        if current and size + len(example.input_ids) > tokens_per_batch:
            batches.append(pack(current))
            current, size = [], 0
        current.append(example)
        size += len(example.input_ids)
    if current:
        batches.append(pack(current))
    return batches
