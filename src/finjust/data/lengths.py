"""Token lengths of examples, measured fast enough to profile a million records.

:func:`~finjust.data.templates.tokenize_example` renders and tokenizes each conversation
prefix separately (about 0.5 ms a record). A quality report needs only two numbers per
example: its length and where its first trained token starts. Those come from rendering the
conversation and the prefix before the first trained answer as *text*, then tokenizing the
whole batch at once with offsets (the fast tokenizer spreads a batch over the cores).
A template that does not render a prefix as a text prefix falls back to the exact path.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from finjust.data.example import TASK_CHAT, TASK_PREFERENCE, TASK_TEXT, Example
from finjust.data.templates import IGNORE_INDEX, render_chat, tokenize_example


@dataclass(frozen=True)
class TokenProfile:
    """An example's length in tokens, and the position of its first trained token."""

    length: int
    #: equal to ``length`` when nothing is trained (classification: the whole text is input)
    first_trained: int


def _pieces(example: Example, tokenizer: PreTrainedTokenizerBase) -> list[tuple[str, int]] | None:
    """(rendered text, characters before the first trained token) for each sequence of the example."""
    if example.task == TASK_CHAT:
        first = next(i for i, m in enumerate(example.messages) if m.role == "assistant" and m.weight)
        full = render_chat(tokenizer, example.messages, False)
        prefix = render_chat(tokenizer, example.messages[:first], True)
        return [(full, len(prefix))] if full.startswith(prefix) else None
    if example.task == TASK_PREFERENCE:
        prompt = example.prompt_messages()
        prefix = render_chat(tokenizer, prompt, True)
        pieces = [(render_chat(tokenizer, (*prompt, *answer), False), len(prefix))
                  for answer in (example.chosen, example.rejected)]  # fmt: skip
        return pieces if all(text.startswith(prefix) for text, _ in pieces) else None
    return [(example.messages[0].content, 0)]


def profile_examples(examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase) -> list[TokenProfile]:
    """The :class:`TokenProfile` of each example, measured as training would tokenize it."""
    pieces = [_pieces(example, tokenizer) for example in examples]
    texts = [text for entry in pieces if entry for text, _ in entry]
    offsets = iter(_offsets(tokenizer, texts) if texts else [])
    extra = len(tokenizer("")["input_ids"])  # special tokens the tokenizer adds around raw text
    profiles: list[TokenProfile] = []
    for example, entry in zip(examples, pieces):
        if entry is None:
            profiles.append(_exact(example, tokenizer))
            continue
        measured = []
        for _, prefix_chars in entry:
            spans = next(offsets)
            first = sum(1 for start, _ in spans if start < prefix_chars)
            straddles = any(start < prefix_chars < end for start, end in spans)
            measured.append((len(spans), first, straddles))
        if example.task == TASK_CHAT and any(straddles for *_, straddles in measured):  # see tokenize_example
            profiles.append(_exact(example, tokenizer))
            continue
        length, first, _ = max(measured)
        if example.task == TASK_TEXT:  # trained whole, with the tokenizer's specials and EOS (if it has one)
            profiles.append(TokenProfile(length + extra + int(tokenizer.eos_token_id is not None), 0))
        elif example.task in (TASK_CHAT, TASK_PREFERENCE):
            profiles.append(TokenProfile(length, first))
        else:  # classification text goes through the tokenizer with its special tokens ([CLS] ... [SEP])
            profiles.append(TokenProfile(length + extra, length + extra))
    return profiles


def _offsets(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[tuple[int, int]]]:
    """Character offsets of each text's tokens (no special tokens added), batched."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # the Rust tokenizer directly: transformers' wrapper would convert every encoding to
        # Python lists first, a third of the time at this scale. A copy without the padding and
        # truncation a tokenizer.json may fix (MiniLM's pads every text to 128 tokens), which the
        # wrapper turns off and the backend alone would apply
        if backend.padding is not None or backend.truncation is not None:
            backend = copy.deepcopy(backend)
            backend.no_padding()
            backend.no_truncation()
        return [encoding.offsets for encoding in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]


def _exact(example: Example, tokenizer: PreTrainedTokenizerBase) -> TokenProfile:
    tokens = tokenize_example(example, tokenizer)
    first = next((i for i, label in enumerate(tokens.labels) if label != IGNORE_INDEX), len(tokens.labels))
    return TokenProfile(len(tokens.input_ids), first)
