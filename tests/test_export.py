"""``finjust export`` on a tiny trained run: every format, its parity check, and what a failure leaves."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import gguf
import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from finjust.cli.main import main
from finjust.errors import ExportError, FolderBusyError
from finjust.export import FORMATS, export_run, get_format, read_result
from finjust.export.parity import agreement, common_prefix
from finjust.models import load_model

ASSETS = Path(__file__).parent / "assets"
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime", "onnxscript"))


def _train(tiny_model_dir: Path, folder: Path, method: str, steps: int = 4, test_examples: int | None = None,
           dtype: str = "float32") -> Path:  # fmt: skip
    recipe = {
        "model": {"name": str(tiny_model_dir), "dtype": dtype},
        "data": {"train": str(ASSETS / "tiny_train.jsonl"), "test": str(ASSETS / "tiny_test.jsonl")},
        "method": {"name": method},
        "train": {"epochs": 2, "batch_size": 4, "lr": 1e-2, "max_steps": steps},
        "eval": {"max_new_tokens": 6, "generate": False, "max_examples": test_examples, "retention": False},
        "output": {"dir": str(folder / "run")},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path)]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One LoRA run on the tiny model, shared by the tests of this file (they export it, never change it)."""
    return _train(tiny_model_dir, tmp_path_factory.mktemp("export-lora"), "lora")


def test_the_parity_check_asks_prompts_past_the_recipe_s_max_examples(tiny_model_dir, tmp_path):
    run = _train(tiny_model_dir, tmp_path, "lora", steps=1, test_examples=2)
    result = export_run(run, "merged", out=tmp_path / "merged", prompts=5)
    assert result["parity"]["prompts"] == 5  # the first 5 of the test split's 8, not the scorecard's 2


def test_the_issue_formats_are_registered():
    assert {"merged", "gguf", "onnx", "int8", "adapter"} <= set(FORMATS.names())


def test_agreement_counts_up_to_the_first_divergence():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert agreement([1, 2, 3, 4], [1, 2, 9]) == 0.5
    assert agreement([], []) == 1.0


