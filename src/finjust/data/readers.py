"""File types: from a path to a stream of raw records, one registry entry per type.

Every reader streams (a 300 MB JSONL file is never held in memory; a JSON array is the one
exception, since the standard ``json`` module parses whole documents) and reports bad
lines as :class:`~finjust.data.problems.Problem` s instead of stopping. Record numbers are
lines for JSONL, CSV and TSV (as an editor shows them), and 1-based record numbers for
JSON arrays, Parquet files, ``datasets`` folders and folders of ``.txt`` files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finjust.data.json_values import SURROGATE_ESCAPE, KeysGivenTwice, value_problem
from finjust.data.problems import Problem
from finjust.registry import Registry


@dataclass(frozen=True)
class RawRecord:
    """One parsed record and its line (or record number); ``path`` when not the file read."""

    number: int
    value: Any
    path: str | None = None


Item = RawRecord | Problem
Reader = Callable[[Path, str | None], Iterator[Item]]


def json_type_name(value: Any) -> str:
    """A value's type as JSON calls it (``null``, ``object``), as a message to a data author should."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else "a boolean"
    names = ((str, "a string"), ((int, float), "a number"), (dict, "an object"), ((list, tuple), "an array"))
    return next((name for types, name in names if isinstance(value, types)), type(value).__name__)


@dataclass(frozen=True)
class FileType:
    name: str
    suffixes: tuple[str, ...]
    #: ``read(path, split)``; ``split`` picks one split of a ``datasets`` folder
    read: Reader


FILE_TYPES: Registry[FileType] = Registry("file type")
#: files in these folders mark a folder written by ``datasets.Dataset.save_to_disk``
_DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def _register(name: str, *suffixes: str) -> Callable[[Reader], Reader]:
    def decorate(read: Reader) -> Reader:
        FILE_TYPES.add(name, FileType(name, suffixes, read))
        return read

    return decorate


def file_type_of(path: Path) -> str | None:
    """The registered file type a path looks like, or None."""
    if path.is_dir():
        return "datasets" if any((path / m).is_file() for m in _DATASETS_MARKERS) else "txt"
    suffix = path.suffix.lower()
    return next((t.name for t in map(FILE_TYPES.get, FILE_TYPES) if suffix in t.suffixes), None)


def read_records(path: str | Path, split: str | None = None) -> Iterator[Item]:
    """Raw records of a file or folder, each a :class:`RawRecord` or a :class:`Problem`."""
    path = Path(path)
    if (problem := source_problem(path)) is not None:
        yield problem
        return
    file_type = file_type_of(path)
    if split is not None and file_type != "datasets":
        yield Problem("unreadable", f"split {split!r} chooses a split of a datasets folder (save_to_disk), and this "
                      f"is a {file_type} {'folder' if path.is_dir() else 'file'}: remove split from its data.train "
                      "entry", str(path))  # fmt: skip
        return
    assert file_type is not None  # source_problem found none: the path has a known type
    try:
        yield from FILE_TYPES.get(file_type).read(path, split)
    except OSError as exc:
        yield Problem("unreadable", f"cannot read: {exc.strerror or exc}", str(path))


def source_problem(path: str | Path) -> Problem | None:
    """Why a data source cannot be read at all (missing, or of no known type), or None."""
    path = Path(path)
    if not path.exists():
        pattern = " (a pattern such as *.jsonl is not expanded: list the files)" if set("*?[") & set(str(path)) else ""
        return Problem("unreadable", f"cannot open: no such file or folder; check the path{pattern}", str(path))
    if file_type_of(path) is None:
        known = sorted({s for t in map(FILE_TYPES.get, FILE_TYPES) for s in t.suffixes})
        return Problem("unreadable", f"unknown file type {path.suffix!r}; expected one of {', '.join(known)}, "
                       "a folder of .txt files or a datasets folder saved with save_to_disk", str(path))  # fmt: skip
    if _is_utf16(path):  # else every line would be reported as not UTF-8 or malformed
        return Problem("not_utf8", _UTF16_MESSAGE, str(path))
    return None


_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
_UTF16_MESSAGE = "the file is UTF-16 text (its byte-order mark says so); re-save it as UTF-8"


