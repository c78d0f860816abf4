"""Validating raw recipe data into sections, every problem collected for one error."""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any, Literal, Union

from finjust.data.findings import GATED
from finjust.data.formats import RECORD_FORMATS
from finjust.data.sources import source_problems
from finjust.errors import RecipeError, UnknownNameError
from finjust.eval.metrics import METRICS
from finjust.methods.registry import get_method
from finjust.recipe.sections import SECTIONS, DataSection, EvalSection, MethodSection, Recipe

_BOUNDS: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "gt": (">", operator.gt), "ge": (">=", operator.ge), "lt": ("<", operator.lt), "le": ("<=", operator.le),
}


def build_recipe(raw: Any, source: str, problems: list[str]) -> Recipe:
    if not isinstance(raw, Mapping):
        raise RecipeError([*problems, f"expected a mapping of sections, got {shown(raw)}"], source=source)
    _report_unknown("", raw, list(SECTIONS), problems, noun="section")
    built: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        value = raw.get(name)
        if value is not None and not isinstance(value, Mapping):
            problems.append(f"section {name!r} must be a mapping of keys to values, got {shown(value)}")
        elif name == "method":
            built[name] = _build_method(value or {}, problems)
        else:
            built[name] = _build_dataclass(cls, name, value or {}, problems)
    problems.extend(_check_data_raw(raw.get("data")))
    # the checks across keys run on a section's valid keys even where other keys failed, so
    # that one run of the recipe lists every problem
    data, evaluation, train = (built.get(name) or _valid_part(SECTIONS[name], raw.get(name))
                               for name in ("data", "eval", "train"))  # fmt: skip
    problems.extend(_check_data(data))
    _check_metrics(evaluation, problems)
    problems.extend(_check_test_split(data))
    problems.extend(_check_plan_size(train))
    if built.get("method") is not None:
        problems.extend(_check_recompute(train, built["method"]))
    if problems:
        raise RecipeError(problems, source=source)
    return Recipe(**built)


