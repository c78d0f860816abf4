"""Seeded train / validation / test splits and the manifest that proves which data a run saw.

Splits are computed on record *indices*, so the same function splits examples held in
memory (training) and records only fingerprinted while streaming (``finjust data check``);
both therefore see the same split. A plain split is a seeded shuffle; a stratified split
keeps each label's share in every split; a grouped split puts all records of a group in one.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finjust.data.example import Example
from finjust.errors import DataError


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


@dataclass(frozen=True)
class SplitIndices:
    """Indices into the pool of each split, in the split's order."""

    train: list[int]
    validation: list[int]
    test: list[int]


def _take(count_fraction: float, total: int) -> int:
    """How many records a fraction means: at least one when the fraction is positive."""
    if count_fraction <= 0 or total < 2:
        return 0
    return max(1, round(total * count_fraction))


def held_out_sizes(
    total: int, validation_fraction: float, test_fraction: float,
    validation_count: int | None = None, test_count: int | None = None,
) -> tuple[int, int]:  # fmt: skip
    """(validation, test) sizes for a pool of ``total`` records; a count wins over a fraction.

    Raises:
        DataError: when the held-out splits would leave no training record.
    """
    n_val = validation_count if validation_count is not None else _take(validation_fraction, total)
    n_test = test_count if test_count is not None else _take(test_fraction, total)
    # a fraction's "at least one" gives way (validation's first) so that a record is left to
    # train on: 2 records split 1 train / 1 test, as 3 split 1 / 1 / 1; counts are kept as asked
    if n_val + n_test >= total and total and validation_count is None and n_val:
        n_val = max(0, total - 1 - n_test)
    if n_val + n_test >= total and total and test_count is None and n_test:
        n_test = max(0, total - 1 - n_val)
    if n_val + n_test >= total and total:
        raise DataError(f"no training records left: {n_val} validation + {n_test} test records were asked "
                        f"of a pool of {total}; lower the counts or fractions, or give more data")  # fmt: skip
    return n_val, n_test


def split_indices(
    total: int, seed: int, n_validation: int, n_test: int,
    strata: Sequence[Hashable] | None = None, groups: Sequence[Hashable] | None = None,
) -> SplitIndices:  # fmt: skip
    """Seeded split of ``range(total)``.

    Args:
        total: pool size.
        seed: the same seed gives the same split.
        n_validation: validation records wanted.
        n_test: test records wanted.
        strata: one label per record: each split keeps each label's share.
        groups: one key per record: all records of a key land in the same split (sizes are
            then reached to within one group).
    """
    if strata is not None and groups is not None:
        raise DataError("a split can be stratified or grouped, not both; drop data.stratify_by or data.group_by")
    if groups is not None:
        return _grouped(total, seed, n_validation, n_test, groups)
    if strata is not None:
        return _stratified(total, seed, n_validation, n_test, strata)
    order = list(range(total))
    random.Random(seed).shuffle(order)
    return SplitIndices(order[n_test + n_validation :], order[n_test : n_test + n_validation], order[:n_test])


def _stratified(total: int, seed: int, n_val: int, n_test: int, strata: Sequence[Hashable]) -> SplitIndices:
    rng = random.Random(seed)
    members: dict[Hashable, list[int]] = {}
    for index, stratum in enumerate(strata):
        members.setdefault(stratum, []).append(index)
    keys = sorted(members, key=str)
    for key in keys:
        rng.shuffle(members[key])
    sizes = [len(members[k]) for k in keys]
    # a stratum keeps at least one training record, so no class vanishes from training
    test_share = _allocate(n_test, sizes, [s - 1 for s in sizes])
    val_share = _allocate(n_val, sizes, [s - 1 - t for s, t in zip(sizes, test_share)])
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for key, t, v in zip(keys, test_share, val_share):
        parts[2].extend(members[key][:t])
        parts[1].extend(members[key][t : t + v])
        parts[0].extend(members[key][t + v :])
    for part in parts:
        rng.shuffle(part)
    return SplitIndices(*parts)


