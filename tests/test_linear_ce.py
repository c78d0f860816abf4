"""Chunked linear cross-entropy: the plain head + cross-entropy's values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import loss_and_grads
from transformers import AutoModelForCausalLM

from finjust.objectives import sft
from finjust.objectives.linear_ce import linear_cross_entropy
from finjust.objectives.sft import pack


def _inputs(weight_grad: bool, n: int = 11, hidden: int = 8, vocab: int = 50):
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(n, hidden, generator=generator, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=generator, requires_grad=weight_grad)
    targets = torch.randint(0, vocab, (n,), generator=generator)
    upstream = torch.rand(n, generator=generator)  # unequal token weights, as a reduction could give
    return h, w, targets, upstream


@pytest.mark.parametrize("chunk", [1, 4, 128])
@pytest.mark.parametrize("weight_grad", [False, True])
def test_chunked_cross_entropy_equals_the_plain_one(chunk, weight_grad):
    h, w, targets, upstream = _inputs(weight_grad)
    plain = F.cross_entropy(h @ w.T, targets, reduction="none")
    (plain * upstream).sum().backward()
    expected = [h.grad.clone()] + ([w.grad.clone()] if weight_grad else [])
    h.grad, w.grad = None, None
    chunked = linear_cross_entropy(h, w, targets, chunk=chunk)
    (chunked * upstream).sum().backward()
    torch.testing.assert_close(chunked, plain.detach())
    torch.testing.assert_close(h.grad, expected[0])
    if weight_grad:
        torch.testing.assert_close(w.grad, expected[1])
    else:
        assert w.grad is None


def test_chunked_cross_entropy_under_bf16_autocast_matches_the_plain_path():
    h, w, targets, _ = _inputs(False, n=40, hidden=32, vocab=300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.cross_entropy((h @ w.T).float(), targets, reduction="none")
        chunked = linear_cross_entropy(h, w, targets, chunk=16)
    torch.testing.assert_close(chunked, plain, rtol=1e-2, atol=1e-2)


def test_packed_loss_and_gradients_equal_the_full_logits_path(tiny_model_dir, tiny_tokens, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    batch = pack(tiny_tokens[:4])
    fused = loss_and_grads(model, batch)
    monkeypatch.setattr(sft, "PLAIN_HEAD_MODELS", frozenset())  # the logits_to_keep path
    full = loss_and_grads(model, batch)
    torch.testing.assert_close(fused[0], full[0])
    assert fused[1] == full[1]
    for a, b in zip(fused[2], full[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
