"""Swapping modules' forwards for a while: the training-only forwards (lean activations, the LoRA
addmm forward, compiled blocks) live on the instances and are deleted afterwards, so the
classes' own forwards are back for everything else (generation, export, saving)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks (decoder or encoder layers), which compiling and recomputing
    share: transformers' checkpointable layers, else the classes it names in
    ``_no_split_modules`` (its unit for splitting a model, which may name the embeddings too)."""
    layers: list[nn.Module] = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if layers:
        return layers
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


@contextmanager
def swapped_forwards(modules: Iterable[nn.Module], make: Callable[[nn.Module], Callable[..., Any] | None]) -> Iterator[int]:
    """Give each module the forward ``make`` returns for it (None: keep its own) while inside;
    yields how many were swapped."""
    swapped = []
    for module in modules:
        forward = make(module)
        if forward is not None:
            module.forward = forward
            swapped.append(module)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward
