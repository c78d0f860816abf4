"""Gradient (activation) checkpointing: each repeated block keeps only its inputs for backward
and recomputes its activations there, when a run's largest step would not fit in memory.

It costs a second forward of every block in each step, so ``train.gradient_checkpointing:
null`` ("auto") turns it on only where memory requires it: the loop measures the bytes a
block-by-block forward saves for backward on one real example (``saved_tensors_hooks``, so
whatever the forwards in use keep is counted, not a formula's guess), scales them to the
plan's largest micro-batch and compares that with the memory the device has free.

Ours rather than transformers' ``gradient_checkpointing_enable``: that wraps the classes'
``forward``, which the compiled blocks (instance forwards, ``train/compile.py``) bypass; here
the checkpoint wraps whichever forward a block runs with, compiled or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from finjust.models.load import autocast
from finjust.models.segment_attention import attention_implementation

if TYPE_CHECKING:  # the loop imports this module
    from finjust.train.loop import LoopSetup
    from finjust.train.plan import StepPlan

#: with "auto", recompute when the largest step's saved activations would take more than this
#: share of the free memory: the rest is for what a step allocates besides them (gradients,
#: the loss's chunks, the allocator's slack) and for the rest of the machine
AUTO_SHARE = 0.5
#: the names transformers' blocks take a KV cache under
CACHE_ARGUMENTS = ("cache", "past_key_values", "past_key_value", "layer_past")


@dataclass(frozen=True)
class MemoryEstimate:
    """What ``auto`` decided from: the largest step's saved activations against free memory."""

    activation_bytes: int
    free_bytes: int | None  # None: the device does not say

    @property
    def fits(self) -> bool:
        return self.free_bytes is None or self.activation_bytes <= AUTO_SHARE * self.free_bytes


def recomputing(forward: Callable[..., Any], config: Any) -> Callable[..., Any]:
    """``forward`` run under a non-reentrant checkpoint: it saves its inputs only, and runs again
    in backward with the random state (dropout draws the same masks), autocast and attention
    implementation (``config._attn_implementation``) of the forward: finjust's per-example
    attention is switched on only around the forward call (``segment_attention``), and a
    recompute under transformers' default would attend across packed examples. A KV cache is
    dropped from the call, as transformers' own checkpointing does: the recompute would append
    the block's keys and values to it a second time."""

    def contexts() -> tuple[AbstractContextManager[None], AbstractContextManager[None]]:
        return nullcontext(), attention_implementation(config, config._attn_implementation)

    def run(*args: Any, **kwargs: Any) -> Any:
        kwargs.update({name: None for name in CACHE_ARGUMENTS if name in kwargs})
        if "use_cache" in kwargs:
            kwargs["use_cache"] = False
        return checkpoint(forward, *args, use_reentrant=False, context_fn=contexts, **kwargs)

    return run


def saved_activation_bytes(run_forward: Callable[[], Any], params: Iterable[torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for backward while ``run_forward`` runs, each storage
    once; the model's own weights (saved by reference, not copied) left out."""
    weights = {p.untyped_storage().data_ptr() for p in params}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run_forward()
    return sum(storages.values())


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory a step can still take: CUDA's free memory, the host's available memory on CPU;
    None for devices that do not say."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        return psutil.virtual_memory().available
    return None


def largest_batch_positions(steps: Sequence[Sequence[Sequence[int]]], sizes: Sequence[int]) -> int:
    """An upper bound on the token positions of the plan's largest micro-batch: its examples
    times its longest one (what padding computes; packing computes no more)."""
    micro_batches = (micro for step in steps for micro in step)
    return max((len(micro) * max(sizes[i] for i in micro) for micro in micro_batches if micro), default=0)


def memory_estimate(
    forward_one: Callable[[], Any], one_positions: int, largest_positions: int, params: Iterable[torch.Tensor],
    device: torch.device,
) -> MemoryEstimate:  # fmt: skip
    """Scale what ``forward_one`` (a loss forward over ``one_positions`` token positions) saves
    for backward to the largest micro-batch's positions. Its random draws (dropout) are undone,
    so probing leaves a run's, and its resume's, random stream as it was."""
    with _forked_rng(device):
        saved = saved_activation_bytes(forward_one, params)
    return MemoryEstimate(round(saved / max(one_positions, 1) * largest_positions), free_memory_bytes(device))


def _forked_rng(device: torch.device) -> Any:
    accelerators = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=accelerators)


def should_recompute(model: nn.Module, setup: LoopSetup, plan: StepPlan) -> bool:
    """``train.gradient_checkpointing`` as set; null: when the largest step's activations, as one
    example's forward saves them, would take more than half the free memory."""
    if not setup.recompute:
        return False  # a recipe asking for it with such a method is refused (recipe/validate.py)
    if setup.cfg.gradient_checkpointing is not None:
        return setup.cfg.gradient_checkpointing
    first = next((micro for step in plan.steps for micro in step if micro), None)
    if first is None:
        return False
    assert setup.make_batch is not None  # train_model fills it in before anything runs
    batch = setup.make_batch([setup.train[first[0]]], setup.packing).to(setup.device)

    def forward_one() -> None:
        with autocast(setup.device, setup.autocast_dtype):
            setup.loss_sum(model, batch)

    sizes = [len(example.input_ids) for example in setup.train]
    estimate = memory_estimate(forward_one, sizes[first[0]], largest_batch_positions(plan.steps, sizes),
                               model.parameters(), setup.device)  # fmt: skip
    if not estimate.fits:
        assert estimate.free_bytes is not None  # an estimate without it fits
        setup.on_event("phase", {"text": f"gradient checkpointing on: the largest step's activations (~"
                                 f"{estimate.activation_bytes / 1e9:.1f} GB) would take more than half of the "
                                 f"{estimate.free_bytes / 1e9:.1f} GB free"})  # fmt: skip
    return not estimate.fits
