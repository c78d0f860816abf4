"""Forgetting: the probe, retention arithmetic, the guard and the mitigations."""

from __future__ import annotations

import json

from safetensors.torch import load_file

from finjust.cli.main import main
from finjust.eval.forgetting import is_correct, load_probe, replay_texts, retention
from finjust.train.checkpoint import latest_checkpoint


def test_the_probe_ships_and_never_overlaps_replay():
    probe = load_probe()
    assert len(probe.texts) >= 40 and len(probe.questions) >= 40
    assert not set(probe.texts) & set(replay_texts())


def test_answers_are_checked_as_whole_words():
    assert is_correct("It freezes at 0 °C.", ["0", "zero"])
    assert not is_correct("It boils at 100 degrees.", ["0"])
    assert is_correct("The capital is PARIS.", ["Paris"])


def test_retention_is_tuned_relative_to_base_and_the_smaller_one_counts():
    base = {"general_perplexity": 50.0, "general_qa_accuracy": 0.8}
    tuned = {"general_perplexity": 100.0, "general_qa_accuracy": 0.8}
    kept = retention(base, tuned)
    assert kept["general_text"]["retention"] == 0.5 and kept["general_qa"]["retention"] == 1.0
    assert kept["retention"] == 0.5


def _evals(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]


def test_the_guard_stops_a_run_whose_retention_is_forced_down(tiny_recipe, tmp_path):
    # full fine-tuning at a far too high rate wrecks the tiny model's general text perplexity
    recipe = tiny_recipe(method={"name": "full"},
                         train={"lr": 0.05, "eval_every": 2, "epochs": 10, "forgetting_guard": 0.99})  # fmt: skip
    assert main(["train", str(recipe), "eval.generate=false"]) == 0
    evals = _evals(tmp_path / "run")
    assert evals[-1]["stop_reason"] == "forgetting" and evals[-1]["retention"] < 0.99
    assert len(evals) < 10 * 4
    scorecard = json.loads((tmp_path / "run" / "scorecard.json").read_text())
    assert scorecard["stop_reason"] == "forgetting"
    kept_steps = [e["step"] for e in evals if e["retention"] >= 0.99]
    assert scorecard["best_step"] in (kept_steps or [max(evals, key=lambda e: e["retention"])["step"]])
    assert "retention" in scorecard


def test_replay_mixes_general_passages_into_training(tiny_recipe, tmp_path, capsys):
    recipe = tiny_recipe(train={"replay": 0.5, "epochs": 1})
    assert main(["train", str(recipe), "eval.generate=false", "eval.retention=false"]) == 0
    assert "replay: 14 general-text passages" in capsys.readouterr().err  # 0.5 * 29 training examples


def test_l2sp_keeps_weights_nearer_the_pretrained_ones(tiny_recipe, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    base = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_parameters())

    def distance_after_training(l2sp: float) -> float:
        recipe = tiny_recipe(method={"name": "full"}, train={"lr": 1e-2, "l2sp": l2sp, "patience": None})
        run = tmp_path / f"run-{l2sp}"
        assert main(["train", str(recipe), "train.max_steps=8", "eval.generate=false", "eval.retention=false",
                     f"output.dir={run}"]) == 0  # fmt: skip
        trained = load_file(str(latest_checkpoint(run / "checkpoints") / "trainable.safetensors"))
        return sum(float((trained[n] - base[n].detach()).pow(2).sum()) for n in trained)

    assert distance_after_training(50.0) < 0.5 * distance_after_training(0.0)
