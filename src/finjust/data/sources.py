"""The training pool's source files, each with a mixing weight.

``data.train`` is one path, or a list whose entries are paths or ``{path, weight, split}``
mappings. The pool is split first and the weights are applied to the *training* split only,
so that an upsampled record can never land in the validation or test split as well.
A weight of 2 repeats a source's training records twice; 0.5 keeps a seeded half.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
_KEYS = ("path", "weight", "split")
#: the largest source weight: records repeat that many times (an infinite or astronomic one
#: overflowed the repetition instead of being refused with the recipe)
MAX_WEIGHT = 100


@dataclass(frozen=True)
class DataSource:
    """One file (or folder) of the training pool."""

    path: str
    weight: float = 1.0
    #: which split to read from a ``datasets`` folder holding several
    split: str | None = None


def source_problems(value: Any, key: str = "data.train") -> list[str]:
    """What is wrong with the entries of a ``data.train`` value; empty when they are fine (an
    empty value is the recipe's own check, which names it once)."""
    if not value:
        return []
    entries = value if isinstance(value, list) else [value]
    problems: list[str] = []
    for index, entry in enumerate(entries):
        where = f"{key}[{index}]" if isinstance(value, list) else key
        if isinstance(entry, str):
            if not entry:
                problems.append(f"{where}: expected a non-empty path")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a path or a mapping {{path, weight, split}}, got {entry!r}")
            continue
        unknown = sorted(set(entry) - set(_KEYS), key=str)  # keys of mixed types (1, 'b', None) sort too
        if unknown:
            problems.append(f"{where}: unknown keys {', '.join(map(repr, unknown))}; valid keys: {', '.join(_KEYS)}")
        if not isinstance(entry.get("path"), str) or not entry.get("path"):
            problems.append(f"{where}.path: expected a non-empty path")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= MAX_WEIGHT:
            problems.append(f"{where}.weight: expected a number > 0 and <= {MAX_WEIGHT}, got {weight!r}")
        if entry.get("split") is not None and not isinstance(entry.get("split"), str):
            problems.append(f"{where}.split: expected a split name, got {entry.get('split')!r}")
    return problems


def parse_sources(value: str | Sequence[Any]) -> list[DataSource]:
    """``data.train`` as a list of sources (the value is assumed valid: see :func:`source_problems`)."""
    entries = [value] if isinstance(value, str) else list(value)
    return [
        DataSource(e) if isinstance(e, str) else DataSource(e["path"], float(e.get("weight", 1.0)), e.get("split"))
        for e in entries
    ]


def apply_weights(items: Sequence[T], source_of: Sequence[int], weights: Sequence[float], seed: int) -> list[T]:
    """``items`` with each source's items repeated ``weight`` times (a seeded share for the fraction).

    Args:
        items: the training split, in its order.
        source_of: the source index of each item.
        weights: each source's weight.
        seed: makes the fractional share reproducible.
    """
    if all(w == 1.0 for w in weights):
        return list(items)
    rng = random.Random(seed)
    result: list[T] = []
    for source, weight in enumerate(weights):
        own = [item for item, s in zip(items, source_of) if s == source]
        whole, part = math.floor(weight), weight - math.floor(weight)
        result.extend(own * whole)
        result.extend(rng.sample(own, round(len(own) * part)))
    rng.shuffle(result)
    return result
