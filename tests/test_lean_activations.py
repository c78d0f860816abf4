"""Lean RMSNorm and SwiGLU forwards: transformers' values and gradients, fewer bytes kept for backward."""

from __future__ import annotations

import pytest
import torch
from conftest import loss_and_grads
from transformers import AutoModelForCausalLM, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from finjust.models.lean_activations import lean_activations
from finjust.objectives.sft import pack


def _outputs_and_grads(module: torch.nn.Module, x: torch.Tensor, upstream: torch.Tensor):
    x = x.detach().requires_grad_()
    module.zero_grad()
    out = module(x)
    (out.float() * upstream).sum().backward()
    grads = [x.grad] + [p.grad for p in module.parameters() if p.requires_grad]
    return out.detach(), grads


def _saved_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    storages: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        module(x.detach().requires_grad_())
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in params)


def _check_lean_matches(module: torch.nn.Module, x: torch.Tensor, exact: bool) -> None:
    upstream = torch.randn(*x.shape[:-1], module(x).shape[-1], generator=torch.Generator().manual_seed(1))
    expected_out, expected_grads = _outputs_and_grads(module, x, upstream)
    full_bytes = _saved_bytes(module, x)
    with lean_activations(module) as swapped:
        assert swapped == 1
        out, grads = _outputs_and_grads(module, x, upstream)
        lean_bytes = _saved_bytes(module, x)
    assert torch.equal(out, expected_out)  # the same operations in the same order
    for got, want in zip(grads, expected_grads, strict=True):
        assert got.dtype == want.dtype
        if exact:
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)
    assert lean_bytes < full_bytes
    assert "forward" not in vars(module)  # the class's forward is back


@pytest.mark.parametrize("weight_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("weight_trains", [False, True])
def test_lean_rms_norm_gives_transformers_values_and_gradients(weight_dtype, weight_trains):
    norm = LlamaRMSNorm(64, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(64, generator=torch.Generator().manual_seed(0)) + 0.5)
    norm.to(weight_dtype).weight.requires_grad_(weight_trains)
    x = (torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(2)) * 4).to(torch.bfloat16)
    _check_lean_matches(norm, x, exact=False)


def test_lean_swiglu_gives_transformers_values_and_gradients_exactly():
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=96, hidden_act="silu")
    mlp = LlamaMLP(config).to(torch.bfloat16)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    _check_lean_matches(mlp, x, exact=True)


def test_traced_the_lean_forwards_are_transformers_arithmetic_exactly(monkeypatch):
    # compiled blocks run plain ops (an autograd.Function kept AOTAutograd's cache from the graph)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=96, hidden_act="silu")
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    for module in (LlamaMLP(config).to(torch.bfloat16), LlamaRMSNorm(32).to(torch.bfloat16)):
        upstream = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(1))
        expected = _outputs_and_grads(module, x, upstream)
        with lean_activations(module) as swapped:
            assert swapped == 1
            got = _outputs_and_grads(module, x, upstream)
        for ours, theirs in zip([got[0], *got[1]], [expected[0], *expected[1]], strict=True):
            assert torch.equal(ours, theirs)


def test_an_mlp_with_another_activation_keeps_its_forward():
    mlp = LlamaMLP(LlamaConfig(hidden_size=32, intermediate_size=64, hidden_act="gelu"))
    with lean_activations(mlp) as swapped:
        assert swapped == 0
        assert "forward" not in vars(mlp)


def test_tiny_model_loss_and_gradients_are_unchanged_under_bf16(tiny_model_dir, tiny_tokens):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    batch = pack(tiny_tokens[:4])
    plain = loss_and_grads(model, batch)
    with lean_activations(model) as swapped:
        assert swapped == 2 * 3 + 1  # per layer two norms and the MLP; the final norm
        lean = loss_and_grads(model, batch)
    torch.testing.assert_close(lean[0], plain[0])
    for a, b in zip(lean[2], plain[2], strict=True):
        torch.testing.assert_close(a, b, rtol=3e-2, atol=3e-2)
