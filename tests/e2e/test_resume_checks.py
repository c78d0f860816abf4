"""``--resume`` (and ``eval``, ``export``) refuse a run folder changed since the run started, naming what
changed and what to do."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ASSETS

from finjust.cli.main import main
from finjust.train.checkpoint import latest_checkpoint
from finjust.train.resume_checks import changed_fields

QUICK = ["train.max_steps=2", "train.save_every=1", "eval.generate=false", "eval.retention=false"]


@pytest.fixture
def run(tiny_recipe, tmp_path) -> Path:
    assert main(["train", str(tiny_recipe()), *QUICK]) == 0
    return tmp_path / "run"


def _edit_recipe(run: Path, section: str, key: str, value) -> None:
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe[section][key] = value
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))


def _train_lines(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["type"] == "train"]


def _resume_error(run: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("section", "key", "value", "named"), [
    ("train", "lr", 0.5, "train.lr: 0.01 -> 0.5"),
    ("method", "r", 4, "method.r: 16 -> 4"),
    ("eval", "max_new_tokens", 3, "eval.max_new_tokens: 6 -> 3"),  # the base was scored with 6
])  # fmt: skip
def test_an_edited_recipe_is_refused_naming_the_change(run, capsys, section, key, value, named):
    _edit_recipe(run, section, key, value)
    error = _resume_error(run, capsys)
    assert f"{run / 'recipe.yaml'} changed since the run started ({named})" in error
    assert "only train.compile, train.epochs, train.max_steps, train.patience, train.threads may change" in error
    assert "undo the edit, or start a new run" in error


def test_a_moved_run_resumes_with_its_recipe_unchanged(run, tmp_path):
    moved = tmp_path / "moved"
    run.rename(moved)  # output.dir now differs from where the run started: allowed
    (moved / "scorecard.json").unlink()
    assert main(["train", "--resume", str(moved)]) == 0


def test_changed_data_is_refused(tiny_recipe, tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text((ASSETS / "tiny_train.jsonl").read_text())
    assert main(["train", str(tiny_recipe(data={"train": str(train), "test": str(ASSETS / "tiny_test.jsonl")})),
                 *QUICK]) == 0  # fmt: skip
    records = [json.loads(line) for line in train.read_text().splitlines()]
    records[0]["output"] = "an answer edited after the run started"
    train.write_text("".join(json.dumps(r) + "\n" for r in records))
    error = _resume_error(tmp_path / "run", capsys)
    assert "the data changed since" in error and "restore the data or start a new run" in error
    assert f"; changed: {train})" in error


def test_a_missing_manifest_is_refused_where_checkpoints_exist(run, capsys):
    (run / "manifest.json").unlink()
    error = _resume_error(run, capsys)
    assert f"{run / 'manifest.json'} is missing" in error and "restore it or start a new run" in error


@pytest.mark.parametrize("text", ['{"sha256": {"train": ', "[]", '{"sizes": {}}', '{"sha256": {}}'])
def test_a_damaged_manifest_is_refused_naming_it(run, capsys, text):
    (run / "manifest.json").write_text(text)
    assert str(run / "manifest.json") in _resume_error(run, capsys)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("step", "2", "step is \"2\", expected an integer"),
    ("step", -1, "step is -1, expected an integer"),
    ("best_loss", "low", "best_loss is \"low\", expected a number or null"),
    ("stopped_early", 0, "stopped_early is 0, expected true or false"),
])  # fmt: skip
def test_a_damaged_loop_state_is_refused_naming_the_field(run, capsys, field, value, expected):
    path = latest_checkpoint(run / "checkpoints") / "state.json"
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, field: value}))
    (path.parent / "sha256.json").unlink()  # unchecked, as in a checkpoint from before digests
    error = _resume_error(run, capsys)
    assert str(path) in error and expected in error and "delete its folder" in error


@pytest.mark.parametrize("name", ["trainable.safetensors", "optimizer.pt", "state.json"])
def test_a_checkpoint_file_changed_after_writing_is_refused(run, capsys, name):
    path = latest_checkpoint(run / "checkpoints") / name
    data = bytearray(path.read_bytes())
    data[-3] ^= 1  # one flipped bit near the end of the file
    path.write_bytes(bytes(data))
    error = _resume_error(run, capsys)
    assert f"{path} is missing or damaged (ValueError: its SHA-256 is not the one recorded" in error


def test_a_checkpoint_without_digests_is_read_as_before(run):
    folder = latest_checkpoint(run / "checkpoints")
    (folder / "sha256.json").unlink()  # as checkpoints written before digests were recorded
    (run / "scorecard.json").unlink()
    assert main(["train", "--resume", str(run)]) == 0


def test_a_damaged_metrics_line_is_refused_naming_it(run, capsys):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:-5] + "#####"
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert f"{run / 'metrics.jsonl'} line 2 is not a metrics record" in _resume_error(run, capsys)


@pytest.mark.parametrize(("text", "said"), [('{"metrics": ', "is unreadable"), ("[]", "holds list"),
                                           ('{"metrics": {}, "answers": []}', "is damaged"),
                                           ('{"metrics": {}, "answers": [], "items": {"test_loss": [[1.0, 2]]}}',
                                            "is damaged")])  # fmt: skip
def test_a_damaged_base_score_file_is_refused_then_scored_again(run, capsys, text, said):
    (run / "base_scores.json").write_text(text)
    error = _resume_error(run, capsys)
    assert f"{run / 'base_scores.json'} {said}" in error and "delete it and resume" in error
    (run / "base_scores.json").unlink()
    assert main(["train", "--resume", str(run)]) == 0
    assert (run / "base_scores.json").is_file()


def test_changed_fields_are_named_dotted_with_json_values():
    old = {"train": {"lr": 0.01, "epochs": 2}, "method": {"name": "lora"}, "eval": {"metric_options": {}}}
    new = {"train": {"lr": 0.01, "epochs": 3, "seed": 1}, "method": {"name": "dora"},
           "eval": {"metric_options": {"brand_voice": {"required": ["costs"]}}}}  # fmt: skip
    # train.seed only in the new: a field a finjust upgrade added, not an edit; an entry added
    # to a mapping the user fills is an edit
    assert changed_fields(old, new) == {
        "eval.metric_options": '{} -> {"brand_voice": {"required": ["costs"]}}',
        "method.name": '"lora" -> "dora"', "train.epochs": "2 -> 3",
    }  # fmt: skip


def test_a_project_moved_elsewhere_resumes_with_its_data_paths_changed(tiny_recipe, tmp_path):
    data = tmp_path / "project" / "train.jsonl"
    data.parent.mkdir()
    data.write_text((ASSETS / "tiny_train.jsonl").read_text())
    recipe = tiny_recipe(data={"train": str(data), "test": str(ASSETS / "tiny_test.jsonl")})
    assert main(["train", str(recipe), *QUICK]) == 0
    run = tmp_path / "run"
    moved = data.parent.rename(tmp_path / "moved") / "train.jsonl"
    _edit_recipe(run, "data", "train", str(moved))  # the content, checked by hash, is the same
    (run / "scorecard.json").unlink()
    assert main(["train", "--resume", str(run)]) == 0


def test_a_run_follows_its_base_model_to_another_path_but_not_to_other_weights(run, tmp_path, capsys):
    # a run copied to another machine, where the same model lies elsewhere
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    moved = tmp_path / "models" / "tiny"
    shutil.copytree(recipe["model"]["name"], moved)
    _edit_recipe(run, "model", "name", str(moved))
    (run / "scorecard.json").unlink()
    assert main(["train", "--resume", str(run)]) == 0
    other = tmp_path / "models" / "other"
    shutil.copytree(moved, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-3}))
    _edit_recipe(run, "model", "name", str(other))
    (run / "scorecard.json").unlink()
    assert f"model.name: {json.dumps(recipe['model']['name'])} -> {json.dumps(str(other))}" in _resume_error(run, capsys)


@pytest.mark.parametrize("recorded", [5, None, "x", [1], {"train": 3}])
def test_a_recorded_recipe_that_is_no_recipe_is_refused(run, capsys, recorded):
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "recipe": recorded}))
    assert f"{run / 'manifest.json'}: its 'recipe' is not a recipe" in _resume_error(run, capsys)


def test_a_run_extended_to_more_steps_continues_and_says_so(run, capsys, tiny_recipe, tmp_path):
    _edit_recipe(run, "train", "max_steps", 3)
    (run / "scorecard.json").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    assert "warning: resuming with train.max_steps: 2 -> 3 (recipe.yaml changed since the run started)" in (
        capsys.readouterr().err
    )
    assert latest_checkpoint(run / "checkpoints").name == "step-000003"
    uninterrupted = tmp_path / "three"
    three_steps = [o for o in QUICK if not o.startswith("train.max_steps=")] + ["train.max_steps=3"]
    assert main(["train", str(tiny_recipe()), *three_steps, f"output.dir={uninterrupted}"]) == 0
    # step 3 at the 3-step schedule's rate, not at the end of the 2-step one's (0 for a cosine)
    assert _train_lines(run)[2]["lr"] == _train_lines(uninterrupted)[2]["lr"] > 0
    _edit_recipe(run, "train", "lr", 0.5)  # the manifest now holds the extended recipe: only lr is named
    assert "(train.lr: 0.01 -> 0.5)" in _resume_error(run, capsys)


def test_a_run_folder_in_use_by_another_process_is_refused(run, capsys):
    (run / "scorecard.json").unlink()
    held = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline() == "locked\n"
        error = _resume_error(run, capsys)
        assert f"another finjust process is running in {run}" in error
        assert not (run / "scorecard.json").exists()
    finally:
        held.kill()
        held.wait()
    assert main(["train", "--resume", str(run)]) == 0  # the lock went with the process


HOLD_LOCK = """
import sys, time
from pathlib import Path
from finjust.folder_lock import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_run_set_aside_by_another_process_stays_there_while_it_runs(run, tiny_recipe, capsys):
    (run / "scorecard.json").unlink()
    aside = run.with_name(f".{run.name}.replaced")
    run.rename(aside)  # where an overwrite in progress keeps the old run until the new one finishes
    recipe = str(tiny_recipe())
    held = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline() == "locked\n"
        capsys.readouterr()
        assert main(["train", recipe, *QUICK]) == 2
        assert f"another finjust process is running in {run}" in capsys.readouterr().err
        assert aside.is_dir() and not run.exists()  # its clean-up runs under the lock, so not at all
    finally:
        held.kill()
        held.wait()
    # the holder gone (an overwrite killed midway), the old run comes back, to resume
    assert main(["train", recipe, *QUICK]) == 2
    assert f"continue it with `finjust train --resume {run}`" in capsys.readouterr().err
    assert main(["train", "--resume", str(run)]) == 0
    assert (run / "scorecard.json").is_file() and not aside.exists()


