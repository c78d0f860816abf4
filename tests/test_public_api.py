"""The public API is pinned: changing it is a deliberate act."""

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
    import subprocess
    import sys

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
