"""The public API is pinned: changing it is a deliberate act."""

import importlib.util
import subprocess
import sys

import pytest

import finjust


def test_public_names_are_pinned():
    assert sorted(finjust.__all__) == sorted(
        [
            "METHODS", "CheckpointError", "CompileError", "DataError", "EvaluationError", "ExportError",
            "FinjustError", "FolderBusyError", "Method", "MethodError", "ModelLoadError", "Recipe", "RecipeError",
            "RunResult", "ServeError", "SettingError", "UnknownNameError",
            "evaluate_run", "export_run", "get_method", "load_model", "load_recipe", "recipe_from_dict", "run_recipe",
            "save_recipe",
        ]
    )  # fmt: skip
    for name in finjust.__all__:
        assert hasattr(finjust, name), name


def test_every_error_class_is_public():
    # a caller catching one kind of failure must be able to name it
    import inspect

    from finjust import errors

    defined = {name for name, value in inspect.getmembers(errors, inspect.isclass)
               if issubclass(value, errors.FinjustError) and value.__module__ == errors.__name__}  # fmt: skip
    assert defined <= set(finjust.__all__)


def test_importing_finjust_loads_no_torch():
    code = "import sys, finjust; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_a_run_sets_its_threads_and_gives_the_callers_back(tiny_recipe):
    import torch

    from finjust import load_recipe, run_recipe

    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2
    during = []
    recipe = load_recipe(tiny_recipe(train={"max_steps": 1, "threads": wanted}, eval={"generate": False}))
    run_recipe(recipe, on_event=lambda kind, payload: during.append(torch.get_num_threads()) if kind == "step" else None)
    assert during == [wanted] and torch.get_num_threads() == before


def test_a_recipe_built_in_python_with_relative_paths_leaves_a_run_that_eval_and_resume_can_read(
    tiny_model_dir, tmp_path, monkeypatch
):
    import shutil

    import yaml
    from conftest import ASSETS

    from finjust import evaluate_run, recipe_from_dict, run_recipe
    from finjust.cli.main import main

    (tmp_path / "my data").mkdir()
    for name in ("tiny_train.jsonl", "tiny_test.jsonl"):
        shutil.copy(ASSETS / name, tmp_path / "my data" / name)
    monkeypatch.chdir(tmp_path)
    recipe = recipe_from_dict({
        "model": {"name": str(tiny_model_dir), "dtype": "float32"},
        "data": {"train": "my data/tiny_train.jsonl", "test": "my data/tiny_test.jsonl"},
        "train": {"max_steps": 1}, "eval": {"generate": False, "retention": False}, "output": {"dir": "runs/api"},
    })  # fmt: skip
    result = run_recipe(recipe)
    assert result.run_dir == tmp_path / "runs" / "api"
    saved = yaml.safe_load((result.run_dir / "recipe.yaml").read_text())
    assert saved["data"]["train"] == str(tmp_path / "my data" / "tiny_train.jsonl")
    assert evaluate_run(result.run_dir)["tuned"]["test_loss"] == pytest.approx(result.scorecard["tuned"]["test_loss"])
    assert main(["train", "--resume", str(result.run_dir)]) == 0  # finished: it says so and scores again


def test_an_api_run_shows_no_peft_deprecation_warning(tiny_recipe):
    import warnings

    from finjust import evaluate_run, load_recipe, run_recipe

    recipe = load_recipe(tiny_recipe(train={"max_steps": 1}, eval={"generate": False, "retention": False}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate_run(run_recipe(recipe).run_dir)  # wraps the model with peft twice: to train, to load
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao (the int8 export's) is not installed")
def test_importing_finjust_drops_other_packages_known_noise_and_nothing_else():
    # transformers imports torchao (pinned for the int8 export) with peft: on a CPU machine it logged a
    # failure per CUDA library, and torch a deprecation per enum it registers; bitsandbytes a hub kernel
    script = ("import logging, finjust, peft, torchao.quantization; "
              "logging.getLogger('torchao').warning('a real warning')")  # fmt: skip
    err = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stderr
    assert "Failed to load" not in err and "_pytree" not in err and "kernels-community" not in err, err
    assert "a real warning" in err  # only the known lines are dropped


def test_api_runs_of_full_fine_tuning_and_a_classifier_print_nothing(tiny_recipe, tmp_path, write_jsonl, capfd):
    from finjust import evaluate_run, load_recipe, run_recipe

    quiet = {"generate": False, "retention": False}
    full = load_recipe(tiny_recipe(method={"name": "full"}, train={"max_steps": 1}, eval=quiet))
    evaluate_run(run_recipe(full).run_dir)  # transformers' "Writing model shards" and "Loading weights" bars
    records = [{"text": f"review {i} of the red kayak", "label": ["good", "bad"][i % 2]} for i in range(16)]
    labelled = {"train": str(write_jsonl("labelled.jsonl", records)), "test": None, "format": "classification"}
    classifier = load_recipe(tiny_recipe(data=labelled, train={"max_steps": 1}, output={"dir": str(tmp_path / "c")}))
    run_recipe(classifier)  # transformers' LOAD REPORT table of the new head's weights
    printed = capfd.readouterr()
    assert printed.out == "" and "LOAD REPORT" not in printed.err and "Loading weights" not in printed.err
    assert "Writing model shards" not in printed.err
