"""The answer-token mask: prompts carry no loss, answers and their end-of-turn token do."""

from __future__ import annotations

from conftest import build_tokenizer

from finjust.data.example import Example, Message
from finjust.data.templates import IGNORE_INDEX, prompt_ids, tokenize_example, tokenize_examples

TOKENIZER = build_tokenizer()


def _trained_text(example: Example) -> str:
    tokens = tokenize_example(example, TOKENIZER)
    return TOKENIZER.decode([t for t, label in zip(tokens.input_ids, tokens.labels) if label != IGNORE_INDEX])


def test_only_the_answer_and_end_of_turn_carry_loss():
    example = Example((Message("user", "How much is the red kayak?"), Message("assistant", "It costs 13 euros.")))
    tokens = tokenize_example(example, TOKENIZER)
    assert _trained_text(example) == "It costs 13 euros.<|im_end|>"
    prompt = prompt_ids(TOKENIZER, example)
    assert tokens.input_ids[: len(prompt)] == prompt
    assert all(label == IGNORE_INDEX for label in tokens.labels[: len(prompt)])
    eos_positions = [i for i, t in enumerate(tokens.input_ids) if t == TOKENIZER.eos_token_id]
    assert tokens.labels[eos_positions[-1]] == TOKENIZER.eos_token_id


def test_weight_zero_assistant_turns_are_context_only():
    example = Example(
        (
            Message("user", "one"),
            Message("assistant", "first answer", weight=0),
            Message("user", "two"),
            Message("assistant", "second answer"),
        )
    )
    assert _trained_text(example) == "second answer<|im_end|>"


def test_every_weighted_assistant_turn_trains():
    example = Example(
        (Message("user", "one"), Message("assistant", "alpha"), Message("user", "two"), Message("assistant", "beta"))
    )
    assert _trained_text(example) == "alpha<|im_end|>beta<|im_end|>"


def test_truncation_that_leaves_no_answer_drops_the_example_and_says_so():
    long_prompt = Example((Message("user", "word " * 200), Message("assistant", "short")))
    fine = Example((Message("user", "hi"), Message("assistant", "hello")))
    kept, report = tokenize_examples([long_prompt, fine], TOKENIZER, max_length=64)
    assert len(kept) == 1 and report.dropped_no_trainable_token == 1 and report.truncated == 1


def test_a_template_that_marks_only_the_last_answer_trains_no_user_text():
    # Qwen3-style: an empty think block before the final assistant turn only, and an EOS that is
    # not the end-of-turn token, so nothing trims a label span that runs into the next turn
    tokenizer = build_tokenizer()
    tokenizer.eos_token = "<|endoftext|>"
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
        "{% if m['role'] == 'assistant' and loop.last %}{{ 'think: none. ' }}{% endif %}"
        "{{ m['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    example = Example(
        (Message("user", "one"), Message("assistant", "alpha"), Message("user", "two"), Message("assistant", "beta"))
    )
    tokens = tokenize_example(example, tokenizer)
    trained = tokenizer.decode([t for t, label in zip(tokens.input_ids, tokens.labels) if label != IGNORE_INDEX])
    assert trained == "alpha<|im_end|>\nthink: none. beta<|im_end|>\n"
