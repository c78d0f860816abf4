"""Saving and restoring a chosen set of a model's own tensors (BitFit, freeze).

Methods that train some of the pretrained weights in place have no adapter format; they
save just those tensors as ``trained.safetensors`` beside ``trained.json``, which names the
method, each tensor with its shape and dtype, and anything the method changed in the
architecture (``extra``). Loading copies them onto a fresh pretrained model by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from finjust.errors import MethodError

TENSORS_FILE = "trained.safetensors"
DESCRIPTION_FILE = "trained.json"


def save_selected(model: nn.Module, names: Iterable[str], folder: Path, method: str,
                  extra: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Write the parameters called ``names`` and a JSON description of them into ``folder``.

    Args:
        model: the trained model.
        names: parameter names (as in ``model.named_parameters()``).
        folder: created if missing.
        method: the method's registered name, checked again on load.
        extra: method-specific facts needed to rebuild the model (e.g. added biases).
    """
    params = dict(model.named_parameters())
    # copies: safetensors refuses tensors that share memory (tied weights)
    tensors = {name: params[name].detach().contiguous().clone() for name in names}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / TENSORS_FILE))
    description = {
        "method": method,
        "tensors": {name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                    for name, t in tensors.items()},
        "parameters": sum(t.numel() for t in tensors.values()),
        **(extra or {}),
    }  # fmt: skip
    (folder / DESCRIPTION_FILE).write_text(json.dumps(description, indent=2))


def read_description(folder: Path, method: str) -> dict[str, Any]:
    """The JSON written by :func:`save_selected`, checked to belong to ``method``."""
    path = folder / DESCRIPTION_FILE
    if not path.is_file() or not (folder / TENSORS_FILE).is_file():
        raise MethodError(f"{folder} holds no saved {method} weights ({DESCRIPTION_FILE} or {TENSORS_FILE} missing)")
    description = json.loads(path.read_text())
    if description.get("method") != method:
        raise MethodError(f"{folder} was saved by method {description.get('method')!r}, not {method!r}")
    return description


def load_selected(model: nn.Module, folder: Path) -> None:
    """Copy the saved tensors into ``model``'s parameters of the same names (in the parameters' dtype)."""
    tensors = load_file(str(folder / TENSORS_FILE))
    params = dict(model.named_parameters())
    missing = sorted(set(tensors) - set(params))
    if missing:
        raise MethodError(f"{folder}: the model has no parameters {missing[:3]}; is it the same base model?")
    with torch.no_grad():
        for name, tensor in tensors.items():
            if params[name].shape != tensor.shape:
                raise MethodError(f"{folder}: {name} has shape {tuple(tensor.shape)}, "
                                  f"the model's has {tuple(params[name].shape)}")  # fmt: skip
            params[name].copy_(tensor)
