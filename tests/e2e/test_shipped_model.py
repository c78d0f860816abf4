"""The real shipped SmolLM2-135M-Instruct: a few LoRA steps through ``finjust demo`` on the demo data."""

from __future__ import annotations

import json

import pytest

from finjust.cli.main import main
from finjust.models.shipped import SHIPPED_MODELS

try:
    SHIPPED_MODELS.get("smollm2-135m-instruct").locate()
    MISSING = None
except Exception as exc:  # noqa: BLE001 - any reason the package is unusable
    MISSING = str(exc)


@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=f"shipped model unavailable: {MISSING}")
def test_demo_runs_a_few_steps_on_the_real_model(tmp_path, capsys):
    out = tmp_path / "scorecard.json"
    argv = ["demo", "--output", str(tmp_path / "run"), "--json", str(out),
            "train.max_steps=4", "eval.max_examples=4", "eval.max_new_tokens=24", "eval.retention=false"]  # fmt: skip
    assert main(argv) == 0
    scorecard = json.loads(out.read_text())
    assert scorecard["n_test"] == 4
    assert scorecard["tuned"]["test_loss"] < scorecard["base"]["test_loss"]
    assert all(item["base"] for item in scorecard["answers"]), "the base model answers every question"
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert "Scorecard on 4 held-out test examples" in capsys.readouterr().out
