"""``finjust data check`` as a library call: stream a data section's files into a quality report.

The files are read once, in batches; nothing but fingerprints is kept (see
:mod:`finjust.data.quality`). The pool is split exactly as :func:`~finjust.data.prepare.prepare_data`
splits it for training, so the report's split sizes and hashes are the run's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from transformers import PreTrainedTokenizerBase

from finjust.data.example import Example, shared_task
from finjust.data.findings import FINDINGS
from finjust.data.gate import apply_gate
from finjust.data.load import iter_examples
from finjust.data.prepare import data_files, held_out_source, split_key, split_pool, split_settings
from finjust.data.problems import Problem
from finjust.data.quality import POOL, TEST_FILE, VALIDATION_FILE, QualityScan, ScanSettings
from finjust.data.readers import source_problem
from finjust.data.report import SPLITS, QualityReport
from finjust.data.scan_findings import CHECKS, label_counts, token_stats
from finjust.data.sources import DataSource, parse_sources
from finjust.data.split import hash_of_hashes
from finjust.errors import DataError, RecipeError
from finjust.recipe.validate import suggest

BATCH = 256
Progress = Callable[[int], None]


def check_data(
    data: Any, seed: int = 42, tokenizer: PreTrainedTokenizerBase | None = None,
    on_progress: Progress | None = None, tokenizer_name: str | None = None,
) -> QualityReport:  # fmt: skip
    """Check a recipe's data section and apply its quality gate.

    Args:
        data: the recipe's ``DataSection``.
        seed: the split seed (``train.seed``).
        tokenizer: the model's tokenizer for token statistics; None skips the token checks.
        on_progress: called with the number of records read so far, every 10,000 records.
        tokenizer_name: how the report names the tokenizer.

    Returns:
        The report, with each finding's status set by the gate (``report.passed``).
    """
    started = time.perf_counter()
    settings = ScanSettings(data.max_length, data.too_long, data.quality.near_duplicate_threshold,
                            data.quality.max_listed, data.quality.redact_pii,
                            data.stratify_by or data.group_by)  # fmt: skip
    scan = QualityScan(settings, tokenizer)
    by = data.stratify_by or data.group_by
    roles = _roles(data)
    _require_readable(roles)
    split_field = _SplitField()
    files = [_read_file(scan, data, source, origin, role, by, on_progress, split_field) for source, origin, role in roles]
    if by and split_field.first_without is not None and not split_field.seen:
        raise _no_split_field(split_field.first_without, by, "stratify_by" if data.stratify_by else "group_by")
    _check_tasks(scan, files)
    codes, order = _assign_splits(scan, data, seed, bool(data.validation), bool(data.test))
    report = QualityReport(
        files=files,
        task=_task(scan),
        sizes={name: int(np.sum(codes == i)) for i, name in enumerate(SPLITS)},
        sha256={name: hash_of_hashes(bytes(scan.digest[32 * i : 32 * i + 32]).hex() for i in order[name])
                for name in SPLITS},  # fmt: skip
        findings={name: CHECKS.get(name)(scan, codes) for name in FINDINGS},
        settings={"seed": seed, "max_length": data.max_length, "too_long": data.too_long,
                  "near_duplicate_threshold": data.quality.near_duplicate_threshold, "split": split_settings(data),
                  "sources": [s.path for s in data_files(data)], "redact_pii": data.quality.redact_pii},  # fmt: skip
        tokens=token_stats(scan, codes),
        tokenizer=tokenizer_name if tokenizer is not None else None,
        labels=label_counts(scan, codes),
        pii=dict(scan.pii),
        problems_by_kind=dict(scan.problem_kinds),
    )
    report.seconds = round(time.perf_counter() - started, 2)
    return apply_gate(report, data.quality, data.too_long)


class _Role(NamedTuple):
    """One source of the data section, where its records come from and the split it feeds."""

    source: DataSource
    origin: int
    split: str


def _roles(data: Any) -> list[_Role]:
    """Each source of the data section with its origin and split role."""
    roles = [_Role(s, POOL, "train") for s in parse_sources(data.train)]
    return roles + [_Role(held_out_source(p, name), origin, name) for p, origin, name in
                    ((data.validation, VALIDATION_FILE, "validation"), (data.test, TEST_FILE, "test")) if p]  # fmt: skip


def source_paths(data: Any) -> list[Path]:
    """The path of each source of the data section (train, validation, test)."""
    return [Path(role.source.path) for role in _roles(data)]


def require_readable(data: Any) -> None:
    """Every source of the data section exists and is of a known type, or one DataError naming each that is not."""
    _require_readable(_roles(data))


def unreadable_sources(data: Any) -> list[Problem]:
    """Each source of the data section that is missing or of no known type."""
    return _unreadable(_roles(data))


def _unreadable(roles: list[_Role]) -> list[Problem]:
    return [_naming_the_key(problem, role) for role in roles if (problem := source_problem(role.source.path))]


def _naming_the_key(problem: Problem, role: _Role) -> Problem:
    """A missing source's problem with the recipe key that names it: the path shown is resolved,
    and ``r/r/good.jsonl`` says more once one knows where relative paths start."""
    if Path(role.source.path).exists():
        return problem
    where = (f" (data.{role.split}; a relative path starts at the recipe's own folder when the recipe file gives "
             "it, at the current folder when an override or the command line does)")  # fmt: skip
    return dataclasses.replace(problem, message=problem.message + where)


def _require_readable(roles: list[_Role]) -> None:
    """Sources that cannot be opened are the recipe's error, not findings about data: all at once.

    Raises:
        DataError: naming each missing source or one of no known type.
    """
    problems = _unreadable(roles)
    if len(problems) == 1:
        raise problems[0].to_error()
    if problems:
        raise DataError(f"{len(problems)} data sources cannot be read:\n" + "\n".join(f"  {p}" for p in problems))


class _SplitField:
    """Whether any record had the field ``data.stratify_by``/``group_by`` names, and the first without it."""

    def __init__(self) -> None:
        self.seen = False
        self.first_without: Example | None = None


def _read_file(
    scan: QualityScan, data: Any, source: DataSource, origin: int, role: str, by: str | None,
    on_progress: Progress | None, split_field: _SplitField,
) -> dict[str, Any]:  # fmt: skip
    setting = "stratify_by" if data.stratify_by else "group_by"
    records = bad = 0
    batch: list[Example] = []
    keys: list[Hashable] = []

    def flush() -> None:
        scan.add(batch, origin, keys if by and origin == POOL else None)
        batch.clear()
        keys.clear()

    for item in iter_examples(source.path, data.format, data.system_prompt, data.columns, source.split):
        if isinstance(item, Problem):
            bad += 1
            scan.add_problem(item)
            continue
        if by and origin == POOL:
            try:
                keys.append(split_key(item, by, setting))
                split_field.seen = True
            except DataError as error:
                split_field.first_without = split_field.first_without or item
                bad += 1
                scan.add_problem(Problem("missing", error.detail, item.source, item.line, by))
                continue
        batch.append(item)
        records += 1
        if len(batch) == BATCH:
            flush()
        if on_progress is not None and records % 10_000 == 0:
            on_progress(scan.count + len(batch))
    flush()
    return {"path": source.path, "role": role, "weight": source.weight, "records": records, "bad": bad}


def _no_split_field(first: Example, by: str, setting: str) -> RecipeError:
    """``data.stratify_by``/``group_by`` names a field no record has: the recipe's mistake, said
    once, not once per record."""
    fields = [*first.meta, *(["label"] if first.label is not None else [])]
    listed = ", ".join(map(repr, fields[:8])) or "none besides those its format reads"
    return RecipeError([f"data.{setting}: no record has a field {by!r} to split by (the first, {first.source}:"
                        f"{first.line}, has {listed}){suggest(by, fields)}"])  # fmt: skip


def _check_tasks(scan: QualityScan, files: list[dict[str, Any]]) -> None:
    """One data set holds one task (chat and raw text may mix); else every file's records are suspect."""
    if scan.tasks and shared_task(scan.tasks) is None:
        found = "; ".join(f"{n} {task}, the first at {scan.first_of_task[task]}"
                          for task, n in scan.tasks.most_common())  # fmt: skip
        scan.add_problem(Problem("mixed_formats", f"the files hold records of several tasks ({found}); one "
                                 "data set holds one task: set data.format or separate the files",
                                 files[0]["path"]))  # fmt: skip


