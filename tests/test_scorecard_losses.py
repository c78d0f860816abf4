"""The scorecard's teacher-forced loss: an item for every test example, and the count it covers."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from conftest import ASSETS

from finjust.data.load import load_examples
from finjust.data.templates import prompt_ids
from finjust.eval.scorecard import build_scorecard, format_scorecard, loss_examples, score_model
from finjust.models.load import load_model
from finjust.train.run import _require_scores_of


def test_examples_whose_answer_is_cut_off_keep_an_empty_loss_item_and_are_counted(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), "float32", "cpu")
    test = load_examples(ASSETS / "tiny_test.jsonl")
    cut = 36  # some prompts are longer: their answers begin beyond it
    beyond = sum(len(prompt_ids(loaded.tokenizer, example)) >= cut for example in test)
    assert 0 < beyond < len(test)
    cfg = SimpleNamespace(generate=True, metrics=["token_f1"], max_new_tokens=2, batch_size=16, metric_options={})
    scores = score_model(loaded.model, loaded.tokenizer, test, cfg, cut, torch.device("cpu"), None)
    assert all(len(items) == len(test) for items in scores.items.values())
    _require_scores_of(scores, len(test))  # what a resume checks saved base scores against
    assert loss_examples(scores) == len(test) - beyond
    card = build_scorecard(test, scores, scores, cfg)
    assert card["loss_examples"] == len(test) - beyond
    assert f"over {len(test) - beyond} of {len(test)} examples" in format_scorecard(card)


def test_the_scorecard_tables_columns_stay_apart_when_a_number_fills_its_width():
    row = {"base": 0.1237, "tuned": 0.1244, "delta": 0.000779, "delta_ci": [-0.0218, 0.0197],
           "verdict": "no significant change"}  # fmt: skip
    card = {"n_test": 12, "comparison": {"token_f1": row}, "answers": []}
    line = next(line for line in format_scorecard(card).splitlines() if line.startswith("token_f1"))
    assert line.split()[:4] == ["token_f1", "0.1237", "0.1244", "+0.000779"]


def test_a_scorecard_too_small_for_any_verdict_says_so():
    row = {"base": 6.43, "tuned": 5.56, "delta": -0.87, "delta_ci": [-1.22, -0.665], "verdict": "no significant change"}
    small, large = ({"n_test": n, "comparison": {"test_loss": row}, "answers": []} for n in (3, 12))
    assert "takes at least 6 examples that changed" in format_scorecard(small)  # the interval alone is not enough
    assert "takes at least" not in format_scorecard(large)


def test_an_empty_answer_is_shown_as_one_not_as_a_blank_line():
    card = {"n_test": 12, "comparison": {}, "answers": [{"question": "Q?", "reference": "A.", "base": "B.",
                                                         "tuned": "\n\n"}]}  # fmt: skip
    assert "  tuned:    (no answer: empty or whitespace only)" in format_scorecard(card)
