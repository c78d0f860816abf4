"""``int8``: the merged model with PyTorch dynamic int8 quantisation of its ``nn.Linear`` layers.

``torch.ao.quantization.quantize_dynamic`` stores linear weights as int8 with a scale per
output channel and quantises each layer's input on the fly with one scale per tensor;
embeddings and norms stay fp32. Two kinds of layer stay fp32 too (:data:`KEEP_FP32`): the
MLP output projections (``down_proj``), whose inputs carry activation outliers that one int8
scale per tensor cannot hold, and the output head. Measured on the demo run's SmolLM2
(greedy token agreement with the trained model, 8 questions): every linear layer in int8,
0.017; these two kept in fp32 with per-channel weight scales, 0.178, still under this
format's 0.6 bar, so for that model the check fails and says so (``--min-agreement`` accepts
it anyway). A quantised
module has no ``save_pretrained``, so the folder holds the config, generation config and
tokenizer plus the quantised ``state_dict`` (``model_int8.pt``); :func:`load_int8` rebuilds
the architecture, quantises it the same way (empty) and loads the state dict::

    from finjust.export.int8 import load_int8
    model = load_int8("runs/demo/export/int8")   # then model.generate(...) as usual
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from finjust.errors import ExportError
from finjust.export.merged import stop_ids_of
from finjust.export.registry import FORMATS, ExportFormat, ParityThresholds
from finjust.export.runtimes import Runtime, TorchRuntime, folder_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from finjust.export.source import ExportSource

WEIGHTS = "model_int8.pt"
DESCRIPTION = "int8.json"
#: linear layers left in fp32 (see the module docstring), matched by name
KEEP_FP32 = ("down_proj", "lm_head")


def quantize(model: nn.Module, keep_fp32: tuple[str, ...] = KEEP_FP32) -> nn.Module:
    """Dynamic int8 quantisation (in place) of ``model``'s linear layers whose names contain none of ``keep_fp32``."""
    spec = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and not any(part in name for part in keep_fp32)}  # fmt: skip
    with warnings.catch_warnings():
        # torch 2.13 points eager quantisation users to torchao; the API still works and needs no new package
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*torchao.*")
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


def load_int8(folder: str | Path) -> PreTrainedModel:
    """Load a folder written by the ``int8`` export (see the module docstring)."""
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise ExportError(f"{folder} holds no {WEIGHTS}; is it an int8 export?")
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig.from_pretrained(folder)
    keep = tuple(json.loads((folder / DESCRIPTION).read_text())["fp32_layers"]) if (folder / DESCRIPTION).is_file() \
        else KEEP_FP32  # fmt: skip
    quantize(model.eval(), keep)
    # quantised tensors and packed params load under weights_only (torch allows them)
    model.load_state_dict(torch.load(folder / WEIGHTS, weights_only=True), strict=True)
    return model.eval()


class Int8(ExportFormat):
    name = "int8"
    summary = "merged model with PyTorch dynamic int8 linear layers (CPU inference)"

    def write(self, source: ExportSource, folder: Path, quant: str | None) -> None:
        merged = source.merged()
        fp32_bytes = sum(p.numel() * p.element_size() for p in merged.parameters())
        from transformers import AutoModelForCausalLM

        # quantise a copy: the fp32 merged model stays usable for other formats
        model = AutoModelForCausalLM.from_config(merged.config, dtype=torch.float32)
        model.load_state_dict(merged.state_dict())
        model.generation_config = merged.generation_config
        quantize(model.eval())
        torch.save(model.state_dict(), folder / WEIGHTS)
        model.config.save_pretrained(folder)
        model.generation_config.save_pretrained(folder)
        source.tokenizer.save_pretrained(folder)
        (folder / DESCRIPTION).write_text(json.dumps({
            "scheme": "torch.ao.quantization.quantize_dynamic(nn.Linear, qint8, per-channel weights)",
            "fp32_layers": list(KEEP_FP32),
            "fp32_parameter_bytes": fp32_bytes,
            "load": "from finjust.export.int8 import load_int8; load_int8(folder)"}, indent=2))  # fmt: skip

    def open(self, folder: Path, source: ExportSource) -> Runtime:
        model = load_int8(folder)
        return TorchRuntime(model, stop_ids_of(model), model.generation_config.pad_token_id, name="torch int8",
                            tokenizer=folder_tokenizer(folder))  # fmt: skip

    def thresholds(self, quant: str | None) -> ParityThresholds:
        # int8 weights move logits a little; greedy answers may part after some tokens
        return ParityThresholds(min_agreement=0.6)

    def notes(self, folder: Path, quant: str | None) -> dict[str, object]:
        description = json.loads((folder / DESCRIPTION).read_text())
        load = description["load"].replace("load_int8(folder)", f"load_int8({str(folder)!r})")
        return {"load": load, "fp32_parameter_bytes": description["fp32_parameter_bytes"]}


FORMATS.add(Int8.name, Int8())
