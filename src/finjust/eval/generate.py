"""Batched greedy generation with a KV cache: many questions per decoding step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from finjust.methods.peft_adapter import model_generate
from finjust.models.load import autocast


@torch.no_grad()
def generate_answers(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    equal_lengths: bool = False,
) -> list[str]:
    """Greedy answers to tokenized prompts, stopping at the end-of-turn token.

    Prompts are sorted by length so each batch holds similar lengths (little padding), and
    left-padded so every answer starts at the same position. ``equal_lengths`` batches only
    prompts of the same length, with no padding at all: peft's prompt and prefix tuning put
    virtual tokens before the prompt and ignore position ids, so left padding would move
    each prompt away from its virtual tokens and change the answer.
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: dict[int, str] = {}
    model.eval()
    for chunk in _batches(order, [len(p) for p in prompts], batch_size, equal_lengths):
        ids, mask = left_pad([prompts[i] for i in chunk], tokenizer.pad_token_id)
        with autocast(device, autocast_dtype):
            output = model_generate(
                model,
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = output[:, ids.shape[1] :]
        for index, row in zip(chunk, new_tokens, strict=True):
            answers[index] = cast(str, tokenizer.decode(row, skip_special_tokens=True)).strip()  # one row: one str
    return [answers[i] for i in range(len(prompts))]


def _batches(order: list[int], lengths: list[int], batch_size: int, equal_lengths: bool) -> list[list[int]]:
    """Consecutive runs of ``order`` of at most ``batch_size``; with ``equal_lengths``, one length per run."""
    chunks: list[list[int]] = []
    for index in order:
        if chunks and len(chunks[-1]) < batch_size and (
            not equal_lengths or lengths[chunks[-1][0]] == lengths[index]
        ):
            chunks[-1].append(index)
        else:
            chunks.append([index])
    return chunks


def left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask
