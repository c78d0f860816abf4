"""Catastrophic forgetting: how much general knowledge a tuned model kept.

The probe ships with finjust and has nothing to do with any domain: perplexity on passages
of a public-domain encyclopedia article (``probes/general_text.jsonl``) and greedy answers
to general questions with checkable answers (``probes/general_qa.jsonl``). Retention is the
tuned model's score relative to the base model's: base perplexity / tuned perplexity, and
tuned accuracy / base accuracy; the overall retention is the smaller of the two, so a
guard set on it protects both. ``probes/general_replay.jsonl`` holds *other* passages of
the same text, for replay during training; probe and replay never share a passage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from finjust.data.example import Message
from finjust.data.templates import TokenizedExample, chat_ids
from finjust.eval.generate import generate_answers
from finjust.eval.metrics import mentions
from finjust.objectives.sft import eval_batches, mean_loss, perplexity

PROBES = Path(__file__).resolve().parent / "probes"
#: passages are cut to this many tokens: enough context, cheap enough to run at every eval
PASSAGE_TOKENS = 160
ANSWER_TOKENS = 32


@dataclass(frozen=True)
class Probe:
    texts: list[str]
    questions: list[str]
    answers: list[list[str]]


@lru_cache(maxsize=1)
def load_probe() -> Probe:
    """The shipped general-knowledge probe."""
    texts = [json.loads(line)["text"] for line in _lines("general_text.jsonl")]
    qa = [json.loads(line) for line in _lines("general_qa.jsonl")]
    return Probe(texts, [q["question"] for q in qa], [q["answers"] for q in qa])


def replay_texts() -> list[str]:
    """General passages for replay (disjoint from the probe)."""
    return [json.loads(line)["text"] for line in _lines("general_replay.jsonl")]


def _lines(name: str) -> list[str]:
    return [line for line in (PROBES / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def text_examples(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_tokens: int) -> list[TokenizedExample]:
    """Plain language-modelling examples: every token of the text carries loss."""
    examples = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])[:max_tokens]
        examples.append(TokenizedExample(ids, list(ids)))
    return examples


def is_correct(prediction: str, accepted: list[str]) -> bool:
    """True when any accepted answer appears in the prediction as whole words (case ignored)."""
    return any(mentions(prediction, answer) for answer in accepted)


def probe_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    batch_size: int = 16,
    packing: bool = True,
) -> dict[str, float]:
    """General-text perplexity and general-question accuracy of ``model``."""
    probe = load_probe()
    batches = eval_batches(text_examples(tokenizer, probe.texts, PASSAGE_TOKENS), packing)
    text_perplexity = perplexity(mean_loss(model, batches, device, autocast_dtype))
    prompts = [chat_ids(tokenizer, [Message("user", q)], generation_prompt=True) for q in probe.questions]
    replies = generate_answers(model, tokenizer, prompts, ANSWER_TOKENS, batch_size, device, autocast_dtype,
                               equal_lengths=not packing)  # virtual-token methods cannot be left-padded
    accuracy = sum(is_correct(r, a) for r, a in zip(replies, probe.answers, strict=True)) / len(replies)
    return {"general_perplexity": text_perplexity, "general_qa_accuracy": accuracy}


def retention(base: dict[str, float], tuned: dict[str, float]) -> dict[str, Any]:
    """Tuned relative to base per probe (1.0 = nothing lost), and the overall (smaller) value."""
    text = base["general_perplexity"] / tuned["general_perplexity"]
    qa = tuned["general_qa_accuracy"] / base["general_qa_accuracy"] if base["general_qa_accuracy"] else 1.0
    return {
        "general_text": {"base": base["general_perplexity"], "tuned": tuned["general_perplexity"],
                         "retention": text},
        "general_qa": {"base": base["general_qa_accuracy"], "tuned": tuned["general_qa_accuracy"],
                       "retention": qa},
        "retention": min(text, qa),
    }  # fmt: skip
