"""Batched greedy generation with a KV cache: many questions per decoding step."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from finjust.methods.peft_adapter import model_generate, peft_false_alarms_off
from finjust.models.load import autocast, stop_token_ids


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
    with merged_for_generation(model) as generating:
        for chunk in _batches(order, [len(p) for p in prompts], batch_size, equal_lengths):
            answers.update(_answer_batch(generating, tokenizer, [prompts[i] for i in chunk], chunk, max_new_tokens,
                                         device, autocast_dtype))  # fmt: skip
    return [answers[i] for i in range(len(prompts))]


def _answer_batch(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]], chunk: list[int],
                  max_new_tokens: int, device: torch.device, autocast_dtype: torch.dtype | None) -> dict[int, str]:  # fmt: skip
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    with autocast(device, autocast_dtype):
        output = model_generate(
            model,
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_token_ids(model, tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens = output[:, ids.shape[1] :]
    # one row decodes to one str
    return {index: cast(str, tokenizer.decode(row, skip_special_tokens=True)).strip()
            for index, row in zip(chunk, new_tokens, strict=True)}  # fmt: skip


@contextmanager
def merged_for_generation(model: nn.Module) -> Iterator[nn.Module]:
    """``model``, or, where it is a peft LoRA or DoRA model whose adapters are on, a copy with them
    merged into its weights, for as long as the block runs.

    Unmerged, every adapted linear layer runs the adapter's two extra matmuls beside the frozen
    one at every generated token: on the demo's LoRA (r=16, every linear layer) that made the
    scorecard's generation 1.7x slower than the base model's (``benchmarks/eval_speed.py --lora
    --unmerged``). The copy's weights are W + BA rounded to the weights' dtype once, as a merged
    export's are. Left unmerged: quantized bases (QLoRA: merging re-quantizes), adapters turned
    off (the base model's answers), other peft methods, and a copy that would not fit in memory.
    """
    if not lora_mergeable(model) or not _room_for_a_copy(model):
        yield model
        return
    yield merged_lora(copy.deepcopy(model))


def merged_lora(model: nn.Module) -> nn.Module:
    """``model`` (one :func:`lora_mergeable` accepts) with its adapters merged into its weights: a plain model."""
    with peft_false_alarms_off():
        return model.merge_and_unload()  # type: ignore[operator]  # a PeftModel, as lora_mergeable found


def lora_mergeable(model: nn.Module) -> bool:
    """Whether ``model`` is a peft LoRA or DoRA model, its adapters on, whose weights can take them."""
    from peft import PeftModel, PeftType
    from peft.tuners.lora import LoraLayer

    if not isinstance(model, PeftModel) or model.peft_config[model.active_adapter].peft_type != PeftType.LORA:
        return False
    base = model.get_base_model()
    if getattr(base, "hf_quantizer", None) is not None or getattr(base.config, "quantization_config", None):
        return False  # as transformers tells a quantized model (bitsandbytes' 4-bit QLoRA base)
    layers = [module for module in model.modules() if isinstance(module, LoraLayer)]
    if not layers or any(layer.disable_adapters or layer.merged for layer in layers):
        return False
    # inside training's forward swaps (a forgetting-guard probe): a copy would keep closures over
    # the original modules, half merged
    return not any("forward" in vars(module) for module in model.modules())


def _room_for_a_copy(model: nn.Module, margin: float = 1.5) -> bool:
    """Whether a second copy of ``model``'s weights fits in what its device has free."""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] > margin * size
    import psutil

    return psutil.virtual_memory().available > margin * size + (1 << 30)


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
