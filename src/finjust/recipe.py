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

from __future__ import annotations

import copy
import dataclasses
import difflib
import operator
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from finjust.atomic import write_text
from finjust.data.findings import DEFAULT_FAIL_ON, GATED
from finjust.data.formats import FORMATS
from finjust.data.sources import source_problems
from finjust.errors import RecipeError, UnknownNameError
from finjust.eval.metrics import METRICS
from finjust.methods.registry import get_method


def _doc(help_text: str, **checks: Any) -> dict[str, Any]:
    """Field metadata: the ``--help`` text plus checks (choices, gt, ge, lt, nonempty)."""
    return {"help": help_text, **checks}


@dataclass
class ModelSection:
    """``model:`` which pretrained model to start from."""

    name: str = field(metadata=_doc(
        "Short name of a model an installed package ships (e.g. smollm2-135m-instruct), "
        "a local Hugging Face folder, or a .gguf file.", nonempty=True))
    dtype: str = field(default="auto", metadata=_doc(
        "Weight dtype; auto picks bfloat16 where supported.", choices=("auto", "bfloat16", "float32")))
    device: str = field(default="auto", metadata=_doc(
        "Where to train; auto uses cuda when available.", choices=("auto", "cpu", "cuda")))


@dataclass
class QualitySection:
    """``data.quality:`` which data findings stop a run; every other finding only warns."""

    fail_on: list[str] = field(default_factory=lambda: list(DEFAULT_FAIL_ON), metadata=_doc(
        "Findings that stop finjust train (and make finjust data check exit 1): "
        + ", ".join(GATED) + "."))
    ignore: list[str] = field(default_factory=list, metadata=_doc(
        "Findings neither reported as warnings nor failing."))
    near_duplicate_threshold: float = field(default=0.8, metadata=_doc(
        "Estimated Jaccard similarity (character 5-grams, MinHash) from which two records are "
        "near-duplicates.", gt=0, le=1))
    redact_pii: bool = field(default=False, metadata=_doc(
        "Replace PII found in the data by placeholders ([EMAIL], [PHONE], ...) before training; "
        "pii findings then no longer fail the gate."))
    max_listed: int = field(default=20, metadata=_doc(
        "How many records each finding lists in the report.", gt=0))


@dataclass
class DataSection:
    """``data:`` the examples to train and evaluate on."""

    train: str | list[Any] = field(metadata=_doc(
        "Training data: a file or folder, or a list of them, each a path or "
        "{path, weight, split} (weight 2 repeats a source's training records twice).", nonempty=True))
    validation: str | None = field(default=None, metadata=_doc(
        "Path of the validation file; null splits validation_fraction off train."))
    test: str | None = field(default=None, metadata=_doc(
        "Path of the test file; null splits test_fraction off train."))
    format: str = field(default="auto", metadata=_doc(
        "Record format; auto detects it from each record's fields.", choices=("auto", *FORMATS.names())))
    columns: dict[str, str] = field(default_factory=dict, metadata=_doc(
        "Column renames {format field: column in your files}, e.g. {instruction: question, output: answer}."))
    validation_fraction: float = field(default=0.1, metadata=_doc(
        "Share of train held out for validation when no validation file is given.", ge=0, lt=1))
    test_fraction: float = field(default=0.1, metadata=_doc(
        "Share of train held out for testing, used only when no test file is given.", ge=0, lt=1))
    validation_count: int | None = field(default=None, metadata=_doc(
        "Validation records to hold out (instead of validation_fraction).", ge=0))
    test_count: int | None = field(default=None, metadata=_doc(
        "Test records to hold out (instead of test_fraction).", ge=0))
    stratify_by: str | None = field(default=None, metadata=_doc(
        "Keep each value's share in every split: 'label' or a record field (e.g. topic)."))
    group_by: str | None = field(default=None, metadata=_doc(
        "A record field whose records all land in one split (e.g. the document an example came from)."))
    max_length: int = field(default=1024, metadata=_doc(
        "Longest example in tokens; longer ones are handled as too_long says.", gt=0))
    too_long: str = field(default="truncate", metadata=_doc(
        "Examples over max_length: truncate (raw text is cut into max_length windows), drop, or error.",
        choices=("truncate", "drop", "error")))
    system_prompt: str | None = field(default=None, metadata=_doc(
        "System message put before conversations that have none."))
    quality: QualitySection = field(default_factory=QualitySection, metadata=_doc(
        "The quality gate run before training (see finjust data check)."))


@dataclass
class MethodSection:
    """``method:`` which weights train; options are written flat beside ``name``."""

    name: str = field(default="lora", metadata=_doc("Fine-tuning method (a registered name)."))
    options: Any = field(default_factory=dict, metadata=_doc(
        "The method's options (its options dataclass once validated)."))


