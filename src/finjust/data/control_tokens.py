"""Control tokens in message text: a tokenizer's special tokens written out as text.

A tokenizer turns the text of each of its special tokens into that token wherever it
appears, inside a message too: a message holding ``<|im_end|>`` ends its turn there, and what
follows reads as a turn of its own. OpenAI's API treats such text as plain text; a chat
template rendered by transformers does not. So a training record holding one trains a turn
structure it does not mean, and a served request can open turns of its own; the data check
lists such records and the server refuses such messages.
"""

from __future__ import annotations

import weakref

from transformers import PreTrainedTokenizerBase

_CACHE: weakref.WeakKeyDictionary[PreTrainedTokenizerBase, tuple[str, ...]] = weakref.WeakKeyDictionary()


def control_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """The text of ``tokenizer``'s special tokens (end of turn, start of turn, padding...), longest first."""
    if tokenizer not in _CACHE:
        # transformers 5's all_special_tokens holds the named ones (bos, eos, pad...) only; the added
        # tokens marked special (SmolLM2's <file_sep>, Llama 3's <|start_header_id|>) tokenize whole too
        added = [token.content for token in tokenizer.added_tokens_decoder.values() if token.special]
        specials = {token for token in (*tokenizer.all_special_tokens, *added) if token and token.strip()}
        _CACHE[tokenizer] = tuple(sorted(specials, key=lambda token: (-len(token), token)))
    return _CACHE[tokenizer]


def find_control_tokens(text: str, tokens: tuple[str, ...]) -> list[str]:
    """Every one of ``tokens`` (see :func:`control_tokens`) that ``text`` holds, longest first; a
    token found only inside a longer one found before it is not named."""
    found = []
    for token in tokens:
        if token in text:
            found.append(token)
            text = text.replace(token, "\0")  # what a tokenizer would make of it: one token
    return found
