"""finjust: turn a pretrained model and a small domain data set into a verified specialist.

The public API; the ``finjust`` command line is a thin layer over these.
"""

from finjust.errors import (
    CheckpointError,
    DataError,
    EvaluationError,
    ExportError,
    FinjustError,
    MethodError,
    ModelLoadError,
    RecipeError,
    UnknownNameError,
)
from finjust.eval.evaluate import evaluate_run
from finjust.export import export_run
from finjust.methods import METHODS, Method, get_method
from finjust.models import load_model
from finjust.recipe import Recipe, load_recipe, recipe_from_dict, save_recipe
from finjust.train.run import RunResult, run_recipe

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "CheckpointError",
    "DataError",
    "EvaluationError",
    "ExportError",
    "FinjustError",
    "Method",
    "MethodError",
    "ModelLoadError",
    "Recipe",
    "RecipeError",
    "RunResult",
    "UnknownNameError",
    "evaluate_run",
    "export_run",
    "get_method",
    "load_model",
    "load_recipe",
    "recipe_from_dict",
    "run_recipe",
    "save_recipe",
]
