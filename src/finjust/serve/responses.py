"""The JSON the server answers with, in OpenAI's shapes: whole responses, stream chunks, errors.

Chat and text completions differ only in a few names, so each is one :class:`Shape` (the
app's endpoint table holds it), and the code that answers requests does not branch on which.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from finjust.serve.decode import Row

DONE_EVENT = "data: [DONE]\n\n"


@dataclass(frozen=True)
class Shape:
    """The names one endpoint's responses use."""

    object: str
    chunk_object: str
    id_prefix: str
    #: chat puts text under message/delta ``content``; text completions under ``text``
    chat: bool

    def choice(self, row: Row) -> dict[str, Any]:
        if self.chat:
            return {"index": 0, "message": {"role": "assistant", "content": row.text}, "logprobs": None,
                    "finish_reason": row.finish_reason}  # fmt: skip
        return {"index": 0, "text": row.text, "logprobs": None, "finish_reason": row.finish_reason}

    def chunk_choice(self, text: str | None, finish_reason: str | None = None, opening: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if opening else {}
        if text:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


CHAT = Shape("chat.completion", "chat.completion.chunk", "chatcmpl-", chat=True)
TEXT_COMPLETION = Shape("text_completion", "text_completion", "cmpl-", chat=False)


@dataclass(frozen=True)
class Envelope:
    """What every response and chunk of one request repeats: its id, creation time and model."""

    shape: Shape
    model: str
    id: str
    created: int

    @classmethod
    def new(cls, shape: Shape, model: str) -> Envelope:
        return cls(shape, model, f"{shape.id_prefix}{uuid.uuid4().hex}", int(time.time()))

    def response(self, row: Row, prompt_tokens: int) -> dict[str, Any]:
        return {"id": self.id, "object": self.shape.object, "created": self.created, "model": self.model,
                "choices": [self.shape.choice(row)], "usage": usage(prompt_tokens, row.completion_tokens)}  # fmt: skip

    def chunk(self, choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> str:
        body = {"id": self.id, "object": self.shape.chunk_object, "created": self.created, "model": self.model,
                "choices": choices, **(extra or {})}  # fmt: skip
        return sse(body)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def sse(body: dict[str, Any]) -> str:
    """One server-sent event carrying ``body`` as JSON."""
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
