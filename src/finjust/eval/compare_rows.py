"""The rows of ``finjust compare``: each a way of answering the run's test questions.

Kept apart from :mod:`finjust.eval.compare` so that ``finjust compare --help``, which lists
them, loads no model code.
"""

from __future__ import annotations

from dataclasses import dataclass

from finjust.registry import Registry


@dataclass(frozen=True)
class Strategy:
    """One way of answering: a prompt context (a name in ``CONTEXTS``) and which model answers."""

    description: str
    context: str
    #: True: the run's fine-tuned model answers; False: the pretrained base model
    tuned: bool


STRATEGIES: Registry[Strategy] = Registry("compare row")
STRATEGIES.add("base", Strategy("pretrained model, zero-shot", "none", tuned=False))
STRATEGIES.add("prompt", Strategy("pretrained model, system prompt + k training examples", "few_shot", tuned=False))
STRATEGIES.add("rag", Strategy("pretrained model, top-k retrieved sources in the prompt, cited", "rag", tuned=False))
STRATEGIES.add("tuned", Strategy("fine-tuned model, zero-shot", "none", tuned=True))
STRATEGIES.add("hybrid", Strategy("fine-tuned model + the same retrieved sources", "rag", tuned=True))
DEFAULT_ROWS = ("base", "prompt", "rag", "tuned", "hybrid")
