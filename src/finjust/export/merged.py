"""``merged``: the trained change folded into the base, a full-precision transformers folder.

The folder loads with ``AutoModelForCausalLM.from_pretrained(folder)`` and
``AutoTokenizer.from_pretrained(folder)``; its tokenizer carries the chat template and its
``generation_config.json`` stops at the end-of-turn token (``<|im_end|>`` for ChatML). A
QLoRA run is dequantised before the merge, so the folder needs no bitsandbytes; the parity
report shows what that costs against the 4-bit model that trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from finjust.export.registry import FORMATS, ExportFormat, ParityThresholds
from finjust.export.runtimes import Runtime, TorchRuntime, folder_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from finjust.export.source import ExportSource


def save_merged(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Write ``model`` (safetensors, config, generation config) and ``tokenizer`` into ``folder``."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def stop_ids_of(model: PreTrainedModel) -> set[int]:
    """The token ids a transformers model's generation config stops at."""
    eos = model.generation_config.eos_token_id
    return set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())


class Merged(ExportFormat):
    name = "merged"
    summary = "adapter merged into the base: a full-precision transformers folder with tokenizer"

    def write(self, source: ExportSource, folder: Path, quant: str | None) -> None:
        save_merged(source.merged(), source.tokenizer, folder)

    def open(self, folder: Path, source: ExportSource) -> Runtime:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        return TorchRuntime(model, stop_ids_of(model), model.generation_config.pad_token_id,
                            tokenizer=folder_tokenizer(folder))  # fmt: skip

    def thresholds(self, quant: str | None) -> ParityThresholds:
        # the same arithmetic up to float rounding: every greedy answer must be identical
        return ParityThresholds(min_agreement=1.0, min_exact=1.0, max_logit_diff=1e-3)

    def notes(self, folder: Path, quant: str | None) -> dict[str, object]:
        return {"load": f"AutoModelForCausalLM.from_pretrained({str(folder)!r}); AutoTokenizer.from_pretrained(same)"}


FORMATS.add(Merged.name, Merged())
