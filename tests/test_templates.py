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


def _merging_tokenizer():
    """The fixture tokenizer trained on text where newlines run together, as SmolLM2's merges them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    core.train_from_iterator(["assistant\n\n\nHello there", "a\n\n\nb\n\nc   d"] * 50, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")  # fmt: skip
    tokenizer.chat_template = TOKENIZER.chat_template
    return tokenizer


def test_an_answer_whose_leading_whitespace_merges_with_the_header_trains_as_generation_continues():
    from finjust.data.lengths import profile_examples

    tokenizer = _merging_tokenizer()
    example = Example((Message("user", "Greet me"), Message("assistant", "\n\nHello there"),
                       Message("user", "Again"), Message("assistant", "  Hello")))  # fmt: skip
    whole = tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in example.messages])
    prompt = prompt_ids(tokenizer, Example(example.messages[:2]))
    assert list(whole["input_ids"])[: len(prompt)] != prompt  # "\n" + "\n\n" became one token: no boundary
    tokens = tokenize_example(example, tokenizer)  # refused before
    assert tokens.input_ids[: len(prompt)] == prompt  # the prompt as generation sees it, then the answer
    trained = [t if label != IGNORE_INDEX else None for t, label in zip(tokens.input_ids, tokens.labels)]
    spans = "".join(tokenizer.decode([t]) if t is not None else "\0" for t in trained).split("\0")
    assert [span for span in spans if span] == ["\n\nHello there<|im_end|>", "  Hello<|im_end|>"]
    assert tokenizer.decode(tokens.input_ids) == tokenizer.decode(whole["input_ids"])  # the same text
    [profile] = profile_examples([example], tokenizer)  # the data check counts what training trains
    first = next(i for i, label in enumerate(tokens.labels) if label != IGNORE_INDEX)
    assert (profile.length, profile.first_trained) == (len(tokens.input_ids), first)


def test_a_trailing_context_only_turn_is_not_what_evaluation_asks_for():
    # "weight: 0" turns are context: the scorecard asks for the last trained answer, not one never learned
    example = Example((Message("user", "How much is the red tent?"), Message("assistant", "27 euros."),
                       Message("user", "And the kayak?"), Message("assistant", "I do not know.", weight=0)))  # fmt: skip
    assert example.answer_index == 1 and example.reference_answer() == "27 euros."
    assert example.prompt_text() == "How much is the red tent?"
    assert prompt_ids(TOKENIZER, example) == prompt_ids(TOKENIZER, Example(example.messages[:2]))
    assert _trained_text(example) == "27 euros.<|im_end|>"  # what the scorecard grades is what trained
