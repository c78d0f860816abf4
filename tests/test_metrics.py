"""Answer metrics against hand-computed values."""

from __future__ import annotations

import pytest

from finjust.errors import EvaluationError, UnknownNameError
from finjust.eval.metrics import METRICS, exact_match, rouge_l, token_f1


def test_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("The Fjord costs 2490 EUR!", "fjord costs 2490 eur") == 1.0
    assert exact_match("Fjord costs 2490", "Fjord costs 2491") == 0.0


def test_an_answer_that_is_only_an_article_is_not_an_empty_answer():
    # a multiple-choice letter: "A" normalised away would make an empty answer exactly right
    assert exact_match("", "A") == 0.0 and token_f1("", "A") == 0.0
    assert exact_match("a.", "A") == 1.0 and exact_match("B", "A") == 0.0


def test_token_f1_by_hand():
    # prediction tokens: fjord costs 2490; reference: fjord costs 2490 euros today
    # common 3, precision 3/3, recall 3/5 -> F1 = 2 * 1 * 0.6 / 1.6 = 0.75
    assert token_f1("Fjord costs 2490", "Fjord costs 2490 euros today") == pytest.approx(0.75)
    assert token_f1("nothing shared", "fjord") == 0.0


def test_rouge_l_by_hand():
    # LCS of "a b c d" and "a c d e" is "a c d" (3): precision 3/4, recall 3/4 -> 0.75
    assert rouge_l("alpha beta gamma delta", "alpha gamma delta epsilon") == pytest.approx(0.75)


def test_rouge_l_reads_words_in_any_script_and_ascii_as_rouge_score_does():
    from rouge_score.tokenizers import DefaultTokenizer

    from finjust.eval.metrics import _UnicodeWords

    assert rouge_l("Москва столица России", "Москва столица России") == 1.0  # rouge-score's own: 0
    assert rouge_l("café crème", "café noir") == pytest.approx(0.5)  # not "caf" + "cr" + "me"
    # a character a token where words are not spaced: LCS 5 of 5 and 8 characters
    assert rouge_l("巴黎是首都", "巴黎是法国的首都") == pytest.approx(2 * 5 / 13)
    text = "Running the 2 fjord_tours, at 14:30 -- isn't it RELAXING? (visits: 3x)"
    assert _UnicodeWords().tokenize(text) == DefaultTokenizer(use_stemmer=True).tokenize(text)


def test_a_metric_averages_its_items_and_an_unknown_one_lists_the_valid():
    assert _items("exact_match", ["x", "y"], ["x", "z"]) == 0.5
    with pytest.raises(UnknownNameError, match="exact_match"):
        METRICS.get("bleu")
    assert {"exact_match", "token_f1", "rouge_l"} <= set(METRICS.names())


def _items(name, predictions, references=None, examples=(), options=None):
    from finjust.eval.metrics import Answers, metric_items

    references = references or [""] * len(predictions)
    return METRICS.get(name).aggregate(metric_items(name, Answers(predictions, references, examples), options))


def test_accuracy_and_macro_f1_by_hand():
    predictions, references = ["pos", "pos", "neg", "neg"], ["pos", "neg", "neg", "neg"]
    assert _items("accuracy", predictions, references) == 0.75
    # pos: tp 1, predicted 2, actual 1 -> F1 2/3; neg: tp 2, predicted 2, actual 3 -> F1 0.8
    assert _items("macro_f1", predictions, references) == pytest.approx((2 / 3 + 0.8) / 2)


def test_fact_recall_counts_the_facts_found():
    from finjust.data.example import Example, Message
    from finjust.eval.metrics import FactRecallOptions

    example = Example((Message("user", "q"), Message("assistant", "a")), meta={"facts": ["2016", "Gothenburg"]})
    assert _items("fact_recall", ["Founded in 2016 in Oslo."], examples=[example],
                  options=FactRecallOptions()) == 0.5  # fmt: skip
    numbers = Example((Message("user", "q"), Message("assistant", "a")), meta={"facts": ["10", "cat", "New York"]})
    assert _items("fact_recall", ["It costs 100 dollars; concatenate in new york."], examples=[numbers],
                  options=FactRecallOptions()) == pytest.approx(1 / 3)  # whole words only  # fmt: skip
    bare = Example((Message("user", "q"), Message("assistant", "a")), source="t.jsonl", line=3)
    with pytest.raises(EvaluationError, match="t.jsonl:3"):
        _items("fact_recall", ["x"], examples=[bare], options=FactRecallOptions())


def test_format_by_regex_and_json_schema():
    from finjust.eval.metrics import FormatOptions

    regex = FormatOptions(regex=r"Ride on!$")
    assert _items("format", ["Yes. Ride on!", "Yes."], options=regex) == 0.5
    schema = FormatOptions(json_schema={"type": "object", "required": ["price"]})
    assert _items("format", ['{"price": 3}', '{"cost": 3}', "not json"], options=schema) == pytest.approx(1 / 3)
    with pytest.raises(EvaluationError):
        _items("format", ["x"])


