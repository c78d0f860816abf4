"""Split modes: counts, stratified, grouped, weighted sources, and the manifest of each."""

from __future__ import annotations

from collections import Counter

import pytest

from finjust.data.example import Example, Message
from finjust.data.prepare import prepare_data
from finjust.data.split import held_out_sizes, split_examples, split_indices
from finjust.errors import DataError
from finjust.recipe import data_section_from_dict


def _pool(n: int, labels: int = 2) -> list[Example]:
    return [Example((Message("user", f"q{i}"), Message("assistant", f"a{i}")), "pool.jsonl", i + 1,
                    {"doc": f"d{i // 5}"}, label=f"l{i % labels}") for i in range(n)]  # fmt: skip


def test_plain_split_is_the_seeded_shuffle_earlier_runs_used():
    import random

    order = list(range(50))
    random.Random(4).shuffle(order)
    indices = split_indices(50, 4, n_validation=5, n_test=10)
    assert indices.test == order[:10] and indices.validation == order[10:15] and indices.train == order[15:]


def test_counts_win_over_fractions_and_too_many_is_an_error():
    assert held_out_sizes(100, 0.1, 0.1, validation_count=3, test_count=7) == (3, 7)
    with pytest.raises(DataError, match="no training records left"):
        held_out_sizes(10, 0.1, 0.1, validation_count=5, test_count=5)


@pytest.mark.parametrize(("total", "sizes"), [(1, (0, 0)), (2, (0, 1)), (3, (1, 1)), (20, (2, 2))])
def test_a_fractions_at_least_one_gives_way_so_that_one_record_trains(total, sizes):
    assert held_out_sizes(total, 0.1, 0.1) == sizes


