"""A method's options checked against the model before anything costly runs.

Options only the model can judge (target modules that match none of its layers, more top
layers to train than it has, peft's own rules between options) would fail when the method is
applied, after the model's base scores are computed (~30 s on the demo). Here the method
is applied to a weightless copy of the model, its parameters on the meta device (no memory,
well under a second), which raises the same :class:`~finjust.errors.MethodError` at once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from finjust.methods.registry import Method


def check_method_fits(method: Method, options: Any, model: nn.Module, dtype: torch.dtype) -> None:
    """Apply ``method`` with ``options`` to a meta-device copy of ``model``.

    Raises:
        MethodError: what applying it to ``model`` itself would raise.
    """
    if method.model_load_kwargs(options, dtype):
        return  # QLoRA applies to its own 4-bit load of the model, which a skeleton cannot stand for
    # the adapters' new weights are drawn on the CPU: the run's random stream must not move
    with torch.random.fork_rng(devices=[]):
        with torch.device("meta"):
            skeleton = type(model)(model.config)
        skeleton.name_or_path = model.name_or_path  # prompt tuning's text init finds the tokenizer there
        method.apply(skeleton, options)
