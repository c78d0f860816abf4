"""Apply the model's chat template and mark which tokens carry loss.

Only assistant answers are trained, including their end-of-turn token so that the tuned
model learns to stop. Spans are found by rendering each conversation prefix with the
template, the same technique LLaMA-Factory and trl use, so any template works as long as
rendering a prefix gives a prefix of the tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from finjust.data.formats import Example, Message
from finjust.errors import DataError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids and labels (``IGNORE_INDEX`` where no loss), aligned position by position."""

    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass(frozen=True)
class TokenizeReport:
    """What tokenizing a split did, so nothing is dropped silently."""

    kept: int
    truncated: int
    dropped_no_trainable_token: int


def _ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], generation_prompt: bool) -> list[int]:
    chat = [{"role": m.role, "content": m.content} for m in messages]
    out = tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=generation_prompt)
    # transformers 5 returns a BatchEncoding here; older versions a plain list
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, example: Example) -> list[int]:
    """Tokens of everything before the final answer, ending with the assistant header."""
    return _ids(tokenizer, example.messages[:-1], generation_prompt=True)


def tokenize_example(example: Example, tokenizer: PreTrainedTokenizerBase) -> TokenizedExample:
    """Template ``example`` and label its trained assistant messages (with their end-of-turn)."""
    full = _ids(tokenizer, example.messages, generation_prompt=False)
    labels = [IGNORE_INDEX] * len(full)
    for index, message in enumerate(example.messages):
        if message.role != "assistant" or not message.weight:
            continue
        prefix = _ids(tokenizer, example.messages[:index], generation_prompt=True)
        start, end = len(prefix), len(_ids(tokenizer, example.messages[: index + 1], generation_prompt=False))
        if full[:start] != prefix:
            raise DataError(
                "the chat template does not render a conversation prefix as a token prefix; "
                "cannot find the answer tokens",
                example.source,
                example.line,
            )
        labels[start:end] = full[start:end]
        _unlabel_after_end_of_turn(labels, start, end, tokenizer.eos_token_id)
    return TokenizedExample(full, labels)


def _unlabel_after_end_of_turn(labels: list[int], start: int, end: int, eos_id: int | None) -> None:
    """Keep the end-of-turn token trained, but not the separator the template puts after it."""
    span = labels[start:end]
    if eos_id in span:
        cut = start + span.index(eos_id) + 1
        labels[cut:end] = [IGNORE_INDEX] * (end - cut)


def tokenize_examples(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[list[TokenizedExample], TokenizeReport]:
    """Tokenize, truncate to ``max_length`` and drop examples left with no trained token."""
    kept: list[TokenizedExample] = []
    truncated = dropped = 0
    for example in examples:
        tokens = tokenize_example(example, tokenizer)
        if len(tokens.input_ids) > max_length:
            truncated += 1
            tokens = TokenizedExample(tokens.input_ids[:max_length], tokens.labels[:max_length])
        if tokens.trained_tokens == 0:
            dropped += 1
            continue
        kept.append(tokens)
    return kept, TokenizeReport(len(kept), truncated, dropped)