def test_stratified_split_keeps_each_labels_share():
    pool = _pool(100, labels=4)
    splits = split_examples(pool, 0, 0.2, 0.2, strata=[e.label for e in pool])
    for part, size in ((splits.test, 20), (splits.validation, 20), (splits.train, 60)):
        assert len(part) == size
        assert set(Counter(e.label for e in part).values()) == {size // 4}


def test_stratified_split_keeps_a_rare_label_in_training():
    pool = _pool(20, labels=1) + [Example((Message("user", "rare"),), "pool.jsonl", 99, task="classification",
                                          label="rare")]  # fmt: skip
    for seed in range(5):
        splits = split_examples(pool, seed, 0.3, 0.3, strata=[e.label for e in pool])
        assert any(e.label == "rare" for e in splits.train)


def test_grouped_split_puts_each_group_in_one_split():
    pool = _pool(60)
    splits = split_examples(pool, 1, 0.2, 0.2, groups=[e.meta["doc"] for e in pool])
    where = {}
    for name in ("train", "validation", "test"):
        for example in getattr(splits, name):
            assert where.setdefault(example.meta["doc"], name) == name
    assert len(splits.test) in (10, 15) and len(splits.validation) in (10, 15)  # groups of 5 nearest 12


@pytest.mark.parametrize("seed", range(6))
def test_a_large_group_goes_to_training_rather_than_overfill_a_held_out_split(seed):
    # two 40-record documents and 20 single ones: 10 each to hold out, which the singles fill
    groups = ["a"] * 40 + ["b"] * 40 + [f"single{i}" for i in range(20)]
    splits = split_examples(_pool(100), seed, 0.1, 0.1, groups=groups)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (80, 10, 10)


def test_groups_too_large_to_hold_out_any_test_records_are_named():
    with pytest.raises(DataError, match="holds out no test records: the smallest group has 50 records, over twice "
                                        "the 10 to hold out"):  # fmt: skip
        split_examples(_pool(100), 0, 0.0, 0.1, groups=["one"] * 50 + ["other"] * 50)


def _write(tmp_path, name, n, offset=0, **extra):
    import json

    path = tmp_path / name
    path.write_text("".join(json.dumps({"instruction": f"q{i + offset}", "output": f"a{i + offset}",
                                        "doc": f"d{i // 4}", **extra}) + "\n" for i in range(n)))  # fmt: skip
    return str(path)


def test_manifest_is_stable_across_runs_and_records_the_split_settings(tmp_path):
    data = data_section_from_dict({"train": _write(tmp_path, "t.jsonl", 40), "group_by": "doc", "test_count": 8})
    first, second = prepare_data(data, 3).manifest, prepare_data(data, 3).manifest
    assert first == second
    assert first["split"]["group_by"] == "doc" and first["split"]["test_count"] == 8
    assert prepare_data(data, 4).manifest["sha256"] != first["sha256"]


def test_weights_apply_to_the_training_split_only(tmp_path):
    a, b = _write(tmp_path, "a.jsonl", 20), _write(tmp_path, "b.jsonl", 20, offset=100)
    data = data_section_from_dict({"train": [a, {"path": b, "weight": 2.5}], "validation_fraction": 0.1,
                                   "test_fraction": 0.1})  # fmt: skip
    prepared = prepare_data(data, 0)
    held = {e.content_hash() for e in prepared.splits.validation + prepared.splits.test}
    assert not held & {e.content_hash() for e in prepared.splits.train}
    from_b = sum(1 for e in prepared.splits.train if e.source == b)
    from_a = sum(1 for e in prepared.splits.train if e.source == a)
    unweighted_b = 40 - 8 - from_a  # the pool's training records from b
    assert from_b == 2 * unweighted_b + round(0.5 * unweighted_b)
    assert prepared.manifest["weights"] == {a: 1.0, b: 2.5}


def test_missing_split_field_names_the_record(tmp_path):
    data = data_section_from_dict({"train": _write(tmp_path, "t.jsonl", 10), "stratify_by": "topic"})
    with pytest.raises(DataError, match=r"t.jsonl:1: data.stratify_by: this record has no field 'topic'"):
        prepare_data(data, 0)


def test_a_group_by_field_no_record_has_is_named_with_the_fields_they_have(tmp_path):
    data = data_section_from_dict({"train": _write(tmp_path, "t.jsonl", 8), "group_by": "doc_id"})
    with pytest.raises(DataError, match=r"no field 'doc_id' to split by \(its other fields: 'doc'\)"):
        prepare_data(data, 0)


def test_data_check_names_a_misspelt_split_field_once_not_per_record(tmp_path):
    from finjust.data.check import check_data
    from finjust.errors import RecipeError

    data = data_section_from_dict({"train": _write(tmp_path, "t.jsonl", 8), "group_by": "dco"})
    with pytest.raises(RecipeError, match=r"data.group_by: no record has a field 'dco' to split by \(the first, "
                                          r".*t.jsonl:1, has 'doc'\); did you mean 'doc'\?"):  # fmt: skip
        check_data(data, 0)
    some = data_section_from_dict({"train": _write(tmp_path, "t.jsonl", 8), "group_by": "doc"})
    (tmp_path / "t.jsonl").write_text('{"instruction": "q", "output": "a"}\n' + (tmp_path / "t.jsonl").read_text())
    report = check_data(some, 0)  # only the first record lacks it: that record is bad, the check goes on
    assert "t.jsonl:1 field 'doc'" in report.findings["invalid"].items[0]  # a report, with that record in it


@pytest.mark.parametrize("records", [1, 2])
def test_a_pool_too_small_to_hold_out_a_test_record_is_refused_and_a_test_file_is_not_needed(write_jsonl, records):
    path = write_jsonl("one.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(records)])
    data = data_section_from_dict({"train": str(path)})
    if records == 1:  # one record trains; none is left for the scorecard
        with pytest.raises(DataError, match="no test records: a pool of 1 record leaves none"):
            prepare_data(data, seed=0)
    else:
        assert len(prepare_data(data, seed=0).splits.test) == 1
    given = data_section_from_dict({"train": str(path), "test": str(path)})
    splits = prepare_data(given, seed=0).splits
    assert len(splits.train) == 1 and len(splits.test) == records


def test_train_and_data_check_refuse_a_one_record_pool(write_jsonl, tiny_recipe, capsys):
    from finjust.cli.main import main

    path = write_jsonl("one.jsonl", [{"instruction": "q", "output": "a"}])
    recipe = tiny_recipe(data={"train": str(path), "test": None})
    assert main(["data", "check", str(recipe)]) == 1  # the gate fails on it, listed as an invalid record
    assert "no test records: a pool of 1 record" in capsys.readouterr().out
    assert main(["train", str(recipe)]) == 2
    assert "no test records: a pool of 1 record" in capsys.readouterr().err


def test_a_stratified_pool_with_nothing_left_to_hold_out_names_the_stratification(tmp_path):
    import json

    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({"text": f"sample {i} text", "label": f"l{i}"}) + "\n" for i in range(20)))
    data = data_section_from_dict({"train": str(path), "stratify_by": "label", "test_fraction": 0.1})
    with pytest.raises(DataError, match="data.stratify_by keeps one record of each of its 20 values for training.*"
                                        "or drop data.stratify_by"):  # fmt: skip
        prepare_data(data, 42)
