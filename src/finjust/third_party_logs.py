"""Other packages' log lines that tell a finjust user nothing, dropped by their text.

``import finjust`` calls :func:`quiet_third_party_logs`, before the lines are logged (when peft,
transformers and torchao first load); only the lines below are dropped, every other record of
those loggers still shows. Each entry says why its line is noise here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass


@dataclass(frozen=True)
class Noise:
    """Records of ``logger`` whose message contains ``text``, and why they say nothing to a finjust user."""

    logger: str
    text: str
    why: str


NOISE = (
    Noise("bitsandbytes.backends.cpu.ops", "kernels-community", "bitsandbytes (which peft imports) logs on CPUs "
          "with AVX512-BF16 that an optional kernel package fetched from the Hugging Face hub is missing; finjust "
          "never fetches from a hub and bitsandbytes falls back to its built-in kernels"),
    Noise("torchao", "Failed to load", "transformers imports torchao (the int8 export's quantiser) wherever it "
          "is installed, and torchao logs each of its CUDA kernel libraries that cannot load, as on any machine "
          "without CUDA; int8 weight-only quantisation needs none of them"),
    Noise("torch.utils._pytree", "is an Enum subclass", "torch logs a deprecation for each enum torchao "
          "registers with torch.compile, which is torchao's to change"),
)


class _DropText(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_third_party_logs() -> None:
    """Drop each :data:`NOISE` line from its logger (once per process)."""
    for noise in NOISE:
        logger = logging.getLogger(noise.logger)
        if not any(isinstance(f, _DropText) and f.text == noise.text for f in logger.filters):
            logger.addFilter(_DropText(noise.text))
