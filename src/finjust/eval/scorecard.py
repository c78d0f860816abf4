"""The scorecard: base model against tuned model on the held-out test split.

Teacher-forced loss and perplexity on the reference answers, and generation metrics on the
answers each model writes. Shape of the JSON: ``{"base": {metric: value}, "tuned": {...},
"n_test": N, "answers": [...]}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from finjust.data.formats import Example
from finjust.data.templates import prompt_ids, tokenize_examples
from finjust.eval.generate import generate_answers
from finjust.eval.metrics import score_answers
from finjust.objectives.sft import eval_batches, mean_loss

#: metrics where a lower value is better; all others are higher-is-better
LOWER_IS_BETTER = {"test_loss", "perplexity"}


@dataclass
class ModelScores:
    metrics: dict[str, float]
    answers: list[str]


def score_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    test: Sequence[Example],
    eval_cfg: Any,  # finjust.recipe.EvalSection
    max_length: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    packing: bool = True,
) -> ModelScores:
    """Loss, perplexity and (if ``eval_cfg.generate``) answer metrics of ``model`` on ``test``."""
    tokenized, _ = tokenize_examples(test, tokenizer, max_length)
    loss = mean_loss(model, eval_batches(tokenized, packing), device, autocast_dtype)
    metrics = {"test_loss": loss, "perplexity": math.exp(min(loss, 50.0))}
    answers: list[str] = []
    if eval_cfg.generate:
        prompts = [prompt_ids(tokenizer, example) for example in test]
        answers = generate_answers(
            model, tokenizer, prompts, eval_cfg.max_new_tokens, eval_cfg.batch_size, device, autocast_dtype
        )
        references = [example.reference_answer() for example in test]
        metrics.update(score_answers(eval_cfg.metrics, answers, references))
    return ModelScores(metrics, answers)


def build_scorecard(test: Sequence[Example], base: ModelScores, tuned: ModelScores) -> dict[str, Any]:
    """The scorecard as a JSON-ready dict."""
    answers = [
        {
            "question": example.prompt_text(),
            "reference": example.reference_answer(),
            "base": base.answers[i] if base.answers else None,
            "tuned": tuned.answers[i] if tuned.answers else None,
        }
        for i, example in enumerate(test)
    ]
    return {"base": base.metrics, "tuned": tuned.metrics, "n_test": len(test), "answers": answers}


def format_scorecard(scorecard: dict[str, Any], samples: int = 3) -> str:
    """A readable table of base vs tuned, with a few sample answers."""
    lines = [f"Scorecard on {scorecard['n_test']} held-out test examples", ""]
    lines.append(f"{'metric':<14}{'base':>10}{'tuned':>10}{'change':>10}")
    for name, base in scorecard["base"].items():
        tuned = scorecard["tuned"].get(name, float("nan"))
        better = tuned < base if name in LOWER_IS_BETTER else tuned > base
        mark = "better" if better else ("same" if tuned == base else "worse")
        lines.append(f"{name:<14}{base:>10.4g}{tuned:>10.4g}{tuned - base:>+10.3g}  {mark}")
    for item in scorecard["answers"][:samples]:
        if item["tuned"] is None:
            break
        lines += ["", f"Q: {item['question']}", f"  expected: {item['reference']}"]
        lines += [f"  base:     {_short(item['base'])}", f"  tuned:    {_short(item['tuned'])}"]
    return "\n".join(lines)


def _short(text: str, width: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
