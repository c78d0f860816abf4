"""Shared checks run over every registered method on the tiny model, then per-method checks."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from finjust.errors import MethodError, UnknownNameError
from finjust.methods import METHODS, get_method
from finjust.methods.registry import count_parameters
from finjust.objectives.sft import PaddedBatch, batch_loss_sum, make_batch

METHOD_NAMES = METHODS.names()
HAS_BITSANDBYTES = importlib.util.find_spec("bitsandbytes") is not None
needs_bitsandbytes = pytest.mark.skipif(not HAS_BITSANDBYTES, reason="bitsandbytes is not installed (qlora needs it)")


def _params(name):
    marks = [needs_bitsandbytes] if name == "qlora" else []
    return pytest.param(name, marks=marks, id=name)


ALL = [_params(name) for name in METHOD_NAMES]


def _base(model_dir, method=None, options=None):
    """The pretrained model as ``method`` loads it (QLoRA: 4-bit)."""
    extra = method.model_load_kwargs(options or method.options_class(), torch.float32) if method else {}
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **extra)


def _batch(tiny_tokens, method):
    return make_batch(tiny_tokens[:4], packing=method.supports_packing)


def _train_steps(model, batch, steps=3, lr=1e-2):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss, count = batch_loss_sum(model, batch)
        (loss / count).backward()
        optimizer.step()


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        if isinstance(batch, PaddedBatch):
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        else:
            out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False)
    return out.logits


def _trained(name, tiny_model_dir, tiny_tokens):
    method = get_method(name)
    torch.manual_seed(0)
    model = method.apply(_base(tiny_model_dir, method), method.options_class())
    batch = _batch(tiny_tokens, method).to(model.device)  # QLoRA's 4-bit base loads on CUDA where there is one
    _train_steps(model, batch)
    return method, model, batch


def test_the_issue_methods_are_registered():
    wanted = {"full", "lora", "dora", "qlora", "ia3", "prompt_tuning", "prefix_tuning", "bitfit", "freeze"}
    assert wanted <= set(METHOD_NAMES)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as caught:
        get_method("lorax")
    assert all(name in str(caught.value) for name in METHOD_NAMES)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_has_defaults_and_a_learning_rate(name):
    method = get_method(name)
    method.options_class()  # every option has a default: `method: {name: ...}` alone is a recipe
    assert 0 < method.default_lr < 0.1
    assert method.artifact_dir


@pytest.mark.parametrize("name", ALL)
def test_trainable_weights_change_and_frozen_ones_do_not(name, tiny_model_dir, tiny_tokens):
    method = get_method(name)
    model = method.apply(_base(tiny_model_dir, method), method.options_class())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable, total = count_parameters(model)
    assert 0 < trainable <= total
    _train_steps(model, _batch(tiny_tokens, method).to(model.device))
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == p.requires_grad, f"{name}: {n} changed={changed} requires_grad={p.requires_grad}"


@pytest.mark.parametrize("name", ALL)
def test_save_and_reload_gives_the_same_logits(name, tiny_model_dir, tiny_tokens, tmp_path):
    method, model, batch = _trained(name, tiny_model_dir, tiny_tokens)
    method.save(model, tmp_path / "saved")
    reloaded = method.load(_base(tiny_model_dir, method), tmp_path / "saved")
    torch.testing.assert_close(_logits(reloaded, batch), _logits(model, batch))


@pytest.mark.parametrize("name", [n for n in ALL if n.values[0] != "full"])
def test_only_what_trained_is_saved(name, tiny_model_dir, tiny_tokens, tmp_path):
    method, model, _ = _trained(name, tiny_model_dir, tiny_tokens)
    method.save(model, tmp_path / "saved")
    files = list((tmp_path / "saved").glob("*.safetensors"))
    saved = sum(t.numel() for f in files for t in load_file(str(f)).values())
    trainable, total = count_parameters(model)
    assert saved == trainable < total


@pytest.mark.parametrize("name", ALL)
def test_merged_output_equals_adapter_output(name, tiny_model_dir, tiny_tokens):
    method, model, batch = _trained(name, tiny_model_dir, tiny_tokens)
    if not method.can_merge:
        with pytest.raises(MethodError, match="cannot merge: virtual tokens are not weights"):
            method.merge(model)
        return
    expected = _logits(model, batch)
    merged = method.merge(model)
    assert type(merged).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(_logits(merged, batch), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", [n for n in ALL if get_method(n.values[0]).can_merge])
def test_a_merged_model_saves_and_reloads_with_plain_transformers(name, tiny_model_dir, tiny_tokens, tmp_path):
    method, model, batch = _trained(name, tiny_model_dir, tiny_tokens)
    merged = method.merge(model)
    expected = _logits(merged, batch)
    merged.save_pretrained(tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).to(merged.device)
    assert not hasattr(reloaded.config, "quantization_config")
    torch.testing.assert_close(_logits(reloaded, batch), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["lora", "dora", "ia3", "prompt_tuning", "prefix_tuning"])
def test_peft_adapters_load_with_peft_directly(name, tiny_model_dir, tiny_tokens, tmp_path):
    from peft import PeftModel

    method, model, batch = _trained(name, tiny_model_dir, tiny_tokens)
    method.save(model, tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(_base(tiny_model_dir), tmp_path / "adapter")
    torch.testing.assert_close(_logits(reloaded, batch), _logits(model, batch))


def test_an_adapter_of_another_method_is_refused(tiny_model_dir, tiny_tokens, tmp_path):
    method, model, _ = _trained("ia3", tiny_model_dir, tiny_tokens)
    method.save(model, tmp_path / "adapter")
    with pytest.raises(MethodError, match="IA3 adapter, not a LoRA one"):
        get_method("lora").load(_base(tiny_model_dir), tmp_path / "adapter")


def _recipe(method: dict):
    from finjust.recipe import recipe_from_dict

    return recipe_from_dict({"model": {"name": "m/x"}, "data": {"train": "t.jsonl"}, "output": {"dir": "o"},
                             "method": method})  # fmt: skip


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_the_name_alone_is_a_method_section_with_the_methods_lr(name):
    recipe = _recipe({"name": name})
    assert isinstance(recipe.method.options, get_method(name).options_class)
    assert recipe.learning_rate == get_method(name).default_lr


def test_a_misspelt_method_option_gets_the_nearest_name():
    from finjust.errors import RecipeError

    with pytest.raises(RecipeError, match="did you mean 'virtual_tokens'"):
        _recipe({"name": "prompt_tuning", "virtual_token": 8})
    with pytest.raises(RecipeError, match="method.layers: expected > 0"):
        _recipe({"name": "freeze", "layers": 0})


def test_a_fully_fine_tuned_model_loads_onto_its_base_s_device(tiny_model_dir, tiny_tokens, tmp_path):
    method, model, _ = _trained("full", tiny_model_dir, tiny_tokens)
    method.save(model, tmp_path / "model")
    base = _base(tiny_model_dir).to("meta")  # stands in for a GPU: any device but the CPU it loads on
    assert {p.device.type for p in method.load(base, tmp_path / "model").parameters()} == {"meta"}


def test_ia3_feed_forward_modules_outside_the_targets_are_a_method_error(tiny_model_dir):
    ia3 = get_method("ia3")
    options = ia3.options_class(target_modules=["q_proj"], feedforward_modules=["up_proj"])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with pytest.raises(MethodError, match="cannot apply IA3: `feedforward_modules` should be a subset"):
        ia3.apply(base, options)


def test_prompt_tuning_text_without_init_text_is_refused_not_ignored(tiny_model_dir):
    method = get_method("prompt_tuning")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with pytest.raises(MethodError, match="init_text is given but method.init is 'sample_vocab'"):
        method.apply(base, method.options_class(init_text="Answer as Nordhavn Cycles."))


def test_the_method_check_leaves_the_random_stream_where_it_was(tiny_model_dir):
    from finjust.methods.preflight import check_method_fits

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = get_method("lora")
    torch.manual_seed(0)
    check_method_fits(lora, lora.options_class(), model, torch.float32)
    after_check = torch.rand(4)
    torch.manual_seed(0)
    assert torch.equal(after_check, torch.rand(4))


def test_greedy_generation_is_argmax_whatever_the_models_generation_config_says(tiny_model_dir, tiny_tokens):
    from finjust.methods.peft_adapter import model_generate

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model.generation_config.repetition_penalty = 10.0  # as an instruct model may ship one
    model.generation_config.no_repeat_ngram_size = 1
    model.generation_config.num_beams = 3  # beam search is not argmax either
    model.generation_config.suppress_tokens = list(range(300))  # nor are tokens it may never choose
    model.generation_config.bad_words_ids = [[token] for token in range(3, 300, 7)]
    ids = torch.tensor([tiny_tokens[0].input_ids[:12]])
    out = model_generate(model, input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                         do_sample=False, eos_token_id=None, pad_token_id=0)  # fmt: skip
    expected = ids
    with torch.no_grad():
        for _ in range(6):
            expected = torch.cat([expected, model(input_ids=expected).logits[:, -1:].argmax(-1)], dim=1)
    assert out.tolist() == expected.tolist()


@pytest.mark.parametrize("name", ["lora", "dora", "ia3"])
def test_generation_merges_lora_into_a_copy_and_answers_as_the_adapter_does(name, tiny_model_dir, tiny_tokens,
                                                                            monkeypatch):  # fmt: skip
    from conftest import build_tokenizer

    from finjust.eval import generate

    method, model, _ = _trained(name, tiny_model_dir, tiny_tokens)
    tokenizer, prompts = build_tokenizer(), [example.input_ids[:6] for example in tiny_tokens[:4]]
    generated_by = []
    real = generate._answer_batch
    monkeypatch.setattr(generate, "_answer_batch", lambda m, *args: generated_by.append(type(m).__name__) or real(m, *args))
    merged = generate.generate_answers(model, tokenizer, prompts, 8, 4, torch.device("cpu"))
    # LoRA and DoRA generate from a merged plain model; other methods as they are
    assert generated_by == ["PeftModelForCausalLM" if name == "ia3" else "LlamaForCausalLM"]
    monkeypatch.setattr(generate, "lora_mergeable", lambda m: False)
    assert merged == generate.generate_answers(model, tokenizer, prompts, 8, 4, torch.device("cpu"))
    assert not any(getattr(module, "merged", False) for module in model.modules())  # the model itself unmerged
    with model.disable_adapter():  # the base model's answers: nothing to merge
        assert not generate.lora_mergeable(model)


@pytest.mark.parametrize("name", ALL)
def test_the_scorecard_s_answers_are_greedy_decoding_through_the_tuned_forward(name, tiny_model_dir, tiny_tokens):
    """Whatever a method changes (weights, adapters, virtual tokens), generation must continue
    as the model it trained does: prompt and prefix tuning once generated otherwise."""
    from conftest import build_tokenizer

    from finjust.eval.generate import generate_answers

    method, model, _ = _trained(name, tiny_model_dir, tiny_tokens)
    model.eval()
    tokenizer = build_tokenizer()
    prompts = [example.input_ids[:8] for example in tiny_tokens[:3]]
    answers = generate_answers(model, tokenizer, prompts, 6, 3, torch.device("cpu"),
                               equal_lengths=not method.supports_packing)  # fmt: skip
    expected = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            for _ in range(6):
                token = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1:].argmax(-1)
                ids = torch.cat([ids, token], dim=1)
                if int(token) == tokenizer.eos_token_id:
                    break
            expected.append(tokenizer.decode(ids[0, len(prompt) :], skip_special_tokens=True).strip())
    assert answers == expected
