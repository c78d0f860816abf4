"""DoRA: LoRA on the direction of each weight plus a trained magnitude vector, through peft.

Weight-decomposed low-rank adaptation (Liu et al. 2024, arXiv:2402.09353) splits every
adapted weight into a magnitude and a direction, trains the magnitude directly and the
direction with a LoRA update. It merges like LoRA; each step costs more than LoRA's because
the weight norm is recomputed in every forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from finjust.methods.lora import LoraOptions, lora_config
from finjust.methods.peft_adapter import PeftMethod
from finjust.methods.registry import METHODS

if TYPE_CHECKING:  # peft is imported where it is used (see methods/peft_adapter.py)
    from peft import LoraConfig


@dataclass
class DoraOptions(LoraOptions):
    """DoRA takes LoRA's options (rank, alpha, dropout, target modules)."""


class Dora(PeftMethod):
    name = "dora"
    label = "DoRA"
    peft_type = "LORA"  # peft stores DoRA as a LoRA adapter with use_dora: true
    options_class = DoraOptions
    # the DoRA paper trains with LoRA's hyperparameters (its LLaMA runs: 1e-4 to 2e-4)
    default_lr = 2e-4

    def peft_config(self, model: nn.Module, options: DoraOptions) -> LoraConfig:
        return lora_config(options, use_dora=True)


METHODS.add(Dora.name, Dora())
