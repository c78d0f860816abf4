"""``int8``: the merged model with its linear layers' weights stored as int8 (torchao, weight-only).

torchao's ``Int8WeightOnlyConfig`` stores each ``nn.Linear`` weight as int8 with one scale per
output channel and dequantises it inside the matmul; activations stay fp32, and so do
embeddings, norms and the output head (:data:`KEEP_FP32`: SmolLM2's head is its embedding
matrix, which quantising would untie; an untied head stays fp32 too). Only ``nn.Linear``
layers are quantised: a model without them (GPT-2's ``Conv1D``) is refused. PyTorch's own
dynamic quantisation (``torch.ao.quantization.quantize_dynamic``, deprecated: torch says it is
to be removed in favour of torchao) also rounds each layer's input to int8 with one
scale per tensor, which SmolLM2's activation outliers cannot take. Greedy token agreement with
the trained model (8 test questions; this format's bar is 0.6): on an 8-step run of the demo
0.178 that way (``down_proj`` and the head kept fp32) against 0.621 weight-only; on the full
demo run weight-only 0.761, torchao's int8 activations 0.45. Weight-only runs at the fp32
model's speed on the CPU. A quantised module has no
``save_pretrained``, so the folder holds the config, generation config and tokenizer plus the
quantised ``state_dict`` (``model_int8.pt``); :func:`load_int8` rebuilds the architecture,
quantises it the same way (empty) and loads the state dict (torchao must be installed)::

    from finjust.export.int8 import load_int8
    model = load_int8("runs/demo/export/int8")   # then model.generate(...) as usual
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from finjust.errors import ExportError
from finjust.export.merged import stop_ids_of
from finjust.export.registry import FORMATS, ExportFormat, ParityThresholds
from finjust.export.runtimes import Runtime, TorchRuntime, folder_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from finjust.export.source import ExportSource

WEIGHTS = "model_int8.pt"
DESCRIPTION = "int8.json"
#: linear layers left in fp32 (see the module docstring), matched by the last part of their name
KEEP_FP32 = ("lm_head",)
#: what int8.json records; a folder of another scheme (an earlier finjust's dynamic
#: quantisation) is refused by :func:`load_int8` rather than misread
SCHEME = "torchao Int8WeightOnlyConfig (nn.Linear weights int8, a scale per output channel)"


def quantize(model: nn.Module, keep_fp32: tuple[str, ...] = KEEP_FP32) -> nn.Module:
    """Int8 weight-only quantisation (in place) of ``model``'s linear layers but those named in ``keep_fp32``.

    Raises:
        ExportError: torchao is not installed, or the model has no linear layer to quantise.
    """
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_  # its log noise: finjust.third_party_logs
    except ImportError as exc:
        raise ExportError("the int8 format quantises with torchao, which is not installed: install the torchao "
                          "that requirements.lock pins, or finjust's export extra (pip install -e '.[export]')") \
            from exc  # fmt: skip

    def chosen(module: nn.Module, name: str) -> bool:
        return isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] not in keep_fp32

    if not any(chosen(module, name) for name, module in model.named_modules()):
        raise ExportError(f"{type(model).__name__} has no nn.Linear layer for int8 to quantise (GPT-2's are Conv1D); "
                          "export it as merged, onnx or gguf")  # fmt: skip
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=chosen)
    return model


def load_int8(folder: str | Path) -> PreTrainedModel:
    """Load a folder written by the ``int8`` export (see the module docstring).

    Raises:
        ExportError: the folder holds no int8 export, or one of an earlier finjust's scheme.
    """
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise ExportError(f"{folder} holds no {WEIGHTS}; is it an int8 export?")
    description = _description(folder)
    if description.get("scheme") != SCHEME:
        raise ExportError(f"{folder} was written with another int8 scheme ({description.get('scheme')!r}); export "
                          "the run again: finjust export RUN --format int8")  # fmt: skip
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig.from_pretrained(folder)
    quantize(model.eval(), tuple(description["fp32_layers"]))
    # torchao's int8 tensors load under weights_only (torchao registers them as safe)
    model.load_state_dict(torch.load(folder / WEIGHTS, weights_only=True), strict=True)
    return model.eval()


def _description(folder: Path) -> dict[str, Any]:
    """The folder's int8.json.

    Raises:
        ExportError: it is missing or unreadable.
    """
    try:
        description = json.loads((folder / DESCRIPTION).read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{folder / DESCRIPTION} is missing or damaged ({exc}); export the run again: "
                          "finjust export RUN --format int8") from exc  # fmt: skip
    if not isinstance(description, dict) or not isinstance(description.get("fp32_layers"), list):
        raise ExportError(f"{folder / DESCRIPTION} is damaged (no fp32_layers list); export the run again: "
                          "finjust export RUN --format int8")  # fmt: skip
    return description


class Int8(ExportFormat):
    name = "int8"
    summary = "merged model with int8 linear weights (torchao weight-only)"

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
            "scheme": SCHEME,
            "fp32_layers": list(KEEP_FP32),
            "fp32_parameter_bytes": fp32_bytes,
            "load": "from finjust.export.int8 import load_int8; load_int8(folder)"}, indent=2))  # fmt: skip

    def open(self, folder: Path, source: ExportSource) -> Runtime:
        model = load_int8(folder)
        return TorchRuntime(model, stop_ids_of(model), model.generation_config.pad_token_id, name="torchao int8",
                            tokenizer=folder_tokenizer(folder))  # fmt: skip

    def thresholds(self, quant: str | None) -> ParityThresholds:
        # int8 weights move logits a little; greedy answers may part after some tokens
        return ParityThresholds(min_agreement=0.6)

    def notes(self, folder: Path, quant: str | None) -> dict[str, object]:
        description = json.loads((folder / DESCRIPTION).read_text())
        load = description["load"].replace("load_int8(folder)", f"load_int8({str(folder)!r})")
        return {"load": load, "fp32_parameter_bytes": description["fp32_parameter_bytes"]}


FORMATS.add(Int8.name, Int8())
