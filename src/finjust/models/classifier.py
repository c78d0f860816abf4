"""Load a pretrained encoder or decoder with a classification head on top.

``AutoModelForSequenceClassification`` adds a head of the right width, freshly initialised
(seed the RNG before loading for a reproducible head). An encoder's head reads the pooled
first token; a decoder's reads the last token that is not padding, which is why the config
must carry the tokenizer's pad id.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from finjust.errors import ModelLoadError
from finjust.models.load import (
    LoadedModel,
    choose_device,
    choose_dtype,
    load_tokenizer,
    resolve_model_folder,
    without_progress_bars,
)


def load_classifier(
    name: str, id2label: dict[int, str], dtype: str = "auto", device: str = "auto"
) -> LoadedModel:
    """A pretrained model (shipped short name, folder or GGUF) with an untrained ``len(id2label)``-way head.

    Args:
        name: a shipped model or encoder (``all-minilm-l6-v2``), a Hugging Face folder or a ``.gguf`` file.
        id2label: the label of each class id, stored in the model config.
        dtype: ``auto``, ``bfloat16`` or ``float32``.
        device: ``auto``, ``cpu`` or ``cuda``.
    """
    folder = resolve_model_folder(name)
    return load_classifier_folder(folder, id2label, dtype, device)


def load_classifier_folder(
    folder: Path, id2label: dict[int, str], dtype: str = "auto", device: str = "auto"
) -> LoadedModel:
    """As :func:`load_classifier`, from a Hugging Face folder (also one a trained classifier was saved to)."""
    target = choose_device(device)
    torch_dtype = choose_dtype(dtype, target)
    tokenizer = load_tokenizer(folder, chat=False)
    if tokenizer.pad_token_id is None:
        raise ModelLoadError(f"the tokenizer in {folder} has neither a pad nor an end-of-sequence token; "
                             "a classifier needs one to pad batches")  # fmt: skip
    try:
        with without_progress_bars(), _head_not_reported():
            model: PreTrainedModel = AutoModelForSequenceClassification.from_pretrained(
                folder, dtype=torch_dtype, num_labels=len(id2label), id2label=id2label,
                label2id={label: i for i, label in id2label.items()}, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
    except Exception as exc:  # transformers raises many types, e.g. for a model with no classification class
        raise ModelLoadError(f"cannot load the model in {folder} with a classification head: {exc}") from exc
    # transformers wraps PreTrainedModel.to with functools.wraps(nn.Module.to), which mypy reads as unbound
    return LoadedModel(model.to(target), tokenizer, folder, target, torch_dtype)  # type: ignore[arg-type]


@contextmanager
def _head_not_reported() -> Iterator[None]:
    """transformers logs a LOAD REPORT table (on stderr, with terminal colours) whose rows are the
    new head's weights, missing from the checkpoint by design: not shown while inside."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def head_modules(model: torch.nn.Module) -> list[str]:
    """The top-level modules of a transformers sequence classifier outside its pretrained
    backbone (``base_model_prefix``): the head ``from_pretrained`` creates with random weights,
    whatever it is called. Beside ``classifier`` or ``score``, DistilBERT's has a
    ``pre_classifier`` and DeBERTa's a ``pooler``, which no checkpoint of the backbone holds."""
    inner = _unwrapped(model)
    backbone = getattr(inner, "base_model_prefix", "")
    return [name for name, child in inner.named_children()
            if name != backbone and next(child.parameters(), None) is not None]  # fmt: skip


def head_module_paths(model: torch.nn.Module) -> list[str]:
    """Every module inside the head (:func:`head_modules`), by its path: what adapters must leave
    to the head's own training (peft's ``exclude_modules`` matches whole paths)."""
    heads = set(head_modules(model))
    return [name for name, _ in _unwrapped(model).named_modules() if name.split(".", 1)[0] in heads]


def unfreeze_head(model: torch.nn.Module) -> list[str]:
    """Make the classification head (:func:`head_modules`) train, whatever the method froze.

    The head starts random, so it must train under every method. peft methods already train a
    copy of it (``modules_to_save``); its frozen original (``original_module``) stays frozen.

    Returns:
        The names of the head's trainable parameters.
    """
    inner = _unwrapped(model)
    prefix = next(name for name, module in model.named_modules() if module is inner)  # "" or peft's path to it
    heads = set(head_modules(model))
    names = []
    for name, parameter in model.named_parameters():
        path = name.removeprefix(f"{prefix}.") if prefix else name
        if path.split(".", 1)[0] in heads and ".original_module." not in f".{path}":
            parameter.requires_grad_(True)
            names.append(name)
    return names


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft model, or ``model`` itself."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model
