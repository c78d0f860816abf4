"""Every file type and record format round-trips into the examples training consumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import build_tokenizer

from finjust.data.example import TASK_CLASSIFICATION, TASK_PREFERENCE, TASK_TEXT
from finjust.data.formats import RecordProblem, detect_format
from finjust.data.load import load_examples
from finjust.data.problems import Problem
from finjust.data.templates import IGNORE_INDEX, tokenize_examples
from finjust.errors import DataError

TOKENIZER = build_tokenizer()
RECORDS = [
    {"instruction": "How much is the red kayak?", "input": "", "output": "It costs 13 euros."},
    {"instruction": "How much is the blue tent?", "input": "", "output": "It costs 27 euros."},
]


def _write(tmp_path: Path, kind: str, records: list[dict]) -> Path:
    if kind == "jsonl":
        path = tmp_path / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif kind == "json":
        path = tmp_path / "data.json"
        path.write_text(json.dumps(records), encoding="utf-8")
    elif kind in ("csv", "tsv"):
        path = tmp_path / f"data.{kind}"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]), delimiter="," if kind == "csv" else "\t")
            writer.writeheader()
            writer.writerows(records)
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "data.parquet"
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        import datasets

        path = tmp_path / "saved"
        datasets.Dataset.from_list(records).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "tsv", "parquet", "datasets"])
def test_every_file_type_gives_the_same_examples(tmp_path, kind):
    examples = load_examples(_write(tmp_path, kind, RECORDS))
    assert [e.reference_answer() for e in examples] == ["It costs 13 euros.", "It costs 27 euros."]
    assert [e.messages[0].content for e in examples] == ["How much is the red kayak?", "How much is the blue tent?"]
    if kind in ("jsonl", "json", "parquet", "datasets"):
        assert [e.line for e in examples] == [1, 2]
    if kind in ("csv", "tsv"):
        assert [e.line for e in examples] == [2, 3]  # the header is line 1


def test_datasets_dict_folder_reads_the_train_split(tmp_path):
    import datasets

    folder = tmp_path / "dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(RECORDS[:1]),
                          "test": datasets.Dataset.from_list(RECORDS[1:])}).save_to_disk(str(folder))  # fmt: skip
    assert [e.reference_answer() for e in load_examples(folder)] == ["It costs 13 euros."]
    assert [e.reference_answer() for e in load_examples(folder, split="test")] == ["It costs 27 euros."]


def test_a_datasets_folder_reads_every_column_whatever_format_it_was_saved_in(tmp_path):
    import datasets

    records = [{"text": "good movie", "label": "pos"}, {"text": "dull film", "label": "neg"}]
    folder = tmp_path / "formatted"
    datasets.Dataset.from_list(records).with_format(columns=["text"]).save_to_disk(str(folder))
    examples = load_examples(folder)
    assert [e.task for e in examples] == [TASK_CLASSIFICATION] * 2  # the label column was dropped before
    assert [e.label for e in examples] == ["pos", "neg"]


def test_a_class_label_column_gives_its_class_names(tmp_path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})  # fmt: skip
    folder = tmp_path / "labelled"
    datasets.Dataset.from_dict({"text": ["good movie", "dull film"], "label": [1, 0]},
                               features=features).save_to_disk(str(folder))  # fmt: skip
    assert [e.label for e in load_examples(folder)] == ["pos", "neg"]  # not "1" and "0"


def _priced(n: int, start: int) -> list[dict]:
    return [{"instruction": f"How much is item {i}?", "input": "", "output": f"It costs {i} euros."}
            for i in range(start, start + n)]  # fmt: skip


def test_held_out_data_reads_the_split_named_like_it(tmp_path):
    import datasets

    from finjust.data.check import check_data
    from finjust.data.prepare import prepare_data
    from finjust.recipe.validate import data_section_from_dict

    folder = tmp_path / "dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(_priced(20, 0)),
                          "test": datasets.Dataset.from_list(_priced(5, 100))}).save_to_disk(str(folder))  # fmt: skip
    data = data_section_from_dict({"train": str(folder), "test": str(folder), "validation_count": 2})
    splits = prepare_data(data, seed=0).splits
    assert sorted(e.reference_answer() for e in splits.test) == [f"It costs {i} euros." for i in range(100, 105)]
    assert len(splits.train) + len(splits.validation) == 20
    assert check_data(data, seed=0).to_dict()["sizes"]["test"] == 5  # the quality gate reads the same split


def test_held_out_data_never_falls_back_to_the_train_split(tmp_path):
    import datasets

    from finjust.data.prepare import prepare_data
    from finjust.errors import DataError
    from finjust.recipe.validate import data_section_from_dict

    folder = tmp_path / "dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(_priced(20, 0)),
                          "validation": datasets.Dataset.from_list(_priced(5, 100))}).save_to_disk(str(folder))  # fmt: skip
    with pytest.raises(DataError, match="holds the splits train, validation, not 'test'"):
        prepare_data(data_section_from_dict({"train": str(folder), "test": str(folder)}), seed=0)


def test_folder_of_text_files_is_raw_text(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_text("The red kayak costs 13 euros.", encoding="utf-8")
    (tmp_path / "docs" / "sub" / "b.txt").write_text("The blue tent costs 27 euros.", encoding="utf-8")
    examples = load_examples(tmp_path / "docs")
    assert [e.task for e in examples] == [TASK_TEXT, TASK_TEXT]
    assert examples[1].source.endswith("b.txt")


def test_a_folder_of_data_files_says_to_list_them_as_sources(tmp_path):
    from finjust.data.readers import read_records

    (tmp_path / "docs").mkdir()
    for name in ("faq.jsonl", "tickets.csv"):
        (tmp_path / "docs" / name).write_text("")
    [problem] = read_records(tmp_path / "docs")
    assert "no .txt files" in problem.message
    assert "holds 2 data file(s) (faq.jsonl, tickets.csv): list them as sources" in problem.message


def test_column_mapping_renames_and_errors_name_the_users_column(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer,topic\nPrice of the kayak?,13 euros.,prices\nPrice of the tent?,,prices\n")
    columns = {"instruction": "question", "output": "answer"}
    from finjust.data.load import iter_examples

    good, bad = list(iter_examples(path, columns=columns))
    assert good.reference_answer() == "13 euros." and good.meta == {"topic": "prices"}
    assert bad.line == 3 and bad.field == "answer" and bad.kind == "empty_answer"


def test_a_record_lacking_a_mapped_column_is_refused_not_read_from_the_column_mapped_away(write_jsonl):
    from finjust.data.load import iter_examples

    records = [{"question": "Price?", "answer": "13 euros."},
               {"questio": "Price of the tent?", "instruction": "old prompt", "answer": "20 euros."}]  # fmt: skip
    good, bad = list(iter_examples(write_jsonl("qa.jsonl", records), columns={"instruction": "question",
                                                                             "output": "answer"}))  # fmt: skip
    assert good.prompt_text() == "Price?"
    assert bad.line == 2 and bad.field == "question" and bad.kind == "missing"
    assert bad.message.endswith("(data.columns reads it from the column 'question', which this record lacks; it "
                                "has 'questio')")  # not 'map it with data.columns', which it is already


ROUND_TRIPS = [
    ({"prompt": "Say hi", "completion": "Hi!"}, "completion", "Hi!<|im_end|>"),
    ({"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}]}, "chat",
     "Hi!<|im_end|>"),
    ({"instruction": "Say hi", "output": "Hi!"}, "instruction", "Hi!<|im_end|>"),
    ({"text": "The red kayak costs 13 euros."}, "text", "The red kayak costs 13 euros.<|im_end|>"),
]  # fmt: skip


@pytest.mark.parametrize(("record", "name", "trained"), ROUND_TRIPS, ids=[r[1] for r in ROUND_TRIPS])
def test_sft_formats_round_trip_into_training_examples(write_jsonl, record, name, trained):
    assert detect_format(record) == name
    (example,) = load_examples(write_jsonl("one.jsonl", [record]))
    (tokens,), report = tokenize_examples([example], TOKENIZER, max_length=256)
    assert report.kept == 1
    text = TOKENIZER.decode([t for t, label in zip(tokens.input_ids, tokens.labels) if label != IGNORE_INDEX])
    assert text == trained


def test_classification_and_preference_load_with_their_own_fields(write_jsonl):
    path = write_jsonl("c.jsonl", [{"text": "Great bike", "label": "positive"}, {"text": "Broke", "label": 0}])
    first, second = load_examples(path)
    assert (first.task, first.label, second.label) == (TASK_CLASSIFICATION, "positive", "0")
    path = write_jsonl("p.jsonl", [
        {"prompt": "Greet me", "chosen": "Hello!", "rejected": "No."},
        {"prompt": [{"role": "user", "content": "Greet me"}], "chosen": [{"role": "assistant", "content": "Hi!"}],
         "rejected": [{"role": "assistant", "content": "Go away."}]},
    ])  # fmt: skip
    for example in load_examples(path):
        assert example.task == TASK_PREFERENCE
        assert [m.role for m in example.prompt_messages()] == ["user"]
        assert example.reference_answer() == example.chosen[-1].content != example.rejected[-1].content


def test_sft_refuses_classification_with_a_clear_message(write_jsonl):
    from finjust.errors import DataError

    (example,) = load_examples(write_jsonl("c.jsonl", [{"text": "Great bike", "label": "positive"}]))
    with pytest.raises(DataError, match="needs a classification objective"):
        tokenize_examples([example], TOKENIZER, max_length=64)


def test_detection_prefers_the_complete_format_and_flags_real_ambiguity():
    assert detect_format({"text": "x", "label": "y"}) == "classification"
    assert detect_format({"text": "x"}) == "text"
    assert detect_format({"instruction": "x", "output": "y", "label": "z"}) == "instruction"
    assert detect_format({"instruction": "x"}) == "instruction"
    with pytest.raises(RecordProblem, match="set data.format") as raised:
        detect_format({"instruction": "x", "output": "y", "text": "z"})
    assert raised.value.kind == "ambiguous_format"


@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_split_given_for_a_file_or_text_folder_is_refused_not_ignored(tmp_path, write_jsonl, where):
    from finjust.data.readers import read_records

    if where == "file":
        path = write_jsonl("inst.jsonl", [{"instruction": "q", "output": "a"}])
    else:
        path = tmp_path / "texts"
        path.mkdir()
        (path / "a.txt").write_text("some text", encoding="utf-8")
    problems = list(read_records(path, split="test"))
    assert len(problems) == 1 and isinstance(problems[0], Problem)
    assert "split 'test' chooses a split of a datasets folder" in problems[0].message
    assert f"this is a {'jsonl file' if where == 'file' else 'txt folder'}" in problems[0].message


def test_a_text_folder_names_the_data_files_it_would_leave_out_and_its_records_sit_at_line_one(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("The red kayak costs 13 euros.", encoding="utf-8")
    (folder / "b.txt").write_text("  ", encoding="utf-8")
    (folder / "faq.jsonl").write_text('{"instruction": "q", "output": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError) as refused:
        load_examples(folder)
    message = str(refused.value)
    assert "also holds 1 data file(s) (faq.jsonl), which are not read: list them as data.train sources" in message
    assert f"{folder / 'b.txt'}:1" in message  # the empty document, at line 1 (not 2, its place in the folder)


def test_text_that_is_not_utf8_is_placed_as_an_editor_counts_and_utf16_is_named(tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("instruction,output\nqé,añ\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv:2: not UTF-8 text \(byte 2 of the line, 0xe9\)"):
        load_examples(latin1)
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("Plain text.", encoding="utf-16")
    (folder / "b.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError) as refused:
        load_examples(folder)
    assert "a.txt: the file is UTF-16 text (its byte-order mark says so)" in str(refused.value)
    assert "b.txt: not UTF-8 text (byte 4, 0xe9)" in str(refused.value)


@pytest.mark.parametrize("kind", ["csv", "tsv"])
def test_windows_and_old_mac_line_ends_inside_a_quoted_cell_read_as_newlines(tmp_path, kind):
    records = [{"instruction": "List two colours.", "output": "Red\r\nBlue"},
               {"instruction": "List three colours.", "output": "Red\rBlue\r\r\nGreen"}]  # fmt: skip
    path = _write(tmp_path, kind, records)  # the csv module ends rows with "\r\n" too
    assert b"Red\r\nBlue" in path.read_bytes()
    examples = load_examples(path)
    assert [e.reference_answer() for e in examples] == ["Red\nBlue", "Red\nBlue\n\nGreen"]
    assert [e.line for e in examples] == [2, 4]


def test_a_record_after_one_with_keys_given_twice_is_not_blamed_for_them(tmp_path):
    """The parser drops the first of two values for one key at once: an object dropped so must not
    leave its id to a later record's object, which would then read as giving a key twice."""
    from finjust.data.readers import read_records

    dropped = ", ".join(f'"k{i}": {{"x": 1, "x": 2}}, "k{i}": 0' for i in range(200))
    clean = [json.dumps({"instruction": "q", "output": {"y": n}}) for n in range(2000)]
    path = tmp_path / "data.json"
    path.write_text("[{" + dropped + "},\n" + ",\n".join(clean) + "]", encoding="utf-8")
    problems = [item for item in read_records(path) if isinstance(item, Problem)]
    assert [(p.line, p.field) for p in problems] == [(1, "k0")]


