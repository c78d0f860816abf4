"""``finjust compare``: five rows on the tiny model, retrieval, and the augmented prompts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ASSETS, build_tokenizer, needs_minilm

from finjust.cli.main import main
from finjust.data.example import Example, Message
from finjust.data.load import load_examples
from finjust.data.templates import tokenize_example
from finjust.errors import EvaluationError, FinjustError
from finjust.eval.augment import CONTEXTS, ContextInputs, augment_example, cites_a_source
from finjust.eval.compare import CompareOptions, _versus_base, compare_run, format_comparison
from finjust.eval.retrieval import Retriever, chunk_text, documents_from_examples, documents_from_folder, load_encoder
from finjust.eval.scorecard import ModelScores

ROW_KEYS = {"name", "description", "model", "metrics", "prompt_tokens", "latency_s", "peak_rss_mb", "peak_gpu_mb",
            "one_off", "citation_rate", "answers", "vs_base", "loss_examples"}  # fmt: skip
METRICS = {"test_loss", "perplexity", "exact_match", "token_f1", "rouge_l"}


class WordHashEncoder:
    """A deterministic stand-in for MiniLM: hashed bag of lower-cased words, L2-normalised."""

    dims = 256

    def encode(self, texts):
        vectors = torch.zeros((len(texts), self.dims))
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                vectors[row, sum(map(ord, word)) * 31 % self.dims] += 1.0
        return torch.nn.functional.normalize(vectors, dim=-1)


@pytest.fixture()
def trained_run(tiny_recipe, tmp_path) -> Path:
    # retention is not what these tests are about; its probe would double the run's time
    assert main(["train", str(tiny_recipe()), "train.max_steps=2", "eval.retention=false"]) == 0
    return tmp_path / "run"


@needs_minilm
def test_compare_produces_all_five_rows(trained_run, tmp_path, capsys):
    out, page = tmp_path / "compare.json", tmp_path / "compare.html"
    assert main(["compare", str(trained_run), "--json", str(out), "--html", str(page), "--max-examples", "4"]) == 0
    result = json.loads(out.read_text())
    assert json.loads((trained_run / "compare.json").read_text()) == result
    assert [row["name"] for row in result["rows"]] == ["base", "prompt", "rag", "tuned", "hybrid"]
    assert result["n_test"] == 4 and result["headline"] == "exact_match"
    assert len(result["questions"]) == 4
    for row in result["rows"]:
        assert set(row) == ROW_KEYS, row["name"]
        assert set(row["metrics"]) == METRICS
        assert row["latency_s"] > 0 and row["peak_rss_mb"] > 0 and len(row["answers"]) == 4
    rows = {row["name"]: row for row in result["rows"]}
    assert rows["base"]["vs_base"] is None
    assert list(rows["tuned"]["vs_base"])[0] == "exact_match"
    assert rows["tuned"]["vs_base"]["exact_match"]["verdict"] in {"better", "worse", "no significant change"}
    # prompting and RAG make the prompt longer; retrieval is recorded per answer and cited sources exist
    assert rows["prompt"]["prompt_tokens"] > rows["base"]["prompt_tokens"]
    assert rows["rag"]["prompt_tokens"] > rows["base"]["prompt_tokens"]
    for name in ("rag", "hybrid"):
        assert all(len(a["sources"]) == 3 for a in rows[name]["answers"])
        assert all(source in result["documents"] for a in rows[name]["answers"] for source in a["sources"])
        assert 0 <= rows[name]["citation_rate"] <= 1
    assert rows["rag"]["answers"][0]["sources"] == rows["hybrid"]["answers"][0]["sources"]
    assert all(not a["sources"] for a in rows["base"]["answers"])
    assert [c["kind"] for c in rows["tuned"]["one_off"]] == ["training"]
    assert rows["tuned"]["one_off"][0]["steps"] == 2 and rows["tuned"]["one_off"][0]["tokens"] > 0
    assert [c["kind"] for c in rows["hybrid"]["one_off"]] == ["training", "index"]
    assert rows["base"]["one_off"] == [] and rows["prompt"]["one_off"] == []
    printed = capsys.readouterr().out
    assert "Comparison on 4 held-out test examples" in printed and "hybrid" in printed
    assert "<table" in page.read_text() and "data:image/png;base64," in page.read_text()


def test_max_examples_counts_from_the_whole_test_split_not_the_recipe_s_cap(tiny_recipe, tmp_path):
    assert main(["train", str(tiny_recipe()), "train.max_steps=1", "eval.retention=false",
                 "eval.max_examples=2"]) == 0  # fmt: skip
    result = compare_run(tmp_path / "run", CompareOptions(rows=["base"], max_examples=3))
    assert result["n_test"] == 3  # was the recipe's 2, silently


def test_a_row_whose_prompts_all_outgrow_the_context_reports_no_loss(trained_run):
    events = []
    options = CompareOptions(rows=["base", "prompt"], shots=29, max_examples=2)  # 29 shots: ~1,500 of 512 positions
    result = compare_run(trained_run, options, on_event=lambda kind, payload: events.append((kind, payload)))
    base, prompt = result["rows"]
    assert base["loss_examples"] == 2 and base["metrics"]["test_loss"] > 0
    assert prompt["loss_examples"] == 0
    assert prompt["metrics"]["test_loss"] is None and prompt["metrics"]["perplexity"] is None
    assert "test_loss" not in prompt["vs_base"] and "perplexity" not in prompt["vs_base"]  # no loss, no verdict
    assert ("warning", {"text": "row prompt: 2 of 2 prompts are longer than the model's context and left out of "
                                "its test_loss and perplexity; their answers, generated past the context, still "
                                "count in its answer metrics (lower --top-k or --shots to fit)"}) in events  # fmt: skip
    assert "n/a" in format_comparison(result)


def test_base_and_tuned_rows_score_the_loss_as_the_scorecard_does(tiny_recipe, tmp_path):
    # data.max_length 36 cuts some test answers off: the scorecard and compare must cut alike
    settings = ["train.max_steps=2", "eval.retention=false", "data.max_length=36", "data.quality.fail_on=[]"]
    assert main(["train", str(tiny_recipe()), *settings]) == 0
    card = json.loads((tmp_path / "run" / "scorecard.json").read_text())
    assert card["loss_examples"] < card["n_test"]
    events = []
    result = compare_run(tmp_path / "run", CompareOptions(rows=["base", "tuned"]),
                         on_event=lambda kind, payload: events.append((kind, payload["text"])))  # fmt: skip
    for row in result["rows"]:
        assert row["metrics"]["test_loss"] == pytest.approx(card[row["name"]]["test_loss"], rel=1e-6)
        assert row["loss_examples"] == card["loss_examples"]
    uncovered = card["n_test"] - card["loss_examples"]
    assert ("warning", f"row tuned: {uncovered} of {card['n_test']} test answers begin beyond data.max_length and "
                       "are left out of its test_loss and perplexity (raise data.max_length to count them)") in events


def test_a_loss_is_compared_over_the_examples_both_rows_cover():
    # base covers examples 0 and 1, the row 0 and 2 (their prompts cut at different lengths)
    metrics = {"test_loss": 0.0, "exact_match": 0.0}  # their order: the comparison's after the headline
    base = ModelScores(metrics, [], {"test_loss": [(2.0, 2), (3.0, 3), (0.0, 0)], "exact_match": [1.0, 0.0, 1.0]})
    row = ModelScores({}, [], {"test_loss": [(1.0, 2), (0.0, 0), (9.0, 1)], "exact_match": [1.0, 1.0, 1.0]})
    versus = _versus_base({"base": base, "row": row}, "row", "exact_match", SimpleNamespace(bootstrap_samples=50))
    assert (versus["test_loss"]["base"], versus["test_loss"]["tuned"]) == (1.0, 0.5)  # example 0's alone
    assert list(versus) == ["exact_match", "test_loss"]
    nothing_shared = ModelScores({}, [], {"test_loss": [(0.0, 0), (0.0, 0), (1.0, 1)]})
    assert "test_loss" not in _versus_base({"base": base, "row": nothing_shared}, "row", "test_loss", SimpleNamespace())


def test_compare_retrieves_from_a_docs_folder(trained_run, tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "prices.md").write_text("# Prices\n\nThe green paddle costs 22 euros.\n\nThe red map costs 62 euros.\n")
    (docs / "sub" / "colours.txt").write_text("The jacket comes in red, blue, green and black.")
    (docs / "ignored.json").write_text("{}")
    options = CompareOptions(rows=["base", "rag"], docs=docs, top_k=2, max_examples=3)
    result = compare_run(trained_run, options, encoder=WordHashEncoder())
    assert [row["name"] for row in result["rows"]] == ["base", "rag"]
    sources = [a["sources"] for a in result["rows"][1]["answers"]]
    assert sources[0][0] == "sub/colours.txt#1"  # "What colour options does the jacket come in?"
    assert all(s.split("#")[0] in {"prices.md", "sub/colours.txt"} for found in sources for s in found)
    assert result["settings"]["sources"] == str(docs)
    assert "rag" in format_comparison(result)
    with pytest.raises(EvaluationError, match="--headline 'bleu' is not scored by this run's recipe"):
        compare_run(trained_run, CompareOptions(headline="bleu"))


@pytest.mark.parametrize(("field", "message"), [("docs", "is not a folder"), ("encoder", "neither a shipped encoder")])
def test_what_retrieval_reads_is_checked_before_any_row_runs(trained_run, tmp_path, field, message):
    events = []
    options = CompareOptions(rows=["base", "rag"], **{field: str(tmp_path / "missing")})
    with pytest.raises(FinjustError, match=message):
        compare_run(trained_run, options, on_event=lambda kind, payload: events.append(payload))
    assert events == []  # the base row was generated first, a minute or two on the shipped model


def test_a_training_file_edited_since_the_run_is_refused(tiny_recipe, tmp_path, write_jsonl):
    # few-shot examples and the RAG index come from the training split: an edit could leak test answers
    from finjust.errors import CheckpointError

    train = tmp_path / "train.jsonl"
    train.write_text((ASSETS / "tiny_train.jsonl").read_text(), encoding="utf-8")
    recipe = tiny_recipe(data={"train": str(train)})
    assert main(["train", str(recipe), "train.max_steps=1", "eval.retention=false", "eval.generate=false"]) == 0
    with train.open("a", encoding="utf-8") as handle:
        handle.write('{"instruction": "What does the test ask?", "output": "The test answer."}\n')
    with pytest.raises(CheckpointError, match="the train data changed") as refused:
        compare_run(tmp_path / "run")
    assert f"; changed: {train});" in str(refused.value)  # the file, not the test file beside it
    assert str(refused.value).endswith("restore the data it was trained on, or train a new run on the new data")


def test_unknown_rows_and_bad_counts_are_rejected_together(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "--rows", "base,finetuned,retrieval", "--top-k", "0", "--shots", "0"]) == 2
    err = capsys.readouterr().err
    assert "unknown compare row 'finetuned'; unknown compare row 'retrieval' (valid compare rows: base, hybrid, " \
           "prompt, rag, tuned)" in err  # fmt: skip
    assert "--shots must be at least 1, got 0; --top-k must be at least 1, got 0" in err


def test_retrieval_finds_an_exact_duplicate_first():
    train = load_examples(ASSETS / "tiny_train.jsonl")
    retriever = Retriever(documents_from_examples(train), WordHashEncoder())
    queries = [train[i].prompt_text() for i in (0, 7, 20)]
    hits = retriever.search(queries, k=3)
    assert [found[0].document.id for found in hits] == ["train:0", "train:7", "train:20"]
    assert all(found[0].score == pytest.approx(1.0) for found in hits)
    assert all(len(found) == 3 and found[0].score >= found[1].score >= found[2].score for found in hits)
    assert hits[0][0].document.text == f"Q: {train[0].prompt_text()}\nA: {train[0].reference_answer()}"


def test_an_encoder_stored_in_half_precision_encodes_in_fp32(tmp_path):
    from transformers import BertConfig, BertModel

    from finjust.eval.retrieval import TransformerEncoder

    tokenizer = build_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    BertModel(config).half().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    encoder = TransformerEncoder(tmp_path)
    assert encoder.model.dtype == torch.float32 and encoder.encode(["a bike"]).dtype == torch.float32


@needs_minilm
def test_the_shipped_minilm_encoder_retrieves_the_duplicate(capfd):
    train = load_examples(ASSETS / "tiny_train.jsonl")[:12]
    encoder = load_encoder()
    assert "Loading weights" not in capfd.readouterr().err  # no progress bar: the command reports its phases
    vectors = encoder.encode(["a bike", "a bicycle", "tax law"])
    assert vectors.shape == (3, 384)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])
    hits = Retriever(documents_from_examples(train), encoder).search([train[5].prompt_text()], k=1)
    assert hits[0][0].document.id == "train:5"


def test_documents_are_chunked_by_paragraph(tmp_path):
    text = "one two three\n\nfour five\n\n" + "word " * 50
    chunks = chunk_text(text, chunk_chars=40)
    assert chunks[0] == "one two three\nfour five"
    assert all(len(c) <= 40 for c in chunks) and " ".join(chunks[1:]).split() == ["word"] * 50
    with pytest.raises(EvaluationError, match="no text in .txt or .md"):
        documents_from_folder(tmp_path)


@pytest.mark.parametrize(("content", "named"), [
    (b"Caf\xe9 prices\nsecond line", "not UTF-8 (byte 0xe9 at line 1, byte 3)"),
    (b"header\n\x00\x01\x02binary", "not text (a NUL byte at line 2, byte 7)"),
])  # fmt: skip
def test_a_document_that_is_not_utf8_text_is_refused_naming_where(tmp_path, content, named):
    (tmp_path / "good.md").write_text("Prices are listed in SEK.", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(content)
    with pytest.raises(EvaluationError, match=re.escape(f"{tmp_path / 'bad.txt'}: {named}")):
        documents_from_folder(tmp_path)


def test_a_document_with_a_byte_order_mark_reads_without_it(tmp_path):
    (tmp_path / "bom.txt").write_bytes("\ufeffCafé".encode("utf-8"))
    assert [d.text for d in documents_from_folder(tmp_path)] == ["Café"]


def test_few_shot_examples_are_context_not_answers():
    train, test = load_examples(ASSETS / "tiny_train.jsonl"), load_examples(ASSETS / "tiny_test.jsonl")
    augmented = CONTEXTS.get("few_shot")(ContextInputs(test[:2], train, shots=2, instruction="Be brief."))
    example = augmented.examples[0]
    assert [m.role for m in example.messages] == ["system", "user", "assistant", "user", "assistant", "user",
                                                  "assistant"]  # fmt: skip
    assert example.messages[0].content == "Be brief."
    assert [m.weight for m in example.messages if m.role == "assistant"] == [0, 0, 1]
    assert example.reference_answer() == test[0].reference_answer()
    tokenizer = build_tokenizer()
    labelled = [t for t in tokenize_example(example, tokenizer).labels if t != -100]
    answer_only = [t for t in tokenize_example(test[0], tokenizer).labels if t != -100]
    assert labelled == answer_only  # only the real answer carries loss


def test_rag_prompt_numbers_its_sources():
    train, test = load_examples(ASSETS / "tiny_train.jsonl"), load_examples(ASSETS / "tiny_test.jsonl")
    retriever = Retriever(documents_from_examples(train), WordHashEncoder())
    augmented = CONTEXTS.get("rag")(ContextInputs(test[:1], train, top_k=2, retriever=lambda: retriever))
    question = augmented.examples[0].messages[-2].content
    assert question.startswith("Sources:\n[1] Q: ") and "\n\n[2] Q: " in question
    assert question.endswith(f"Question: {test[0].prompt_text()}")
    assert "[1]" in augmented.examples[0].messages[0].content  # the instruction to cite
    assert augmented.one_off["kind"] == "index" and augmented.one_off["documents"] == len(train)
    assert cites_a_source("Red and blue [2].", 2) and not cites_a_source("Red [3].", 2)
    assert not cites_a_source("no citation", 2)


def test_few_shot_and_rag_see_each_training_record_once():
    from types import SimpleNamespace

    from finjust.eval.compare import distinct_training

    one, two = load_examples(ASSETS / "tiny_train.jsonl")[:2]
    run = SimpleNamespace(data=SimpleNamespace(splits=SimpleNamespace(train=[two, one, two, one, two])))  # weight 2-3
    assert distinct_training(run) == [two, one]


def test_augmented_prompts_take_the_models_context_less_a_tuned_rows_virtual_tokens():
    from types import SimpleNamespace

    from finjust.eval.compare import _max_length

    recipe = SimpleNamespace(data=SimpleNamespace(max_length=128))
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=512))
    assert _max_length(recipe, model, None, "none", 20) == 128  # plain prompts: cut as the scorecard cuts them
    assert _max_length(recipe, model, None, "rag", 0) == 512
    assert _max_length(recipe, model, None, "rag", 20) == 492  # prompt tuning's tokens sit before every prompt


def test_retrieved_sources_are_asked_where_a_test_record_has_no_user_message():
    greeting = (Message("system", "You are Fjord's assistant."), Message("assistant", "Welcome!"))
    example = Example(greeting, "t.jsonl", 3)
    augmented = augment_example(example, "Use the sources.", [], question="Sources:\n[1] x\n\nQuestion: ")
    assert [m.role for m in augmented.messages] == ["system", "user", "assistant"]
    assert augmented.messages[1].content.startswith("Sources:") and augmented.reference_answer() == "Welcome!"
