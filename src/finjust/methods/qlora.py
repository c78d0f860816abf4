"""QLoRA: LoRA adapters over a frozen base quantised to 4-bit NF4 by bitsandbytes.

Dettmers et al. 2023 (arXiv:2305.14314): the base weights are stored in 4 bits (NF4, with
the quantisation constants themselves quantised: "double quantisation") and dequantised
on the fly in every forward and backward pass; only the LoRA matrices train, in 16/32 bits.
That saves memory, not time: on a CPU each step is slower than LoRA's.

The base must be *loaded* quantised, so this method asks the loader for a
``BitsAndBytesConfig`` through :meth:`model_load_kwargs`. Merging dequantises the base and
folds the adapters into plain (unquantised) weights, so the export is a normal model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from finjust.errors import MethodError
from finjust.methods.lora import LoraOptions, lora_config
from finjust.methods.peft_adapter import PeftMethod, peft_false_alarms_off
from finjust.methods.registry import METHODS

if TYPE_CHECKING:  # peft is imported where it is used (see methods/peft_adapter.py)
    from bitsandbytes.nn import Linear4bit, Params4bit
    from peft import LoraConfig

INSTALL = "pip install --no-deps bitsandbytes==0.50.2"


@dataclass
class QloraOptions(LoraOptions):
    quant_type: str = field(default="nf4", metadata={
        "help": "4-bit data type of the frozen base (NF4 is the QLoRA paper's)", "choices": ("nf4", "fp4")})
    double_quant: bool = field(default=True, metadata={
        "help": "also quantise the quantisation constants (the QLoRA paper: about 0.37 bit per weight saved)"})


class Qlora(PeftMethod):
    name = "qlora"
    label = "QLoRA"
    peft_type = "LORA"
    options_class = QloraOptions
    # QLoRA paper, its 7B/13B runs (larger models used 1e-4)
    default_lr = 2e-4
    classification_blocker = "it loads the model in 4 bits its own way, for causal language models only"

    def model_load_kwargs(self, options: QloraOptions, dtype: torch.dtype) -> dict[str, Any]:
        from transformers import BitsAndBytesConfig

        _bitsandbytes()
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=options.quant_type,
            bnb_4bit_use_double_quant=options.double_quant,
            bnb_4bit_compute_dtype=dtype,
        )
        return {"quantization_config": config}

    def warnings_for(self, options: QloraOptions, device: torch.device) -> list[str]:
        if device.type != "cpu":
            return []
        return ["qlora on a CPU: bitsandbytes dequantises every 4-bit weight in every pass, so each step is "
                "slower than lora's (1.1x to 10x measured); it saves memory, not time"]  # fmt: skip

    def peft_config(self, model: nn.Module, options: QloraOptions) -> LoraConfig:
        return lora_config(options)

    def apply(self, model: nn.Module, options: QloraOptions) -> nn.Module:
        layers = _four_bit_layers(model)
        if not layers:
            raise MethodError("qlora expects a base loaded in 4-bit (load it with the method's model_load_kwargs); "
                              "for a full-precision base use lora")  # fmt: skip
        # bitsandbytes swaps each layer's weight for a Params4bit, which its types leave as nn.Linear's Tensor
        if any(getattr(cast("Params4bit", layer.weight).quant_state, "packing_format_for_cpu", False)
               for layer in layers):
            raise MethodError("qlora: this 4-bit model already ran inference on the CPU, which repacked its weights "
                              "into a layout that has no gradient; load a fresh model for training")  # fmt: skip
        _keep_trainable_layout(layers)
        return super().apply(model, options)

    def load(self, base: nn.Module, folder: Path) -> nn.Module:
        _keep_trainable_layout(_four_bit_layers(base))
        return super().load(base, folder)

    def merge(self, model: nn.Module) -> nn.Module:
        """Dequantise the base, then fold the adapters in: plain weights, no bitsandbytes needed to load."""
        from peft import PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

        if not isinstance(model, PeftModel):
            raise MethodError("QLoRA merge expects a model with a QLoRA adapter")
        config = model.peft_config[model.active_adapter]
        adapter = get_peft_model_state_dict(model)
        base = model.unload()  # the 4-bit base with the adapter layers taken out, unmerged
        if _four_bit_layers(base):
            # bitsandbytes dequantises into the load dtype (bf16 under "auto"): fold in fp32
            base = base.dequantize().to(torch.float32)
        with peft_false_alarms_off():
            plain = get_peft_model(base, config)
        set_peft_model_state_dict(plain, adapter)
        return plain.merge_and_unload()


def _bitsandbytes() -> Any:
    try:
        import bitsandbytes
    except ImportError as exc:
        raise MethodError(f"qlora needs bitsandbytes, which cannot be imported ({exc}); {INSTALL}") from exc
    return bitsandbytes


def _four_bit_layers(model: nn.Module) -> list[Linear4bit]:
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return []
    return [module for module in model.modules() if isinstance(module, Linear4bit)]


def _keep_trainable_layout(layers: list[Linear4bit]) -> None:
    """Stop bitsandbytes repacking 4-bit weights for fast CPU inference.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 rewrites a layer's weight into an
    inference-only layout the first time it runs in eval mode without gradients (validation,
    generation). Backpropagating through that layout silently drops the gradient to the
    layers below (torch only warns "autograd kernel was not registered"), so a QLoRA run
    that validates mid-training stops learning; the layout also fails on layers whose width
    is not a multiple of 32. The plain layout computes the same outputs.
    """
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False


METHODS.add(Qlora.name, Qlora())
