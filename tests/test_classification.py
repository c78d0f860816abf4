"""The classification objective: labels, batches and loss, heads under methods, whole runs."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import build_tokenizer, needs_minilm
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification

from finjust.cli.main import main
from finjust.data.example import Example, Message
from finjust.errors import DataError
from finjust.export.classifier import _LabelLogits, _trace_sample, _write_graph
from finjust.export.onnx_format import open_session
from finjust.methods.registry import get_method
from finjust.models.classifier import load_classifier, unfreeze_head
from finjust.objectives.classification import (
    LabelBatcher,
    LabelMap,
    class_logits,
    label_loss_sum,
    tokenize_labelled,
)
from finjust.objectives.registry import objective_for_task
from finjust.train import recompute
from finjust.train.checkpoint import latest_checkpoint
from finjust.train.classify import classifier_methods

ID2LABEL = {0: "negative", 1: "positive"}
_FILLER = ("film plot actor scene story music camera script ending cast director light colour sound "
           "pace dialogue hero villain city night river summer winter train letter garden").split()  # fmt: skip


def _records(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Texts whose label is readable from one word, varied enough not to look like duplicates."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        label = ID2LABEL[i % 2]
        words = rng.sample(_FILLER, 5)
        words.insert(rng.randrange(6), "good" if label == "positive" else "bad")
        records.append({"text": " ".join(words), "label": label})
    return records


def _examples(records: list[dict[str, str]]) -> list[Example]:
    return [Example((Message("user", r["text"]),), task="classification", label=r["label"]) for r in records]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a busy CPU its barriers cost 10x and more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded tiny BERT (hidden 16, 2 layers) beside the fixture tokenizer: an encoder to classify with."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def classification_recipe(tiny_model_dir: Path, tmp_path: Path, write_jsonl):
    """A classification recipe on the tiny Llama; keyword arguments update sections."""

    def write(**sections: dict) -> Path:
        recipe = {
            "model": {"name": str(tiny_model_dir), "dtype": "float32"},
            "data": {"train": str(write_jsonl("labelled.jsonl", _records(40))), "format": "classification",
                     "stratify_by": "label", "validation_count": 8, "test_count": 8},
            "method": {"name": "lora", "r": 4},
            "train": {"epochs": 2, "batch_size": 8, "lr": 1e-2, "patience": None},
            "eval": {"bootstrap_samples": 100},
            "output": {"dir": str(tmp_path / "run")},
        }  # fmt: skip
        for name, values in sections.items():
            recipe[name] = values if name == "method" else {**recipe.get(name, {}), **values}
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path

    return write


def test_labels_map_both_ways():
    labels = LabelMap.from_examples(_examples(_records(6)))
    assert labels.labels == ("negative", "positive")
    assert [labels.label_of(labels.id_of(x)) for x in labels.labels] == list(labels.labels)
    assert labels.id2label == {0: "negative", 1: "positive"} and labels.label2id == {"negative": 0, "positive": 1}
    numeric = LabelMap.from_examples(_examples([{"text": "a", "label": v} for v in ("10", "2", "1")]))
    assert numeric.labels == ("1", "2", "10")  # integer classes keep their numeric order


@pytest.mark.parametrize(("found", "ordered"), [
    (("10", "-2", "01", "1"), ("-2", "01", "1", "10")),  # equal numbers by their text: the same ids every run
    (("2", "²", "1"), ("1", "2", "²")),  # "²" is a digit to str.isdigit, not to int(): sorted as text
    (("--1", "3"), ("--1", "3")),
])  # fmt: skip
def test_label_order_is_numeric_for_integers_alone_and_the_same_every_run(found, ordered):
    assert LabelMap.from_examples(_examples([{"text": "a", "label": v} for v in found])).labels == ordered


def test_one_label_is_not_a_classification_task_and_the_error_names_the_file():
    examples = [Example((Message("user", t),), source="train.jsonl", line=i + 1, task="classification", label="x")
                for i, t in enumerate("ab")]  # fmt: skip
    with pytest.raises(DataError, match=r"at least two labels .*; found \['x'\] in train.jsonl: add records"):
        LabelMap.from_examples(examples)


def test_every_held_out_label_the_training_split_lacks_is_named_at_once():
    labels = LabelMap(("neg", "pos"))
    held_out = [Example((Message("user", f"t{i}"),), source="test.jsonl", line=i + 1, task="classification",
                        label=label) for i, label in enumerate(["pos", "mixed", "neg", "other"])]  # fmt: skip
    with pytest.raises(DataError, match="2 bad records") as raised:
        labels.check(held_out, "test")
    assert "test.jsonl:2 field 'label': label 'mixed'" in str(raised.value)
    assert "test.jsonl:4 field 'label': label 'other'" in str(raised.value)
    labels.check(held_out[:1] + held_out[2:3], "test")  # known labels pass


def test_labels_that_differ_only_in_case_are_refused_naming_where():
    # they trained as separate classes while accuracy counted them as one (0.45 against 0.275)
    examples = [Example((Message("user", f"text {i}"),), source="train.jsonl", line=i + 1, task="classification",
                        label=label) for i, label in enumerate(["pos", "neg", "Pos", "POS", "neg"])]  # fmt: skip
    with pytest.raises(DataError, match=r"labels differ only in case or spacing: 'POS' \(train.jsonl:4\), 'Pos' "
                                        r"\(train.jsonl:3\), 'pos' \(train.jsonl:1\)"):  # fmt: skip
        LabelMap.from_examples(examples)
    spaced = [dataclasses.replace(example, label=label) for example, label in
              zip(examples, ["very good", "bad", "very  good", "bad", "bad"], strict=False)]  # fmt: skip
    with pytest.raises(DataError, match=r"'very  good' \(train.jsonl:3\), 'very good' \(train.jsonl:1\)"):
        LabelMap.from_examples(spaced)  # accuracy reads them as one label


def test_the_data_task_picks_the_objective():
    assert objective_for_task("classification").name == "classification"
    assert objective_for_task("chat").name == "sft" and objective_for_task("text").name == "sft"
    with pytest.raises(DataError, match="preference records, which no objective trains"):
        objective_for_task("preference")


def test_batches_pad_with_the_models_pad_id(tiny_bert_dir):
    loaded = load_classifier(str(tiny_bert_dir), ID2LABEL, "float32", "cpu")
    labels = LabelMap(("negative", "positive"))
    items, truncated = tokenize_labelled(_examples(_records(4)), loaded.tokenizer, labels, max_length=8)
    assert truncated > 0 and all(len(i.input_ids) <= 8 for i in items)
    batch = LabelBatcher(7)(items)
    assert batch.labels.tolist() == [0, 1, 0, 1]
    assert batch.input_ids[batch.attention_mask == 0].eq(7).all()
    assert batch.trained_tokens == 4  # the loss is averaged over examples


@pytest.mark.parametrize("model_fixture", ["tiny_bert_dir", "tiny_model_dir"])
def test_loss_falls_on_a_tiny_labelled_set(model_fixture, request):
    torch.manual_seed(0)
    loaded = load_classifier(str(request.getfixturevalue(model_fixture)), ID2LABEL, "float32", "cpu")
    labels = LabelMap(("negative", "positive"))
    items, _ = tokenize_labelled(_examples(_records(8)), loaded.tokenizer, labels, max_length=64)
    batch = LabelBatcher(loaded.tokenizer.pad_token_id)(items)
    model = loaded.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss, count = label_loss_sum(model, batch)
        optimizer.zero_grad()
        (loss / count).backward()
        optimizer.step()
        losses.append(float(loss.detach()) / count)
    assert losses[-1] < 0.5 * losses[0]


def test_a_decoder_classifier_keeps_no_kv_cache(tiny_model_dir):
    loaded = load_classifier(str(tiny_model_dir), ID2LABEL, "float32", "cpu")
    items, _ = tokenize_labelled(_examples(_records(2)), loaded.tokenizer, LabelMap(("negative", "positive")), 64)
    outputs = []
    loaded.model.register_forward_hook(lambda module, args, output: outputs.append(output))
    batch = LabelBatcher(loaded.tokenizer.pad_token_id)(items)
    class_logits(loaded.model, batch)
    _LabelLogits(loaded.model)(batch.input_ids, batch.attention_mask)  # what the ONNX export traces
    assert len(outputs) == 2 and all(output.past_key_values is None for output in outputs)


def test_lora_trains_the_head_and_leaves_the_base_frozen(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    loaded = load_classifier(str(tiny_model_dir), ID2LABEL, "float32", "cpu")
    method = get_method("lora")
    model = method.apply(loaded.model, method.options_class(r=4))
    head = unfreeze_head(model)
    assert head and all("modules_to_save" in name for name in head)  # peft's trained copy of the head
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    items, _ = tokenize_labelled(_examples(_records(8)), loaded.tokenizer, LabelMap(("negative", "positive")), 64)
    batch = LabelBatcher(loaded.tokenizer.pad_token_id)(items)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss, count = label_loss_sum(model, batch)
        optimizer.zero_grad()
        (loss / count).backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert set(head) <= changed
    assert all("lora_" in n or "modules_to_save" in n for n in changed)  # nothing frozen moved
    method.save(model, tmp_path / "adapter")
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert any(".score." in name for name in saved)  # the head travels with the adapter


@pytest.mark.parametrize("name", classifier_methods())
@pytest.mark.parametrize("model_fixture", ["tiny_bert_dir", "tiny_model_dir"])
def test_every_supported_method_trains_the_new_head(name, model_fixture, request):
    loaded = load_classifier(str(request.getfixturevalue(model_fixture)), ID2LABEL, "float32", "cpu")
    method = get_method(name)
    model = method.apply(loaded.model, method.options_class())
    head = unfreeze_head(model)
    assert head and all(".original_module." not in n for n in head)
    items, _ = tokenize_labelled(_examples(_records(4)), loaded.tokenizer, LabelMap(("negative", "positive")), 64)
    loss, _ = label_loss_sum(model, LabelBatcher(loaded.tokenizer.pad_token_id)(items))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in head)


@pytest.fixture(scope="module", params=["distilbert", "deberta-v2"])
def backbone_with_a_larger_head(request, tmp_path_factory) -> Path:
    """A saved backbone whose classification head has more than a classifier: DistilBERT's adds
    a pre_classifier, DeBERTa's a pooler; no checkpoint of the backbone holds either."""
    import transformers

    tokenizer = build_tokenizer()
    shapes = {"distilbert": ("DistilBertConfig", "DistilBertModel", {"dim": 16, "n_layers": 2, "n_heads": 2,
                                                                     "hidden_dim": 32}),
              "deberta-v2": ("DebertaV2Config", "DebertaV2Model", {"hidden_size": 16, "num_hidden_layers": 2,
                                                                  "num_attention_heads": 2, "intermediate_size": 32})}
    config_class, model_class, sizes = shapes[request.param]  # fmt: skip
    folder = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(vocab_size=len(tokenizer), max_position_embeddings=70,
                                                 pad_token_id=tokenizer.pad_token_id, **sizes)  # fmt: skip
    getattr(transformers, model_class)(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", ["lora", "dora", "bitfit", "freeze"])
def test_a_head_of_several_new_modules_trains_whole_and_reloads_as_trained(name, backbone_with_a_larger_head,
                                                                          tmp_path):  # fmt: skip
    from finjust.methods.registry import load_trained

    loaded = load_classifier(str(backbone_with_a_larger_head), ID2LABEL, "float32", "cpu")
    backbone = loaded.model.base_model_prefix
    method = get_method(name)
    model = method.apply(loaded.model, method.options_class())  # LoRA adapted pre_classifier, then failed
    head = unfreeze_head(model)
    left_frozen = [n for n, p in model.named_parameters() if not p.requires_grad and f".{backbone}." not in
                   f".{n}" and ".original_module." not in n]  # fmt: skip
    assert head and not left_frozen  # no new weight stays at its random start
    method.save(model, tmp_path / "artifact")
    torch.manual_seed(123)  # another random head underneath: the artifact must replace all of it
    again = load_classifier(str(backbone_with_a_larger_head), ID2LABEL, "float32", "cpu")
    reloaded = load_trained(method, again.model, tmp_path / "artifact").eval()
    ids = torch.randint(3, len(loaded.tokenizer), (4, 9))
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=ids).logits, reloaded(input_ids=ids).logits)


