"""Apply the model's chat template and mark which tokens carry loss.

Only assistant answers are trained, including their end-of-turn token so that the tuned
model learns to stop. Spans are found by rendering each conversation prefix with the
template, the same technique LLaMA-Factory and trl use, so any template works as long as
rendering a prefix gives a prefix of the tokens. Raw text (the ``text`` format) is not
templated: its tokens, plus the end-of-sequence token, all carry loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finjust.data.example import SFT_TASKS, TASK_TEXT, Example, Message
from finjust.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
#: what ``data.too_long`` may say about examples longer than ``data.max_length``
TOO_LONG = ("truncate", "drop", "error")


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
    dropped_too_long: int = 0


def chat_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], generation_prompt: bool) -> list[int]:
    """Token ids of ``messages`` rendered with the tokenizer's chat template."""
    chat = [{"role": m.role, "content": m.content} for m in messages]
    out: Any = tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=generation_prompt)
    # transformers 5 returns a BatchEncoding here; older versions a plain list (hence Any: hasattr tells them apart)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, example: Example) -> list[int]:
    """Tokens of everything before the answer an evaluation asks for, ending with the assistant header."""
    return chat_ids(tokenizer, example.prompt_messages(), generation_prompt=True)


def tokenize_example(example: Example, tokenizer: PreTrainedTokenizerBase) -> TokenizedExample:
    """Template ``example`` and label its trained assistant messages (with their end-of-turn).

    Raises:
        DataError: for classification and preference examples, which SFT cannot train on.
    """
    if example.task == TASK_TEXT:
        return _tokenize_text(example.messages[0].content, tokenizer)
    if example.task not in SFT_TASKS:
        raise DataError(f"a {example.task} record cannot be trained with supervised fine-tuning; it needs "
                        f"a {example.task} objective", example.source, example.line)  # fmt: skip
    full = chat_ids(tokenizer, example.messages, generation_prompt=False)
    labels = [IGNORE_INDEX] * len(full)
    for index in _trained_turns(example.messages):
        prefix = chat_ids(tokenizer, example.messages[:index], generation_prompt=True)
        start = len(prefix)
        end = _answer_end(full, chat_ids(tokenizer, example.messages[: index + 1], generation_prompt=False), start)
        if full[:start] != prefix or end is None:
            return _tokenize_in_pieces(example, tokenizer)
        labels[start:end] = full[start:end]
        _unlabel_after_end_of_turn(labels, start, end, tokenizer.eos_token_id)
    return TokenizedExample(full, labels)


def _trained_turns(messages: Sequence[Message]) -> list[int]:
    return [index for index, message in enumerate(messages) if message.role == "assistant" and message.weight]


def _tokenize_in_pieces(example: Example, tokenizer: PreTrainedTokenizerBase) -> TokenizedExample:
    """The conversation tokenized piece by piece, each answer apart from the context before it.

    For an answer whose first characters the tokenizer merges with the end of the assistant
    header (byte-level BPE joins the header's newline with an answer's leading newlines or
    spaces into one token), the whole conversation's tokens have no boundary where the answer
    starts. Generation sees the prompt tokenized alone and continues it, so training does the
    same here: the context's tokens, then the answer's. Needs a template that renders each
    prefix as a text prefix.

    Raises:
        DataError: the template does not render prefixes as text prefixes either.
    """
    messages = example.messages
    full = render_chat(tokenizer, messages, generation_prompt=False)
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for index in _trained_turns(messages):
        prefix = render_chat(tokenizer, messages[:index], generation_prompt=True)
        through = render_chat(tokenizer, messages[: index + 1], generation_prompt=False)
        if not (prefix.startswith(done) and through.startswith(prefix) and full.startswith(through)):
            raise DataError("the chat template does not render a conversation prefix as a prefix, in tokens or in "
                            "text; cannot find the answer tokens", example.source, example.line)  # fmt: skip
        context, answer = _text_ids(tokenizer, prefix[len(done) :]), _text_ids(tokenizer, through[len(prefix) :])
        start = len(ids) + len(context)
        ids += context + answer
        labels += [IGNORE_INDEX] * len(context) + answer
        _unlabel_after_end_of_turn(labels, start, len(ids), tokenizer.eos_token_id)
        done = through
    rest = _text_ids(tokenizer, full[len(done) :])
    return TokenizedExample(ids + rest, labels + [IGNORE_INDEX] * len(rest))


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], generation_prompt: bool) -> str:
    """``messages`` rendered with the tokenizer's chat template, as text."""
    chat = [{"role": m.role, "content": m.content} for m in messages]
    return str(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation_prompt))


