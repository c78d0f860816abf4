"""The broken-file corpus in tests/assets/broken/: each file rejected with its file:line, field and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from finjust.cli.main import main
from finjust.data.load import iter_examples, load_examples
from finjust.data.problems import Problem
from finjust.errors import DataError

BROKEN = Path(__file__).parent / "assets" / "broken"

# file, line (None: the whole file), field, problem kind, words the message must hold
CORPUS = [
    ("malformed_json.jsonl", 2, None, "malformed", "malformed JSON"),
    ("missing_field.jsonl", 2, "output", "missing", "missing"),
    ("empty_field.jsonl", 2, "instruction", "empty", "is empty"),
    ("empty_answer.jsonl", 2, "output", "empty_answer", "is empty"),
    ("wrong_type.jsonl", 2, "output", "wrong_type", "expected a string, got a number"),
    ("unknown_role.jsonl", 2, "messages[0].role", "unknown_role", "unknown role 'robot'"),
    ("no_final_assistant.jsonl", 2, "messages", "bad_turns", "must end with an assistant message"),
    ("bad_weight.jsonl", 2, "messages[1].weight", "bad_value", "expected 0 or 1"),
    ("nothing_trained.jsonl", 2, "messages", "bad_turns", "nothing would be trained"),
    ("ambiguous.jsonl", 2, None, "ambiguous_format", "set data.format"),
    ("unknown_format.jsonl", 2, None, "unknown_format", "cannot tell the format"),
    ("not_an_object.jsonl", 2, None, "not_an_object", "expected an object"),
    ("mixed_tasks.jsonl", 2, None, "mixed_formats", "one task per data set"),
    ("same_preference.jsonl", 2, "rejected", "bad_value", "the same as 'chosen'"),
    ("bad_label.jsonl", 2, "label", "wrong_type", "expected a string or an integer"),
    ("missing_label.jsonl", 2, "label", "missing", "every record needs a 'label'"),  # not "another format"
    ("null_messages.jsonl", 2, "messages", "missing", "expected a non-empty list"),
    ("not_utf8.jsonl", 2, None, "not_utf8", "not UTF-8"),
    ("lone_surrogate.jsonl", 2, "instruction", "not_utf8", "lone UTF-16 surrogate"),
    ("duplicate_key.jsonl", 2, "output", "malformed", "the key 'output' is given twice in one object"),
    ("duplicate_key_nested.json", 2, "messages[1].content", "malformed", "JSON keeps only the last value"),
    ("assistant_first.jsonl", 2, "messages[0].role", "bad_turns", "opens with an assistant message"),
    ("content_parts.jsonl", 2, "messages[1].content", "wrong_type", "content parts are not read"),
    ("duplicate_column.csv", 1, None, "malformed", "names column 'output' twice"),
    ("semicolon.csv", 1, None, "malformed", "separate its columns with ';'"),
    ("extra_field.csv", 3, None, "malformed", "the row has 3 fields but the header has 2"),
    ("unclosed_quote.csv", 3, None, "malformed", "a quote opened in the record on line 3 is never closed"),
    ("blank_header.csv", 1, None, "malformed", "the header is blank: the first line must name the columns"),
    ("not_utf8_header.csv", 1, None, "not_utf8", "not UTF-8 text (byte 2 of the line, 0xe9)"),
    ("empty.jsonl", None, None, "empty_file", "no records"),
    ("not_an_array.json", None, None, "malformed", "expected a JSON array"),
    ("not_parquet.parquet", None, None, "malformed", "not a readable Parquet file"),
]


@pytest.mark.parametrize(("name", "line", "field", "kind", "words"), CORPUS, ids=[c[0] for c in CORPUS])
def test_each_broken_file_names_file_line_field_and_reason(name, line, field, kind, words):
    path = BROKEN / name
    problems = [item for item in iter_examples(path) if isinstance(item, Problem)]
    assert len(problems) == 1, problems
    (problem,) = problems
    assert (problem.kind, problem.line, problem.field) == (kind, line, field)
    assert words in problem.message
    with pytest.raises(DataError) as caught:
        load_examples(path)
    where = f"{path}:{line}" if line is not None else str(path)
    assert where in str(caught.value) and words in str(caught.value)
    if field is not None:
        assert f"field {field!r}" in str(caught.value)


def test_a_record_nested_past_the_parsers_limit_is_malformed_at_its_line(tmp_path):
    # written here, 100,000 deep: Python 3.11's parser stops at the recursion limit (1,000), but
    # 3.12's keeps its own, deeper one, which a 5,000-deep file in the corpus passed on a GPU machine
    path = tmp_path / "too_deep.jsonl"
    path.write_text('{"instruction": "q1", "output": "a1"}\n{"instruction": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    (problem,) = [item for item in iter_examples(path) if isinstance(item, Problem)]
    assert (problem.kind, problem.line, problem.field) == ("malformed", 2, None)
    assert "nested too deeply" in problem.message


@pytest.mark.parametrize(("name", "text", "line"), [
    ("long_number.jsonl", '{"instruction": "q1", "output": "a1"}\n{"instruction": "q", "output": ' + "9" * 5000 + "}\n", 2),
    ("long_number.json", '[{"instruction": "q", "output": ' + "9" * 5000 + "}]", None),
])  # fmt: skip
def test_a_number_past_pythons_digit_limit_is_malformed_not_a_crash(tmp_path, name, text, line):
    path = tmp_path / name
    path.write_text(text)  # Python refuses integers of more than 4,300 digits with a ValueError
    (problem,) = [item for item in iter_examples(path) if isinstance(item, Problem)]
    assert (problem.kind, problem.line) == ("malformed", line) and "thousands of digits" in problem.message


def test_a_csv_cell_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text('text,label\n"' + "a long document " * 10_000 + '",long\nshort,short\n')  # 160,000 characters
    texts = [example.messages[0].content for example in load_examples(path)]
    assert [len(text) for text in texts] == [160_000, 5]


def test_every_malformed_csv_record_is_reported_in_one_pass(tmp_path):
    path = tmp_path / "two_bad.csv"
    path.write_text('instruction,output\nq1,a1\n"q2"x,a2\nq3,a3\nq4,a4,extra\n"q5,a5\nq6,a6\n')
    items = list(iter_examples(path))
    assert [(i.kind, i.line) for i in items if isinstance(i, Problem)] == [("malformed", 3), ("malformed", 5),
                                                                            ("malformed", 6)]  # fmt: skip
    assert [i.line for i in items if not isinstance(i, Problem)] == [2, 4]  # the good records around them


def test_every_file_of_the_corpus_is_covered():
    assert sorted(p.name for p in BROKEN.iterdir()) == sorted(c[0] for c in CORPUS)


@pytest.mark.parametrize("name", ["malformed_json.jsonl", "not_utf8.jsonl", "empty.jsonl", "not_parquet.parquet"])
def test_cli_reports_broken_files_without_a_traceback(name, capsys):
    status = main(["data", "check", str(BROKEN / name), "--no-tokens"])
    out, err = capsys.readouterr()
    assert status == 1
    assert "Traceback" not in out + err
    assert "quality gate: FAILED on invalid" in out
    assert name in out
    assert " None records" not in out and " none records" not in out  # no task when nothing was readable


def test_problems_are_collected_not_stopped_at_the_first(write_jsonl):
    records = ['{"instruction": "x"', {"instruction": "a", "output": "b"}, {"instruction": "x"}, "[1]"]
    path = write_jsonl("many.jsonl", records * 15)
    with pytest.raises(DataError) as caught:
        load_examples(path)
    message = str(caught.value)
    assert message.startswith("45 bad records")
    assert f"{path}:1:" in message and f"{path}:3 field 'output'" in message and f"{path}:4:" in message
    assert "... and 25 more" in message


def test_a_missing_field_suggests_the_column_that_may_hold_it(tmp_path):
    path = tmp_path / "renamed.csv"
    path.write_text("instruction,answer\nWhat is it?,A bike.\n")
    (problem,) = [item for item in iter_examples(path) if isinstance(item, Problem)]
    assert (problem.line, problem.field) == (2, "output")
    assert "the record also has 'answer'" in problem.message and "data.columns: {output: answer}" in problem.message


def test_missing_files_are_data_problems_not_bad_records(tmp_path):
    from finjust.data.prepare import prepare_data
    from finjust.recipe import data_section_from_dict

    data = data_section_from_dict({"train": [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]})
    with pytest.raises(DataError, match=r"^2 data problems:\n  .*a.jsonl: cannot open: no such file"):
        prepare_data(data, seed=0)


@pytest.mark.parametrize(("name", "content", "said"), [
    ("header_only.csv", "instruction,output\n", "a header and no rows below it"),
    ("empty.jsonl", "", "the file is empty"),
])  # fmt: skip
def test_a_file_without_records_says_why_in_its_own_terms(tmp_path, name, content, said):
    path = tmp_path / name
    path.write_text(content)
    (problem,) = list(iter_examples(path))
    assert problem.kind == "empty_file" and said in problem.message
