"""finjust: turn a pretrained model and a small domain data set into a verified specialist.

The public API; the ``finjust`` command line is a thin layer over these.
"""

import importlib
from typing import Any

from finjust.errors import (
    CheckpointError,
    CompileError,
    DataError,
    EvaluationError,
    ExportError,
    FinjustError,
    FolderBusyError,
    MethodError,
    ModelLoadError,
    RecipeError,
    ServeError,
    SettingError,
    UnknownNameError,
)
from finjust.third_party_logs import quiet_third_party_logs

quiet_third_party_logs()  # before torch, peft or transformers load: see finjust.third_party_logs

# The rest of the API is imported on first use (PEP 562): ``import finjust`` stays light, so
# the CLI can restart itself with another allocator (finjust.allocator) before torch loads.
_LAZY = {
    "evaluate_run": "finjust.eval.evaluate",
    "export_run": "finjust.export",
    "METHODS": "finjust.methods",
    "Method": "finjust.methods",
    "get_method": "finjust.methods",
    "load_model": "finjust.models",
    "Recipe": "finjust.recipe",
    "load_recipe": "finjust.recipe",
    "recipe_from_dict": "finjust.recipe",
    "save_recipe": "finjust.recipe",
    "RunResult": "finjust.train.run",
    "run_recipe": "finjust.train.run",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'finjust' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "CheckpointError",
    "CompileError",
    "DataError",
    "EvaluationError",
    "ExportError",
    "FinjustError",
    "FolderBusyError",
    "Method",
    "MethodError",
    "ModelLoadError",
    "Recipe",
    "RecipeError",
    "RunResult",
    "ServeError",
    "SettingError",
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
