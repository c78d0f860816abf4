"""The quality report and gate: each finding is found, the demo data passes, splits match training's."""

from __future__ import annotations

import json
import random

import pytest
from conftest import build_tokenizer

from finjust.cli.demo import DEMO_RECIPE
from finjust.data.check import check_data
from finjust.data.gate import enforce_gate
from finjust.data.prepare import prepare_data
from finjust.data.problems import Problem
from finjust.data.report_html import render_html
from finjust.data.report_text import format_report
from finjust.errors import DataError
from finjust.recipe import data_section_from_dict, load_recipe

TOKENIZER = build_tokenizer()
# templated, yet no two closer than 0.71 Jaccard: clear of the 0.8 threshold by more than the
# MinHash estimate's spread (the longer "How much does the ... in our shop ..." frame reached 0.79)
QUESTIONS = [f"What does the {c} {t} cost this season?" for c in ("red", "blue", "green", "black")
             for t in ("kayak", "tent", "stove", "lamp", "canoe")]  # fmt: skip


def _records(questions):
    return [{"instruction": q, "output": f"It costs {10 + i} euros."} for i, q in enumerate(questions)]


def _check(write_jsonl, train, test=None, tokenizer=TOKENIZER, **data):
    raw = {"train": str(write_jsonl("train.jsonl", train)), "validation_fraction": 0, **data}
    if test is not None:
        raw["test"] = str(write_jsonl("test.jsonl", test))
    else:
        raw.setdefault("test_fraction", 0)
    section = data_section_from_dict(raw)
    return check_data(section, 0, tokenizer, tokenizer_name="tiny"), section


def test_clean_data_passes_with_nothing_found(write_jsonl):
    report, _ = _check(write_jsonl, _records(QUESTIONS[:15]), [{"instruction": "Which colours exist?",
                                                                "output": "Four."}])  # fmt: skip
    assert report.passed
    assert {f.name: f.count for f in report.findings.values() if f.count} == {}
    assert report.sizes == {"train": 15, "validation": 0, "test": 1}


def test_leakage_exact_and_near_is_found_and_fails_the_gate(write_jsonl):
    test = [{"instruction": QUESTIONS[3], "output": "Something else."},  # the same prompt
            {"instruction": QUESTIONS[7].replace("this season", "this seasons"), "output": "x"},  # one letter more
            {"instruction": "Do you ship to Norway?", "output": "Yes."}]  # fmt: skip
    report, _ = _check(write_jsonl, _records(QUESTIONS), test)
    leakage = report.findings["leakage"]
    assert leakage.count == 2 and leakage.status == "fail" and not report.passed
    assert "test.jsonl:1 (test) has the same prompt as" in leakage.items[0] and "train.jsonl:4" in leakage.items[0]
    assert "test.jsonl:2 (test) nearly repeats the prompt of" in leakage.items[1] and "train.jsonl:8" in leakage.items[1]
    with pytest.raises(DataError, match="the data quality gate failed:\n  leakage: 2"):
        enforce_gate(report)


def test_short_prompts_that_differ_in_their_first_letter_are_not_near_copies(write_jsonl):
    train = [{"instruction": word, "output": f"About {word}."} for word in ("cat", "dog", "owl", "elk")]
    report, _ = _check(write_jsonl, train, [{"instruction": "bat", "output": "A flying mammal."}])
    assert report.findings["leakage"].count == 0 and report.findings["near_duplicates"].count == 0


def test_duplicates_near_duplicates_and_conflicts(write_jsonl):
    train = _records(QUESTIONS)
    train.append(dict(train[0]))  # an exact repeat
    train.append({"instruction": QUESTIONS[1] + "!", "output": train[1]["output"]})  # nearly the same record
    train.append({"instruction": QUESTIONS[2], "output": "It is free."})  # same prompt, another answer
    report, _ = _check(write_jsonl, train)
    found = report.findings
    assert found["duplicates"].count == 1 and "train.jsonl:21 (train) repeats" in found["duplicates"].items[0]
    assert found["near_duplicates"].count >= 1 and "train.jsonl:22 (train) ≈" in found["near_duplicates"].items[0]
    assert found["conflicts"].count == 2 and "2 different answers" in found["conflicts"].items[0]
    assert report.passed and {f.name for f in report.warnings()} == {"duplicates", "near_duplicates", "conflicts"}


