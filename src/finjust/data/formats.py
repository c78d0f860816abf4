"""Readers that turn data files into conversations: one registry entry per record format.

Every record becomes an :class:`Example` (a list of chat messages); a bad record is reported
with its file, line and field, and all problems of a file are reported together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finjust.errors import DataError
from finjust.registry import Registry

#: how many problems of one file are listed before the rest are only counted
MAX_REPORTED_PROBLEMS = 20
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    #: 1 trains this (assistant) message, 0 shows it as context only
    weight: int = 1


@dataclass(frozen=True)
class Example:
    """One conversation to train on, with where it came from."""

    messages: tuple[Message, ...]
    source: str = ""
    line: int = 0
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def canonical_json(self) -> str:
        """The content as canonical JSON: what split hashes and duplicate checks compare."""
        return json.dumps([[m.role, m.content, m.weight] for m in self.messages], ensure_ascii=False)

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def prompt_text(self) -> str:
        """The last user message: the question an evaluation asks."""
        return next(m.content for m in reversed(self.messages) if m.role == "user")

    def reference_answer(self) -> str:
        """The final assistant message: the answer an evaluation expects."""
        return self.messages[-1].content


RecordReader = Callable[[dict[str, Any], str | None], tuple[Message, ...]]
FORMATS: Registry[RecordReader] = Registry("data format")


class _RecordProblem(Exception):
    """A problem with one record, raised by a reader and turned into a DataError line."""

    def __init__(self, field_name: str | None, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name


def _text(record: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise _RecordProblem(key, f"missing; every record needs a non-empty {key!r} string")
        return None
    if not isinstance(value, str):
        raise _RecordProblem(key, f"expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise _RecordProblem(key, "is empty; give it text or remove the record")
    return value


@FORMATS.register("instruction")
def read_instruction(record: dict[str, Any], system_prompt: str | None) -> tuple[Message, ...]:
    """Alpaca-style ``instruction`` / optional ``input`` / ``output``."""
    instruction = _text(record, "instruction")
    extra = _text(record, "input", required=False)
    output = _text(record, "output")
    user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    head = (Message("system", system_prompt),) if system_prompt else ()
    return (*head, Message("user", user or ""), Message("assistant", output or ""))


@FORMATS.register("chat")
def read_chat(record: dict[str, Any], system_prompt: str | None) -> tuple[Message, ...]:
    """OpenAI fine-tuning ``messages``: system/user/assistant, optional per-message ``weight``."""
    raw = record.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _RecordProblem("messages", "expected a non-empty list of {role, content} objects")
    messages = tuple(_chat_message(item, i) for i, item in enumerate(raw))
    if messages[-1].role != "assistant":
        raise _RecordProblem("messages", "the conversation must end with an assistant message")
    if system_prompt and messages[0].role != "system":
        messages = (Message("system", system_prompt), *messages)
    return messages


def _chat_message(item: Any, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(item, dict):
        raise _RecordProblem(where, "expected an object with 'role' and 'content'")
    role, content, weight = item.get("role"), item.get("content"), item.get("weight", 1)
    if role not in ROLES:
        raise _RecordProblem(f"{where}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if not isinstance(content, str) or not content.strip():
        raise _RecordProblem(f"{where}.content", "expected a non-empty string")
    if weight not in (0, 1):
        raise _RecordProblem(f"{where}.weight", f"expected 0 or 1, got {weight!r}")
    return Message(role, content, int(weight))


def detect_format(record: dict[str, Any]) -> str | None:
    """The format a record looks like, or None."""
    if "messages" in record:
        return "chat"
    if "instruction" in record or "output" in record:
        return "instruction"
    return None


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) per non-blank line; malformed lines raise DataError."""
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot open: {exc.strerror}", str(path)) from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"malformed JSON: {exc.msg} (column {exc.colno})", str(path), number) from exc


def load_examples(path: str | Path, data_format: str = "auto", system_prompt: str | None = None) -> list[Example]:
    """Read a JSONL file of instruction or chat records into examples.

    Raises:
        DataError: naming file, line and field of every bad record (up to a limit).
    """
    path = Path(path)
    examples: list[Example] = []
    problems: list[DataError] = []
    try:
        for line, record in iter_jsonl(path):
            try:
                examples.append(_read_record(record, data_format, system_prompt, str(path), line))
            except DataError as problem:
                problems.append(problem)
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start}); re-save the file as UTF-8", str(path)) from exc
    if problems:
        raise _combined(problems, str(path))
    if not examples:
        raise DataError("no records; expected one JSON object per line", str(path))
    return examples


def _read_record(record: Any, data_format: str, system_prompt: str | None, path: str, line: int) -> Example:
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", path, line)
    name = data_format if data_format != "auto" else detect_format(record)
    if name is None:
        raise DataError(
            "cannot tell the format: expected 'messages' (chat) or 'instruction'/'output' (instruction)", path, line
        )
    reader = FORMATS.get(name)
    try:
        messages = reader(record, system_prompt)
    except _RecordProblem as problem:
        raise DataError(str(problem), path, line, problem.field_name) from None
    meta = {k: v for k, v in record.items() if k not in ("messages", "instruction", "input", "output")}
    return Example(messages, path, line, meta)


def _combined(problems: list[DataError], path: str) -> DataError:
    shown = [str(p) for p in problems[:MAX_REPORTED_PROBLEMS]]
    hidden = len(problems) - len(shown)
    if hidden:
        shown.append(f"... and {hidden} more")
    first = problems[0]
    error = DataError(f"{len(problems)} bad records:\n  " + "\n  ".join(shown))
    error.path, error.line, error.field = path, first.line, first.field
    return error
