"""Record formats: from a parsed record to an :class:`Example`, one registry entry per format.

Formats (``data.format``, or detected from each record's fields):

- ``instruction``: ``instruction``, optional ``input``, ``output`` (the Alpaca shape)
- ``chat``: OpenAI fine-tuning ``messages`` (system/user/assistant, optional ``weight`` 0/1)
- ``completion``: ``prompt`` / ``completion``
- ``text``: raw ``text`` for continued pretraining
- ``classification``: ``text`` / ``label``
- ``preference``: ``prompt`` / ``chosen`` / ``rejected`` (strings or chat messages)

A bad record is reported with its file, line and field; every problem of a file is collected
(up to a limit) and reported together. Unknown extra fields are kept as ``Example.meta``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finjust.data.example import (
    TASK_CHAT,
    TASK_CLASSIFICATION,
    TASK_PREFERENCE,
    TASK_TEXT,
    Example,
    Message,
)
from finjust.data.problems import MAX_REPORTED_PROBLEMS, Problem, combine
from finjust.data.readers import RawRecord, json_type_name, read_records
from finjust.errors import DataError
from finjust.registry import Registry

__all__ = ["FORMATS", "Example", "Message", "detect_format", "iter_examples", "load_examples"]

ROLES = ("system", "user", "assistant")
RecordReader = Callable[[Mapping[str, Any], str | None], Example]


@dataclass(frozen=True)
class RecordFormat:
    """A record format: the fields it reads and how it turns a record into an example."""

    name: str
    task: str
    read: RecordReader
    #: all of these present: the record is surely of this format
    required: frozenset[str]
    #: any of these present: the record is probably of this format
    signature: frozenset[str]
    optional: frozenset[str] = frozenset()

    @property
    def fields(self) -> frozenset[str]:
        return self.required | self.optional


FORMATS: Registry[RecordFormat] = Registry("data format")


def _format(
    name: str, task: str, required: set[str], signature: set[str], optional: frozenset[str] | set[str] = frozenset()
) -> Callable[[RecordReader], RecordReader]:
    def decorate(read: RecordReader) -> RecordReader:
        entry = RecordFormat(name, task, read, frozenset(required), frozenset(signature), frozenset(optional))
        FORMATS.add(name, entry)
        return read

    return decorate


class _RecordProblem(Exception):
    """A problem with one field of a record, raised by a reader and turned into a Problem."""

    def __init__(self, field_name: str | None, message: str, kind: str) -> None:
        super().__init__(message)
        self.field_name, self.kind = field_name, kind


def _text(record: Mapping[str, Any], key: str, required: bool = True, answer: bool = False) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise _RecordProblem(key, f"missing; every record needs a non-empty {key!r} string", "missing")
        return None
    if not isinstance(value, str):
        raise _RecordProblem(key, f"expected a string, got {json_type_name(value)}", "wrong_type")
    if required and not value.strip():
        kind = "empty_answer" if answer else "empty"
        raise _RecordProblem(key, "is empty; give it text or remove the record", kind)
    return value


def _with_system(messages: tuple[Message, ...], system_prompt: str | None) -> tuple[Message, ...]:
    if system_prompt and (not messages or messages[0].role != "system"):
        return (Message("system", system_prompt), *messages)
    return messages


@_format("instruction", TASK_CHAT, {"instruction", "output"}, {"instruction", "output"}, {"input"})
def read_instruction(record: Mapping[str, Any], system_prompt: str | None) -> Example:
    """Alpaca-style ``instruction`` / optional ``input`` / ``output``."""
    instruction = _text(record, "instruction") or ""
    extra = _text(record, "input", required=False)
    output = _text(record, "output", answer=True) or ""
    user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    return Example(_with_system((Message("user", user), Message("assistant", output)), system_prompt))


@_format("completion", TASK_CHAT, {"prompt", "completion"}, {"completion"})
def read_completion(record: Mapping[str, Any], system_prompt: str | None) -> Example:
    """``prompt`` / ``completion`` pairs, trained as one user turn and one assistant turn."""
    prompt = _text(record, "prompt") or ""
    completion = _text(record, "completion", answer=True) or ""
    return Example(_with_system((Message("user", prompt), Message("assistant", completion)), system_prompt))


@_format("chat", TASK_CHAT, {"messages"}, {"messages"})
def read_chat(record: Mapping[str, Any], system_prompt: str | None) -> Example:
    """OpenAI fine-tuning ``messages``: system/user/assistant, optional per-message ``weight``."""
    messages = _messages(record, "messages")
    _check_prompted("messages", messages)
    if messages[-1].role != "assistant":
        raise _RecordProblem("messages", "the conversation must end with an assistant message", "bad_turns")
    if not any(m.role == "assistant" and m.weight for m in messages):
        raise _RecordProblem("messages", "every assistant message has weight 0, so nothing would be trained; "
                             "give the answer to learn weight 1", "bad_turns")  # fmt: skip
    return Example(_with_system(messages, system_prompt))


def _check_prompted(key: str, messages: tuple[Message, ...]) -> None:
    """An answer needs something before it to answer: a conversation may not open with the assistant."""
    if messages[0].role == "assistant":
        raise _RecordProblem(f"{key}[0].role", "the conversation opens with an assistant message, which "
                             "answers nothing; put the user's message (or a system message) before it",
                             "bad_turns")  # fmt: skip


def _messages(record: Mapping[str, Any], key: str) -> tuple[Message, ...]:
    raw = record.get(key)
    if isinstance(raw, str):  # a CSV cell or Parquet string column holding the JSON list
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise _RecordProblem(key, "is a string but not a JSON list of messages", "wrong_type") from None
    if raw is None:
        raise _RecordProblem(key, "missing; expected a non-empty list of {role, content} objects", "missing")
    if not isinstance(raw, list) or not raw:
        raise _RecordProblem(key, "expected a non-empty list of {role, content} objects", "wrong_type")
    return tuple(_chat_message(item, f"{key}[{i}]") for i, item in enumerate(raw))


def _chat_message(item: Any, where: str) -> Message:
    if not isinstance(item, dict):
        raise _RecordProblem(where, "expected an object with 'role' and 'content'", "wrong_type")
    role, content, weight = item.get("role"), item.get("content"), item.get("weight")
    if weight is None:  # absent, or null where Arrow (Parquet, datasets) fills a field only some messages have
        weight = 1
    if role not in ROLES:
        raise _RecordProblem(f"{where}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}",
                             "unknown_role")  # fmt: skip
    if not isinstance(content, str) or not content.strip():
        kind = "empty_answer" if role == "assistant" and isinstance(content, str) else "empty"
        detail = ""
        if content is not None and not isinstance(content, str):
            kind, detail = "wrong_type", f", got {json_type_name(content)}"
            if isinstance(content, list):
                detail += " (content parts are not read: join their text into one string)"
        raise _RecordProblem(f"{where}.content", f"expected a non-empty string{detail}", kind)
    if weight not in (0, 1) or isinstance(weight, bool):
        raise _RecordProblem(f"{where}.weight", f"expected 0 or 1, got {weight!r}", "bad_value")
    return Message(role, content, int(weight))


@_format("text", TASK_TEXT, {"text"}, {"text"})
def read_text(record: Mapping[str, Any], system_prompt: str | None) -> Example:
    """Raw ``text`` for continued pretraining: every token is trained."""
    return Example((Message("assistant", _text(record, "text") or ""),), task=TASK_TEXT)


@_format("classification", TASK_CLASSIFICATION, {"text", "label"}, {"label"})
def read_classification(record: Mapping[str, Any], system_prompt: str | None) -> Example:
    """``text`` / ``label`` (a string or an integer class)."""
    text = _text(record, "text") or ""
    label = record.get("label")
    if label is None:
        raise _RecordProblem("label", "missing; every record needs a 'label' (a string or an integer)", "missing")
    if isinstance(label, float) and label.is_integer():
        label = int(label)  # an integer class stored as a float column (pandas does, around a missing value)
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise _RecordProblem("label", f"expected a string or an integer, got {json_type_name(label)}", "wrong_type")
    if not str(label).strip():
        raise _RecordProblem("label", "is empty; give every record its class", "empty")
    return Example((Message("user", text),), task=TASK_CLASSIFICATION, label=str(label).strip())


@_format("preference", TASK_PREFERENCE, {"prompt", "chosen", "rejected"}, {"chosen", "rejected"})
def read_preference(record: Mapping[str, Any], system_prompt: str | None) -> Example:
    """``prompt`` / ``chosen`` / ``rejected``: strings, or lists of chat messages."""
    prompt = _side(record, "prompt", "user")
    _check_prompted("prompt", prompt)
    chosen, rejected = _side(record, "chosen", "assistant"), _side(record, "rejected", "assistant")
    for key, answer in (("chosen", chosen), ("rejected", rejected)):
        if answer[-1].role != "assistant":
            raise _RecordProblem(key, "must end with an assistant message", "bad_turns")
    if _stripped(chosen) == _stripped(rejected):
        raise _RecordProblem("rejected", "is the same as 'chosen'; a preference pair needs two different answers",
                             "bad_value")  # fmt: skip
    prompt = _with_system(prompt, system_prompt)
    return Example((*prompt, *chosen), task=TASK_PREFERENCE, chosen=chosen, rejected=rejected)


def _stripped(messages: tuple[Message, ...]) -> tuple[tuple[str, str], ...]:
    """The turns as compared for sameness: whitespace around a text does not make another answer."""
    return tuple((m.role, m.content.strip()) for m in messages)


def _side(record: Mapping[str, Any], key: str, role: str) -> tuple[Message, ...]:
    if isinstance(record.get(key), list):
        return _messages(record, key)
    return (Message(role, _text(record, key, answer=role == "assistant") or ""),)


# ---------------------------------------------------------------- detection


def _order() -> list[RecordFormat]:
    """Formats in the order a partial match prefers them."""
    preferred = ["chat", "preference", "instruction", "completion", "classification", "text"]
    return [FORMATS.get(n) for n in preferred if n in FORMATS] + [
        FORMATS.get(n) for n in FORMATS if n not in preferred
    ]


def detect_format(record: Mapping[str, Any]) -> str | None:
    """The format a record looks like, or None; raises ValueError when it fits several."""
    keys = {k for k, v in record.items() if v is not None}
    full = [f for f in _order() if f.required <= keys]
    # text ⊂ classification: a record with text and label is a classification record
    full = [f for f in full if not any(f.required < g.required for g in full)]
    if len(full) > 1:
        names = " and ".join(repr(f.name) for f in full)
        raise ValueError(f"the fields fit both {names} records; set data.format to the one you mean")
    if full:
        return full[0].name
    return next((f.name for f in _order() if f.signature & keys), None)


_UNKNOWN = ("cannot tell the format: expected 'messages' (chat), 'instruction'/'output' (instruction), "
            "'prompt'/'completion' (completion), 'prompt'/'chosen'/'rejected' (preference), "
            "'text'/'label' (classification) or 'text' (text); map other names with data.columns")  # fmt: skip


# ---------------------------------------------------------------- reading files


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
        result = _read_raw(item, str(path), data_format, system_prompt, columns, first)
        if isinstance(result, tuple):
            result, name = result
            first = first or (name, result.line)
        yield result
    if not seen:
        yield Problem("empty_file", "no records; the file is empty (expected one record per line)", str(path))


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
    except ValueError as exc:
        return Problem("ambiguous_format", str(exc), path, item.number)
    if data_format == "auto" and first is not None and _belongs_to(record, FORMATS.get(first[0]), name):
        name = first[0]  # an incomplete record of the file's format: say which of its fields is wrong
    if name is None:
        return Problem("unknown_format", _UNKNOWN, path, item.number)
    fmt = FORMATS.get(name)
    if first is not None and FORMATS.get(first[0]).task != fmt.task and data_format == "auto":
        return Problem("mixed_formats", _mixed_message(fmt, FORMATS.get(first[0]), first[1]), path, item.number)
    try:
        example = fmt.read(record, system_prompt)
    except _RecordProblem as problem:
        field_name = _source_field(problem.field_name, columns)
        return Problem(problem.kind, str(problem) + _unread_fields(problem, record, fmt), path, item.number,
                       field_name)  # fmt: skip
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


def _unread_fields(problem: _RecordProblem, record: Mapping[str, Any], fmt: RecordFormat) -> str:
    """For a missing field: the record's fields the format does not read, which may be it under
    another name (a CSV column 'answer' for 'output')."""
    unread = [str(key) for key in record if key not in fmt.fields]
    if problem.kind != "missing" or problem.field_name not in fmt.fields or not unread:
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
        other = FORMATS.get(detected)
        complete = other.required <= {key for key, value in record.items() if value is not None}
        if complete and not other.required < file_format.required:  # text < classification: a label short
            return False
    return bool(file_format.fields & set(record))


def _renamed(record: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """The record with mapped columns under their format names (``columns``: format -> file)."""
    if not columns:
        return record
    sources = set(columns.values())
    renamed = {k: v for k, v in record.items() if k not in sources}
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
