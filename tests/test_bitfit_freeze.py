"""BitFit and freeze: the methods finjust implements itself (peft has neither)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from finjust.errors import MethodError
from finjust.methods import get_method
from finjust.methods.bitfit import BitfitOptions
from finjust.methods.freeze import FreezeOptions
from finjust.objectives.sft import batch_loss_sum, pack

BITFIT, FREEZE = get_method("bitfit"), get_method("freeze")


def _base(model_dir, dtype=torch.float32):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits


@pytest.fixture(scope="module")
def biased_model_dir(tmp_path_factory, tiny_model_dir):
    """A tiny Llama built with attention biases (as Qwen2-style models have)."""
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.attention_bias = True
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("biased-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_bitfit_on_a_bias_free_model_adds_zero_biases_that_change_nothing(tiny_model_dir, tiny_tokens):
    batch = pack(tiny_tokens[:4])
    before = _logits(_base(tiny_model_dir), batch)
    model = BITFIT.apply(_base(tiny_model_dir), BitfitOptions())
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trained) == 2 * 7 and all(n.endswith("_proj.bias") for n in trained)  # 2 layers x q,k,v,o,gate,up,down
    assert model.config.attention_bias and model.config.mlp_bias
    torch.testing.assert_close(_logits(model, batch), before)


def test_bitfit_trains_the_biases_a_model_has_and_adds_none(biased_model_dir):
    model = BITFIT.apply(_base(biased_model_dir), BitfitOptions())
    trained = {n.split(".")[-2] for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert not model.config.mlp_bias


def test_bitfit_can_refuse_to_add_biases(tiny_model_dir):
    with pytest.raises(MethodError, match="no bias terms"):
        BITFIT.apply(_base(tiny_model_dir), BitfitOptions(add_missing=False))


def test_bitfit_refuses_an_architecture_that_cannot_have_biases(tiny_model_dir, monkeypatch):
    monkeypatch.setattr("finjust.methods.bitfit.BIAS_FLAGS", ())
    with pytest.raises(MethodError, match="cannot add any"):
        BITFIT.apply(_base(tiny_model_dir), BitfitOptions())


def test_bitfit_trains_fp32_biases_over_a_bf16_base(tiny_model_dir, tiny_tokens):
    model = BITFIT.apply(_base(tiny_model_dir, torch.bfloat16), BitfitOptions())
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, count = batch_loss_sum(model, pack(tiny_tokens[:2]))
    (loss / count).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_bitfit_trains_a_bf16_layer_norm_model_s_biases():
    # GPT-2 and BERT: LayerNorm biases in fp32 need their weights in fp32 too on the CPU
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=32))
    model = BITFIT.apply(base.to(torch.bfloat16), BitfitOptions())
    ids = torch.randint(0, 64, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert model.transformer.ln_f.bias.grad is not None and model.transformer.ln_f.weight.grad is None


def test_bitfit_saves_a_description_a_fresh_base_is_rebuilt_from(tiny_model_dir, tmp_path):
    model = BITFIT.apply(_base(tiny_model_dir), BitfitOptions())
    BITFIT.save(model, tmp_path / "trained")
    description = json.loads((tmp_path / "trained" / "trained.json").read_text())
    assert description["method"] == "bitfit" and description["config"] == {"attention_bias": True, "mlp_bias": True}
    assert len(description["tensors"]) == 14
    with pytest.raises(MethodError, match="saved by method 'bitfit', not 'freeze'"):
        FREEZE.load(_base(tiny_model_dir), tmp_path / "trained")


def test_freeze_trains_the_top_layers_and_the_final_norm(tiny_model_dir):
    model = FREEZE.apply(_base(tiny_model_dir), FreezeOptions(layers=1))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("model.layers.1.", "model.norm.")) for n in trained)
    assert "model.norm.weight" in trained
    assert not any(n.startswith("model.layers.0.") for n in trained)


def test_freeze_refuses_more_layers_than_the_model_has(tiny_model_dir):
    with pytest.raises(MethodError, match="has 2 layers"):
        FREEZE.apply(_base(tiny_model_dir), FreezeOptions(layers=3))


def test_freeze_records_which_layers_trained(tiny_model_dir, tmp_path):
    FREEZE.save(FREEZE.apply(_base(tiny_model_dir), FreezeOptions(layers=1)), tmp_path / "trained")
    description = json.loads((tmp_path / "trained" / "trained.json").read_text())
    assert description["layer_stack"] == "model.layers" and description["layers"] == [1]


def test_freeze_trains_the_final_norm_not_one_below_the_layers():
    from transformers import BloomConfig, BloomForCausalLM

    torch.manual_seed(0)
    model = BloomForCausalLM(BloomConfig(vocab_size=64, hidden_size=16, n_layer=3, n_head=2))
    trained = {n for n, p in FREEZE.apply(model, FreezeOptions(layers=1)).named_parameters() if p.requires_grad}
    assert "transformer.ln_f.weight" in trained and any(n.startswith("transformer.h.2.") for n in trained)
    assert not any("word_embeddings_layernorm" in n or n.startswith("transformer.h.1.") for n in trained)
