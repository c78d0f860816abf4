"""Reading data files into examples: every record through its format, every bad one a problem.

A bad record is reported with its file, line and field; every problem of a file is collected
(up to a limit) and reported together. Unknown extra fields are kept as ``Example.meta``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from finjust.data.example import Example
from finjust.data.formats import RECORD_FORMATS, RecordFormat, RecordProblem, detect_format
from finjust.data.problems import MAX_REPORTED_PROBLEMS, Problem, combine
from finjust.data.readers import RawRecord, file_type_of, json_type_name, read_records
from finjust.errors import DataError

__all__ = ["iter_examples", "load_examples"]

_UNKNOWN = ("cannot tell the format: expected 'messages' (chat), 'instruction'/'output' (instruction), "
            "'prompt'/'completion' (completion), 'prompt'/'chosen'/'rejected' (preference), "
            "'text'/'label' (classification) or 'text' (text); map other names with data.columns")  # fmt: skip


def iter_examples(
    path: str | Path,
    data_format: str = "auto",
    system_prompt: str | None = None,
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
) -> Iterator[Example | Problem]:
    """Stream a file's records as examples, and its bad records as problems.

    Args:
        path: a data file or folder of any registered file type.
        data_format: a registered format name, or ``auto`` to detect it per record.
        system_prompt: a system message put before conversations that have none.
        columns: ``{format field: column in the file}`` renames.
        split: the split to read from a ``datasets`` folder holding several.
    """
    columns = dict(columns or {})
    first: tuple[str, int] | None = None  # (format name, line) of the first good record
    seen = 0
    for item in read_records(path, split):
        seen += 1
        if isinstance(item, Problem):
            yield item
            continue
        result: tuple[Example, str] | Example | Problem  # a tuple is unpacked to its example below
        result = _read_raw(item, str(path), data_format, system_prompt, columns, first)
        if isinstance(result, tuple):
            result, name = result
            first = first or (name, result.line)
        yield result
    if not seen:
        yield Problem("empty_file", _no_records(Path(path)), str(path))


def _no_records(path: Path) -> str:
    """Why a file gave no records, in its type's terms (a CSV of a header alone is not empty)."""
    kind = file_type_of(path)
    if kind in ("csv", "tsv") and path.is_file() and path.stat().st_size:
        return "no records; the file holds a header and no rows below it"
    if kind in ("parquet", "datasets"):
        return "no records; the table has no rows"
    if path.is_dir():
        return "no records; the folder holds no data files"
    return "no records; the file is empty (expected one record per line)"


def _read_raw(
    item: RawRecord, path: str, data_format: str, system_prompt: str | None,
    columns: dict[str, str], first: tuple[str, int] | None,
) -> tuple[Example, str] | Problem:  # fmt: skip
    path = item.path or path
    record = item.value
    if not isinstance(record, dict):
        hint = ("; a .jsonl file holds one object per line, not an array (a whole-file JSON array takes the .json "
                "suffix)" if isinstance(record, list) else "")  # fmt: skip
        return Problem("not_an_object", f"expected an object of named fields, got {json_type_name(record)}{hint}",
                       path, item.number)  # fmt: skip
    record = _renamed(record, columns)
    try:
        name = data_format if data_format != "auto" else detect_format(record)
    except RecordProblem as problem:
        return Problem(problem.kind, str(problem), path, item.number)
    if data_format == "auto" and first is not None and _belongs_to(record, RECORD_FORMATS.get(first[0]), name):
        name = first[0]  # an incomplete record of the file's format: say which of its fields is wrong
    if name is None:
        return Problem("unknown_format", _UNKNOWN, path, item.number)
    fmt = RECORD_FORMATS.get(name)
    if first is not None and RECORD_FORMATS.get(first[0]).task != fmt.task and data_format == "auto":
        return Problem("mixed_formats", _mixed_message(fmt, RECORD_FORMATS.get(first[0]), first[1]), path, item.number)
    try:
        example = fmt.read(record, system_prompt)
    except RecordProblem as problem:
        field_name = _source_field(problem.field_name, columns)
        return Problem(problem.kind, str(problem) + _unread_fields(problem, record, fmt, columns), path,
                       item.number, field_name)  # fmt: skip
    meta = {k: v for k, v in record.items() if k not in fmt.fields}
    return dataclasses.replace(example, source=path, line=item.number, meta=meta), name


