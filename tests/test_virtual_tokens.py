"""Prompt and prefix tuning: padded batches, generation without left padding, options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from finjust.data.load import load_examples
from finjust.data.templates import prompt_ids
from finjust.eval.generate import _batches, generate_answers
from finjust.methods import get_method
from finjust.methods.peft_adapter import model_generate
from finjust.objectives.sft import batch_loss_sum, pad

VIRTUAL = ["prompt_tuning", "prefix_tuning"]
ASSETS = Path(__file__).parent / "assets"


def _tuned(name, model_dir, **options):
    method = get_method(name)
    torch.manual_seed(0)
    return method.apply(AutoModelForCausalLM.from_pretrained(model_dir), method.options_class(**options)).eval()


@pytest.mark.parametrize("name", VIRTUAL)
def test_virtual_token_methods_pad_instead_of_packing(name):
    assert not get_method(name).supports_packing


@pytest.mark.parametrize("name", VIRTUAL)
def test_a_padded_batch_gives_the_loss_of_one_example_at_a_time(name, tiny_model_dir, tiny_tokens):
    model = _tuned(name, tiny_model_dir)
    examples = tiny_tokens[:5]
    with torch.no_grad():
        total, count = batch_loss_sum(model, pad(examples))
        singles = [batch_loss_sum(model, pad([e])) for e in examples]
    assert count == sum(n for _, n in singles)
    torch.testing.assert_close(total, sum(loss for loss, _ in singles), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", VIRTUAL)
def test_batched_answers_equal_one_prompt_at_a_time(name, tiny_model_dir):
    model = _tuned(name, tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [prompt_ids(tokenizer, e) for e in load_examples(ASSETS / "tiny_train.jsonl")[:12]]
    cpu = torch.device("cpu")
    batched = generate_answers(model, tokenizer, prompts, 6, 8, cpu, equal_lengths=True)
    single = [generate_answers(model, tokenizer, [p], 6, 1, cpu)[0] for p in prompts]
    assert batched == single


@pytest.mark.parametrize("name", VIRTUAL)
def test_generation_continues_from_the_trained_virtual_tokens(name, tiny_model_dir):
    """Greedy generation equals greedy decoding through the training forward, virtual tokens and
    all. peft's generate with transformers 5 dropped prefix tuning's prefix (the base model's
    answers); the strengthened virtual tokens here move every first token away from the base's."""
    model = _tuned(name, tiny_model_dir)
    with torch.no_grad():
        for weight in model.prompt_encoder["default"].parameters():
            weight.mul_(20)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for example in load_examples(ASSETS / "tiny_train.jsonl")[:4]:
        ids = torch.tensor([prompt_ids(tokenizer, example)])
        with torch.no_grad():
            output = model_generate(model, input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5,
                                    do_sample=False, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            generated = output[0, ids.shape[1] :].tolist()
            expected = ids
            for _ in generated:
                logits = model(input_ids=expected, attention_mask=torch.ones_like(expected)).logits
                expected = torch.cat([expected, logits[:, -1:].argmax(-1)], dim=1)
            base_first = int(base(input_ids=ids).logits[0, -1].argmax())
        assert generated == expected[0, ids.shape[1] :].tolist()
        assert generated[0] != base_first


@pytest.mark.parametrize("name", VIRTUAL)
def test_training_forwards_say_nothing_about_peft_s_cache_name(name, tiny_model_dir, tiny_tokens):
    import warnings

    model = _tuned(name, tiny_model_dir).train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch_loss_sum(model, pad(tiny_tokens[:2]))
    assert not [w for w in caught if "past_key_values" in str(w.message)]


def test_equal_length_batches_hold_one_length_each():
    lengths = [3, 5, 3, 3, 5, 4]
    order = sorted(range(6), key=lambda i: lengths[i])
    assert _batches(order, lengths, 2, equal_lengths=True) == [[0, 2], [3], [5], [1, 4]]
    assert _batches(order, lengths, 4, equal_lengths=False) == [[0, 2, 3, 5], [1, 4]]


def test_prompt_tuning_can_start_from_text(tiny_model_dir):
    model = _tuned("prompt_tuning", tiny_model_dir, virtual_tokens=4, init="text", init_text="Ride on")
    embedding = model.prompt_encoder["default"].embedding.weight
    words = AutoModelForCausalLM.from_pretrained(tiny_model_dir).get_input_embeddings().weight
    tokens = AutoTokenizer.from_pretrained(tiny_model_dir)("Ride on")["input_ids"]
    assert len(set(tokens[:4])) > 1  # slots that must differ
    for slot, token in enumerate((tokens * 4)[:4]):  # peft cuts (or repeats) the text to the virtual tokens
        torch.testing.assert_close(embedding[slot], words[token])


def test_prefix_tuning_with_the_projection_trains_and_reloads(tiny_model_dir, tiny_tokens, tmp_path):
    method = get_method("prefix_tuning")
    model = _tuned("prefix_tuning", tiny_model_dir, projection=True).train()
    projection = model.prompt_encoder["default"].transform  # the MLP over the prefix, absent without it
    before = [weight.detach().clone() for weight in projection.parameters()]
    loss, count = batch_loss_sum(model, pad(tiny_tokens[:2]))
    (loss / count).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    assert all(not torch.equal(a, b) for a, b in zip(before, projection.parameters(), strict=True))
    model.eval()
    method.save(model, tmp_path / "adapter")
    reloaded = method.load(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter").eval()
    batch = pad(tiny_tokens[:3])
    with torch.no_grad():
        torch.testing.assert_close(batch_loss_sum(reloaded, batch)[0], batch_loss_sum(model, batch)[0])


def test_prompt_tuned_runs_generate_and_export_without_peft_position_ids_warnings(tiny_recipe, tmp_path):
    import warnings

    from finjust.cli.main import main

    recipe = tiny_recipe(method={"name": "prompt_tuning"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", str(recipe), "train.max_steps=1", "eval.retention=false"]) == 0  # scores answers
        assert main(["export", str(tmp_path / "run"), "--format", "adapter", "--prompts", "2"]) == 0
        warnings.warn("a warning of the caller's own")  # the caller's filters hold again afterwards
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "Position ids are not supported" in m]
    assert "a warning of the caller's own" in messages