def test_methods_that_cannot_classify_are_refused_by_name(classification_recipe, capsys):
    assert main(["train", str(classification_recipe(method={"name": "prefix_tuning"}))]) == 2
    error = capsys.readouterr().err
    assert "method prefix_tuning cannot train a classifier yet: peft's prefix tuning needs a key/value cache" in error
    assert "use bitfit, dora, freeze, full, ia3, lora" in error  # what each method says of itself


def test_a_run_writes_a_scorecard_with_accuracy_and_macro_f1(classification_recipe, capsys):
    recipe = classification_recipe()
    assert main(["train", str(recipe)]) == 0
    run = Path(yaml.safe_load(recipe.read_text())["output"]["dir"])
    scorecard = json.loads((run / "scorecard.json").read_text())
    assert scorecard["objective"] == "classification" and scorecard["n_test"] == 8
    assert {"accuracy", "macro_f1", "test_loss"} <= set(scorecard["comparison"])
    assert scorecard["baselines"]["majority_class"]["accuracy"] == 0.5
    assert {a["tuned"] for a in scorecard["answers"]} <= {"negative", "positive"}
    assert json.loads((run / "labels.json").read_text()) == {"labels": ["negative", "positive"]}
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert [r["type"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())].count("eval") == 2
    assert "Majority-class baseline" in capsys.readouterr().out
    assert main(["report", str(run)]) == 0  # the page says it too: its base is an untrained head
    assert "Majority-class baseline (always" in (run / "report.html").read_text()
    capsys.readouterr()
    # the generative-run commands say plainly that they do not take a classifier yet
    assert main(["eval", str(run)]) == 2
    assert f"is a classification run: its scorecard is {run / 'scorecard.json'}" in capsys.readouterr().err
    (run / "scorecard.json").unlink()  # as an unfinished run: no scorecard to point to
    assert main(["compare", str(run)]) == 2
    assert "is a classification run: it has not finished (continue it with `finjust train --resume" \
        in capsys.readouterr().err