def _text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Rendered template text's tokens, as ``apply_chat_template`` tokenizes it (no specials added)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _answer_end(full: list[int], through: list[int], start: int) -> int | None:
    """Where, in the whole conversation ``full``, the answer starting at ``start`` ends; ``through``
    is the conversation rendered up to and including that answer.

    Usually ``through`` is a prefix of ``full``. Some templates render the last assistant turn
    differently (Qwen3 adds an empty think block before it): then ``through`` would run past the
    answer into the next turn. Its tail after the tokens only that position gets is the answer
    as ``full`` holds it; None when no tail matches.
    """
    if full[: len(through)] == through:
        return len(through)
    tail = through[start:]
    for skip in range(1, len(tail)):
        answer = tail[skip:]
        if full[start : start + len(answer)] == answer:
            return start + len(answer)
    return None


def _tokenize_text(text: str, tokenizer: PreTrainedTokenizerBase) -> TokenizedExample:
    """Raw text: the tokenizer's own special tokens, the text, then EOS so the model learns ends."""
    ids = list(tokenizer(text)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return TokenizedExample(ids, list(ids))


def _unlabel_after_end_of_turn(labels: list[int], start: int, end: int, eos_id: int | None) -> None:
    """Keep the end-of-turn token trained, but not the separator the template puts after it."""
    span = labels[start:end]
    if eos_id in span:
        cut = start + span.index(eos_id) + 1
        labels[cut:end] = [IGNORE_INDEX] * (end - cut)


def tokenize_examples(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_length: int, too_long: str = "truncate"
) -> tuple[list[TokenizedExample], TokenizeReport]:
    """Tokenize, handle examples over ``max_length``, and drop those left with no trained token.

    Args:
        examples: conversations or raw text.
        tokenizer: the model's tokenizer, with its chat template.
        max_length: the longest sequence in tokens.
        too_long: ``truncate`` (raw text is cut into ``max_length`` windows instead, so none of
            it is lost), ``drop`` or ``error``.

    Raises:
        DataError: with ``too_long="error"``, naming the first example that is too long.
    """
    kept: list[TokenizedExample] = []
    truncated = dropped = dropped_long = 0
    for example in examples:
        tokens = tokenize_example(example, tokenizer)
        pieces = [tokens]
        if len(tokens.input_ids) > max_length:
            if too_long == "error":
                raise DataError(f"{len(tokens.input_ids)} tokens, more than data.max_length={max_length}; raise "
                                "data.max_length, shorten the record, or set data.too_long to truncate or drop",
                                example.source, example.line)  # fmt: skip
            if too_long == "drop":
                dropped_long += 1
                continue
            truncated += 1
            # windows overlap by one token: a window's first token is only context (labels are
            # shifted inside the model), so it must also end the window before to be trained
            step = max(max_length - 1, 1) if example.task == TASK_TEXT else len(tokens.input_ids)
            pieces = [TokenizedExample(tokens.input_ids[i : i + max_length], tokens.labels[i : i + max_length])
                      for i in range(0, len(tokens.input_ids), step)]  # fmt: skip
        for piece in pieces:
            # a one-token window predicts nothing (labels are shifted by one inside the model)
            if piece.trained_tokens == 0 or len(piece.input_ids) < 2:
                dropped += 1
            else:
                kept.append(piece)
    return kept, TokenizeReport(len(kept), truncated, dropped, dropped_long)
