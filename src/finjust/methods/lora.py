"""LoRA: low-rank adapters beside the frozen pretrained weights, through peft."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from finjust.errors import MethodError
from finjust.methods.registry import METHODS, Method


@dataclass
class LoraOptions:
    r: int = field(default=16, metadata={"help": "rank of the adapter matrices"})
    alpha: float = field(default=32.0, metadata={"help": "scaling numerator: updates scale by alpha / r"})
    # 0 by default: on the CPU the dropout masks cost ~28% of a step (shared/PERF-NOTES.md)
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input"})
    target_modules: str | list[str] = field(
        default="all-linear", metadata={"help": "'all-linear' or a list of module names to adapt"}
    )


class Lora(Method):
    name = "lora"
    options_class = LoraOptions
    default_lr = 2e-4
    artifact_dir = "adapter"

    def apply(self, model: nn.Module, options: LoraOptions) -> nn.Module:
        config = LoraConfig(
            r=options.r,
            lora_alpha=options.alpha,
            lora_dropout=options.dropout,
            target_modules=options.target_modules,
            task_type="CAUSAL_LM",
        )
        try:
            return get_peft_model(model, config)
        except ValueError as exc:
            raise MethodError(f"cannot apply LoRA: {exc}") from exc

    def save(self, model: nn.Module, folder: Path) -> None:
        if not isinstance(model, PeftModel):
            raise MethodError("LoRA save expects the model returned by apply()")
        model.save_pretrained(folder)

    def load(self, base: nn.Module, folder: Path) -> nn.Module:
        if not (folder / "adapter_config.json").is_file():
            raise MethodError(f"{folder} holds no LoRA adapter (adapter_config.json missing)")
        return PeftModel.from_pretrained(base, folder)

    def merge(self, model: nn.Module) -> nn.Module:
        if not isinstance(model, PeftModel):
            raise MethodError("LoRA merge expects a model with a LoRA adapter")
        return model.merge_and_unload()


METHODS.add(Lora.name, Lora())
