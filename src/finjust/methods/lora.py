"""LoRA: low-rank adapters beside the frozen pretrained weights, through peft."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from finjust.methods.peft_adapter import PeftMethod
from finjust.methods.registry import METHODS

if TYPE_CHECKING:  # peft is imported where it is used (see methods/peft_adapter.py)
    from peft import LoraConfig


@dataclass
class LoraOptions:
    r: int = field(default=16, metadata={"help": "rank of the adapter matrices", "gt": 0})
    alpha: float = field(default=32.0, metadata={"help": "scaling numerator: updates scale by alpha / r", "gt": 0})
    # 0 by default: on the CPU the dropout masks cost ~28% of a step (shared/PERF-NOTES.md)
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input", "ge": 0, "lt": 1})
    target_modules: str | list[str] = field(
        default="all-linear",
        metadata={"help": "'all-linear', a list of module names to adapt ([q_proj, v_proj]), or one string "
                          "that peft reads as a regular expression over whole module paths (q_proj alone "
                          "matches none: write [q_proj] or '.*q_proj')"},
    )


def lora_config(options: LoraOptions, use_dora: bool = False) -> LoraConfig:
    """The peft ``LoraConfig`` for ``options`` (shared by LoRA, DoRA and QLoRA)."""
    from peft import LoraConfig

    return LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,  # type: ignore[arg-type]  # peft declares an int; it only scales by alpha / r
        lora_dropout=options.dropout,
        target_modules=options.target_modules,
        use_dora=use_dora,
        task_type="CAUSAL_LM",
    )


class Lora(PeftMethod):
    name = "lora"
    label = "LoRA"
    peft_type = "LORA"
    options_class = LoraOptions
    # Hu et al. 2021 (arXiv:2106.09685) and the QLoRA paper's 7B/13B runs use 2e-4
    default_lr = 2e-4

    def peft_config(self, model: nn.Module, options: LoraOptions) -> LoraConfig:
        return lora_config(options)


METHODS.add(Lora.name, Lora())
