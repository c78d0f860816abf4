"""Whole runs through ``main(argv)`` on the tiny model: the files a run leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM

from finjust import load_recipe, run_recipe
from finjust.cli.main import main
from finjust.errors import CheckpointError


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_a_complete_run_folder(tiny_recipe, tmp_path, capsys):
    recipe = tiny_recipe()
    assert main(["train", str(recipe), "train.max_steps=3", "train.eval_every=1"]) == 0
    run = tmp_path / "run"
    for name in ("recipe.yaml", "manifest.json", "metrics.jsonl", "scorecard.json", "adapter/adapter_config.json"):
        assert (run / name).is_file(), name
    scorecard = json.loads((run / "scorecard.json").read_text())
    assert set(scorecard["base"]) == {"test_loss", "perplexity", "exact_match", "token_f1", "rouge_l"}
    assert scorecard["n_test"] == 8 and set(scorecard["tuned"]) == set(scorecard["base"])
    records = _records(run)
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3]
    assert [r["step"] for r in records if r["type"] == "eval"] == [1, 2, 3]
    assert "Scorecard on 8 held-out test examples" in capsys.readouterr().out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["sizes"] == {"train": 29, "validation": 3, "test": 8}


def test_the_adapter_loads_with_peft_directly(tiny_recipe, tiny_model_dir, tmp_path):
    assert main(["train", str(tiny_recipe()), "train.max_steps=2"]) == 0
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "run" / "adapter")
    lora_b = [weight for name, weight in model.named_parameters() if "lora_B" in name]
    # peft starts B at zero and only warns about keys it cannot place: trained values prove the load
    assert lora_b and all(bool(weight.abs().sum() > 0) for weight in lora_b)


def test_training_loss_falls(tiny_recipe, tmp_path):
    assert main(["train", str(tiny_recipe()), "train.epochs=6", "eval.generate=false"]) == 0
    losses = [r["loss"] for r in _records(tmp_path / "run") if r["type"] == "train"]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    scorecard = json.loads((tmp_path / "run" / "scorecard.json").read_text())
    assert scorecard["tuned"]["test_loss"] < scorecard["base"]["test_loss"]


def test_full_fine_tuning_saves_safetensors(tiny_recipe, tmp_path):
    recipe = tiny_recipe(method={"name": "full"}, train={"lr": 1e-3})
    assert main(["train", str(recipe), "train.max_steps=2", "eval.generate=false"]) == 0
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_eval_rescores_a_run_and_writes_json(tiny_recipe, tmp_path):
    assert main(["train", str(tiny_recipe()), "train.max_steps=2"]) == 0
    out = tmp_path / "score.json"
    assert main(["eval", str(tmp_path / "run"), "--json", str(out)]) == 0
    scorecard = json.loads(out.read_text())
    assert {"base", "tuned", "n_test"} <= set(scorecard)
    trained = json.loads((tmp_path / "run" / "scorecard.json").read_text())
    assert abs(scorecard["tuned"]["test_loss"] - trained["tuned"]["test_loss"]) < 1e-4


def test_early_stopping_keeps_the_best_checkpoint(tiny_recipe, tmp_path):
    # a learning rate far too high makes validation loss climb after the first steps
    recipe = tiny_recipe(method={"name": "full"}, train={"lr": 0.3, "eval_every": 1, "patience": 2, "epochs": 20})
    assert main(["train", str(recipe), "eval.generate=false"]) == 0
    evals = [r for r in _records(tmp_path / "run") if r["type"] == "eval"]
    assert evals[-1]["stopped_early"]
    assert len(evals) < 20 * 8
    scorecard = json.loads((tmp_path / "run" / "scorecard.json").read_text())
    assert scorecard["best_step"] == min(evals, key=lambda r: r["val_loss"])["step"]
    assert scorecard["best_step"] < evals[-1]["step"]


def test_a_recipe_with_two_mistakes_reports_both(tiny_recipe, capsys):
    recipe = tiny_recipe(train={"lrr": 1, "batch_size": -1})
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'lr'" in err and "train.batch_size" in err


def test_bad_data_exits_2_naming_file_and_line(tiny_recipe, write_jsonl, capsys):
    bad = write_jsonl("bad.jsonl", [{"instruction": "ok", "output": "ok"}, "{not json"])
    assert main(["train", str(tiny_recipe(data={"train": str(bad)}))]) == 2
    assert f"{bad}:2" in capsys.readouterr().err


def test_an_existing_run_folder_is_not_overwritten(tiny_recipe, capsys):
    recipe = str(tiny_recipe())
    assert main(["train", recipe, "train.max_steps=1", "eval.generate=false"]) == 0
    assert main(["train", recipe, "train.max_steps=1"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_overwrite_replaces_run_folders_only(tiny_recipe, tmp_path, capsys):
    folder = tmp_path / "my documents"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    recipe = str(tiny_recipe(output={"dir": str(folder), "overwrite": True}))
    assert main(["train", recipe, "train.max_steps=1"]) == 2
    assert "not a finjust run folder" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("below", ["", "sub/run"])
def test_an_output_dir_that_is_or_sits_in_a_file_is_refused_naming_it(tiny_recipe, tmp_path, below):
    (tmp_path / "afile").write_text("keep me")
    target = tmp_path / "afile" / below if below else tmp_path / "afile"
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'afile'} is a file, not a folder; choose another"):
        run_recipe(load_recipe(tiny_recipe(output={"dir": str(target)})))
    assert (tmp_path / "afile").read_text() == "keep me"


def test_run_recipe_takes_a_recipe_not_its_dict(tiny_recipe):
    with pytest.raises(TypeError, match="run_recipe takes a Recipe .* not dict"):
        run_recipe({"output": {"dir": "x"}})


def test_the_demo_writes_exactly_the_output_folder_given(tmp_path):
    from finjust.cli.demo import demo_recipe

    output = tmp_path / "runs #2: the demo"  # YAML would read " #" as a comment and ": " as a mapping
    recipe = demo_recipe(str(output), ["train.epochs=1"])
    assert recipe.output.dir == str(output) and recipe.output.overwrite and recipe.train.epochs == 1


def test_the_demo_refuses_output_overrides_that_its_output_option_would_replace(capsys):
    assert main(["demo", "output.dir=/tmp/mine", "output.overwrite=false"]) == 2
    assert "not to output.dir=/tmp/mine, output.overwrite=false: give the folder as --output DIR" in (
        capsys.readouterr().err
    )


def test_resume_continues_the_folder_given_wherever_the_run_began(tiny_recipe, tmp_path):
    assert main(["train", str(tiny_recipe()), "train.max_steps=2", "eval.generate=false", "eval.retention=false"]) == 0
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)
    (moved / "scorecard.json").unlink()
    assert main(["train", "--resume", str(moved)]) == 0
    assert (moved / "scorecard.json").is_file() and not (tmp_path / "run").exists()


def test_resume_tidies_what_writes_killed_midway_left(tiny_recipe, tmp_path):
    assert main(["train", str(tiny_recipe()), "train.max_steps=2", "eval.generate=false", "eval.retention=false"]) == 0
    run = tmp_path / "run"
    # killed while replacing the adapter: the finished one moved aside, the new one half-written
    (run / "adapter").rename(run / ".adapter.old")
    (run / ".adapter.k3j_9xq2.finjust-tmp").mkdir()
    (run / ".scorecard.json.a1b2c3d4.finjust-tmp").write_text("{")
    (run / ".gitignore").write_text("*\n")  # not ours: stays
    assert main(["train", "--resume", str(run)]) == 0
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".finjust-run", ".gitignore"]  # the mark is the run's


def test_a_run_killed_writing_its_first_file_can_start_again(tiny_recipe, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".recipe.yaml.q8w_e7r6.finjust-tmp").write_text("model:")  # all a run killed at once leaves
    assert main(["train", str(tiny_recipe()), "train.max_steps=1", "eval.generate=false", "eval.retention=false"]) == 0
    assert (run / "recipe.yaml").is_file() and not (run / ".recipe.yaml.q8w_e7r6.finjust-tmp").exists()


def test_overwrite_replaces_a_finished_run_whole(tiny_recipe, tmp_path):
    quick = ["eval.generate=false", "eval.retention=false"]
    assert main(["train", str(tiny_recipe()), "train.max_steps=1", *quick]) == 0
    (tmp_path / "run" / "notes.txt").write_text("from the old run")
    assert main(["train", str(tiny_recipe()), "train.max_steps=2", "output.overwrite=true", *quick]) == 0
    run = tmp_path / "run"
    assert not (run / "notes.txt").exists()
    assert [r["step"] for r in _records(run) if r["type"] == "train"] == [1, 2]
    # nothing left beside it but the run's lock file
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".run.")] == [".run.lock"]


QUICK = ["eval.generate=false", "eval.retention=false"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_project_folder_holding_its_own_recipe_is_never_taken_for_a_run(tiny_recipe, tmp_path, capsys, overwrite):
    project = tmp_path / "project"  # the user's: their recipe (output.dir: .) and notes
    project.mkdir()
    recipe = tiny_recipe(output={"dir": str(project), "overwrite": overwrite})
    (project / "recipe.yaml").write_text(recipe.read_text())
    (project / "notes.md").write_text("the user's")
    (project / "data_report.json").write_text("{}")  # `finjust data check recipe.yaml --json data_report.json`
    assert main(["train", str(project / "recipe.yaml"), "train.max_steps=1", *QUICK]) == 2
    assert "not a finjust run folder (a project's own recipe.yaml does not make one)" in capsys.readouterr().err
    assert sorted(p.name for p in project.iterdir()) == ["data_report.json", "notes.md", "recipe.yaml"]
    assert main(["train", "--resume", str(project)]) == 2
    assert "not a finjust run folder" in capsys.readouterr().err


def test_a_run_folder_that_would_hold_the_run_s_data_is_refused(tiny_recipe, tmp_path, write_jsonl, capsys):
    (tmp_path / "run").mkdir()
    data = write_jsonl("run/train.jsonl", [{"instruction": "Hi", "output": "Hello"}] * 8)
    assert main(["train", str(tiny_recipe(data={"train": str(data)})), *QUICK]) == 2
    assert f"output.dir {tmp_path / 'run'} holds the run's data ({data})" in capsys.readouterr().err
    assert data.is_file()


def test_a_run_from_before_the_mark_is_still_a_run(tiny_recipe, tmp_path):
    run = _finished_run(tiny_recipe, tmp_path)
    (run / ".finjust-run").unlink()  # as runs started before 2026-11-27 are
    assert main(["train", str(tiny_recipe()), "train.max_steps=2", "output.overwrite=true", *QUICK]) == 0
    assert not (run / "notes.txt").exists() and (run / ".finjust-run").is_file()


def _finished_run(tiny_recipe, tmp_path) -> Path:
    assert main(["train", str(tiny_recipe()), "train.max_steps=1", *QUICK]) == 0
    run = tmp_path / "run"
    (run / "notes.txt").write_text("from the old run")
    return run


def test_an_overwrite_that_fails_before_training_keeps_the_old_run(tiny_recipe, tmp_path, capsys):
    run = _finished_run(tiny_recipe, tmp_path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n')
    assert main(["train", str(tiny_recipe()), f"data.train={broken}", "output.overwrite=true", *QUICK]) == 2
    assert "broken.jsonl:2" in capsys.readouterr().err
    assert (run / "notes.txt").is_file() and (run / "scorecard.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".run.lock"]


def test_an_interrupted_overwrite_keeps_the_old_run_aside_until_the_new_one_finishes(tiny_recipe, tmp_path):
    from finjust.recipe import load_recipe
    from finjust.train.run import run_recipe

    run = _finished_run(tiny_recipe, tmp_path)
    recipe = load_recipe(tiny_recipe(), ["train.max_steps=3", "train.save_every=1", "output.overwrite=true", *QUICK])

    def interrupt(kind, payload):
        if kind == "step" and payload["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, on_event=interrupt)
    assert (tmp_path / ".run.replaced" / "notes.txt").is_file() and not (run / "notes.txt").exists()

    def interrupt_at_start(kind, payload):
        if kind == "start":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # a resume interrupted too: the old run still waits
        run_recipe(load_recipe(run / "recipe.yaml"), resume=True, on_event=interrupt_at_start)
    assert (tmp_path / ".run.replaced" / "notes.txt").is_file()
    assert main(["train", "--resume", str(run)]) == 0
    assert not (tmp_path / ".run.replaced").exists() and (run / "scorecard.json").is_file()


def test_an_old_run_set_aside_by_a_killed_overwrite_comes_back(tiny_recipe, tmp_path, capsys):
    run = _finished_run(tiny_recipe, tmp_path)
    run.rename(tmp_path / ".run.replaced")  # killed between setting the old run aside and starting the new
    assert main(["train", str(tiny_recipe()), "train.max_steps=1", *QUICK]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run / "notes.txt").is_file()


def _interrupt(monkeypatch, command: str) -> None:
    from finjust.cli.main import subcommand

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(subcommand(command), "run", interrupted)


@pytest.mark.parametrize("command", ["eval", "export"])
def test_ctrl_c_says_nothing_of_resuming_where_nothing_resumes(monkeypatch, capsys, command):
    _interrupt(monkeypatch, command)
    argv = {"eval": ["eval", "run"], "export": ["export", "run", "--format", "merged"]}
    assert main(argv[command]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_ctrl_c_names_the_folder_to_resume(monkeypatch, capsys, tiny_recipe, tmp_path):
    _interrupt(monkeypatch, "train")
    elsewhere = tmp_path / "my runs" / "first"
    assert main(["train", str(tiny_recipe()), f"output.dir={elsewhere}"]) == 130
    assert f"finjust train --resume '{elsewhere}'" in capsys.readouterr().err
    assert main(["train", "--resume", str(elsewhere)]) == 130
    assert f"finjust train --resume '{elsewhere}'" in capsys.readouterr().err
    _interrupt(monkeypatch, "demo")
    assert main(["demo", "--output", "runs/demo2"]) == 130
    assert "finjust train --resume runs/demo2" in capsys.readouterr().err


def test_ctrl_c_after_an_overwrite_rolled_back_says_to_start_again(monkeypatch, capsys, tiny_recipe, tmp_path):
    run = _finished_run(tiny_recipe, tmp_path)  # an overwrite stopped before its first checkpoint leaves it so
    _interrupt(monkeypatch, "train")
    capsys.readouterr()
    assert main(["train", str(tiny_recipe()), "output.overwrite=true"]) == 130
    assert capsys.readouterr().err == (f"interrupted; {run} holds the finished run it was to replace; "
                                       "start again with the same command\n")  # fmt: skip
    _interrupt(monkeypatch, "demo")
    assert main(["demo", "--output", str(run)]) == 130
    assert capsys.readouterr().err.endswith("to replace; run `finjust demo` again\n")


def test_ctrl_c_before_a_recipe_loaded_says_to_start_again(monkeypatch, capsys, tmp_path):
    _interrupt(monkeypatch, "train")
    assert main(["train", str(tmp_path / "missing.yaml")]) == 130
    assert capsys.readouterr().err == "interrupted; start again with the same command\n"


def test_a_run_that_failed_before_computing_anything_starts_again_with_the_same_command(tiny_recipe, tmp_path,
                                                                                      capsys):  # fmt: skip
    refused = ["method.name=freeze", "method.layers=99"]  # past the tiny model's depth: refused once it loads
    assert main(["train", str(tiny_recipe()), *refused, *QUICK]) == 2
    assert "once the cause is fixed, the same command starts it again" in capsys.readouterr().err
    assert main(["train", str(tiny_recipe()), "train.max_steps=1", *QUICK]) == 0


def test_a_run_that_failed_after_scoring_the_base_needs_overwrite_to_start_again(tiny_recipe, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_recipe()), "method.name=freeze", "method.layers=99", *QUICK]) == 2
    (run / "base_scores.json").write_text("{}")  # as a run that failed after scoring the base left it
    assert main(["train", str(tiny_recipe()), "train.max_steps=1", *QUICK]) == 2
    err = capsys.readouterr().err
    assert "stopped before its first checkpoint, so nothing trained is lost" in err and "output.overwrite=true" in err
    assert main(["train", str(tiny_recipe()), "train.max_steps=1", "output.overwrite=true", *QUICK]) == 0


def test_method_options_that_conflict_are_listed_with_the_recipes_other_problems(tiny_recipe, tmp_path, capsys):
    options = ["method.name=ia3", "method.target_modules=[q_proj]", "train.lrr=1"]
    assert main(["train", str(tiny_recipe()), *options]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "ia3 needs both method.target_modules and method.feedforward_modules" in err
    assert not (tmp_path / "run").exists()  # before any run folder: nothing to overwrite after the fix
    assert main(["train", str(tiny_recipe()), "method.name=prompt_tuning", "method.init_text=hello"]) == 2
    assert "method.init_text is given but method.init is 'sample_vocab'" in capsys.readouterr().err


@pytest.mark.parametrize("options", [["method.name=freeze", "method.layers=99"],
                                     ["method.name=lora", "method.target_modules=[no_such_layer]"]])  # fmt: skip
def test_method_options_the_model_refuses_fail_before_the_base_is_scored(tiny_recipe, tmp_path, capsys, options):
    assert main(["train", str(tiny_recipe()), *options, *QUICK]) == 2
    assert "scoring the base" not in capsys.readouterr().err
    assert not (tmp_path / "run" / "base_scores.json").exists()


def test_a_missing_model_or_data_file_is_refused_before_the_run_folder_is_made(tiny_recipe, tmp_path, capsys):
    recipe = str(tiny_recipe())
    assert main(["train", recipe, f"model.name={tmp_path / 'nowhere'}"]) == 2
    assert "neither a shipped model" in capsys.readouterr().err
    assert main(["train", recipe, f"data.train={tmp_path / 'missing.jsonl'}"]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    # both at once: one rerun finds both to fix
    assert main(["train", recipe, f"model.name={tmp_path / 'nowhere'}", f"data.train={tmp_path / 'missing.jsonl'}"]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "neither a shipped model" in err and "missing.jsonl: cannot open" in err
    assert not (tmp_path / "run").exists()  # so the fixed command needs no output.overwrite
    assert main(["train", recipe, "train.max_steps=1", *QUICK]) == 0


def test_resume_with_overrides_says_where_to_edit_the_run_instead(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "run"), "train.max_steps=3"]) == 2
    assert f"edit train.max_steps or train.epochs in {tmp_path / 'run' / 'recipe.yaml'}" in capsys.readouterr().err


def test_sigterm_stops_training_as_ctrl_c_does_and_the_run_resumes(tiny_recipe, tmp_path, child_environment):
    # docker stop, timeout and batch schedulers send SIGTERM: it used to kill the run silently
    import signal
    import subprocess
    import sys
    import time

    recipe = str(tiny_recipe())
    command = [sys.executable, "-m", "finjust", "train", recipe, "train.max_steps=100000", "train.save_every=5",
               "train.eval_every=100000", "train.compile=false", *QUICK]  # fmt: skip
    # faulthandler: should the child abort instead, its threads' Python tracebacks reach the assertion's message
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               env={**child_environment, "PYTHONFAULTHANDLER": "1"})  # fmt: skip
    checkpoints = tmp_path / "run" / "checkpoints"
    try:
        deadline = time.monotonic() + 120
        while not any(checkpoints.glob("step-*")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:  # never leave a 100,000-step run behind
        process.kill()
        process.wait()
    assert any(checkpoints.glob("step-*")), f"no checkpoint within 120 s: {err[-3000:]}"
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]  # what the child said, should it fail
    assert err.splitlines()[-1] == f"terminated (SIGTERM); continue with `finjust train --resume {tmp_path / 'run'}`"
    last = max(int(folder.name.removeprefix("step-")) for folder in checkpoints.glob("step-*"))
    saved = tmp_path / "run" / "recipe.yaml"  # to finish soon: train fewer steps than asked, as a user may edit
    saved.write_text(saved.read_text().replace("max_steps: 100000", f"max_steps: {last + 2}"))
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "scorecard.json").is_file()


def test_a_validation_split_left_empty_by_the_length_limit_is_a_warning(tiny_recipe, write_jsonl, capsys):
    long_answer = " ".join(["fjordbike"] * 400)  # far past data.max_length: dropped
    validation = write_jsonl("validation.jsonl", [{"instruction": "Tell me everything.", "output": long_answer}])
    recipe = tiny_recipe(data={"validation": str(validation), "too_long": "drop"}, train={"max_steps": 1})
    assert main(["train", str(recipe), "eval.generate=false", "eval.retention=false"]) == 0
    err = capsys.readouterr().err
    assert "0 validation examples truncated to data.max_length=" in err and "1 dropped as too long" in err
    assert "none of the 1 validation examples is left to validate on: no early stopping" in err


def test_the_scorecard_json_may_not_replace_the_recipe(tiny_recipe, capsys):
    recipe = tiny_recipe()
    before = recipe.read_text()
    assert main(["train", str(recipe), "--json", str(recipe)]) == 2  # refused before any training
    assert f"--json {recipe}: the command reads it" in capsys.readouterr().err and recipe.read_text() == before


def test_the_scorecard_generates_a_tuned_lora_from_merged_weights(tiny_recipe, monkeypatch):
    from finjust.eval import generate

    merged = []
    real = generate._room_for_a_copy
    monkeypatch.setattr(generate, "_room_for_a_copy", lambda model: merged.append(True) or real(model))
    assert main(["train", str(tiny_recipe()), "train.max_steps=2", "eval.retention=false"]) == 0
    assert merged == [True]  # the tuned model's answers; the base model has no adapter to merge