def test_cli_merged_export_equals_the_adapter(lora_run, tiny_model_dir, tmp_path, capsys):
    out, report = tmp_path / "merged", tmp_path / "export.json"
    assert main(["export", str(lora_run), "--format", "merged", "--out", str(out), "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "token agreement" in printed and "passed" in printed
    result = json.loads(report.read_text())
    assert result == read_result(out)
    parity = result["parity"]
    assert parity["passed"] and parity["exact"] == 1.0 and parity["max_logit_diff"] < 1e-4
    assert parity["stop_token_declared"] and parity["prompts_alike"] == 1.0
    # the folder loads with plain transformers, stops at <|im_end|> and keeps the chat template
    tokenizer = AutoTokenizer.from_pretrained(out)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert merged.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_run / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    chat = [{"role": "user", "content": "hello there"}]
    ids = torch.tensor([tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapter.eval()(ids).logits, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(base(ids).logits, merged(ids).logits)  # training changed the model


def test_adapter_export_loads_with_peft(lora_run, tiny_model_dir, tmp_path):
    result = export_run(lora_run, "adapter", out=tmp_path / "adapter")
    assert result["parity"]["exact"] == 1.0
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "tokenizer_config.json").is_file()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    lora_b = [weight for name, weight in model.named_parameters() if "lora_B" in name]
    # peft starts B at zero and only warns about keys it cannot place: trained values prove the load
    assert lora_b and all(bool(weight.abs().sum() > 0) for weight in lora_b)


def test_an_adapter_export_of_a_read_only_run_is_writable(lora_run, tmp_path):
    # copying the modes too left a read-only temp folder the export could neither finish nor remove
    artifact = lora_run / "adapter"
    entries = [artifact, *artifact.rglob("*")]
    modes = {entry: entry.stat().st_mode for entry in entries}
    try:
        for entry in entries:
            entry.chmod(0o555 if entry.is_dir() else 0o444)
        export_run(lora_run, "adapter", out=tmp_path / "adapter")
    finally:
        for entry, mode in modes.items():
            entry.chmod(mode)
    exported = [tmp_path / "adapter", *(tmp_path / "adapter").rglob("*")]
    assert all(entry.stat().st_mode & stat.S_IWUSR for entry in exported)
    assert not list(tmp_path.glob(".adapter.*.finjust-tmp"))  # no temp folder left behind


def test_an_adapter_whose_tokenizer_declares_another_stop_token_fails(lora_run, tmp_path, monkeypatch):
    from finjust.export.adapter import Adapter

    write = Adapter.write

    def wrong_eos(self, source, folder, quant):
        write(self, source, folder, quant)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": "<|endoftext|>"}))

    monkeypatch.setattr(Adapter, "write", wrong_eos)
    with pytest.raises(ExportError, match="failed its parity check"):
        export_run(lora_run, "adapter", out=tmp_path / "adapter")


@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama_cpp (llama-cpp-python) is not importable; see the Makefile")
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_answers_the_same_greedy_tokens_in_llama_cpp(lora_run, tmp_path, quant):
    result = export_run(lora_run, "gguf", out=tmp_path / "gguf", quant=quant)
    parity = result["parity"]
    assert parity["runtime"] == "llama.cpp" and parity["stop_token_declared"] and parity["prompts_alike"] == 1.0
    if quant == "f16":  # f16 rounding keeps every greedy token of the tiny model
        assert parity["exact"] == 1.0 and parity["max_logit_diff"] < 0.01, parity
    else:  # int8 blocks move a near tie now and then
        assert parity["agreement"] >= 0.8 and parity["max_logit_diff"] < 0.1, parity
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text()
    assert f"FROM ./model-{quant}.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    fields = gguf.GGUFReader(tmp_path / "gguf" / f"model-{quant}.gguf").fields
    head_dim = fields["llama.embedding_length"].contents() // fields["llama.attention.head_count"].contents()
    assert [fields[f"llama.attention.{kind}_length"].contents() for kind in ("key", "value")] == [head_dim] * 2
    # said, not left to each runtime's default (Ollama's adds a BOS where the flag is absent)
    assert [fields[f"tokenizer.ggml.add_{kind}_token"].contents() for kind in ("bos", "eos")] == [False, False]
    assert "<|im_start|>{{ .Role }}" in modelfile
    # a request's system message reaches the template twice (.System and .Messages): rendered once
    assert '{{- if ne .Role "system" }}' in modelfile


def test_a_gguf_of_an_unknown_split_pre_tokenizer_points_to_llama_cpp_s_converter(tiny_model_dir, tmp_path):
    from finjust.export.gguf_writer import _pre_tokenizer

    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}  # fmt: skip
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)  # transformers 5 names no class "...Fast"
    with pytest.raises(ExportError, match="cannot name this tokenizer's pre-tokenizer.*convert_hf_to_gguf.py"):
        _pre_tokenizer(tokenizer, tmp_path)


@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama_cpp (llama-cpp-python) is not importable; see the Makefile")
def test_a_gguf_whose_vocabulary_is_scrambled_fails_though_its_answers_agree(lora_run, tmp_path, monkeypatch):
    import gguf

    add_token_list = gguf.GGUFWriter.add_token_list

    def rotated(self, tokens):  # every ordinary token's text moved to another id
        tokens = list(tokens)
        return add_token_list(self, tokens[:3] + tokens[103:] + tokens[3:103])

    monkeypatch.setattr(gguf.GGUFWriter, "add_token_list", rotated)
    with pytest.raises(ExportError, match="encode 8 of 8 prompts differently from the trained model"):
        export_run(lora_run, "gguf", out=tmp_path / "gguf", quant="f16")


@pytest.mark.parametrize("damage", ["no tokenizer files", "another chat template"])
def test_a_merged_export_whose_tokenizer_is_not_the_trained_one_fails(lora_run, tmp_path, monkeypatch, damage):
    from finjust.export import merged

    save = merged.save_merged

    def damaged(model, tokenizer, folder):
        save(model, tokenizer, folder)
        if damage == "no tokenizer files":
            for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
                (folder / name).unlink(missing_ok=True)
        else:
            template = folder / "chat_template.jinja"
            template.write_text(template.read_text().replace("<|im_start|>", "<|im_start|> "))

    monkeypatch.setattr(merged, "save_merged", damaged)
    expected = "tokenizer files do not load" if damage == "no tokenizer files" else "prompts differently"
    with pytest.raises(ExportError, match=expected):
        export_run(lora_run, "merged", out=tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_the_modelfile_keeps_the_system_prompt_training_saw():
    from conftest import build_tokenizer

    from finjust.export.gguf_format import default_system_prompt, modelfile

    tokenizer = build_tokenizer()
    assert default_system_prompt(tokenizer) is None  # the fixture's ChatML adds none
    default = "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}"
    tokenizer.chat_template = default + tokenizer.chat_template
    assert default_system_prompt(tokenizer) == "Be brief."
    text = modelfile("m.gguf", tokenizer.chat_template, "<|im_end|>", "Be brief.")
    assert 'SYSTEM """Be brief."""' in text


@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama_cpp (llama-cpp-python) is not importable; see the Makefile")
def test_an_f16_gguf_whose_logits_drift_fails_though_its_greedy_tokens_agree(lora_run, tmp_path, monkeypatch):
    from finjust.export.source import ExportSource

    merged = ExportSource.merged

    def drifted(self):  # every logit x1.5: the same argmax, so the same greedy answers
        model = merged(self)
        if not getattr(model, "drifted", False):
            with torch.no_grad():
                model.model.norm.weight.mul_(1.5)
            model.drifted = True
        return model

    monkeypatch.setattr(ExportSource, "merged", drifted)
    with pytest.raises(ExportError, match="failed its parity check.*logit"):
        export_run(lora_run, "gguf", out=tmp_path / "gguf", quant="f16")


@pytest.mark.skipif(not HAS_ONNX, reason="onnx, onnxruntime or onnxscript is not installed")
def test_onnx_logits_match(lora_run, tmp_path):
    result = export_run(lora_run, "onnx", out=tmp_path / "onnx", prompts=3, max_new_tokens=4)
    parity = result["parity"]
    assert parity["runtime"] == "onnxruntime" and parity["exact"] == 1.0
    assert parity["max_logit_diff"] < 1e-4


@pytest.mark.skipif(not HAS_TORCHAO, reason="torchao (the int8 export's quantiser) is not installed")
def test_int8_loads_back_and_answers(lora_run, tmp_path):
    from finjust.export.int8 import load_int8

    result = export_run(lora_run, "int8", out=tmp_path / "int8")  # under the format's own parity bar
    assert result["fp32_parameter_bytes"] > 0 and result["parity"]["export_tokens"] > 0
    assert result["parity"]["agreement"] >= 0.6  # a wrong model agrees on none of the tokens
    model = load_int8(tmp_path / "int8")
    layer = model.model.layers[0]
    for linear in (layer.self_attn.q_proj, layer.mlp.down_proj):
        assert type(linear.weight).__name__ == "Int8Tensor" and linear.weight.qdata.dtype == torch.int8
    assert model.lm_head.weight.dtype == torch.float32  # the head (the tied embedding here) stays fp32
    out = model.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 3
    description = tmp_path / "int8" / "int8.json"
    description.write_text(json.dumps({**json.loads(description.read_text()), "scheme": "torch.ao quantize_dynamic"}))
    with pytest.raises(ExportError, match="written with another int8 scheme .* export the run again"):
        load_int8(tmp_path / "int8")  # a folder of the dynamic-quantisation scheme earlier versions wrote
    description.write_text("{")
    with pytest.raises(ExportError, match="int8.json is missing or damaged"):
        load_int8(tmp_path / "int8")


@pytest.mark.skipif(not HAS_TORCHAO, reason="torchao (the int8 export's quantiser) is not installed")
def test_int8_refuses_a_model_without_linear_layers_to_quantise():
    from transformers import GPT2Config, GPT2LMHeadModel

    from finjust.export.int8 import quantize

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    with pytest.raises(ExportError, match="GPT2LMHeadModel has no nn.Linear layer for int8"):
        quantize(model)  # its blocks' layers are Conv1D, its head (nn.Linear) stays fp32


def test_a_failed_parity_check_raises_and_writes_nothing(lora_run, tmp_path, monkeypatch):
    merged = type(get_format("merged"))
    lossless = merged.thresholds
    # an agreement above 1 no format can reach (export_run refuses it as an option)
    monkeypatch.setattr(merged, "thresholds", lambda self, quant: dataclasses.replace(lossless(self, quant),
                                                                                       min_agreement=1.5))
    with pytest.raises(ExportError, match="failed its parity check.*token agreement") as caught:
        export_run(lora_run, "merged", out=tmp_path / "out")
    assert "nothing was written" in str(caught.value)
    assert "lossless" in str(caught.value) and "--min-agreement" not in str(caught.value)  # it cannot help here
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".out.lock"]  # no temp folder left behind either
    assert caught.value.result["parity"]["passed"] is False  # the report, for --json
    report = tmp_path / "report" / "failed.json"
    assert main(["export", str(lora_run), "--format", "merged", "--out", str(tmp_path / "out"),
                 "--json", str(report)]) == 2  # fmt: skip
    assert json.loads(report.read_text())["parity"]["failures"]  # why it failed, though no export was written


def test_an_export_tidies_what_a_killed_export_of_it_left(lora_run, tmp_path):
    (tmp_path / ".out.old").mkdir()  # moved aside while its replacement was renamed in
    (tmp_path / ".out.k3j_9xq2.finjust-tmp").mkdir()  # half-written
    (tmp_path / ".out.mynotes1").write_text("a user's own")  # not ours: it stays
    export_run(lora_run, "adapter", out=tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", ".out.mynotes1", "out"]


HOLD_LOCK = """
import sys, time
from pathlib import Path
from finjust.folder_lock import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_an_export_to_a_folder_another_export_is_writing_is_refused(lora_run, tmp_path):
    # the other export's temp folder: a second export used to delete it as a killed one's, and
    # the first then moved a folder holding only its export.json into place as a passed export
    live = tmp_path / ".out.k3j_9xq2.finjust-tmp"
    live.mkdir()
    held = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "out")], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert held.stdout.readline() == "locked\n"
        with pytest.raises(FolderBusyError, match=f"another finjust process is running in {tmp_path / 'out'}"):
            export_run(lora_run, "adapter", out=tmp_path / "out")
        assert live.is_dir() and not (tmp_path / "out").exists()
    finally:
        held.kill()
        held.wait()


@pytest.mark.parametrize(("damage", "named"), [
    (lambda adapter: (adapter / "adapter_model.safetensors").unlink(), "holds no LoRA adapter weights"),
    (lambda adapter: os.truncate(adapter / "adapter_model.safetensors", 1000), "cannot be loaded (SafetensorError"),
    (lambda adapter: (adapter / "adapter_config.json").write_text('{"peft_type": '), "cannot be loaded (JSONDecodeError"),
])  # fmt: skip
def test_a_damaged_trained_adapter_is_named_not_a_traceback(lora_run, tmp_path, capsys, damage, named):
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    damage(run / "adapter")
    capsys.readouterr()
    assert main(["export", str(run), "--format", "merged"]) == 2
    error = capsys.readouterr().err
    assert str(run / "adapter") in error and named in error


@pytest.mark.parametrize("inside", ["adapter", "adapter/exp", "."])
def test_an_export_into_or_around_the_trained_artifact_is_refused(lora_run, inside):
    with pytest.raises(ExportError, match="the run's trained artifact"):
        export_run(lora_run, "adapter", out=lora_run / inside)
    assert not (lora_run / "adapter" / "exp").exists()


def test_an_unknown_quant_lists_the_valid_ones(lora_run):
    with pytest.raises(ExportError, match="q4_k_m"):
        export_run(lora_run, "gguf", quant="q3_x")
    with pytest.raises(ExportError, match="does not apply"):
        export_run(lora_run, "merged", quant="q8_0")


def test_export_refuses_to_replace_a_foreign_folder(lora_run, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a finjust export"):
        export_run(lora_run, "merged", out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_an_export_replaces_its_own_runs_export_but_not_another_runs(lora_run, tmp_path):
    out = tmp_path / "shared"
    export_run(lora_run, "adapter", out=out)
    export_run(lora_run, "adapter", out=out)  # its own: replaced
    result = json.loads((out / "export.json").read_text())
    result["run"] = str(tmp_path / "another-run")
    (out / "export.json").write_text(json.dumps(result))
    with pytest.raises(ExportError, match=f"{out} holds an export of another run \\({tmp_path / 'another-run'}\\)"):
        export_run(lora_run, "adapter", out=out)
    moved = tmp_path / "moved"
    shutil.copytree(lora_run, moved)
    export_run(moved, "adapter")  # an export inside the run folder: still the run's own after a move
    inside = json.loads((moved / "export" / "adapter" / "export.json").read_text())
    inside["run"] = str(lora_run)
    (moved / "export" / "adapter" / "export.json").write_text(json.dumps(inside))
    assert export_run(moved, "adapter")["run"] == str(moved)


@pytest.mark.parametrize("below", ["", "sub"])
def test_an_export_onto_or_under_a_file_is_refused_naming_it(lora_run, tmp_path, below):
    (tmp_path / "afile").write_text("keep me")
    with pytest.raises(ExportError, match=f"{tmp_path / 'afile'} is a file, not a folder"):
        export_run(lora_run, "adapter", out=tmp_path / "afile" / below if below else tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize(("option", "message"), [
    ({"prompts": -1}, "prompts=-1 must be a whole number of at least 1"),
    ({"max_new_tokens": 0}, "max_new_tokens=0 must be"),  # was read as "the recipe's"
    ({"min_agreement": 2.0}, "min_agreement=2.0 must be a number from 0 to 1"),
    ({"min_agreement": float("nan")}, "min_agreement=nan must be"),
])  # fmt: skip
def test_the_api_refuses_export_options_the_command_line_refuses(option, message, tmp_path):
    with pytest.raises(ExportError, match=message):
        export_run(tmp_path / "no-such-run", "adapter", **option)


def test_a_method_that_cannot_merge_is_named(lora_run, tmp_path, capsys):
    # a copy of the run that says it trained prompt tuning (whose artifact is a peft adapter folder too)
    import shutil

    run = tmp_path / "run"
    shutil.copytree(lora_run, run, ignore=shutil.ignore_patterns("export"))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["method"] = {"name": "prompt_tuning"}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["export", str(run), "--format", "merged"]) == 2
    assert "'prompt_tuning' cannot be merged" in capsys.readouterr().err
    assert not (run / "export").exists()


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # bf16: "auto" on AMX CPUs and GPUs
def test_a_qlora_run_merges_dequantised(tiny_model_dir, tmp_path, dtype):
    # 4-bit steps are slow: keep it short
    run = _train(tiny_model_dir, tmp_path, "qlora", steps=1, test_examples=2, dtype=dtype)
    # a bf16 run's reference was reloaded in bf16 and missed the merged export's 1e-3 (by 3e-2)
    result = export_run(run, "merged", out=tmp_path / "merged", prompts=2, max_new_tokens=4)
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config  # plain weights: no bitsandbytes needed to load
    assert result["parity"]["passed"] and result["parity"]["exact"] == 1.0


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--min-agreement", "nan", "must be a number from 0 to 1"),
    ("--max-new-tokens", "-3", "must be at least 1"),
    ("--json", ".", "is a folder; give a file path"),
])  # fmt: skip
def test_bad_export_options_are_refused_before_any_work(tmp_path, capsys, option, value, message):
    # argparse's usage error
    assert main(["export", str(tmp_path / "no-such-run"), "--format", "adapter", option, value]) == 2
    assert message in capsys.readouterr().err


def test_export_json_holds_absolute_paths_whatever_was_typed(lora_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = export_run(os.path.relpath(lora_run), "adapter", out="relative")
    assert result["path"] == str(tmp_path / "relative") and result["run"] == str(lora_run)
    assert str(tmp_path / "relative") in result["load"]


def test_load_hints_paste_into_a_shell_or_python_with_a_space_in_the_path(tmp_path):
    import shlex

    from finjust.export.int8 import DESCRIPTION

    folder = tmp_path / "runs with space" / "export"
    folder.mkdir(parents=True)
    gguf = get_format("gguf").notes(folder, "q8_0")["load"]
    llama, ollama = gguf.split("; ")
    assert shlex.split(llama)[2] == str(folder / "model-q8_0.gguf")
    assert shlex.split(ollama)[-1] == str(folder / "Modelfile")
    (folder / DESCRIPTION).write_text(json.dumps({"load": "from finjust.export.int8 import load_int8; "
                                                          "load_int8(folder)", "fp32_parameter_bytes": 1}))  # fmt: skip
    assert f"load_int8({str(folder)!r})" in get_format("int8").notes(folder, None)["load"]
    adapter = get_format("adapter").notes(folder, None)["load"]
    assert f".load(BASE, Path({str(folder)!r}))" in adapter
    assert "load_model(BASE_MODEL, dtype='float32')" in adapter  # a bf16 base with bitfit's fp32 biases fails


def test_a_virtual_token_adapter_s_notes_say_to_generate_through_finjust(tmp_path):
    adapter = get_format("adapter")
    assert "generate" not in adapter.notes(tmp_path, None)  # bitfit, freeze, full: no adapter_config.json
    for peft_type, warned in (("PREFIX_TUNING", True), ("PROMPT_TUNING", True), ("LORA", False)):
        (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type}))
        notes = adapter.notes(tmp_path, None)
        assert ("model_generate" in str(notes.get("generate"))) == warned


@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama_cpp (llama-cpp-python) is not importable; see the Makefile")
def test_an_exported_gguf_loads_back_as_a_model_without_progress_bars(lora_run, tmp_path, monkeypatch, capfd):
    export_run(lora_run, "gguf", out=tmp_path / "gguf", quant="f16")
    monkeypatch.setenv("FINJUST_CACHE", str(tmp_path / "cache"))
    capfd.readouterr()
    loaded = load_model(str(tmp_path / "gguf" / "model-f16.gguf"))
    assert loaded.folder.parent.parent == tmp_path / "cache"  # converted into the cache
    assert loaded.model.config.num_hidden_layers == 2
    printed = capfd.readouterr()
    assert "quantizing" not in printed.err + printed.out and "shards" not in printed.err + printed.out


def test_a_gguf_of_another_architecture_is_refused_before_the_merge(tmp_path):
    from types import SimpleNamespace

    def merged():
        raise AssertionError("merged first: a 7B merge only to be told no")

    source = SimpleNamespace(base=SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(model_type="qwen2"))),
                             merged=merged)  # fmt: skip
    with pytest.raises(ExportError, match=r"supports Llama-architecture models; this one is 'qwen2': export --format"):
        get_format("gguf").write(source, tmp_path, None)