def _allocate(total: int, sizes: Sequence[int], caps: Sequence[int]) -> list[int]:
    """``total`` spread over strata in proportion to ``sizes`` (largest remainder), within ``caps``."""
    whole = sum(sizes) or 1
    quotas = [total * s / whole for s in sizes]
    shares = [min(math.floor(q), max(c, 0)) for q, c in zip(quotas, caps)]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - math.floor(quotas[i])), i))
    while sum(shares) < total:
        open_ = [i for i in by_remainder if shares[i] < caps[i]]
        if not open_:
            break
        for i in open_[: total - sum(shares)]:
            shares[i] += 1
    return shares


def _closer(size: int, group: int, target: int) -> bool:
    """Whether a group of ``group`` records leaves a split of ``size`` no further from ``target``
    records (a tie holds it out: groups of 4 fill a 10-record split to 12, not 8)."""
    return abs(size + group - target) <= abs(size - target)


def _grouped(total: int, seed: int, n_val: int, n_test: int, groups: Sequence[Hashable]) -> SplitIndices:
    rng = random.Random(seed)
    members: dict[Hashable, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    keys = list(members)
    rng.shuffle(keys)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for key in keys:
        # held out only where that leaves the split no further from its size: a 40-record group
        # must not become the test split of a 10-record target
        if _closer(len(parts[2]), len(members[key]), n_test):
            parts[2].extend(members[key])
        elif _closer(len(parts[1]), len(members[key]), n_val):
            parts[1].extend(members[key])
        else:
            parts[0].extend(members[key])
    groups = f"{len(keys)} group{'s' if len(keys) != 1 else ''}"
    if not parts[0]:
        raise DataError(f"grouping the {total} records into {groups} left none for training; lower the held-out "
                        "fractions or use more groups")  # fmt: skip
    if n_test and not parts[2]:
        smallest = min(len(indices) for indices in members.values())
        raise DataError(f"grouping the {total} records into {groups} holds out no test records: the smallest group "
                        f"has {smallest} records, over twice the {n_test} to hold out; raise the test fraction, "
                        "give a test file, or use smaller groups")  # fmt: skip
    for part in parts:
        rng.shuffle(part)
    return SplitIndices(*parts)


def split_examples(
    pool: Sequence[Example],
    seed: int,
    validation_fraction: float,
    test_fraction: float,
    validation: Sequence[Example] | None = None,
    test: Sequence[Example] | None = None,
    *,
    validation_count: int | None = None,
    test_count: int | None = None,
    strata: Sequence[Hashable] | None = None,
    groups: Sequence[Hashable] | None = None,
) -> Splits:
    """Split ``pool`` with a seeded shuffle; splits given as files are used as they are.

    Fractions are of the whole pool; a count, when given, replaces its fraction.
    """
    n_val, n_test = held_out_sizes(
        len(pool),
        0.0 if validation is not None else validation_fraction,
        0.0 if test is not None else test_fraction,
        None if validation is not None else validation_count,
        None if test is not None else test_count,
    )
    if validation is not None:
        n_val = 0
    if test is not None:
        n_test = 0
    indices = split_indices(len(pool), seed, n_val, n_test, strata, groups)
    train_part = [pool[i] for i in indices.train]
    if not train_part:
        raise DataError(f"no training records left after splitting {len(pool)} records; give more data")
    val_part = list(validation) if validation is not None else [pool[i] for i in indices.validation]
    test_part = list(test) if test is not None else [pool[i] for i in indices.test]
    return Splits(train_part, val_part, test_part)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's files (their relative names and contents, sorted)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def split_sha256(examples: Sequence[Example]) -> str:
    """A hash of a split's content in order: equal hashes mean the same records, same order."""
    return hash_of_hashes(example.content_hash() for example in examples)


def hash_of_hashes(hex_digests: Any) -> str:
    """The split hash from the records' content hashes (hex), in order."""
    digest = hashlib.sha256()
    for item in hex_digests:
        digest.update(item.encode())
    return digest.hexdigest()


def build_manifest(
    splits: Splits, sources: Sequence[str | Path], seed: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Source file hashes, split sizes and split content hashes (plus ``extra`` settings)."""
    return {
        "seed": seed,
        "sources": {str(Path(p)): file_sha256(p) for p in sources},
        "sizes": splits.sizes(),
        "sha256": {
            "train": split_sha256(splits.train),
            "validation": split_sha256(splits.validation),
            "test": split_sha256(splits.test),
        },
        **(extra or {}),
    }
