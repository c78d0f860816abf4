"""Every method through ``main(["train", ...])`` on the tiny model, and QLoRA learning end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finjust.cli.main import main
from finjust.methods import METHODS, get_method
from finjust.recipe import load_recipe
from finjust.train.run import run_recipe

HAS_BITSANDBYTES = importlib.util.find_spec("bitsandbytes") is not None
needs_bitsandbytes = pytest.mark.skipif(not HAS_BITSANDBYTES, reason="bitsandbytes is not installed (qlora needs it)")
#: the file each method's artifact folder must hold
SAVED = {"adapter": "adapter_model.safetensors", "model": "model.safetensors", "trained": "trained.safetensors"}


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # bf16: methods keeping fp32 masters mix dtypes
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[needs_bitsandbytes] if n == "qlora" else []) for n in METHODS.names()]
)
def test_each_method_trains_from_the_command_line(name, dtype, tiny_recipe, tmp_path, capsys):
    recipe = str(tiny_recipe())
    argv = ["train", recipe, f"method.name={name}", f"model.dtype={dtype}", "train.max_steps=2", "eval.generate=false"]
    assert main(argv) == 0
    run = tmp_path / "run"
    method = get_method(name)
    assert (run / method.artifact_dir / SAVED[method.artifact_dir]).is_file()
    assert (run / method.artifact_dir / "tokenizer_config.json").is_file()
    assert [r["step"] for r in _records(run) if r["type"] == "train"] == [1, 2]
    assert json.loads((run / "scorecard.json").read_text())["tuned"]["test_loss"] > 0
    assert f"method {name}: " in capsys.readouterr().err  # the trainable share, before training


@needs_bitsandbytes
def test_qlora_learns_through_run_recipe_and_rescores(tiny_recipe, tmp_path):
    """Validation runs between steps on the 4-bit model: the adapter must keep learning anyway."""
    events: list[tuple[str, dict]] = []
    settings = ["train.max_steps=12", "train.eval_every=3", "train.patience=null", "eval.generate=false"]
    recipe = load_recipe(tiny_recipe(method={"name": "qlora"}), settings)
    result = run_recipe(recipe, on_event=lambda kind, payload: events.append((kind, payload)))
    warned_slower = any(kind == "warning" and "slower" in payload["text"] for kind, payload in events)
    assert warned_slower == (not torch.cuda.is_available())  # 4-bit saves time only on a GPU
    records = _records(result.run_dir)
    losses = [r["loss"] for r in records if r["type"] == "train"]
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3, losses
    evals = [r for r in records if r["type"] == "eval"]
    assert len(evals) == 4 and all(r["improved"] for r in evals), evals
    assert result.scorecard["tuned"]["test_loss"] < result.scorecard["base"]["test_loss"]
    adapter = load_file(str(result.run_dir / "adapter" / "adapter_model.safetensors"))
    assert all(float(t.abs().sum()) > 0 for n, t in adapter.items() if "lora_B" in n)  # lora_B starts at zero
    assert main(["eval", str(result.run_dir)]) == 0
    rescored = json.loads((result.run_dir / "scorecard.json").read_text())
    assert rescored["tuned"]["test_loss"] == pytest.approx(result.scorecard["tuned"]["test_loss"], rel=1e-4)


def test_prompt_tuning_answers_in_the_scorecard(tiny_recipe, tmp_path):
    recipe = tiny_recipe(method={"name": "prompt_tuning", "virtual_tokens": 4})
    assert main(["train", str(recipe), "train.max_steps=1"]) == 0
    scorecard = json.loads((tmp_path / "run" / "scorecard.json").read_text())
    assert scorecard["answers"] and all(isinstance(item["tuned"], str) for item in scorecard["answers"])
    assert any(item["tuned"].strip() for item in scorecard["answers"])  # the virtual tokens reach generation


def test_a_prompt_tuning_export_says_how_to_generate_from_it(tiny_recipe, tmp_path, capsys):
    recipe = tiny_recipe(method={"name": "prompt_tuning", "virtual_tokens": 4})
    assert main(["train", str(recipe), "train.max_steps=1"]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "--format", "adapter", "--prompts", "2"]) == 0
    table = capsys.readouterr().out
    assert "passed" in table and "model_generate(model" in table  # plain peft would generate it wrongly
