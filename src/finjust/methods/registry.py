"""The registry of fine-tuning methods: which weights train, how they are saved and merged.

A method never decides the loss (that is an objective's job). Each method declares a
dataclass of its options, which the recipe validates (``method: {name: lora, r: 8}``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from torch import nn

from finjust.errors import MethodError
from finjust.registry import Registry


class Method(ABC):
    """One way of choosing the trainable weights of a pretrained model."""

    name: ClassVar[str]
    #: dataclass of the options under ``method:`` besides ``name``
    options_class: ClassVar[type]
    #: learning rate used when the recipe gives none
    default_lr: ClassVar[float]
    #: True when the pretrained weights themselves train (they then need fp32 master copies)
    trains_base_weights: ClassVar[bool] = False
    #: folder name of the saved result inside a checkpoint or run folder
    artifact_dir: ClassVar[str]
    #: False for methods that add tokens to every sequence (prompt/prefix tuning): their
    #: batches are padded, one example per row, instead of packed
    supports_packing: ClassVar[bool] = True
    #: False where training forwards read a KV cache that a recomputed block would append to
    #: a second time (prefix tuning's trained prefix): no gradient checkpointing then
    supports_recompute: ClassVar[bool] = True
    #: False where the trained change is not a change of weights (virtual tokens):
    #: :meth:`merge` then raises :class:`~finjust.errors.MethodError`
    can_merge: ClassVar[bool] = True
    #: why the method cannot train a classifier (yet); None where it can
    classification_blocker: ClassVar[str | None] = None

    @abstractmethod
    def apply(self, model: nn.Module, options: Any) -> nn.Module:
        """Prepare ``model`` for training: freeze and wrap as the method needs."""

    @abstractmethod
    def save(self, model: nn.Module, folder: Path) -> None:
        """Write only what this method trained into ``folder`` (in a format peft/transformers load)."""

    @abstractmethod
    def load(self, base: nn.Module, folder: Path) -> nn.Module:
        """Rebuild the tuned model from the pretrained ``base`` and a folder written by :meth:`save`."""

    @abstractmethod
    def merge(self, model: nn.Module) -> nn.Module:
        """A plain transformers model with the trained change folded into its weights."""

    def model_load_kwargs(self, options: Any, dtype: torch.dtype) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments for the model this method trains (e.g. 4-bit loading).

        Args:
            options: the method's options.
            dtype: the dtype the model is loaded in (compute dtype for quantised weights).

        Returns:
            Keyword arguments; empty when the plain pretrained model is what trains.
        """
        return {}

    def option_problems(self, options: Any) -> list[str]:
        """What is wrong with ``options`` that needs no model to see (checked with the recipe, so
        that it is listed with the recipe's other problems before any run starts)."""
        return []

    def warnings_for(self, options: Any, device: torch.device) -> list[str]:
        """Sentences worth telling the user before training on ``device`` (e.g. 'this is slow here')."""
        return []


METHODS: Registry[Method] = Registry("method")


def get_method(name: str) -> Method:
    """The registered method called ``name`` (importing the built-in ones first).

    Raises:
        UnknownNameError: no method of that name, listing the registered ones.
    """
    import finjust.methods  # noqa: F401  (registers the built-in methods)

    return METHODS.get(name)


def load_trained(method: Method, base: nn.Module, folder: Path) -> nn.Module:
    """``method.load``, with a damaged or incomplete trained folder (truncated JSON or
    safetensors, a file gone) reported as a MethodError naming it instead of the reader's traceback."""
    try:
        return method.load(base, folder)
    except (OSError, ValueError, SafetensorError) as exc:
        raise MethodError(f"{folder} cannot be loaded ({type(exc).__name__}: {exc}): the run's trained files are "
                          "damaged or incomplete; restore them or train again") from exc  # fmt: skip


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once, 4-bit weights unpacked."""
    seen: set[int] = set()
    trainable = total = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        count = _logical_numel(parameter)
        total += count
        trainable += count if parameter.requires_grad else 0
    return trainable, total


def _logical_numel(parameter: torch.Tensor) -> int:
    """Weights, not storage elements: bitsandbytes packs two 4-bit weights per byte."""
    quant_state = getattr(parameter, "quant_state", None)
    shape = getattr(quant_state, "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else parameter.numel()