def _task(scan: QualityScan) -> str:
    if not scan.tasks:
        return "none"
    return shared_task(scan.tasks) or scan.tasks.most_common(1)[0][0]


def _assign_splits(scan: QualityScan, data: Any, seed: int, has_val: bool, has_test: bool
                   ) -> tuple[np.ndarray, dict[str, list[int]]]:  # fmt: skip
    """The split code of every record, and each split's record indices in split order."""
    origin = np.frombuffer(scan.origin, dtype=np.int8)
    codes = np.zeros(scan.count, dtype=np.int8)
    pool = np.flatnonzero(origin == POOL)
    order: dict[str, list[int]] = {name: [] for name in SPLITS}
    values = np.frombuffer(scan.split_value, dtype=np.int32)
    keys = [scan.split_values.values[v] for v in values[pool]] if data.stratify_by or data.group_by else None
    try:
        indices = split_pool(data, seed, len(pool), has_val, has_test, keys)
    except DataError as error:
        scan.add_problem(Problem("unsplittable", error.detail, str(parse_sources(data.train)[0].path)))
        order["train"] = pool.tolist()
    else:
        for code, (name, part) in enumerate(zip(SPLITS, (indices.train, indices.validation, indices.test))):
            order[name] = pool[np.asarray(part, dtype=np.int64)].tolist()
            codes[order[name]] = code
    for code, name, file_origin in ((1, "validation", VALIDATION_FILE), (2, "test", TEST_FILE)):
        given = np.flatnonzero(origin == file_origin)
        if len(given):
            codes[given] = code
            order[name] = given.tolist()
    return codes, order