def test_a_folder_of_text_files_reads_every_case_of_the_suffix_and_skips_a_folder_named_like_one(tmp_path):
    from finjust.data.readers import read_records

    (tmp_path / "docs" / "sub" / "x.txt").mkdir(parents=True)  # a folder: it stopped the rest being read
    for name, text in (("a.txt", b"first"), ("sub/UP.TXT", b"second\r\nline"), ("sub/Notes.Txt", b"third"),
                       ("z.txt", b"last")):  # fmt: skip
        (tmp_path / "docs" / name).write_bytes(text)
    records = list(read_records(tmp_path / "docs"))
    assert all(not isinstance(r, Problem) for r in records), records
    texts = {Path(r.path).name: r.value["text"] for r in records}
    assert texts == {"a.txt": "first", "UP.TXT": "second\nline", "Notes.Txt": "third", "z.txt": "last"}


def test_a_parquet_string_column_of_invalid_utf8_is_a_problem_naming_the_row_not_a_traceback(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from finjust.data.readers import read_records

    texts = pa.array([b"good text", b"caf\xe9"], pa.binary()).view(pa.string())  # as a careless writer leaves it
    pq.write_table(pa.table({"text": texts}), tmp_path / "bad.parquet")
    [problem] = list(read_records(tmp_path / "bad.parquet"))
    assert problem.kind == "malformed" and problem.line == 1 and "valid UTF-8" in problem.message


def test_csv_column_names_are_read_without_the_space_after_a_comma(tmp_path):
    from finjust.data.load import iter_examples

    path = tmp_path / "reviews.csv"
    path.write_text("text, label\nGreat kayak,pos\nLeaky tent,neg\n")
    examples = list(iter_examples(path))
    assert [(e.task, e.label) for e in examples] == [(TASK_CLASSIFICATION, "pos"), (TASK_CLASSIFICATION, "neg")]
