"""Per-example attention over packed rows: transformers' block-mask results, nothing across examples."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from finjust.data.templates import IGNORE_INDEX
from finjust.models import segment_attention as seg
from finjust.models.shapes import ROW_MULTIPLE
from finjust.objectives.sft import pack, packed_hidden_states


@pytest.fixture()
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def test_layout_gathers_and_scatters_back_every_token():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]])
    layout = seg.segment_layout(positions)
    assert layout.examples == 5 and layout.longest % seg.LENGTH_MULTIPLE == 0 and layout.longest_example == 4
    states = torch.arange(12.0).view(2, 1, 6, 1)  # (rows, heads, length, dim)
    per_example = seg._to_segments(states, layout)
    assert per_example[1, 0, :2, 0].tolist() == [3.0, 4.0]  # row 0's second example
    back = per_example.transpose(1, 2).reshape(-1, 1, 1).index_select(0, layout.scatter)
    assert back.flatten().tolist() == states.flatten().tolist()


def test_filler_tokens_get_no_slot_and_read_a_real_one():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]])
    filler = torch.tensor([[False] * 5 + [True], [False] * 4 + [True] * 2])
    layout = seg.segment_layout(positions, filler)
    assert layout.examples == 3  # two examples in row 0, one in row 1; no filler segments
    assert sorted(layout.gather[layout.scatter[~filler.flatten()]].tolist()) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert layout.scatter[filler.flatten()].tolist() == [0, 0, 0]


@pytest.mark.parametrize("math_max", [seg.MATH_KERNEL_MAX_TOKENS, 0])  # math kernel, flash kernel
def test_hidden_states_equal_the_block_mask_path(model, tiny_tokens, monkeypatch, math_max):
    monkeypatch.setattr(seg, "MATH_KERNEL_MAX_TOKENS", math_max)
    batch = pack(tiny_tokens[:6], row_tokens=60, multiple=ROW_MULTIPLE)  # several rows, each with a filler segment
    assert batch.input_ids.shape[0] > 1 and batch.filler_tokens > 0
    with torch.no_grad():
        ours = packed_hidden_states(model, batch)
        block_mask = model.get_decoder()(input_ids=batch.input_ids, position_ids=batch.position_ids,
                                         use_cache=False).last_hidden_state  # fmt: skip
    real = batch.targets != IGNORE_INDEX
    torch.testing.assert_close(ours[real], block_mask[real], rtol=1e-4, atol=1e-5)
    assert model.config._attn_implementation == "sdpa"  # restored after the packed forward



@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 2), (3, 3), (4, 1)])  # grouped, one per head, one for all
@pytest.mark.parametrize("contiguous", [True, False])  # _to_segments hands over a transposed view
@pytest.mark.parametrize("traced", [False, True])  # eager: query heads stacked per key head; compiled: plain ops
def test_recomputing_attention_has_the_math_kernels_values_and_gradients(heads, kv_heads, contiguous, traced,
                                                                         monkeypatch):  # fmt: skip
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: traced)
    generator = torch.Generator().manual_seed(0)

    def states(n: int) -> torch.Tensor:
        if contiguous:
            return torch.randn(3, n, 7, 8, generator=generator, requires_grad=True)
        return torch.randn(3, 7, n, 8, generator=generator).transpose(1, 2).requires_grad_()

    q, k, v = states(heads), states(kv_heads), states(kv_heads)
    upstream = torch.randn(3, heads, 7, 8, generator=generator)
    results = []
    for attend in (
        lambda: torch.ops.aten._scaled_dot_product_attention_math(q, k, v, None, 0.0, True, scale=0.3,
                                                                   enable_gqa=True)[0],  # fmt: skip
        lambda: (seg._traced_causal_attention if traced else seg._RecomputedCausalAttention.apply)(q, k, v, 0.3),
    ):
        q.grad = k.grad = v.grad = None
        out = attend()
        out.backward(upstream)
        results.append([out.detach(), q.grad, k.grad, v.grad])
    for expected, ours in zip(*results, strict=True):
        torch.testing.assert_close(ours, expected)


def test_recomputing_attention_in_bf16_is_as_accurate_as_the_math_kernel():
    """Its bf16 softmax (fp32 inside) must not lose more than torch's fp32-softmax math kernel."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 6, 48, 16), (4, 2, 48, 16), (4, 2, 48, 16)]  # q, k, v: 3 query heads per key head
    exact = [torch.randn(shape, generator=generator, requires_grad=True) for shape in shapes]
    upstream = torch.randn(shapes[0], generator=generator)

    def run(attend, tensors, grad):
        out = attend(*tensors)
        out.backward(grad)
        return [out.detach().float(), *(t.grad.float() for t in tensors)]

    def math_kernel(q, k, v):
        return torch.ops.aten._scaled_dot_product_attention_math(q, k, v, None, 0.0, True, scale=0.25,
                                                                   enable_gqa=True)[0]  # fmt: skip

    reference = run(math_kernel, exact, upstream)
    errors = {}
    def ours(q, k, v):
        return seg._RecomputedCausalAttention.apply(q, k, v, 0.25)

    for name, attend in (("math", math_kernel), ("ours", ours)):
        tensors = [t.detach().bfloat16().requires_grad_() for t in exact]
        got = run(attend, tensors, upstream.bfloat16())
        errors[name] = [float((g - r).norm() / r.norm()) for g, r in zip(got, reference, strict=True)]
    for ours, math in zip(errors["ours"], errors["math"], strict=True):
        assert ours < 1.5 * math + 1e-3, errors


def _tiny_mistral(window: int):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=window)  # fmt: skip
    return MistralForCausalLM(config).eval()


def _examples(lengths: list[int]):
    from finjust.data.templates import TokenizedExample

    ids = torch.randint(3, 300, (sum(lengths),), generator=torch.Generator().manual_seed(1)).tolist()
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    return [TokenizedExample(ids[s:s + n], ids[s:s + n]) for s, n in zip(starts, lengths, strict=True)]


def _block_mask_states(model, batch):
    with torch.no_grad():
        return model.get_decoder()(input_ids=batch.input_ids, position_ids=batch.position_ids,
                                   use_cache=False).last_hidden_state  # fmt: skip


@pytest.mark.parametrize("longest", [12, 13])  # inside the window (per example), one token past it (block mask)
def test_a_sliding_window_is_kept_where_an_example_outgrows_it(longest):
    from finjust.objectives.sft import training_batches

    model = _tiny_mistral(window=12)
    examples = _examples([5, longest, 9])
    batch = training_batches(model)(examples, True)
    assert seg.supports_segments(model, longest) == (longest <= 12)
    with torch.no_grad():
        ours = packed_hidden_states(model, batch)
    real = ~batch.filler_mask()  # every example token
    torch.testing.assert_close(ours[real], _block_mask_states(model, batch)[real], rtol=1e-4, atol=1e-5)
    model.config.sliding_window = None  # the window matters past its length: full attention differs there
    differs = not torch.allclose(_block_mask_states(model, batch)[real], ours[real], rtol=1e-4, atol=1e-5)
    assert differs == (longest > 12)
