"""Seeded splits and the manifest that proves which data a run saw."""

from __future__ import annotations

from pathlib import Path

from finjust.data.load import load_examples
from finjust.data.split import build_manifest, split_examples

ASSETS = Path(__file__).parent / "assets"


def _pool():
    return load_examples(ASSETS / "tiny_train.jsonl")


def test_same_seed_same_split_and_manifest():
    a = split_examples(_pool(), seed=7, validation_fraction=0.2, test_fraction=0.1)
    b = split_examples(_pool(), seed=7, validation_fraction=0.2, test_fraction=0.1)
    sources = [ASSETS / "tiny_train.jsonl"]
    assert build_manifest(a, sources, 7) == build_manifest(b, sources, 7)


def test_other_seed_other_split():
    a = split_examples(_pool(), seed=1, validation_fraction=0.2, test_fraction=0.1)
    b = split_examples(_pool(), seed=2, validation_fraction=0.2, test_fraction=0.1)
    assert build_manifest(a, [], 0)["sha256"] != build_manifest(b, [], 0)["sha256"]


def test_splits_are_disjoint_and_complete():
    pool = _pool()
    splits = split_examples(pool, seed=3, validation_fraction=0.25, test_fraction=0.25)
    hashes = [e.content_hash() for part in (splits.train, splits.validation, splits.test) for e in part]
    assert sorted(hashes) == sorted(e.content_hash() for e in pool)
    assert splits.sizes() == {"train": 16, "validation": 8, "test": 8}


def test_given_test_file_is_used_as_is():
    test = load_examples(ASSETS / "tiny_test.jsonl")
    splits = split_examples(_pool(), seed=0, validation_fraction=0.1, test_fraction=0.5, test=test)
    assert splits.test == test
    assert len(splits.train) + len(splits.validation) == len(_pool())


def test_manifest_records_source_hashes():
    splits = split_examples(_pool(), seed=0, validation_fraction=0.1, test_fraction=0.1)
    manifest = build_manifest(splits, [ASSETS / "tiny_train.jsonl"], 0)
    ((name, digest),) = manifest["sources"].items()
    assert name.endswith("tiny_train.jsonl") and len(digest) == 64
