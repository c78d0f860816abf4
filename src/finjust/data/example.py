"""What every record format turns into: an :class:`Example` of chat :class:`Message` s.

Conversations (instruction, chat and completion records) and raw text are what the SFT
trainer consumes. Classification and preference records become examples too, so that they
load, validate, split and appear in reports the same way; their extra parts (``label``,
``chosen`` / ``rejected``) are dedicated fields a classification or preference objective reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

#: the ``task`` of each kind of example; the SFT objective trains on the first two
TASK_CHAT = "chat"
TASK_TEXT = "text"
TASK_CLASSIFICATION = "classification"
TASK_PREFERENCE = "preference"
SFT_TASKS = (TASK_CHAT, TASK_TEXT)


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    #: 1 trains this (assistant) message, 0 shows it as context only
    weight: int = 1


def shared_task(tasks: Collection[str]) -> str | None:
    """The task a data set holding records of ``tasks`` trains as: its one task, or chat where
    chat and raw text mix (both train with SFT); None where tasks that cannot mix do, or none is given."""
    if len(tasks) <= 1:
        return next(iter(tasks), None)
    return TASK_CHAT if set(tasks) <= set(SFT_TASKS) else None


def with_system_prompt(messages: Iterable[Message], system_prompt: str | None) -> tuple[Message, ...]:
    """``messages`` led by a ``system_prompt`` message where they have no system message first
    (``data.system_prompt``: what training, scoring and serving put before each conversation)."""
    messages = tuple(messages)
    if system_prompt and (not messages or messages[0].role != "system"):
        return (Message("system", system_prompt), *messages)
    return messages


@dataclass(frozen=True)
class Example:
    """One record, as a conversation, with where it came from.

    ``task`` says how it trains: ``chat`` (the chat template is applied and assistant turns
    carry loss), ``text`` (raw text, every token carries loss; ``messages`` is one assistant
    message), ``classification`` (``messages`` is one user message holding the text, ``label``
    the class) or ``preference`` (``messages`` is the prompt followed by ``chosen``, and
    ``rejected`` replaces ``chosen`` in the dispreferred version).
    """

    messages: tuple[Message, ...]
    source: str = ""
    line: int = 0
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    task: str = TASK_CHAT
    label: str | None = None
    chosen: tuple[Message, ...] = ()
    rejected: tuple[Message, ...] = ()

    def canonical_json(self) -> str:
        """The content as canonical JSON: what split hashes and duplicate checks compare."""
        body: Any = [[m.role, m.content, m.weight] for m in self.messages]
        # chat examples keep the original shape so that manifests of earlier runs still match
        if self.task != TASK_CHAT:
            rejected = [[m.role, m.content, m.weight] for m in self.rejected]
            body = [body, {"task": self.task, "label": self.label, "chosen": len(self.chosen), "rejected": rejected}]
        return json.dumps(body, ensure_ascii=False)

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    @property
    def answer_index(self) -> int:
        """Where the answer an evaluation asks for sits: a conversation's last trained assistant
        message (a weight-0 turn after it is context, an answer the model never learned to
        give), else the last message."""
        if self.task == TASK_CHAT:
            trained = [i for i, m in enumerate(self.messages) if m.role == "assistant" and m.weight]
            if trained:
                return trained[-1]
        return len(self.messages) - 1

    def prompt_messages(self) -> tuple[Message, ...]:
        """Everything before the answer: the messages a model is given."""
        if self.task == TASK_PREFERENCE:
            return self.messages[: len(self.messages) - len(self.chosen)]
        if self.task in (TASK_CLASSIFICATION, TASK_TEXT):
            return self.messages
        return self.messages[: self.answer_index]

    def prompt_text(self) -> str:
        """The last user message (the question an evaluation asks); raw text has none: ''."""
        asked = self.prompt_messages() if self.task == TASK_CHAT else self.messages
        return next((m.content for m in reversed(asked) if m.role == "user"), "")

    def reference_answer(self) -> str:
        """The answer an evaluation expects: the answer at :attr:`answer_index`, or the label."""
        if self.task == TASK_CLASSIFICATION:
            return self.label or ""
        return self.messages[self.answer_index].content

    def with_texts(self, change: Any) -> Example:
        """A copy with ``change(text)`` applied to every message (e.g. to redact PII)."""

        def each(messages: tuple[Message, ...]) -> tuple[Message, ...]:
            return tuple(Message(m.role, change(m.content), m.weight) for m in messages)

        return Example(
            each(self.messages), self.source, self.line, self.meta, self.task, self.label,
            each(self.chosen), each(self.rejected),
        )  # fmt: skip


def case_variants(labels: Iterable[str]) -> list[list[str]]:
    """Groups of labels that differ only in case or spacing (``pos``, ``Pos``; ``very good``,
    ``very  good``), each sorted, in first-seen order: a classifier would learn each spelling as
    its own class while the accuracy metric reads them as one, so training refuses them."""
    spellings: dict[str, list[str]] = {}
    for label in dict.fromkeys(labels):
        spellings.setdefault(" ".join(label.casefold().split()), []).append(label)
    return [sorted(group) for group in spellings.values() if len(group) > 1]
