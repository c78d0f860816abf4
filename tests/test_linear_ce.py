"""Chunked linear cross-entropy: the plain head + cross-entropy's values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import loss_and_grads
from transformers import AutoModelForCausalLM

from finjust.models import machine_plans
from finjust.objectives import linear_ce, sft
from finjust.objectives.linear_ce import keep_transposed_head, linear_cross_entropy
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


@pytest.fixture
def head_plan(monkeypatch, tmp_path):
    """A plans file of the test's own; ``choose(layout)`` makes the timing pick ``layout`` and
    record the weight shapes it timed, in the returned list."""
    monkeypatch.setattr(machine_plans, "plans_file", lambda: tmp_path / "plans.json")
    timed: list[tuple[int, ...]] = []

    def choose(layout: str) -> list[tuple[int, ...]]:
        monkeypatch.setattr(linear_ce, "_faster_layout", lambda w, t, chunk: timed.append(tuple(w.shape)) or layout)
        return timed

    return choose


def _loss_and_input_grad(h, w, targets, upstream, chunk=4):
    h.grad = None
    losses = linear_cross_entropy(h, w, targets, chunk=chunk)
    (losses * upstream).sum().backward()
    return losses.detach(), h.grad.clone()


@pytest.mark.parametrize("layout", ["transposed", "direct"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_kept_head_layout_gives_the_same_loss_and_gradient(head_plan, layout, dtype):
    head_plan(layout)
    h, w, targets, upstream = _inputs(False)
    h, w = h.detach().to(dtype).requires_grad_(), w.to(dtype)
    expected = _loss_and_input_grad(h, w, targets, upstream)
    with keep_transposed_head(w):
        kept = _loss_and_input_grad(h, w, targets, upstream)
        copy = linear_ce._TRANSPOSED[id(w)][1][dtype]
    assert (copy is not None) == (layout == "transposed")
    if copy is not None:
        assert copy.is_contiguous() and torch.equal(copy, w.T)
    for got, want in zip(kept, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_the_head_layout_is_timed_once_per_machine_and_the_copy_dropped_on_leaving(head_plan, monkeypatch):
    timed = head_plan("transposed")
    h, w, targets, upstream = _inputs(False)
    for _ in range(2):  # two runs on the machine, each timing at most at its first step
        with keep_transposed_head(w):
            for _ in range(2):
                _loss_and_input_grad(h, w, targets, upstream)
        assert linear_ce._TRANSPOSED == {}
    with keep_transposed_head(w), keep_transposed_head(w):  # an inner context leaves the outer's copy
        _loss_and_input_grad(h, w, targets, upstream)
    assert linear_ce._TRANSPOSED == {} and timed == [(50, 8)]


def test_a_head_that_trains_or_is_not_kept_gets_no_copy(head_plan):
    timed = head_plan("transposed")
    h, w, targets, upstream = _inputs(True)
    with keep_transposed_head(w):
        assert linear_ce._TRANSPOSED == {}
        _loss_and_input_grad(h, w, targets, upstream)
    with keep_transposed_head(None):
        _loss_and_input_grad(h, w.detach(), targets, upstream)
    _loss_and_input_grad(h, w.detach(), targets, upstream)
    assert timed == []


def test_a_head_too_large_for_the_free_memory_gets_no_copy(head_plan, monkeypatch):
    timed = head_plan("transposed")
    h, w, targets, upstream = _inputs(False)
    monkeypatch.setattr(linear_ce.psutil, "virtual_memory", lambda: type("Memory", (), {"available": w.nbytes * 10}))
    with keep_transposed_head(w):
        _loss_and_input_grad(h, w, targets, upstream)
        assert linear_ce._TRANSPOSED[id(w)][1] == {torch.float32: None}
    assert timed == []  # nor is the machine's plan timed for it


@pytest.mark.parametrize(("transposed_seconds", "layout"), [(1.0, "transposed"), (1.7, "direct"), (3.0, "direct")])
def test_timing_keeps_the_faster_head_layout(transposed_seconds, layout):
    w = torch.randn(50, 8)

    def timer(runs):
        for run in runs.values():
            run()  # both ways really run
        return {"direct": 2.0, "transposed": transposed_seconds}

    before = torch.get_rng_state()
    assert linear_ce._faster_layout(w, w.T.contiguous(), 4, timer) == layout
    assert torch.equal(torch.get_rng_state(), before)  # timing must not move the run's random stream


def test_a_bf16_input_gradient_is_scaled_in_fp32():
    # a mean over 300 tokens scales by 1/300: in bf16 that factor was off by 0.3%, and every step's gradient with it
    torch.manual_seed(0)
    hidden = torch.randn(300, 16, dtype=torch.bfloat16, requires_grad=True)
    weight, targets = torch.randn(40, 16, dtype=torch.bfloat16), torch.randint(0, 40, (300,))
    linear_cross_entropy(hidden, weight, targets).sum().backward()
    unscaled, hidden.grad = hidden.grad, None
    linear_cross_entropy(hidden, weight, targets).mean().backward()
    assert torch.equal(hidden.grad, (unscaled.float() * torch.tensor(1 / 300)).to(torch.bfloat16))
