"""Seeded train / validation / test splits and the manifest that proves which data a run saw."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finjust.data.formats import Example
from finjust.errors import DataError


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def _take(count_fraction: float, total: int) -> int:
    """How many records a fraction means: at least one when the fraction is positive."""
    if count_fraction <= 0 or total < 2:
        return 0
    return max(1, round(total * count_fraction))


def split_examples(
    pool: Sequence[Example],
    seed: int,
    validation_fraction: float,
    test_fraction: float,
    validation: Sequence[Example] | None = None,
    test: Sequence[Example] | None = None,
) -> Splits:
    """Split ``pool`` with a seeded shuffle; splits given as files are used as they are.

    Both fractions are of the whole pool.
    """
    order = list(pool)
    random.Random(seed).shuffle(order)
    n_test = 0 if test is not None else _take(test_fraction, len(order))
    n_val = 0 if validation is not None else _take(validation_fraction, len(order))
    test_part = list(test) if test is not None else order[:n_test]
    val_part = list(validation) if validation is not None else order[n_test : n_test + n_val]
    train_part = order[n_test + n_val :]
    if not train_part:
        raise DataError(f"no training records left after splitting {len(pool)} records; give more data")
    return Splits(train_part, val_part, test_part)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_sha256(examples: Sequence[Example]) -> str:
    """A hash of a split's content in order: equal hashes mean the same records, same order."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.content_hash().encode())
    return digest.hexdigest()


def build_manifest(splits: Splits, sources: Sequence[str | Path], seed: int) -> dict[str, Any]:
    """Source file hashes, split sizes and split content hashes."""
    return {
        "seed": seed,
        "sources": {str(Path(p)): file_sha256(p) for p in sources},
        "sizes": splits.sizes(),
        "sha256": {
            "train": split_sha256(splits.train),
            "validation": split_sha256(splits.validation),
            "test": split_sha256(splits.test),
        },
    }
