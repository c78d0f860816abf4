"""The training recipe: one YAML file read into plain dataclass sections.

A recipe has the sections ``model``, ``data``, ``method``, ``train``, ``eval`` and
``output``; only ``model.name``, ``data.train`` and ``output.dir`` are required. Every
problem in a recipe (unknown sections or keys, missing keys, wrong types, out-of-range
values, unknown method options) is collected and raised together as one
:class:`~finjust.errors.RecipeError`. Dotted overrides (``train.lr=1e-4``) are applied
before validation.

Relative paths (``data.train``, ``data.validation``, ``data.test``, ``output.dir``) written
in a recipe file are resolved against the file's folder; those given by an override are
resolved against the current directory. ``model.name`` is treated as a path only when it
contains ``/``, ends with ``.gguf`` or names something that exists in that folder;
otherwise it stays a short model name.
"""

from finjust.recipe.load import apply_overrides, load_recipe, recipe_from_dict
from finjust.recipe.save import recipe_to_dict, save_recipe, section_help, with_absolute_paths
from finjust.recipe.sections import (
    SECTIONS,
    DataSection,
    EvalSection,
    MethodSection,
    ModelSection,
    OutputSection,
    QualitySection,
    Recipe,
    TrainSection,
)
from finjust.recipe.validate import data_section_from_dict

__all__ = [
    "SECTIONS", "DataSection", "EvalSection", "MethodSection", "ModelSection", "OutputSection", "QualitySection",
    "Recipe", "TrainSection", "apply_overrides", "data_section_from_dict", "load_recipe", "recipe_from_dict",
    "recipe_to_dict", "save_recipe", "section_help", "with_absolute_paths",
]  # fmt: skip
