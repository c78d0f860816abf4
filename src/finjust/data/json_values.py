"""What a JSON record's parsed value can hide: a key given twice in one object, a lone surrogate.

Both pass ``json.loads`` without a word: it keeps the last of two values for one key, and its
``\\ud800`` escapes make strings that are not text. The readers of JSON and JSON Lines report
them as problems naming the record and the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finjust.data.problems import Problem

#: a JSON string escape of a UTF-16 surrogate: the one way JSON text can hold what is not Unicode
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class KeysGivenTwice:
    """``json``'s object_pairs_hook noting each object that gives a key twice: ``json`` keeps the
    last value and drops the other without a word (a hand-edited or merged record)."""

    def __init__(self) -> None:
        # by id, with the object itself: held, its id cannot pass to a later object once the
        # parser drops it (a duplicate's first value is dropped as soon as it is replaced)
        self.objects: dict[int, tuple[dict[str, Any], str]] = {}

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        parsed = dict(pairs)
        if len(parsed) < len(pairs):
            seen: set[str] = set()
            # set.add returns None: the test adds each key as it passes and stays false for it
            self.objects[id(parsed)] = parsed, next(
                key for key, _ in pairs if key in seen or seen.add(key)  # type: ignore[func-returns-value]
            )
        return parsed

    def key_of(self, value: Any) -> str | None:
        """The key ``value`` gives twice, where it is an object this hook noted."""
        noted = self.objects.get(id(value))
        return noted[1] if noted is not None else None


def value_problem(value: Any, path: Path, number: int, escaped: bool, twice: KeysGivenTwice) -> Problem | None:
    """A problem where an object in ``value`` gives a key twice, or a string in it holds a lone
    surrogate (``"\\ud800"``, which JSON's escapes allow: it is not text, and nothing downstream
    can encode it); else None. ``escaped``: the JSON text it was parsed from has a surrogate
    escape (only then, or when ``twice`` noted an object, is the value walked)."""
    found = _first_field(value, lambda item: twice.key_of(item) is not None) if twice.objects else None
    if found is not None:
        where, parsed = found
        key = twice.key_of(parsed)
        return Problem("malformed", f"the key {key!r} is given twice in one object; JSON keeps only the last "
                       "value, so the other would be lost: remove or rename one", str(path), number,
                       f"{where}.{key}" if where else key)  # fmt: skip
    found = _first_field(value, _is_lone_surrogate) if escaped else None
    if found is None:
        return None
    return Problem("not_utf8", "a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair), which is "
                   "not text; remove it or write the character itself", str(path), number, found[0] or None)


def _is_lone_surrogate(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _first_field(value: Any, picked: Callable[[Any], bool], where: str = "") -> tuple[str, Any] | None:
    """The field path ("" for ``value`` itself) and value of the first value in ``value`` that
    ``picked`` picks, depth first, or None."""
    if picked(value):
        return where, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        inner = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)
        found = _first_field(item, picked, inner)
        if found is not None:
            return found
    return None
