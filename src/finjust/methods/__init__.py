"""Fine-tuning methods: importing this package registers the built-in ones."""

from finjust.methods import (  # noqa: F401  (registration side effect)
    bitfit,
    dora,
    freeze,
    full,
    ia3,
    lora,
    prefix_tuning,
    prompt_tuning,
    qlora,
)
from finjust.methods.registry import METHODS, Method, get_method

__all__ = ["METHODS", "Method", "get_method"]