def test_no_trainable_token_after_truncation_fails_and_too_long_warns(write_jsonl):
    train = _records(QUESTIONS[:4]) + [{"instruction": "word " * 120, "output": "short"}]
    report, _ = _check(write_jsonl, train, max_length=64)
    assert report.findings["no_trainable_tokens"].count == 1 and report.findings["no_trainable_tokens"].status == "fail"
    assert report.findings["too_long"].status == "warn"
    assert "train.jsonl:5 (train)" in report.findings["no_trainable_tokens"].items[0]
    dropped, _ = _check(write_jsonl, train, max_length=64, too_long="drop")
    assert dropped.passed and dropped.findings["no_trainable_tokens"].count == 0
    strict, _ = _check(write_jsonl, train, max_length=64, too_long="error")
    assert strict.findings["too_long"].status == "fail"


def test_token_checks_are_skipped_without_a_tokenizer(write_jsonl):
    report, _ = _check(write_jsonl, _records(QUESTIONS[:4]), tokenizer=None)
    assert report.tokens == {} and report.findings["too_long"].skipped
    assert "token statistics skipped" in format_report(report)


def test_text_records_with_a_field_no_format_reads_are_a_warning_naming_it(write_jsonl):
    train = [{"text": f"{q} It is sold out.", "lable": "stock", "doc": i % 3} for i, q in enumerate(QUESTIONS)]
    report, _ = _check(write_jsonl, train, group_by="doc")  # a misspelt label: raw text, unless warned
    finding = report.findings["unread_fields"]
    assert report.passed and finding.status == "warn" and finding.count == len(QUESTIONS)
    assert finding.items == [f"'lable' in {len(QUESTIONS)} text records (first {write_jsonl('train.jsonl', train)}:1): "
                             "if it holds labels, map it with data.columns: {label: lable}; if answers, name the "
                             "records' fields instruction and output (or prompt and completion)"]  # fmt: skip


def test_label_balance_and_stratified_split(write_jsonl):
    train = [{"text": f"review number {i} of the red kayak", "label": "good" if i < 24 else "bad"} for i in range(26)]
    train.append({"text": "the blue tent review", "label": "odd"})
    report, _ = _check(write_jsonl, train, stratify_by="label", test_fraction=0.25)
    assert report.task == "classification"
    assert report.labels["train"]["good"] == 18 and report.labels["test"]["good"] == 6
    assert report.findings["label_imbalance"].count == 2  # 'bad' and 'odd' are rarer than a tenth of 'good'


def test_labels_differing_only_in_case_fail_the_check_as_training_refuses_them(write_jsonl):
    train = [{"text": f"review number {i} of the red kayak", "label": ["pos", "neg", "Pos"][i % 3]} for i in range(9)]
    report, _ = _check(write_jsonl, train, tokenizer=None)
    finding = report.findings["case_variant_labels"]
    assert finding.count == 1 and finding.status == "fail"
    assert "'pos' (" in finding.items[0] and "'Pos' (" in finding.items[0] and "train.jsonl:3" in finding.items[0]
    train[2]["label"] = train[5]["label"] = train[8]["label"] = "pos"
    assert _check(write_jsonl, train, tokenizer=None)[0].findings["case_variant_labels"].count == 0


def test_classification_data_of_one_label_fails_the_gate(write_jsonl):
    train = [{"text": f"review number {i} of the red kayak", "label": "good"} for i in range(8)]
    report, _ = _check(write_jsonl, train, tokenizer=None)
    assert report.findings["single_label"].count == 1 and report.findings["single_label"].status == "fail"
    assert "all 8 records have the label 'good'" in report.findings["single_label"].items[0]
    train[0]["label"] = "bad"
    assert _check(write_jsonl, train, tokenizer=None)[0].findings["single_label"].count == 0


def test_a_source_that_cannot_be_opened_is_an_error_not_a_finding(write_jsonl, tmp_path):
    good = write_jsonl("good.jsonl", _records(QUESTIONS[:4]))
    (tmp_path / "a.gz").write_bytes(b"")
    section = data_section_from_dict({"train": [str(good), str(tmp_path / "gone.jsonl"), str(tmp_path / "a.gz")]})
    with pytest.raises(DataError) as caught:
        check_data(section, 0)
    assert "2 data sources cannot be read" in str(caught.value)
    assert "gone.jsonl: cannot open" in str(caught.value) and "unknown file type '.gz'" in str(caught.value)


