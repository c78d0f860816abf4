"""The shipped demo data and every example recipe: valid, and honest about held-out questions."""

from __future__ import annotations

from difflib import SequenceMatcher
from pathlib import Path

import pytest

from finjust.cli.demo import DEMO_RECIPE
from finjust.data.load import load_examples
from finjust.recipe import load_recipe

DATA = DEMO_RECIPE.parent / "data"
RECIPES = sorted((Path(__file__).parent.parent / "examples" / "recipes").glob("*.yaml"))


def _questions(name: str) -> list[str]:
    return [" ".join(e.prompt_text().lower().split()) for e in load_examples(DATA / name)]


def test_no_test_question_appears_in_training():
    train, test = _questions("train.jsonl"), _questions("test.jsonl")
    assert len(train) >= 250 and len(test) >= 50
    assert not set(train) & set(test)
    for question in test:
        closest = max(SequenceMatcher(None, question, t).ratio() for t in train)
        assert closest < 0.8, question


@pytest.mark.parametrize("path", [DEMO_RECIPE, *RECIPES], ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert Path(recipe.data.train).is_file() or "my/" in recipe.data.train
