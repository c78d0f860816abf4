"""Writing a recipe back out, and the field help `finjust train --help` prints."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from finjust.atomic import write_text
from finjust.methods.registry import METHODS, get_method
from finjust.recipe.load import EXPONENT_FLOAT, recipe_from_dict
from finjust.recipe.sections import SECTIONS, Recipe
from finjust.recipe.validate import describe_type


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain YAML-safe data, method options written flat beside ``name``."""
    result: dict[str, Any] = {}
    for name in SECTIONS:
        section = getattr(recipe, name)
        if name == "method":
            result[name] = {"name": section.name, **_plain(section.options)}
        else:
            result[name] = _plain(section)
    return result


class _RecipeDumper(yaml.SafeDumper):
    """``safe_dump`` that quotes the strings the recipe loader would read as floats (``'1e3'``),
    so a saved recipe reads back as it was."""


_RecipeDumper.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the recipe as YAML atomically (a temporary file in the same folder, then rename)."""
    text = yaml.dump(recipe_to_dict(recipe), Dumper=_RecipeDumper, sort_keys=False, allow_unicode=True)
    write_text(path, text)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value


def section_help(method: str | None = None) -> str:
    """Every recipe key with its type, default and help text, for ``finjust train --help``.

    Args:
        method: list the options of this registered method; None lists every method's.
    """
    lines: list[str] = []
    for name, cls in SECTIONS.items():
        lines.append(f"{name}:")
        lines.extend(_field_help(cls, name, skip=("options",) if name == "method" else ()))
        if name == "method":
            for shown in [method] if method is not None else METHODS.names():
                options = _field_help(get_method(shown).options_class, "method")
                lines.append(f"  options of method {shown}:" + ("" if options else " none"))
                lines.extend("  " + line for line in options)
    return "\n".join(lines)


def _field_help(cls: type, prefix: str, skip: Sequence[str] = ()) -> list[str]:
    hints = typing.get_type_hints(cls)
    lines: list[str] = []
    for info in fields(cls):
        if info.name in skip:
            continue
        if info.default is not dataclasses.MISSING:
            default = f" = {_as_yaml(info.default)}"
        elif info.default_factory is not dataclasses.MISSING:
            default = f" = {_as_yaml(info.default_factory())}"
        else:
            default = " (required)"
        if dataclasses.is_dataclass(hints[info.name]):
            lines += [f"  {prefix}.{info.name}: a mapping", f"      {info.metadata.get('help', '')}"]
            lines.extend(_field_help(hints[info.name], f"{prefix}.{info.name}"))
            continue
        lines.append(f"  {prefix}.{info.name}: {describe_type(hints[info.name])}{default}")
        help_text = info.metadata.get("help", "")
        choices = info.metadata.get("choices")
        lines.append(f"      {help_text} [one of {', '.join(choices)}]" if choices else f"      {help_text}")
    return lines


def _as_yaml(value: Any) -> str:
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=1000)
    return text.removesuffix("...\n").strip()


def with_absolute_paths(recipe: Recipe, base: Path | None = None) -> Recipe:
    """``recipe`` with its relative paths (data files, ``output.dir``, a model folder) joined to
    ``base``, the current folder by default: what a run reads, written so that its saved
    ``recipe.yaml`` still names it when read from the run folder (eval, export, ``--resume``)."""
    return recipe_from_dict(recipe_to_dict(recipe), source="recipe", base_dir=base or Path.cwd())
