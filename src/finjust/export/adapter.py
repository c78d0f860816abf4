"""``adapter``: the trained artifact as training saved it, with its tokenizer.

For peft methods (LoRA, DoRA, QLoRA, IA3, prompt and prefix tuning) this is peft's own
folder: ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), folder)``
loads it without finjust. BitFit and freeze save only their trained tensors
(``trained.safetensors``), full fine-tuning a whole model; finjust's method ``load`` reads those.
The only format for methods that cannot merge (prompt and prefix tuning).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from finjust.export.registry import FORMATS, ExportFormat, ParityThresholds
from finjust.export.runtimes import Runtime, TorchRuntime, folder_tokenizer

if TYPE_CHECKING:
    from finjust.export.source import ExportSource


class Adapter(ExportFormat):
    name = "adapter"
    summary = "the trained adapter folder (peft's format for peft methods) with its tokenizer"
    needs_merge = False

    def write(self, source: ExportSource, folder: Path, quant: str | None) -> None:
        _copy_contents(source.run.artifact, folder)
        if not (folder / "tokenizer_config.json").is_file():
            source.tokenizer.save_pretrained(folder)

    def open(self, folder: Path, source: ExportSource) -> Runtime:
        exported = dataclasses.replace(source.run, artifact=folder)
        from finjust.eval.evaluate import load_tuned
        from finjust.export.source import EXPORT_DTYPE

        model, _ = load_tuned(exported, source.fresh_base(), EXPORT_DTYPE)
        # the stop token the folder's own tokenizer declares, so the parity check can catch a wrong one
        tokenizer = folder_tokenizer(folder)
        return TorchRuntime(model, {tokenizer.eos_token_id}, source.tokenizer.pad_token_id, name="transformers+peft",
                            tokenizer=tokenizer)  # fmt: skip

    def thresholds(self, quant: str | None) -> ParityThresholds:
        return ParityThresholds(min_agreement=1.0, min_exact=1.0, max_logit_diff=1e-4)

    def notes(self, folder: Path, quant: str | None) -> dict[str, object]:
        notes: dict[str, object] = {
            "load": f"PeftModel.from_pretrained(BASE, {str(folder)!r}) for peft methods; for bitfit/freeze/full: "
                    f"finjust.methods.get_method(METHOD).load(BASE, Path({str(folder)!r})); BASE: "
                    "finjust.models.load_model(BASE_MODEL, dtype='float32').model (bitfit's trained biases load "
                    "in fp32, which a bf16 base would mix into its matmuls), BASE_MODEL and METHOD as "
                    "base_model and method say here"}  # fmt: skip
        if _peft_type(folder) in VIRTUAL_TOKEN_TYPES:
            notes["generate"] = ("finjust.methods.peft_adapter.model_generate(model, **generate_arguments), not "
                                 "model.generate: with transformers 5, peft 0.21's own generate ignores a prefix and "
                                 "repeats prompt tuning's virtual tokens before every new token")  # fmt: skip
        return notes


#: peft types whose generation needs finjust's ``model_generate`` (see methods/peft_adapter.py)
VIRTUAL_TOKEN_TYPES = ("PREFIX_TUNING", "PROMPT_TUNING")


def _peft_type(folder: Path) -> str | None:
    try:
        found = json.loads((folder / "adapter_config.json").read_text()).get("peft_type")
    except (OSError, ValueError, AttributeError):  # not a peft folder (bitfit, freeze, full), or damaged
        return None
    return found if isinstance(found, str) else None


FORMATS.add(Adapter.name, Adapter())


def _copy_contents(source: Path, target: Path) -> None:
    """Copy the files under ``source`` into ``target`` with fresh permissions: copytree copies the
    modes too, and a run made read-only gave a read-only temp folder the export could then neither
    finish nor remove."""
    for file in sorted(source.rglob("*")):
        if file.is_file():
            copied = target / file.relative_to(source)
            copied.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, copied)
