"""Freeze: only the top N transformer layers and the final norm train; everything below is frozen.

The classic partial fine-tuning (e.g. Lee et al. 2019, arXiv:1911.03090, "What would Elsa
do? Freezing layers during transformer fine-tuning"): the upper layers are the most
task-specific, and the frozen lower layers need neither gradients nor optimizer state.
The trained tensors are pretrained weights, so they keep fp32 master copies like full
fine-tuning; saved as ``trained.safetensors`` + ``trained.json`` (see
:mod:`finjust.methods.selected`), and merging is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from finjust.errors import MethodError
from finjust.methods.registry import METHODS, Method
from finjust.methods.selected import load_selected, read_description, save_selected


@dataclass
class FreezeOptions:
    layers: int = field(default=2, metadata={
        "help": "how many of the last transformer layers train (with the final norm)", "gt": 0})


class Freeze(Method):
    name = "freeze"
    options_class = FreezeOptions
    # the trained tensors are pretrained weights: full fine-tuning's rate
    default_lr = 2e-5
    trains_base_weights = True
    artifact_dir = "trained"

    def apply(self, model: nn.Module, options: FreezeOptions) -> nn.Module:
        stack_name, stack = layer_stack(model)
        if options.layers > len(stack):
            raise MethodError(f"freeze: method.layers={options.layers} but the model has {len(stack)} layers; "
                              f"use at most {len(stack)}, or method full to train everything")  # fmt: skip
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for module in [*stack[len(stack) - options.layers :], *_final_norms(model, stack_name)]:
            for parameter in module.parameters():
                parameter.requires_grad_(True)
        return model

    def save(self, model: nn.Module, folder: Path) -> None:
        stack_name, stack = layer_stack(model)
        trained = [name for name, p in model.named_parameters() if p.requires_grad]
        top = [i for i, layer in enumerate(stack) if any(p.requires_grad for p in layer.parameters())]
        save_selected(model, trained, folder, self.name, extra={"layer_stack": stack_name, "layers": top})

    def load(self, base: nn.Module, folder: Path) -> nn.Module:
        read_description(folder, self.name)
        load_selected(base, folder)
        return base

    def merge(self, model: nn.Module) -> nn.Module:
        return model  # the trained tensors are the model's own weights


def layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's list of transformer layers: the ``ModuleList`` holding the most parameters."""
    stacks = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not stacks:
        raise MethodError(f"freeze: found no list of transformer layers in {type(model).__name__}")
    return max(stacks, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def _final_norms(model: nn.Module, stack_name: str) -> list[nn.Module]:
    """Norm layers after the layer stack (Llama's ``model.norm``, GPT-2's ``ln_f``); none for BERT.

    transformers registers a model's modules in the order its forward runs them, so the norms
    registered after the stack are the final ones; one before it (BLOOM's
    ``word_embeddings_layernorm``) is below every frozen layer and stays frozen.
    """
    parent_name, _, stack = stack_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    names = [name for name, _ in parent.named_children()]
    after = list(parent.children())[names.index(stack) + 1 :]
    return [child for child in after if "norm" in type(child).__name__.lower()]


METHODS.add(Freeze.name, Freeze())
