"""Full fine-tuning: every pretrained weight trains (fp32 master weights, bf16 compute)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from finjust.errors import MethodError
from finjust.methods.registry import METHODS, Method


@dataclass
class FullOptions:
    """Full fine-tuning has no options of its own."""


class Full(Method):
    name = "full"
    options_class = FullOptions
    default_lr = 2e-5
    trains_base_weights = True
    artifact_dir = "model"

    def apply(self, model: nn.Module, options: FullOptions) -> nn.Module:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model

    def save(self, model: nn.Module, folder: Path) -> None:
        from transformers import PreTrainedModel  # where used: see methods/peft_adapter.py

        if not isinstance(model, PreTrainedModel):
            raise MethodError("full fine-tuning save expects a transformers model")
        from finjust.models.load import without_progress_bars

        with without_progress_bars():  # transformers' "Writing model shards" bar: the library does not print
            model.save_pretrained(folder)

    def load(self, base: nn.Module, folder: Path) -> nn.Module:
        from transformers import AutoModelForCausalLM, PreTrainedModel

        from finjust.models.load import without_progress_bars

        if not (folder / "config.json").is_file():
            raise MethodError(f"{folder} holds no saved model (config.json missing)")
        # the base's own class: a causal LM, or a classifier whose saved head comes back with it
        model_class = type(base) if isinstance(base, PreTrainedModel) else AutoModelForCausalLM
        weight = next(base.parameters())
        # typed as the torch module: mypy reads PreTrainedModel.to (wrapped with functools.wraps) as unbound
        with without_progress_bars():
            model: nn.Module = model_class.from_pretrained(folder, dtype=weight.dtype)
        return model.to(weight.device)  # where the base is

    def merge(self, model: nn.Module) -> nn.Module:
        return model  # nothing to fold in: the weights themselves were trained


METHODS.add(Full.name, Full())
