"""Fine-tuning methods: importing this package registers the built-in ones."""

import logging

# bitsandbytes, which peft imports when it is installed, logs on CPUs with AVX512-BF16 that an
# optional kernel package fetched from the Hugging Face hub is missing. finjust never fetches
# from a hub and bitsandbytes falls back to its built-in kernels, so the line is only noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from finjust.methods import (  # noqa: E402,F401  (registration side effect)
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
from finjust.methods.registry import METHODS, Method, get_method  # noqa: E402

__all__ = ["METHODS", "Method", "get_method"]
