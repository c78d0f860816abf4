"""QLoRA on the tiny model: a 4-bit base that keeps its gradients, and a plain merged export."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from finjust.errors import MethodError
from finjust.methods import get_method
from finjust.methods.registry import count_parameters
from finjust.models.load import load_model
from finjust.objectives.sft import batch_loss_sum, pack

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (qlora needs it)")

QLORA = get_method("qlora")


def _four_bit(model_dir, dtype=torch.float32):
    options = QLORA.options_class()
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, **QLORA.model_load_kwargs(options, dtype))


def _grads(model, batch):
    model.train()
    model.zero_grad()
    loss, count = batch_loss_sum(model, batch)
    (loss / count).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_the_base_is_four_bit_and_counted_in_weights(tiny_model_dir):
    model = QLORA.apply(_four_bit(tiny_model_dir), QLORA.options_class())
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainable, total = count_parameters(model)
    lora = get_method("lora").apply(plain, get_method("lora").options_class())
    assert (trainable, total) == count_parameters(lora)  # same adapters, same logical base size
    from finjust.eval.generate import lora_mergeable

    assert lora_mergeable(lora) and not lora_mergeable(model)  # generation merges LoRA, not into 4-bit weights


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory, tiny_model_dir):
    """A tiny Llama whose layer widths are multiples of 32, as bitsandbytes' CPU repacking needs."""
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("wide-llama")
    torch.manual_seed(0)
    vocab = AutoConfig.from_pretrained(tiny_model_dir).vocab_size
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_inference_before_training_does_not_lose_gradients(wide_model_dir, tiny_tokens):
    """bitsandbytes repacks 4-bit CPU weights on eval-mode inference; that layout has no gradient."""
    batch = pack(tiny_tokens[:4])
    torch.manual_seed(0)
    fresh = QLORA.apply(_four_bit(wide_model_dir), QLORA.options_class())
    torch.manual_seed(0)
    used = QLORA.apply(_four_bit(wide_model_dir), QLORA.options_class())
    batch = batch.to(used.device)  # bitsandbytes puts the 4-bit base on CUDA where there is one
    used.eval()
    with torch.no_grad():
        batch_loss_sum(used, batch)  # what validation does between training steps
    expected, got = _grads(fresh, batch), _grads(used, batch)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)
    assert any(float(g.abs().sum()) > 0 for n, g in got.items() if "layers.0." in n and "lora_B" in n)


def test_a_full_precision_base_is_refused(tiny_model_dir):
    with pytest.raises(MethodError, match="4-bit"):
        QLORA.apply(AutoModelForCausalLM.from_pretrained(tiny_model_dir), QLORA.options_class())


def test_a_cpu_run_is_warned_about(tiny_model_dir):
    (warning,) = QLORA.warnings_for(QLORA.options_class(), torch.device("cpu"))
    assert "slower" in warning
    assert QLORA.warnings_for(QLORA.options_class(), torch.device("cuda")) == []


def test_the_loader_takes_the_methods_arguments(tiny_model_dir):
    extra = QLORA.model_load_kwargs(QLORA.options_class(), torch.float32)
    loaded = load_model(str(tiny_model_dir), dtype="float32", device="cpu", extra_kwargs=extra)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.model.modules())


def test_merging_dequantises_into_plain_weights(tiny_model_dir, tiny_tokens):
    torch.manual_seed(0)
    model = QLORA.apply(_four_bit(tiny_model_dir), QLORA.options_class()).eval()
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.1)  # adapters that move the output
    ids = torch.tensor([tiny_tokens[0].input_ids], device=model.device)  # bitsandbytes loads onto a GPU if any
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
    merged = QLORA.merge(model)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-4)


def test_a_qlora_run_reloads_its_base_where_the_caller_loaded_it(monkeypatch):
    # export loads on the CPU; the 4-bit reload followed the recipe's device ("auto": CUDA if present)
    from types import SimpleNamespace

    from finjust.eval import evaluate
    from finjust.recipe import recipe_from_dict

    recipe = recipe_from_dict({"model": {"name": "m/x", "device": "cuda"}, "data": {"train": "t.jsonl"},
                               "output": {"dir": "o"}, "method": {"name": "qlora"}})  # fmt: skip
    calls = []
    monkeypatch.setattr(evaluate, "load_model", lambda *args: calls.append(args) or SimpleNamespace(model="4-bit"))
    method = SimpleNamespace(model_load_kwargs=lambda options, dtype: {"quantization_config": "4-bit"},
                             load=lambda model, artifact: model, trains_base_weights=False)  # fmt: skip
    run = SimpleNamespace(recipe=recipe, method=method, artifact="adapter")
    cpu_base = SimpleNamespace(dtype=torch.float32, device=torch.device("cpu"))
    assert evaluate.load_tuned(run, cpu_base)[0] == "4-bit"
    assert calls[0][2] == "cpu"


def test_a_bf16_loaded_base_merges_in_full_precision(tiny_model_dir):
    torch.manual_seed(0)
    model = QLORA.apply(_four_bit(tiny_model_dir, torch.bfloat16), QLORA.options_class())
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.5)  # an adapter that moves the weight
    four_bit = layer.base_layer.weight
    with torch.no_grad():
        base = bnb.functional.dequantize_4bit(four_bit.data, four_bit.quant_state).float()
        delta = layer.lora_B["default"].weight @ layer.lora_A["default"].weight * layer.scaling["default"]
    merged = QLORA.merge(model).model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(merged, base + delta, atol=1e-6, rtol=1e-6)  # not rounded to bf16
