"""Reading instruction and chat JSONL: good records become examples, bad ones name their line."""

from __future__ import annotations

import pytest

from finjust.data.load import load_examples
from finjust.errors import DataError


def test_instruction_records_become_user_and_assistant_turns(write_jsonl):
    path = write_jsonl("a.jsonl", [{"instruction": "Price?", "input": "Model: Fjord", "output": "2490 EUR."}])
    (example,) = load_examples(path)
    assert [m.role for m in example.messages] == ["user", "assistant"]
    assert example.messages[0].content == "Price?\n\nModel: Fjord"
    assert example.reference_answer() == "2490 EUR."
    assert example.line == 1


def test_system_prompt_is_prepended(write_jsonl):
    path = write_jsonl("a.jsonl", [{"instruction": "Hi", "output": "Hello"}])
    (example,) = load_examples(path, system_prompt="Be brief.")
    assert example.messages[0].role == "system" and example.messages[0].content == "Be brief."


def test_chat_records_keep_turns_and_weights(write_jsonl):
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b", "weight": 0},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    (example,) = load_examples(write_jsonl("c.jsonl", [{"messages": messages}]))
    assert [m.weight for m in example.messages] == [1, 1, 0, 1, 1]
    assert example.prompt_text() == "c"


@pytest.mark.parametrize(
    ("record", "line", "needle"),
    [
        ('{"instruction": "x", "output": "y"', 2, "malformed JSON"),
        ({"instruction": "x"}, 2, "'output'"),
        ({"instruction": "x", "output": "   "}, 2, "empty"),
        ({"instruction": 3, "output": "y"}, 2, "expected a string"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 2, "unknown role 'robot'"),
        ({"messages": [{"role": "user", "content": "x"}]}, 2, "must end with an assistant"),
        ({"messages": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}, 2,
         "'from' and 'value', ShareGPT's names: rename them 'role' and 'content'"),
        ({"messages": [{"role": "user", "text": "x"}, {"role": "assistant", "content": "y"}]}, 2,
         "field 'messages[0].content': missing; the message has 'text': name the text 'content'"),
        ({"text": "plain"}, 2, "cannot tell the format"),
    ],
)
def test_bad_record_is_rejected_with_its_line(write_jsonl, record, line, needle):
    path = write_jsonl("bad.jsonl", [{"instruction": "ok", "output": "ok"}, record])
    with pytest.raises(DataError) as caught:
        load_examples(path)
    assert f"{path}:{line}" in str(caught.value)
    assert needle in str(caught.value)
    assert caught.value.line == line


def test_all_bad_records_are_reported_together(write_jsonl):
    path = write_jsonl("bad.jsonl", [{"instruction": "x"}, {"instruction": "ok", "output": "ok"}, {"output": "y"}])
    with pytest.raises(DataError) as caught:
        load_examples(path)
    assert "2 bad records" in str(caught.value)
    assert f"{path}:1" in str(caught.value) and f"{path}:3" in str(caught.value)


def test_empty_and_non_utf8_files_are_rejected(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no records"):
        load_examples(empty)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"instruction": "café", "output": "x"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_examples(latin)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl"):
        load_examples(tmp_path / "nope.jsonl")


def test_a_null_weight_is_the_default_as_parquet_stores_weights_only_some_messages_have(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0},
                {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]  # fmt: skip
    path = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist([{"messages": messages}]), path)  # Arrow fills the missing weights with null
    (example,) = load_examples(path)
    assert [m.weight for m in example.messages] == [1, 0, 1, 1]


def test_an_integer_class_stored_as_a_float_reads_as_that_integer(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "labels.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "good", "label": 1.0}, {"text": "bad", "label": 0.0}]), path)
    assert [e.label for e in load_examples(path)] == ["1", "0"]
    pq.write_table(pa.Table.from_pylist([{"text": "good", "label": 0.5}]), path)
    with pytest.raises(DataError, match="expected a string or an integer, got a number"):
        load_examples(path)


def test_a_classification_file_whose_first_record_lacks_its_label_says_so(write_jsonl):
    records = [{"text": "no label here"}, *({"text": f"review {i}", "label": "good"} for i in range(3))]
    with pytest.raises(DataError) as caught:
        load_examples(write_jsonl("c.jsonl", records))
    assert "it is line 1 that lacks its 'label'" in str(caught.value)


def test_answers_that_differ_only_in_surrounding_whitespace_are_not_a_preference_pair(write_jsonl):
    with pytest.raises(DataError, match="is the same as 'chosen'"):
        load_examples(write_jsonl("p.jsonl", [{"prompt": "Hi?", "chosen": "Hello.", "rejected": "Hello. "}]))


def test_a_chat_format_forced_on_other_records_suggests_the_format_not_a_column(write_jsonl):
    with pytest.raises(DataError) as caught:
        load_examples(write_jsonl("i.jsonl", [{"instruction": "a", "output": "b"}]), data_format="chat")
    assert "set data.format to it" in str(caught.value) and "data.columns" not in str(caught.value)


def test_a_utf16_file_is_one_problem_not_one_per_line(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n'.encode("utf-16"))
    with pytest.raises(DataError, match="the file is UTF-16 text") as caught:
        load_examples(path)
    assert "malformed" not in str(caught.value)