def test_full_fine_tuning_saves_a_classifier_with_its_labels(classification_recipe):
    recipe = classification_recipe(method={"name": "full"}, train={"lr": 1e-3, "max_steps": 2})
    assert main(["train", str(recipe)]) == 0
    run = Path(yaml.safe_load(recipe.read_text())["output"]["dir"])
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["id2label"] == {"0": "negative", "1": "positive"}


def test_a_resume_refuses_damaged_base_scores_naming_them(classification_recipe, capsys):
    # the generative trainer's check, which the classifier's read without (a traceback, or an empty scorecard)
    recipe = classification_recipe(train={"max_steps": 1})
    assert main(["train", str(recipe)]) == 0
    run = Path(yaml.safe_load(recipe.read_text())["output"]["dir"])
    (run / "scorecard.json").unlink()
    for damaged, said in (('{"metrics": {}, "answers": [], "items": {}}', "is damaged"),
                          ('{"metrics": {', "is unreadable")):  # fmt: skip
        (run / "base_scores.json").write_text(damaged)
        capsys.readouterr()
        assert main(["train", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"{run / 'base_scores.json'} {said}" in err and "delete it and resume" in err


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(classification_recipe, tmp_path):
    settings = ["train.scheduler=constant", "train.warmup_ratio=0", "train.save_every=1", "train.eval_every=2"]
    recipe = classification_recipe(train={"max_steps": 6})
    assert main(["train", str(recipe), *settings, f"output.dir={tmp_path / 'reference'}"]) == 0
    # an "interrupted" run: it stopped after 4 of the 6 steps, then continues from its checkpoint
    run = tmp_path / "interrupted"
    assert main(["train", str(recipe), *settings, "train.max_steps=4", f"output.dir={run}"]) == 0
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    saved["train"]["max_steps"] = 6
    (run / "recipe.yaml").write_text(yaml.safe_dump(saved))
    assert main(["train", "--resume", str(run)]) == 0
    reference = load_file(str(latest_checkpoint(tmp_path / "reference" / "checkpoints") / "trainable.safetensors"))
    resumed = load_file(str(latest_checkpoint(run / "checkpoints") / "trainable.safetensors"))
    assert latest_checkpoint(run / "checkpoints").name == "step-000006"
    for name, tensor in reference.items():
        torch.testing.assert_close(resumed[name], tensor)


def test_a_test_label_never_seen_in_training_names_file_and_line(classification_recipe, write_jsonl, capsys):
    test_file = write_jsonl("test.jsonl", [*_records(3, seed=5), {"text": "neither here nor there", "label": "mixed"}])
    recipe = classification_recipe(data={"test": str(test_file), "test_count": None})
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    # the quality gate stops it before the model loads, as `finjust data check` does
    assert f"{test_file}:4 (test) field 'label': 'mixed' never occurs in training" in err
    assert "fail_on" not in err  # no recipe setting lets such a record through


def test_a_record_without_label_names_file_and_line(classification_recipe, write_jsonl, capsys):
    bad = write_jsonl("bad.jsonl", [*_records(20), {"text": "no label here"}])
    recipe = classification_recipe(data={"train": str(bad)})
    assert main(["train", str(recipe)]) == 2
    assert f"{bad}:21" in capsys.readouterr().err


@needs_minilm
def test_the_example_recipe_trains_the_shipped_minilm(tmp_path):
    recipe = Path(__file__).parent.parent / "examples" / "recipes" / "classification.yaml"
    # LoRA rather than the recipe's full fine-tuning: the same path, without writing 90 MB checkpoints
    overrides = ["method.name=lora", "train.lr=1e-3", "train.max_steps=2", "train.batch_size=8", "data.test_count=16",
                 "data.validation_count=8", "eval.bootstrap_samples=100", f"output.dir={tmp_path / 'run'}"]  # fmt: skip
    assert main(["train", str(recipe), *overrides]) == 0
    scorecard = json.loads((tmp_path / "run" / "scorecard.json").read_text())
    assert scorecard["n_test"] == 16 and {"accuracy", "macro_f1"} <= set(scorecard["tuned"])
    adapter = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "classifier" in adapter["modules_to_save"]


@pytest.mark.parametrize("model_fixture", ["tiny_bert_dir", "tiny_model_dir"])
def test_a_classifier_exports_to_onnx_with_the_trained_labels_and_logits(model_fixture, classification_recipe,
                                                                         request, capsys):  # fmt: skip
    model = {"name": str(request.getfixturevalue(model_fixture)), "dtype": "float32"}
    recipe = classification_recipe(model=model, train={"max_steps": 3})
    assert main(["train", str(recipe)]) == 0
    run = Path(yaml.safe_load(recipe.read_text())["output"]["dir"])
    assert main(["export", str(run), "--format", "gguf"]) == 2
    assert "a classification run exports as onnx" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "onnx"]) == 0
    result = json.loads((run / "export" / "onnx" / "export.json").read_text())
    assert result["parity"]["passed"] and result["parity"]["label_agreement"] == 1.0
    assert result["parity"]["max_logit_diff"] < 1e-3 and result["parity"]["texts"] == 8
    assert result["parity"]["batch_logit_diff"] < 1e-3  # the 8 texts padded into one batch, masked
    config = json.loads((run / "export" / "onnx" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}


def test_a_classifier_export_that_misses_its_parity_bar_writes_nothing(classification_recipe, monkeypatch, capsys):
    recipe = classification_recipe(train={"max_steps": 2})
    assert main(["train", str(recipe)]) == 0
    run = Path(yaml.safe_load(recipe.read_text())["output"]["dir"])
    monkeypatch.setattr("finjust.export.classifier.MAX_LOGIT_DIFF", -1.0)  # no graph can meet it
    report = run.parent / "why.json"
    assert main(["export", str(run), "--format", "onnx", "--json", str(report)]) == 2
    assert "failed its parity check" in capsys.readouterr().err
    assert not (run / "export" / "onnx").exists()
    assert json.loads(report.read_text())["parity"]["passed"] is False  # --json says why, as for other runs


def test_a_classifier_graph_traced_where_every_text_is_one_token_answers_them(tiny_model_dir, tmp_path):
    model = load_classifier(str(tiny_model_dir), ID2LABEL, "float32", "cpu").model.eval()
    sample = _trace_sample([[7], [9]])
    assert sample == [7, 7] and _trace_sample([[7], [9, 8, 6]]) == [9, 8, 6]
    _write_graph(model, tmp_path / "model.onnx", sample)  # torch.export refused a 1-token sample
    one = np.array([[9]], dtype=np.int64)
    got = open_session(tmp_path / "model.onnx").run(None, {"input_ids": one, "attention_mask": np.ones_like(one)})[0]
    with torch.no_grad():
        expected = model(input_ids=torch.tensor(one), attention_mask=torch.ones(1, 1, dtype=torch.long)).logits
    assert np.allclose(got, expected.numpy(), atol=1e-4)


def test_a_classifier_export_refuses_generation_options_and_names_missing_files(classification_recipe, capsys):
    recipe = classification_recipe(train={"max_steps": 1})
    assert main(["train", str(recipe)]) == 0
    run = Path(yaml.safe_load(recipe.read_text())["output"]["dir"])
    assert main(["export", str(run), "--format", "onnx", "--min-agreement", "0.5", "--max-new-tokens", "4"]) == 2
    assert "--max-new-tokens, --min-agreement do not apply to a classification run's export" \
        in capsys.readouterr().err  # fmt: skip
    (run / "labels.json").write_text('{"labels": ')
    assert main(["export", str(run), "--format", "onnx"]) == 2
    assert f"{run / 'labels.json'} is damaged" in capsys.readouterr().err
    shutil.rmtree(run / "adapter")
    assert main(["export", str(run), "--format", "onnx"]) == 2
    assert f"{run / 'adapter'} is missing although the run finished" in capsys.readouterr().err
    (run / "scorecard.json").unlink()  # now as a run the quality gate stopped leaves its folder
    assert main(["export", str(run), "--format", "onnx"]) == 2
    assert f"{run} holds no trained adapter/ folder yet: the run has not finished" in capsys.readouterr().err


def test_a_classifier_export_into_its_trained_adapter_is_refused(classification_recipe, capsys):
    recipe = classification_recipe(train={"max_steps": 1})
    assert main(["train", str(recipe)]) == 0
    run = Path(yaml.safe_load(recipe.read_text())["output"]["dir"])
    assert main(["export", str(run), "--format", "onnx", "--out", str(run / "adapter" / "onnx")]) == 2
    assert "would hold or sit inside the run's trained artifact" in capsys.readouterr().err
    assert not (run / "adapter" / "onnx").exists()


@pytest.mark.parametrize("model_fixture", ["tiny_bert_dir", "tiny_model_dir"])
def test_recomputed_classifier_steps_train_as_stored_ones(model_fixture, request, classification_recipe, tmp_path,
                                                         monkeypatch):  # fmt: skip
    model = {"name": str(request.getfixturevalue(model_fixture)), "dtype": "float32"}
    recipe = classification_recipe(model=model, train={"max_steps": 3})
    checkpointed = {}  # setting -> block calls made under a checkpoint
    real = recompute.recomputing
    for setting in ("false", "true"):  # BERT's dropout draws the same masks in the recompute
        runs = checkpointed.setdefault(setting, [])
        monkeypatch.setattr("finjust.train.loop.recomputing",
                            lambda *args, runs=runs: lambda *a, **k: runs.append(1) or real(*args)(*a, **k))  # fmt: skip
        settings = [f"train.gradient_checkpointing={setting}", f"output.dir={tmp_path / setting}"]
        assert main(["train", str(recipe), *settings]) == 0
    assert checkpointed["false"] == [] and len(checkpointed["true"]) >= 3  # every step's blocks
    stored, recomputed = (
        load_file(str(latest_checkpoint(tmp_path / setting / "checkpoints") / "trainable.safetensors"))
        for setting in ("false", "true")
    )
    assert stored.keys() == recomputed.keys()
    for name, tensor in stored.items():
        torch.testing.assert_close(recomputed[name], tensor)


def test_l2sp_pulls_the_new_head_towards_zero_not_its_random_start(classification_recipe, tmp_path):
    """L2-SP (Li et al. 2018) anchors pretrained weights where they started and new layers at zero."""

    def head_norm_after_training(l2sp: float) -> float:
        train = {"max_steps": 20, "l2sp": l2sp, "scheduler": "constant", "warmup_ratio": 0}
        recipe = classification_recipe(train=train)
        run = tmp_path / f"run-{l2sp}"
        assert main(["train", str(recipe), f"output.dir={run}"]) == 0
        trained = load_file(str(latest_checkpoint(run / "checkpoints") / "trainable.safetensors"))
        head = [tensor for name, tensor in trained.items() if ".score." in f".{name}"]
        assert head
        return sum(float(tensor.pow(2).sum()) for tensor in head) ** 0.5

    # anchored at its random start, a strongly held head would keep its starting size
    assert head_norm_after_training(100.0) < 0.5 * head_norm_after_training(0.0)


def test_texts_longer_than_an_encoder_takes_are_cut_at_its_positions(classification_recipe, tiny_bert_dir, tmp_path,
                                                                       write_jsonl, capsys):  # fmt: skip
    # tiny BERT has 128 learned positions; the default data.max_length is 1,024: a longer text
    # failed inside the model ("The expanded size of the tensor ... must match")
    records = [{**r, "text": " ".join([r["text"]] * 40)} for r in _records(40)]
    recipe = classification_recipe(model={"name": str(tiny_bert_dir), "dtype": "float32"},
                                   data={"train": str(write_jsonl("long.jsonl", records))},
                                   train={"max_steps": 2})  # fmt: skip
    assert main(["train", str(recipe), "data.quality.fail_on=[]"]) == 0
    assert "data.max_length 1024 is more than the model takes (128 positions): examples are cut at 128 tokens" in (
        capsys.readouterr().err
    )


def test_data_check_of_detected_classification_data_needs_no_chat_template(tmp_path, write_jsonl, capsys):
    encoder_tokenizer = tmp_path / "encoder"
    tokenizer = build_tokenizer()
    tokenizer.chat_template = None  # as an encoder's (MiniLM's) has none
    tokenizer.save_pretrained(encoder_tokenizer)
    BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(encoder_tokenizer)  # fmt: skip
    labelled = write_jsonl("labelled.jsonl", _records(20))  # data.format auto: detected as classification
    status = main(["data", "check", str(labelled), "--model", str(encoder_tokenizer)])
    out, err = capsys.readouterr()
    assert "no chat template" not in err and "tokens" in out and status == 0