@dataclass
class TrainSection:
    """``train:`` the optimisation loop."""

    epochs: float = field(default=3.0, metadata=_doc("Passes over the training data.", gt=0))
    max_steps: int | None = field(default=None, metadata=_doc(
        "Optimizer steps to run; overrides epochs when set.", gt=0))
    lr: float | None = field(default=None, metadata=_doc(
        "Peak learning rate; null uses the method's default.", gt=0))
    batch_size: int = field(default=8, metadata=_doc("Examples per micro-batch.", gt=0))
    grad_accum: int = field(default=1, metadata=_doc(
        "Micro-batches accumulated per optimizer step.", gt=0))
    warmup_ratio: float = field(default=0.05, metadata=_doc(
        "Share of the steps spent warming the learning rate up.", ge=0, lt=1))
    scheduler: str = field(default="cosine", metadata=_doc(
        "Learning-rate schedule after warmup.", choices=("cosine", "linear", "constant")))
    weight_decay: float = field(default=0.0, metadata=_doc("AdamW weight decay.", ge=0))
    max_grad_norm: float = field(default=1.0, metadata=_doc("Gradient clipping norm.", gt=0))
    eval_every: int | None = field(default=None, metadata=_doc(
        "Evaluate every this many steps; null evaluates once per epoch.", gt=0))
    save_every: int | None = field(default=None, metadata=_doc(
        "Save a checkpoint every this many steps; null saves at every evaluation.", gt=0))
    patience: int | None = field(default=2, metadata=_doc(
        "Evaluations without validation-loss improvement before stopping early; "
        "null disables early stopping.", gt=0))
    seed: int = field(default=42, metadata=_doc("Random seed for data order and init.", ge=0))
    threads: int | None = field(default=None, metadata=_doc(
        "CPU threads for torch; null keeps torch's default.", gt=0))
    compile: bool | None = field(default=None, metadata=_doc(
        "torch.compile the model's repeated blocks for the training steps; null compiles runs of "
        "150+ steps on a CPU with a C++ compiler (compiling costs 11-51 s, then steps run ~1.4x "
        "faster)."))
    forgetting_guard: float | None = field(default=None, metadata=_doc(
        "Minimum general-knowledge retention (e.g. 0.9): evaluations below it never become the "
        "best checkpoint; null disables the probe during training.", gt=0))
    forgetting_action: str = field(default="stop", metadata=_doc(
        "When retention falls below forgetting_guard: stop training, or keep training and only "
        "pick the best checkpoint among those within the budget.", choices=("stop", "best")))
    replay: float = field(default=0.0, metadata=_doc(
        "Mitigation: general-text passages mixed into training, as a share of the training "
        "examples (0.1 adds one passage per ten examples).", ge=0))
    l2sp: float = field(default=0.0, metadata=_doc(
        "Mitigation: L2-SP strength, a penalty l2sp/2 * ||w - w_pretrained||^2 on the trained "
        "weights that keeps them near where they started.", ge=0))


@dataclass
class EvalSection:
    """``eval:`` the scorecard computed on the test split."""

    metrics: list[str] = field(default_factory=lambda: ["exact_match", "token_f1", "rouge_l"],
                               metadata=_doc("Metrics computed on generated answers."))
    max_new_tokens: int = field(default=96, metadata=_doc("Longest generated answer.", gt=0))
    batch_size: int = field(default=16, metadata=_doc("Prompts generated at once.", gt=0))
    max_examples: int | None = field(default=None, metadata=_doc(
        "Evaluate at most this many test examples; null uses all.", gt=0))
    generate: bool = field(default=True, metadata=_doc(
        "Generate answers and score them; false reports only the loss."))
    retention: bool = field(default=True, metadata=_doc(
        "Score general-knowledge retention (forgetting) of base and tuned on the shipped probe."))
    metric_options: dict = field(default_factory=dict, metadata=_doc(
        "Options per metric, e.g. {brand_voice: {required: ['Ride on!']}, format: {regex: '...'}}."))
    bootstrap_samples: int = field(default=1000, metadata=_doc(
        "Bootstrap resamples behind each confidence interval.", ge=100))
    confidence: float = field(default=0.95, metadata=_doc(
        "Confidence level of the intervals on the scorecard.", gt=0, lt=1))


@dataclass
class OutputSection:
    """``output:`` where the run is written."""

    dir: str = field(metadata=_doc("Run folder for checkpoints, results and logs.", nonempty=True))
    overwrite: bool = field(default=False, metadata=_doc("Replace an existing run folder."))


