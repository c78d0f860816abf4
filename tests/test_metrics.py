"""Answer metrics against hand-computed values."""

from __future__ import annotations

import pytest

from finjust.errors import UnknownNameError
from finjust.eval.metrics import METRICS, exact_match, rouge_l, score_answers, token_f1


def test_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("The Fjord costs 2490 EUR!", "fjord costs 2490 eur") == 1.0
    assert exact_match("Fjord costs 2490", "Fjord costs 2491") == 0.0


def test_token_f1_by_hand():
    # prediction tokens: fjord costs 2490; reference: fjord costs 2490 euros today
    # common 3, precision 3/3, recall 3/5 -> F1 = 2 * 1 * 0.6 / 1.6 = 0.75
    assert token_f1("Fjord costs 2490", "Fjord costs 2490 euros today") == pytest.approx(0.75)
    assert token_f1("nothing shared", "fjord") == 0.0


def test_rouge_l_by_hand():
    # LCS of "a b c d" and "a c d e" is "a c d" (3): precision 3/4, recall 3/4 -> 0.75
    assert rouge_l("alpha beta gamma delta", "alpha gamma delta epsilon") == pytest.approx(0.75)


def test_score_answers_averages_and_unknown_metric_lists_valid():
    scores = score_answers(["exact_match"], ["x", "y"], ["x", "z"])
    assert scores == {"exact_match": 0.5}
    with pytest.raises(UnknownNameError, match="exact_match"):
        score_answers(["bleu"], ["x"], ["x"])
    assert {"exact_match", "token_f1", "rouge_l"} <= set(METRICS.names())
