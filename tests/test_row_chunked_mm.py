"""Row-chunked matmuls: the one-call result, and each problem shape timed once."""

from __future__ import annotations

import pytest
import torch

from finjust.models import row_chunked_mm as chunking


@pytest.fixture
def chunks_of_5(monkeypatch):
    monkeypatch.setattr(chunking, "chunk_rows_for", lambda a, b: 5)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_rows_give_the_one_call_result(chunks_of_5, transposed, with_bias):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(17, 6, generator=gen)  # 17 rows: three chunks of 5 and one of 2
    b = torch.randn(4, 6, generator=gen).T if transposed else torch.randn(6, 4, generator=gen)
    bias = torch.randn(4, generator=gen) if with_bias else None
    expected = a @ b if bias is None else torch.addmm(bias, a, b)
    torch.testing.assert_close(chunking.chunked_mm(a, b, bias), expected)


def test_bf16_chunks_round_like_one_call(chunks_of_5):
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(23, 64, generator=gen), torch.randn(64, 32, generator=gen)
    exact = a @ b
    chunked = chunking.chunked_mm(a.bfloat16(), b.bfloat16()).float()
    one_call = (a.bfloat16() @ b.bfloat16()).float()
    assert (chunked - exact).abs().max() <= 1.5 * (one_call - exact).abs().max() + 1e-2


def test_each_problem_shape_is_timed_once(monkeypatch):
    timed = []
    monkeypatch.setattr(chunking, "_PLANS", {})
    monkeypatch.setattr(chunking, "_faster_plan", lambda a, b: timed.append(tuple(b.shape)) or 8)
    weight = torch.randn(3, 6)
    for rows in (10, 30, 50):  # the row count is not part of the shape's key
        assert chunking.chunk_rows_for(torch.randn(rows, 6), weight.T) == 8
    chunking.chunk_rows_for(torch.randn(10, 3), weight)  # the backward's problem: another shape
    assert timed == [(6, 3), (3, 6)]


@pytest.mark.parametrize(("halves_seconds", "plan"), [(1.0, 4), (1.9, None), (3.0, None)])
def test_timing_keeps_the_faster_way(monkeypatch, halves_seconds, plan):
    monkeypatch.setattr(chunking, "CHUNK_ROWS", 4)

    def timer(run):
        run()  # both ways really run on the sample
        return halves_seconds if run.__name__ == "halves" else 2.0

    assert chunking._faster_plan(torch.randn(3, 8), torch.randn(8, 5), timer) == plan


def test_timing_leaves_the_random_stream_as_it_was(monkeypatch):
    monkeypatch.setattr(chunking, "_PLANS", {})
    a, weight = torch.randn(10, 6), torch.randn(6, 3)
    before = torch.get_rng_state()
    chunking.chunk_rows_for(a, weight)
    assert torch.equal(torch.get_rng_state(), before)
