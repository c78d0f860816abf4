"""The addmm LoRA forward: peft's outputs and gradients, the base left alone, peft's path wherever it is not plain LoRA."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from finjust.methods import get_method
from finjust.models import lora_addmm, row_chunked_mm
from finjust.models.lora_addmm import lora_addmm_forwards


def _lora_model(tiny_model_dir, dtype=torch.float32, method: str = "lora", **options):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype)
    torch.manual_seed(0)
    lora = get_method(method)
    peft_model = lora.apply(model, lora.options_class(**{"r": 4, **options}))
    with torch.no_grad():  # B starts at zero: give it values so the adapter's path counts
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return peft_model


def _logits_and_grads(model, ids, autocast: bool):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids).logits.float()
    logits.square().mean().backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_fp32_outputs_and_gradients_equal_peft_s_and_the_base_stays_frozen(tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    expected_logits, expected_grads = _logits_and_grads(model, ids, autocast=False)
    with lora_addmm_forwards(model) as swapped:
        assert swapped == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
        logits, grads = _logits_and_grads(model, ids, autocast=False)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    assert grads.keys() == expected_grads.keys() and all("lora_" in n for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-6)


def test_base_matmuls_in_row_chunks_give_peft_s_outputs_and_gradients(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(row_chunked_mm, "chunk_rows_for", lambda a, b: 4)  # 18 rows: chunks of 4 and 2
    model = _lora_model(tiny_model_dir)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    expected_logits, expected_grads = _logits_and_grads(model, ids, autocast=False)
    with lora_addmm_forwards(model):
        logits, grads = _logits_and_grads(model, ids, autocast=False)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-6)


def test_a_base_that_trains_takes_peft_s_path_and_gets_its_gradients(tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    q_proj.base_layer.weight.requires_grad_(True)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    expected = _logits_and_grads(model, ids, autocast=False)[1]
    with lora_addmm_forwards(model):
        grads = _logits_and_grads(model, ids, autocast=False)[1]
    name = next(n for n in grads if n.endswith("layers.0.self_attn.q_proj.base_layer.weight"))
    torch.testing.assert_close(grads[name], expected[name], rtol=1e-5, atol=1e-6)


def test_under_bf16_autocast_it_is_as_close_to_fp32_as_peft_s_forward(tiny_model_dir):
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    reference = _logits_and_grads(_lora_model(tiny_model_dir), ids, autocast=False)
    model = _lora_model(tiny_model_dir, torch.bfloat16)
    peft_s = _logits_and_grads(model, ids, autocast=True)
    with lora_addmm_forwards(model):
        ours = _logits_and_grads(model, ids, autocast=True)

    def error(result):
        logits, grads = result
        relative = [(grads[n].float() - g).norm() / g.norm() for n, g in reference[1].items()]
        return (logits - reference[0]).norm() / reference[0].norm(), max(relative)

    for ours_error, peft_error in zip(error(ours), error(peft_s), strict=True):
        assert ours_error <= 1.5 * peft_error + 1e-3


def test_switched_off_adapters_take_peft_s_path(tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    ids = torch.randint(0, 100, (1, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), model.disable_adapter():
        expected = model(input_ids=ids).logits
    with torch.no_grad(), lora_addmm_forwards(model), model.disable_adapter():
        torch.testing.assert_close(model(input_ids=ids).logits, expected)


def test_a_scaling_changed_while_swapped_in_is_the_one_used(tiny_model_dir):
    from peft.tuners.lora.layer import LoraLayer

    model = _lora_model(tiny_model_dir)
    ids = torch.randint(0, 100, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), lora_addmm_forwards(model):
        for layer in (m for m in model.modules() if isinstance(m, LoraLayer)):
            layer.set_scale("default", 3.0)
        got = model(input_ids=ids).logits
    with torch.no_grad():
        torch.testing.assert_close(got, model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("method", "options"), [("lora", {"dropout": 0.1}), ("dora", {})])
def test_layers_that_are_not_plain_lora_keep_peft_s_forward(tiny_model_dir, method, options):
    model = _lora_model(tiny_model_dir, method=method, **options)
    with lora_addmm_forwards(model) as swapped:
        assert swapped == 0


def test_no_input_gradient_is_computed_for_an_input_that_needs_none(tiny_model_dir, monkeypatch):
    """The first layer's q, k and v read the frozen embeddings: their input gradients would be
    thrown away, so backward leaves them out, and the adapters' gradients stay the same."""
    model = _lora_model(tiny_model_dir)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    expected_logits, expected_grads = _logits_and_grads(model, ids, autocast=False)
    calls = []
    chunked = lora_addmm.chunked_mm
    monkeypatch.setattr(lora_addmm, "chunked_mm", lambda a, b, bias=None: calls.append(a.shape) or chunked(a, b, bias))
    with lora_addmm_forwards(model):
        logits, grads = _logits_and_grads(model, ids, autocast=False)
    # forward: 7 base matmuls a layer; backward: 7 in the second layer, 4 in the first (all but q, k, v)
    assert len(calls) == 2 * 7 + 7 + 4
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-6)