def test_brand_mention_and_voice():
    from finjust.eval.metrics import BrandMentionOptions, BrandVoiceOptions

    assert _items("brand_mention", ["We at Nordhavn...", "We..."], options=BrandMentionOptions(["nordhavn"])) == 0.5
    voice = BrandVoiceOptions(required=["Ride on!"], banned=["as an ai"], formality="formal")
    answers = ["Fine. Ride on!", "As an AI, I... Ride on!", "It's fine. Ride on!", "Fine."]
    # only the first keeps the voice: the 2nd has a banned phrase, the 3rd a contraction, the 4th no sign-off
    assert _items("brand_voice", answers, options=voice) == 0.25


def test_recipe_validates_metric_names_and_options():
    from finjust.errors import RecipeError
    from finjust.recipe import recipe_from_dict

    raw = {
        "model": {"name": "m"}, "data": {"train": "t.jsonl"}, "output": {"dir": "o"},
        "eval": {"metrics": ["token_f1", "rogue_l"], "metric_options": {"brand_voice": {"requird": ["x"]}}},
    }  # fmt: skip
    with pytest.raises(RecipeError) as caught:
        recipe_from_dict(raw)
    text = str(caught.value)
    assert "did you mean 'rouge_l'" in text and "did you mean 'required'" in text
    raw["eval"] = {"metrics": ["brand_voice"], "metric_options": {"brand_voice": {"required": ["Ride on!"]}}}
    recipe = recipe_from_dict(raw)
    assert recipe.eval.metric_options["brand_voice"].required == ["Ride on!"]
    raw["eval"] = {"metrics": ["brand_voice"], "metric_options": {"brand_voice": {"banned": ["as an AI", ""]}}}
    with pytest.raises(RecipeError, match=r"brand_voice.banned holds an empty phrase, which fails every answer"):
        recipe_from_dict(raw)  # "" is in every answer
    raw["eval"] = {"metrics": ["brand_voice"]}
    with pytest.raises(RecipeError, match=r"brand_voice needs eval.metric_options.brand_voice.required, .banned"):
        recipe_from_dict(raw)  # nothing to check: every answer would score 1
    raw["eval"] = {"metrics": ["token_f1"], "metric_options": {"format": {"regex": "["}}}
    with pytest.raises(RecipeError, match=r"format.regex: '\[' is not a regular expression"):
        recipe_from_dict(raw)  # options of a metric not scored are still checked


def test_unicode_punctuation_and_case_are_normalised_away():
    from finjust.eval.metrics import normalize_answer

    assert exact_match("“Paris”", "Paris") == 1.0 and token_f1("“Paris”", "Paris") == 1.0
    assert exact_match("It’s Paris.", "It's Paris") == 1.0
    assert exact_match("STRASSE", "straße") == 1.0  # casefold, not lower
    assert normalize_answer("«Bonjour», dit-il ¿no?") == "bonjour ditil no"


def test_brand_mention_matches_whole_words_and_refuses_empty_names():
    from finjust.eval.metrics import BrandMentionOptions

    metric = METRICS.get("brand_mention")
    options = BrandMentionOptions(names=["Sky"])
    assert metric.item("Great skyline views", "", options) == 0.0
    assert metric.item("Sky's new plan, by SKY.", "", options) == 1.0
    assert metric.option_problems(BrandMentionOptions(names=[" "])) != []


def test_formal_voice_tells_possessives_from_contractions():
    from finjust.eval.metrics import BrandVoiceOptions

    metric, formal = METRICS.get("brand_voice"), BrandVoiceOptions(formality="formal")
    assert metric.item("The company's policy applies.", "", formal) == 1.0
    assert metric.item("It's our policy.", "", formal) == 0.0
    assert metric.item("We don’t ship abroad.", "", formal) == 0.0


def test_an_empty_answer_keeps_no_brand_voice():
    from finjust.eval.metrics import BrandVoiceOptions

    metric = METRICS.get("brand_voice")
    for options in (BrandVoiceOptions(banned=["As an AI"]), BrandVoiceOptions(formality="formal")):
        assert metric.item("Our shop opens at nine.", "", options) == 1.0
        assert metric.item("", "", options) == metric.item("  \n", "", options) == 0.0


def test_nan_is_not_json_to_the_format_metric():
    from finjust.eval.metrics import _satisfies_schema

    assert _satisfies_schema('{"price": 3}', {"type": "object"})
    assert not _satisfies_schema('{"price": NaN}', {"type": "object"})


def test_test_records_a_metric_cannot_read_stop_the_run_before_the_model_loads(tiny_recipe, capsys):
    from finjust.cli.main import main

    recipe = tiny_recipe(eval={"metrics": ["exact_match", "fact_recall"]})
    assert main(["train", str(recipe)]) == 2
    out, err = capsys.readouterr()
    assert "fact_recall needs a list of strings in field 'facts' of every test record; " in err
    assert "tiny_test.jsonl:1 has None" in err and " more" in err  # the first five named, the rest counted
    assert "loading model" not in out + err
