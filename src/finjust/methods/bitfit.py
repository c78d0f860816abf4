"""BitFit: only bias terms train (Ben Zaken et al. 2022, arXiv:2106.10199). peft has no BitFit.

Encoders such as BERT and MiniLM, and decoders such as GPT-2, have biases: those train.
Llama-family decoders (SmolLM2, finjust's default model) have none. For them finjust adds
zero-initialised biases to the linear layers the architecture can give biases (the
``attention_bias`` / ``mlp_bias`` switches of its config), so the model computes exactly
what it did before training, and switches those flags on, so a merged model saves and
reloads with plain transformers. Why add rather than refuse: refusing would leave BitFit
unusable on the default model; a zero bias trained on every linear output is BitFit's
idea (a learned shift per output unit) on an architecture that dropped the terms.
``add_missing: false`` refuses instead. An architecture with neither biases nor such
switches is refused with a :class:`~finjust.errors.MethodError`.

Trained biases are kept in fp32 even over a bf16 base: AdamW's small updates would vanish
in bf16's 8-bit mantissa. Saved as ``trained.safetensors`` + ``trained.json`` (see
:mod:`finjust.methods.selected`); merging is the identity, the biases being the model's own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from finjust.errors import MethodError
from finjust.methods.registry import METHODS, Method
from finjust.methods.selected import load_selected, read_description, save_selected

#: config switches that give a transformers architecture bias terms (Llama, Mistral-style configs)
BIAS_FLAGS = ("attention_bias", "mlp_bias")


@dataclass
class BitfitOptions:
    add_missing: bool = field(default=True, metadata={
        "help": "on a model without bias terms (Llama, SmolLM2), add zero-initialised ones to its linear "
                "layers and train those; false raises an error instead"})  # fmt: skip


class Bitfit(Method):
    name = "bitfit"
    options_class = BitfitOptions
    # the BitFit paper swept 1e-4 to 1e-3: biases need a larger rate than full fine-tuning
    default_lr = 1e-3
    artifact_dir = "trained"

    def apply(self, model: nn.Module, options: BitfitOptions) -> nn.Module:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        if not _bias_names(model):
            if not options.add_missing:
                raise MethodError(f"bitfit: the {_model_type(model)} model has no bias terms to train; "
                                  "set method.add_missing=true to add zero-initialised ones, or use lora")  # fmt: skip
            _add_zero_biases(model, _biases_the_architecture_allows(model))
        _train_in_fp32(model, _bias_names(model))
        return model

    def save(self, model: nn.Module, folder: Path) -> None:
        trained = [name for name, p in model.named_parameters() if p.requires_grad]
        flags = {flag: getattr(model.config, flag) for flag in BIAS_FLAGS if hasattr(model.config, flag)}
        save_selected(model, trained, folder, self.name, extra={"config": flags})

    def load(self, base: nn.Module, folder: Path) -> nn.Module:
        description = read_description(folder, self.name)
        present = {name for name, _ in base.named_parameters()}
        added = [name.removesuffix(".bias") for name in description["tensors"]
                 if name not in present and name.endswith(".bias")]
        _add_zero_biases(base, added)
        for flag, value in description.get("config", {}).items():
            setattr(base.config, flag, value)
        _train_in_fp32(base, list(description["tensors"]))
        load_selected(base, folder)
        return base

    def merge(self, model: nn.Module) -> nn.Module:
        return model  # the biases are the model's own parameters, and its config declares them


def _model_type(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", type(model).__name__))


def _bias_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters() if name.endswith("bias")]


def _biases_the_architecture_allows(model: nn.Module) -> list[str]:
    """Names of the modules that get a bias when the config's bias switches are on.

    The architecture itself answers: it is built with the switches on, on the meta device
    (no memory, milliseconds), and its bias parameters are listed.
    """
    config = copy.deepcopy(getattr(model, "config", None))
    flags = [flag for flag in BIAS_FLAGS if hasattr(config, flag)]
    for flag in flags:
        setattr(config, flag, True)
    modules: list[str] = []
    if flags:
        with torch.device("meta"):
            probe = type(model)(config)
        modules = [name.removesuffix(".bias") for name, _ in probe.named_parameters() if name.endswith(".bias")]
    if not modules:
        raise MethodError(f"bitfit: the {_model_type(model)} model has no bias terms and its configuration "
                          "cannot add any; use lora or ia3")  # fmt: skip
    for flag in flags:
        setattr(model.config, flag, True)
    return modules


def _add_zero_biases(model: nn.Module, module_names: list[str]) -> None:
    """Give each named linear layer a zero bias: its output is unchanged until the bias trains."""
    modules = dict(model.named_modules())
    for name in module_names:
        layer = modules.get(name)
        if not isinstance(layer, nn.Linear) or layer.bias is not None:
            raise MethodError(f"bitfit: cannot add a bias to {name!r} ({type(layer).__name__}); "
                              "the saved biases do not fit this model")  # fmt: skip
        layer.bias = nn.Parameter(torch.zeros(layer.out_features, device=layer.weight.device))


def _train_in_fp32(model: nn.Module, names: list[str]) -> None:
    from finjust.models.load import align_layer_norm_dtypes  # transformers: see methods/peft_adapter.py

    params = dict(model.named_parameters())
    for name in names:
        parameter = params.get(name)
        if parameter is None:
            continue  # reported by load_selected, which names the missing tensors
        parameter.data = parameter.data.float()
        parameter.requires_grad_(True)
    align_layer_norm_dtypes(model)


METHODS.add(Bitfit.name, Bitfit())