def _mixed_message(fmt: RecordFormat, first: RecordFormat, first_line: int) -> str:
    """Why a record of another task than the file's first is refused; where the first has only some
    of this one's fields (text of text/label), that it may be the first that lacks them."""
    message = (f"cannot tell the format: this record looks like {fmt.name!r} ({fmt.task}) but line {first_line} is "
               f"a {first.task} record; keep one task per data set or set data.format")  # fmt: skip
    if first.required < fmt.required:
        lacking = ", ".join(repr(key) for key in sorted(fmt.required - first.required))
        message += f" (if this is {fmt.name} data, it is line {first_line} that lacks its {lacking})"
    return message


def _unread_fields(problem: RecordProblem, record: Mapping[str, Any], fmt: RecordFormat,
                   columns: Mapping[str, str]) -> str:  # fmt: skip
    """For a missing field: the record's fields the format does not read, which may be it under
    another name (a CSV column 'answer' for 'output'); for a field data.columns maps, that the
    record lacks that column (mapping the field again would not help)."""
    unread = [str(key) for key in record if key not in fmt.fields]
    if problem.kind != "missing" or problem.field_name not in fmt.fields:
        return ""
    if (column := columns.get(problem.field_name)) is not None:
        has = f"; it has {', '.join(map(repr, unread[:5]))}" if unread else ""
        return f" (data.columns reads it from the column {column!r}, which this record lacks{has})"
    if not unread:
        return ""
    if problem.field_name == "messages":  # a list of turns; no text column can stand in for it
        return (f" (the record has {', '.join(map(repr, unread[:5]))}: if the file is of another format, set "
                "data.format to it, or leave it auto)")  # fmt: skip
    return (f" (the record also has {', '.join(map(repr, unread[:5]))}: if one of them is "
            f"{problem.field_name!r}, map it with data.columns: {{{problem.field_name}: {unread[0]}}})")


def _belongs_to(record: Mapping[str, Any], file_format: RecordFormat, detected: str | None) -> bool:
    """True when a record is an incomplete one of the file's format (a label or field missing
    or null) rather than a complete record of another format, so that its problem is that field."""
    if detected == file_format.name:
        return False
    if detected is not None:
        other = RECORD_FORMATS.get(detected)
        complete = other.required <= {key for key, value in record.items() if value is not None}
        if complete and not other.required < file_format.required:  # text < classification: a label short
            return False
    return bool(file_format.fields & set(record))


def _renamed(record: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """The record with mapped columns under their format names (``columns``: format -> file)."""
    if not columns:
        return record
    sources = set(columns.values())
    # a mapped field's own column is not read either: a record lacking the mapped column must be
    # reported, not read from the column the mapping replaced
    renamed = {k: v for k, v in record.items() if k not in sources and k not in columns}
    for target, source in columns.items():
        if source in record:
            renamed[target] = record[source]
    return renamed


def _source_field(name: str | None, columns: dict[str, str]) -> str | None:
    """A format field name as the file calls it, so the message names the user's column."""
    if name is None or not columns:
        return name
    for separator in ("[", "."):
        head, found, rest = name.partition(separator)
        if found and head in columns:
            return columns[head] + separator + rest
    return columns.get(name, name)


def load_examples(
    path: str | Path,
    data_format: str = "auto",
    system_prompt: str | None = None,
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
) -> list[Example]:
    """Read a whole data file into examples (see :func:`iter_examples` for the arguments).

    Raises:
        DataError: naming file, line and field of every bad record (up to a limit).
    """
    examples: list[Example] = []
    problems: list[Problem] = []
    total = 0
    for item in iter_examples(path, data_format, system_prompt, columns, split):
        if isinstance(item, Example):
            examples.append(item)
            continue
        total += 1
        if len(problems) < MAX_REPORTED_PROBLEMS:
            problems.append(item)
    if problems:
        if len(problems) == 1 and problems[0].kind in ("empty_file", "unreadable"):
            raise problems[0].to_error()
        raise combine(problems, total)
    if not examples:
        raise DataError("no records; expected one record per line", str(path))
    return examples
