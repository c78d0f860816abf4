"""Raw-text runs (continued pretraining): scored by loss and perplexity over whole documents."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from finjust.cli.main import main
from finjust.errors import EvaluationError
from finjust.eval.compare import compare_run

WORDS = ("red blue green kayak tent shop costs opens nine euros river forest trail map boots lamp stove "
         "rope paddle jacket warm cold early late north south").split()


def _document(seed: int, words: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def test_a_text_run_scores_every_window_of_its_documents(tiny_recipe, write_jsonl):
    train = write_jsonl("train.jsonl", [{"text": _document(seed, 30)} for seed in range(12)])
    test = write_jsonl("test.jsonl", [{"text": _document(100, 400)}, {"text": _document(101, 8)}])  # 400 words: windows
    recipe = tiny_recipe(data={"train": str(train), "test": str(test), "format": "text", "max_length": 64},
                         train={"max_steps": 2})  # fmt: skip
    assert main(["train", str(recipe)]) == 0
    run = Path(yaml.safe_load(recipe.read_text())["output"]["dir"])
    scorecard = json.loads((run / "scorecard.json").read_text())
    assert set(scorecard["comparison"]) == {"test_loss", "perplexity"}  # nothing to answer
    items = json.loads((run / "base_scores.json").read_text())["items"]["test_loss"]
    assert len(items) == 2 and items[0][1] > 3 * 64  # the long document's tokens, all its windows
    with pytest.raises(EvaluationError, match="raw text"):
        compare_run(run)
