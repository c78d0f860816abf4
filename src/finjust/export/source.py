"""What every export starts from: a finished run, its tuned model, the merged model and the parity prompts.

The tuned model is loaded the way training left it (the adapter beside the frozen base, a
QLoRA adapter over its 4-bit base): it is the reference every exported artifact is checked
against. The merged model is built from a second load, because merging folds the adapter into
the base in place and the reference must stay as trained. Export runs on the CPU in fp32:
a full-precision merge, and the runtimes it is compared with (llama.cpp, onnxruntime) run there too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from finjust.data.example import TASK_CHAT, Message
from finjust.data.templates import prompt_ids
from finjust.errors import ExportError
from finjust.eval.evaluate import RunInputs, load_tuned, open_run
from finjust.models.load import LoadedModel, load_model

#: export loads in fp32 on the CPU (see the module docstring)
EXPORT_DTYPE = "float32"
EXPORT_DEVICE = "cpu"


@dataclass
class ExportSource:
    """A finished run opened for export; models are loaded on first use and kept."""

    run: RunInputs
    base: LoadedModel
    prompts: list[list[int]]
    #: the conversations the prompts were rendered from (what the artifact's own chat template renders)
    conversations: list[Sequence[Message]]
    max_new_tokens: int
    _reference: nn.Module | None = field(default=None, repr=False)
    _merged: PreTrainedModel | None = field(default=None, repr=False)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.base.tokenizer

    @property
    def stop_id(self) -> int:
        """The end-of-turn token every exported artifact must stop at (``<|im_end|>`` for ChatML)."""
        return int(self.tokenizer.eos_token_id)

    def fresh_base(self) -> LoadedModel:
        """Another copy of the pretrained model (reloading from the converted cache takes under a second)."""
        return load_model(self.run.recipe.model.name, EXPORT_DTYPE, EXPORT_DEVICE)

    def reference(self) -> nn.Module:
        """The tuned model as trained (adapter not merged): what the artifact must reproduce."""
        if self._reference is None:
            model, _ = load_tuned(self.run, self.base, EXPORT_DTYPE)
            self._reference = model.eval()
        return self._reference

    def merged(self) -> PreTrainedModel:
        """The trained change folded into full-precision base weights (QLoRA: dequantised first).

        Raises:
            ExportError: the run's method cannot merge (prompt or prefix tuning).
        """
        method = self.run.method
        if not method.can_merge:
            raise ExportError(f"method {method.name!r} cannot be merged into the base weights (its virtual tokens "
                              "are not a change of weights); export it with --format adapter")  # fmt: skip
        if self._merged is None:
            model, _ = load_tuned(self.run, self.fresh_base(), EXPORT_DTYPE)
            # every method that merges gives back the transformers model (peft's merge_and_unload unwraps it)
            merged = cast(PreTrainedModel, method.merge(model))
            _drop_quantization_config(merged)
            merged = merged.to(torch.float32).eval()  # type: ignore[arg-type]  # PreTrainedModel.to: see models/load.py
            merged.generation_config.eos_token_id = self.stop_id
            if merged.generation_config.pad_token_id is None:
                merged.generation_config.pad_token_id = self.tokenizer.pad_token_id
            self._merged = merged
        return self._merged


def _drop_quantization_config(model: PreTrainedModel) -> None:
    """A dequantised QLoRA merge still carries bitsandbytes' config; its weights are plain now."""
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    for attribute in ("is_quantized", "is_loaded_in_4bit", "is_loaded_in_8bit"):
        if getattr(model, attribute, False):
            setattr(model, attribute, False)
    model.hf_quantizer = None  # type: ignore[assignment]  # torch types Module.__setattr__ values as Tensor | Module


def open_source(run_dir: str | Path, prompts: int = 8, max_new_tokens: int | None = None) -> ExportSource:
    """Open ``run_dir`` for export with the first ``prompts`` questions of its test split.

    Args:
        run_dir: a run folder written by ``finjust train``.
        prompts: how many test questions the parity check asks.
        max_new_tokens: answer length in the parity check; default the recipe's, at most 64.

    Raises:
        CheckpointError: not a finished run folder, or its test data changed.
        ExportError: the test split has no question to ask.
    """
    run = open_run(run_dir)
    base = load_model(run.recipe.model.name, EXPORT_DTYPE, EXPORT_DEVICE)
    # from the whole test split: run.test stops at the recipe's eval.max_examples, which --prompts may exceed
    questions = [example for example in run.data.splits.test if example.task == TASK_CHAT][:prompts]
    if not questions:
        raise ExportError(f"{run.folder.root}: the test split has no conversation to ask for the parity check")
    ids = [prompt_ids(base.tokenizer, example) for example in questions]
    length = max_new_tokens or min(run.recipe.eval.max_new_tokens, 64)
    return ExportSource(run, base, ids, [example.prompt_messages() for example in questions], length)
