"""``data.max_length`` fitted to the positions a model takes (and to prompt tuning's virtual tokens)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from finjust.errors import MethodError
from finjust.methods.registry import get_method
from finjust.recipe import recipe_from_dict
from finjust.train.max_length import fitted_to_model


def _recipe(method: dict) -> object:
    return recipe_from_dict({"model": {"name": "m"}, "data": {"train": "t.jsonl"}, "method": method,
                             "output": {"dir": "out"}})  # fmt: skip


def _model(positions: int, tokenizer_limit: int = int(1e30)) -> object:
    config = SimpleNamespace(max_position_embeddings=positions)
    return SimpleNamespace(model=SimpleNamespace(config=config), tokenizer=SimpleNamespace(model_max_length=tokenizer_limit))


def test_max_length_is_cut_to_the_positions_left_beside_virtual_tokens():
    warnings = []
    on_event = lambda kind, payload: warnings.append(payload["text"])  # noqa: E731
    assert fitted_to_model(_recipe({"name": "lora"}), _model(4096), on_event).data.max_length == 1024
    assert warnings == []
    assert fitted_to_model(_recipe({"name": "lora"}), _model(512), on_event).data.max_length == 512
    get_method("prompt_tuning")
    tuned = fitted_to_model(_recipe({"name": "prompt_tuning", "virtual_tokens": 20}), _model(512), on_event)
    assert tuned.data.max_length == 492
    assert warnings[-1] == ("data.max_length 1024 is more than the model takes (512 positions less "
                            "method.virtual_tokens 20): examples are cut at 492 tokens")  # fmt: skip
    with pytest.raises(MethodError, match="method.virtual_tokens: 511 leaves no room"):
        fitted_to_model(_recipe({"name": "prompt_tuning", "virtual_tokens": 511}), _model(512), on_event)


def test_a_tokenizer_s_own_limit_counts_where_it_is_lower():
    # RoBERTa's config has 514 positions, two of them reserved; its tokenizer says 512
    fitted = fitted_to_model(_recipe({"name": "lora"}), _model(514, tokenizer_limit=512), lambda kind, payload: None)
    assert fitted.data.max_length == 512


def test_answers_that_would_run_past_the_model_s_positions_are_counted():
    from finjust.train.max_length import answers_past_context

    assert answers_past_context(_model(512), [100, 420, 500], new_tokens=96) == (2, 512)
    assert answers_past_context(_model(512), [100, 416], new_tokens=96) == (0, 512)
    assert answers_past_context(SimpleNamespace(model=SimpleNamespace(config=None)), [9999], 96) == (0, None)


def test_the_base_scoring_warns_when_answers_run_past_the_context(tiny_recipe, monkeypatch, capsys):
    from finjust.cli.main import main

    monkeypatch.setattr("finjust.train.max_length.model_positions", lambda model, tokenizer=None: 40)
    assert main(["train", str(tiny_recipe()), "train.max_steps=1", "eval.retention=false", "eval.max_new_tokens=8"]) == 0
    warned = capsys.readouterr().err
    assert re.search(r"[1-8] of 8 test prompts with eval.max_new_tokens 8 run past the model's 40 positions", warned)
