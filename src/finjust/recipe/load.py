"""Reading a recipe: YAML (with ``1e-4`` read as a float), dotted overrides, relative paths."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from finjust.errors import RecipeError
from finjust.recipe.sections import SECTIONS, Recipe
from finjust.recipe.validate import build_recipe, shown, suggest

_PATH_KEYS = (("data", "train"), ("data", "validation"), ("data", "test"), ("output", "dir"))


#: floats written without a dot (``1e-4``), which YAML 1.1 reads as strings; the recipe's
#: loader reads them as floats, and its dumper quotes strings that look like them
EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _RecipeLoader(yaml.SafeLoader):
    """``safe_load`` that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``) and refuses
    a key given twice in one mapping (YAML keeps the last silently, hiding the first's errors)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<``: the base loader merges it (constructing it here failed: no constructor)
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys are the base loader's to judge
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (also on line {first_line[key] + 1}); "
                    "YAML would keep only the last: merge them into one", key_node.start_mark)
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader subclass)


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe file.

    Args:
        path: the YAML recipe.
        overrides: dotted ``section.key=value`` strings; values are parsed as YAML.

    Returns:
        The validated recipe, with relative paths made absolute.

    Raises:
        RecipeError: listing every problem, with ``source`` set to the file.
    """
    path = Path(path)
    if isinstance(overrides, str):  # each of its characters would be reported as an override
        raise RecipeError([f"overrides: expected a list of 'section.key=value' strings, got the string "
                           f"{overrides!r}: pass [{overrides!r}]"], source=str(path))  # fmt: skip
    raw = _read_yaml(path)
    raw = _resolve_paths(raw, path.absolute().parent)
    raw, problems = _apply_overrides(raw, overrides)
    touched = {text.partition("=")[0].strip() for text in overrides}
    raw = _resolve_paths(raw, Path.cwd(), only=touched)
    try:
        return build_recipe(raw, str(path), problems)
    except RecipeError as error:
        # a recipe with mistakes lists its missing data files beside them, so that one run names
        # every fix; a valid recipe's missing files are the data check's to name, and a run that
        # only reads its recipe (export, eval) never needs them
        raise RecipeError([*error.problems, *_unreadable_data(raw)], source=error.source) from None


def _unreadable_data(raw: Mapping[str, Any]) -> list[str]:
    """Each data file the recipe names that is missing or of no known type, of the entries well
    formed enough to tell (a malformed entry is already among the recipe's problems)."""
    from types import SimpleNamespace

    from finjust.data.check import unreadable_sources  # here: recipes load without the data package
    from finjust.data.sources import source_problems

    data = raw.get("data")
    if not isinstance(data, Mapping):
        return []
    train = data.get("train")
    entries = train if isinstance(train, list) else [train]
    well_formed = [entry for entry in entries if isinstance(entry, (str, dict)) and entry and not source_problems(entry)]
    held_out = {key: data.get(key) if isinstance(data.get(key), str) and data.get(key) else None
                for key in ("validation", "test")}  # fmt: skip
    sources = SimpleNamespace(train=well_formed, **held_out)
    return [f"{problem.path}: {problem.message}" for problem in unreadable_sources(sources)]


def recipe_from_dict(raw: Mapping[str, Any], source: str = "recipe", base_dir: Path | None = None) -> Recipe:
    """Validate a plain mapping of sections into a :class:`Recipe`.

    Args:
        raw: sections as read from YAML.
        source: what the problems are reported against (usually a file name).
        base_dir: folder that relative paths are resolved against; None leaves them as given.

    Raises:
        RecipeError: listing every problem found.
    """
    if base_dir is not None and isinstance(raw, Mapping):
        raw = _resolve_paths(raw, base_dir)
    return build_recipe(raw, source, [])


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with dotted ``section.key=value`` overrides applied.

    Raises:
        RecipeError: listing every malformed override (no ``=``, unknown section, bad YAML).
    """
    result, problems = _apply_overrides(raw, overrides)
    if problems:
        raise RecipeError(problems, source="overrides")
    return result


#: data file types no recipe is written as (a .json file may hold one: YAML reads JSON)
_DATA_ONLY = frozenset({"jsonl", "csv", "tsv", "parquet"})


def _read_yaml(path: Path) -> dict[str, Any]:
    from finjust.data.readers import file_type_of  # light: the readers' registry, no data libraries

    source = str(path)
    if path.is_dir():
        raise RecipeError([f"{path} is a folder; give the recipe's YAML file (to continue a run in it: "
                           f"finjust train --resume {path})"], source=source)  # fmt: skip
    if (kind := file_type_of(path)) in _DATA_ONLY:
        raise RecipeError([f"{path.name} is a data file ({kind}), not a recipe: name it as data.train in a YAML "
                           "recipe (`finjust train --help` lists every field; `finjust demo` writes one to its run "
                           f"folder), or check the data alone with `finjust data check {path}`"], source=source)  # fmt: skip
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([f"recipe file not found: {path}"], source=source) from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError([f"cannot read the recipe file: {err}"], source=source) from None
    try:
        raw = _parse_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = getattr(err, "problem", None) or str(err)
        raise RecipeError([f"invalid YAML{where}: {detail}"], source=source) from None
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else shown(raw)
        raise RecipeError([f"expected a mapping of sections (model:, data:, output:, ...), got {got}"],
                          source=source)
    return raw


def _nested(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether one dotted key is the other or inside it (``train`` and ``train.lr``)."""
    return a[: len(b)] == b or b[: len(a)] == a


#: a YAML comment: ``#`` at the start of a value or after a space
_COMMENT = re.compile(r"(^|\s)#")


def _apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    result: dict[str, Any] = copy.deepcopy(dict(raw))
    problems: list[str] = []
    given: dict[tuple[str, ...], str] = {}
    for text in overrides:
        key, sep, value_text = text.partition("=")
        parts = key.strip().split(".")
        overlap = next((earlier for path, earlier in given.items() if _nested(path, tuple(parts))), None)
        given[tuple(parts)] = text
        if not sep or not all(parts):
            problems.append(f"override {text!r}: expected section.key=value, e.g. train.lr=1e-4")
        elif overlap is not None:  # the last would win silently, hiding the first (and its mistakes)
            problems.append(f"override {text!r}: sets what {overlap!r} set already; give each key once")
        elif parts[0] not in SECTIONS:
            problems.append(f"override {text!r}: unknown section {parts[0]!r}{suggest(parts[0], SECTIONS)}")
        else:
            try:
                value = _parse_yaml(value_text)
                if _COMMENT.search(value_text) and "#" not in repr(value):
                    problems.append(f"override {text!r}: YAML reads what follows ' #' as a comment and drops it; "
                                    f"quote the value to keep it, e.g. {key.strip()}='\"{value_text.strip()}\"'")
                    continue
                _set_dotted(result, parts, value)
            except yaml.YAMLError as err:
                detail = getattr(err, "problem", err)
                problems.append(f"override {text!r}: the value is not valid YAML ({detail})")
            except TypeError as err:
                problems.append(f"override {text!r}: {err}")
    return result, problems


def _set_dotted(target: dict[str, Any], parts: list[str], value: Any) -> None:
    for depth, part in enumerate(parts[:-1]):
        if target.get(part) is None:
            target[part] = {}
        if not isinstance(target[part], dict):
            raise TypeError(f"{'.'.join(parts[:depth + 1])!r} is not a mapping")
        target = target[part]
    target[parts[-1]] = value


def _resolve_paths(raw: Mapping[str, Any], base: Path, only: set[str] | None = None) -> dict[str, Any]:
    """A copy of ``raw`` whose relative path values are joined to ``base``."""
    result = dict(raw)

    def wanted(dotted: str) -> bool:
        return only is None or any(dotted == o or dotted.startswith(o + ".") for o in only)

    for section, key in (*_PATH_KEYS, ("model", "name")):
        values = result.get(section)
        if not isinstance(values, Mapping) or not wanted(f"{section}.{key}"):
            continue
        if (section, key) == ("data", "train") and isinstance(values.get(key), list):
            result[section] = {**values, key: [_resolve_entry(entry, base) for entry in values[key]]}
            continue
        if not isinstance(values.get(key), str) or not values[key]:
            continue
        text = os.path.expanduser(values[key])
        if section == "model" and not _looks_like_path(text, base):
            continue
        result[section] = {**values, key: _joined(base, text)}
    return result


def _joined(base: Path, text: str) -> str:
    """``text`` made absolute against ``base``, its ``..`` steps taken (``/runs/../data`` reads as
    ``/data`` in a saved recipe and a run's result): ``base`` is a real folder, so the only step
    this can misread is one back out of a symbolic link written into ``text`` itself."""
    return text if os.path.isabs(text) else os.path.normpath(base / text)


def _resolve_entry(entry: Any, base: Path) -> Any:
    """One entry of a ``data.train`` list (a path, or a mapping with ``path``) made absolute."""
    if isinstance(entry, str) and entry:
        return _joined(base, os.path.expanduser(entry))
    if isinstance(entry, Mapping) and isinstance(entry.get("path"), str) and entry["path"]:
        return {**entry, "path": _joined(base, os.path.expanduser(entry["path"]))}
    return entry


def _looks_like_path(name: str, base: Path) -> bool:
    return "/" in name or name.endswith(".gguf") or (base / name).exists()
