"""The data section's new keys: validated with suggestions, paths resolved, too_long obeyed."""

from __future__ import annotations

import pytest
import yaml
from conftest import build_tokenizer

from finjust.data.example import TASK_TEXT, Example, Message
from finjust.data.templates import tokenize_examples
from finjust.errors import DataError, RecipeError
from finjust.recipe import load_recipe, recipe_to_dict

TOKENIZER = build_tokenizer()


def _recipe(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "m"}, "data": data, "output": {"dir": "out"}}))
    return path


def test_quality_section_and_sources_load_with_paths_resolved(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, {
        "train": ["a.jsonl", {"path": "b.parquet", "weight": 2}], "format": "completion",
        "columns": {"prompt": "q"}, "quality": {"fail_on": ["leakage", "pii"], "near_duplicate_threshold": 0.9},
    }))  # fmt: skip
    assert recipe.data.train == [str(tmp_path / "a.jsonl"), {"path": str(tmp_path / "b.parquet"), "weight": 2}]
    assert recipe.data.quality.fail_on == ["leakage", "pii"] and recipe.data.quality.near_duplicate_threshold == 0.9
    assert recipe_to_dict(recipe)["data"]["quality"]["fail_on"] == ["leakage", "pii"]
    overridden = load_recipe(_recipe(tmp_path, {"train": "a.jsonl"}), ["data.quality.fail_on=[pii]"])
    assert overridden.data.quality.fail_on == ["pii"]


def test_every_problem_of_the_data_section_is_listed(tmp_path):
    with pytest.raises(RecipeError) as caught:
        load_recipe(_recipe(tmp_path, {
            "train": [{"path": "a.jsonl", "weight": -1}], "columns": {"outptu": "answer"}, "too_long": "cut",
            "stratify_by": "label", "group_by": "doc", "quality": {"fail_on": ["leakge"], "bogus": 1},
        }))  # fmt: skip
    text = str(caught.value)
    needles = ("data.train[0].weight: expected a number > 0", "unknown field 'outptu'; did you mean 'output'?",
               "data.too_long: expected one of truncate, drop, error", "unknown key 'data.quality.bogus'",
               "stratified or grouped, not both", "unknown finding 'leakge'; did you mean 'leakage'?")  # fmt: skip
    assert text.splitlines()[0].endswith(f": {len(needles)} problems:"), text
    for needle in needles:
        assert needle in text, text
    with pytest.raises(RecipeError, match="did you mean 'leakage'"):
        load_recipe(_recipe(tmp_path, {"train": "a.jsonl", "quality": {"fail_on": ["leakge"]}}))
    with pytest.raises(RecipeError, match="stratified or grouped, not both"):
        load_recipe(_recipe(tmp_path, {"train": "a.jsonl", "stratify_by": "label", "group_by": "doc"}))


LONG = Example((Message("user", "tell me " * 30), Message("assistant", "fine")), "f.jsonl", 7)
SHORT = Example((Message("user", "hi"), Message("assistant", "hello")))


def test_too_long_drop_and_error():
    kept, report = tokenize_examples([LONG, SHORT], TOKENIZER, 48, "drop")
    assert len(kept) == 1 and report.dropped_too_long == 1 and report.truncated == 0
    with pytest.raises(DataError, match=r"f.jsonl:7: \d+ tokens, more than data.max_length=48"):
        tokenize_examples([LONG, SHORT], TOKENIZER, 48, "error")


def test_raw_text_is_cut_into_windows_not_truncated():
    text = Example((Message("assistant", "The red kayak costs 13 euros. " * 20),), task=TASK_TEXT)
    kept, report = tokenize_examples([text], TOKENIZER, 32)
    whole = tokenize_examples([text], TOKENIZER, 10_000)[0][0]
    assert report.truncated == 1 and len(kept) > 1
    # every token after the first is predicted exactly once: windows overlap by one token
    assert sum((piece.labels[1:] for piece in kept), []) == whole.labels[1:]
    assert all(len(piece.input_ids) <= 32 for piece in kept)


def test_one_weighted_source_outside_a_list_is_told_to_go_in_one(tmp_path):
    with pytest.raises(RecipeError, match=r"a source with a weight or split is an item of a list: \[\{path"):
        load_recipe(_recipe(tmp_path, {"train": {"path": "a.jsonl", "weight": 2}}))
