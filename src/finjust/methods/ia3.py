"""(IA)³: learned vectors that rescale keys, values and the feed-forward activations, through peft.

Liu et al. 2022 (T-Few, arXiv:2205.05638): one vector per adapted layer, so far fewer
trainable parameters than LoRA; the scaling folds into the weights, so it merges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from finjust.errors import MethodError
from finjust.methods.peft_adapter import PeftMethod
from finjust.methods.registry import METHODS

if TYPE_CHECKING:  # peft is imported where it is used (see methods/peft_adapter.py)
    from peft import IA3Config


@dataclass
class Ia3Options:
    target_modules: list[str] | None = field(default=None, metadata={
        "help": "module names to rescale; null uses peft's defaults for the model type "
                "(Llama: k_proj, v_proj, down_proj)"})  # fmt: skip
    feedforward_modules: list[str] | None = field(default=None, metadata={
        "help": "which of target_modules are feed-forward (their input is rescaled, not their "
                "output); null uses peft's defaults for the model type"})  # fmt: skip


class Ia3(PeftMethod):
    name = "ia3"
    label = "IA3"
    peft_type = "IA3"
    options_class = Ia3Options
    # T-Few (Liu et al. 2022) trains (IA)³ with a learning rate of 3e-3
    default_lr = 3e-3

    def option_problems(self, options: Ia3Options) -> list[str]:
        if (options.target_modules is None) != (options.feedforward_modules is None):
            return ["method: ia3 needs both method.target_modules and method.feedforward_modules (the "
                    "feed-forward ones among the targets), or neither to use peft's defaults for the model type"]
        return []

    def peft_config(self, model: nn.Module, options: Ia3Options) -> IA3Config:
        if problems := self.option_problems(options):  # a recipe built past its checks
            raise MethodError(problems[0])
        from peft import IA3Config

        return IA3Config(
            target_modules=options.target_modules,
            feedforward_modules=options.feedforward_modules,
            task_type="CAUSAL_LM",
        )


METHODS.add(Ia3.name, Ia3())
