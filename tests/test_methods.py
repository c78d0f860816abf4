"""Shared checks run over every registered method on the tiny model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from finjust.errors import UnknownNameError
from finjust.methods import METHODS, get_method
from finjust.methods.registry import count_parameters
from finjust.objectives.sft import batch_loss_sum, pack

METHOD_NAMES = METHODS.names()


def _base(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def _batch(tiny_tokens):
    return pack(tiny_tokens[:4])


def _train_steps(model, batch, steps=3, lr=1e-2):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss, count = batch_loss_sum(model, batch)
        (loss / count).backward()
        optimizer.step()


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits


def test_the_spine_methods_are_registered():
    assert {"lora", "full"} <= set(METHOD_NAMES)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as caught:
        get_method("lorax")
    assert "lora" in str(caught.value) and "full" in str(caught.value)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_trainable_weights_change_and_frozen_ones_do_not(name, tiny_model_dir, tiny_tokens):
    method = get_method(name)
    model = method.apply(_base(tiny_model_dir), method.options_class())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable, total = count_parameters(model)
    assert 0 < trainable <= total
    _train_steps(model, _batch(tiny_tokens))
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == p.requires_grad, f"{name}: {n} changed={changed} requires_grad={p.requires_grad}"


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_save_and_reload_gives_the_same_logits(name, tiny_model_dir, tiny_tokens, tmp_path):
    method = get_method(name)
    model = method.apply(_base(tiny_model_dir), method.options_class())
    batch = _batch(tiny_tokens)
    _train_steps(model, batch)
    method.save(model, tmp_path / "saved")
    reloaded = method.load(_base(tiny_model_dir), tmp_path / "saved")
    torch.testing.assert_close(_logits(reloaded, batch), _logits(model, batch))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_merged_output_equals_adapter_output(name, tiny_model_dir, tiny_tokens):
    method = get_method(name)
    model = method.apply(_base(tiny_model_dir), method.options_class())
    batch = _batch(tiny_tokens)
    _train_steps(model, batch)
    expected = _logits(model, batch)
    merged = method.merge(model)
    assert type(merged).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(_logits(merged, batch), expected, atol=1e-4, rtol=1e-4)


def test_lora_saves_only_the_adapter(tiny_model_dir, tiny_tokens, tmp_path):
    method = get_method("lora")
    model = method.apply(_base(tiny_model_dir), method.options_class())
    method.save(model, tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert "model.safetensors" not in files
