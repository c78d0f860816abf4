"""Generate for a batch of requests with ``model.generate``, watching each row as it grows.

A stopping criterion sees every new token: it ends a row at its own ``max_tokens``, at a stop
string or when its client went away, and hands streaming rows their new text. Rows are
left-padded like :func:`finjust.eval.generate.generate_answers`, so a greedy answer here is
the answer ``finjust eval`` scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from finjust.eval.generate import left_pad
from finjust.methods.peft_adapter import model_generate
from finjust.models.load import autocast, stop_token_ids
from finjust.serve.source import ServedModel

FINISH_STOP, FINISH_LENGTH = "stop", "length"


@dataclass(frozen=True)
class Sampling:
    """How one request decodes: greedy at temperature 0, else sampled (reproducibly with a seed)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        """Temperature 0, or top_p 0: a nucleus that holds only the likeliest token."""
        return self.temperature == 0.0 or self.top_p == 0.0


@dataclass
class Row:
    """One request's prompt and what has been generated for it so far."""

    prompt: list[int]
    sampling: Sampling
    #: called with each new piece of text (streaming requests); None: only the final answer
    on_text: Callable[[str], None] | None = None
    #: True once the client is gone: the row stops at the next token
    is_cancelled: Callable[[], bool] = lambda: False
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    finish_reason: str | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


def generate_rows(served: ServedModel, rows: Sequence[Row]) -> None:
    """Generate every row to its end; greedy rows may share a call, a sampled row runs alone.

    Afterwards each row holds its ``text`` (stop string removed), ``tokens`` (the end-of-turn
    token included) and ``finish_reason`` (``stop`` or ``length``).
    """
    first = rows[0].sampling
    if len(rows) > 1 and not all(r.sampling.greedy for r in rows):
        raise ValueError("only greedy rows share a generate call")
    ids, mask = left_pad([r.prompt for r in rows], served.tokenizer.pad_token_id)
    watcher = _Watcher(served, rows, ids.shape[1])
    sampling_args: dict[str, object] = {"do_sample": False}
    if not first.greedy:
        # top_k=0: OpenAI's sampling has no top-k; transformers would otherwise apply its default 50
        sampling_args = {"do_sample": True, "temperature": first.temperature, "top_p": first.top_p, "top_k": 0}
    with _seeded(first.seed if not first.greedy else None, served.device), torch.inference_mode(), \
            autocast(served.device, served.autocast_dtype):
        model_generate(
            served.model,
            input_ids=ids.to(served.device),
            attention_mask=mask.to(served.device),
            max_new_tokens=max(r.sampling.max_tokens for r in rows),
            eos_token_id=watcher.stops,
            pad_token_id=served.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([watcher]),
            **sampling_args,
        )
    for row in rows:
        watcher.finish(row)


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Sample from ``seed`` inside, then put torch's random state back: a seeded request must not
    make the unseeded ones after it predictable. Without a seed: the running state, untouched."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # [] : the CPU's state only
        torch.manual_seed(seed)
        yield


class _Watcher(StoppingCriteria):
    """Follows each row's new tokens: stop strings, per-row limits, cancelled clients, streamed text."""

    def __init__(self, served: ServedModel, rows: Sequence[Row], width: int) -> None:
        self.tokenizer = served.tokenizer
        self.stops = stop_token_ids(served.model, served.tokenizer)
        self.rows = rows
        self.width = width

    def __call__(self, input_ids: torch.LongTensor, scores: object, **kwargs: object) -> torch.BoolTensor:
        latest = input_ids[:, -1].tolist()
        done = []
        for row, token in zip(self.rows, latest, strict=True):
            if row.finish_reason is None:
                self._step(row, token)
            done.append(row.finish_reason is not None)
        # a bool tensor; transformers declares torch's legacy BoolTensor class, which torch.tensor's type is not
        return cast("torch.BoolTensor", torch.tensor(done, dtype=torch.bool, device=input_ids.device))

    def _step(self, row: Row, token: int) -> None:
        row.tokens.append(token)
        if token in self.stops:
            row.finish_reason = FINISH_STOP
        elif row.is_cancelled():
            row.finish_reason = FINISH_STOP
        elif row.sampling.stop or row.on_text:
            self._update_text(row)
        if row.finish_reason is None and len(row.tokens) >= row.sampling.max_tokens:
            row.finish_reason = FINISH_LENGTH
        if row.on_text and row.finish_reason is None:
            self._send(row, _safe_length(row.text, row.sampling.stop))

    def _update_text(self, row: Row) -> None:
        row.text = self._decode(row)
        cut = _stop_position(row.text, row.sampling.stop)
        if cut is not None:
            row.text, row.finish_reason = row.text[:cut], FINISH_STOP

    def finish(self, row: Row) -> None:
        """Settle a row after generate returned: its final text, and a reason where generate ended it first."""
        row.text = self._decode(row)
        cut = _stop_position(row.text, row.sampling.stop)
        if cut is not None:
            row.text, row.finish_reason = row.text[:cut], FINISH_STOP
        if row.finish_reason is None:
            row.finish_reason = FINISH_LENGTH
        self._send(row, len(row.text))

    def _decode(self, row: Row) -> str:
        tokens = row.tokens[:-1] if row.tokens and row.tokens[-1] in self.stops else row.tokens
        return cast(str, self.tokenizer.decode(tokens, skip_special_tokens=True))  # one sequence: one str

    def _send(self, row: Row, upto: int) -> None:
        if row.on_text and upto > row.sent:
            row.on_text(row.text[row.sent : upto])
            row.sent = upto


def _stop_position(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string starts in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _safe_length(text: str, stops: Sequence[str]) -> int:
    """How much of ``text`` can be streamed now: no half-decoded character, no possible start of a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":  # a byte-level token that completes the character comes next
        end -= 1
    held = 0
    for stop in stops:
        held = max([held] + [size for size in range(1, min(len(stop), end + 1)) if text[:end].endswith(stop[:size])])
    return end - held