def _valid_part(cls: type, raw: Any) -> types.SimpleNamespace:
    """A section's defaults with those of ``raw``'s keys that are valid on their own: what the
    checks across keys can still read when the section as a whole did not validate."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for info in fields(cls):
        if info.default is not dataclasses.MISSING:
            values[info.name] = info.default
        elif info.default_factory is not dataclasses.MISSING:
            values[info.name] = info.default_factory()
        given = raw.get(info.name) if isinstance(raw, Mapping) else None
        if given is None or dataclasses.is_dataclass(hints[info.name]):
            continue
        ok, value = _coerce(given, hints[info.name])
        if ok and not _check_value(value, info.metadata):
            values[info.name] = value
    return types.SimpleNamespace(**values)


def _check_test_split(data: DataSection | types.SimpleNamespace) -> list[str]:
    """Every run ends with a scorecard on held-out test examples: there must be some."""
    if data.test is None and (data.test_count == 0 or (data.test_count is None and data.test_fraction == 0)):
        return ["data.test_fraction / data.test_count: the run's scorecard needs test examples; hold some out "
                "or give a data.test file"]
    return []


def _check_plan_size(train: Any) -> list[str]:
    """``train.max_steps`` within what a run plans up front (``epochs`` waits for the data's size)."""
    from finjust.train.plan import plan_size_problem  # light: no torch

    steps, batch, accum = train.max_steps, train.batch_size, train.grad_accum
    if not all(isinstance(value, int) for value in (steps, batch, accum)):
        return []  # each invalid value is a problem of its own
    problem = plan_size_problem("train.max_steps", steps, batch * accum)
    return [problem] if problem else []


def _check_recompute(train: Any, method: MethodSection) -> list[str]:
    if train.gradient_checkpointing and not get_method(method.name).supports_recompute:
        return [f"train.gradient_checkpointing: {method.name} trains through a KV cache that recomputed "
                "blocks would append to twice; set it to false or null (null leaves it off for this method)"]
    return []


def _build_method(raw: Mapping[str, Any], problems: list[str]) -> MethodSection | None:
    name = raw.get("name", "lora")
    if not isinstance(name, str):
        problems.append(f"method.name: expected str, got {shown(name)}")
        return None
    try:
        method = get_method(name)
    except UnknownNameError as err:
        problems.append(f"method.name: unknown method {name!r}; valid methods: "
                        f"{', '.join(err.valid)}{suggest(name, err.valid)}")
        return None
    options = {key: value for key, value in raw.items() if key != "name"}
    built = _build_dataclass(method.options_class, "method", options, problems, extra=("name",))
    if built is None:
        return None
    problems.extend(method.option_problems(built))
    return MethodSection(name=name, options=built)


def _build_dataclass(cls: type, prefix: str, raw: Mapping[str, Any], problems: list[str],
                     extra: Sequence[str] = ()) -> Any:
    """An instance of dataclass ``cls`` from ``raw``, or None after adding its problems."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    count = len(problems)
    _report_unknown(f"{prefix}.", raw, [*known, *extra], problems)
    values: dict[str, Any] = {}
    for name, info in known.items():
        key = f"{prefix}.{name}"
        if name not in raw:
            if info.default is dataclasses.MISSING and info.default_factory is dataclasses.MISSING:
                problems.append(f"missing required key {key!r}: {info.metadata.get('help', name)}")
            continue
        if dataclasses.is_dataclass(hints[name]):
            nested = _build_nested(hints[name], key, raw[name], problems)
            if nested is not None:
                values[name] = nested
            continue
        ok, value = _coerce(raw[name], hints[name])
        if not ok:
            problems.append(f"{key}: expected {describe_type(hints[name])}, got {shown(raw[name])}"
                            f"{_quote_hint(raw[name], hints[name])}")  # fmt: skip
            continue
        expected = _check_value(value, info.metadata)
        if expected:
            problems.append(f"{key}: expected {expected}, got {value!r}")
        values[name] = value
    if len(problems) > count:
        return None
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        problems.append(f"{prefix}: {err}")
        return None


def _check_metrics(section: EvalSection | types.SimpleNamespace, problems: list[str]) -> None:
    """Metric names must be registered; their options are validated like method options."""
    for name in section.metrics:
        if name not in METRICS:
            problems.append(f"eval.metrics: unknown metric {name!r}; valid metrics: "
                            f"{', '.join(METRICS.names())}{suggest(name, METRICS.names())}")
    for name, raw in list(section.metric_options.items()):
        key = f"eval.metric_options.{name}"
        if name not in METRICS:
            problems.append(f"{key}: unknown metric{suggest(str(name), METRICS.names())}")
        elif not isinstance(raw, Mapping):
            problems.append(f"{key}: expected a mapping of options, got {shown(raw)}")
        else:
            section.metric_options[name] = _build_dataclass(METRICS.get(name).options_class, key, raw, problems)
    # the options each listed metric needs, whether given or not, and those given for any other
    # (an override may leave out a metric whose options the recipe keeps: they are checked all the same)
    for name in dict.fromkeys([*section.metrics, *section.metric_options]):
        if name in METRICS and (name not in section.metric_options or section.metric_options[name] is not None):
            metric = METRICS.get(name)
            problems.extend(metric.option_problems(section.metric_options.get(name) or metric.options_class()))


def _build_nested(cls: type, key: str, value: Any, problems: list[str]) -> Any:
    """A nested section (such as ``data.quality``) from its mapping, or None after its problems."""
    if value is None:
        return cls()
    if not isinstance(value, Mapping):
        problems.append(f"{key}: expected a mapping, got {shown(value)}")
        return None
    return _build_dataclass(cls, key, value, problems)


def _check_data(data: DataSection | types.SimpleNamespace) -> list[str]:
    # a fraction counts where it splits: no file given for that split and no count (a count wins)
    held_out = (data.validation_fraction if data.validation is None and data.validation_count is None else 0.0) + (
        data.test_fraction if data.test is None and data.test_count is None else 0.0)
    if held_out >= 1:
        return [f"data.validation_fraction + data.test_fraction: expected < 1 (train must keep "
                f"some examples), got {data.validation_fraction} + {data.test_fraction}"]
    return []


def _check_data_raw(raw: Any) -> list[str]:
    """Checks of ``data:`` that need no other key to be valid, so they are listed with every other problem."""
    if not isinstance(raw, Mapping):
        return []
    problems = source_problems(raw["train"]) if isinstance(raw.get("train"), (str, list)) else []
    if raw.get("stratify_by") and raw.get("group_by"):
        problems.append("data.stratify_by and data.group_by: a split is stratified or grouped, not both")
    fields_known = sorted({f for name in RECORD_FORMATS for f in RECORD_FORMATS.get(name).fields})
    columns = raw.get("columns")
    for target, column in (columns.items() if isinstance(columns, Mapping) else ()):
        if str(target) not in fields_known:
            problems.append(f"data.columns: unknown field {target!r}{suggest(str(target), fields_known)}; "
                            f"fields: {', '.join(fields_known)}")
        elif not isinstance(column, str) or not column:
            problems.append(f"data.columns.{target}: expected the column name in your files, got {shown(column)}")
    mapped = [c for c in (columns.values() if isinstance(columns, Mapping) else ()) if isinstance(c, str)]
    for column in sorted({c for c in mapped if mapped.count(c) > 1}):
        assert isinstance(columns, Mapping)  # mapped holds its values
        targets = [str(t) for t, c in columns.items() if c == column]
        problems.append(f"data.columns: the column {column!r} is mapped to {' and '.join(targets)}; each field "
                        "needs a column of its own (a prompt mapped as its own answer would train an echo)")
    quality = raw.get("quality")
    for key in ("fail_on", "ignore"):
        names = quality.get(key) if isinstance(quality, Mapping) else None
        for name in (names if isinstance(names, list) else ()):
            if name not in GATED:
                problems.append(f"data.quality.{key}: unknown finding {name!r}{suggest(str(name), GATED)}; "
                                f"findings: {', '.join(GATED)}")
    return problems


def data_section_from_dict(raw: Mapping[str, Any], source: str = "data") -> DataSection:
    """Validate a plain ``data:`` mapping (as a recipe holds it) into a :class:`DataSection`.

    Raises:
        RecipeError: listing every problem found.
    """
    problems: list[str] = []
    built = _build_dataclass(DataSection, "data", raw, problems)
    problems.extend(_check_data_raw(raw))
    if built is not None:
        problems.extend(_check_data(built))
    if problems:
        raise RecipeError(problems, source=source)
    return built


def _report_unknown(prefix: str, raw: Mapping[Any, Any], valid: Sequence[str], problems: list[str],
                    noun: str = "key") -> None:
    for key in raw:
        if str(key) not in valid:
            given = f"{prefix}{key}"
            detail = suggest(str(key), valid) or f"; valid {noun}s: {', '.join(valid)}"
            problems.append(f"unknown {noun} {given!r}{detail}")


def suggest(name: str, valid: Sequence[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _quote_hint(value: Any, hint: Any) -> str:
    """Where text was expected and YAML read the value as something else (``Note: be brief`` as a
    mapping, ``yes`` as true, ``2024-01-01`` as a date): how to keep it text."""
    if value is None or isinstance(value, (str, list)) or not _coerce("text", hint)[0]:
        return ""
    if isinstance(value, Mapping) and "path" in value and _coerce([], hint)[0]:  # data.train: {path: a.jsonl, ...}
        return "; a source with a weight or split is an item of a list: [{path: ..., weight: 2}]"
    return "; YAML read it as that: quote it to keep it as text"


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the type ``hint``, and the value converted (int -> float, list -> tuple)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if origin in (Union, types.UnionType):
        for arg in args:
            ok, converted = _coerce(value, arg)
            if ok:
                return True, converted
        return False, value
    if origin is Literal:
        return value in args, value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if origin in (list, tuple) or hint in (list, tuple):
        return _coerce_sequence(value, origin or hint, args)
    if origin is dict or hint is dict:
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else value
    if hint is None or hint is type(None):
        return value is None, value
    return (isinstance(value, hint) if isinstance(hint, type) else True), value


def _coerce_sequence(value: Any, kind: type, args: tuple[Any, ...]) -> tuple[bool, Any]:
    if not isinstance(value, (list, tuple)):
        return False, value
    if kind is tuple and args and args[-1] is not Ellipsis:
        item_hints = list(args)  # a fixed-length tuple such as tuple[int, int]
    else:
        item_hints = [args[0] if args else Any] * len(value)
    if len(item_hints) != len(value):
        return False, value
    items = [_coerce(item, item_hint) for item, item_hint in zip(value, item_hints)]
    if not all(ok for ok, _ in items):
        return False, value
    return True, kind(converted for _, converted in items)


def describe_type(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(arg) for arg in args)
    if hint is type(None) or hint is None:
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (list, tuple) and args:
        return f"a list of {describe_type(args[0])}"
    if origin is dict or hint is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _check_value(value: Any, meta: Mapping[str, Any]) -> str:
    """What ``value`` should have been under the checks in ``meta``; empty when it is fine."""
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):  # a NaN learning rate trains a NaN model
        return "a finite number"
    choices = meta.get("choices")
    if choices and value not in choices:
        return "one of " + ", ".join(choices)
    bounds = [(symbol, check, meta[name]) for name, (symbol, check) in _BOUNDS.items() if name in meta]
    if any(not check(value, limit) for _, check, limit in bounds):
        return " and ".join(f"{symbol} {limit}" for symbol, _, limit in bounds)
    if meta.get("nonempty") and not value:
        return "a non-empty value"
    return ""


def shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "null"
