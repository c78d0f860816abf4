"""Token lengths as the data check measures them equal what training tokenizes."""

from __future__ import annotations

from conftest import build_tokenizer
from tokenizers import processors

from finjust.data.example import TASK_CLASSIFICATION, TASK_TEXT, Example, Message
from finjust.data.lengths import profile_examples
from finjust.data.templates import tokenize_example
from finjust.objectives.classification import LabelMap, tokenize_labelled


def _with_special_tokens():
    # a BERT-like tokenizer: it puts its own tokens around every text ([CLS] ... [SEP])
    tokenizer = build_tokenizer()
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, tokenizer.bos_token_id), (eos, tokenizer.eos_token_id)]
    )
    return tokenizer


def test_a_classification_record_counts_the_tokenizer_s_special_tokens():
    tokenizer = _with_special_tokens()
    example = Example((Message("user", "The red kayak costs 13 euros."),), task=TASK_CLASSIFICATION, label="pos")
    (trained,), _ = tokenize_labelled([example], tokenizer, LabelMap(("neg", "pos")), max_length=512)
    assert profile_examples([example], tokenizer)[0].length == len(trained.input_ids)


def test_raw_text_counts_what_training_appends():
    tokenizer = _with_special_tokens()
    example = Example((Message("assistant", "The red kayak costs 13 euros."),), task=TASK_TEXT)
    assert profile_examples([example], tokenizer)[0].length == len(tokenize_example(example, tokenizer).input_ids)


def test_padding_and_truncation_fixed_in_a_tokenizer_file_do_not_count():
    # all-MiniLM-L6-v2's tokenizer.json pads and truncates every text to 128: each record measured 130
    tokenizer = _with_special_tokens()
    tokenizer.backend_tokenizer.enable_padding(length=64, pad_id=tokenizer.pad_token_id)
    tokenizer.backend_tokenizer.enable_truncation(max_length=64)
    short = Example((Message("user", "The red kayak."),), task=TASK_CLASSIFICATION, label="pos")
    long = Example((Message("user", "The red kayak costs 13 euros. " * 20),), task=TASK_CLASSIFICATION, label="neg")
    profiles = profile_examples([short, long], tokenizer)
    items, _ = tokenize_labelled([short, long], tokenizer, LabelMap(("neg", "pos")), max_length=10_000)
    assert [p.length for p in profiles] == [len(item.input_ids) for item in items]
    assert profiles[0].length < 64 < profiles[1].length  # an over-long text is no longer capped either
