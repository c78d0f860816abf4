"""Record formats: from a parsed record to an :class:`Example`, one registry entry per format.

Formats (``data.format``, or detected from each record's fields by :func:`detect_format`):

- ``instruction``: ``instruction``, optional ``input``, ``output`` (the Alpaca shape)
- ``chat``: OpenAI fine-tuning ``messages`` (system/user/assistant, optional ``weight`` 0/1)
- ``completion``: ``prompt`` / ``completion``
- ``text``: raw ``text`` for continued pretraining
- ``classification``: ``text`` / ``label``
- ``preference``: ``prompt`` / ``chosen`` / ``rejected`` (strings or chat messages)

A reader raises :class:`RecordProblem` naming the field at fault; :mod:`finjust.data.load`
reads whole files and turns those into problems with file and line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from finjust.data.example import (
    TASK_CHAT,
    TASK_CLASSIFICATION,
    TASK_PREFERENCE,
    TASK_TEXT,
    Example,
    Message,
    with_system_prompt,
)
from finjust.data.readers import json_type_name
from finjust.registry import Registry

__all__ = ["RECORD_FORMATS", "RecordFormat", "RecordProblem", "detect_format"]

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


RECORD_FORMATS: Registry[RecordFormat] = Registry("data format")


def _format(
    name: str, task: str, required: set[str], signature: set[str], optional: frozenset[str] | set[str] = frozenset()
) -> Callable[[RecordReader], RecordReader]:
    def decorate(read: RecordReader) -> RecordReader:
        entry = RecordFormat(name, task, read, frozenset(required), frozenset(signature), frozenset(optional))
        RECORD_FORMATS.add(name, entry)
        return read

    return decorate


class RecordProblem(Exception):
    """A problem with one field of a record, raised by a reader and turned into a Problem."""

    def __init__(self, field_name: str | None, message: str, kind: str) -> None:
        super().__init__(message)
        self.field_name, self.kind = field_name, kind


def _text(record: Mapping[str, Any], key: str, required: bool = True, answer: bool = False) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise RecordProblem(key, f"missing; every record needs a non-empty {key!r} string", "missing")
        return None
    if not isinstance(value, str):
        raise RecordProblem(key, f"expected a string, got {json_type_name(value)}", "wrong_type")
    if required and not value.strip():
        kind = "empty_answer" if answer else "empty"
        raise RecordProblem(key, "is empty; give it text or remove the record", kind)
    return value


@_format("instruction", TASK_CHAT, {"instruction", "output"}, {"instruction", "output"}, {"input"})
def read_instruction(record: Mapping[str, Any], system_prompt: str | None) -> Example:
    """Alpaca-style ``instruction`` / optional ``input`` / ``output``."""
    instruction = _text(record, "instruction") or ""
    extra = _text(record, "input", required=False)
    output = _text(record, "output", answer=True) or ""
    user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    return Example(with_system_prompt((Message("user", user), Message("assistant", output)), system_prompt))


@_format("completion", TASK_CHAT, {"prompt", "completion"}, {"completion"})
def read_completion(record: Mapping[str, Any], system_prompt: str | None) -> Example:
    """``prompt`` / ``completion`` pairs, trained as one user turn and one assistant turn."""
    prompt = _text(record, "prompt") or ""
    completion = _text(record, "completion", answer=True) or ""
    return Example(with_system_prompt((Message("user", prompt), Message("assistant", completion)), system_prompt))


@_format("chat", TASK_CHAT, {"messages"}, {"messages"})
def read_chat(record: Mapping[str, Any], system_prompt: str | None) -> Example:
    """OpenAI fine-tuning ``messages``: system/user/assistant, optional per-message ``weight``."""
    messages = _messages(record, "messages")
    _check_prompted("messages", messages)
    if messages[-1].role != "assistant":
        raise RecordProblem("messages", "the conversation must end with an assistant message", "bad_turns")
    if not any(m.role == "assistant" and m.weight for m in messages):
        raise RecordProblem("messages", "every assistant message has weight 0, so nothing would be trained; "
                             "give the answer to learn weight 1", "bad_turns")  # fmt: skip
    return Example(with_system_prompt(messages, system_prompt))


def _check_prompted(key: str, messages: tuple[Message, ...]) -> None:
    """An answer needs something before it to answer: a conversation may not open with the assistant."""
    if messages[0].role == "assistant":
        raise RecordProblem(f"{key}[0].role", "the conversation opens with an assistant message, which "
                             "answers nothing; put the user's message (or a system message) before it",
                             "bad_turns")  # fmt: skip


def _messages(record: Mapping[str, Any], key: str) -> tuple[Message, ...]:
    raw = record.get(key)
    if isinstance(raw, str):  # a CSV cell or Parquet string column holding the JSON list
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise RecordProblem(key, "is a string but not a JSON list of messages", "wrong_type") from None
    if raw is None:
        raise RecordProblem(key, "missing; expected a non-empty list of {role, content} objects", "missing")
    if not isinstance(raw, list) or not raw:
        raise RecordProblem(key, "expected a non-empty list of {role, content} objects", "wrong_type")
    return tuple(_chat_message(item, f"{key}[{i}]") for i, item in enumerate(raw))


def _chat_message(item: Any, where: str) -> Message:
    if not isinstance(item, dict):
        raise RecordProblem(where, "expected an object with 'role' and 'content'", "wrong_type")
    role, content, weight = item.get("role"), item.get("content"), item.get("weight")
    if weight is None:  # absent, or null where Arrow (Parquet, datasets) fills a field only some messages have
        weight = 1
    if "role" not in item and "from" in item:  # ShareGPT's {from: human|gpt, value}
        raise RecordProblem(f"{where}.role", "missing; the message has 'from' and 'value', ShareGPT's names: "
                             "rename them 'role' and 'content' (human -> user, gpt -> assistant)", "missing")  # fmt: skip
    if role not in ROLES:
        raise RecordProblem(f"{where}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}",
                             "unknown_role")  # fmt: skip
    if "content" not in item and (others := [key for key in item if key not in ("role", "weight", "name")]):
        raise RecordProblem(f"{where}.content", f"missing; the message has {', '.join(map(repr, others[:3]))}: name "
                             "the text 'content'", "missing")  # fmt: skip
    if not isinstance(content, str) or not content.strip():
        kind = "empty_answer" if role == "assistant" and isinstance(content, str) else "empty"
        detail = ""
        if content is not None and not isinstance(content, str):
            kind, detail = "wrong_type", f", got {json_type_name(content)}"
            if isinstance(content, list):
                detail += " (content parts are not read: join their text into one string)"
        raise RecordProblem(f"{where}.content", f"expected a non-empty string{detail}", kind)
    if weight not in (0, 1) or isinstance(weight, bool):
        raise RecordProblem(f"{where}.weight", f"expected 0 or 1, got {weight!r}", "bad_value")
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
        raise RecordProblem("label", "missing; every record needs a 'label' (a string or an integer)", "missing")
    if isinstance(label, float) and label.is_integer():
        label = int(label)  # an integer class stored as a float column (pandas does, around a missing value)
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise RecordProblem("label", f"expected a string or an integer, got {json_type_name(label)}", "wrong_type")
    if not str(label).strip():
        raise RecordProblem("label", "is empty; give every record its class", "empty")
    return Example((Message("user", text),), task=TASK_CLASSIFICATION, label=str(label).strip())


@_format("preference", TASK_PREFERENCE, {"prompt", "chosen", "rejected"}, {"chosen", "rejected"})
def read_preference(record: Mapping[str, Any], system_prompt: str | None) -> Example:
    """``prompt`` / ``chosen`` / ``rejected``: strings, or lists of chat messages."""
    prompt = _side(record, "prompt", "user")
    _check_prompted("prompt", prompt)
    chosen, rejected = _side(record, "chosen", "assistant"), _side(record, "rejected", "assistant")
    for key, answer in (("chosen", chosen), ("rejected", rejected)):
        if answer[-1].role != "assistant":
            raise RecordProblem(key, "must end with an assistant message", "bad_turns")
    if _stripped(chosen) == _stripped(rejected):
        raise RecordProblem("rejected", "is the same as 'chosen'; a preference pair needs two different answers",
                             "bad_value")  # fmt: skip
    prompt = with_system_prompt(prompt, system_prompt)
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
    return [RECORD_FORMATS.get(n) for n in preferred if n in RECORD_FORMATS] + [
        RECORD_FORMATS.get(n) for n in RECORD_FORMATS if n not in preferred
    ]


def detect_format(record: Mapping[str, Any]) -> str | None:
    """The format a record looks like, or None.

    Raises:
        RecordProblem: (kind ``ambiguous_format``) when its fields fit several formats.
    """
    keys = {k for k, v in record.items() if v is not None}
    full = [f for f in _order() if f.required <= keys]
    # text ⊂ classification: a record with text and label is a classification record
    full = [f for f in full if not any(f.required < g.required for g in full)]
    if len(full) > 1:
        names = " and ".join(repr(f.name) for f in full)
        raise RecordProblem(None, f"the fields fit both {names} records; set data.format to the one you mean",
                            "ambiguous_format")  # fmt: skip
    if full:
        return full[0].name
    return next((f.name for f in _order() if f.signature & keys), None)
