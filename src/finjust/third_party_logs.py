"""Other packages' log lines that tell a finjust user nothing, silenced (errors still show).

``import finjust`` calls :func:`quiet_third_party_logs` before anything imports torch, peft or
transformers, so no command prints them; each entry says why its lines are noise here.
"""

from __future__ import annotations

import logging

#: logger name -> why its warnings are noise for finjust
NOISE = {
    "bitsandbytes.backends.cpu.ops": "bitsandbytes (which peft imports) logs on CPUs with AVX512-BF16 that an "
    "optional kernel package fetched from the Hugging Face hub is missing; finjust never fetches from a hub and "
    "bitsandbytes falls back to its built-in kernels",
    "torchao": "transformers imports torchao (the int8 export's quantiser) wherever it is installed, and torchao "
    "logs a failure for each of its CUDA kernel libraries on a machine without CUDA; int8 on the CPU needs none",
    "torch.utils._pytree": "torch logs a deprecation for each enum torchao registers with torch.compile, which "
    "is torchao's to change",
}


def quiet_third_party_logs() -> None:
    """Raise each :data:`NOISE` logger's level to errors only."""
    for name in NOISE:
        logging.getLogger(name).setLevel(logging.ERROR)