def test_a_token_found_only_inside_a_longer_one_is_not_named():
    from finjust.data.control_tokens import find_control_tokens

    tokens = ("<|im_end|>", "im_end")  # longest first, as control_tokens() gives them
    assert find_control_tokens("a <|im_end|> b", tokens) == ["<|im_end|>"]
    assert find_control_tokens("a <|im_end|> im_end", tokens) == ["<|im_end|>", "im_end"]


def test_special_tokens_transformers_does_not_name_are_control_tokens_too(tiny_model_dir):
    from transformers import AutoTokenizer

    from finjust.data.control_tokens import control_tokens, find_control_tokens

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens(["<|start_header_id|>"], special_tokens=True)  # as Llama 3 marks it: special, unnamed
    tokenizer.add_tokens(["<plain_word>"])  # added, not special: ordinary text
    assert "<|start_header_id|>" not in tokenizer.all_special_tokens
    tokens = control_tokens(tokenizer)
    assert "<|start_header_id|>" in tokens and "<|im_end|>" in tokens and "<plain_word>" not in tokens
    assert find_control_tokens("x<|start_header_id|>user", tokens) == ["<|start_header_id|>"]


def test_text_holding_a_special_token_is_listed_with_its_record(write_jsonl):
    train = _records(QUESTIONS[:6])
    train[2]["output"] = "It ends here<|im_end|> and goes on."
    train[4]["instruction"] = "Ask<|im_end|>\n<|im_start|>assistant"  # every token and every field named
    train[4]["output"] = "<|im_start|>"
    report, _ = _check(write_jsonl, train)
    finding = report.findings["control_tokens"]
    assert finding.count == 2 and finding.status == "warn"
    assert finding.items == [f"{report.files[0]['path']}:3: the assistant text holds '<|im_end|>'",
                             f"{report.files[0]['path']}:5: the user text holds '<|im_start|>', '<|im_end|>'; "
                             "the assistant text holds '<|im_start|>'"]  # fmt: skip
    assert _check(write_jsonl, train, tokenizer=None)[0].findings["control_tokens"].skipped


def test_pii_warns_by_default_fails_on_request_and_redaction_lifts_it(write_jsonl):
    train = _records(QUESTIONS[:4]) + [{"instruction": "Contact?", "output": "Mail ingrid@nordhavn.example."}]
    report, _ = _check(write_jsonl, train)
    assert report.findings["pii"].status == "warn" and report.pii == {"email": 1}
    strict, _ = _check(write_jsonl, train, quality={"fail_on": ["pii"]})
    assert strict.findings["pii"].status == "fail"
    redacted, section = _check(write_jsonl, train, quality={"fail_on": ["pii"], "redact_pii": True})
    assert redacted.passed
    prepared = prepare_data(section, 0)
    assert any(e.reference_answer() == "Mail [EMAIL]." for e in prepared.splits.train)
    assert redacted.sha256["train"] == prepared.manifest["sha256"]["train"]


def test_invalid_records_are_reported_and_fail(write_jsonl):
    report, _ = _check(write_jsonl, _records(QUESTIONS[:3]) + ['{"instruction": "x"', {"instruction": "y",
                                                                                     "output": " "}])  # fmt: skip
    assert report.findings["invalid"].count == 2 and report.findings["empty_answers"].count == 1
    assert not report.passed
    assert report.problems_by_kind == {"malformed": 1, "empty_answer": 1}


def test_demo_data_passes_the_default_gate_and_check_splits_as_training_does():
    recipe = load_recipe(DEMO_RECIPE)
    report = check_data(recipe.data, recipe.train.seed, TOKENIZER)
    assert report.passed, format_report(report)
    assert report.findings["pii"].status == "warn"  # the fictional support e-mail and phone number
    manifest = prepare_data(recipe.data, recipe.train.seed).manifest
    assert report.sha256 == manifest["sha256"] and report.sizes == manifest["sizes"]


def test_report_renders_as_json_text_and_self_contained_html(write_jsonl, tmp_path):
    report, _ = _check(write_jsonl, _records(QUESTIONS), [{"instruction": QUESTIONS[0], "output": "x"}])
    data = json.loads(json.dumps(report.to_dict()))
    assert data["gate"] == {"passed": False, "failed": ["leakage"], "warned": ["conflicts"]}
    assert data["tokens"]["train"]["count"] == 20 and len(data["tokens"]["train"]["edges"]) == 13
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "leakage" in page
    assert "<script" not in page and "http" not in page  # nothing to fetch: it opens offline
    assert "quality gate: FAILED on leakage" in format_report(report)


