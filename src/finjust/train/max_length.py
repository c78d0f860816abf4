"""``data.max_length`` fitted to the model: no example longer than the positions it has.

The recipe's default (1,024 tokens) is more than some bases take: the shipped MiniLM encoder
has 512 learned positions, GPT-2-style models ``n_positions``, and prompt and prefix tuning
put their virtual tokens in front of every example. A longer example would fail deep inside
the model (``The expanded size of the tensor (600) must match ... (512)``, ``index out of
range``) after the base is scored; rotary models would run past their trained context unwarned. So
examples are cut at what the model takes, as ``data.max_length`` would cut them, with a warning.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from finjust.errors import MethodError
from finjust.events import EventHandler
from finjust.recipe import Recipe

#: tokenizers without a limit of their own report a huge ``model_max_length`` (1e30)
_NO_LIMIT = 10**7


def model_positions(model: nn.Module, tokenizer: Any = None) -> int | None:
    """How many positions ``model`` takes, where its config (or its tokenizer: RoBERTa's config
    says 514, two of them reserved) says; the smaller where both do."""
    config = getattr(model, "config", None)
    found = [value for name in ("max_position_embeddings", "n_positions")
             if isinstance(value := getattr(config, name, None), int) and value > 0][:1]  # fmt: skip
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _NO_LIMIT:
        found.append(limit)
    return min(found) if found else None


def virtual_tokens(recipe: Recipe) -> int:
    """Positions the recipe's method puts before every example (prompt and prefix tuning), else 0."""
    return getattr(recipe.method.options, "virtual_tokens", 0) or 0


def fitted_to_model(recipe: Recipe, loaded: Any, on_event: EventHandler) -> Recipe:
    """``recipe`` with ``data.max_length`` lowered to what the loaded model (``.model`` and
    ``.tokenizer``) takes, less the method's virtual tokens, with a warning where it was more.

    Raises:
        MethodError: the virtual tokens alone fill the model's positions.
    """
    positions = model_positions(loaded.model, getattr(loaded, "tokenizer", None))
    if positions is None:
        return recipe
    virtual = virtual_tokens(recipe)
    room = positions - virtual
    if room < 2:
        raise MethodError(f"method.virtual_tokens: {virtual} leaves no room for an example in the model's "
                          f"{positions} positions; use at most {positions - 2}")  # fmt: skip
    if recipe.data.max_length <= room:
        return recipe
    less = f" less method.virtual_tokens {virtual}" if virtual else ""
    on_event("warning", {"text": f"data.max_length {recipe.data.max_length} is more than the model takes "
                         f"({positions} positions{less}): examples are cut at {room} tokens"})  # fmt: skip
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, max_length=room))


def answers_past_context(loaded: Any, prompt_lengths: list[int], new_tokens: int) -> tuple[int, int | None]:
    """How many prompts leave fewer than ``new_tokens`` positions for their answer, and the
    model's positions (None where it does not say): such answers are generated past the
    context the model was trained on."""
    positions = model_positions(loaded.model, getattr(loaded, "tokenizer", None))
    if positions is None:
        return 0, None
    return sum(length + new_tokens > positions for length in prompt_lengths), positions
