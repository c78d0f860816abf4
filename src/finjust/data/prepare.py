"""From a recipe's data section to seeded splits and their manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finjust.data.formats import load_examples
from finjust.data.split import Splits, build_manifest, split_examples


@dataclass
class PreparedData:
    splits: Splits
    manifest: dict[str, Any]


def prepare_data(data: Any, seed: int) -> PreparedData:
    """Read the recipe's files (``data`` is a ``DataSection``) and split them with ``seed``."""
    read = lambda path: load_examples(path, data.format, data.system_prompt)  # noqa: E731
    pool = read(data.train)
    validation = read(data.validation) if data.validation else None
    test = read(data.test) if data.test else None
    splits = split_examples(pool, seed, data.validation_fraction, data.test_fraction, validation, test)
    sources = [p for p in (data.train, data.validation, data.test) if p]
    return PreparedData(splits, build_manifest(splits, sources, seed))
