"""Prefix tuning: trained keys and values of virtual tokens at every layer, through peft.

Li & Liang 2021 (arXiv:2101.00190). The virtual tokens enter every attention layer as a
ready-made KV cache; they are activations, not weights, so nothing can be merged and the
adapter is the export. Batches are padded, one example per row (see objectives/sft.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from finjust.errors import MethodError
from finjust.methods.peft_adapter import PeftMethod
from finjust.methods.prompt_tuning import CANNOT_MERGE
from finjust.methods.registry import METHODS

if TYPE_CHECKING:  # peft is imported where it is used (see methods/peft_adapter.py)
    from peft import PrefixTuningConfig


@dataclass
class PrefixTuningOptions:
    virtual_tokens: int = field(default=20, metadata={
        "help": "number of virtual tokens whose keys and values train at every layer", "gt": 0})
    projection: bool = field(default=False, metadata={
        "help": "train the prefix through a two-layer MLP (Li & Liang's reparametrisation: "
                "steadier training, many more trainable parameters)"})  # fmt: skip


class PrefixTuning(PeftMethod):
    name = "prefix_tuning"
    label = "prefix tuning"
    peft_type = "PREFIX_TUNING"
    options_class = PrefixTuningOptions
    # peft's prefix-tuning guide uses 1e-2 with AdamW (Li & Liang's 5e-5 went with the MLP projection)
    default_lr = 1e-2
    supports_packing = False
    supports_recompute = False  # the prefix is a KV cache the blocks append to
    can_merge = False
    classification_blocker = "peft's prefix tuning needs a key/value cache that classification models do not take"

    def peft_config(self, model: nn.Module, options: PrefixTuningOptions) -> PrefixTuningConfig:
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(
            num_virtual_tokens=options.virtual_tokens,
            prefix_projection=options.projection,
            task_type="CAUSAL_LM",
        )

    def merge(self, model: nn.Module) -> nn.Module:
        raise MethodError(f"prefix tuning {CANNOT_MERGE}")


METHODS.add(PrefixTuning.name, PrefixTuning())