def test_a_damaged_best_checkpoint_says_it_cannot_be_made_again(run):
    from finjust.errors import CheckpointError
    from finjust.train.checkpoint import best_weights

    folder = latest_checkpoint(run / "checkpoints")
    (folder / "trainable.safetensors").write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match=r"best checkpoint \(step 2\).*restore it from a backup, or start a new run"):
        best_weights(run / "checkpoints", 2)
    with pytest.raises(CheckpointError) as caught:
        best_weights(run / "checkpoints", 2)
    assert "delete its folder" not in str(caught.value)  # that resumes from an earlier one: not for the best
    with pytest.raises(CheckpointError, match=r"step 9 is missing.*best checkpoint \(step 9\)"):
        best_weights(run / "checkpoints", 9)


def test_a_filesystem_without_locks_runs_unlocked(monkeypatch, tmp_path):
    import errno
    import fcntl

    from finjust.folder_lock import folder_lock

    def unsupported(handle, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    entered = False
    with folder_lock(tmp_path / "runs" / "run"):  # its parent folder made
        entered = True
    assert entered and (tmp_path / "runs" / ".run.lock").is_file()


def test_a_run_cannot_be_shortened_below_its_checkpoint(run, capsys):
    (run / "scorecard.json").unlink()  # as if interrupted after its last checkpoint
    _edit_recipe(run, "train", "max_steps", 1)
    error = _resume_error(run, capsys)
    assert "is at step 2, past the 1 steps the recipe now plans" in error
    assert "plan at least 2 steps, or start a new run" in error


@pytest.mark.parametrize("command", [["eval"], ["export", "--format", "merged"]])
@pytest.mark.parametrize(("text", "said"), [('{"sha256": ', "is unreadable"),
                                           ('{"sha256": {}}', "is not a run manifest"),  # was a KeyError
                                           ('{"sha256": {"train": 1, "validation": "", "test": ""}}',
                                            "is not a run manifest")])  # fmt: skip
def test_scoring_and_exporting_refuse_a_damaged_manifest_naming_it(run, capsys, command, text, said):
    (run / "manifest.json").write_text(text)
    capsys.readouterr()
    assert main([command[0], str(run), *command[1:]]) == 2
    error = capsys.readouterr().err
    assert f"{run / 'manifest.json'} {said}" in error and "restore it or start a new run" in error


def test_scoring_again_refuses_a_damaged_scorecard_naming_it(run, capsys):
    (run / "scorecard.json").write_text("[1, 2")
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    assert f"{run / 'scorecard.json'} is unreadable" in capsys.readouterr().err


def test_an_extension_interrupted_in_its_first_step_leaves_no_finished_look(run, monkeypatch, capsys):
    import finjust.train.loop as loop

    _edit_recipe(run, "train", "max_steps", 3)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(loop, "_one_step", interrupted)
        assert main(["train", "--resume", str(run)]) == 130
    # the step-2 weights and their scorecard would pass for the 3-step run's
    assert not (run / "scorecard.json").exists() and not (run / "adapter").exists()
    assert main(["eval", str(run)]) == 2 and "the run has not finished" in capsys.readouterr().err
    assert main(["train", "--resume", str(run)]) == 0
    assert json.loads((run / "scorecard.json").read_text())["best_step"] in (2, 3)


def test_a_refused_resume_leaves_the_recorded_recipe_as_it_was(run, capsys):
    _edit_recipe(run, "train", "max_steps", 1)  # below the checkpoint's step 2: the loop refuses it
    assert main(["train", "--resume", str(run)]) == 2
    assert "a run cannot be shortened after the fact" in capsys.readouterr().err
    _edit_recipe(run, "train", "max_steps", 2)
    assert main(["train", "--resume", str(run)]) == 0
    assert "resuming with" not in capsys.readouterr().err  # no "1 -> 2": 1 was never recorded
    _edit_recipe(run, "train", "max_steps", 3)
    assert main(["train", "--resume", str(run)]) == 0
    assert "resuming with train.max_steps: 2 -> 3" in capsys.readouterr().err
    assert main(["train", "--resume", str(run)]) == 0
    assert "resuming with" not in capsys.readouterr().err  # recorded once that resume trained


def test_base_scores_of_test_records_changed_outside_the_split_hashes_are_scored_again(tmp_path):
    from finjust.data.example import Example, Message
    from finjust.eval.scorecard import ModelScores
    from finjust.train.run import save_base_scores, saved_base_scores
    from finjust.train.run_folder import RunFolder

    folder = RunFolder(tmp_path)
    test = [Example((Message("user", "Founded?"), Message("assistant", "In 2016.")), meta={"facts": ["2016"]})]
    scores = ModelScores({"fact_recall": 0.0}, ["no idea"], {"fact_recall": [0.0]})
    save_base_scores(folder, scores, test)
    assert saved_base_scores(folder, test) == scores
    # the same messages (so the same split hashes), other facts: the base's old scores no longer apply
    assert saved_base_scores(folder, [Example(test[0].messages, meta={"facts": ["Gothenburg"]})]) is None
    saved = json.loads(folder.base_scores.read_text())
    folder.base_scores.write_text(json.dumps({k: v for k, v in saved.items() if k != "inputs_sha256"}))
    assert saved_base_scores(folder, test) == scores  # an earlier run's file: read as before


def test_splits_that_differ_from_unchanged_files_are_put_down_to_how_finjust_reads_them():
    from finjust.train.resume_checks import changed_files

    sources = {"/data/docs": "682673dd50c6", "/data/d.csv": "0caf3e3b9faa"}
    assert changed_files({"sources": sources}, {"sources": {**sources, "/data/d.csv": "ffff"}}) == \
        "; changed: /data/d.csv"  # fmt: skip
    said = changed_files({"sources": sources}, {"sources": dict(sources)})
    assert "every data file is as it was: this finjust version reads them differently" in said
