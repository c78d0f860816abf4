"""Greedy answers from a model in some runtime, with the logits each token was chosen from.

The parity check asks the trained model (in PyTorch) and the exported artifact (in its own
runtime) the same prompts and compares what comes back; this module is the common shape
of "a runtime" and the PyTorch one. The llama.cpp and onnxruntime ones live with their formats.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from finjust.data.example import Message
from finjust.data.templates import chat_ids
from finjust.errors import ExportError
from finjust.methods.peft_adapter import model_generate

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class Generation:
    """One greedy answer: its tokens (ending with the stop token when it stopped) and per-token logits."""

    tokens: list[int]
    #: one row per generated token: the scores it was chosen from (empty where the runtime hides them)
    logits: list[np.ndarray]
    seconds: float


class Runtime(ABC):
    """A loaded model in one runtime that answers greedily."""

    #: the runtime's name in reports ("transformers", "llama.cpp", "onnxruntime")
    name: str
    #: the end-of-turn token ids the artifact itself declares it stops at
    stop_ids: set[int]
    #: the tokenizer (with its chat template) the artifact carries, where it carries one
    tokenizer: PreTrainedTokenizerBase | None = None

    @abstractmethod
    def greedy(self, prompt: list[int], max_new_tokens: int, stop_id: int) -> Generation:
        """Answer ``prompt`` greedily, stopping after ``stop_id`` or ``max_new_tokens`` tokens."""

    def prompt_ids(self, messages: Sequence[Message]) -> list[int] | None:
        """``messages`` as the artifact itself turns them into a prompt: its own chat template
        and vocabulary (None where the artifact carries neither)."""
        return None if self.tokenizer is None else chat_ids(self.tokenizer, messages, generation_prompt=True)


class TorchRuntime(Runtime):
    """A PyTorch model (transformers or peft) answering with ``generate`` and its KV cache."""

    def __init__(self, model: nn.Module, stop_ids: set[int], pad_id: int | None, name: str = "transformers",
                 tokenizer: PreTrainedTokenizerBase | None = None) -> None:  # fmt: skip
        self.model = model.eval()
        self.stop_ids = stop_ids
        self.pad_id = pad_id
        self.name = name
        self.tokenizer = tokenizer

    @torch.no_grad()
    def greedy(self, prompt: list[int], max_new_tokens: int, stop_id: int) -> Generation:
        start = time.perf_counter()
        ids = torch.tensor([prompt], dtype=torch.long)
        out = model_generate(
            self.model,
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_id,
            pad_token_id=self.pad_id if self.pad_id is not None else stop_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        tokens = out.sequences[0, len(prompt) :].tolist()
        logits = [row[0].float().numpy() for row in out.logits][: len(tokens)]
        return Generation(tokens, logits, time.perf_counter() - start)


def folder_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """The tokenizer an exported folder carries, as a user loads it.

    Raises:
        ExportError: its files are missing or broken.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # transformers raises many types for missing or broken files
        raise ExportError(f"the export's tokenizer files do not load with AutoTokenizer: {exc}") from exc


def greedy_without_cache(
    next_logits: Callable[[list[int]], np.ndarray], prompt: list[int], max_new_tokens: int, stop_id: int
) -> Generation:
    """Greedy decoding by re-running the whole context each step (runtimes exported without a KV cache)."""
    start = time.perf_counter()
    context, tokens, rows = list(prompt), [], []
    for _ in range(max_new_tokens):
        row = next_logits(context)
        token = int(np.argmax(row))
        rows.append(row)
        tokens.append(token)
        context.append(token)
        if token == stop_id:
            break
    return Generation(tokens, rows, time.perf_counter() - start)
