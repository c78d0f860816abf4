"""The public API is pinned: changing it is a deliberate act."""

import finjust


def test_public_names_are_pinned():
    assert sorted(finjust.__all__) == sorted(
        [
            "METHODS", "CheckpointError", "DataError", "EvaluationError", "ExportError", "FinjustError", "Method",
            "MethodError", "ModelLoadError", "Recipe", "RecipeError", "RunResult", "UnknownNameError",
            "evaluate_run", "export_run", "get_method", "load_model", "load_recipe", "recipe_from_dict", "run_recipe",
            "save_recipe",
        ]
    )  # fmt: skip
    for name in finjust.__all__:
        assert hasattr(finjust, name), name