def test_the_html_page_escapes_what_the_data_holds_once(write_jsonl):
    labels = ["<b>&", "plain"]
    report, _ = _check(write_jsonl, [{"text": f"text {i}", "label": labels[i % 2]} for i in range(12)])
    page = render_html(report)
    assert "<td>&lt;b&gt;&amp;</td>" in page  # the label's row in the labels table
    assert "<b>&" not in page and "&amp;lt;" not in page  # neither raw nor escaped twice


def test_files_of_tasks_that_cannot_mix_are_flagged_and_reported_as_the_commoner_task(write_jsonl):
    records = [{"text": f"review {i}", "label": "good" if i % 2 else "bad"} for i in range(6)]
    records += [{"instruction": "How much is the tent?", "output": "It costs 40 euros."}] * 2
    report, _ = _check(write_jsonl, records)
    assert report.problems_by_kind.get("mixed_formats") and report.task == "classification"


def test_a_problem_of_an_undescribed_kind_is_refused():
    with pytest.raises(ValueError, match="unknown problem kind 'typo'; add it to PROBLEM_KINDS"):
        Problem("typo", "a message", "train.jsonl", 3)


def test_ignore_overrides_the_default_fail_on(write_jsonl):
    test = [{"instruction": QUESTIONS[3], "output": "Something else."}]
    report, _ = _check(write_jsonl, _records(QUESTIONS), test, quality={"ignore": ["leakage"]})
    assert report.findings["leakage"].status == "ignored" and report.passed


def test_malformed_lines_are_listed_after_many_empty_answers(write_jsonl):
    empty = [{"instruction": f"question {i}?", "output": ""} for i in range(25)]
    report, _ = _check(write_jsonl, _records(QUESTIONS[:3]) + empty + ["{bad json"] * 3)
    assert report.findings["invalid"].count == 28
    listed = report.findings["invalid"].items
    assert len(listed) == 3 and all("train.jsonl:" in item for item in listed)


def test_templated_prompts_are_checked_pair_by_pair(write_jsonl):
    # one long shared preamble puts every record in the same LSH buckets: comparing each with its
    # bucket's first record only missed the near-copy of training line 284 in validation
    rng = random.Random(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()
    preamble = "Please answer the following customer support question carefully and politely, citing the policy: "
    train = [{"instruction": preamble + " ".join(rng.choice(words) for _ in range(6)), "output": "ok"}
             for _ in range(300)]  # fmt: skip
    leak = [{"instruction": train[283]["instruction"] + " thanks", "output": "ok"}]
    raw = {"train": str(write_jsonl("train.jsonl", train)), "validation": str(write_jsonl("val.jsonl", leak)),
           "test_fraction": 0}  # fmt: skip
    report = check_data(data_section_from_dict(raw), 0, None)
    leakage = report.findings["leakage"]
    assert leakage.count == 1 and "train.jsonl:284" in leakage.items[0]


def test_candidate_pairs_cover_small_buckets_pair_by_pair_and_large_ones_by_their_first():
    import numpy as np

    from finjust.data.near_dup import candidate_pairs

    def pairs(limit: int) -> list[tuple[int, int]]:
        found = []
        for earlier, later in candidate_pairs(starts, limit):
            found += zip(earlier.tolist(), later.tolist())
        return sorted(found)

    starts = np.array([True, False, False, True, True, False])  # buckets [0 1 2] [3] [4 5]
    assert pairs(64) == [(0, 1), (0, 2), (1, 2), (4, 5)]
    assert pairs(2) == [(0, 1), (0, 2), (4, 5)]  # the 3-member bucket only against its first


def test_a_held_out_label_never_trained_on_fails_the_gate_at_its_record(write_jsonl):
    train = [{"text": f"review {i} of the red kayak", "label": "good" if i % 2 else "bad"} for i in range(12)]
    test = [{"text": "the blue tent", "label": "good"}, {"text": "the green lamp", "label": "meh"}]
    report, _ = _check(write_jsonl, train, test)
    unseen = report.findings["unseen_labels"]
    assert unseen.count == 1 and unseen.status == "fail" and not report.passed
    assert "test.jsonl:2 (test) field 'label': 'meh' never occurs in training" in unseen.items[0]
    report, _ = _check(write_jsonl, train, test, quality={"ignore": ["label_imbalance"]})
    assert not report.passed  # the run would refuse the record whatever the recipe says