@dataclass(kw_only=True)
class Recipe:
    """A whole validated recipe."""

    model: ModelSection
    data: DataSection
    method: MethodSection = field(default_factory=MethodSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    output: OutputSection

    @property
    def learning_rate(self) -> float:
        """``train.lr``, or the method's ``default_lr`` when the recipe gives none."""
        if self.train.lr is not None:
            return self.train.lr
        return float(get_method(self.method.name).default_lr)


SECTIONS: dict[str, type] = {
    "model": ModelSection, "data": DataSection, "method": MethodSection,
    "train": TrainSection, "eval": EvalSection, "output": OutputSection,
}
_PATH_KEYS = (("data", "train"), ("data", "validation"), ("data", "test"), ("output", "dir"))
_BOUNDS: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "gt": (">", operator.gt), "ge": (">=", operator.ge), "lt": ("<", operator.lt), "le": ("<=", operator.le),
}


class _RecipeLoader(yaml.SafeLoader):
    """``safe_load`` that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader subclass)


# ---------------------------------------------------------------- loading and overrides


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
    raw = _read_yaml(path)
    raw = _resolve_paths(raw, path.absolute().parent)
    raw, problems = _apply_overrides(raw, overrides)
    touched = {text.partition("=")[0].strip() for text in overrides}
    raw = _resolve_paths(raw, Path.cwd(), only=touched)
    return _build(raw, str(path), problems)


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
    return _build(raw, source, [])


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with dotted ``section.key=value`` overrides applied.

    Raises:
        RecipeError: listing every malformed override (no ``=``, unknown section, bad YAML).
    """
    result, problems = _apply_overrides(raw, overrides)
    if problems:
        raise RecipeError(problems, source="overrides")
    return result


def _read_yaml(path: Path) -> dict[str, Any]:
    source = str(path)
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
        got = "an empty file" if raw is None else _shown(raw)
        raise RecipeError([f"expected a mapping of sections (model:, data:, output:, ...), got {got}"],
                          source=source)
    return raw


def _apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    result: dict[str, Any] = copy.deepcopy(dict(raw))
    problems: list[str] = []
    for text in overrides:
        key, sep, value_text = text.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            problems.append(f"override {text!r}: expected section.key=value, e.g. train.lr=1e-4")
        elif parts[0] not in SECTIONS:
            problems.append(f"override {text!r}: unknown section {parts[0]!r}{_suggest(parts[0], SECTIONS)}")
        else:
            try:
                _set_dotted(result, parts, _parse_yaml(value_text))
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
        result[section] = {**values, key: text if os.path.isabs(text) else str(base / text)}
    return result


def _resolve_entry(entry: Any, base: Path) -> Any:
    """One entry of a ``data.train`` list (a path, or a mapping with ``path``) made absolute."""
    resolve = lambda text: text if os.path.isabs(text) else str(base / text)  # noqa: E731
    if isinstance(entry, str) and entry:
        return resolve(os.path.expanduser(entry))
    if isinstance(entry, Mapping) and isinstance(entry.get("path"), str) and entry["path"]:
        return {**entry, "path": resolve(os.path.expanduser(entry["path"]))}
    return entry


def _looks_like_path(name: str, base: Path) -> bool:
    return "/" in name or name.endswith(".gguf") or (base / name).exists()


# ---------------------------------------------------------------- validation


def _build(raw: Any, source: str, problems: list[str]) -> Recipe:
    if not isinstance(raw, Mapping):
        raise RecipeError([*problems, f"expected a mapping of sections, got {_shown(raw)}"], source=source)
    _report_unknown("", raw, list(SECTIONS), problems, noun="section")
    built: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        value = raw.get(name)
        if value is not None and not isinstance(value, Mapping):
            problems.append(f"section {name!r} must be a mapping of keys to values, got {_shown(value)}")
        elif name == "method":
            built[name] = _build_method(value or {}, problems)
        else:
            built[name] = _build_dataclass(cls, name, value or {}, problems)
    problems.extend(_check_data_raw(raw.get("data")))
    if built.get("data") is not None:
        problems.extend(_check_data(built["data"]))
    if built.get("eval") is not None:
        _check_metrics(built["eval"], problems)
    if problems:
        raise RecipeError(problems, source=source)
    return Recipe(**built)


