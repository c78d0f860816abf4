"""What the server answers with: a trained run folder's tuned model, or an exported model folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from finjust.errors import ModelLoadError, UnknownNameError
from finjust.eval.evaluate import load_tuned, open_trained
from finjust.eval.generate import lora_mergeable, merged_lora
from finjust.export.registry import recorded_result
from finjust.methods.registry import get_method
from finjust.models.load import load_model
from finjust.train.max_length import model_positions, virtual_tokens
from finjust.train.run import compute_dtype, training_dtype

#: context length assumed where neither the model's config nor its tokenizer says
_DEFAULT_CONTEXT = 2048


@dataclass
class ServedModel:
    """A model ready to generate, with the facts the server checks requests against."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    autocast_dtype: torch.dtype | None
    name: str
    #: most tokens (prompt + answer) the model attends over
    context: int
    #: virtual-token methods (prompt/prefix tuning) need unpadded batches: only equal-length prompts batch
    equal_lengths: bool = False
    #: the run's ``data.system_prompt``: put before a conversation that has no system message, as
    #: the run trained and scored its examples
    system_prompt: str | None = None


def load_served_model(path: str | Path, name: str | None = None) -> ServedModel:
    """Load ``path``: an exported model folder (``config.json``) or a finjust run folder (``recipe.yaml``).

    A run folder loads exactly as ``finjust eval`` does: the recipe's base model, then the
    method's trained artifact on top.

    Raises:
        ModelLoadError: ``path`` is neither kind of folder, or the model cannot be loaded.
        CheckpointError: a run folder without a trained artifact.
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelLoadError(f"{folder} does not exist: give a run folder (`finjust train`) or an exported "
                             "model folder (`finjust export`)")  # fmt: skip
    exported = recorded_result(folder)
    _refuse_unservable_export(folder, exported)
    # an exported folder may carry its recipe too; its config.json makes it a plain model
    if (folder / "config.json").is_file():
        loaded = load_model(str(folder))
        prompt = (exported or {}).get("system_prompt")  # the run's data.system_prompt, for a finjust export
        served = ServedModel(loaded.model, loaded.tokenizer, loaded.device, None, "",
                             _context(loaded.model, loaded.tokenizer),
                             system_prompt=prompt if isinstance(prompt, str) else None)  # fmt: skip
    elif (folder / "recipe.yaml").is_file():
        served = _from_run(folder)
    else:
        raise ModelLoadError(
            f"{folder} is neither an exported model folder (no config.json) nor a finjust run folder "
            "(no recipe.yaml); pass a folder written by `finjust train` or `finjust export`"
        )
    served.name = name or _default_name(folder.resolve())
    served.model.eval()
    return served


#: export formats a transformers model folder comes out of, which this server loads
SERVABLE_EXPORTS = ("merged",)
#: where the other formats are served
_SERVED_ELSEWHERE = {
    "gguf": "a GGUF file serves with llama.cpp (`llama-server -m FILE.gguf`) or Ollama (the Modelfile beside it)",
    "onnx": "an ONNX export runs with onnxruntime",
}


def _refuse_unservable_export(path: Path, exported: dict[str, Any] | None) -> None:
    """An export this server cannot load (adapter, int8, gguf, onnx; ``exported``: its export.json)
    gets a message naming what it can.

    Raises:
        ModelLoadError: ``path`` is such an export.
    """
    if path.suffix == ".gguf":
        fmt, run = "gguf", None
    elif exported is not None and isinstance(exported.get("format"), str):
        fmt, run = exported["format"], exported.get("run")
    else:
        return  # no export, or a damaged export.json: the load below says what is wrong
    if fmt in SERVABLE_EXPORTS:
        return
    source = f"the run folder it came from ({run})" if run else "the run folder it came from"
    elsewhere = f"; {_SERVED_ELSEWHERE[fmt]}" if fmt in _SERVED_ELSEWHERE else ""
    merged = "" if _unmergeable(exported) else " or a merged export (`finjust export RUN --format merged`)"
    raise ModelLoadError(f"{path} is an export in the {fmt!r} format, which finjust serve does not load: serve "
                         f"{source}{merged}{elsewhere}")  # fmt: skip


def _unmergeable(exported: dict[str, Any] | None) -> bool:
    """Whether the export's method cannot merge (prompt and prefix tuning): no merged export exists for it."""
    name = (exported or {}).get("method")
    try:
        return isinstance(name, str) and not get_method(name).can_merge
    except UnknownNameError:
        return False


def _default_name(folder: Path) -> str:
    """The folder's name; for an export in its default place (``RUN/export/merged``), the run's."""
    if folder.parent.name == "export" and (folder.parent.parent / "recipe.yaml").is_file():
        return folder.parent.parent.name
    return folder.name


def _context(model: nn.Module, tokenizer: Any, virtual: int = 0) -> int:
    """Tokens a request may hold: the model's positions as training reads them, less a prompt- or
    prefix-tuned run's virtual tokens, which take positions before every prompt."""
    return (model_positions(model, tokenizer) or _DEFAULT_CONTEXT) - virtual


def _from_run(folder: Path) -> ServedModel:
    run = open_trained(folder)
    loaded = load_model(run.recipe.model.name, training_dtype(run.recipe, run.method), run.recipe.model.device)
    autocast = compute_dtype(run.recipe, loaded)
    model, loaded = load_tuned(run, loaded)
    if lora_mergeable(model):  # peft's unmerged layers run two more matmuls a layer at every token (1.7x slower)
        model = merged_lora(model)
    return ServedModel(model, loaded.tokenizer, loaded.device, autocast, "",
                       _context(model, loaded.tokenizer, virtual_tokens(run.recipe)),
                       equal_lengths=not run.method.supports_packing, system_prompt=run.recipe.data.system_prompt)
