"""The registry of fine-tuning methods: which weights train, how they are saved and merged.

A method never decides the loss (that is an objective's job). Each method declares a
dataclass of its options, which the recipe validates (``method: {name: lora, r: 8}``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

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


METHODS: Registry[Method] = Registry("method")


def get_method(name: str) -> Method:
    """The registered method called ``name`` (importing the built-in ones first)."""
    import finjust.methods  # noqa: F401  (registers the built-in methods)

    return METHODS.get(name)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable, total
