"""From a recipe's data section to seeded splits and their manifest."""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from finjust.data.example import TASK_CHAT, Example, shared_task
from finjust.data.load import iter_examples
from finjust.data.pii import redact_pii
from finjust.data.problems import MAX_REPORTED_PROBLEMS, Problem, combine
from finjust.data.readers import held_out_split
from finjust.data.sources import DataSource, apply_weights, parse_sources
from finjust.data.split import SplitIndices, Splits, build_manifest, held_out_sizes, split_indices
from finjust.errors import DataError


@dataclass
class PreparedData:
    splits: Splits
    manifest: dict[str, Any]
    #: what the examples train: chat, text, classification or preference
    task: str = TASK_CHAT


def data_files(data: Any) -> list[DataSource]:
    """Every file a data section reads: the training sources, then validation and test."""
    extra = [DataSource(p) for p in (data.validation, data.test) if p]
    return [*parse_sources(data.train), *extra]


def held_out_source(path: str, role: str) -> DataSource:
    """``data.validation`` or ``data.test`` as a source: a ``datasets`` folder of several splits
    gives its split named like the role."""
    return DataSource(path, split=held_out_split(path, role))


def prepare_data(data: Any, seed: int) -> PreparedData:
    """Read the recipe's files (``data`` is a ``DataSection``) and split them with ``seed``.

    Raises:
        DataError: listing every bad record of every file (up to a limit), or naming a split
            that cannot be made.
    """
    sources = parse_sources(data.train)
    problems: list[Problem] = []
    total = [0]

    def read(source: DataSource) -> list[Example]:
        examples: list[Example] = []
        for item in iter_examples(source.path, data.format, data.system_prompt, data.columns, source.split):
            if isinstance(item, Example):
                examples.append(item)
            else:
                total[0] += 1
                if len(problems) < MAX_REPORTED_PROBLEMS:
                    problems.append(item)
        return examples

    parts = [read(source) for source in sources]
    validation = read(held_out_source(data.validation, "validation")) if data.validation else None
    test = read(held_out_source(data.test, "test")) if data.test else None
    if problems:
        raise combine(problems, total[0])
    pool = [example for part in parts for example in part]
    source_of = [index for index, part in enumerate(parts) for _ in part]
    task = common_task([pool, validation or [], test or []])
    if data.quality.redact_pii:
        pool = _redacted(pool)
        validation = None if validation is None else _redacted(validation)
        test = None if test is None else _redacted(test)
    by, setting = (data.stratify_by, "stratify_by") if data.stratify_by else (data.group_by, "group_by")
    keys = [split_key(e, by, setting) for e in pool] if by else None
    indices = split_pool(data, seed, len(pool), validation is not None, test is not None, keys)
    train = apply_weights([pool[i] for i in indices.train], [source_of[i] for i in indices.train],
                          [s.weight for s in sources], seed)  # fmt: skip
    splits = Splits(
        train,
        validation if validation is not None else [pool[i] for i in indices.validation],
        test if test is not None else [pool[i] for i in indices.test],
    )
    extra = {"task": task, "split": split_settings(data), "weights": {s.path: s.weight for s in sources},
             "pii_redacted": bool(data.quality.redact_pii)}  # fmt: skip
    return PreparedData(splits, build_manifest(splits, [s.path for s in data_files(data)], seed, extra), task)


def _redacted(examples: Sequence[Example]) -> list[Example]:
    return [example.with_texts(redact_pii) for example in examples]


def split_pool(
    data: Any, seed: int, size: int, has_validation: bool, has_test: bool, keys: Sequence[Hashable] | None = None
) -> SplitIndices:
    """The split of a pool of ``size`` records as the data section says (files given are not split off).

    Args:
        keys: each record's ``stratify_by`` or ``group_by`` value (see :func:`split_key`).
    """
    n_val, n_test = held_out_sizes(
        size,
        0.0 if has_validation else data.validation_fraction,
        0.0 if has_test else data.test_fraction,
        None if has_validation else data.validation_count,
        None if has_test else data.test_count,
    )
    strata = keys if data.stratify_by else None
    groups = keys if data.group_by and not data.stratify_by else None
    indices = split_indices(size, seed, n_val, n_test, strata, groups)
    asked = data.test_count > 0 if data.test_count is not None else data.test_fraction > 0
    if size and asked and not has_test and not indices.test:  # the fraction's one record gave way to training's
        why = (f"data.stratify_by keeps one record of each of its {len(set(strata))} values for training, which "
               f"leaves none of the {size} to hold out" if strata is not None else
               f"a pool of {size} record{'s' if size != 1 else ''} leaves none to hold out once one is kept for "
               "training")  # fmt: skip
        raise DataError(f"no test records: {why}, and every run ends with a scorecard on held-out test examples; "
                        "give more data, or a data.test file" + (", or drop data.stratify_by" if strata else ""))
    return indices


def split_settings(data: Any) -> dict[str, Any]:
    return {
        "validation_fraction": data.validation_fraction, "test_fraction": data.test_fraction,
        "validation_count": data.validation_count, "test_count": data.test_count,
        "stratify_by": data.stratify_by, "group_by": data.group_by,
    }  # fmt: skip


def split_key(example: Example, by: str, setting: str) -> Hashable:
    """The value ``data.stratify_by`` / ``data.group_by`` names: the label or a record field."""
    if by == "label" and example.label is not None:
        return example.label
    if by not in example.meta:
        fields = ", ".join(repr(key) for key in list(example.meta)[:5])
        has = f" (its other fields: {fields})" if fields else ""
        raise DataError(f"data.{setting}: this record has no field {by!r} to split by{has}; give every record "
                        "one, or choose another field", example.source, example.line)  # fmt: skip
    value = example.meta[by]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return json.dumps(value, sort_keys=True, default=str)  # lists, mappings, dates: a stable hashable form


def common_task(parts: Iterable[Sequence[Example]]) -> str:
    """The task all examples share; chat and raw text may mix (both train with SFT).

    Raises:
        DataError: naming the first example of a task that does not fit the others.
    """
    first: Example | None = None
    tasks: set[str] = set()
    for part in parts:
        for example in part:
            first = first or example
            tasks.add(example.task)
            if shared_task(tasks) is None:
                raise DataError(f"this is a {example.task} record but {first.source}:{first.line} is a "
                                f"{first.task} record; one data set holds one task", example.source, example.line)
    if first is None:
        raise DataError("no records in any data file")
    return shared_task(tasks) or first.task  # not None: a mix that cannot train raised above
