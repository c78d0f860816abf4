"""A problem with one record or file: collected, counted by kind and reported together.

Readers and record formats report problems instead of raising, so that one pass over a
file finds every bad record (up to a limit) rather than stopping at the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from finjust.errors import DataError

#: how many problems are listed before the rest are only counted
MAX_REPORTED_PROBLEMS = 20

#: every kind of problem, with what it means (the report counts problems by kind; a Problem
#: of another kind is refused)
PROBLEM_KINDS: dict[str, str] = {
    "unreadable": "the file or folder cannot be opened or is of an unknown type",
    "empty_file": "the file holds no records",
    "not_utf8": "bytes that are not UTF-8 text",
    "malformed": "a line or file that does not parse (JSON, CSV, Parquet)",
    "not_an_object": "a record that is not an object of named fields",
    "unknown_format": "a record whose fields match no record format",
    "ambiguous_format": "a record whose fields match several record formats",
    "mixed_formats": "a record of another task than the rest of the data",
    "missing": "a required field is missing",
    "empty": "a required field is empty or whitespace only",
    "empty_answer": "an answer (output, completion, assistant turn, chosen, rejected) is empty",
    "wrong_type": "a field holds the wrong type of value",
    "unknown_role": "a chat message with a role other than system, user or assistant",
    "bad_turns": "a conversation that does not end with an assistant turn, or has nothing to train",
    "bad_value": "a field whose value is out of range",
    "unsplittable": "split settings that ask more held-out records than the data has",
}


@dataclass(frozen=True)
class Problem:
    """What is wrong with one record (or a whole file), where, and what would fix it."""

    kind: str
    message: str
    path: str
    line: int | None = None
    field: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in PROBLEM_KINDS:  # a reader's mistake: every kind the report counts is described
            raise ValueError(f"unknown problem kind {self.kind!r}; add it to PROBLEM_KINDS")

    def to_error(self) -> DataError:
        return DataError(self.message, self.path, self.line, self.field)

    def __str__(self) -> str:
        return str(self.to_error())


def combine(problems: Sequence[Problem], total: int | None = None) -> DataError:
    """One error listing the first problems and counting the rest.

    Args:
        problems: the problems kept (at most :data:`MAX_REPORTED_PROBLEMS` are listed).
        total: how many there were in all, when more were found than kept.
    """
    total = max(total or 0, len(problems))
    shown = [str(p) for p in problems[:MAX_REPORTED_PROBLEMS]]
    hidden = total - len(shown)
    if hidden:
        shown.append(f"... and {hidden} more")
    first = problems[0]
    # a problem with no line is a whole file's (missing, unreadable), not a record's
    noun = "bad record" if all(p.line is not None for p in problems) else "data problem"
    noun += "" if total == 1 else "s"
    error = DataError(f"{total} {noun}:\n  " + "\n  ".join(shown))
    error.path, error.line, error.field = first.path, first.line, first.field
    return error
