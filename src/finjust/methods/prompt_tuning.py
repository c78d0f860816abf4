"""Prompt tuning: trained embeddings of virtual tokens put before every sequence, through peft.

Lester et al. 2021 (arXiv:2104.08691). Only the virtual tokens' embeddings train. They are
inputs, not weights, so nothing can be merged: the adapter is the export. Each sequence
grows by the virtual tokens, so examples cannot share a packed row (batches are padded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from torch import nn

from finjust.errors import MethodError
from finjust.methods.peft_adapter import PeftMethod
from finjust.methods.registry import METHODS

if TYPE_CHECKING:  # peft is imported where it is used (see methods/peft_adapter.py)
    from peft import PromptTuningConfig

CANNOT_MERGE = "cannot merge: virtual tokens are not weights; export the adapter instead"


@dataclass
class PromptTuningOptions:
    virtual_tokens: int = field(default=20, metadata={
        "help": "number of trained virtual tokens put before every sequence", "gt": 0})
    init: str = field(default="sample_vocab", metadata={
        "help": "how the virtual tokens start: embeddings of random vocabulary tokens, random "
                "vectors, or the tokens of init_text", "choices": ("sample_vocab", "random", "text")})
    init_text: str | None = field(default=None, metadata={
        "help": "text whose tokens initialise the virtual tokens (with init: text)"})  # fmt: skip


class PromptTuning(PeftMethod):
    name = "prompt_tuning"
    label = "prompt tuning"
    peft_type = "PROMPT_TUNING"
    options_class = PromptTuningOptions
    # peft's causal-LM prompt-tuning guide uses 3e-2 with AdamW (Lester et al. used 0.3 with Adafactor)
    default_lr = 3e-2
    supports_packing = False
    can_merge = False
    classification_blocker = "a decoder's head would read padding: its virtual tokens hide where each text ends"

    def option_problems(self, options: PromptTuningOptions) -> list[str]:
        if options.init == "text" and not options.init_text:
            return ["method: prompt_tuning's init is 'text' but method.init_text is empty; give the text"]
        if options.init != "text" and options.init_text:  # peft would ignore the text silently
            return [f"method: prompt_tuning's method.init_text is given but method.init is {options.init!r}; set "
                    "method.init=text to start from the text, or leave init_text out"]
        return []

    def peft_config(self, model: nn.Module, options: PromptTuningOptions) -> PromptTuningConfig:
        if problems := self.option_problems(options):  # a recipe built past its checks
            raise MethodError(problems[0])
        text_init: dict[str, Any] = {}
        if options.init == "text":
            # the tokenizer is saved beside the model's weights, so the model's folder finds it (cast: torch
            # types a module's attributes as Tensor | Module; transformers' name_or_path is a str)
            text_init = {"prompt_tuning_init_text": options.init_text,
                         "tokenizer_name_or_path": str(Path(cast(str, model.name_or_path)))}  # fmt: skip
        from peft import PromptTuningConfig, PromptTuningInit

        # starting from real token embeddings beats random vectors (Lester et al. 2021's ablation)
        return PromptTuningConfig(
            num_virtual_tokens=options.virtual_tokens,
            prompt_tuning_init=PromptTuningInit[options.init.upper()],
            task_type="CAUSAL_LM",
            **text_init,
        )

    def merge(self, model: nn.Module) -> nn.Module:
        raise MethodError(f"prompt tuning {CANNOT_MERGE}")


METHODS.add(PromptTuning.name, PromptTuning())