def _is_utf16(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            return handle.read(2) in _UTF16_MARKS
    except OSError:
        return False  # the reader reports what stops it


def _not_utf8(data: bytes, error: UnicodeDecodeError, of_line: bool = False) -> str:
    """Why ``data`` (a file, or one line of it) is not UTF-8: UTF-16, or its first bad byte,
    counted from 1 as an editor's column is."""
    if not of_line and data[:2] in _UTF16_MARKS:
        return _UTF16_MESSAGE
    place = f"byte {error.start + 1}{' of the line' if of_line else ''}, 0x{data[error.start]:02x}"
    return f"not UTF-8 text ({place}); re-save the file as UTF-8"


def _decoded_lines(path: Path) -> Iterator[tuple[int, str | None, str]]:
    """(line number, text or None when not UTF-8, problem detail) per line, read as bytes.

    Decoding line by line lets one bad line be reported while the rest of the file is read.
    """
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not content
            try:
                yield number, raw.decode("utf-8"), ""
            except UnicodeDecodeError as exc:
                yield number, None, _not_utf8(raw, exc, of_line=True)


#: the stdlib parser recurses once per nesting level; no record format nests more than a few
_TOO_DEEP = "malformed JSON: nested too deeply to be a record (lists or objects thousands of levels deep)"
#: Python refuses to read integers of more than 4,300 digits (CVE-2020-10735): no record holds one
_TOO_LONG_NUMBER = "malformed JSON: a number thousands of digits long; write it as a string if it is text"


@_register("jsonl", ".jsonl", ".ndjson")
def read_jsonl(path: Path, split: str | None = None) -> Iterator[Item]:
    """One JSON value per non-blank line."""
    for number, text, detail in _decoded_lines(path):
        if text is None:
            yield Problem("not_utf8", detail, str(path), number)
        elif text.strip():
            try:
                twice = KeysGivenTwice()
                record = RawRecord(number, json.loads(text.rstrip("\r\n"), object_pairs_hook=twice))
                yield _checked(record, path, SURROGATE_ESCAPE.search(text) is not None, twice)
            except json.JSONDecodeError as exc:
                yield Problem("malformed", f"malformed JSON: {exc.msg} (column {exc.colno}); "
                              "each line must be one complete JSON object", str(path), number)  # fmt: skip
            except RecursionError:
                yield Problem("malformed", _TOO_DEEP, str(path), number)
            except ValueError:  # after JSONDecodeError, a ValueError too
                yield Problem("malformed", _TOO_LONG_NUMBER, str(path), number)


@_register("json", ".json")
def read_json_array(path: Path, split: str | None = None) -> Iterator[Item]:
    """A JSON array of records (read whole: the stdlib parser takes complete documents)."""
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    twice = KeysGivenTwice()
    try:
        text = raw.decode("utf-8")
        data = json.loads(text, object_pairs_hook=twice)
    except UnicodeDecodeError as exc:
        yield Problem("not_utf8", _not_utf8(raw, exc), str(path))
        return
    except json.JSONDecodeError as exc:
        lines = exc.msg == "Extra data"  # a second value after the first: one object per line
        hint = "; one JSON object per line is JSON Lines: give the file the .jsonl suffix" if lines else ""
        yield Problem("malformed", f"malformed JSON: {exc.msg} (column {exc.colno}){hint}", str(path), exc.lineno)
        return
    except RecursionError:
        yield Problem("malformed", _TOO_DEEP, str(path))
        return
    except ValueError:
        yield Problem("malformed", _TOO_LONG_NUMBER, str(path))
        return
    if not isinstance(data, list):
        yield Problem("malformed", f"expected a JSON array of records, got {json_type_name(data)}; "
                      "for one object per line use the .jsonl suffix", str(path))  # fmt: skip
        return
    escaped = SURROGATE_ESCAPE.search(text) is not None  # once for the file, not per record
    for number, value in enumerate(data, start=1):
        yield _checked(RawRecord(number, value), path, escaped, twice)


def _checked(record: RawRecord, path: Path, escaped: bool, twice: KeysGivenTwice) -> Item:
    """The record, or what its value hides (see :mod:`finjust.data.json_values`)."""
    return value_problem(record.value, path, record.number, escaped, twice) or record


@_register("csv", ".csv")
def read_csv(path: Path, split: str | None = None) -> Iterator[Item]:
    """Comma-separated values with a header row."""
    yield from _read_delimited(path, ",")


@_register("tsv", ".tsv", ".tab")
def read_tsv(path: Path, split: str | None = None) -> Iterator[Item]:
    """Tab-separated values with a header row."""
    yield from _read_delimited(path, "\t")


# the csv module refuses cells over 131,072 characters by default, and a long document is one
# record; the limit is process-wide, and raising it only lets other readers take longer cells too
csv.field_size_limit(2**31 - 1)


def _read_delimited(path: Path, delimiter: str) -> Iterator[Item]:
    bad_lines: dict[int, str] = {}

    def lines() -> Iterator[str]:
        for number, text, detail in _decoded_lines(path):
            if text is None:
                bad_lines[number] = detail
                text = "\n"  # keep the line count right; the record on it is reported below
            yield text

    # strict: a quote never closed is an error at the end of the file, not the rest of the file
    # read silently as one cell
    reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        yield _csv_problem(exc, delimiter, path, 1, reader.line_num)
        return
    if header is None:
        return
    if 1 in bad_lines:
        yield Problem("not_utf8", bad_lines.pop(1), str(path), 1)
        return
    # column names without the space a hand-written "text, label" puts after each comma (" label"
    # is no field any format reads: labelled data trained as raw text)
    header = [name.strip() for name in header]
    if (problem := _header_problem(header, delimiter, path, reader.line_num)) is not None:
        yield problem
        return
    start = reader.line_num + 1
    while True:
        try:  # the reader goes on after a malformed record: every one is reported in one pass
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield _csv_problem(exc, delimiter, path, start, reader.line_num)
            start = reader.line_num + 1
            continue
        end, number = reader.line_num, start
        start = end + 1
        bad = [n for n in range(number, end + 1) if n in bad_lines]
        if bad:
            yield Problem("not_utf8", bad_lines.pop(bad[0]), str(path), bad[0])
        elif any(cell.strip() for cell in row):
            yield _row_record(row, header, path, number)


def _csv_problem(error: csv.Error, delimiter: str, path: Path, start: int, line: int) -> Problem:
    """The malformed record that began on line ``start`` (the reader stopped on ``line``)."""
    kind = "TSV" if delimiter == chr(9) else "CSV"
    if line > start and "unexpected end of data" in str(error):
        return Problem("malformed", f"malformed {kind}: a quote opened in the record on line {start} is never "
                       f"closed, so lines {start}-{line} would read as one cell; close the quote, or write a "
                       'quote inside a quoted cell as ""', str(path), start)  # fmt: skip
    return Problem("malformed", f"malformed {kind}: {error}", str(path), line)


def _header_problem(header: list[str], delimiter: str, path: Path, line: int) -> Problem | None:
    """What makes a header unusable: a column named twice (one would silently replace the other in
    every record), or one column that holds another delimiter's separators."""
    if not any(name.strip() for name in header):
        return Problem("malformed", "the header is blank: the first line must name the columns (such as "
                       f"text{delimiter}label)", str(path), line)  # fmt: skip
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if name in seen:
            return Problem("malformed", f"the header names column {name!r} twice (columns {seen[name]} and "
                           f"{number}); rename one so that no column hides another", str(path), line)  # fmt: skip
        seen[name] = number
    other = next((sep for sep in (";", "\t", "|", ",") if sep != delimiter and sep in header[0]), None)
    if len(header) == 1 and other is not None:
        return Problem("malformed", f"the header is one column, {header[0]!r}: the file seems to separate its "
                       f"columns with {other!r}, not {delimiter!r}; save it with {delimiter!r} between columns "
                       f"(or as .tsv for tabs)", str(path), line)  # fmt: skip
    return None


def _row_record(row: list[str], header: list[str], path: Path, number: int) -> Item:
    if len(row) > len(header):
        return Problem("malformed", f"the row has {len(row)} fields but the header has {len(header)}; "
                       "quote cells that contain the delimiter", str(path), number)  # fmt: skip
    # a short row leaves its last columns out, so they read as missing fields
    return RawRecord(number, dict(zip(header, map(_newlines, row))))


def _newlines(cell: str) -> str:
    """A cell's line breaks as "\n": a quoted cell keeps the file's "\r\n" (or old Macs' "\r"),
    which would train a model to write "\r"; Python's text files read both as "\n" too."""
    return cell.replace("\r\n", "\n").replace("\r", "\n") if "\r" in cell else cell


@_register("parquet", ".parquet", ".pq")
def read_parquet(path: Path, split: str | None = None) -> Iterator[Item]:
    """Apache Parquet, read in batches of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and others for files it cannot read
        yield Problem("malformed", f"not a readable Parquet file: {exc}", str(path))
        return
    number = 0
    try:
        for batch in table.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield RawRecord(number, row)
    except (ValueError, pa.ArrowException) as exc:  # invalid UTF-8 in a string column: UnicodeDecodeError
        yield Problem("malformed", f"rows from {number + 1} on cannot be read ({type(exc).__name__}: {exc}); "
                      "re-write the file with valid UTF-8 text", str(path), number + 1)  # fmt: skip


@_register("datasets")
def read_datasets_folder(path: Path, split: str | None = None) -> Iterator[Item]:
    """A folder written by ``datasets`` ``save_to_disk`` (a Dataset, or one split of a DatasetDict)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError and others
        yield Problem("unreadable", f"cannot load the datasets folder: {exc}", str(path))
        return
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if chosen not in names:
            wanted = f", not {split!r}" if split else ""
            yield Problem("unreadable", f"the folder holds the splits {', '.join(names)}{wanted}; a data.train "
                          "entry chooses one with {path: ..., split: NAME}, data.validation and data.test read "
                          "the split named like them", str(path))  # fmt: skip
            return
        loaded = loaded[chosen]
    # plain Python rows whatever format was set before saving (save_to_disk keeps it: a format
    # limited to some columns dropped the others, a label among them, with no error)
    loaded = loaded.with_format(None)
    class_names = {name: feature.int2str for name, feature in loaded.features.items()
                   if isinstance(feature, datasets.ClassLabel)}  # fmt: skip
    for number, row in enumerate(loaded, start=1):
        # a ClassLabel column holds its class's index: the class's name is the label
        named = {name: to_name(row[name]) for name, to_name in class_names.items() if row.get(name) is not None}
        yield RawRecord(number, {**row, **named})


def held_out_split(path: str | Path, role: str) -> str | None:
    """The split ``data.validation`` or ``data.test`` (``role``) reads from a ``datasets`` folder:
    the one named like the role where the folder holds several (never the reader's "train"
    default: held-out data read from the training split would leak), else the reader's choice."""
    manifest = Path(path) / "dataset_dict.json"
    if not manifest.is_file():
        return None
    try:
        splits = json.loads(manifest.read_text(encoding="utf-8")).get("splits", [])
    except (OSError, ValueError, AttributeError):
        return None  # the reader reports the folder as unreadable
    return role if len(splits) > 1 else None


def _data_files_in(folder: Path) -> list[str]:
    """The files under ``folder`` of a registered type other than text, as paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and file_type_of(p) not in (None, "txt"))  # fmt: skip


def _shown(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _data_files_hint(folder: Path) -> str:
    """For a folder of data files read as text documents: how to read them instead."""
    found = _data_files_in(folder)
    if not found:
        return ""
    return (f"; it holds {len(found)} data file(s) ({_shown(found)}): list them as sources, "
            "e.g. train: [a.jsonl, b.jsonl]")  # fmt: skip


@_register("txt", ".txt")
def read_text_files(path: Path, split: str | None = None) -> Iterator[Item]:
    """A ``.txt`` file, or a folder of them (recursively, in sorted order): one record per file."""
    # any case of the suffix (file_type_of reads NOTES.TXT as text), and files only: a folder named
    # x.txt is no document (reading it stopped the rest of the folder)
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() == ".txt" and p.is_file()) if path.is_dir() \
        else [path]  # fmt: skip
    if path.is_dir() and not files:
        yield Problem("unreadable", "the folder has no .txt files and is not a datasets folder "
                      f"(no dataset_info.json){_data_files_hint(path)}", str(path))  # fmt: skip
    elif path.is_dir() and (others := _data_files_in(path)):  # they would be left out without a word
        yield Problem("unreadable", f"the folder of .txt files also holds {len(others)} data file(s) "
                      f"({_shown(others)}), which are not read: list them as data.train sources of their own, "
                      "or move them out of the folder", str(path))  # fmt: skip
    for file in files:
        try:
            raw = file.read_bytes().removeprefix(b"\xef\xbb\xbf")
        except OSError as exc:  # this file alone: the folder's other documents are still read
            yield Problem("unreadable", f"cannot read: {exc.strerror or exc}", str(file))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Problem("not_utf8", _not_utf8(raw, exc), str(file))
            continue
        # line 1: a file is one record, which starts there (its place in the folder is no line);
        # line breaks as "\n", as the CSV reader's cells and Python's text files read them
        yield RawRecord(1, {"text": _newlines(text)}, str(file) if path.is_dir() else None)
