"""Fine-tuning methods: importing this package registers the built-in ones."""

from finjust.methods import full, lora  # noqa: F401  (registration side effect)
from finjust.methods.registry import METHODS, Method, get_method

__all__ = ["METHODS", "Method", "get_method"]