def _build_method(raw: Mapping[str, Any], problems: list[str]) -> MethodSection | None:
    name = raw.get("name", "lora")
    if not isinstance(name, str):
        problems.append(f"method.name: expected str, got {_shown(name)}")
        return None
    try:
        method = get_method(name)
    except UnknownNameError as err:
        problems.append(f"method.name: unknown method {name!r}; valid methods: "
                        f"{', '.join(err.valid)}{_suggest(name, err.valid)}")
        return None
    options = {key: value for key, value in raw.items() if key != "name"}
    built = _build_dataclass(method.options_class, "method", options, problems, extra=("name",))
    return None if built is None else MethodSection(name=name, options=built)


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
            problems.append(f"{key}: expected {_describe(hints[name])}, got {_shown(raw[name])}")
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


def _check_metrics(section: EvalSection, problems: list[str]) -> None:
    """Metric names must be registered; their options are validated like method options."""
    for name in section.metrics:
        if name not in METRICS:
            problems.append(f"eval.metrics: unknown metric {name!r}; valid metrics: "
                            f"{', '.join(METRICS.names())}{_suggest(name, METRICS.names())}")
    for name, raw in list(section.metric_options.items()):
        key = f"eval.metric_options.{name}"
        if name not in METRICS:
            problems.append(f"{key}: unknown metric{_suggest(str(name), METRICS.names())}")
        elif not isinstance(raw, Mapping):
            problems.append(f"{key}: expected a mapping of options, got {_shown(raw)}")
        else:
            section.metric_options[name] = _build_dataclass(METRICS.get(name).options_class, key, raw, problems)


def _build_nested(cls: type, key: str, value: Any, problems: list[str]) -> Any:
    """A nested section (such as ``data.quality``) from its mapping, or None after its problems."""
    if value is None:
        return cls()
    if not isinstance(value, Mapping):
        problems.append(f"{key}: expected a mapping, got {_shown(value)}")
        return None
    return _build_dataclass(cls, key, value, problems)


def _check_data(data: DataSection) -> list[str]:
    held_out = (data.validation_fraction if data.validation is None else 0.0) + (
        data.test_fraction if data.test is None else 0.0)
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
    fields_known = sorted({f for name in FORMATS for f in FORMATS.get(name).fields})
    columns = raw.get("columns")
    for target, column in (columns.items() if isinstance(columns, Mapping) else ()):
        if str(target) not in fields_known:
            problems.append(f"data.columns: unknown field {target!r}{_suggest(str(target), fields_known)}; "
                            f"fields: {', '.join(fields_known)}")
        elif not isinstance(column, str) or not column:
            problems.append(f"data.columns.{target}: expected the column name in your files, got {_shown(column)}")
    quality = raw.get("quality")
    for key in ("fail_on", "ignore"):
        names = quality.get(key) if isinstance(quality, Mapping) else None
        for name in (names if isinstance(names, list) else ()):
            if name not in GATED:
                problems.append(f"data.quality.{key}: unknown finding {name!r}{_suggest(str(name), GATED)}; "
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
            detail = _suggest(str(key), valid) or f"; valid {noun}s: {', '.join(valid)}"
            problems.append(f"unknown {noun} {given!r}{detail}")


def _suggest(name: str, valid: Sequence[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


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


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if hint is type(None) or hint is None:
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (list, tuple) and args:
        return f"a list of {_describe(args[0])}"
    if origin is dict or hint is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _check_value(value: Any, meta: Mapping[str, Any]) -> str:
    """What ``value`` should have been under the checks in ``meta``; empty when it is fine."""
    if value is None:
        return ""
    choices = meta.get("choices")
    if choices and value not in choices:
        return "one of " + ", ".join(choices)
    bounds = [(symbol, check, meta[name]) for name, (symbol, check) in _BOUNDS.items() if name in meta]
    if any(not check(value, limit) for _, check, limit in bounds):
        return " and ".join(f"{symbol} {limit}" for symbol, _, limit in bounds)
    if meta.get("nonempty") and not value:
        return "a non-empty value"
    return ""


def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "null"


# ---------------------------------------------------------------- saving and help


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


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the recipe as YAML atomically (a temporary file in the same folder, then rename)."""
    text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, allow_unicode=True)
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
        method: also list the options of this registered method.
    """
    lines: list[str] = []
    for name, cls in SECTIONS.items():
        lines.append(f"{name}:")
        lines.extend(_field_help(cls, name, skip=("options",) if name == "method" else ()))
        if name == "method" and method is not None:
            lines.extend(_field_help(get_method(method).options_class, "method"))
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
        lines.append(f"  {prefix}.{info.name}: {_describe(hints[info.name])}{default}")
        help_text = info.metadata.get("help", "")
        choices = info.metadata.get("choices")
        lines.append(f"      {help_text} [one of {', '.join(choices)}]" if choices else f"      {help_text}")
    return lines


def _as_yaml(value: Any) -> str:
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=1000)
    return text.removesuffix("...\n").strip()
